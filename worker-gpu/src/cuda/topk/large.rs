//! A selection past the one-block trim's 4,096 candidates, made on the device all the same
//! (`kernels/codec_select.cu`): a radix select over the candidates' magnitude bits finds the
//! k-th magnitude and how many entries tied at it go (the lowest-indexed), then a scan over
//! tiles of the block writes the chosen indices and values in index order into the sent
//! buffers, where [`DeviceTopK::push_encoded_view`] encodes them as it encodes a trimmed
//! selection. Nothing crosses PCIe: the candidates' count, which the host already read, sets
//! the launches. The scan ([`DeviceTopK::enqueue_write`]) also writes an energy stage's
//! selection, from the state its count left (`energy.rs`).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use super::DeviceTopK;
use crate::cuda::buffers::DevBuf;
use crate::cuda::codec::elementwise;
use crate::cuda::{Call, Gpu, GpuError};

/// Entries per tile of the scan (`CODEC_SELECT_TILE`).
const TILE: usize = 4096;
/// Threads of a tile's block (any multiple of 32 up to 1,024 gives the same result).
const TILE_THREADS: u32 = 256;
/// Threads of the one block that scans the tiles' counts.
const SCAN_THREADS: u32 = 1024;

/// The kernels of `codec_select.cu` and their device-only buffers.
pub(super) struct Select {
    hist: CudaFunction,
    pick: CudaFunction,
    count: CudaFunction,
    scan: CudaFunction,
    write: CudaFunction,
    d_hist: DevBuf<u32>,
    /// The radix pick's state, `{M, mask, need}`: the chosen entries' smallest magnitude and
    /// how many of the entries at it go (written by `codec_energy_pick` too).
    pub(super) d_state: DevBuf<u32>,
    d_tiles: DevBuf<u64>,
}

impl Select {
    pub(super) fn load(gpu: &Gpu) -> Result<Select, GpuError> {
        let f = |name| gpu.function("codec_select", name);
        Ok(Select {
            hist: f("codec_select_hist")?,
            pick: f("codec_select_pick")?,
            count: f("codec_select_count")?,
            scan: f("codec_select_scan")?,
            write: f("codec_select_write")?,
            d_hist: DevBuf::default(),
            d_state: DevBuf::default(),
            d_tiles: DevBuf::default(),
        })
    }
}

pub(super) fn one_block(threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl DeviceTopK {
    /// Enqueues the selection of the `k` highest-ranked of the `count` candidates (any count)
    /// into the sent buffers, ascending by index, with their values.
    pub(super) fn enqueue_select(&mut self, count: usize, k: usize) -> Result<(), GpuError> {
        if k == 0 || k > count || count > self.capacity() || count > u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a device selection of {k} of {count} candidates ({} held)",
                self.capacity()
            )));
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.encoder()?;
        let sel = match self.encoder.as_deref_mut() {
            Some(e) => &mut e.select,
            None => return Err(GpuError::Input("no top-k encoder".into())),
        };
        sel.d_hist.zero(&stream, 256)?;
        sel.d_state.ensure(&stream, 3)?;
        let (count32, k32) = (count as u32, k as u32);
        let cand = self.d_cand_val.view(count);
        for shift in [24u32, 16, 8, 0] {
            let mut b = stream.launch_builder(&sel.hist);
            b.arg(&cand)
                .arg(&count32)
                .arg(sel.d_state.get())
                .arg(&shift)
                .arg(sel.d_hist.get_mut());
            // SAFETY: `count` candidate values, the state's 3 words (read after the first
            // pass, which the pick below has written), 256 histogram words;
            // codec_select_hist(const float*, unsigned int, const unsigned int*, unsigned int,
            // unsigned int*), any grid.
            unsafe { b.launch(elementwise(&self.gpu, count)) }
                .call("cuLaunchKernel(codec_select_hist)")?;
            let mut b = stream.launch_builder(&sel.pick);
            b.arg(sel.d_hist.get_mut())
                .arg(sel.d_state.get_mut())
                .arg(&shift)
                .arg(&k32);
            // SAFETY: 256 histogram words, 3 state words; 1 <= k <= count (checked above);
            // codec_select_pick(unsigned int*, unsigned int*, unsigned int, unsigned int).
            unsafe { b.launch(one_block(32)) }.call("cuLaunchKernel(codec_select_pick)")?;
        }
        self.enqueue_write(k)
    }

    /// Enqueues the scan that writes the `k` chosen entries of the block into the sent
    /// buffers, ascending by index, with their values, as the state a radix pick left
    /// (`codec_select_pick`, or `codec_energy_pick`) says: every entry above its magnitude M,
    /// and the first `need` at M.
    pub(super) fn enqueue_write(&mut self, k: usize) -> Result<(), GpuError> {
        if k == 0 || k > self.n || self.n > u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a device selection of {k} of {} values",
                self.n
            )));
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.d_sent_idx.ensure(&stream, k)?;
        self.d_sent_raw.ensure(&stream, k)?;
        self.encoder()?;
        let sel = match self.encoder.as_deref_mut() {
            Some(e) => &mut e.select,
            None => return Err(GpuError::Input("no top-k encoder".into())),
        };
        let tiles = self.n.div_ceil(TILE);
        sel.d_tiles.ensure(&stream, tiles)?;
        let k32 = k as u32;
        let (n64, tiles64) = (self.n as u64, tiles as u64);
        let x = self.residual.view(self.n);
        let tile_cfg = LaunchConfig {
            grid_dim: (
                self.gpu
                    .grid_for(tiles64 * u64::from(TILE_THREADS), TILE_THREADS, 8),
                1,
                1,
            ),
            block_dim: (TILE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&sel.count);
        b.arg(&x)
            .arg(&n64)
            .arg(sel.d_state.get())
            .arg(sel.d_tiles.get_mut());
        // SAFETY: x holds n values, the tiles buffer ceil(n / TILE) words; codec_select_count(
        // const float*, unsigned long long, const unsigned int*, unsigned long long*).
        unsafe { b.launch(tile_cfg) }.call("cuLaunchKernel(codec_select_count)")?;
        let mut b = stream.launch_builder(&sel.scan);
        b.arg(sel.d_tiles.get_mut()).arg(&tiles64);
        // SAFETY: the tiles buffer holds `tiles` words; codec_select_scan(unsigned long long*,
        // unsigned long long), one block of at most 1,024 threads, static shared memory.
        unsafe { b.launch(one_block(SCAN_THREADS)) }.call("cuLaunchKernel(codec_select_scan)")?;
        let mut b = stream.launch_builder(&sel.write);
        b.arg(&x)
            .arg(&n64)
            .arg(sel.d_state.get())
            .arg(sel.d_tiles.get())
            .arg(&k32)
            .arg(self.d_sent_idx.get_mut())
            .arg(self.d_sent_raw.get_mut());
        // SAFETY: as codec_select_count; exactly k entries are chosen (the radix select's
        // count at the k-th magnitude), each written once below k into the sent buffers, which
        // hold k; codec_select_write(const float*, unsigned long long, const unsigned int*,
        // const unsigned long long*, unsigned int, unsigned int*, float*), the count's grid
        // and block.
        unsafe { b.launch(tile_cfg) }.call("cuLaunchKernel(codec_select_write)")?;
        Ok(())
    }
}
