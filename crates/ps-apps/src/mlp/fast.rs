//! The fast CPU engine: GEMM via `matrixmultiply::sgemm`, reused buffers,
//! optional batch splitting over threads.

use super::compute::{check_batch, check_labels, BatchStats, MlpCompute};
use super::Arch;
use crate::error::ComputeError;

/// Rows per thread below which a batch is not split.
const MIN_ROWS_PER_THREAD: usize = 16;
/// Rows per forward chunk in `evaluate` / `predict` (bounds buffer sizes).
const EVAL_CHUNK: usize = 256;

/// Fast `f32` engine.
///
/// * Forward: `Z_l = A_{l-1} · W_lᵀ` with one `sgemm` per layer (the weight
///   table is read in place through strides, the bias column skipped), then a
///   fused `+ bias` and ReLU pass.
/// * Backward: `∂W_l = δ_lᵀ · A_{l-1}` written straight into the gradient
///   table (row stride `fan_in + 1`), bias gradient = column sums of `δ_l`,
///   `δ_{l-1} = (δ_l · W_l) ⊙ [A_{l-1} > 0]`.
/// * Softmax: stable (max subtracted), in `f32`; loss sums in `f64`.
///
/// All activation / delta buffers live in the engine and only grow, so after
/// the first batch of the largest size there is no allocation per batch
/// (with `threads > 1`, `std::thread::scope` spawns threads per batch, which
/// costs a few microseconds and a small allocation).
///
/// With `threads = t > 1` a batch of `b ≥ 16·t` rows is split into `t`
/// contiguous parts; each thread computes its part's gradient (already scaled
/// by `1/b`) into its own buffer and the parts are summed in thread order, so
/// results are deterministic for a given `t` but differ from `t = 1` by
/// `f32` rounding.
///
/// Differences from [`super::CpuMlp`]: `f32` arithmetic with GEMM summation
/// order (relative error around `1e-6·sqrt(fan_in)`); a pre-activation
/// within rounding of 0 can switch its ReLU the other way.
#[derive(Debug)]
pub struct FastMlp {
    threads: usize,
    ws: Vec<Workspace>,
    /// Whether the first training batch has been seen (and a thread count it cannot use
    /// warned of).
    first_seen: bool,
}

