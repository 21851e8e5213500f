//! `keep_large_blocks` takes effect: with it, a 40 MiB block (above glibc's 32 MiB ceiling for
//! its adaptive mmap threshold) comes from an arena instead of a mapping of its own. One test in
//! its own binary, so that no other test allocates beside it.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_large_block_comes_from_the_heap() {
    if let Some(v) = ps_cluster::allocator_left_to_user() {
        eprintln!("SKIP a_large_block_comes_from_the_heap: {v} is set, so the setting is not made");
        return;
    }
    ps_cluster::keep_large_blocks();
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
    let before = mapped();
    let block = std::hint::black_box(vec![1u8; 40 << 20]);
    let during = mapped();
    assert_eq!(block[12345], 1);
    drop(block);
    assert!(
        during < before + (32 << 20),
        "the 40 MiB block was mapped on its own: {before} -> {during} bytes mapped"
    );
}
