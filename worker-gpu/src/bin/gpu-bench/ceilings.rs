//! The two ceilings of `METHOD.md`, measured once on the device: copy bandwidth and SGEMM rate.

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_event_ms, Ceilings};

fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Driver {
        call,
        error: e.to_string(),
    }
}

/// Measures both ceilings on `gpu`'s compute stream.
pub fn measure(gpu: &Gpu) -> Result<Ceilings, GpuError> {
    let s = gpu.compute_stream();
    // 1 GiB copied device to device: 2 GiB of traffic per copy.
    let n = (1usize << 30) / 4;
    let src = s
        .clone_htod(&(0..n).map(|i| (i % 1021) as f32).collect::<Vec<f32>>())
        .map_err(driver("cuMemcpyHtoD"))?;
    let mut dst = s.alloc_zeros::<f32>(n).map_err(driver("cuMemAlloc"))?;
    let (ms, _) = median_event_ms(s, 3, 20, || {
        s.memcpy_dtod(&src, &mut dst)
            .map_err(driver("cuMemcpyDtoD"))
    })?;
    let copy_bytes_per_s = (2 * n * 4) as f64 / (ms * 1e-3);
    drop((src, dst));
    // Without cuBLAS the benches still run: their floors are then the bytes' alone.
    let fp32_flops_per_s = sgemm_rate(gpu).unwrap_or_else(|e| {
        eprintln!("gpu-bench: no SGEMM ceiling ({e}); every floor is the bytes' alone");
        f64::NAN
    });
    Ok(Ceilings {
        copy_bytes_per_s,
        fp32_flops_per_s,
    })
}

/// The f32 rate of an 8192^3 SGEMM through cuBLAS (default math mode: f32, no TF32).
fn sgemm_rate(gpu: &Gpu) -> Result<f64, GpuError> {
    let s = gpu.compute_stream();
    // SAFETY of the probe: only dlopens the candidate names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(GpuError::Input(
            "libcublas could not be loaded: the SGEMM ceiling needs it".into(),
        ));
    }
    let blas = CudaBlas::new(s.clone()).map_err(|e| GpuError::Driver {
        call: "cublasCreate",
        error: format!("{e:?}"),
    })?;
    let m = 8192usize;
    let host: Vec<f32> = (0..m * m)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let a = s.clone_htod(&host).map_err(driver("cuMemcpyHtoD"))?;
    let b = s.clone_htod(&host).map_err(driver("cuMemcpyHtoD"))?;
    let mut c = s.alloc_zeros::<f32>(m * m).map_err(driver("cuMemAlloc"))?;
    let cfg = GemmConfig {
        transa: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        transb: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        m: m as i32,
        n: m as i32,
        k: m as i32,
        alpha: 1.0f32,
        lda: m as i32,
        ldb: m as i32,
        beta: 0.0f32,
        ldc: m as i32,
    };
    let (ms, _) = median_event_ms(s, 2, 10, || {
        // SAFETY: a, b, c hold m * m elements each, as the configuration says.
        unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(|e| GpuError::Driver {
            call: "cublasSgemm",
            error: format!("{e:?}"),
        })
    })?;
    Ok(2.0 * (m as f64).powi(3) / (ms * 1e-3))
}