#[derive(Debug, Default)]
struct Workspace {
    /// Output of every layer (`b × fan_out`); hidden ones after ReLU, the
    /// last one holds the logits.
    acts: Vec<Vec<f32>>,
    /// `δ` of the current layer (`b × width`), and of the previous one.
    delta: Vec<f32>,
    dprev: Vec<f32>,
    /// Bias copy / bias-gradient scratch (`max fan_out`).
    bias: Vec<f32>,
    /// Partial gradient (threads other than the first).
    grads: Vec<Vec<f32>>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Workspace {
    fn ensure(&mut self, arch: &Arch, b: usize, need_grads: bool) {
        let nl = arch.num_layers();
        if self.acts.len() < nl {
            self.acts.resize_with(nl, Vec::new);
        }
        let mut maxw = 0;
        for l in 0..nl {
            let s = arch.layer(l);
            grow(&mut self.acts[l], b * s.fan_out);
            maxw = maxw.max(s.fan_out).max(s.fan_in);
        }
        grow(&mut self.delta, b * maxw);
        grow(&mut self.dprev, b * maxw);
        grow(&mut self.bias, maxw);
        if need_grads {
            if self.grads.len() != nl {
                self.grads.resize_with(nl, Vec::new);
            }
            for l in 0..nl {
                let n = arch.layer(l).len();
                if self.grads[l].len() != n {
                    self.grads[l].resize(n, 0.0);
                }
            }
        }
    }

    /// Forward pass of `b` rows of `x`; fills `acts[l][..b * fan_out]`.
    fn forward(&mut self, arch: &Arch, params: &[Vec<f32>], x: &[f32], b: usize) {
        let nl = arch.num_layers();
        for l in 0..nl {
            let s = arch.layer(l);
            let (fi, fo, wd) = (s.fan_in, s.fan_out, s.width());
            let (before, rest) = self.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 {
                &x[..b * fi]
            } else {
                &before[l - 1][..b * fi]
            };
            let out = &mut rest[0][..b * fo];
            let w = &params[l];
            debug_assert_eq!(w.len(), fo * wd);
            // SAFETY: input is b×fi (row stride fi), the weight table is
            // fo×wd read as its transpose fi×fo (row stride 1, column stride
            // wd, never touching column fi = bias), out is b×fo; all slices
            // were length-checked above.
            unsafe {
                matrixmultiply::sgemm(
                    b,
                    fi,
                    fo,
                    1.0,
                    input.as_ptr(),
                    fi as isize,
                    1,
                    w.as_ptr(),
                    1,
                    wd as isize,
                    0.0,
                    out.as_mut_ptr(),
                    fo as isize,
                    1,
                );
            }
            let bias = &mut self.bias[..fo];
            for (bv, row) in bias.iter_mut().zip(w.chunks_exact(wd)) {
                *bv = row[fi];
            }
            let relu = l + 1 < nl;
            for row in out.chunks_exact_mut(fo) {
                if relu {
                    for (z, &bv) in row.iter_mut().zip(bias.iter()) {
                        *z = (*z + bv).max(0.0);
                    }
                } else {
                    for (z, &bv) in row.iter_mut().zip(bias.iter()) {
                        *z += bv;
                    }
                }
            }
        }
    }

    /// Loss statistics of the logits of `b = y.len()` rows; with
    /// `delta_scale = Some(s)` also writes `δ = s·(softmax − onehot)`.
    fn softmax(&mut self, arch: &Arch, y: &[u8], delta_scale: Option<f32>) -> BatchStats {
        let c = arch.classes;
        let b = y.len();
        let logits = &self.acts[arch.num_layers() - 1][..b * c];
        let mut stats = BatchStats {
            count: b as u64,
            ..BatchStats::default()
        };
        for (r, (row, &label)) in logits.chunks_exact(c).zip(y).enumerate() {
            let label = usize::from(label);
            let mut m = f32::NEG_INFINITY;
            let mut am = 0;
            for (k, &z) in row.iter().enumerate() {
                if z > m {
                    m = z;
                    am = k;
                }
            }
            if am == label {
                stats.correct += 1;
            }
            match delta_scale {
                Some(scale) => {
                    let drow = &mut self.delta[r * c..(r + 1) * c];
                    let mut s = 0.0f32;
                    for (dv, &z) in drow.iter_mut().zip(row) {
                        let e = (z - m).exp();
                        *dv = e;
                        s += e;
                    }
                    stats.loss_sum += f64::from(s).ln() + f64::from(m) - f64::from(row[label]);
                    let inv = scale / s;
                    for dv in drow.iter_mut() {
                        *dv *= inv;
                    }
                    drow[label] -= scale;
                }
                None => {
                    let s: f32 = row.iter().map(|&z| (z - m).exp()).sum();
                    stats.loss_sum += f64::from(s).ln() + f64::from(m) - f64::from(row[label]);
                }
            }
        }
        stats
    }

    /// Backward pass (after `forward` and `softmax` with a delta) of `b` rows;
    /// overwrites `grads`.
    fn backward(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        b: usize,
        grads: &mut [Vec<f32>],
    ) {
        let nl = arch.num_layers();
        for l in (0..nl).rev() {
            let s = arch.layer(l);
            let (fi, fo, wd) = (s.fan_in, s.fan_out, s.width());
            let input: &[f32] = if l == 0 {
                &x[..b * fi]
            } else {
                &self.acts[l - 1][..b * fi]
            };
            let delta = &self.delta[..b * fo];
            let g = &mut grads[l];
            assert_eq!(g.len(), fo * wd, "gradient buffer of layer {l}");
            // SAFETY: δᵀ is fo×b read from the b×fo buffer (row stride 1,
            // column stride fo); input is b×fi; g is written as fo×fi with
            // row stride wd (columns 0..fi only). Lengths checked above.
            unsafe {
                matrixmultiply::sgemm(
                    fo,
                    b,
                    fi,
                    1.0,
                    delta.as_ptr(),
                    1,
                    fo as isize,
                    input.as_ptr(),
                    fi as isize,
                    1,
                    0.0,
                    g.as_mut_ptr(),
                    wd as isize,
                    1,
                );
            }
            let bsum = &mut self.bias[..fo];
            bsum.fill(0.0);
            for row in delta.chunks_exact(fo) {
                for (a, &d) in bsum.iter_mut().zip(row) {
                    *a += d;
                }
            }
            for (row, &v) in g.chunks_exact_mut(wd).zip(bsum.iter()) {
                row[fi] = v;
            }
            if l > 0 {
                let dprev = &mut self.dprev[..b * fi];
                let w = &params[l];
                // SAFETY: δ is b×fo, the weight table's first fi columns are
                // fo×fi with row stride wd, dprev is b×fi.
                unsafe {
                    matrixmultiply::sgemm(
                        b,
                        fo,
                        fi,
                        1.0,
                        delta.as_ptr(),
                        fo as isize,
                        1,
                        w.as_ptr(),
                        wd as isize,
                        1,
                        0.0,
                        dprev.as_mut_ptr(),
                        fi as isize,
                        1,
                    );
                }
                for (dv, &a) in dprev.iter_mut().zip(input) {
                    if a <= 0.0 {
                        *dv = 0.0;
                    }
                }
                std::mem::swap(&mut self.delta, &mut self.dprev);
            }
        }
    }

    fn gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        scale: f32,
        grads: &mut [Vec<f32>],
    ) -> BatchStats {
        let b = y.len();
        self.forward(arch, params, x, b);
        let stats = self.softmax(arch, y, Some(scale));
        self.backward(arch, params, x, b, grads);
        stats
    }
}

impl Default for FastMlp {
    fn default() -> Self {
        FastMlp::new()
    }
}

