//! The read model's way in: loads write a pinned host mirror, and before the model is next used
//! the mirror crosses in one copy, plus what the engine's own push encoding holds back. Where
//! every row of the model was loaded since its last use and every value was an f16 value (an
//! `f16` pull codec's rows), or every one a bf16 value (a `bf16` pull codec's), it crosses in
//! 16 bits, half the bytes, and widens on the device (`codec::Widen`, exact), as the MF
//! engine's 16-bit loads do.

use std::sync::Arc;

use ps_apps::app::device_codec::{Half, HalfLoads};
use ps_apps::mlp::check_load;

use super::{input, CudaMlpResident};
use crate::cuda::buffers::{DevBuf, Pinned};
use crate::cuda::codec;
use crate::cuda::GpuError;

/// The read model in 16 bits (as f16 bits while every load is of f16 values; bf16 bits are the
/// f32 mirror's high halves, taken when it crosses), and which format every load since the
/// model's last use fits.
#[derive(Default)]
pub(super) struct Halves {
    host: Option<Pinned<u16>>,
    dev: DevBuf<u16>,
    widen: Option<codec::Widen>,
    loads: HalfLoads,
}

impl Halves {
    /// A new model: nothing loaded yet.
    pub(super) fn reset(&mut self) {
        self.loads = HalfLoads::default();
    }
}

impl CudaMlpResident {
    pub(super) fn try_load(
        &mut self,
        layer: usize,
        first_row: usize,
        values: &[f32],
    ) -> Result<(), GpuError> {
        let arch = self.arch()?;
        check_load(&arch, layer, first_row, values).map_err(input)?;
        let at = self.offsets[layer] + first_row * arch.layer(layer).width();
        let total = arch.num_params();
        self.read_host.host_mut(total)?[at..at + values.len()].copy_from_slice(values);
        if let Some(bits) = self.halves.loads.note_f16(values) {
            let host = match &mut self.halves.host {
                Some(h) => h,
                slot => slot.insert(Pinned::new(&self.gpu.ctx)?),
            };
            host.host_mut(total)?[at..at + bits.len()].copy_from_slice(&bits);
        }
        let rows = values.len() / arch.layer(layer).width();
        self.coverage.mark(layer, first_row, rows);
        self.dirty = true;
        Ok(())
    }

    /// Copies the read model to the device when loads changed it (in 16 bits where every row
    /// was loaded since its last use, all of f16 values or all of bf16 values), plus what the
    /// engine's own push encoding has not sent yet (a worker sees its unsent updates, as the
    /// worker library's residual shows in its reads).
    pub(super) fn sync_read(&mut self) -> Result<(), GpuError> {
        let kind = self.halves.loads.take();
        let as_halves = kind.filter(|_| self.coverage.complete());
        self.coverage
            .settle(!self.encoders.is_empty())
            .map_err(input)?;
        if self.dirty {
            if let Some(kind) = as_halves {
                self.upload_halves(kind)?;
            } else {
                self.bus.h2d(&self.gpu.compute, || {
                    self.read.upload(&self.gpu.compute, &self.read_host)?;
                    Ok(4 * self.read_host.len() as u64)
                })?;
            }
            self.dirty = false;
            for (b, enc) in &self.encoders {
                let at = self.block_start(b)?;
                let mut dst = self.read.get_mut().slice_mut(at..at + enc.len());
                enc.add_residual_to(&mut dst)?;
            }
        }
        Ok(())
    }

    /// The 16-bit mirror in (2 bytes a value) and widened into the read model: the f16 bits the
    /// loads wrote, or the f32 mirror's high halves for bf16.
    fn upload_halves(&mut self, kind: Half) -> Result<(), GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        if self.halves.widen.is_none() {
            self.halves.widen = Some(codec::Widen::load(&self.gpu)?);
        }
        if kind == Half::Bf16 {
            let full = self.read_host.host()?;
            let host = match &mut self.halves.host {
                Some(h) => h,
                slot => slot.insert(Pinned::new(&self.gpu.ctx)?),
            };
            for (h, &v) in host.host_mut(full.len())?.iter_mut().zip(full) {
                *h = (v.to_bits() >> 16) as u16;
            }
        }
        let host = self
            .halves
            .host
            .as_ref()
            .ok_or_else(|| input("no 16-bit mirror".into()))?;
        let n = host.len();
        let dev = &mut self.halves.dev;
        self.bus.h2d(&stream, || {
            dev.upload(&stream, host)?;
            Ok(2 * n as u64)
        })?;
        self.read.ensure(&stream, n)?;
        let w = self
            .halves
            .widen
            .as_ref()
            .ok_or_else(|| input("no widening kernel".into()))?;
        let (halves, read, gpu) = (&self.halves.dev, &mut self.read, &self.gpu);
        // The widening counts as device compute.
        self.bus.kernels(&stream, || {
            w.launch(gpu, kind, halves.get(), read.get_mut(), n)
        })
    }
}
