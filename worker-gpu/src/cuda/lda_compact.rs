//! The compaction of an LDA sweep's dense move counts (`words x K` i32 on the device) into the
//! sparse delta, two ways; only the sizes and the compacted entries cross PCIe, and every copy
//! is counted and timed on the caller's [`Bus`]:
//!
//! - [`Compaction`]: `(global word, topic, change)` triples with `lda_compact_delta`
//!   (`kernels/lda_gibbs.cu`), 12 bytes an entry; the non-resident engine's, and the resident
//!   one's above 65,536 topics;
//! - [`PackedDelta`]: the packed image of [`ps_apps::lda::packed`], about 4 bytes an entry; the
//!   resident engine's.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::lda::packed::{unpack_delta, Packed, Values, MAX_PACKED_TOPICS};

use super::buffers::{DevBuf, KernelTimer, Pinned};
use super::bus::Bus;
use super::{Call, Gpu, GpuError};

/// Threads per block of the compaction.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the compaction.
const BLOCKS_PER_SM: u32 = 4;
/// Smallest capacity of the outputs.
const MIN_CAP: usize = 4096;
/// Rows per chunk of the packed delta's scan (`LDA_DELTA_CHUNK` in `kernels/lda_rows.cuh`).
const DELTA_CHUNK: u32 = 256;

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

/// A sweep's dense move counts packed on the device for the trip out
/// ([`ps_apps::lda::packed`]: row ends, `u16` topics, `i16` or `i32` changes, in row and topic
/// order), with the five `lda_delta_*` passes (`kernels/lda_rows.cuh`): 8 bytes of sizes, then
/// about 4 bytes an entry and 4 a row cross PCIe, against [`Compaction`]'s 12 an entry. Needs
/// K <= 65,536 (a `u16` topic).
pub struct PackedDelta {
    count_fn: CudaFunction,
    chunks_fn: CudaFunction,
    scan_fn: CudaFunction,
    write_fn: CudaFunction,
    ends_fn: CudaFunction,
    image: DevBuf<u32>,
    meta: DevBuf<u32>,
    h_meta: Pinned<u32>,
    h_image: Pinned<u32>,
}

impl PackedDelta {
    pub fn new(gpu: &Gpu) -> Result<Self, GpuError> {
        let ctx = &gpu.ctx;
        Ok(PackedDelta {
            count_fn: gpu.function("lda_resident", "lda_delta_count")?,
            chunks_fn: gpu.function("lda_resident", "lda_delta_chunks")?,
            scan_fn: gpu.function("lda_resident", "lda_delta_scan")?,
            write_fn: gpu.function("lda_resident", "lda_delta_write")?,
            ends_fn: gpu.function("lda_resident", "lda_delta_ends")?,
            image: DevBuf::default(),
            meta: DevBuf::default(),
            h_meta: Pinned::new(ctx)?,
            h_image: Pinned::new(ctx)?,
        })
    }

    /// The nonzero cells of `wt_delta` (`words.len() x topics`: local row `i` is global word
    /// `words[i]`, sorted, after a sweep that visited `visited` tokens) as triples sorted by
    /// `(word, topic)`. The passes are timed on `bus`, into its `traffic.compute_s`.
    pub fn run(
        &mut self,
        gpu: &Gpu,
        bus: &mut Bus,
        wt_delta: &DevBuf<i32>,
        words: &[u32],
        topics: u32,
        visited: usize,
    ) -> Result<Vec<(u32, u32, i32)>, GpuError> {
        let k = topics as usize;
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let shape = self.pack(gpu, bus, wt_delta, words, topics, visited)?;
        bus.d2h(&gpu.compute, || {
            self.h_image
                .download(&gpu.compute, self.image.get(), shape.words())?;
            Ok(shape.bytes())
        })?;
        let out = unpack_delta(self.h_image.host()?, shape, k, words)
            .map_err(|e| GpuError::Input(format!("LDA: the device's packed delta: {e}")));
        // The host has waited for the stream: every copy timed so far has finished.
        bus.settle()?;
        out
    }

    /// The packed image of the last [`PackedDelta::pack`], on the device.
    pub fn image(&self) -> &DevBuf<u32> {
        &self.image
    }