/// The threads a training batch of `batch` rows runs on, out of `threads`: at least
/// `MIN_ROWS_PER_THREAD` (16) rows each, and at least one thread.
fn threads_for_batch(threads: usize, batch: usize) -> usize {
    threads.min(batch / MIN_ROWS_PER_THREAD).max(1)
}

impl FastMlp {
    /// Single-threaded engine.
    pub fn new() -> Self {
        FastMlp::with_threads(1)
    }

    /// Engine that splits training batches over `threads` threads (`0` is
    /// treated as 1). Evaluation and prediction stay single-threaded.
    pub fn with_threads(threads: usize) -> Self {
        FastMlp {
            threads: threads.max(1),
            ws: Vec::new(),
            first_seen: false,
        }
    }

    /// Number of threads used for training batches.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl MlpCompute for FastMlp {
    fn gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> Result<BatchStats, ComputeError> {
        let b = y.len();
        check_batch(arch, params, x, b);
        check_labels(arch, y);
        arch.check_params(grads);
        if b == 0 {
            for g in grads.iter_mut() {
                g.fill(0.0);
            }
            return Ok(BatchStats::default());
        }
        let scale = 1.0 / b as f32;
        let t = threads_for_batch(self.threads, b);
        if !std::mem::replace(&mut self.first_seen, true) && t < self.threads {
            tracing::warn!(
                "MLP on {} threads: a batch of {b} splits over at most {t} ({MIN_ROWS_PER_THREAD} \
                 rows each); for more cores, run more workers or a larger --batch",
                self.threads
            );
        }
        if self.ws.len() < t {
            self.ws.resize_with(t, Workspace::default);
        }
        if t == 1 {
            let ws = &mut self.ws[0];
            ws.ensure(arch, b, false);
            return Ok(ws.gradient(arch, params, x, y, scale, grads));
        }
        let rows = b.div_ceil(t);
        let d = arch.input;
        let (first, rest) = self.ws.split_at_mut(1);
        let rest = &mut rest[..t - 1];
        let mut stats = std::thread::scope(|sc| {
            let handles: Vec<_> = rest
                .iter_mut()
                .enumerate()
                .map(|(k, ws)| {
                    let lo = ((k + 1) * rows).min(b);
                    let hi = ((k + 2) * rows).min(b);
                    let (xs, ys) = (&x[lo * d..hi * d], &y[lo..hi]);
                    sc.spawn(move || {
                        ws.ensure(arch, hi - lo, true);
                        let mut g = std::mem::take(&mut ws.grads);
                        let st = if hi > lo {
                            ws.gradient(arch, params, xs, ys, scale, &mut g)
                        } else {
                            for gl in g.iter_mut() {
                                gl.fill(0.0);
                            }
                            BatchStats::default()
                        };
                        ws.grads = g;
                        st
                    })
                })
                .collect();
            let ws0 = &mut first[0];
            ws0.ensure(arch, rows, false);
            let mut st = ws0.gradient(arch, params, &x[..rows * d], &y[..rows], scale, grads);
            for h in handles {
                match h.join() {
                    Ok(s) => st.merge(&s),
                    Err(e) => std::panic::resume_unwind(e),
                }
            }
            st
        });
        for ws in rest.iter() {
            for (g, p) in grads.iter_mut().zip(&ws.grads) {
                for (a, &v) in g.iter_mut().zip(p) {
                    *a += v;
                }
            }
        }
        // Keep the order of merged stats irrelevant: totals only.
        stats.count = b as u64;
        Ok(stats)
    }

    fn evaluate(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<BatchStats, ComputeError> {
        let b = y.len();
        check_batch(arch, params, x, b);
        check_labels(arch, y);
        if self.ws.is_empty() {
            self.ws.push(Workspace::default());
        }
        let ws = &mut self.ws[0];
        let d = arch.input;
        let mut total = BatchStats::default();
        for (xs, ys) in x.chunks(EVAL_CHUNK * d).zip(y.chunks(EVAL_CHUNK)) {
            ws.ensure(arch, ys.len(), false);
            ws.forward(arch, params, xs, ys.len());
            total.merge(&ws.softmax(arch, ys, None));
        }
        Ok(total)
    }

    fn predict(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), ComputeError> {
        let b = out.len();
        check_batch(arch, params, x, b);
        if self.ws.is_empty() {
            self.ws.push(Workspace::default());
        }
        let ws = &mut self.ws[0];
        let d = arch.input;
        let c = arch.classes;
        let nl = arch.num_layers();
        for (xs, os) in x.chunks(EVAL_CHUNK * d).zip(out.chunks_mut(EVAL_CHUNK)) {
            let n = os.len();
            ws.ensure(arch, n, false);
            ws.forward(arch, params, xs, n);
            for (o, row) in os.iter_mut().zip(ws.acts[nl - 1][..n * c].chunks_exact(c)) {
                *o = super::compute::argmax(row) as u8;
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "fast"
    }
}
