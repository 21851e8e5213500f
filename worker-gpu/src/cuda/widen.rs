//! Loaded rows that crossed in fewer bits than f32, widened on the device, exactly: 16-bit
//! values (`codec_f16_to_f32`, `codec_bf16_to_f32`: an `f16` or `bf16` pull codec's rows) and
//! codes with runs of scales (`codec_levels_to_f32`: a `q8`, `q4`, `q2` or `sign` pull codec's),
//! as `ps_apps::app::device_codec::PulledRows` chooses them. [`NarrowIn`] is the staging an
//! engine keeps for them across clocks; the widening counts as device compute.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaViewMut, PushKernelArg};
use ps_apps::app::device_codec::{Half, LevelImage};

use super::buffers::{DevBuf, Pinned};
use super::bus::Bus;
use super::codec::{elementwise, too_short};
use super::{Call, Gpu, GpuError};

/// Enqueues the widening kernel `f` (`name`: `codec_f16_to_f32` or `codec_bf16_to_f32`) on
/// the compute stream over the first `n` elements: `out[i]` = the f32 value of the 16-bit
/// `halves[i]` (exact).
pub(super) fn launch_widen(
    gpu: &Gpu,
    (f, name, call): (&CudaFunction, &str, &'static str),
    halves: &CudaSlice<u16>,
    out: &mut CudaSlice<f32>,
    n: usize,
) -> Result<(), GpuError> {
    if halves.len() < n || out.len() < n {
        return Err(too_short(name, halves.len().min(out.len()), n));
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    let mut b = gpu.compute.launch_builder(f);
    b.arg(halves).arg(out).arg(&n64);
    // SAFETY: both buffers hold at least n elements (checked above); codec_f16_to_f32 and
    // codec_bf16_to_f32 are (const unsigned short*, float*, unsigned long long).
    unsafe { b.launch(elementwise(gpu, n)) }.call(call)?;
    Ok(())
}

/// The kernels that widen loaded rows into f32, exactly.
pub(crate) struct Widen {
    f16: CudaFunction,
    bf16: CudaFunction,
    levels: CudaFunction,
}

impl Widen {
    pub(crate) fn load(gpu: &Gpu) -> Result<Widen, GpuError> {
        Ok(Widen {
            f16: gpu.function("codecs", "codec_f16_to_f32")?,
            bf16: gpu.function("codecs", "codec_bf16_to_f32")?,
            levels: gpu.function("codecs", "codec_levels_to_f32")?,
        })
    }

    /// Enqueues `out[i]` = the f32 value of `halves[i]` in `kind`, over the first `n`.
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        kind: Half,
        halves: &CudaSlice<u16>,
        out: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<(), GpuError> {
        let f = match kind {
            Half::F16 => (
                &self.f16,
                "codec_f16_to_f32",
                "cuLaunchKernel(codec_f16_to_f32)",
            ),
            Half::Bf16 => (
                &self.bf16,
                "codec_bf16_to_f32",
                "cuLaunchKernel(codec_bf16_to_f32)",
            ),
        };
        launch_widen(gpu, f, halves, out, n)
    }

    /// Enqueues `out[i]` = value `i` of `layout`'s image, which `packed` holds as
    /// [`LevelImage::packed`] (`codec_levels_to_f32`).
    fn launch_levels(
        &self,
        gpu: &Gpu,
        layout: &LevelImage,
        packed: &CudaSlice<u8>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), GpuError> {
        let n = layout.len();
        if packed.len() < layout.bytes() {
            return Err(too_short(
                "codec_levels_to_f32 image",
                packed.len(),
                layout.bytes(),
            ));
        }
        if out.len() < n {
            return Err(too_short("codec_levels_to_f32", out.len(), n));
        }
        // `level_image` makes only such images; the kernel relies on them.
        let (segments, bits) = (layout.segments(), layout.bits());
        if n == 0 || segments == 0 || n > u32::MAX as usize || ![1, 2, 4, 8].contains(&bits) {
            return Err(GpuError::Input(format!(
                "an image of {n} values in {segments} segments, {bits} bits a code"
            )));
        }
        let count = |c: usize, what: &str| {
            u32::try_from(c).map_err(|_| GpuError::Input(format!("{c} {what}")))
        };
        let segments = count(segments, "segments")?;
        let scales = count(layout.scale_count(), "scales")?;
        let n64 = n as u64;
        let mut b = gpu.compute.launch_builder(&self.levels);
        b.arg(packed)
            .arg(&segments)
            .arg(&scales)
            .arg(&bits)
            .arg(&n64)
            .arg(out);
        // SAFETY: `packed` holds the image's segments, scales and the codes of n values
        // (checked above, as `LevelImage::bytes`), `out` n values, n < 2^32;
        // codec_levels_to_f32 is (const unsigned char*, unsigned int, unsigned int, unsigned
        // int, unsigned long long, float*).
        unsafe { b.launch(elementwise(gpu, n)) }.call("cuLaunchKernel(codec_levels_to_f32)")?;
        Ok(())
    }
}

/// An engine's staging for rows that cross narrow: pinned host copies and device buffers of
/// 16-bit values and of code images, kept across clocks, and the kernels (loaded on first use).
#[derive(Default)]
pub(crate) struct NarrowIn {
    halves_host: Option<Pinned<u16>>,
    halves: DevBuf<u16>,
    levels_host: Option<Pinned<u8>>,
    levels: DevBuf<u8>,
    widen: Option<Widen>,
}

/// The kernels in `slot`, loaded there on first use.
fn kernels<'a>(slot: &'a mut Option<Widen>, gpu: &Gpu) -> Result<&'a Widen, GpuError> {
    if slot.is_none() {
        *slot = Some(Widen::load(gpu)?);
    }
    slot.as_ref()
        .ok_or_else(|| GpuError::Input("no widening kernels".into()))
}

