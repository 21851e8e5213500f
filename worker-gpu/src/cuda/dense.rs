//! Push chains that select nothing and send every value in a lossy format (`f16`, `bf16`,
//! `q8`, `q4`, `q2`, `sign`), run with error feedback on the device (`kernels/codec_dense.cu`):
//! each push makes the whole payload there, the bytes `ps_proto::codec::ErrorFeedback::compress`
//! makes of the same values with the same chain (`ps_apps::app::device_codec::ResidualKeeper`
//! is the oracle), and only the payload comes back: 2 bytes a value for f16 and bf16; for a
//! block format one scale a group of 128 and `bits` a value, read as whole words (at most 3
//! bytes past the payload, `ps_apps::app::device_codec::dense_device_bytes`).
//!
//! [`DenseCodec`] runs the kernels on a residual kept anywhere on the device (an MF engine keeps
//! one per item row); [`DeviceDense`] keeps the residual of one block itself.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use ps_apps::app::device_codec::dense_device_bytes;
use ps_proto::codec::ValueFormat;

use super::buffers::{DevBuf, Pinned};
use super::{Call, Gpu, GpuError};

/// Threads per block (whole warps; the row and group kernels take a warp each).
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the grid-stride launches.
const BLOCKS_PER_SM: u32 = 8;
/// Values per scale of the block formats (`CODEC_GROUP`, `ps_proto::codec::QUANT_GROUP`).
const GROUP: usize = ps_proto::codec::QUANT_GROUP;

/// How a format is made on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// f16 (false) or bf16 (true): one 16-bit word a value.
    Halves { bf16: bool },
    /// Block format: `bits` a value (1 for sign).
    Groups { bits: u32, sign: bool },
}

fn shape(format: ValueFormat) -> Result<Shape, GpuError> {
    let groups = |bits, sign| Shape::Groups { bits, sign };
    Ok(match format {
        ValueFormat::F16 => Shape::Halves { bf16: false },
        ValueFormat::Bf16 => Shape::Halves { bf16: true },
        ValueFormat::Q8 => groups(8, false),
        ValueFormat::Q4 => groups(4, false),
        ValueFormat::Q2 => groups(2, false),
        ValueFormat::Sign => groups(1, true),
        ValueFormat::F32 | ValueFormat::I8 | ValueFormat::I16 => {
            return Err(GpuError::Input(format!(
                "{} is not a lossy value format a device sends whole",
                format.name()
            )))
        }
    })
}

fn short(what: &str, len: usize, need: usize) -> GpuError {
    GpuError::Input(format!("{what}: a device view of {len} values for {need}"))
}

/// The entry points of `kernels/codec_dense.cu`, and the buffers their payloads come back
/// through (see the module docs).
pub struct DenseCodec {
    gpu: Arc<Gpu>,
    accumulate: CudaFunction,
    add_to: CudaFunction,
    halves: CudaFunction,
    groups: CudaFunction,
    subtract: CudaFunction,
    d_halves: DevBuf<u16>,
    d_words: DevBuf<u32>,
    halves_host: Pinned<u16>,
    words_host: Pinned<u32>,
}

