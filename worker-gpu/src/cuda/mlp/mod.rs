//! The CUDA MLP engine: `kernels/mlp.cu` behind [`MlpCompute`].
//!
//! One call uploads every layer's parameter table (they change between calls) and the batch,
//! runs the forward pass (one tiled SGEMM per layer with the bias and the ReLU fused), the
//! softmax cross-entropy, and for [`MlpCompute::gradient`] the backward pass (per layer one SGEMM
//! writing the weight gradient straight into the gradient table, the bias-gradient column sums,
//! one SGEMM for the input delta and the ReLU mask), then downloads what the trait returns.
//!
//! The work of a call is described first as a list of operations (`Op`, built by `plan_chunk`
//! from the architecture alone) on named buffers (`Buf`); the engine then maps each operation
//! onto one kernel launch. The unit tests run the same plans through a host emulation of the
//! kernels' documented semantics and compare with the CPU oracle, so the plan (shapes, leading
//! dimensions, transposes, offsets) is checked even where there is no GPU. The plan is in `plan`,
//! the buffers and launches in `launch`, the emulation in `tests`.
//!
//! Batches of more than `chunk` samples (4,096 by default) are processed in chunks so that the
//! activation buffers stay bounded: the next chunk's input is uploaded on the copy stream (two
//! pinned + device buffer pairs, used alternately) while the current chunk's kernels run on the
//! compute stream; cudarc's per-buffer events order each upload after the kernels that last read
//! the buffer, and each chunk's kernels after its upload. Gradients of later chunks are
//! accumulated into the gradient tables (SGEMM with `beta = 1`; the bias column through an SGEMM
//! with a vector of ones, since `mlp_bias_grad` overwrites), each chunk's output delta already
//! scaled by `1 / batch`.
//!
//! Deviations from the CPU oracle ([`ps_apps::mlp::CpuMlp`], f64 accumulation): f32 arithmetic in
//! a different summation order, loss and correct-count totals accumulated with atomics; results
//! agree to f32 rounding (a pre-activation within rounding of 0, or two logits within rounding of
//! each other, can go the other way).

use std::sync::Arc;

use cudarc::driver::CudaFunction;
use ps_apps::mlp::{check_batch, check_labels, Arch, BatchStats, MlpCompute};

use super::buffers::{DevBuf, Pinned};
use super::{failed, Gpu, GpuError};
use ps_apps::ComputeError;

/// Samples per chunk by default (activation buffers hold at most this many rows).
pub const DEFAULT_CHUNK: usize = 4096;
/// Largest chunk accepted: the SGEMM grid has `ceil(rows / 64)` blocks in y (at most 65,535).
pub const MAX_CHUNK: usize = 1 << 20;

/// Rows / columns of C per `mlp_sgemm` block (`MLP_TM`, `MLP_TN`).
const TILE: usize = 64;
/// Threads per block of the 1-D kernels (a multiple of 32).
const BLOCK: u32 = 256;
/// Blocks per multiprocessor for the grid-stride kernels.
const BLOCKS_PER_SM: u32 = 8;

mod gemm;
mod launch;
mod plan;
#[cfg(test)]
mod tests;

pub use gemm::MlpGemm;
use launch::*;
use plan::*;

struct Kernels {
    sgemm: CudaFunction,
    softmax: CudaFunction,
    relu_backward: CudaFunction,
    bias_grad: CudaFunction,
    bias_act: CudaFunction,
}

/// Training and inference of a dense ReLU MLP on a CUDA device.
pub struct CudaMlp {
    gpu: Arc<Gpu>,
    k: Kernels,
    /// The library of the matrix products, and cuBLAS's handle where it is cuBLAS.
    gemm: MlpGemm,
    blas: Option<gemm::Blas>,
    chunk: usize,
    f: F32Bufs,
    params_h: Vec<Pinned<f32>>,
    grads_h: Vec<Pinned<f32>>,
    x_h: [Pinned<f32>; 2],
    ones_h: Pinned<f32>,
    /// How many ones `f.ones` holds.
    ones_len: usize,
    y: DevBuf<u8>,
    y_h: Pinned<u8>,
    pred: DevBuf<u8>,
    pred_h: Pinned<u8>,
    loss: DevBuf<f64>,
    loss_h: Pinned<f64>,
    correct: DevBuf<u64>,
    correct_h: Pinned<u64>,
    /// The architecture and rows staged by [`CudaMlp::stage_batch`].
    staged: Option<(Arch, usize)>,
}

