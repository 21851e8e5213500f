//! The CUDA sparse-LR engine: `kernels/lr_grad.cu` behind [`LrCompute`].
//!
//! The host turns the mini-batch into CSR form in pinned buffers (every key mapped to its slot in
//! the sorted key list, or to `LR_MISS` when absent), the copy stream moves it and the weights to
//! the device, and one warp per row computes the margin and adds its terms to the gradient with
//! atomics. Buffers are kept across calls. Results agree with the CPU oracle within
//! `ps_apps::lr::FAST_REL_TOL` (f32 arithmetic, atomics in no fixed order).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::lr::{LrCompute, SparseRow};

use super::buffers::{DevBuf, Pinned};
use super::{failed, Call, Gpu, GpuError};
use ps_apps::ComputeError;

/// The slot of a key outside the key list (the kernel's `LR_MISS`).
const MISS: u32 = u32::MAX;

const BLOCK: u32 = 256;

/// Sparse logistic-regression gradients on a CUDA device.
pub struct CudaLr {
    gpu: Arc<Gpu>,
    gradient: CudaFunction,
    row_ptr: Pinned<u32>,
    cols: Pinned<u32>,
    vals: Pinned<f32>,
    labels: Pinned<f32>,
    weights: Pinned<f32>,
    grad_host: Pinned<f32>,
    loss_host: Pinned<f64>,
    d_row_ptr: DevBuf<u32>,
    d_cols: DevBuf<u32>,
    d_vals: DevBuf<f32>,
    d_labels: DevBuf<f32>,
    d_weights: DevBuf<f32>,
    d_grad: DevBuf<f32>,
    d_loss: DevBuf<f64>,
}

impl CudaLr {
    /// The engine on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let ctx = &gpu.ctx;
        Ok(CudaLr {
            gradient: gpu.function("lr_grad", "lr_gradient")?,
            row_ptr: Pinned::new(ctx)?,
            cols: Pinned::new(ctx)?,
            vals: Pinned::new(ctx)?,
            labels: Pinned::new(ctx)?,
            weights: Pinned::new(ctx)?,
            grad_host: Pinned::new(ctx)?,
            loss_host: Pinned::new(ctx)?,
            d_row_ptr: DevBuf::default(),
            d_cols: DevBuf::default(),
            d_vals: DevBuf::default(),
            d_labels: DevBuf::default(),
            d_weights: DevBuf::default(),
            d_grad: DevBuf::default(),
            d_loss: DevBuf::default(),
            gpu,
        })
    }

    /// Writes the batch in CSR form into the pinned buffers.
    fn stage(
        &mut self,
        batch: &[SparseRow],
        keys: &[u64],
        weights: &[f32],
    ) -> Result<(), GpuError> {
        let nnz: usize = batch.iter().map(|r| r.features.len()).sum();
        if nnz >= u32::MAX as usize || batch.len() >= u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a batch of {} rows and {nnz} nonzeros exceeds the kernel's 32-bit offsets",
                batch.len()
            )));
        }
        {
            let ptr = self.row_ptr.host_mut(batch.len() + 1)?;
            let mut at = 0u32;
            ptr[0] = 0;
            for (p, r) in ptr[1..].iter_mut().zip(batch) {
                at += r.features.len() as u32;
                *p = at;
            }
        }
        {
            let cols = self.cols.host_mut(nnz)?;
            let slots = batch
                .iter()
                .flat_map(|r| r.features.iter())
                .map(|&(k, _)| keys.binary_search(&k).map_or(MISS, |i| i as u32));
            for (c, s) in cols.iter_mut().zip(slots) {
                *c = s;
            }
        }
        {
            let vals = self.vals.host_mut(nnz)?;
            for (v, &(_, x)) in vals
                .iter_mut()
                .zip(batch.iter().flat_map(|r| r.features.iter()))
            {
                *v = x;
            }
        }
        {
            let labels = self.labels.host_mut(batch.len())?;
            for (l, r) in labels.iter_mut().zip(batch) {
                *l = r.label;
            }
        }
        self.weights.fill(weights)?;
        let copy = &self.gpu.copy;
        self.d_row_ptr.upload(copy, &self.row_ptr)?;
        self.d_cols.upload(copy, &self.cols)?;
        self.d_vals.upload(copy, &self.vals)?;
        self.d_labels.upload(copy, &self.labels)?;
        self.d_weights.upload(copy, &self.weights)
    }

    fn try_gradient(
        &mut self,
        batch: &[SparseRow],
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, GpuError> {
        self.stage(batch, keys, weights)?;
        let compute = &self.gpu.compute;
        self.d_grad.zero(compute, keys.len())?;
        self.d_loss.zero(compute, 1)?;
        let rows = batch.len() as u32;
        let inv_n = 1.0f32 / batch.len() as f32;
        let cfg = LaunchConfig {
            grid_dim: (self.gpu.grid_for(u64::from(rows) * 32, BLOCK, 8), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        {
            let mut b = compute.launch_builder(&self.gradient);
            b.arg(self.d_row_ptr.get())
                .arg(self.d_cols.get())
                .arg(self.d_vals.get())
                .arg(self.d_labels.get())
                .arg(&rows)
                .arg(self.d_weights.get())
                .arg(self.d_grad.get_mut())
                .arg(&inv_n)
                .arg(self.d_loss.get_mut());
            // SAFETY: row_ptr holds rows + 1 offsets into cols / vals (nnz entries each); every
            // col is a slot < keys.len() or MISS; weights and grad hold keys.len() entries;
            // loss holds one double.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(lr_gradient)")?;
        }
        self.grad_host
            .download(compute, self.d_grad.get(), keys.len())?;
        self.loss_host.download(compute, self.d_loss.get(), 1)?;
        grad.copy_from_slice(self.grad_host.host()?);
        Ok(self.loss_host.host()?[0])
    }
}

impl LrCompute for CudaLr {
    fn gradient(
        &mut self,
        batch: &[SparseRow],
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError> {
        assert_eq!(weights.len(), keys.len(), "one weight per key");
        assert_eq!(grad.len(), keys.len(), "one gradient entry per key");
        if batch.is_empty() || keys.is_empty() {
            grad.fill(0.0);
            if batch.is_empty() {
                return Ok(0.0);
            }
        }
        failed("cuda-lr", self.try_gradient(batch, keys, weights, grad))
    }

    fn name(&self) -> &'static str {
        "cuda"
    }
}
