//! The engine's own push encoding (`MlpResident::delta_encoded`): one [`DeviceTopK`] per block
//! of the worker library's push plan, each keeping its block's residual on the device; only the
//! selection comes back and the payloads are assembled on the host.

use std::sync::Arc;

use ps_apps::app::device_codec::{check_tiling, selection_payload, DeltaBlock, SentValues};

use super::{input, CudaMlpResident};
use crate::cuda::codec::{DeviceTopK, SentFormat};
use crate::cuda::GpuError;

impl CudaMlpResident {
    /// Where block `b` starts in the flat model; an error when it is not within its layer.
    pub(super) fn block_start(&self, b: &DeltaBlock) -> Result<usize, GpuError> {
        let arch = self.arch()?;
        let l = b.table as usize;
        if l >= arch.num_layers() || b.first_row + b.rows > arch.layer(l).rows() {
            return Err(input(format!(
                "push block of rows {}..{} of layer {} is not in the model",
                b.first_row,
                b.first_row + b.rows,
                b.table
            )));
        }
        Ok(self.offsets[l] + b.first_row * arch.layer(l).width())
    }

    /// Moves every encoder's residual into the flat delta (this clock's `delta` formed) and
    /// drops the encoders.
    pub(super) fn fold_encoders(&mut self) -> Result<(), GpuError> {
        for (b, enc) in std::mem::take(&mut self.encoders) {
            let at = self.block_start(&b)?;
            let mut dst = self.delta.get_mut().slice_mut(at..at + enc.len());
            enc.add_residual_to(&mut dst)?;
        }
        Ok(())
    }

    /// The delta compressed on the device, block by block (see `MlpResident::delta_encoded`):
    /// only the selection crosses PCIe.
    pub(super) fn try_delta_encoded(
        &mut self,
        scale: f32,
        format: SentValues,
        blocks: &[DeltaBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), GpuError> {
        let arch = self.arch()?;
        let rows: Vec<usize> = arch.layers().iter().map(|s| s.rows()).collect();
        check_tiling(blocks, &rows).map_err(input)?;
        self.form_delta(scale)?;
        let sent = match format {
            SentValues::F32 => SentFormat::F32,
            SentValues::F16 => SentFormat::F16,
        };
        let same = |(b, e): (&DeltaBlock, &(DeltaBlock, DeviceTopK))| {
            (b.table, b.first_row, b.rows) == (e.0.table, e.0.first_row, e.0.rows)
                && e.1.format() == sent
        };
        if self.encoders.len() != blocks.len() || !blocks.iter().zip(&self.encoders).all(same) {
            // A new plan: what the old blocks held joins this clock's delta.
            self.fold_encoders()?;
            for b in blocks {
                let n = b.rows * arch.layer(b.table as usize).width();
                let enc = DeviceTopK::new(Arc::clone(&self.gpu), n, sent)?;
                // Its set-up copies (the sampled positions of its threshold) cross PCIe too.
                let (h2d, d2h) = enc.moved();
                self.bus.traffic.h2d_bytes += h2d;
                self.bus.traffic.d2h_bytes += d2h;
                self.encoders.push((*b, enc));
            }
        }
        let mut encoders = std::mem::take(&mut self.encoders);
        let run = (|| {
            for (e, b) in encoders.iter_mut().zip(blocks) {
                let at = self.block_start(b)?;
                let n = e.1.len();
                let before = e.1.moved();
                let (idx, values) = e.1.push_view(&self.delta.get().slice(at..at + n), b.k)?;
                let after = e.1.moved();
                // The encoder's own copies: counted, not timed (they interleave with its
                // kernels).
                self.bus.traffic.h2d_bytes += after.0 - before.0;
                self.bus.traffic.d2h_bytes += after.1 - before.1;
                out.push(
                    selection_payload(format, n, &idx, &values).map_err(|e| input(e.message))?,
                );
            }
            Ok(())
        })();
        self.encoders = encoders;
        run
    }
}
