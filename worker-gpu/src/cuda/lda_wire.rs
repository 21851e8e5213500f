//! The resident LDA engine's delta encoded on the device (`kernels/lda_wire.cu`): from the packed
//! delta [`super::lda_compact::PackedDelta`] leaves there, the exact sparse payloads the worker
//! library would make of each frame block (`ps_apps::lda::wire`), so that PCIe carries the
//! wire's bytes out and little else: the touched rows' bitmap (a bit a row), each block's plan
//! (32 bytes) and the payloads. In: each block's description (16 bytes). Every copy is counted
//! and timed on the caller's [`Bus`].

use cudarc::driver::{CudaFunction, LaunchArgs, LaunchConfig, PushKernelArg};
use ps_apps::lda::packed::{Packed, Values};
use ps_apps::lda::wire::{block_words, touched_rows, wire_id_of, Cut, WireBlock, PLAN_BYTES};

use super::buffers::{DevBuf, Pinned};
use super::bus::Bus;
use super::{Call, Gpu, GpuError};

/// Threads per block of every pass.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor.
const BLOCKS_PER_SM: u32 = 4;
/// Words of a block's description and of its plan (`LDA_WIRE_BLOCK_WORDS`, `LDA_WIRE_PLAN_WORDS`).
const BLOCK_WORDS: usize = 4;
const PLAN_WORDS: usize = 8;

/// The encoder's kernels and buffers, kept for the job.
pub struct WireEncoder {
    touched_fn: CudaFunction,
    rank_fn: CudaFunction,
    index_fn: CudaFunction,
    plan_fn: CudaFunction,
    offsets_fn: CudaFunction,
    write_fn: CudaFunction,
    bitmap: DevBuf<u32>,
    counts: DevBuf<u32>,
    rank: DevBuf<u32>,
    blocks: DevBuf<u32>,
    plan: DevBuf<u32>,
    at: DevBuf<u64>,
    out: DevBuf<u32>,
    h_bitmap: Pinned<u32>,
    h_blocks: Pinned<u32>,
    h_plan: Pinned<u32>,
    h_out: Pinned<u32>,
}

impl WireEncoder {
    pub fn new(gpu: &Gpu) -> Result<Self, GpuError> {
        let f = |name: &str| gpu.function("lda_wire", name);
        let ctx = &gpu.ctx;
        Ok(WireEncoder {
            touched_fn: f("lda_wire_touched")?,
            rank_fn: f("lda_wire_rank")?,
            index_fn: f("lda_wire_index")?,
            plan_fn: f("lda_wire_plan")?,
            offsets_fn: f("lda_wire_offsets")?,
            write_fn: f("lda_wire_write")?,
            bitmap: DevBuf::default(),
            counts: DevBuf::default(),
            rank: DevBuf::default(),
            blocks: DevBuf::default(),
            plan: DevBuf::default(),
            at: DevBuf::default(),
            out: DevBuf::default(),
            h_bitmap: Pinned::new(ctx)?,
            h_blocks: Pinned::new(ctx)?,
            h_plan: Pinned::new(ctx)?,
            h_out: Pinned::new(ctx)?,
        })
    }

