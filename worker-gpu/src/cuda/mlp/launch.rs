//! The CUDA MLP engine's device buffers and its launches: the plan's named buffers mapped onto
//! device memory ([`F32Bufs`]), one `mlp_sgemm` per [`Gemm`], one `mlp_softmax_xent` per
//! [`Softmax`], and [`CudaMlp::launch`], which maps each operation of a plan onto its kernel,
//! every operand a view checked against its buffer.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg,
};

use super::plan::{At, Buf, Gemm, Op, Softmax};
use super::CudaMlp;
use super::{BLOCK, BLOCKS_PER_SM, TILE};
use crate::cuda::buffers::DevBuf;
use crate::cuda::{Call, Gpu, GpuError};

pub(super) fn int(v: usize, what: &str) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::Input(format!("mlp: {what} = {v} exceeds i32")))
}

pub(super) fn internal(msg: String) -> GpuError {
    GpuError::Input(format!("mlp engine (internal): {msg}"))
}

/// The f32 device buffers.
#[derive(Default)]
pub(super) struct F32Bufs {
    /// Two input buffers, used by alternate chunks; `cur` is the one the plan's `X` means.
    pub(super) x: [DevBuf<f32>; 2],
    pub(super) cur: usize,
    pub(super) params: Vec<DevBuf<f32>>,
    pub(super) grads: Vec<DevBuf<f32>>,
    pub(super) acts: Vec<DevBuf<f32>>,
    pub(super) dz: Vec<DevBuf<f32>>,
    pub(super) ones: DevBuf<f32>,
}

impl F32Bufs {
    pub(super) fn slot(&self, b: Buf) -> &DevBuf<f32> {
        match b {
            Buf::X => &self.x[self.cur],
            Buf::Param(l) => &self.params[l],
            Buf::Grad(l) => &self.grads[l],
            Buf::Act(l) => &self.acts[l],
            Buf::Dz(l) => &self.dz[l],
            Buf::Ones => &self.ones,
        }
    }

    pub(super) fn slot_mut(&mut self, b: Buf) -> &mut DevBuf<f32> {
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
    pub(super) fn view(&self, p: At, len: usize) -> Result<CudaView<'_, f32>, GpuError> {
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
    pub(super) fn with_out<R>(
        &mut self,
        out: Buf,
        f: impl FnOnce(&F32Bufs, &mut DevBuf<f32>) -> R,
    ) -> R {
        let mut o = std::mem::take(self.slot_mut(out));
        let r = f(self, &mut o);
        *self.slot_mut(out) = o;
        r
    }
}

pub(super) fn view_mut(
    buf: &mut DevBuf<f32>,
    p: At,
    len: usize,
) -> Result<CudaViewMut<'_, f32>, GpuError> {
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

/// The label / prediction / statistics operands of a softmax launch.
pub(super) struct SoftmaxArgs<'a, 'b> {
    pub(super) labels: Option<&'a CudaView<'b, u8>>,
    pub(super) pred: Option<&'a mut CudaViewMut<'b, u8>>,
    pub(super) stats: Option<(&'a mut CudaSlice<f64>, &'a mut CudaSlice<u64>)>,
}

/// A product's bias operand, `bias[j * stride]` for every column `j`, and its stride as the
/// kernels take it (`None` where the product has no bias).
pub(super) fn bias_view<'a>(
    f: &'a F32Bufs,
    g: &Gemm,
) -> Result<Option<(CudaView<'a, f32>, i32)>, GpuError> {
    g.bias
        .map(|(p, stride)| {
            Ok((
                f.view(p, g.extent_bias(stride))?,
                int(stride, "bias stride")?,
            ))
        })
        .transpose()
}

pub(super) fn launch_gemm(
    stream: &Arc<CudaStream>,
    func: &CudaFunction,
    f: &F32Bufs,
    out: &mut DevBuf<f32>,
    g: &Gemm,
) -> Result<(), GpuError> {
    let a = f.view(g.a, g.extent_a())?;
    let b = f.view(g.b, g.extent_b())?;
    let bias = bias_view(f, g)?;
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

pub(super) fn launch_softmax(
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

impl CudaMlp {
    /// Launches one operation of the chunk whose first sample is `start`.
    pub(super) fn launch(&mut self, op: &Op, start: usize) -> Result<(), GpuError> {
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
                let (blas, gpu) = (self.blas.as_ref(), &self.gpu);
                self.f.with_out(g.c.buf, |f, out| match blas {
                    Some(blas) => {
                        super::gemm::launch_gemm_cublas(blas, stream, &k.bias_act, gpu, f, out, &g)
                    }
                    None => launch_gemm(stream, &k.sgemm, f, out, &g),
                })
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
