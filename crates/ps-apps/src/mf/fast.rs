//! The fast CPU engine for matrix factorisation: a rank-vectorised SGD kernel
//! and, with several threads, FPSG/LIBMF-style blocked parallel SGD.

use std::marker::PhantomData;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::compute::MfCompute;
use super::data::Rating;
use crate::error::ComputeError;

/// With `threads >= 2`, a call with fewer ratings than this runs the
/// single-thread kernel (in the given order, exactly as with `threads = 1`):
/// below it, bucketing the ratings and spawning threads cost more than they
/// save. Larger calls use `min(threads, ratings / 2048)` threads, so that
/// each thread gets at least 2048 ratings.
pub const PARALLEL_MIN_RATINGS: usize = 2 * MIN_RATINGS_PER_THREAD;

/// See [`PARALLEL_MIN_RATINGS`].
const MIN_RATINGS_PER_THREAD: usize = 2048;

/// Independent `f32` accumulators of the dot product (one AVX register, two
/// SSE registers).
const LANES: usize = 8;

/// Fast `f32` SGD engine.
///
/// # One thread
/// Ratings are processed in the given order with the same update as
/// [`super::CpuMf`]. The prediction `u·v` is accumulated in 8 independent
/// lanes (element `k` goes to lane `k % 8` for the first `8·⌊rank/8⌋`
/// elements, reduced as `((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7))`, then the
/// remaining `rank % 8` elements are summed sequentially and added), and the
/// update runs over zipped rows, so both loops auto-vectorise. The update
/// itself is the oracle's expression, element by element.
///
/// Differences from [`super::CpuMf`] (one thread): only the summation order
/// of the dot product. For `rank < 8` it *is* the oracle's order and results
/// are bitwise identical; otherwise each prediction differs by `f32`
/// rounding (~`1e-7·Σ|u_k v_k|`), which SGD carries forward: after a few
/// epochs factors typically agree to ~`1e-6` relative and the SSE to
/// ~`1e-9` relative (the conformance test asserts `1e-4·|oracle| + 1e-6` per
/// factor element and `1e-5` relative on the SSE). Results are
/// deterministic.
///
/// # Several threads
/// With `threads >= 2`, `rank > 0` and at least [`PARALLEL_MIN_RATINGS`]
/// ratings, `t = min(threads, ratings / 2048)` threads run FPSG (Zhuang et
/// al., RecSys 2013) / LIBMF blocking:
///
/// * the user rows and the item rows are each cut into `B = 2t + 1`
///   contiguous ranges holding about the same number of ratings (balanced
///   by per-row counts over an evenly strided sample of at most ~65k of
///   this call's ratings, so skewed or id-sorted data still gives even
///   blocks);
/// * the ratings are bucketed into the `B × B` grid: the `t` threads each
///   take a contiguous chunk of the ratings, check it and append every
///   rating to the chunk's bucket for its block; a block is its chunks'
///   buckets in chunk order, so it keeps its ratings in their given relative
///   order (the buckets live in the engine and keep their capacity across
///   calls);
/// * `t` threads (the caller plus `t − 1` scoped threads) repeatedly take a
///   block that has not been processed in this call and whose user range and
///   item range are not in use by another thread, run the one-thread kernel
///   on it, and release it, until every block has been processed exactly
///   once. Two running blocks never share a user row or an item row, so
///   threads never write the same memory.
///
/// FPSG prefers the least-updated free block; within one call every block
/// is processed exactly once, so all candidates tie on that criterion and
/// the tie is broken by the most remaining (not yet taken) ratings in the
/// block's user range plus item range, which keeps the remaining work spread
/// over many ranges and shortens the end of the pass, where threads can run
/// out of independent blocks.
///
/// `B = 2t + 1` rather than FPSG's minimum `t + 1`: because each block is
/// processed exactly once per call, the end of a pass leaves few free
/// choices, and `(2t + 1)²` blocks give the scheduler more of them (LIBMF
/// likewise warns when its bin count is at most `2t`), while blocks stay
/// large enough that scheduling (one mutex round trip per block) is
/// negligible.
///
/// Differences from [`super::CpuMf`] (several threads): every rating is
/// visited exactly once, but in block order instead of the given order, and
/// which of two blocks sharing a row runs first depends on thread timing, so
/// factors are *not* deterministic and differ from the oracle by more than
/// rounding (as any reordering of SGD does); converged quality is the same.
/// The returned SSE is the sum of per-block SSEs taken in block order; with
/// `lr = 0` it is therefore deterministic and equals the oracle's up to `f64`
/// summation order (and the dot-product rounding above).
///
/// # Panics
/// Like [`super::CpuMf`], `sgd_epoch` panics if a rating refers to a user or
/// item row outside `users` / `items` (a caller bug). With one thread (or
/// below [`PARALLEL_MIN_RATINGS`]) the panic is an index-out-of-bounds at
/// the offending rating, after the ratings before it were applied, as in the
/// oracle. The blocked path checks every rating before touching anything and
/// panics with a message naming the rating. The engine never causes
/// undefined behaviour: all factor accesses are bounds-checked slices, and
/// the only unsafe code hands out the disjoint row ranges of busy blocks.
#[derive(Debug)]
pub struct FastMf {
    threads: usize,
    grid: Grid,
}

