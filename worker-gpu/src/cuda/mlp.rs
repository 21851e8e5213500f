//! The CUDA MLP engine: `kernels/mlp.cu` behind [`MlpCompute`].
//!
//! One call uploads every layer's parameter table (they change between calls) and the batch,
//! runs the forward pass (one tiled SGEMM per layer with the bias and the ReLU fused), the
//! softmax cross-entropy, and for [`MlpCompute::gradient`] the backward pass (per layer one SGEMM
//! writing the weight gradient straight into the gradient table, the bias-gradient column sums,
//! one SGEMM for the input delta and the ReLU mask), then downloads what the trait returns.
//!
//! The work of a call is described first as a list of operations ([`Op`], built by `plan_chunk`
//! from the architecture alone) on named buffers ([`Buf`]); the engine then maps each operation
//! onto one kernel launch. The unit tests run the same plans through a host emulation of the
//! kernels' documented semantics and compare with the CPU oracle, so the plan (shapes, leading
//! dimensions, transposes, offsets) is checked even where there is no GPU.
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

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg,
};
use ps_apps::mlp::{check_batch, check_labels, Arch, BatchStats, MlpCompute};

use super::buffers::{DevBuf, Pinned};
use super::{failed, Call, Gpu, GpuError};
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

// ---------------------------------------------------------------------------------------------
// The plan: operations on named buffers
// ---------------------------------------------------------------------------------------------

/// A device buffer of f32 of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Buf {
    /// The chunk's input, `rows × input`.
    X,
    /// Layer `l`'s parameter table, `fan_out × (fan_in + 1)`.
    Param(usize),
    /// Layer `l`'s gradient table (same shape).
    Grad(usize),
    /// Layer `l`'s output, `rows × fan_out` (after the ReLU for hidden layers; logits last).
    Act(usize),
    /// The loss's derivative with respect to layer `l`'s pre-activation, `rows × fan_out`.
    Dz(usize),
    /// At least `rows` ones (bias-gradient accumulation of later chunks).
    Ones,
}

/// A pointer into a buffer: `buf + off` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    buf: Buf,
    off: usize,
}

impl Buf {
    fn at(self, off: usize) -> At {
        At { buf: self, off }
    }
}

/// `mlp_sgemm`: `C = act(alpha · op(A) op(B) + beta · C + bias)`, `op(A)` m × k, `op(B)` k × n.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: At,
    lda: usize,
    trans_a: bool,
    b: At,
    ldb: usize,
    trans_b: bool,
    beta: f32,
    c: At,
    ldc: usize,
    /// The bias pointer and its stride (`bias[j * stride]` is added to column `j`).
    bias: Option<(At, usize)>,
    relu: bool,
}

/// Elements spanned by a row-major `rows × cols` matrix with leading dimension `ld`.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

impl Gemm {
    /// Elements of A the kernel may read (from `a.off`).
    fn extent_a(&self) -> usize {
        if self.trans_a {
            span(self.k, self.m, self.lda)
        } else {
            span(self.m, self.k, self.lda)
        }
    }

    /// Elements of B the kernel may read (from `b.off`).
    fn extent_b(&self) -> usize {
        if self.trans_b {
            span(self.n, self.k, self.ldb)
        } else {
            span(self.k, self.n, self.ldb)
        }
    }

    /// Elements of C the kernel may read or write (from `c.off`).
    fn extent_c(&self) -> usize {
        span(self.m, self.n, self.ldc)
    }

    /// Elements of the bias the kernel may read (from its offset).
    fn extent_bias(&self, stride: usize) -> usize {
        if self.n == 0 {
            0
        } else {
            (self.n - 1) * stride + 1
        }
    }
}

/// `mlp_softmax_xent` over the logits of `rows` samples; labels, predictions and the statistics
/// are addressed by the chunk's first sample, which the executor knows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Softmax {
    rows: usize,
    classes: usize,
    logits: At,
    /// `(softmax − onehot) · inv_batch` is written here when set.
    dlogits: Option<At>,
    inv_batch: f32,
    /// Read the labels (and add to the loss and correct totals).
    labels: bool,
    /// Write the arg-max of each sample.
    pred: bool,
}

