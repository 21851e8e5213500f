//! [`DeviceDense`]: a push chain that selects nothing and sends every value in a lossy format
//! (`f16`, `bf16`, `q8`, `q4`, `q2`, `sign`), run with error feedback on the device
//! (`kernels/codec_dense.cu`), its residual kept there across calls. Each push makes the whole
//! payload on the device, the bytes `ps_proto::codec::ErrorFeedback::compress` makes of the same
//! values with the same chain (`ps_apps::app::device_codec::ResidualKeeper` is the oracle), and
//! only the payload comes back: 2 bytes a value for f16 and bf16; for a block format one scale a
//! group of 128 and `bits` a value, read as whole words (at most 3 bytes past the payload).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use ps_proto::codec::ValueFormat;

use super::buffers::{DevBuf, Pinned};
use super::{Call, Gpu, GpuError};

/// Threads per block (whole warps; the row and group kernels take a warp each).
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the grid-stride launches.
const BLOCKS_PER_SM: u32 = 8;
/// Values per scale of the block formats (`CODEC_GROUP`, `ps_proto::codec::quant::GROUP`).
const GROUP: usize = 128;

/// How a format is made on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// f16 (false) or bf16 (true): one 16-bit word a value.
    Halves { bf16: bool },
    /// Block format: `bits` a value (1 for sign).
    Groups { bits: u32, sign: bool },
}

fn shape(format: ValueFormat) -> Option<Shape> {
    Some(match format {
        ValueFormat::F16 => Shape::Halves { bf16: false },
        ValueFormat::Bf16 => Shape::Halves { bf16: true },
        ValueFormat::Q8 => Shape::Groups {
            bits: 8,
            sign: false,
        },
        ValueFormat::Q4 => Shape::Groups {
            bits: 4,
            sign: false,
        },
        ValueFormat::Q2 => Shape::Groups {
            bits: 2,
            sign: false,
        },
        ValueFormat::Sign => Shape::Groups {
            bits: 1,
            sign: true,
        },
        ValueFormat::F32 | ValueFormat::I8 | ValueFormat::I16 => return None,
    })
}

/// The entry points of `kernels/codec_dense.cu`.
#[derive(Clone)]
struct Kernels {
    accumulate: CudaFunction,
    add_to: CudaFunction,
    halves: CudaFunction,
    groups: CudaFunction,
}

impl Kernels {
    fn load(gpu: &Gpu) -> Result<Self, GpuError> {
        Ok(Kernels {
            accumulate: gpu.function("codec_dense", "codec_dense_accumulate")?,
            add_to: gpu.function("codec_dense", "codec_dense_add_to")?,
            halves: gpu.function("codec_dense", "codec_dense_halves")?,
            groups: gpu.function("codec_dense", "codec_dense_groups")?,
        })
    }
}

/// A dense lossy chain with error feedback over a block of `rows x width` values on one device
/// (see the module docs).
pub struct DeviceDense {
    gpu: Arc<Gpu>,
    k: Kernels,
    format: ValueFormat,
    shape: Shape,
    rows: usize,
    width: usize,
    residual: DevBuf<f32>,
    d_halves: DevBuf<u16>,
    d_words: DevBuf<u32>,
    halves_host: Pinned<u16>,
    words_host: Pinned<u32>,
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
        let shape = shape(format).ok_or_else(|| {
            GpuError::Input(format!(
                "{} is not a lossy value format a device sends whole",
                format.name()
            ))
        })?;
        let n = rows
            .checked_mul(width)
            .filter(|_| width <= u32::MAX as usize)
            .ok_or_else(|| {
                GpuError::Input(format!("a dense block of {rows} rows of {width} values"))
            })?;
        let ctx = &gpu.ctx;
        let mut d = DeviceDense {
            k: Kernels::load(&gpu)?,
            format,
            shape,
            rows,
            width,
            residual: DevBuf::default(),
            d_halves: DevBuf::default(),
            d_words: DevBuf::default(),
            halves_host: Pinned::new(ctx)?,
            words_host: Pinned::new(ctx)?,
            residual_host: Pinned::new(ctx)?,
            delta_host: Pinned::new(ctx)?,
            d_delta: DevBuf::default(),
            moved: 0,
            gpu,
        };
        d.residual.zero(&d.gpu.compute, n.max(1))?;
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
        self.residual_host
            .download(&self.gpu.compute, self.residual.get(), n)?;
        Ok(self.residual_host.host()?.to_vec())
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