impl CudaMlp {
    /// The engine on `gpu`, chunks of [`DEFAULT_CHUNK`] samples.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Self::with_chunk(gpu, DEFAULT_CHUNK)
    }

    /// The engine on `gpu`, processing batches in chunks of at most `chunk` samples (clamped to
    /// `1..=MAX_CHUNK`), its products by the library `PS_MLP_GEMM` names (the tiled kernel
    /// where it names none; a name it does not know is an error).
    pub fn with_chunk(gpu: Arc<Gpu>, chunk: usize) -> Result<Self, GpuError> {
        let gemm = MlpGemm::from_env().map_err(GpuError::Input)?;
        Self::with_gemm(gpu, chunk, gemm.unwrap_or_default())
    }

    /// [`CudaMlp::with_chunk`] with the library of the products given.
    pub fn with_gemm(gpu: Arc<Gpu>, chunk: usize, gemm: MlpGemm) -> Result<Self, GpuError> {
        let k = Kernels {
            sgemm: gpu.function("mlp", "mlp_sgemm")?,
            softmax: gpu.function("mlp", "mlp_softmax_xent")?,
            relu_backward: gpu.function("mlp", "mlp_relu_backward")?,
            bias_grad: gpu.function("mlp", "mlp_bias_grad")?,
            bias_act: gpu.function("mlp", "mlp_bias_act")?,
        };
        let blas = match gemm {
            MlpGemm::Tiled => None,
            MlpGemm::Cublas => Some(gemm::cublas_on(&gpu.compute)?),
        };
        let ctx = &gpu.ctx;
        Ok(CudaMlp {
            k,
            gemm,
            blas,
            chunk: chunk.clamp(1, MAX_CHUNK),
            f: F32Bufs::default(),
            params_h: Vec::new(),
            grads_h: Vec::new(),
            x_h: [Pinned::new(ctx)?, Pinned::new(ctx)?],
            ones_h: Pinned::new(ctx)?,
            ones_len: 0,
            y: DevBuf::default(),
            y_h: Pinned::new(ctx)?,
            pred: DevBuf::default(),
            pred_h: Pinned::new(ctx)?,
            loss: DevBuf::default(),
            loss_h: Pinned::new(ctx)?,
            correct: DevBuf::default(),
            correct_h: Pinned::new(ctx)?,
            staged: None,
            gpu,
        })
    }

    /// The library of the matrix products.
    pub fn gemm(&self) -> MlpGemm {
        self.gemm
    }

    /// Samples per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Sizes the per-layer buffers for chunks of `rows` samples, uploads the parameters (compute
    /// stream) and zeroes the statistics.
    fn prepare(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        rows: usize,
        kind: Kind,
        chunks: usize,
    ) -> Result<(), GpuError> {
        let nl = arch.num_layers();
        let compute = &self.gpu.compute;
        let ctx = &self.gpu.ctx;
        while self.params_h.len() < nl {
            self.params_h.push(Pinned::new(ctx)?);
        }
        let f = &mut self.f;
        for v in [&mut f.params, &mut f.grads, &mut f.acts, &mut f.dz] {
            if v.len() < nl {
                v.resize_with(nl, DevBuf::default);
            }
        }
        for (l, p) in params.iter().enumerate() {
            let s = arch.layer(l);
            f.params[l].ensure(compute, s.len())?;
            if !p.is_empty() {
                self.params_h[l].fill(p)?;
                f.params[l].upload(compute, &self.params_h[l])?;
            }
            f.acts[l].ensure(compute, rows * s.fan_out)?;
            if kind == Kind::Gradient {
                f.grads[l].ensure(compute, s.len())?;
                f.dz[l].ensure(compute, rows * s.fan_out)?;
            }
        }
        if kind == Kind::Gradient {
            while self.grads_h.len() < nl {
                self.grads_h.push(Pinned::new(ctx)?);
            }
            if chunks > 1 && self.ones_len < rows {
                self.ones_h.host_mut(rows)?.fill(1.0);
                f.ones.upload(compute, &self.ones_h)?;
                self.ones_len = rows;
            }
        }
        self.loss.zero(compute, 1)?;
        self.correct.zero(compute, 1)?;
        Ok(())
    }

    /// Uploads `x` (one chunk) into input slot `slot` on the copy stream.
    fn stage_x(&mut self, slot: usize, x: &[f32]) -> Result<(), GpuError> {
        let copy = &self.gpu.copy;
        self.f.x[slot].ensure(copy, x.len())?;
        if !x.is_empty() {
            self.x_h[slot].fill(x)?;
            self.f.x[slot].upload(copy, &self.x_h[slot])?;
        }
        Ok(())
    }

    /// Uploads all labels on the copy stream.
    fn stage_labels(&mut self, y: &[u8]) -> Result<(), GpuError> {
        let copy = &self.gpu.copy;
        self.y.ensure(copy, y.len())?;
        if !y.is_empty() {
            self.y_h.fill(y)?;
            self.y.upload(copy, &self.y_h)?;
        }
        Ok(())
    }

    /// Runs a whole call on a non-empty batch: chunks, uploads, kernels. The results are left
    /// on the device (statistics, gradient tables, predictions).
    fn run(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: Option<&[u8]>,
        b: usize,
        kind: Kind,
    ) -> Result<(), GpuError> {
        let d = arch.input;
        let plan = schedule(b, self.chunk, kind);
        let rows = plan.iter().map(|c| c.1).max().unwrap_or(0);
        self.staged = None;
        self.prepare(arch, params, rows, kind, plan.len())?;
        if let Some(y) = y {
            self.stage_labels(y)?;
        }
        if kind == Kind::Predict {
            self.pred.ensure(&self.gpu.compute, b)?;
        }
        if let Some(&(start, cb, _)) = plan.first() {
            self.stage_x(0, &x[start * d..(start + cb) * d])?;
        }
        for (c, &(start, cb, mode)) in plan.iter().enumerate() {
            self.f.cur = c % 2;
            for op in plan_chunk(arch, cb, mode) {
                self.launch(&op, start)?;
            }
            // The next chunk's upload overlaps this chunk's kernels (it waits only for the
            // kernels of the chunk before, which read the same slot).
            if let Some(&(s2, cb2, _)) = plan.get(c + 1) {
                self.stage_x((c + 1) % 2, &x[s2 * d..(s2 + cb2) * d])?;
            }
        }
        Ok(())
    }

    /// Downloads the loss and correct totals.
    fn stats(&mut self, b: usize) -> Result<BatchStats, GpuError> {
        self.fetch_totals()?;
        self.read_totals(b)
    }

    /// Enqueues the copies of the loss and accuracy sums; [`Self::read_totals`] waits for them.
    pub(crate) fn fetch_totals(&mut self) -> Result<(), GpuError> {
        let compute = &self.gpu.compute;
        self.loss_h.download(compute, self.loss.get(), 1)?;
        self.correct_h.download(compute, self.correct.get(), 1)?;
        Ok(())
    }

    /// The sums [`Self::fetch_totals`] copied, as the statistics of `b` samples.
    pub(crate) fn read_totals(&mut self, b: usize) -> Result<BatchStats, GpuError> {
        Ok(BatchStats {
            loss_sum: self.loss_h.host()?[0],
            correct: self.correct_h.host()?[0],
            count: b as u64,
        })
    }

    fn try_gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> Result<BatchStats, GpuError> {
        let b = y.len();
        self.run(arch, params, x, Some(y), b, Kind::Gradient)?;
        let compute = &self.gpu.compute;
        for (l, g) in grads.iter().enumerate() {
            if !g.is_empty() {
                self.grads_h[l].download(compute, self.f.grads[l].get(), g.len())?;
            }
        }
        let stats = self.stats(b)?;
        for (l, g) in grads.iter_mut().enumerate() {
            if !g.is_empty() {
                g.copy_from_slice(self.grads_h[l].host()?);
            }
        }
        Ok(stats)
    }

    fn try_evaluate(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<BatchStats, GpuError> {
        self.run(arch, params, x, Some(y), y.len(), Kind::Evaluate)?;
        self.stats(y.len())
    }

    fn try_predict(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        let b = out.len();
        self.run(arch, params, x, None, b, Kind::Predict)?;
        self.pred_h
            .download(&self.gpu.compute, self.pred.get(), b)?;
        out.copy_from_slice(self.pred_h.host()?);
        Ok(())
    }

    /// Benchmark hook: uploads the parameters, `x` and `y` (at most [`CudaMlp::chunk`] samples)
    /// and waits, so that [`CudaMlp::gradient_kernels`] can then time the kernels alone.
    ///
    /// # Panics
    /// On the same caller bugs as [`MlpCompute::gradient`].
    pub fn stage_batch(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<(), GpuError> {
        check_batch(arch, params, x, y.len());
        check_labels(arch, y);
        let b = y.len();
        if b == 0 || b > self.chunk {
            return Err(GpuError::Input(format!(
                "mlp: stage_batch takes 1..={} samples, got {b}",
                self.chunk
            )));
        }
        self.prepare(arch, params, b, Kind::Gradient, 1)?;
        self.stage_labels(y)?;
        self.stage_x(0, x)?;
        self.gpu.synchronize()?;
        self.staged = Some((arch.clone(), b));
        Ok(())
    }

    /// Benchmark hook: enqueues on the compute stream (see [`Gpu::compute_stream`]) the kernels
    /// of one gradient over the batch staged by [`CudaMlp::stage_batch`] — zeroing the
    /// statistics, forward, loss, backward — with no copy and no wait. The gradient tables on
    /// the device then hold what [`MlpCompute::gradient`] would return.
    pub fn gradient_kernels(&mut self) -> Result<(), GpuError> {
        let Some((arch, b)) = self.staged.clone() else {
            return Err(GpuError::Input(
                "mlp: gradient_kernels needs stage_batch first".into(),
            ));
        };
        let compute = &self.gpu.compute;
        self.loss.zero(compute, 1)?;
        self.correct.zero(compute, 1)?;
        self.f.cur = 0;
        let mode = Mode::Gradient {
            inv_batch: (1.0 / b as f64) as f32,
            accumulate: false,
        };
        for op in plan_chunk(&arch, b, mode) {
            self.launch(&op, 0)?;
        }
        Ok(())
    }
}

/// The buffers a resident engine ([`super::mlp_resident`]) fills before
/// [`CudaMlp::chunk_kernels`] (`x`: input slot 0, `y`: the labels) and updates or swaps around it
/// (`params`, from `grads`).
pub(crate) struct Slots<'a> {
    pub(crate) x: &'a mut DevBuf<f32>,
    pub(crate) y: &'a mut DevBuf<u8>,
    pub(crate) params: &'a mut [DevBuf<f32>],
    pub(crate) grads: &'a [DevBuf<f32>],
}

