//! Blocking for the parallel pass: the ratings bucketed into a `side × side`
//! grid of user-range × item-range blocks, and the run of every block once.

use super::kernel::sgd_rows;
use super::schedule::{Lease, Scheduler, SharedRows};
use super::Step;
use crate::mf::data::Rating;

/// At most about this many ratings (an evenly strided sample) are counted
/// to place the block boundaries.
const BALANCE_SAMPLE: usize = 1 << 16;

/// The `side × side` grid of one call, with buffers reused across calls.
///
/// The ratings are cut into `parts` contiguous chunks, one per thread; each
/// thread validates its chunk and appends each rating to its own bucket for
/// the rating's block. Block `k` is then the concatenation, over chunks `c`
/// in order, of `buckets[c · side² + k]`, which keeps the ratings of a block
/// in their given relative order. The buckets are cleared, not freed, between
/// calls, so after the first call of a given size nothing is allocated.
#[derive(Debug, Default)]
pub(super) struct Grid {
    side: usize,
    parts: usize,
    /// Per user row: its sampled rating count, then (after `cut`) its user
    /// block.
    user_block: Vec<u32>,
    /// Per item row: its sampled rating count, then its item block.
    item_block: Vec<u32>,
    /// First row of each user block, then the number of user rows (`side + 1`).
    user_cuts: Vec<usize>,
    /// First row of each item block, then the number of item rows.
    item_cuts: Vec<usize>,
    /// `parts × side²` buckets, chunk-major.
    buckets: Vec<Vec<Rating>>,
}

#[cold]
#[inline(never)]
fn out_of_range(k: usize, r: &Rating, n_users: usize, n_items: usize, rank: usize) -> ! {
    panic!(
        "FastMf::sgd_epoch: rating {k} (user {}, item {}) is out of range: \
         the factors hold {n_users} user rows and {n_items} item rows of rank {rank}",
        r.user, r.item
    );
}

/// Turns per-row counts into per-row block ids, cutting the rows into `side`
/// contiguous ranges of about `total / side` counted ratings each; writes the
/// range starts (and the row count) to `cuts`.
fn cut(rows: &mut [u32], side: usize, total: usize, cuts: &mut Vec<usize>) {
    cuts.clear();
    cuts.push(0);
    let mut seen = 0usize;
    let mut block = 0usize;
    for (row, c) in rows.iter_mut().enumerate() {
        while block + 1 < side && seen >= (block + 1) * total / side {
            block += 1;
            cuts.push(row);
        }
        seen += *c as usize;
        *c = block as u32;
    }
    cuts.resize(side + 1, rows.len());
}

/// Appends the ratings of one chunk to `buckets` (one per block, cleared
/// first). Returns the chunk index of the first out-of-range rating instead.
fn bucket_chunk(
    chunk: &[Rating],
    buckets: &mut [Vec<Rating>],
    user_block: &[u32],
    item_block: &[u32],
    side: usize,
) -> Result<(), usize> {
    for b in buckets.iter_mut() {
        b.clear();
    }
    for (j, r) in chunk.iter().enumerate() {
        let (Some(&ub), Some(&ib)) = (
            user_block.get(r.user as usize),
            item_block.get(r.item as usize),
        ) else {
            return Err(j);
        };
        buckets[ub as usize * side + ib as usize].push(*r);
    }
    Ok(())
}