    fn check_view(&self, len: usize, what: &str) -> Result<(), GpuError> {
        if len < self.len() {
            return Err(GpuError::Input(format!(
                "{what}: a device view of {len} values for a dense block of {}",
                self.len()
            )));
        }
        Ok(())
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
        self.delta_host.fill(delta)?;
        self.d_delta.upload(&self.gpu.compute, &self.delta_host)?;
        let d = std::mem::take(&mut self.d_delta);
        let out = self.push_view(&d.view(delta.len()));
        self.d_delta = d;
        out
    }

    /// `residual += delta` (the first `len()` values of `delta`), then the payload of the
    /// residual, and the residual less what the receiver decodes: `ErrorFeedback::compress`
    /// with the chain of this format. Returns the payload.
    pub fn push_view(&mut self, delta: &CudaView<'_, f32>) -> Result<Vec<u8>, GpuError> {
        self.check_view(delta.len(), "codec_dense_accumulate delta")?;
        let n = self.len();
        let bytes = self.format.encoded_len(n);
        if n == 0 {
            return Ok(Vec::new());
        }
        let stream = Arc::clone(&self.gpu.compute);
        let n64 = n as u64;
        let cfg = self.cfg(n, false);
        let mut b = stream.launch_builder(&self.k.accumulate);
        b.arg(self.residual.get_mut()).arg(delta).arg(&n64);
        // SAFETY: the residual and delta hold n values (checked above);
        // codec_dense_accumulate(float*, const float*, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_accumulate)")?;
        let payload = match self.shape {
            Shape::Halves { bf16 } => {
                self.d_halves.ensure(&stream, n)?;
                let flag = i32::from(bf16);
                let cfg = self.cfg(n, false);
                let mut b = stream.launch_builder(&self.k.halves);
                b.arg(self.residual.get_mut())
                    .arg(self.d_halves.get_mut())
                    .arg(&flag)
                    .arg(&n64);
                // SAFETY: residual and out hold n values; codec_dense_halves(float*,
                // unsigned short*, int, unsigned long long).
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_halves)")?;
                self.halves_host.download(&stream, self.d_halves.get(), n)?;
                let halves = self.halves_host.host()?;
                let mut out = Vec::with_capacity(bytes);
                halves
                    .iter()
                    .for_each(|h| out.extend_from_slice(&h.to_le_bytes()));
                self.moved += 2 * n as u64;
                out
            }
            Shape::Groups { bits, sign } => {
                let groups = n.div_ceil(GROUP);
                let words = groups + (n * bits as usize).div_ceil(32);
                self.d_words.ensure(&stream, words)?;
                let flag = i32::from(sign);
                let cfg = self.cfg(groups, true);
                let mut b = stream.launch_builder(&self.k.groups);
                b.arg(self.residual.get_mut())
                    .arg(self.d_words.get_mut())
                    .arg(&bits)
                    .arg(&flag)
                    .arg(&n64);
                // SAFETY: residual holds n values and words groups + ceil(n * bits / 32) words,
                // all the kernel writes; codec_dense_groups(float*, unsigned int*, unsigned int,
                // int, unsigned long long).
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_groups)")?;
                self.words_host
                    .download(&stream, self.d_words.get(), words)?;
                let w = self.words_host.host()?;
                let mut out = Vec::with_capacity(4 * words);
                w.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                out.truncate(bytes);
                self.moved += 4 * words as u64;
                out
            }
        };
        if payload.len() != bytes {
            return Err(GpuError::Input(format!(
                "a dense {} payload of {} bytes for {n} values (expected {bytes})",
                self.format.name(),
                payload.len()
            )));
        }
        Ok(payload)
    }

    /// Enqueues `dst += residual` in the rows whose residual holds anything (the first `len()`
    /// values of `dst`): what a worker reads includes what it has not sent yet.
    pub fn add_residual_to(&self, dst: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
        self.check_view(dst.len(), "codec_dense_add_to target")?;
        if self.is_empty() {
            return Ok(());
        }
        let (width, rows) = (self.width as u32, self.rows as u64);
        let cfg = self.cfg(self.rows, true);
        let residual = self.residual.view(self.len());
        let mut b = self.gpu.compute.launch_builder(&self.k.add_to);
        b.arg(dst).arg(&residual).arg(&width).arg(&rows);
        // SAFETY: dst and the residual hold rows * width values (checked above);
        // codec_dense_add_to(float*, const float*, unsigned int, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_dense_add_to)")?;
        Ok(())
    }
}