impl NarrowIn {
    /// Copies 16-bit values (`bits` in `kind`) to the device and widens them into the first
    /// `bits.len()` values of `out` (grown to hold them), on the compute stream; `bus` counts
    /// the copy and times it and the kernel.
    pub(crate) fn halves_in(
        &mut self,
        gpu: &Arc<Gpu>,
        bus: &mut Bus,
        kind: Half,
        bits: &[u16],
        out: &mut DevBuf<f32>,
    ) -> Result<(), GpuError> {
        let stream = &gpu.compute;
        let host = match &mut self.halves_host {
            Some(h) => h,
            slot => slot.insert(Pinned::new(&gpu.ctx)?),
        };
        host.fill(bits)?;
        let dev = &mut self.halves;
        bus.h2d(stream, || {
            dev.upload(stream, host)?;
            Ok(2 * bits.len() as u64)
        })?;
        out.ensure(stream, bits.len())?;
        let w = kernels(&mut self.widen, gpu)?;
        let halves = &self.halves;
        bus.kernels(stream, || {
            w.launch(gpu, kind, halves.get(), out.get_mut(), bits.len())
        })
    }

    /// Copies `image` to the device as it crosses ([`LevelImage::packed`]) and widens it into
    /// the first `image.len()` values of `out` (grown to hold them), on the compute stream.
    pub(crate) fn levels_in(
        &mut self,
        gpu: &Arc<Gpu>,
        bus: &mut Bus,
        image: &LevelImage,
        out: &mut DevBuf<f32>,
    ) -> Result<(), GpuError> {
        out.ensure(&gpu.compute, image.len())?;
        let mut view = out.get_mut().slice_mut(0..image.len());
        self.levels_into(gpu, bus, image, &mut view)
    }

    /// [`NarrowIn::levels_in`] into a view of exactly `image.len()` values (rows in place).
    pub(crate) fn levels_into(
        &mut self,
        gpu: &Arc<Gpu>,
        bus: &mut Bus,
        image: &LevelImage,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), GpuError> {
        if out.len() != image.len() {
            return Err(GpuError::Input(format!(
                "{} values widened into {}",
                image.len(),
                out.len()
            )));
        }
        let stream = &gpu.compute;
        let host = match &mut self.levels_host {
            Some(h) => h,
            slot => slot.insert(Pinned::new(&gpu.ctx)?),
        };
        image.write_packed(host.host_mut(image.bytes())?);
        let dev = &mut self.levels;
        bus.h2d(stream, || {
            dev.upload(stream, host)?;
            Ok(image.bytes() as u64)
        })?;
        let w = kernels(&mut self.widen, gpu)?;
        let levels = &self.levels;
        bus.kernels(stream, || w.launch_levels(gpu, image, levels.get(), out))
    }
}
