//! The fast CPU engine for matrix factorisation: a rank-vectorised SGD kernel
//! and, with several threads, FPSG/LIBMF-style blocked parallel SGD.

mod grid;
mod kernel;
mod schedule;

use super::compute::MfCompute;
use super::data::Rating;
use crate::error::ComputeError;
use grid::Grid;
use kernel::sgd_rows;

/// With `threads >= 2`, a call with fewer ratings than this runs the
/// single-thread kernel (in the given order, exactly as with `threads = 1`):
/// below it, bucketing the ratings and spawning threads cost more than they
/// save. Larger calls use `min(threads, ratings / 2048)` threads, so that
/// each thread gets at least 2048 ratings.
pub const PARALLEL_MIN_RATINGS: usize = 2 * MIN_RATINGS_PER_THREAD;

/// See [`PARALLEL_MIN_RATINGS`].
const MIN_RATINGS_PER_THREAD: usize = 2048;

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