impl Default for FastMf {
    /// A single-threaded engine.
    fn default() -> Self {
        FastMf::new(1)
    }
}

impl FastMf {
    /// Engine using `threads` threads per `sgd_epoch` (`0` is treated as 1).
    pub fn new(threads: usize) -> Self {
        FastMf {
            threads: threads.max(1),
            grid: Grid::default(),
        }
    }

    /// Number of threads used per `sgd_epoch` (at most; see
    /// [`PARALLEL_MIN_RATINGS`] for smaller inputs).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl MfCompute for FastMf {
    fn sgd_epoch(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        let step = Step {
            rank,
            mean: None,
            lr,
            reg,
        };
        Ok(self.pass(ratings, users, items, step))
    }

    /// The biased model (see [`MfCompute::sgd_epoch_biased`]), with the same kernel and the
    /// same blocking: the factors as in the plain pass, then the two biases.
    fn sgd_epoch_biased(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        mean: f32,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        let step = Step {
            rank,
            mean: Some(mean),
            lr,
            reg,
        };
        Ok(self.pass(ratings, users, items, step))
    }

    fn name(&self) -> &'static str {
        "fast"
    }
}

impl FastMf {
    fn pass(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        step: Step,
    ) -> f64 {
        let threads = self.threads.min(ratings.len() / MIN_RATINGS_PER_THREAD);
        let width = step.width();
        if threads < 2 || width == 0 {
            return sgd_rows(ratings, users, 0, items, 0, step);
        }
        let side = 2 * threads + 1;
        self.grid
            .build(ratings, users.len(), items.len(), width, side, threads);
        self.grid.run(threads, users, items, step)
    }
}

/// One pass's model and rates.
#[derive(Debug, Clone, Copy)]
struct Step {
    rank: usize,
    /// `Some(mean)`: biased rows (`rank + 1` wide, the bias last).
    mean: Option<f32>,
    lr: f32,
    reg: f32,
}

impl Step {
    fn width(&self) -> usize {
        self.rank + usize::from(self.mean.is_some())
    }
}

// ---------------------------------------------------------------------------
// Kernel
// ---------------------------------------------------------------------------

/// `a·b` in [`LANES`] independent accumulators; see [`FastMf`] for the order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let mut tail = 0.0f32;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += x * y;
    }
    if a.len() < LANES {
        return tail;
    }
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.zip(bc) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail
}

/// The oracle's update, element by element, over zipped rows.
#[inline(always)]
fn update(u: &mut [f32], v: &mut [f32], e: f32, lr: f32, reg: f32) {
    for (uk, vk) in u.iter_mut().zip(v.iter_mut()) {
        let (u0, v0) = (*uk, *vk);
        *uk = u0 + lr * (e * v0 - reg * u0);
        *vk = v0 + lr * (e * u0 - reg * v0);
    }
}

/// Sequential SGD over `ratings`, where `users` holds the rows from
/// `user_base` on and `items` the rows from `item_base` on. Returns the SSE
/// measured before each update. Panics (bounds check) on a row outside the
/// slices.
fn sgd_rows(
    ratings: &[Rating],
    users: &mut [f32],
    user_base: usize,
    items: &mut [f32],
    item_base: usize,
    step: Step,
) -> f64 {
    let (rank, w, lr, reg) = (step.rank, step.width(), step.lr, step.reg);
    let mut sse = 0.0f64;
    for r in ratings {
        let uo = (r.user as usize - user_base) * w;
        let io = (r.item as usize - item_base) * w;
        let u = &mut users[uo..uo + w];
        let v = &mut items[io..io + w];
        match step.mean {
            None => {
                let e = r.value - dot(u, v);
                sse += f64::from(e) * f64::from(e);
                update(u, v, e, lr, reg);
            }
            Some(mean) => {
                let (pu, bu) = u.split_at_mut(rank);
                let (qi, bi) = v.split_at_mut(rank);
                let e = r.value - (mean + bu[0] + bi[0] + dot(pu, qi));
                sse += f64::from(e) * f64::from(e);
                update(pu, qi, e, lr, reg);
                bu[0] += lr * (e - reg * bu[0]);
                bi[0] += lr * (e - reg * bi[0]);
            }
        }
    }
    sse
}

