//! The read model's way in: loads write a pinned host mirror, and before the model is next used
//! the mirror crosses in one copy, plus what the engine's own push encoding holds back. Where
//! every row of the model was loaded since its last use and every value was an f16 value (an
//! `f16` pull codec's rows), it crosses as f16, half the bytes, and widens on the device
//! (`codec_f16_to_f32`, exact), as the MF engine's f16 loads do.

use std::sync::Arc;

use cudarc::driver::CudaFunction;
use ps_apps::app::device_codec::f16_image;
use ps_apps::mlp::check_load;

use super::{input, CudaMlpResident};
use crate::cuda::buffers::{DevBuf, Pinned};
use crate::cuda::codec;
use crate::cuda::GpuError;

/// The read model as f16 bits, and whether every load since the model's last use was of f16
/// values.
pub(super) struct Halves {
    host: Option<Pinned<u16>>,
    dev: DevBuf<u16>,
    to_f32: Option<CudaFunction>,
    all: bool,
}

impl Default for Halves {
    fn default() -> Self {
        Halves {
            host: None,
            dev: DevBuf::default(),
            to_f32: None,
            all: true,
        }
    }
}

impl Halves {
    /// A new model: nothing loaded yet.
    pub(super) fn reset(&mut self) {
        self.all = true;
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
        if self.halves.all {
            match f16_image(values) {
                Some(bits) => {
                    let host = match &mut self.halves.host {
                        Some(h) => h,
                        slot => slot.insert(Pinned::new(&self.gpu.ctx)?),
                    };
                    host.host_mut(total)?[at..at + bits.len()].copy_from_slice(&bits);
                }
                None => self.halves.all = false,
            }
        }
        let rows = values.len() / arch.layer(layer).width();
        self.coverage.mark(layer, first_row, rows);
        self.dirty = true;
        Ok(())
    }

    /// Copies the read model to the device when loads changed it (as f16 where every row was
    /// loaded since its last use, all of f16 values), plus what the engine's own push encoding
    /// has not sent yet (a worker sees its unsent updates, as the worker library's residual
    /// shows in its reads).
    pub(super) fn sync_read(&mut self) -> Result<(), GpuError> {
        let as_halves = self.halves.all && self.coverage.complete();
        self.halves.all = true;
        self.coverage
            .settle(!self.encoders.is_empty())
            .map_err(input)?;
        if self.dirty {
            if as_halves {
                self.upload_halves()?;
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

    /// The f16 mirror in (2 bytes a value) and widened into the read model.
    fn upload_halves(&mut self) -> Result<(), GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        if self.halves.to_f32.is_none() {
            self.halves.to_f32 = Some(codec::Kernels::load(&self.gpu)?.to_f32);
        }
        let host = self
            .halves
            .host
            .as_ref()
            .ok_or_else(|| input("no f16 mirror".into()))?;
        let n = host.len();
        let dev = &mut self.halves.dev;
        self.bus.h2d(&stream, || {
            dev.upload(&stream, host)?;
            Ok(2 * n as u64)
        })?;
        self.read.ensure(&stream, n)?;
        let f = self
            .halves
            .to_f32
            .as_ref()
            .ok_or_else(|| input("no f16 kernel".into()))?;
        let (halves, read, gpu) = (&self.halves.dev, &mut self.read, &self.gpu);
        // The widening counts as device compute.
        self.bus.kernels(&stream, || {
            codec::launch_to_f32(gpu, f, halves.get(), read.get_mut(), n)
        })
    }
}