/// One kernel launch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Gemm(Gemm),
    Softmax(Softmax),
    /// `mlp_relu_backward`: `grad[i] = act[i] > 0 ? grad[i] : 0` for `i < n`.
    ReluBackward {
        grad: At,
        act: At,
        n: usize,
    },
    /// `mlp_bias_grad`: `out[j * out_stride] = Σ_r dz[r * cols + j]` (scale 1).
    BiasGrad {
        dz: At,
        rows: usize,
        cols: usize,
        out: At,
        out_stride: usize,
    },
}

/// What a call computes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Forward, loss, backward. `inv_batch` = 1 / (whole batch); `accumulate` adds into the
    /// gradient tables (every chunk but the first).
    Gradient { inv_batch: f32, accumulate: bool },
    /// Forward and loss statistics.
    Evaluate,
    /// Forward and arg-max.
    Predict,
}

/// The kind of call, before it is split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gradient,
    Evaluate,
    Predict,
}

/// The chunks of a batch of `b` samples: `(first sample, rows, mode)`.
fn schedule(b: usize, chunk: usize, kind: Kind) -> Vec<(usize, usize, Mode)> {
    let chunk = chunk.max(1);
    let inv_batch = if b == 0 { 0.0 } else { (1.0 / b as f64) as f32 };
    (0..b.div_ceil(chunk))
        .map(|c| {
            let start = c * chunk;
            let rows = chunk.min(b - start);
            let mode = match kind {
                Kind::Gradient => Mode::Gradient {
                    inv_batch,
                    accumulate: c > 0,
                },
                Kind::Evaluate => Mode::Evaluate,
                Kind::Predict => Mode::Predict,
            };
            (start, rows, mode)
        })
        .collect()
}

/// The operations of one chunk of `rows ≥ 1` samples, in launch order.
///
/// Per layer (X: rows × in, W: out × (in + 1), ld = in + 1, Z / dZ: rows × out), following the
/// header of `kernels/mlp.cu`:
/// - forward `Z = act(X W[:, :in]ᵀ + bias)`: m = rows, n = out, k = in, B = W transposed,
///   bias = W + in with stride in + 1;
/// - weights `dW[:, :in] (+)= dZᵀ X`: m = out, n = in, k = rows, A = dZ transposed, C = grad,
///   ldc = in + 1;
/// - bias `dW[:, in] = column sums of dZ` (`mlp_bias_grad`), or `+= dZᵀ · ones` when accumulating;
/// - input `dX = dZ W[:, :in]`: m = rows, n = in, k = out, B = W with ldb = in + 1, then the ReLU
///   mask with the previous layer's output (not for layer 0).
fn plan_chunk(arch: &Arch, rows: usize, mode: Mode) -> Vec<Op> {
    let nl = arch.num_layers();
    let mut ops = Vec::with_capacity(5 * nl + 1);
    let input_of = |l: usize| if l == 0 { Buf::X } else { Buf::Act(l - 1) };
    for l in 0..nl {
        let s = arch.layer(l);
        let (fi, fo, w) = (s.fan_in, s.fan_out, s.width());
        ops.push(Op::Gemm(Gemm {
            m: rows,
            n: fo,
            k: fi,
            alpha: 1.0,
            a: input_of(l).at(0),
            lda: fi,
            trans_a: false,
            b: Buf::Param(l).at(0),
            ldb: w,
            trans_b: true,
            beta: 0.0,
            c: Buf::Act(l).at(0),
            ldc: fo,
            bias: Some((Buf::Param(l).at(fi), w)),
            relu: l + 1 < nl,
        }));
    }
    let gradient = match mode {
        Mode::Gradient {
            inv_batch,
            accumulate,
        } => Some((inv_batch, accumulate)),
        _ => None,
    };
    ops.push(Op::Softmax(Softmax {
        rows,
        classes: arch.classes,
        logits: Buf::Act(nl - 1).at(0),
        dlogits: gradient.map(|_| Buf::Dz(nl - 1).at(0)),
        inv_batch: gradient.map_or(0.0, |g| g.0),
        labels: mode != Mode::Predict,
        pred: mode == Mode::Predict,
    }));
    let Some((_, accumulate)) = gradient else {
        return ops;
    };
    let beta = if accumulate { 1.0 } else { 0.0 };
    for l in (0..nl).rev() {
        let s = arch.layer(l);
        let (fi, fo, w) = (s.fan_in, s.fan_out, s.width());
        ops.push(Op::Gemm(Gemm {
            m: fo,
            n: fi,
            k: rows,
            alpha: 1.0,
            a: Buf::Dz(l).at(0),
            lda: fo,
            trans_a: true,
            b: input_of(l).at(0),
            ldb: fi,
            trans_b: false,
            beta,
            c: Buf::Grad(l).at(0),
            ldc: w,
            bias: None,
            relu: false,
        }));
        if accumulate {
            ops.push(Op::Gemm(Gemm {
                m: fo,
                n: 1,
                k: rows,
                alpha: 1.0,
                a: Buf::Dz(l).at(0),
                lda: fo,
                trans_a: true,
                b: Buf::Ones.at(0),
                ldb: 1,
                trans_b: false,
                beta: 1.0,
                c: Buf::Grad(l).at(fi),
                ldc: w,
                bias: None,
                relu: false,
            }));
        } else {
            ops.push(Op::BiasGrad {
                dz: Buf::Dz(l).at(0),
                rows,
                cols: fo,
                out: Buf::Grad(l).at(fi),
                out_stride: w,
            });
        }
        if l > 0 {
            ops.push(Op::Gemm(Gemm {
                m: rows,
                n: fi,
                k: fo,
                alpha: 1.0,
                a: Buf::Dz(l).at(0),
                lda: fo,
                trans_a: false,
                b: Buf::Param(l).at(0),
                ldb: w,
                trans_b: false,
                beta: 0.0,
                c: Buf::Dz(l - 1).at(0),
                ldc: fi,
                bias: None,
                relu: false,
            }));
            ops.push(Op::ReluBackward {
                grad: Buf::Dz(l - 1).at(0),
                act: Buf::Act(l - 1).at(0),
                n: rows * fi,
            });
        }
    }
    ops
}

