//! Without a driver (every CI machine), asking for CUDA is a typed error, never a panic.

use ps_apps::app::Engines;
use ps_apps::AppError;
use worker_gpu::{cuda, Device, DeviceEngines};

#[test]
fn cuda_engines_without_a_driver_are_typed_errors() {
    if cuda::driver_available() {
        eprintln!("SKIP cuda_engines_without_a_driver_are_typed_errors: this machine has a driver");
        return;
    }
    let e = DeviceEngines(Device::Cuda(0));
    let unavailable = |r: Result<(), AppError>| matches!(r, Err(AppError::Device(m)) if m.contains("no NVIDIA driver"));
    assert!(unavailable(e.mf(1).map(|_| ())));
    assert!(unavailable(e.lda(1).map(|_| ())));
    assert!(unavailable(e.mlp(1).map(|_| ())));
    assert!(unavailable(e.lr(1).map(|_| ())));
    assert_eq!(e.device(), "cuda:0");
    assert!(matches!(cuda::Gpu::open(0), Err(cuda::GpuError::NoDriver)));
}
