//! Which library runs the MLP engine's matrix products: its own tiled kernel (`mlp_sgemm`) or
//! cuBLAS's SGEMM followed by a bias-and-ReLU pass (`mlp_bias_act`). Issue 11 asks for both,
//! timed, and the faster kept: the tiled kernel stays the default until a GPU run says which
//! (`gpu-bench` times the gradient and the device clock with each). A worker's environment may
//! name the other in `PS_MLP_GEMM` ([`MlpGemm::from_env`]), so that a whole job can be timed with
//! it too.
//!
//! A plan's products are row-major (`C = op(A) op(B)`, every operand with its leading
//! dimension); cuBLAS's are column-major. A row-major `m x n` matrix with leading dimension `ld`
//! is, read column-major, its `n x m` transpose with the same `ld`, so the row-major product is
//! the column-major `C^T = op(B)^T op(A)^T`: cuBLAS is called with the operands swapped, `n`
//! and `m` swapped, and each operand's transpose flag as the plan has it ([`cublas_config`]).
//! With f32 in and out and cuBLAS's default math mode (no TF32), its sums agree with the tiled
//! kernel's to f32 rounding; the conformance tests hold both to the CPU oracle.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use cudarc::cublas::sys::{self, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::launch::{bias_view, int, view_mut, F32Bufs};
use super::plan::Gemm;
use super::{BLOCK, BLOCKS_PER_SM};
use crate::cuda::buffers::DevBuf;
use crate::cuda::{Call, Gpu, GpuError};

/// The library of the engine's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MlpGemm {
    /// `mlp_sgemm`: 64 x 64 tiles of C per block, bias and ReLU fused.
    #[default]
    Tiled,
    /// cuBLAS `cublasSgemm`, then `mlp_bias_act` where the product has a bias or a ReLU.
    Cublas,
}

impl MlpGemm {
    /// Both, for benchmarks and conformance.
    pub const ALL: [MlpGemm; 2] = [MlpGemm::Tiled, MlpGemm::Cublas];

    /// The environment variable that picks the sessions' library.
    pub const ENV: &'static str = "PS_MLP_GEMM";

    /// The library `PS_MLP_GEMM` names (`None` where it is unset or empty), or an error that
    /// says which names there are.
    pub fn from_env() -> Result<Option<Self>, String> {
        crate::cuda::choice_from_env(Self::ENV)
    }

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            MlpGemm::Tiled => "tiled",
            MlpGemm::Cublas => "cublas",
        }
    }
}

impl FromStr for MlpGemm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "tiled" => Ok(MlpGemm::Tiled),
            "cublas" => Ok(MlpGemm::Cublas),
            other => Err(format!(
                "unknown MLP GEMM {other:?}: expected tiled or cublas"
            )),
        }
    }
}

/// cuBLAS's handle, destroyed without a panic. cudarc's own drop unwraps `cublasDestroy`'s
/// status, which after a sticky device error (an illegal address, say) may be an error, and the
/// project allows no panic on a driver error; here such a status is logged. cudarc's drop never
/// runs, so its clone of the stream is kept to the end of the process (one reference; the
/// engine's own clone keeps the stream anyway).
pub(super) struct Blas(ManuallyDrop<CudaBlas>);

impl Deref for Blas {
    type Target = CudaBlas;

    fn deref(&self) -> &CudaBlas {
        &self.0
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle is this wrapper's alone, is destroyed once (cudarc's drop, which
        // would destroy it again, never runs) and is not used after this.
        let status = unsafe { sys::cublasDestroy_v2(*self.0.handle()) };
        if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            tracing::warn!(
                ?status,
                "cublasDestroy failed; the handle is dropped anyway"
            );
        }
    }
}

/// cuBLAS's handle on the engine's compute stream, where the library can be loaded, in the
/// default math mode: f32 products in f32 (no TF32), set explicitly rather than assumed, so the
/// results stay within the tolerances the conformance cases hold them to.
pub(super) fn cublas_on(stream: &Arc<CudaStream>) -> Result<Blas, GpuError> {
    // SAFETY: only dlopens the library's candidate names.
    if !unsafe { sys::is_culib_present() } {
        return Err(GpuError::Input(format!(
            "{}=cublas: libcublas could not be loaded",
            MlpGemm::ENV
        )));
    }
    let blas = CudaBlas::new(Arc::clone(stream)).map_err(|e| GpuError::Driver {
        call: "cublasCreate",
        error: format!("{e:?}"),
    })?;
    let blas = Blas(ManuallyDrop::new(blas));
    // SAFETY: a live handle, used by this thread only.
    let status =
        unsafe { sys::cublasSetMathMode(*blas.handle(), sys::cublasMath_t::CUBLAS_DEFAULT_MATH) };
    if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        return Err(GpuError::Driver {
            call: "cublasSetMathMode",
            error: format!("{status:?}"),
        });
    }
    Ok(blas)
}