impl DenseCodec {
    /// Loads the kernels on `gpu` (compiled by NVRTC on first use in the process).
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Ok(DenseCodec {
            accumulate: gpu.function("codec_dense", "codec_dense_accumulate")?,
            add_to: gpu.function("codec_dense", "codec_dense_add_to")?,
            halves: gpu.function("codec_dense", "codec_dense_halves")?,
            groups: gpu.function("codec_dense", "codec_dense_groups")?,
            subtract: gpu.function("codec_dense", "codec_dense_subtract")?,
            d_halves: DevBuf::default(),
            d_words: DevBuf::default(),
            halves_host: Pinned::new(&gpu.ctx)?,
            words_host: Pinned::new(&gpu.ctx)?,
            gpu,
        })
    }

    /// A launch of a warp per item over `items`, or a thread per item.
    fn cfg(&self, items: usize, warp_each: bool) -> LaunchConfig {
        let work = if warp_each { items * 32 } else { items } as u64;
        LaunchConfig {
            grid_dim: (self.gpu.grid_for(work, BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `residual += delta` over the first `n` values, then the payload of the residual in
    /// `format`, and the residual less what the receiver decodes: `ErrorFeedback::compress`
    /// with that format's chain. Returns the payload and the bytes copied back for it.
    pub fn encode(
        &mut self,
        format: ValueFormat,
        residual: &mut CudaViewMut<'_, f32>,
        delta: &CudaView<'_, f32>,
        n: usize,
    ) -> Result<(Vec<u8>, u64), GpuError> {
        shape(format)?;
        if residual.len() < n || delta.len() < n {
            return Err(short("dense encoding", residual.len().min(delta.len()), n));
        }
        if n == 0 {
            return Ok((Vec::new(), 0));
        }
        self.add(residual, delta, n)?;
        self.encode_values(format, residual, n)
    }

    /// Enqueues `dst = src + dst` over the first `n` values (`codec_dense_accumulate`, one
    /// rounding each, as the library adds a delta to its residual).
    pub fn add(
        &self,
        dst: &mut CudaViewMut<'_, f32>,
        src: &CudaView<'_, f32>,
        n: usize,
    ) -> Result<(), GpuError> {
        if dst.len() < n || src.len() < n {
            return Err(short("codec_dense_accumulate", dst.len().min(src.len()), n));
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let cfg = self.cfg(n, false);
        let mut b = self.gpu.compute.launch_builder(&self.accumulate);
        b.arg(&mut *dst).arg(src).arg(&n64);
        // SAFETY: both hold n values (checked above); codec_dense_accumulate(float*,
        // const float*, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_accumulate)")?;
        Ok(())
    }

    /// The payload of the first `n` of `values` in `format`, leaving in them what error
    /// feedback keeps (each less what the receiver decodes): [`DenseCodec::encode`] without the
    /// addition, for values gathered elsewhere (a top-k's selection, in index order). Returns
    /// the payload and the bytes copied back for it.
    pub fn encode_values(
        &mut self,
        format: ValueFormat,
        residual: &mut CudaViewMut<'_, f32>,
        n: usize,
    ) -> Result<(Vec<u8>, u64), GpuError> {
        let shape = shape(format)?;
        if residual.len() < n {
            return Err(short("dense encoding", residual.len(), n));
        }
        let bytes = format.encoded_len(n);
        let moved = dense_device_bytes(format, n).unwrap_or(0);
        if n == 0 {
            return Ok((Vec::new(), 0));
        }
        let stream = Arc::clone(&self.gpu.compute);
        let n64 = n as u64;
        let mut out = Vec::with_capacity(moved as usize);
        match shape {
            Shape::Halves { bf16 } => {
                self.d_halves.ensure(&stream, n)?;
                let flag = i32::from(bf16);
                let cfg = self.cfg(n, false);
                let mut b = stream.launch_builder(&self.halves);
                b.arg(&mut *residual)
                    .arg(self.d_halves.get_mut())
                    .arg(&flag)
                    .arg(&n64);
                // SAFETY: residual and out hold n values; codec_dense_halves(float*,
                // unsigned short*, int, unsigned long long).
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_halves)")?;
                self.halves_host.download(&stream, self.d_halves.get(), n)?;
                for h in self.halves_host.host()? {
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
            Shape::Groups { bits, sign } => {
                let groups = n.div_ceil(GROUP);
                let words = (moved / 4) as usize;
                self.d_words.ensure(&stream, words)?;
                let flag = i32::from(sign);
                let cfg = self.cfg(groups, true);
                let mut b = stream.launch_builder(&self.groups);
                b.arg(&mut *residual)
                    .arg(self.d_words.get_mut())
                    .arg(&bits)
                    .arg(&flag)
                    .arg(&n64);
                // SAFETY: residual holds n values and words groups + ceil(n * bits / 32)
                // words, all the kernel writes; codec_dense_groups(float*, unsigned int*,
                // unsigned int, int, unsigned long long).
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_groups)")?;
                self.words_host
                    .download(&stream, self.d_words.get(), words)?;
                for x in self.words_host.host()? {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out.truncate(bytes);
            }
        }
        if out.len() != bytes {
            return Err(GpuError::Input(format!(
                "a dense {} payload of {} bytes for {n} values (expected {bytes})",
                format.name(),
                out.len()
            )));
        }
        Ok((out, moved))
    }

    /// Enqueues `dst += residual` in the rows (`rows` of `width`) whose residual holds
    /// anything: what a worker reads includes what it has not sent yet.
    pub fn add_held(
        &self,
        dst: &mut CudaViewMut<'_, f32>,
        residual: &CudaView<'_, f32>,
        rows: usize,
        width: usize,
    ) -> Result<(), GpuError> {
        let n = rows * width;
        if dst.len() < n || residual.len() < n {
            return Err(short(
                "codec_dense_add_to",
                dst.len().min(residual.len()),
                n,
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let (w, r) = (width as u32, rows as u64);
        let cfg = self.cfg(rows, true);
        let mut b = self.gpu.compute.launch_builder(&self.add_to);
        b.arg(dst).arg(residual).arg(&w).arg(&r);
        // SAFETY: dst and the residual hold rows * width values (checked above);
        // codec_dense_add_to(float*, const float*, unsigned int, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_add_to)")?;
        Ok(())
    }

    /// Enqueues `a -= b` over the first `n` values.
    pub fn subtract(
        &self,
        a: &mut CudaViewMut<'_, f32>,
        b: &CudaView<'_, f32>,
        n: usize,
    ) -> Result<(), GpuError> {
        if a.len() < n || b.len() < n {
            return Err(short("codec_dense_subtract", a.len().min(b.len()), n));
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let cfg = self.cfg(n, false);
        let mut l = self.gpu.compute.launch_builder(&self.subtract);
        l.arg(a).arg(b).arg(&n64);
        // SAFETY: both hold n values; codec_dense_subtract(float*, const float*,
        // unsigned long long).
        unsafe { l.launch(cfg) }.call("cuLaunchKernel(codec_dense_subtract)")?;
        Ok(())
    }
}

/// A dense lossy chain with error feedback over a block of `rows x width` values whose
/// residual it keeps (see the module docs).
pub struct DeviceDense {
    codec: DenseCodec,
    format: ValueFormat,
    rows: usize,
    width: usize,
    residual: DevBuf<f32>,
    residual_host: Pinned<f32>,
    /// A host delta's staging ([`DeviceDense::push`]).
    delta_host: Pinned<f32>,
    d_delta: DevBuf<f32>,
    /// Bytes copied back (the payloads).
    moved: u64,
}

impl DeviceDense {
    /// A compressor for blocks of `rows` rows of `width` values in `format`, its residual zero;
    /// an error for a format that is not a lossy dense one.
    pub fn new(
        gpu: Arc<Gpu>,
        rows: usize,
        width: usize,
        format: ValueFormat,
    ) -> Result<Self, GpuError> {
        shape(format)?;
        let n = rows
            .checked_mul(width)
            .filter(|_| width <= u32::MAX as usize)
            .ok_or_else(|| {
                GpuError::Input(format!("a dense block of {rows} rows of {width} values"))
            })?;
        let ctx = Arc::clone(&gpu.ctx);
        let mut d = DeviceDense {
            codec: DenseCodec::new(Arc::clone(&gpu))?,
            format,
            rows,
            width,
            residual: DevBuf::default(),
            residual_host: Pinned::new(&ctx)?,
            delta_host: Pinned::new(&ctx)?,
            d_delta: DevBuf::default(),
            moved: 0,
        };
        d.residual.zero(&gpu.compute, n.max(1))?;
        Ok(d)
    }

    /// Values per block.
    pub fn len(&self) -> usize {
        self.rows * self.width
    }

    /// True for a block of no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value format.
    pub fn format(&self) -> ValueFormat {
        self.format
    }

    /// Bytes copied back since the compressor was made (nothing goes to the device).
    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// The residual, copied back (what has not been sent yet).
    pub fn residual(&mut self) -> Result<Vec<f32>, GpuError> {
        let n = self.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let stream = Arc::clone(&self.codec.gpu.compute);
        self.residual_host
            .download(&stream, self.residual.get(), n)?;
        Ok(self.residual_host.host()?.to_vec())
    }

    /// [`DeviceDense::push_view`] of a delta on the host (copied to the device first; for tests
    /// and benchmarks, a worker's delta is already there).
    pub fn push(&mut self, delta: &[f32]) -> Result<Vec<u8>, GpuError> {
        if delta.len() != self.len() {
            return Err(GpuError::Input(format!(
                "a delta of {} values for a dense block of {}",
                delta.len(),
                self.len()
            )));
        }
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let stream = Arc::clone(&self.codec.gpu.compute);
        self.delta_host.fill(delta)?;
        self.d_delta.upload(&stream, &self.delta_host)?;
        let d = std::mem::take(&mut self.d_delta);
        let out = self.push_view(&d.view(delta.len()));
        self.d_delta = d;
        out
    }

    /// `residual += delta` (the first `len()` values of `delta`), then the payload of the
    /// residual, and the residual less what the receiver decodes: `ErrorFeedback::compress`
    /// with the chain of this format. Returns the payload.
    pub fn push_view(&mut self, delta: &CudaView<'_, f32>) -> Result<Vec<u8>, GpuError> {
        let n = self.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut r = self.residual.get_mut().slice_mut(0..n);
        let (payload, moved) = self.codec.encode(self.format, &mut r, delta, n)?;
        self.moved += moved;
        Ok(payload)
    }

    /// Enqueues `dst += residual` in the rows whose residual holds anything (the first `len()`
    /// values of `dst`): what a worker reads includes what it has not sent yet.
    pub fn add_residual_to(&self, dst: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
        if self.is_empty() {
            return Ok(());
        }
        let residual = self.residual.view(self.len());
        self.codec.add_held(dst, &residual, self.rows, self.width)
    }
}
