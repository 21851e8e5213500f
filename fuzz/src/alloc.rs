//! A counting global allocator: live heap bytes, the peak since an input began, and a hard
//! limit past which allocations fail (the process then aborts with "memory allocation of N
//! bytes failed", which the runner reports as an over-allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Wraps the system allocator; installed as the global allocator of both binaries.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn reserve(n: usize) -> bool {
    let now = LIVE.fetch_add(n, Relaxed).saturating_add(n);
    if now > LIMIT.load(Relaxed) {
        LIVE.fetch_sub(n, Relaxed);
        return false;
    }
    PEAK.fetch_max(now, Relaxed);
    true
}

fn release(n: usize) {
    LIVE.fetch_sub(n, Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same layout; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        // Count the new block while the old one is still live: that is what the heap holds.
        if !reserve(new_size) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            release(new_size);
        } else {
            release(old);
        }
        p
    }
}

/// One input's allocation window: created before the decoder runs, read after it.
pub struct Window {
    base: usize,
}

impl Window {
    /// Starts counting the peak from the current live bytes; allocations that would take the
    /// heap more than `hard` bytes above it fail.
    pub fn begin(hard: usize) -> Window {
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        LIMIT.store(base.saturating_add(hard), Relaxed);
        Window { base }
    }

    /// The most heap bytes held above the start at any moment since [`Window::begin`].
    pub fn peak(&self) -> usize {
        PEAK.load(Relaxed).saturating_sub(self.base)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        LIMIT.store(usize::MAX, Relaxed);
    }
}
