//! The FPSG scheduler: hands each thread a block whose user and item ranges no
//! other thread holds, and the shared factor rows those blocks write.

use std::marker::PhantomData;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A factor matrix shared by the block threads.
///
/// Invariant (upheld by [`Scheduler`]): at any time each row range handed out
/// by [`SharedRows::rows`] is used by one thread only, and ranges in use are
/// disjoint.
pub(super) struct SharedRows<'a> {
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
    pub(super) fn new(rows: &'a mut [f32]) -> Self {
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
    pub(super) unsafe fn rows(&self, lo: usize, hi: usize) -> &'a mut [f32] {
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
pub(super) struct SchedState {
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
    pub(super) untaken: usize,
    /// Blocks taken and not yet released.
    pub(super) busy: usize,
    /// Per block: SSE reported on release.
    pub(super) sse: Vec<f64>,
}

pub(super) struct Scheduler {
    state: Mutex<SchedState>,
    freed: Condvar,
}

impl Scheduler {
    pub(super) fn new(side: usize, size: Vec<usize>) -> Self {
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

    pub(super) fn lock(&self) -> MutexGuard<'_, SchedState> {
        // The state is consistent between statements, so a poisoned lock
        // (a panicking kernel) is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a free, untaken block (waiting while every untaken block
    /// conflicts with a busy one); `None` when all blocks have been taken.
    pub(super) fn take(&self) -> Option<usize> {
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
pub(super) struct Lease<'a> {
    pub(super) sched: &'a Scheduler,
    pub(super) block: usize,
    pub(super) sse: f64,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.sched.release(self.block, self.sse);
    }
}