    /// The packed delta `image` (of `shape`, over local rows `words`, K `topics`) as the touched
    /// words (global ids) and one payload per block of `cut`'s.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        gpu: &Gpu,
        bus: &mut Bus,
        image: &DevBuf<u32>,
        shape: Packed,
        words: &[u32],
        topics: u32,
        cut: &mut Cut<'_>,
    ) -> Result<(Vec<u64>, Vec<WireBlock>), GpuError> {
        let bad = |what: String| GpuError::Input(format!("LDA: the wire delta: {what}"));
        let rows = u32::try_from(words.len()).map_err(|_| bad("too many rows".into()))?;
        let entries = u32::try_from(shape.entries).map_err(|_| bad("too many entries".into()))?;
        let wide = u32::from(shape.values == Values::I32);
        let nwords = rows.div_ceil(32);
        let stream = &gpu.compute;
        let grid = |threads: u64| LaunchConfig {
            grid_dim: (gpu.grid_for(threads, BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        self.bitmap.ensure(stream, nwords as usize)?;
        self.counts.ensure(stream, nwords as usize)?;
        self.rank.ensure(stream, shape.entries)?;
        bus.kernels(stream, || {
            let mut b = stream.launch_builder(&self.touched_fn);
            b.arg(image.get())
                .arg(&rows)
                .arg(self.bitmap.get_mut())
                .arg(self.counts.get_mut());
            // SAFETY: image holds the packed delta's `rows` ends; bitmap and counts hold
            // ceil(rows / 32) words (ensured above).
            unsafe { b.launch(grid(u64::from(nwords))) }
                .call("cuLaunchKernel(lda_wire_touched)")?;
            let mut b = stream.launch_builder(&self.rank_fn);
            b.arg(self.counts.get_mut()).arg(&nwords);
            // SAFETY: counts holds `nwords` words.
            unsafe { b.launch(one) }.call("cuLaunchKernel(lda_wire_rank)")?;
            let mut b = stream.launch_builder(&self.index_fn);
            b.arg(image.get())
                .arg(&rows)
                .arg(self.bitmap.get())
                .arg(self.counts.get())
                .arg(self.rank.get_mut());
            // SAFETY: as above; rank holds one word an entry, and the ends never pass `entries`.
            unsafe { b.launch(grid(32 * u64::from(rows))) }
                .call("cuLaunchKernel(lda_wire_index)")?;
            Ok(())
        })?;
        bus.d2h(stream, || {
            self.h_bitmap
                .download(stream, self.bitmap.get(), nwords as usize)?;
            Ok(4 * u64::from(nwords))
        })?;
        let touched = touched_rows(self.h_bitmap.host()?, words.len());
        let keys: Vec<u64> = touched
            .iter()
            .map(|&r| u64::from(words[r as usize]))
            .collect();
        let ranges = cut(&keys).map_err(bad)?;
        let described = block_words(&touched, &ranges).map_err(bad)?;
        let nb = ranges.len();
        if described.len() != BLOCK_WORDS * nb {
            return Err(bad("a block's description is not 4 words".into()));
        }
        if nb == 0 {
            bus.settle()?;
            return Ok((keys, Vec::new()));
        }
        let nblocks = u32::try_from(nb).map_err(|_| bad("too many blocks".into()))?;
        // No payload is longer than its list layout (9 bytes an entry and 6 more at most) or its
        // dense one (4 bytes a cell and the mode byte), and each starts at a 4-byte boundary.
        let cells = touched.len() as u64 * u64::from(topics);
        let bound =
            (9 * u64::from(entries) + 6 * nb as u64).min(4 * cells + nb as u64) + 3 * nb as u64;
        let out_words = usize::try_from(bound.div_ceil(4)).map_err(|_| bad("too large".into()))?;
        self.h_blocks.fill(&described)?;
        bus.h2d(stream, || {
            self.blocks.upload(stream, &self.h_blocks)?;
            Ok(4 * described.len() as u64)
        })?;
        self.plan.ensure(stream, PLAN_WORDS * nb)?;
        self.at.ensure(stream, nb + 1)?;
        self.out.zero(stream, out_words)?;
        let per_block = grid(32 * u64::from(nblocks));
        let scalars = [rows, entries, wide, topics];
        let capacity = 4 * out_words as u64;
        bus.kernels(stream, || {
            let delta = (image, &scalars, &self.rank, &self.blocks, &nblocks);
            let mut b = stream.launch_builder(&self.plan_fn);
            delta_args(&mut b, delta).arg(self.plan.get_mut());
            // SAFETY: the image is the packed delta of `rows` rows and `entries` entries; the
            // blocks (4 words each) name touched rows within it, as block_words made them; plan
            // holds 8 words a block.
            unsafe { b.launch(per_block) }.call("cuLaunchKernel(lda_wire_plan)")?;
            let mut b = stream.launch_builder(&self.offsets_fn);
            b.arg(self.plan.get()).arg(&nblocks).arg(self.at.get_mut());
            // SAFETY: plan holds 8 words a block, at nblocks + 1.
            unsafe { b.launch(one) }.call("cuLaunchKernel(lda_wire_offsets)")?;
            let delta = (image, &scalars, &self.rank, &self.blocks, &nblocks);
            let mut b = stream.launch_builder(&self.write_fn);
            delta_args(&mut b, delta)
                .arg(self.plan.get())
                .arg(self.at.get())
                .arg(&capacity)
                .arg(self.out.get_mut());
            // SAFETY: as the plan's; the kernel writes no block past `capacity` bytes, the
            // bound `out` was zeroed to.
            unsafe { b.launch(per_block) }.call("cuLaunchKernel(lda_wire_write)")?;
            Ok(())
        })?;
        bus.d2h(stream, || {
            self.h_plan
                .download(stream, self.plan.get(), PLAN_WORDS * nb)?;
            Ok(PLAN_BYTES * nb as u64)
        })?;
        let plan = self.h_plan.host()?;
        let total: usize = plan
            .chunks_exact(PLAN_WORDS)
            .map(|p| (p[0] as usize).next_multiple_of(4))
            .sum();
        if total > 4 * out_words {
            return Err(bad(format!(
                "the device's payloads take {total} bytes, past their bound {}",
                4 * out_words
            )));
        }
        bus.d2h(stream, || {
            self.h_out.download(stream, self.out.get(), total / 4)?;
            Ok(total as u64)
        })?;
        let words = self.h_out.host()?;
        bus.settle()?;
        // Each payload straight from its words (little-endian), once.
        let mut blocks = Vec::with_capacity(nb);
        let mut at = 0;
        for (rows, p) in ranges.into_iter().zip(plan.chunks_exact(PLAN_WORDS)) {
            let (size, value_bytes) = (p[0] as usize, p[4]);
            let wire_id = wire_id_of(value_bytes)
                .ok_or_else(|| bad(format!("{value_bytes} bytes a value")))?;
            let payload = words[at / 4..(at + size).div_ceil(4)]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .take(size)
                .collect();
            blocks.push(WireBlock {
                rows,
                wire_id,
                payload,
            });
            at += size.next_multiple_of(4);
        }
        Ok((keys, blocks))
    }
}

/// The packed delta (`rows`, `entries`, `wide`, `topics`), the entries' ranks and the blocks.
type DeltaArgs<'a> = (
    &'a DevBuf<u32>,
    &'a [u32; 4],
    &'a DevBuf<u32>,
    &'a DevBuf<u32>,
    &'a u32,
);

/// Pushes the arguments `lda_wire_plan` and `lda_wire_write` open with.
fn delta_args<'a, 'b>(
    b: &'b mut LaunchArgs<'a>,
    (image, scalars, rank, blocks, nblocks): DeltaArgs<'a>,
) -> &'b mut LaunchArgs<'a> {
    b.arg(image.get());
    for x in scalars {
        b.arg(x);
    }
    b.arg(rank.get()).arg(blocks.get()).arg(nblocks)
}

#[cfg(test)]
mod tests {
    use ps_apps::lda::wire::{BLOCK_BYTES, PLAN_BYTES};

    #[test]
    fn the_sizes_are_the_kernels() {
        let source = include_str!("../../../kernels/lda_wire.cu");
        for (name, words) in [
            ("LDA_WIRE_BLOCK_WORDS", super::BLOCK_WORDS),
            ("LDA_WIRE_PLAN_WORDS", super::PLAN_WORDS),
        ] {
            let define = format!("#define {name} {words}u");
            assert!(
                source.contains(&define),
                "kernels/lda_wire.cu lacks `{define}`"
            );
        }
        assert_eq!(BLOCK_BYTES, 4 * super::BLOCK_WORDS as u64);
        assert_eq!(PLAN_BYTES, 4 * super::PLAN_WORDS as u64);
    }
}
