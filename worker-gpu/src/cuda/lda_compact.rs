//! The compaction of an LDA sweep's dense move counts (`words x K` i32 on the device) into the
//! sparse delta's `(global word, topic, change)` triples with `lda_compact_delta`
//! (`kernels/lda_gibbs.cu`), for both CUDA LDA engines: only the count and the triples cross
//! PCIe, and every copy is counted and timed on the caller's [`Bus`].

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use super::buffers::{DevBuf, KernelTimer, Pinned};
use super::bus::Bus;
use super::{Call, Gpu, GpuError};

/// Threads per block of the compaction.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the compaction.
const BLOCKS_PER_SM: u32 = 4;
/// Smallest capacity of the outputs.
const MIN_CAP: usize = 4096;

/// The compaction's kernel and its outputs, kept for the job.
pub struct Compaction {
    compact_fn: CudaFunction,
    out_word: DevBuf<u32>,
    out_topic: DevBuf<u32>,
    out_change: DevBuf<i32>,
    count: DevBuf<u32>,
    h_word: Pinned<u32>,
    h_topic: Pinned<u32>,
    h_change: Pinned<i32>,
    h_count: Pinned<u32>,
    /// The largest count seen: the next run's capacity starts there.
    cap: usize,
}

impl Compaction {
    pub fn new(gpu: &Gpu) -> Result<Self, GpuError> {
        let ctx = &gpu.ctx;
        Ok(Compaction {
            compact_fn: gpu.function("lda_gibbs", "lda_compact_delta")?,
            out_word: DevBuf::default(),
            out_topic: DevBuf::default(),
            out_change: DevBuf::default(),
            count: DevBuf::default(),
            h_word: Pinned::new(ctx)?,
            h_topic: Pinned::new(ctx)?,
            h_change: Pinned::new(ctx)?,
            h_count: Pinned::new(ctx)?,
            cap: 0,
        })
    }

    /// The nonzero cells of `wt_delta` (`words.len() x topics`: local row `i` is global word
    /// `words[i]`, after a sweep that visited `visited` tokens) as triples sorted by
    /// `(word, topic)`; runs again, larger, when the outputs were too small. With `timer`, each
    /// launch is timed into `bus.traffic.compute_s`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        gpu: &Gpu,
        bus: &mut Bus,
        timer: Option<&KernelTimer>,
        wt_delta: &DevBuf<i32>,
        words: (&DevBuf<u32>, u32),
        topics: u32,
        visited: usize,
    ) -> Result<Vec<(u32, u32, i32)>, GpuError> {
        let (words, num_words) = words;
        let cells = num_words as usize * topics as usize;
        if cells == 0 {
            return Ok(Vec::new());
        }
        // Nonzero cells <= min(cells, 2 x moves).
        let bound = cells.min(visited.saturating_mul(2)).max(1);
        let mut cap = self.cap.max(MIN_CAP).min(bound);
        let grid = gpu.grid_for(cells as u64, BLOCK, BLOCKS_PER_SM);
        let stream = &gpu.compute;
        for _attempt in 0..2 {
            self.out_word.ensure(stream, cap)?;
            self.out_topic.ensure(stream, cap)?;
            self.out_change.ensure(stream, cap)?;
            self.count.zero(stream, 1)?;
            let capacity = u32::try_from(cap)
                .map_err(|_| GpuError::Input(format!("LDA: compaction capacity {cap}")))?;
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            if let Some(t) = timer {
                t.start(stream)?;
            }
            let mut b = stream.launch_builder(&self.compact_fn);
            b.arg(wt_delta.get())
                .arg(&num_words)
                .arg(&topics)
                .arg(words.get())
                .arg(self.out_word.get_mut())
                .arg(self.out_topic.get_mut())
                .arg(self.out_change.get_mut())
                .arg(self.count.get_mut())
                .arg(&capacity);
            // SAFETY: wt_delta holds num_words x topics entries and `words` num_words ids (the
            // caller's); the outputs hold at least `capacity` entries; count is one.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(lda_compact_delta)")?;
            if let Some(t) = timer {
                t.stop(stream, &mut bus.traffic)?;
            }
            bus.d2h(stream, || {
                self.h_count.download(stream, self.count.get(), 1)?;
                Ok(4)
            })?;
            let count = self.h_count.host()?[0] as usize;
            if count > cap {
                cap = count;
                continue;
            }
            self.cap = self.cap.max(count);
            if count == 0 {
                return Ok(Vec::new());
            }
            bus.d2h(stream, || {
                self.h_word.download(stream, self.out_word.get(), count)?;
                self.h_topic.download(stream, self.out_topic.get(), count)?;
                self.h_change
                    .download(stream, self.out_change.get(), count)?;
                Ok(12 * count as u64)
            })?;
            let mut entries: Vec<(u32, u32, i32)> = self
                .h_word
                .host()?
                .iter()
                .zip(self.h_topic.host()?)
                .zip(self.h_change.host()?)
                .map(|((&w, &t), &c)| (w, t, c))
                .collect();
            entries.sort_unstable_by_key(|&(w, t, _)| (w, t));
            // The host has waited for the stream: every copy timed so far has finished.
            bus.settle()?;
            return Ok(entries);
        }
        Err(GpuError::Input(format!(
            "LDA: the delta compaction found more than {cap} entries in {cells} cells"
        )))
    }
}
