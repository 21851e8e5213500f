//! Without a driver (every CI machine), asking for CUDA is a typed error, never a panic.

use worker_gpu::{cuda, lda_engine, lr_engine, mf_engine, mlp_engine, Device, DeviceError};

#[test]
fn cuda_engines_without_a_driver_are_typed_errors() {
    if cuda::driver_available() {
        eprintln!("SKIP cuda_engines_without_a_driver_are_typed_errors: this machine has a driver");
        return;
    }
    let is_unavailable = |e: &DeviceError| matches!(e, DeviceError::CudaUnavailable(m) if m.contains("no NVIDIA driver"));
    assert!(mf_engine(Device::Cuda(0), 1)
        .err()
        .is_some_and(|e| is_unavailable(&e)));
    assert!(lda_engine(Device::Cuda(0), 1)
        .err()
        .is_some_and(|e| is_unavailable(&e)));
    assert!(mlp_engine(Device::Cuda(0), 1)
        .err()
        .is_some_and(|e| is_unavailable(&e)));
    assert!(lr_engine(Device::Cuda(0), 1)
        .err()
        .is_some_and(|e| is_unavailable(&e)));
    assert!(matches!(cuda::Gpu::open(0), Err(cuda::GpuError::NoDriver)));
}