// ---------------------------------------------------------------------------
// Blocking
// ---------------------------------------------------------------------------

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
struct Grid {
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
    fn build(
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
    fn run(&self, threads: usize, users: &mut [f32], items: &mut [f32], step: Step) -> f64 {
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

/// A factor matrix shared by the block threads.
///
/// Invariant (upheld by [`Scheduler`]): at any time each row range handed out
/// by [`SharedRows::rows`] is used by one thread only, and ranges in use are
/// disjoint.
struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedRows` is only a pointer to a `&'a mut [f32]` it borrows
// exclusively for `'a`; threads access it solely through `rows`, whose
// contract requires disjoint ranges, so sending or sharing it between threads
// cannot create a data race (`f32` is `Send + Sync`).
unsafe impl Send for SharedRows<'_> {}
// SAFETY: see `Send` above.
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    fn new(rows: &'a mut [f32]) -> Self {
        SharedRows {
            ptr: rows.as_mut_ptr(),
            len: rows.len(),
            _borrow: PhantomData,
        }
    }

    /// Elements `lo..hi` (panics if out of range).
    ///
    /// # Safety
    /// No other reference to any element of `lo..hi` may be alive while the
    /// returned slice is.
    unsafe fn rows(&self, lo: usize, hi: usize) -> &'a mut [f32] {
        assert!(
            lo <= hi && hi <= self.len,
            "row range {lo}..{hi} of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of a slice exclusively borrowed
        // for 'a; exclusivity of the range is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(lo), hi - lo) }
    }
}

/// FPSG scheduler state for one call.
struct SchedState {
    side: usize,
    user_busy: Vec<bool>,
    item_busy: Vec<bool>,
    /// Per block: taken in this call (empty blocks start taken).
    taken: Vec<bool>,
    /// Per block: its rating count.
    size: Vec<usize>,
    /// Ratings in not-yet-taken blocks, per user block / per item block.
    user_left: Vec<usize>,
    item_left: Vec<usize>,
    /// Non-empty blocks not yet taken.
    untaken: usize,
    /// Blocks taken and not yet released.
    busy: usize,
    /// Per block: SSE reported on release.
    sse: Vec<f64>,
}

struct Scheduler {
    state: Mutex<SchedState>,
    freed: Condvar,
}

impl Scheduler {
    fn new(side: usize, size: Vec<usize>) -> Self {
        let blocks = side * side;
        let mut user_left = vec![0; side];
        let mut item_left = vec![0; side];
        for (k, &n) in size.iter().enumerate() {
            user_left[k / side] += n;
            item_left[k % side] += n;
        }
        let taken: Vec<bool> = size.iter().map(|&n| n == 0).collect();
        let untaken = taken.iter().filter(|&&t| !t).count();
        Scheduler {
            state: Mutex::new(SchedState {
                side,
                user_busy: vec![false; side],
                item_busy: vec![false; side],
                taken,
                size,
                user_left,
                item_left,
                untaken,
                busy: 0,
                sse: vec![0.0; blocks],
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SchedState> {
        // The state is consistent between statements, so a poisoned lock
        // (a panicking kernel) is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a free, untaken block (waiting while every untaken block
    /// conflicts with a busy one); `None` when all blocks have been taken.
    fn take(&self) -> Option<usize> {
        let mut st = self.lock();
        loop {
            if st.untaken == 0 {
                return None;
            }
            if let Some(k) = st.pick() {
                let side = st.side;
                let (ub, ib, n) = (k / side, k % side, st.size[k]);
                st.taken[k] = true;
                st.user_busy[ub] = true;
                st.item_busy[ib] = true;
                st.user_left[ub] -= n;
                st.item_left[ib] -= n;
                st.untaken -= 1;
                st.busy += 1;
                return Some(k);
            }
            // Some block is busy (with none busy every range is free and
            // `pick` succeeds), so a release will wake us.
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn release(&self, k: usize, sse: f64) {
        {
            let mut st = self.lock();
            let side = st.side;
            st.user_busy[k / side] = false;
            st.item_busy[k % side] = false;
            st.busy -= 1;
            st.sse[k] = sse;
        }
        self.freed.notify_all();
    }
}

impl SchedState {
    /// The untaken block with free ranges whose user and item ranges have the
    /// most ratings left (lowest index on ties).
    fn pick(&self) -> Option<usize> {
        let side = self.side;
        let mut best: Option<(usize, usize)> = None;
        for ub in (0..side).filter(|&ub| !self.user_busy[ub]) {
            for ib in (0..side).filter(|&ib| !self.item_busy[ib]) {
                let k = ub * side + ib;
                if self.taken[k] {
                    continue;
                }
                let score = self.user_left[ub] + self.item_left[ib];
                let better = match best {
                    None => true,
                    Some((_, s)) => score > s,
                };
                if better {
                    best = Some((k, score));
                }
            }
        }
        best.map(|(k, _)| k)
    }
}

/// A taken block; released (with its SSE) when dropped.
struct Lease<'a> {
    sched: &'a Scheduler,
    block: usize,
    sse: f64,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.sched.release(self.block, self.sse);
    }
}