/// The column-major call that computes the row-major product `g` (see the module docs): `B`'s
/// memory is cuBLAS's first operand, `A`'s its second, and the shape is `n x m` over `k`.
pub(super) fn cublas_config(g: &Gemm) -> Result<GemmConfig<f32>, GpuError> {
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let cfg = GemmConfig {
        transa: op(g.trans_b),
        transb: op(g.trans_a),
        m: int(g.n, "n")?,
        n: int(g.m, "m")?,
        k: int(g.k, "k")?,
        alpha: g.alpha,
        lda: int(g.ldb, "ldb")?,
        ldb: int(g.lda, "lda")?,
        beta: g.beta,
        ldc: int(g.ldc, "ldc")?,
    };
    check_leading_dims(&cfg)?;
    Ok(cfg)
}

/// cuBLAS's rules for the leading dimensions (`CUBLAS_STATUS_INVALID_VALUE` otherwise), checked
/// here so that a plan the tiled kernel accepts but cuBLAS would refuse says why before launch.
fn check_leading_dims(c: &GemmConfig<f32>) -> Result<(), GpuError> {
    let rows = |t: cublasOperation_t, plain: i32, transposed: i32| match t {
        cublasOperation_t::CUBLAS_OP_N => plain,
        _ => transposed,
    };
    let need = [
        ("lda", c.lda, rows(c.transa, c.m, c.k).max(1)),
        ("ldb", c.ldb, rows(c.transb, c.k, c.n).max(1)),
        ("ldc", c.ldc, c.m.max(1)),
    ];
    match need.iter().find(|(_, ld, min)| ld < min) {
        Some((name, ld, min)) => Err(GpuError::Input(format!(
            "cuBLAS SGEMM {}x{}x{}: {name} {ld} is under the {min} cuBLAS requires",
            c.m, c.n, c.k
        ))),
        None => Ok(()),
    }
}

