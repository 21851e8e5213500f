//! The read model's way in: loads write a pinned host mirror, and before the model is next used
//! the mirror crosses in one copy, plus what the engine's own push encoding holds back. Where
//! every row of the model was loaded since its last use and every value was an f16 value (an
//! `f16` pull codec's rows), or every one a bf16 value (a `bf16` pull codec's), it crosses in
//! 16 bits, half the bytes; where the mirror is codes in runs of scales (a `q8`, `q4`, `q2` or
//! `sign` pull codec's rows, `ps_apps::app::device_codec::narrower_codes`) that take fewer
//! bytes still, as its codes. Either widens on the device exactly (`widen::NarrowIn`), as the
//! MF engine's loads do. The seeded initial model does not cross at all: `mlp_init_glorot`
//! makes it on the device, and the host fills the mirror with the same values.

use cudarc::driver::PushKernelArg;
use ps_apps::app::device_codec::{narrower_codes, Half, HalfLoads};
use ps_apps::mlp::{check_load, layer_init};
use ps_proto::Init;

use super::{input, to_u32, CudaMlpResident};
use crate::cuda::widen::NarrowIn;
use crate::cuda::{Call, GpuError};

/// The read model in 16 bits while every load is of f16 values (bf16 bits are the f32
/// mirror's high halves, taken when it crosses), which format every load since the model's
/// last use fits, and the staging of what crosses narrow.
#[derive(Default)]
pub(super) struct Halves {
    f16: Vec<u16>,
    loads: HalfLoads,
    narrow: NarrowIn,
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
            self.halves.f16.resize(total, 0);
            self.halves.f16[at..at + bits.len()].copy_from_slice(&bits);
        }
        let rows = values.len() / arch.layer(layer).width();
        self.coverage.mark(layer, first_row, rows);
        self.dirty = true;
        Ok(())
    }

    /// The seeded initial model (`Arch::init_params(seed)`) made on the device, layer by layer,
    /// and written into the mirror by the host; what loads wrote since the model's last use is
    /// overwritten. While the encoders keep a residual it is loaded (and crosses) instead, as
    /// the CPU oracle does.
    pub(super) fn try_load_initial(&mut self, seed: u64) -> Result<(), GpuError> {
        let arch = self.arch()?;
        let model = arch.init_params(seed);
        if !self.encoders.is_empty() {
            for (l, p) in model.iter().enumerate() {
                self.try_load(l, 0, p)?;
            }
            return Ok(());
        }
        self.timer.start(&self.gpu.compute)?;
        for (l, s) in arch.layers().iter().enumerate() {
            let n = s.len();
            if n == 0 {
                continue;
            }
            let Init::Glorot {
                bound,
                fan_in,
                seed: cells,
            } = layer_init(s.fan_in, s.fan_out, seed)
            else {
                return Err(input("the initial model is not Glorot's".into()));
            };
            let (table, width, n64) = (to_u32(l, "layer")?, to_u32(s.width(), "width")?, n as u64);
            let at = self.offsets[l];
            let cfg = self.cfg(n);
            let mut out = self.read.get_mut().slice_mut(at..at + n);
            let mut b = self.gpu.compute.launch_builder(&self.init_fn);
            b.arg(&cells)
                .arg(&table)
                .arg(&fan_in)
                .arg(&width)
                .arg(&bound)
                .arg(&n64)
                .arg(&mut out);
            // SAFETY: the view holds the layer's n = rows x width values; width >= 1.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_init_glorot)")?;
        }
        self.time_kernels()?;
        // The device holds the model: the mirror takes it, and the loads before it are moot.
        let mirror = self.read_host.host_mut(arch.num_params())?;
        for (p, &at) in model.iter().zip(&self.offsets) {
            mirror[at..at + p.len()].copy_from_slice(p);
        }
        self.coverage.settle(false).map_err(input)?;
        self.halves.reset();
        self.dirty = false;
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
            // As codes where they are narrowest, else in 16 bits, else as f32.
            let as_codes = self.upload_levels(as_halves.is_some())?;
            match as_halves {
                _ if as_codes => {}
                Some(kind) => self.upload_halves(kind)?,
                None => self.bus.h2d(&self.gpu.compute, || {
                    self.read.upload(&self.gpu.compute, &self.read_host)?;
                    Ok(4 * self.read_host.len() as u64)
                })?,
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
        let bf16: Vec<u16>;
        let bits = match kind {
            Half::F16 => &self.halves.f16,
            Half::Bf16 => {
                let full = self.read_host.host()?;
                bf16 = full.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
                &bf16
            }
        };
        if bits.len() != self.read_host.len() {
            return Err(input(format!(
                "a 16-bit mirror of {} values for a model of {}",
                bits.len(),
                self.read_host.len()
            )));
        }
        let (gpu, bus) = (&self.gpu, &mut self.bus);
        self.halves
            .narrow
            .halves_in(gpu, bus, kind, bits, &mut self.read)
    }

    /// The mirror's codes in and widened into the read model, where they take fewer bytes than
    /// 16-bit values (`halves`: every load was of them) or f32 would; whether they did.
    fn upload_levels(&mut self, halves: bool) -> Result<bool, GpuError> {
        let full = self.read_host.host()?;
        let Some(image) = narrower_codes(full, halves) else {
            return Ok(false);
        };
        let (gpu, bus) = (&self.gpu, &mut self.bus);
        self.halves
            .narrow
            .levels_in(gpu, bus, &image, &mut self.read)?;
        Ok(true)
    }
}