/// A pointer and the number of elements an operation touches from it.
type Operand = (At, usize);

impl Op {
    /// The f32 buffer the operation writes (with its extent), and those it reads.
    fn operands(&self) -> (Option<Operand>, Vec<Operand>) {
        match *self {
            Op::Gemm(g) => {
                let mut ins = vec![(g.a, g.extent_a()), (g.b, g.extent_b())];
                if let Some((p, stride)) = g.bias {
                    ins.push((p, g.extent_bias(stride)));
                }
                (Some((g.c, g.extent_c())), ins)
            }
            Op::Softmax(s) => (
                s.dlogits.map(|d| (d, s.rows * s.classes)),
                vec![(s.logits, s.rows * s.classes)],
            ),
            Op::ReluBackward { grad, act, n } => (Some((grad, n)), vec![(act, n)]),
            Op::BiasGrad {
                dz,
                rows,
                cols,
                out,
                out_stride,
            } => (
                Some((
                    out,
                    if cols == 0 {
                        0
                    } else {
                        (cols - 1) * out_stride + 1
                    },
                )),
                vec![(dz, rows * cols)],
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

fn int(v: usize, what: &str) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::Input(format!("mlp: {what} = {v} exceeds i32")))
}

fn internal(msg: String) -> GpuError {
    GpuError::Input(format!("mlp engine (internal): {msg}"))
}

/// The f32 device buffers.
#[derive(Default)]
struct F32Bufs {
    /// Two input buffers, used by alternate chunks; `cur` is the one the plan's `X` means.
    x: [DevBuf<f32>; 2],
    cur: usize,
    params: Vec<DevBuf<f32>>,
    grads: Vec<DevBuf<f32>>,
    acts: Vec<DevBuf<f32>>,
    dz: Vec<DevBuf<f32>>,
    ones: DevBuf<f32>,
}

impl F32Bufs {
    fn slot(&self, b: Buf) -> &DevBuf<f32> {
        match b {
            Buf::X => &self.x[self.cur],
            Buf::Param(l) => &self.params[l],
            Buf::Grad(l) => &self.grads[l],
            Buf::Act(l) => &self.acts[l],
            Buf::Dz(l) => &self.dz[l],
            Buf::Ones => &self.ones,
        }
    }

    fn slot_mut(&mut self, b: Buf) -> &mut DevBuf<f32> {
        match b {
            Buf::X => &mut self.x[self.cur],
            Buf::Param(l) => &mut self.params[l],
            Buf::Grad(l) => &mut self.grads[l],
            Buf::Act(l) => &mut self.acts[l],
            Buf::Dz(l) => &mut self.dz[l],
            Buf::Ones => &mut self.ones,
        }
    }

    /// `len` elements from `p` (checked against the buffer's length).
    fn view(&self, p: At, len: usize) -> Result<CudaView<'_, f32>, GpuError> {
        let s = self.slot(p.buf).get();
        s.try_slice(p.off..p.off + len)
            .filter(|_| p.off + len <= s.len())
            .ok_or_else(|| {
                internal(format!(
                    "{:?} + {} needs {len} elements, the buffer has {}",
                    p.buf,
                    p.off,
                    s.len()
                ))
            })
    }

    /// Runs `f` with the buffer `out` taken out of `self` (so that `f` may read the others).
    fn with_out<R>(&mut self, out: Buf, f: impl FnOnce(&F32Bufs, &mut DevBuf<f32>) -> R) -> R {
        let mut o = std::mem::take(self.slot_mut(out));
        let r = f(self, &mut o);
        *self.slot_mut(out) = o;
        r
    }
}

fn view_mut(buf: &mut DevBuf<f32>, p: At, len: usize) -> Result<CudaViewMut<'_, f32>, GpuError> {
    let s = buf.get_mut();
    let have = s.len();
    if p.off + len > have {
        return Err(internal(format!(
            "{:?} + {} needs {len} elements, the buffer has {have}",
            p.buf, p.off
        )));
    }
    s.try_slice_mut(p.off..p.off + len)
        .ok_or_else(|| internal(format!("{:?} + {}: bad range", p.buf, p.off)))
}