impl Grid {
    /// Validates `ratings` against the factor shapes (panicking before any
    /// update) and buckets them into the `side × side` grid, using `parts`
    /// threads.
    pub(super) fn build(
        &mut self,
        ratings: &[Rating],
        users_len: usize,
        items_len: usize,
        rank: usize,
        side: usize,
        parts: usize,
    ) {
        debug_assert!(rank > 0 && side > 0 && parts > 0 && !ratings.is_empty());
        let n = ratings.len();
        let (n_users, n_items) = (users_len / rank, items_len / rank);
        self.side = side;
        self.parts = parts;

        // Block boundaries from an evenly strided sample (out-of-range rows
        // are skipped here and reported by the full pass below).
        self.user_block.clear();
        self.user_block.resize(n_users, 0);
        self.item_block.clear();
        self.item_block.resize(n_items, 0);
        let stride = n.div_ceil(BALANCE_SAMPLE);
        let mut sampled = 0;
        for r in ratings.iter().step_by(stride) {
            let (u, i) = (r.user as usize, r.item as usize);
            if u < n_users && i < n_items {
                self.user_block[u] += 1;
                self.item_block[i] += 1;
                sampled += 1;
            }
        }
        cut(&mut self.user_block, side, sampled, &mut self.user_cuts);
        cut(&mut self.item_block, side, sampled, &mut self.item_cuts);

        // Validate and bucket the chunks in parallel.
        let blocks = side * side;
        let chunk = n.div_ceil(parts);
        self.buckets.resize_with(parts * blocks, Vec::new);
        let (user_block, item_block) = (&self.user_block[..], &self.item_block[..]);
        let mut jobs = ratings
            .chunks(chunk)
            .zip(self.buckets.chunks_exact_mut(blocks))
            .map(|(c, out)| move || bucket_chunk(c, out, user_block, item_block, side));
        let mut first = jobs.next().expect("at least one rating");
        let results: Vec<Result<(), usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs.map(|job| s.spawn(job)).collect();
            let mut results = vec![first()];
            for h in handles {
                results.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            results
        });
        for (c, res) in results.iter().enumerate() {
            if let Err(j) = res {
                let k = c * chunk + j;
                out_of_range(k, &ratings[k], n_users, n_items, rank);
            }
        }
        // Chunks beyond the last one (tiny inputs) hold nothing.
        let used = n.div_ceil(chunk);
        for b in &mut self.buckets[used * blocks..] {
            b.clear();
        }
    }

    /// Ratings of block `k`, per chunk, in order.
    fn block(&self, k: usize) -> impl Iterator<Item = &[Rating]> + '_ {
        let blocks = self.side * self.side;
        self.buckets[..self.parts * blocks]
            .chunks_exact(blocks)
            .map(move |part| &part[k][..])
    }

    /// Number of ratings of each block.
    fn block_sizes(&self) -> Vec<usize> {
        let blocks = self.side * self.side;
        let mut size = vec![0; blocks];
        for part in self.buckets[..self.parts * blocks].chunks_exact(blocks) {
            for (s, b) in size.iter_mut().zip(part) {
                *s += b.len();
            }
        }
        size
    }

    /// Runs every block once on `threads` threads; returns the SSE summed
    /// over blocks in block order.
    pub(super) fn run(
        &self,
        threads: usize,
        users: &mut [f32],
        items: &mut [f32],
        step: Step,
    ) -> f64 {
        let rank = step.width();
        let side = self.side;
        let sched = Scheduler::new(side, self.block_sizes());
        let users = SharedRows::new(users);
        let items = SharedRows::new(items);
        let work = || {
            while let Some(k) = sched.take() {
                // Releases the block even if the kernel panicked, so the
                // other threads finish and the scope re-raises the panic.
                let mut lease = Lease {
                    sched: &sched,
                    block: k,
                    sse: 0.0,
                };
                let (ub, ib) = (k / side, k % side);
                let (u_lo, u_hi) = (self.user_cuts[ub], self.user_cuts[ub + 1]);
                let (i_lo, i_hi) = (self.item_cuts[ib], self.item_cuts[ib + 1]);
                // SAFETY: the scheduler hands user block `ub` and item block
                // `ib` to this thread only, until `lease` is dropped (after
                // the last use of these slices). User blocks are disjoint
                // row ranges of `users` (likewise items), so no other live
                // reference overlaps these ranges.
                let (u, v) = unsafe {
                    (
                        users.rows(u_lo * rank, u_hi * rank),
                        items.rows(i_lo * rank, i_hi * rank),
                    )
                };
                for part in self.block(k) {
                    lease.sse += sgd_rows(part, u, u_lo, v, i_lo, step);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        let st = sched.lock();
        debug_assert!(st.busy == 0 && st.untaken == 0);
        st.sse.iter().sum()
    }
}
