//! An energy stage (`energy:E`) counted where the block is (`kernels/codec_energy.cu`): the
//! fewest largest entries that hold a fraction E of the block's energy, as
//! `ps_proto::codec::k_of_energy` counts them (integer energies, so the device's sums are the
//! host's). A radix select over the whole block's magnitude bits accumulates energies instead
//! of counts and leaves on the device the state `codec_select_write` chooses by; only the
//! search's 5 words come back, the count among them ([`ENERGY_BYTES`]), then the block is
//! encoded as a top-k of that count is.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, PushKernelArg};

use super::large::one_block;
use super::DeviceTopK;
use crate::cuda::buffers::{DevBuf, Pinned};
use crate::cuda::codec::elementwise;
use crate::cuda::{Call, Gpu, GpuError};

/// Bytes of the state the host reads back (`est`: 5 words of 8 bytes).
pub const ENERGY_BYTES: u64 = ps_apps::app::device_codec::ENERGY_BYTES;
const EST_WORDS: usize = 5;

/// The kernels of `codec_energy.cu` and their device-only buffers.
pub(super) struct Energy {
    max: CudaFunction,
    hist: CudaFunction,
    pick: CudaFunction,
    d_count: DevBuf<u32>,
    d_energy: DevBuf<u64>,
    d_est: DevBuf<u64>,
    est_host: Pinned<u64>,
}

impl Energy {
    pub(super) fn load(gpu: &Gpu) -> Result<Energy, GpuError> {
        let f = |name| gpu.function("codec_energy", name);
        Ok(Energy {
            max: f("codec_energy_max")?,
            hist: f("codec_energy_hist")?,
            pick: f("codec_energy_pick")?,
            d_count: DevBuf::default(),
            d_energy: DevBuf::default(),
            d_est: DevBuf::default(),
            est_host: Pinned::new(&gpu.ctx)?,
        })
    }
}

impl DeviceTopK {
    /// How many entries of the residual (as it is) the stage `energy:e` keeps; for a count
    /// above 0 the radix pick's state is left for [`DeviceTopK::enqueue_write`]. Waits for the
    /// count (40 bytes back).
    pub(super) fn energy_count(&mut self, e: f32) -> Result<usize, GpuError> {
        if !(e > 0.0 && e <= 1.0) {
            return Err(GpuError::Input(format!(
                "energy fraction {e} is not in (0, 1]"
            )));
        }
        let n = self.n;
        if n == 0 {
            return Ok(0);
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.encoder()?;
        let enc = match self.encoder.as_deref_mut() {
            Some(enc) => enc,
            None => return Err(GpuError::Input("no top-k encoder".into())),
        };
        let (en, state) = (&mut enc.energy, &mut enc.select.d_state);
        state.ensure(&stream, 3)?;
        en.d_count.zero(&stream, 256)?;
        en.d_energy.zero(&stream, 256)?;
        en.d_est.zero(&stream, EST_WORDS)?;
        let (n64, n32) = (n as u64, n as u32);
        let x = self.residual.view(n);
        let grid = elementwise(&self.gpu, n);
        let mut b = stream.launch_builder(&en.max);
        b.arg(&x).arg(&n64).arg(en.d_est.get_mut());
        // SAFETY: x holds n values, est 5 words (zeroed above); codec_energy_max(const float*,
        // unsigned long long, unsigned long long*), any grid, static shared memory.
        unsafe { b.launch(grid) }.call("cuLaunchKernel(codec_energy_max)")?;
        for shift in [24u32, 16, 8, 0] {
            let mut b = stream.launch_builder(&en.hist);
            b.arg(&x)
                .arg(&n64)
                .arg(state.get())
                .arg(en.d_est.get())
                .arg(&shift)
                .arg(en.d_count.get_mut())
                .arg(en.d_energy.get_mut());
            // SAFETY: x holds n values; the state's 3 words (read after the first pass, which
            // the pick below has written), est 5 words, 256 words in each histogram;
            // codec_energy_hist(const float*, unsigned long long, const unsigned int*,
            // const unsigned long long*, unsigned int, unsigned int*, unsigned long long*),
            // any grid, static shared memory.
            unsafe { b.launch(grid) }.call("cuLaunchKernel(codec_energy_hist)")?;
            let mut b = stream.launch_builder(&en.pick);
            b.arg(en.d_count.get_mut())
                .arg(en.d_energy.get_mut())
                .arg(state.get_mut())
                .arg(en.d_est.get_mut())
                .arg(&shift)
                .arg(&e)
                .arg(&n32);
            // SAFETY: 256 words in each histogram, 3 state words, 5 est words;
            // codec_energy_pick(unsigned int*, unsigned long long*, unsigned int*,
            // unsigned long long*, unsigned int, float, unsigned int), one block.
            unsafe { b.launch(one_block(32)) }.call("cuLaunchKernel(codec_energy_pick)")?;
        }
        en.est_host.download(&stream, en.d_est.get(), EST_WORDS)?;
        self.moved.1 += ENERGY_BYTES;
        let est = en.est_host.host()?;
        let k = est[3];
        if est[4] == 2 || k > n as u64 {
            return Err(GpuError::Input(format!(
                "the device's energy count of a block of {n} failed (count {k}, state {})",
                est[4]
            )));
        }
        Ok(k as usize)
    }
}