/// Runs `g` through cuBLAS, then adds its bias and applies its ReLU with `bias_act`
/// (`mlp_bias_act`) where it has either: the same result as `mlp_sgemm` to f32 rounding.
pub(super) fn launch_gemm_cublas(
    blas: &CudaBlas,
    stream: &Arc<CudaStream>,
    bias_act: &CudaFunction,
    gpu: &Gpu,
    f: &F32Bufs,
    out: &mut DevBuf<f32>,
    g: &Gemm,
) -> Result<(), GpuError> {
    let cfg = cublas_config(g)?;
    let a = f.view(g.a, g.extent_a())?;
    let b = f.view(g.b, g.extent_b())?;
    let mut c = view_mut(out, g.c, g.extent_c())?;
    // SAFETY: the views cover exactly the elements these shapes, leading dimensions and
    // transposes reach (Gemm::extent_*, which the tiled kernel's launch checks the same way),
    // and the swapped column-major call reads and writes the same elements.
    unsafe { blas.gemm(cfg, &b, &a, &mut c) }.map_err(|e| GpuError::Driver {
        call: "cublasSgemm",
        error: format!("{e:?}"),
    })?;
    if g.bias.is_none() && !g.relu {
        return Ok(());
    }
    let bias = bias_view(f, g)?;
    let (m, n, ldc) = (int(g.m, "m")?, int(g.n, "n")?, int(g.ldc, "ldc")?);
    let relu = i32::from(g.relu);
    let launch = LaunchConfig {
        grid_dim: (
            gpu.grid_for(g.m as u64 * g.n as u64, BLOCK, BLOCKS_PER_SM),
            1,
            1,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let (null, no_stride) = (0u64, 0i32);
    let mut lb = stream.launch_builder(bias_act);
    lb.arg(&mut c).arg(&m).arg(&n).arg(&ldc);
    match &bias {
        Some((v, stride)) => lb.arg(v).arg(stride),
        None => lb.arg(&null).arg(&no_stride),
    };
    lb.arg(&relu);
    // SAFETY: c covers the m x n product with leading dimension ldc and the bias view every
    // bias[j * stride] for j < n (Gemm::extent_c, extent_bias); argument types follow
    // mlp_bias_act's signature.
    unsafe { lb.launch(launch) }.call("cuLaunchKernel(mlp_bias_act)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan::{At, Buf};
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_what_there_is() {
        for g in MlpGemm::ALL {
            assert_eq!(g.name().parse::<MlpGemm>(), Ok(g));
        }
        assert_eq!(" cublas ".parse::<MlpGemm>(), Ok(MlpGemm::Cublas));
        let e = "cuBLAS".parse::<MlpGemm>().unwrap_err();
        assert!(e.contains("expected tiled or cublas"), "{e}");
        assert_eq!(MlpGemm::default(), MlpGemm::Tiled);
    }

    #[test]
    fn leading_dimensions_cublas_would_refuse_are_an_error() {
        let at = At {
            buf: Buf::X,
            off: 0,
        };
        let g = Gemm {
            m: 4,
            n: 6,
            k: 5,
            alpha: 1.0,
            a: at,
            lda: 5,
            trans_a: false,
            b: at,
            ldb: 6,
            trans_b: false,
            beta: 0.0,
            c: at,
            ldc: 6,
            bias: None,
            relu: false,
        };
        assert!(cublas_config(&g).is_ok());
        for bad in [
            Gemm { lda: 4, ..g },
            Gemm { ldb: 5, ..g },
            Gemm { ldc: 5, ..g },
            Gemm {
                trans_b: true,
                ldb: 4,
                ..g
            },
        ] {
            let e = cublas_config(&bad).unwrap_err().to_string();
            assert!(e.contains("cuBLAS requires"), "{e}");
        }
        // B transposed (n x k in memory) needs ldb >= k: 5.
        assert!(cublas_config(&Gemm {
            trans_b: true,
            ldb: 5,
            ..g
        })
        .is_ok());
    }

    /// The column-major call's operands, as a reference column-major SGEMM reads them, give the
    /// row-major product the plan asks for, for every pair of transposes and padded leading
    /// dimensions.
    #[test]
    fn the_swapped_call_computes_the_row_major_product() {
        let at = At {
            buf: Buf::X,
            off: 0,
        };
        let (m, n, k) = (5usize, 3usize, 4usize);
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
                let (br, bc) = if trans_b { (n, k) } else { (k, n) };
                let (lda, ldb, ldc) = (ac + 2, bc + 1, n + 3);
                let a: Vec<f32> = (0..ar * lda).map(|i| (i % 7) as f32 - 3.0).collect();
                let b: Vec<f32> = (0..br * ldb).map(|i| (i % 5) as f32 * 0.5).collect();
                let g = Gemm {
                    m,
                    n,
                    k,
                    alpha: 1.5,
                    a: at,
                    lda,
                    trans_a,
                    b: at,
                    ldb,
                    trans_b,
                    beta: 0.0,
                    c: at,
                    ldc,
                    bias: None,
                    relu: false,
                };
                let cfg = cublas_config(&g).unwrap();
                // Column-major reference: C(i, j) at c[i + j * ldc], op(X)(i, p) from X's memory.
                let col = |x: &[f32], ld: i32, t: cublasOperation_t, i: usize, p: usize| {
                    let ld = ld as usize;
                    match t {
                        cublasOperation_t::CUBLAS_OP_N => x[i + p * ld],
                        _ => x[p + i * ld],
                    }
                };
                let mut c = vec![0f32; m * ldc];
                for i in 0..cfg.m as usize {
                    for j in 0..cfg.n as usize {
                        let mut s = 0f32;
                        for p in 0..cfg.k as usize {
                            s += col(&b, cfg.lda, cfg.transa, i, p)
                                * col(&a, cfg.ldb, cfg.transb, p, j);
                        }
                        c[i + j * cfg.ldc as usize] = cfg.alpha * s;
                    }
                }
                // The row-major product the plan means.
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0f32;
                        for p in 0..k {
                            let x = if trans_a {
                                a[p * lda + i]
                            } else {
                                a[i * lda + p]
                            };
                            let y = if trans_b {
                                b[j * ldb + p]
                            } else {
                                b[p * ldb + j]
                            };
                            s += x * y;
                        }
                        assert_eq!(c[i * ldc + j], 1.5 * s, "{trans_a} {trans_b} ({i}, {j})");
                    }
                }
            }
        }
    }
}