    /// Packs the delta on the device (as [`PackedDelta::run`]) and returns the image's shape;
    /// only its two sizes cross PCIe. `words` must not be empty.
    pub fn pack(
        &mut self,
        gpu: &Gpu,
        bus: &mut Bus,
        wt_delta: &DevBuf<i32>,
        words: &[u32],
        topics: u32,
        visited: usize,
    ) -> Result<Packed, GpuError> {
        let k = topics as usize;
        let cells = words.len() * k;
        if k > MAX_PACKED_TOPICS {
            return Err(GpuError::Input(format!(
                "LDA: a packed delta holds at most {MAX_PACKED_TOPICS} topics, not {k}"
            )));
        }
        let too_big = |what: &str, x: usize| GpuError::Input(format!("LDA: {what} {x}"));
        let rows = u32::try_from(words.len()).map_err(|_| too_big("rows", words.len()))?;
        // Nonzero cells <= min(cells, 2 x moves).
        let cap = cells.min(visited.saturating_mul(2)).max(1);
        let capacity = u32::try_from(cap).map_err(|_| too_big("delta capacity", cap))?;
        let stream = &gpu.compute;
        self.image
            .ensure(stream, words.len() + cap.div_ceil(2) + cap)?;
        let chunks = rows.div_ceil(DELTA_CHUNK);
        self.meta.ensure(stream, 2 + chunks as usize)?;
        let per = |n: u32| LaunchConfig {
            grid_dim: (gpu.grid_for(u64::from(n), BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows_grid, chunks_grid) = (per(rows), per(chunks));
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        bus.kernels(stream, || {
            {
                let mut b = stream.launch_builder(&self.count_fn);
                b.arg(wt_delta.get())
                    .arg(&rows)
                    .arg(&topics)
                    .arg(self.image.get_mut());
                // SAFETY: wt_delta holds rows x topics cells (the caller's); image holds at least
                // `rows` words (ensured above).
                unsafe { b.launch(rows_grid) }.call("cuLaunchKernel(lda_delta_count)")?;
            }
            {
                let mut b = stream.launch_builder(&self.chunks_fn);
                b.arg(self.image.get_mut())
                    .arg(&rows)
                    .arg(self.meta.get_mut());
                // SAFETY: image holds `rows` counts; meta holds 2 + ceil(rows / chunk) words.
                unsafe { b.launch(chunks_grid) }.call("cuLaunchKernel(lda_delta_chunks)")?;
            }
            {
                let mut b = stream.launch_builder(&self.scan_fn);
                b.arg(self.image.get_mut())
                    .arg(&rows)
                    .arg(&capacity)
                    .arg(self.meta.get_mut());
                // SAFETY: image holds rows + ceil(cap / 2) + cap words, so the pad halves at
                // `entries <= capacity` are inside it; meta holds 2 + ceil(rows / chunk) words.
                unsafe { b.launch(one) }.call("cuLaunchKernel(lda_delta_scan)")?;
            }
            {
                let mut b = stream.launch_builder(&self.write_fn);
                b.arg(wt_delta.get())
                    .arg(&rows)
                    .arg(&topics)
                    .arg(self.image.get_mut())
                    .arg(self.meta.get())
                    .arg(&capacity);
                // SAFETY: as above; the kernel writes nothing when the entries exceed `capacity`,
                // and otherwise at most rows + ceil(cap / 2) + cap words.
                unsafe { b.launch(rows_grid) }.call("cuLaunchKernel(lda_delta_write)")?;
            }
            {
                let mut b = stream.launch_builder(&self.ends_fn);
                b.arg(self.image.get_mut())
                    .arg(&rows)
                    .arg(self.meta.get())
                    .arg(&capacity);
                // SAFETY: image holds `rows` ends, meta 2 + ceil(rows / chunk) words.
                unsafe { b.launch(rows_grid) }.call("cuLaunchKernel(lda_delta_ends)")?;
            }
            Ok(())
        })?;
        bus.d2h(stream, || {
            self.h_meta.download(stream, self.meta.get(), 2)?;
            Ok(8)
        })?;
        let (entries, wide) = {
            let m = self.h_meta.host()?;
            (m[0] as usize, m[1] != 0)
        };
        if entries > cap {
            return Err(GpuError::Input(format!(
                "LDA: the device counted {entries} changed cells, more than the {cap} a sweep \
                 of {visited} tokens can change"
            )));
        }
        Ok(Packed {
            rows: words.len(),
            entries,
            values: if wide { Values::I32 } else { Values::I16 },
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chunk_is_the_kernels() {
        let header = include_str!("../../../kernels/lda_rows.cuh");
        let define = format!("#define LDA_DELTA_CHUNK {}u", super::DELTA_CHUNK);
        assert!(
            header.contains(&define),
            "kernels/lda_rows.cuh lacks `{define}`"
        );
    }
}