struct Kernels {
    sgemm: CudaFunction,
    softmax: CudaFunction,
    relu_backward: CudaFunction,
    bias_grad: CudaFunction,
}

/// Training and inference of a dense ReLU MLP on a CUDA device.
pub struct CudaMlp {
    gpu: Arc<Gpu>,
    k: Kernels,
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
    /// `1..=MAX_CHUNK`).
    pub fn with_chunk(gpu: Arc<Gpu>, chunk: usize) -> Result<Self, GpuError> {
        let k = Kernels {
            sgemm: gpu.function("mlp", "mlp_sgemm")?,
            softmax: gpu.function("mlp", "mlp_softmax_xent")?,
            relu_backward: gpu.function("mlp", "mlp_relu_backward")?,
            bias_grad: gpu.function("mlp", "mlp_bias_grad")?,
        };
        let ctx = &gpu.ctx;
        Ok(CudaMlp {
            k,
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
        let compute = &self.gpu.compute;
        self.loss_h.download(compute, self.loss.get(), 1)?;
        self.correct_h.download(compute, self.correct.get(), 1)?;
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

    /// Launches one operation of the chunk whose first sample is `start`.
    fn launch(&mut self, op: &Op, start: usize) -> Result<(), GpuError> {
        let (out, ins) = op.operands();
        if let Some((o, _)) = out {
            if ins.iter().any(|(i, _)| i.buf == o.buf) {
                return Err(internal(format!("{op:?} reads the buffer it writes")));
            }
        }
        let stream = &self.gpu.compute;
        let k = &self.k;
        match *op {
            Op::Gemm(g) => {
                if g.m == 0 || g.n == 0 {
                    return Ok(());
                }
                self.f
                    .with_out(g.c.buf, |f, out| launch_gemm(stream, &k.sgemm, f, out, &g))
            }
            Op::Softmax(s) => {
                if s.rows == 0 {
                    return Ok(());
                }
                let labels = if s.labels {
                    Some(
                        self.y
                            .get()
                            .try_slice(start..start + s.rows)
                            .filter(|_| start + s.rows <= self.y.get().len())
                            .ok_or_else(|| internal("labels out of range".into()))?,
                    )
                } else {
                    None
                };
                let mut pred = if s.pred {
                    let p = self.pred.get_mut();
                    let have = p.len();
                    if start + s.rows > have {
                        return Err(internal("predictions out of range".into()));
                    }
                    Some(
                        p.try_slice_mut(start..start + s.rows)
                            .ok_or_else(|| internal("predictions out of range".into()))?,
                    )
                } else {
                    None
                };
                let stats = s
                    .labels
                    .then_some((self.loss.get_mut(), self.correct.get_mut()));
                let sm = SoftmaxArgs {
                    labels: labels.as_ref(),
                    pred: pred.as_mut(),
                    stats,
                };
                match s.dlogits {
                    Some(d) => self.f.with_out(d.buf, |f, out| {
                        let mut dl = view_mut(out, d, s.rows * s.classes)?;
                        launch_softmax(stream, &k.softmax, &self.gpu, f, &s, Some(&mut dl), sm)
                    }),
                    None => launch_softmax(stream, &k.softmax, &self.gpu, &self.f, &s, None, sm),
                }
            }
            Op::ReluBackward { grad, act, n } => {
                if n == 0 {
                    return Ok(());
                }
                let gpu = &self.gpu;
                self.f.with_out(grad.buf, |f, out| {
                    let a = f.view(act, n)?;
                    let mut g = view_mut(out, grad, n)?;
                    let n64 = n as u64;
                    let cfg = LaunchConfig {
                        grid_dim: (gpu.grid_for(n64, BLOCK, BLOCKS_PER_SM), 1, 1),
                        block_dim: (BLOCK, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    let mut b = stream.launch_builder(&k.relu_backward);
                    b.arg(&mut g).arg(&a).arg(&n64);
                    // SAFETY: grad and act hold n floats each (checked by the views).
                    unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_relu_backward)")?;
                    Ok(())
                })
            }
            Op::BiasGrad {
                dz,
                rows,
                cols,
                out,
                out_stride,
            } => {
                if cols == 0 {
                    return Ok(());
                }
                self.f.with_out(out.buf, |f, o| {
                    let z = f.view(dz, rows * cols)?;
                    let mut dst = view_mut(o, out, (cols - 1) * out_stride + 1)?;
                    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
                    let stride_i = int(out_stride, "out_stride")?;
                    let scale = 1.0f32;
                    let grid = u32::try_from(cols.div_ceil(32))
                        .map_err(|_| internal("bias grid too large".into()))?;
                    let cfg = LaunchConfig {
                        grid_dim: (grid, 1, 1),
                        block_dim: (32, 8, 1),
                        shared_mem_bytes: 0,
                    };
                    let mut b = stream.launch_builder(&k.bias_grad);
                    b.arg(&z)
                        .arg(&rows_i)
                        .arg(&cols_i)
                        .arg(&scale)
                        .arg(&mut dst)
                        .arg(&stride_i);
                    // SAFETY: dz holds rows × cols floats, out (cols − 1) × stride + 1 (views).
                    unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_bias_grad)")?;
                    Ok(())
                })
            }
        }
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

    /// Downloads the loss and correct totals (16 bytes) as the statistics of `count` samples.
    pub(crate) fn totals(&mut self, count: usize) -> Result<BatchStats, GpuError> {
        self.stats(count)
    }
}

/// The label / prediction / statistics operands of a softmax launch.
struct SoftmaxArgs<'a, 'b> {
    labels: Option<&'a CudaView<'b, u8>>,
    pred: Option<&'a mut CudaViewMut<'b, u8>>,
    stats: Option<(&'a mut CudaSlice<f64>, &'a mut CudaSlice<u64>)>,
}

fn launch_gemm(
    stream: &Arc<CudaStream>,
    func: &CudaFunction,
    f: &F32Bufs,
    out: &mut DevBuf<f32>,
    g: &Gemm,
) -> Result<(), GpuError> {
    let a = f.view(g.a, g.extent_a())?;
    let b = f.view(g.b, g.extent_b())?;
    let bias = match g.bias {
        Some((p, stride)) => Some((
            f.view(p, g.extent_bias(stride))?,
            int(stride, "bias stride")?,
        )),
        None => None,
    };
    let mut c = view_mut(out, g.c, g.extent_c())?;
    let (m, n, k) = (int(g.m, "m")?, int(g.n, "n")?, int(g.k, "k")?);
    let (lda, ldb, ldc) = (int(g.lda, "lda")?, int(g.ldb, "ldb")?, int(g.ldc, "ldc")?);
    let (trans_a, trans_b, relu) = (
        i32::from(g.trans_a),
        i32::from(g.trans_b),
        i32::from(g.relu),
    );
    let (alpha, beta) = (g.alpha, g.beta);
    let grid_x = g.n.div_ceil(TILE);
    let grid_y = g.m.div_ceil(TILE);
    if grid_y > 65_535 || grid_x > i32::MAX as usize {
        return Err(GpuError::Input(format!(
            "mlp: an SGEMM of {} x {} exceeds the grid limits",
            g.m, g.n
        )));
    }
    let cfg = LaunchConfig {
        grid_dim: (grid_x as u32, grid_y as u32, 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let null: u64 = 0;
    let no_stride: i32 = 0;
    let mut lb = stream.launch_builder(func);
    lb.arg(&m)
        .arg(&n)
        .arg(&k)
        .arg(&alpha)
        .arg(&a)
        .arg(&lda)
        .arg(&trans_a)
        .arg(&b)
        .arg(&ldb)
        .arg(&trans_b)
        .arg(&beta)
        .arg(&mut c)
        .arg(&ldc);
    match &bias {
        Some((v, stride)) => lb.arg(v).arg(stride),
        None => lb.arg(&null).arg(&no_stride),
    };
    lb.arg(&relu);
    // SAFETY: every operand's view covers exactly the elements the kernel may touch for these
    // m, n, k, leading dimensions and transposes (Gemm::extent_*), argument types match
    // mlp_sgemm's signature, and the grid is (ceil(n / 64), ceil(m / 64)) of 16 x 16 threads.
    unsafe { lb.launch(cfg) }.call("cuLaunchKernel(mlp_sgemm)")?;
    Ok(())
}

fn launch_softmax(
    stream: &Arc<CudaStream>,
    func: &CudaFunction,
    gpu: &Gpu,
    f: &F32Bufs,
    s: &Softmax,
    dlogits: Option<&mut CudaViewMut<'_, f32>>,
    args: SoftmaxArgs<'_, '_>,
) -> Result<(), GpuError> {
    let logits = f.view(s.logits, s.rows * s.classes)?;
    let (batch, classes) = (int(s.rows, "rows")?, int(s.classes, "classes")?);
    let inv_batch = s.inv_batch;
    let null: u64 = 0;
    let cfg = LaunchConfig {
        grid_dim: (gpu.grid_for(s.rows as u64 * 32, BLOCK, BLOCKS_PER_SM), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut lb = stream.launch_builder(func);
    lb.arg(&logits).arg(&batch).arg(&classes);
    match args.labels {
        Some(v) => lb.arg(v),
        None => lb.arg(&null),
    };
    match dlogits {
        Some(v) => lb.arg(v),
        None => lb.arg(&null),
    };
    lb.arg(&inv_batch);
    match args.pred {
        Some(v) => lb.arg(v),
        None => lb.arg(&null),
    };
    match args.stats {
        Some((loss, correct)) => lb.arg(loss).arg(correct),
        None => lb.arg(&null).arg(&null),
    };
    // SAFETY: logits and dlogits hold rows × classes floats, labels and pred `rows` bytes (the
    // labels were checked < classes on the host), loss one double, correct one u64; argument
    // types follow mlp_softmax_xent's signature; blockDim is a multiple of 32.
    unsafe { lb.launch(cfg) }.call("cuLaunchKernel(mlp_softmax_xent)")?;
    Ok(())
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
        "cuda"
    }
}

// ---------------------------------------------------------------------------------------------
// Host emulation of the plan (no GPU needed)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use ps_apps::mlp::CpuMlp;
    use std::collections::HashMap;

    /// The kernels' documented semantics on host vectors of exactly the planned sizes; buffers
    /// the plan should write before reading start as NaN.
    struct Emu {
        bufs: HashMap<Buf, Vec<f32>>,
        labels: Vec<u8>,
        pred: Vec<u8>,
        loss: f64,
        correct: u64,
    }

    impl Emu {
        fn get(&self, p: At, len: usize) -> &[f32] {
            let v = &self.bufs[&p.buf];
            assert!(p.off + len <= v.len(), "{p:?} + {len} > {}", v.len());
            &v[p.off..p.off + len]
        }

        fn run(&mut self, op: &Op, start: usize) {
            let (out, ins) = op.operands();
            if let Some((o, _)) = out {
                assert!(ins.iter().all(|(i, _)| i.buf != o.buf), "{op:?}");
            }
            match *op {
                Op::Gemm(g) => {
                    if g.m == 0 || g.n == 0 {
                        return;
                    }
                    let a = self.get(g.a, g.extent_a()).to_vec();
                    let b = self.get(g.b, g.extent_b()).to_vec();
                    let bias = g
                        .bias
                        .map(|(p, s)| (self.get(p, g.extent_bias(s)).to_vec(), s));
                    let ext = g.extent_c();
                    let c = self.bufs.get_mut(&g.c.buf).expect("c");
                    assert!(g.c.off + ext <= c.len());
                    let c = &mut c[g.c.off..g.c.off + ext];
                    for i in 0..g.m {
                        for j in 0..g.n {
                            let mut acc = 0.0f32;
                            for p in 0..g.k {
                                let av = if g.trans_a {
                                    a[p * g.lda + i]
                                } else {
                                    a[i * g.lda + p]
                                };
                                let bv = if g.trans_b {
                                    b[j * g.ldb + p]
                                } else {
                                    b[p * g.ldb + j]
                                };
                                acc = av.mul_add(bv, acc);
                            }
                            let out = &mut c[i * g.ldc + j];
                            let mut v = g.alpha * acc;
                            if g.beta != 0.0 {
                                v = g.beta.mul_add(*out, v);
                            }
                            if let Some((bv, s)) = &bias {
                                v += bv[j * s];
                            }
                            if g.relu {
                                v = v.max(0.0);
                            }
                            *out = v;
                        }
                    }
                }
                Op::Softmax(s) => {
                    let z = self.get(s.logits, s.rows * s.classes).to_vec();
                    let mut dl = vec![0.0f32; s.rows * s.classes];
                    for r in 0..s.rows {
                        let row = &z[r * s.classes..(r + 1) * s.classes];
                        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let best = ps_apps::mlp::argmax(row);
                        let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
                        let label = s.labels.then(|| usize::from(self.labels[start + r]));
                        for (cl, &v) in row.iter().enumerate() {
                            let p = (v - m).exp() / sum;
                            let hot = if Some(cl) == label { 1.0 } else { 0.0 };
                            dl[r * s.classes + cl] = (p - hot) * s.inv_batch;
                        }
                        if s.pred {
                            self.pred[start + r] = best as u8;
                        }
                        if let Some(lab) = label {
                            self.loss += f64::from(m) + f64::from(sum).ln() - f64::from(row[lab]);
                            self.correct += u64::from(best == lab);
                        }
                    }
                    if let Some(d) = s.dlogits {
                        let v = self.bufs.get_mut(&d.buf).expect("dlogits");
                        v[d.off..d.off + dl.len()].copy_from_slice(&dl);
                    }
                }
                Op::ReluBackward { grad, act, n } => {
                    let a = self.get(act, n).to_vec();
                    let g = self.bufs.get_mut(&grad.buf).expect("grad");
                    for (gv, av) in g[grad.off..grad.off + n].iter_mut().zip(&a) {
                        if av.is_nan() || *av <= 0.0 {
                            *gv = 0.0;
                        }
                    }
                }
                Op::BiasGrad {
                    dz,
                    rows,
                    cols,
                    out,
                    out_stride,
                } => {
                    let z = self.get(dz, rows * cols).to_vec();
                    let o = self.bufs.get_mut(&out.buf).expect("out");
                    for j in 0..cols {
                        o[out.off + j * out_stride] = (0..rows).map(|r| z[r * cols + j]).sum();
                    }
                }
            }
        }
    }

    /// Runs a call through the emulation like `CudaMlp::run` does; returns
    /// (grads, stats, predictions).
    fn emulate(
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        kind: Kind,
        chunk: usize,
    ) -> (Vec<Vec<f32>>, BatchStats, Vec<u8>) {
        let b = y.len();
        let nl = arch.num_layers();
        let mut emu = Emu {
            bufs: HashMap::new(),
            labels: y.to_vec(),
            pred: vec![0xEE; b],
            loss: 0.0,
            correct: 0,
        };
        for (l, p) in params.iter().enumerate() {
            emu.bufs.insert(Buf::Param(l), p.clone());
            emu.bufs.insert(Buf::Grad(l), vec![f32::NAN; p.len()]);
        }
        for (start, rows, mode) in schedule(b, chunk, kind) {
            let d = arch.input;
            emu.bufs
                .insert(Buf::X, x[start * d..(start + rows) * d].to_vec());
            emu.bufs.insert(Buf::Ones, vec![1.0; rows]);
            for l in 0..nl {
                let fo = arch.layer(l).fan_out;
                emu.bufs.insert(Buf::Act(l), vec![f32::NAN; rows * fo]);
                emu.bufs.insert(Buf::Dz(l), vec![f32::NAN; rows * fo]);
            }
            for op in plan_chunk(arch, rows, mode) {
                emu.run(&op, start);
            }
        }
        let grads = (0..nl).map(|l| emu.bufs[&Buf::Grad(l)].clone()).collect();
        let stats = BatchStats {
            loss_sum: emu.loss,
            correct: emu.correct,
            count: b as u64,
        };
        (grads, stats, emu.pred)
    }

    /// splitmix64 in [-1, 1).
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
        if a.iter().any(|v| v.is_nan()) {
            return f64::INFINITY;
        }
        (num / den.max(1e-300)).sqrt()
    }

    #[test]
    fn plans_match_the_cpu_oracle() {
        let mut rng = Rng(7);
        let archs = [
            Arch::new(20, &[], 3),
            Arch::new(33, &[37], 10),
            Arch::new(50, &[37, 65], 7),
        ];
        for arch in &archs {
            let params: Vec<Vec<f32>> = arch
                .layers()
                .iter()
                .map(|s| (0..s.len()).map(|_| rng.uniform() * 0.4).collect())
                .collect();
            for b in [1usize, 3, 64, 200] {
                let x: Vec<f32> = (0..b * arch.input).map(|_| rng.uniform()).collect();
                let y: Vec<u8> = (0..b)
                    .map(|_| ((rng.uniform() + 1.0) * 0.5 * arch.classes as f32) as u8)
                    .map(|v| v.min(arch.classes as u8 - 1))
                    .collect();
                let mut want = arch.zeros();
                let want_stats = CpuMlp.gradient(arch, &params, &x, &y, &mut want).unwrap();
                let mut want_pred = vec![0u8; b];
                CpuMlp.predict(arch, &params, &x, &mut want_pred).unwrap();
                for chunk in [4096usize, 64, 7, 1] {
                    let (g, st, _) = emulate(arch, &params, &x, &y, Kind::Gradient, chunk);
                    for l in 0..arch.num_layers() {
                        let e = rel_err(&g[l], &want[l]);
                        assert!(e < 1e-5, "{arch:?} b {b} chunk {chunk} layer {l}: {e}");
                    }
                    assert_eq!(st.correct, want_stats.correct);
                    assert!(
                        (st.loss_sum - want_stats.loss_sum).abs() <= 1e-5 * want_stats.loss_sum
                    );
                    let (_, ev, _) = emulate(arch, &params, &x, &y, Kind::Evaluate, chunk);
                    assert_eq!(ev.correct, want_stats.correct);
                    assert!(
                        (ev.loss_sum - want_stats.loss_sum).abs() <= 1e-5 * want_stats.loss_sum
                    );
                    let (_, pst, pred) = emulate(arch, &params, &x, &y, Kind::Predict, chunk);
                    assert_eq!(pred, want_pred, "{arch:?} b {b} chunk {chunk}");
                    assert_eq!((pst.loss_sum, pst.correct), (0.0, 0));
                }
            }
        }
    }

    #[test]
    fn schedule_covers_the_batch() {
        let s = schedule(10_000, 4096, Kind::Gradient);
        assert_eq!(
            s.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            vec![(0, 4096), (4096, 4096), (8192, 1808)]
        );
        assert!(matches!(
            s[0].2,
            Mode::Gradient {
                accumulate: false,
                ..
            }
        ));
        assert!(matches!(
            s[2].2,
            Mode::Gradient {
                accumulate: true,
                ..
            }
        ));
        assert!(schedule(0, 4096, Kind::Evaluate).is_empty());
    }
}