impl CudaMlp {
    /// For a resident engine: sizes every buffer for chunks of `rows` samples of `arch` (input
    /// slot 0 and the labels included; the training buffers when `train`), uploads nothing and
    /// zeroes the loss and correct totals.
    pub(crate) fn size_for(
        &mut self,
        arch: &Arch,
        rows: usize,
        train: bool,
    ) -> Result<(), GpuError> {
        let kind = if train {
            Kind::Gradient
        } else {
            Kind::Evaluate
        };
        let none: Vec<Vec<f32>> = vec![Vec::new(); arch.num_layers()];
        self.staged = None;
        self.prepare(arch, &none, rows, kind, 1)?;
        let compute = &self.gpu.compute;
        self.f.x[0].ensure(compute, rows * arch.input)?;
        self.y.ensure(compute, rows)?;
        Ok(())
    }

    /// The buffers of [`Slots`].
    pub(crate) fn slots(&mut self) -> Slots<'_> {
        Slots {
            x: &mut self.f.x[0],
            y: &mut self.y,
            params: &mut self.f.params,
            grads: &self.f.grads,
        }
    }

    /// For a resident engine: enqueues one chunk of `rows` samples already in input slot 0 with
    /// their labels at `0..rows` — forward and loss (added to the totals), and with `train` the
    /// backward pass, the gradient of the mean loss over the rows written into the gradient
    /// tables. [`CudaMlp::size_for`] must have sized the buffers for at least `rows`.
    pub(crate) fn chunk_kernels(
        &mut self,
        arch: &Arch,
        rows: usize,
        train: bool,
    ) -> Result<(), GpuError> {
        self.f.cur = 0;
        let mode = if train {
            Mode::Gradient {
                inv_batch: (1.0 / rows.max(1) as f64) as f32,
                accumulate: false,
            }
        } else {
            Mode::Evaluate
        };
        for op in plan_chunk(arch, rows, mode) {
            self.launch(&op, 0)?;
        }
        Ok(())
    }
}

impl MlpCompute for CudaMlp {
    fn gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> Result<BatchStats, ComputeError> {
        check_batch(arch, params, x, y.len());
        check_labels(arch, y);
        arch.check_params(grads);
        if y.is_empty() {
            for g in grads.iter_mut() {
                g.fill(0.0);
            }
            return Ok(BatchStats::default());
        }
        failed("cuda-mlp", self.try_gradient(arch, params, x, y, grads))
    }

    fn evaluate(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<BatchStats, ComputeError> {
        check_batch(arch, params, x, y.len());
        check_labels(arch, y);
        if y.is_empty() {
            return Ok(BatchStats::default());
        }
        failed("cuda-mlp", self.try_evaluate(arch, params, x, y))
    }

    fn predict(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), ComputeError> {
        check_batch(arch, params, x, out.len());
        if out.is_empty() {
            return Ok(());
        }
        failed("cuda-mlp", self.try_predict(arch, params, x, out))
    }

    fn name(&self) -> &'static str {
        match self.gemm {
            MlpGemm::Tiled => "cuda",
            MlpGemm::Cublas => "cuda-cublas",
        }
    }
}
