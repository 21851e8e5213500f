//! How the process's allocator treats the large blocks a clock makes and drops.
//!
//! glibc's `malloc` serves every block above its mmap threshold (which adapts, but never above
//! 32 MiB on 64-bit) with a mapping of its own and unmaps it on `free`, so the next clock's block
//! of the same size is fresh memory again: the kernel faults in and zeroes every page before the
//! first write. An LDA worker at K 1,000 makes and drops blocks of 35-100 MB each clock (its
//! delta's entries, their flat indices and values, the unpacked image), and on the 2-core
//! machine those page faults were 40-70 ms of its 0.27-0.31 s of host work per clock.
//! [`keep_large_blocks`] has blocks served from the heap instead, and freed memory kept for
//! reuse (`M_MMAP_MAX` 0, `M_TRIM_THRESHOLD` 2 GiB): every block the main thread allocates (where
//! a worker runs its session), and other threads' blocks up to their arena's 64 MiB heaps
//! (glibc still maps larger ones there). The process's peak memory was 4-10% higher on the LDA
//! jobs measured.
//!
//! It is a no-op off glibc, and where the user set `MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`
//! or `PS_SYSTEM_MALLOC` (to keep glibc's own behaviour).

/// The variables by which a user keeps glibc's own behaviour.
const USER_VARIABLES: [&str; 3] = [
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "PS_SYSTEM_MALLOC",
];

/// The first of [`USER_VARIABLES`] that is set, if any: then [`keep_large_blocks`] changes
/// nothing.
pub fn allocator_left_to_user() -> Option<&'static str> {
    USER_VARIABLES
        .into_iter()
        .find(|v| std::env::var_os(v).is_some())
}

/// Sets the process's allocator to keep large blocks (see the module docs). Call it before the
/// job allocates anything large.
pub fn keep_large_blocks() {
    if allocator_left_to_user().is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; it is called before the job
        // starts its threads' large allocations, and any block allocated before stays valid.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_MAX, 0),
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX),
            )
        };
        if mmap != 1 || trim != 1 {
            tracing::debug!(
                "mallopt refused a setting: M_MMAP_MAX {mmap}, M_TRIM_THRESHOLD {trim}"
            );
        }
    }
}
