//! The plan of one chunk of the CUDA MLP engine: the operations ([`Op`]) on named buffers
//! ([`Buf`]) that the engine maps one to one onto kernel launches, built from the architecture
//! alone (shapes, leading dimensions, transposes, offsets). Pure host code, checked by the unit
//! tests against a host emulation of the kernels where there is no GPU.

use ps_apps::mlp::Arch;
// ---------------------------------------------------------------------------------------------
// The plan: operations on named buffers
// ---------------------------------------------------------------------------------------------

/// A device buffer of f32 of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Buf {
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
pub(super) struct At {
    pub(super) buf: Buf,
    pub(super) off: usize,
}

impl Buf {
    pub(super) fn at(self, off: usize) -> At {
        At { buf: self, off }
    }
}

/// `mlp_sgemm`: `C = act(alpha · op(A) op(B) + beta · C + bias)`, `op(A)` m × k, `op(B)` k × n.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Gemm {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) alpha: f32,
    pub(super) a: At,
    pub(super) lda: usize,
    pub(super) trans_a: bool,
    pub(super) b: At,
    pub(super) ldb: usize,
    pub(super) trans_b: bool,
    pub(super) beta: f32,
    pub(super) c: At,
    pub(super) ldc: usize,
    /// The bias pointer and its stride (`bias[j * stride]` is added to column `j`).
    pub(super) bias: Option<(At, usize)>,
    pub(super) relu: bool,
}

/// Elements spanned by a row-major `rows × cols` matrix with leading dimension `ld`.
pub(super) fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

impl Gemm {
    /// Elements of A the kernel may read (from `a.off`).
    pub(super) fn extent_a(&self) -> usize {
        if self.trans_a {
            span(self.k, self.m, self.lda)
        } else {
            span(self.m, self.k, self.lda)
        }
    }

    /// Elements of B the kernel may read (from `b.off`).
    pub(super) fn extent_b(&self) -> usize {
        if self.trans_b {
            span(self.n, self.k, self.ldb)
        } else {
            span(self.k, self.n, self.ldb)
        }
    }

    /// Elements of C the kernel may read or write (from `c.off`).
    pub(super) fn extent_c(&self) -> usize {
        span(self.m, self.n, self.ldc)
    }

    /// Elements of the bias the kernel may read (from its offset).
    pub(super) fn extent_bias(&self, stride: usize) -> usize {
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
pub(super) struct Softmax {
    pub(super) rows: usize,
    pub(super) classes: usize,
    pub(super) logits: At,
    /// `(softmax − onehot) · inv_batch` is written here when set.
    pub(super) dlogits: Option<At>,
    pub(super) inv_batch: f32,
    /// Read the labels (and add to the loss and correct totals).
    pub(super) labels: bool,
    /// Write the arg-max of each sample.
    pub(super) pred: bool,
}

/// One kernel launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
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
pub(super) enum Mode {
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
pub(super) enum Kind {
    Gradient,
    Evaluate,
    Predict,
}

/// The chunks of a batch of `b` samples: `(first sample, rows, mode)`.
pub(super) fn schedule(b: usize, chunk: usize, kind: Kind) -> Vec<(usize, usize, Mode)> {
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
pub(super) fn plan_chunk(arch: &Arch, rows: usize, mode: Mode) -> Vec<Op> {
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
pub(super) type Operand = (At, usize);

impl Op {
    /// The f32 buffer the operation writes (with its extent), and those it reads.
    pub(super) fn operands(&self) -> (Option<Operand>, Vec<Operand>) {
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
