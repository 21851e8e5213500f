//! Uniforms drawn on the device: `kernels/rng.cu` (Philox-4x32-10 from `kernels/philox.cuh`)
//! behind a small engine. The values are bit for bit those of
//! [`ps_apps::philox::fill_uniforms`] for the same seed, stream and indices, so a CUDA engine can
//! draw on the device the numbers a CPU engine draws on the host (the conformance case `rng`
//! checks this on ~1M indices, some past 2^32).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::buffers::{DevBuf, Pinned};
use super::{Call, Gpu, GpuError};

const BLOCK: u32 = 256;

/// Philox uniforms on a CUDA device.
pub struct CudaRng {
    gpu: Arc<Gpu>,
    kernel: CudaFunction,
    d_out: DevBuf<f32>,
    host: Pinned<f32>,
}

impl CudaRng {
    /// The engine on `gpu` (compiles `kernels/rng.cu` on first use in the process).
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Ok(CudaRng {
            kernel: gpu.function("rng", "rng_philox_uniforms")?,
            host: Pinned::new(&gpu.ctx)?,
            d_out: DevBuf::default(),
            gpu,
        })
    }

    /// Enqueues on the compute stream the kernel that writes
    /// `out[j] = ps_apps::philox::uniform(seed, stream, first_index + j)` for `j < n`.
    pub fn launch(
        &self,
        seed: u64,
        stream: u32,
        first_index: u64,
        out: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<(), GpuError> {
        enqueue(&self.gpu, &self.kernel, seed, stream, first_index, out, n)
    }

    /// `out[j] = ps_apps::philox::uniform(seed, stream, first_index + j)`, drawn on the device
    /// into a reused buffer and copied back.
    pub fn uniforms(
        &mut self,
        seed: u64,
        stream: u32,
        first_index: u64,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let compute = &self.gpu.compute;
        let slice = self.d_out.ensure(compute, out.len())?;
        enqueue(
            &self.gpu,
            &self.kernel,
            seed,
            stream,
            first_index,
            slice,
            out.len(),
        )?;
        self.host.download(compute, self.d_out.get(), out.len())?;
        out.copy_from_slice(self.host.host()?);
        Ok(())
    }
}

/// [`CudaRng::launch`], on the fields it needs.
fn enqueue(
    gpu: &Gpu,
    kernel: &CudaFunction,
    seed: u64,
    stream: u32,
    first_index: u64,
    out: &mut CudaSlice<f32>,
    n: usize,
) -> Result<(), GpuError> {
    if n > out.len() {
        return Err(GpuError::Input(format!(
            "{n} uniforms do not fit a buffer of {}",
            out.len()
        )));
    }
    if first_index.checked_add(n as u64).is_none() {
        return Err(GpuError::Input(format!(
            "uniforms {first_index} + {n} pass the end of the stream (2^64)"
        )));
    }
    if n == 0 {
        return Ok(());
    }
    // One thread per Philox block of four uniforms (plus a partial block at each end).
    let blocks = (first_index + (n as u64 - 1)) / 4 - first_index / 4 + 1;
    let cfg = LaunchConfig {
        grid_dim: (gpu.grid_for(blocks, BLOCK, 8), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let (seed_lo, seed_hi) = (seed as u32, (seed >> 32) as u32);
    let n = n as u64;
    let mut b = gpu.compute.launch_builder(kernel);
    b.arg(&seed_lo)
        .arg(&seed_hi)
        .arg(&stream)
        .arg(&first_index)
        .arg(&n)
        .arg(out);
    // SAFETY: out holds at least n floats (checked above) and the kernel writes only
    // out[0..n); first_index + n does not overflow (checked above).
    unsafe { b.launch(cfg) }.call("cuLaunchKernel(rng_philox_uniforms)")?;
    Ok(())
}
