//! The engine's own push encoding (`MlpResident::delta_encoded`): one encoder per block of the
//! worker library's push plan, each keeping its block's residual on the device. A top-k
//! ([`DeviceTopK::push_encoded_view`]) selects, trims and encodes the chosen values on the
//! device and sends back their indices and the values' bytes (the host writes the index part);
//! a dense lossy chain ([`DeviceDense`]) makes the whole payload on the device.

use std::sync::Arc;

use cudarc::driver::CudaViewMut;
use ps_apps::app::device_codec::{check_tiling, DeltaBlock, DeviceChain};

use super::{input, CudaMlpResident};
use crate::cuda::codec::{DeviceTopK, SentFormat};
use crate::cuda::dense::DeviceDense;
use crate::cuda::GpuError;

/// One block's encoder.
pub(super) enum BlockEncoder {
    /// A selection (a top-k or an energy stage) and the chain it runs.
    TopK(Box<DeviceTopK>, DeviceChain),
    Dense(Box<DeviceDense>),
}

impl BlockEncoder {
    fn new(
        gpu: &Arc<crate::cuda::Gpu>,
        chain: DeviceChain,
        rows: usize,
        width: usize,
    ) -> Result<Self, GpuError> {
        Ok(match chain {
            DeviceChain::TopK(_) | DeviceChain::Energy(..) => {
                // `push_encoded_view` encodes in any format: its own f16 rounding (`push`)
                // is not used.
                let t = DeviceTopK::new(Arc::clone(gpu), rows * width, SentFormat::F32)?;
                BlockEncoder::TopK(Box::new(t), chain)
            }
            DeviceChain::Dense(format) => {
                let d = DeviceDense::new(Arc::clone(gpu), rows, width, format)?;
                BlockEncoder::Dense(Box::new(d))
            }
        })
    }

    /// The chain it runs.
    fn chain(&self) -> DeviceChain {
        match self {
            BlockEncoder::TopK(_, c) => *c,
            BlockEncoder::Dense(d) => DeviceChain::Dense(d.format()),
        }
    }

    /// Values of its block.
    pub(super) fn len(&self) -> usize {
        match self {
            BlockEncoder::TopK(t, _) => t.len(),
            BlockEncoder::Dense(d) => d.len(),
        }
    }

    /// Bytes it copied host to device and back since it was made.
    fn moved(&self) -> (u64, u64) {
        match self {
            BlockEncoder::TopK(t, _) => t.moved(),
            BlockEncoder::Dense(d) => (0, d.moved()),
        }
    }

    /// The residual, copied back.
    fn residual(&mut self) -> Result<Vec<f32>, GpuError> {
        match self {
            BlockEncoder::TopK(t, _) => t.residual(),
            BlockEncoder::Dense(d) => d.residual(),
        }
    }

    /// Enqueues `dst += residual` (a read includes what was not sent yet).
    pub(super) fn add_residual_to(&self, dst: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
        match self {
            BlockEncoder::TopK(t, _) => t.add_residual_to(dst),
            BlockEncoder::Dense(d) => d.add_residual_to(dst),
        }
    }
}

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

    /// Drops the encoders and what they held back; returns the sum of its magnitudes (the
    /// residuals copied back, counted as PCIe traffic).
    pub(super) fn try_drop_unsent(&mut self) -> Result<f64, GpuError> {
        // Rows loaded since the read model was last used take what is held first, as the
        // oracle adds it when they load (the session drops before its final loads, so this is
        // for a caller that drops between loads and use).
        if self.dirty {
            self.sync_read()?;
        }
        let mut l1 = 0.0;
        for (_, mut enc) in std::mem::take(&mut self.encoders) {
            let r = enc.residual()?;
            self.bus.traffic.d2h_bytes += 4 * r.len() as u64;
            l1 += r.iter().map(|v| f64::from(v.abs())).sum::<f64>();
        }
        Ok(l1)
    }

    /// The delta compressed on the device, block by block (see `MlpResident::delta_encoded`):
    /// only the selection, or the dense payload, crosses PCIe.
    pub(super) fn try_delta_encoded(
        &mut self,
        scale: f32,
        chain: DeviceChain,
        blocks: &[DeltaBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), GpuError> {
        let arch = self.arch()?;
        let rows: Vec<usize> = arch.layers().iter().map(|s| s.rows()).collect();
        check_tiling(blocks, &rows).map_err(input)?;
        self.form_delta(scale)?;
        let same = |(b, e): (&DeltaBlock, &(DeltaBlock, BlockEncoder))| {
            (b.table, b.first_row, b.rows) == (e.0.table, e.0.first_row, e.0.rows)
                && e.1.chain() == chain
        };
        if self.encoders.len() != blocks.len() || !blocks.iter().zip(&self.encoders).all(same) {
            // A new plan: what the old blocks held joins this clock's delta.
            self.fold_encoders()?;
            for b in blocks {
                let width = arch.layer(b.table as usize).width();
                let enc = BlockEncoder::new(&self.gpu, chain, b.rows, width)?;
                // Its set-up copies (a top-k's sampled positions) cross PCIe too.
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
                let view = self.delta.get().slice(at..at + n);
                let payload = match &mut e.1 {
                    BlockEncoder::TopK(t, c) => {
                        t.push_encoded_view(&view, c.keep(b.k), c.format())?
                    }
                    BlockEncoder::Dense(d) => d.push_view(&view)?,
                };
                let after = e.1.moved();
                // The encoder's own copies: counted, not timed (they interleave with its
                // kernels).
                self.bus.traffic.h2d_bytes += after.0 - before.0;
                self.bus.traffic.d2h_bytes += after.1 - before.1;
                out.push(payload);
            }
            Ok(())
        })();
        self.encoders = encoders;
        run
    }
}
