//! Fuzzing of every decoder that reads bytes from the network or disk: the frame header and
//! frame body, the control messages, every codec payload, varints and the key cache of
//! `ps-proto`, the stream of frames `ps-transport` reads, and the data loaders of `ps-apps`.
//!
//! [`targets`] lists the targets (shared with the regression tests of the main workspace),
//! [`seeds`] makes their seed corpus with the project's own encoders, [`alloc`] counts the
//! heap of each input and [`check`] runs one input under the harness's rules (no panic, no
//! more than [`targets::ALLOC_CAP`] bytes of heap beyond what the input justifies, no more
//! than [`targets::TIME_LIMIT_S`] seconds of CPU time). The binaries: `ps-fuzz` (libFuzzer, built by
//! `fuzz/run.sh` with coverage instrumentation) and `ps-fuzz-tool` (writes the corpus,
//! replays files).

pub mod alloc;
pub mod seeds;
pub mod targets;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

use std::time::Duration;
use targets::{Target, ALLOC_CAP, ALLOC_HARD, TIME_LIMIT_S};

/// CPU time (user and system) of the calling thread: what an input costs, whatever else the
/// machine is running.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs one input through a target and checks its cost; panics (a finding) when the decoder
/// panics, holds more heap than the input justifies or spends more than the time limit of CPU.
pub fn check(t: &Target, data: &[u8]) {
    let cap = ALLOC_CAP.saturating_add((t.justify)(data));
    let window = alloc::Window::begin(ALLOC_HARD.max(cap));
    let start = thread_cpu();
    (t.run)(data);
    let cpu = thread_cpu().saturating_sub(start);
    let peak = window.peak();
    drop(window);
    if peak > cap {
        panic!(
            "over-allocation: target {} held {peak} bytes of heap for a {}-byte input (cap {cap})",
            t.name,
            data.len()
        );
    }
    if cpu > Duration::from_secs(TIME_LIMIT_S) {
        panic!(
            "hang: target {} spent {cpu:?} of CPU on a {}-byte input (limit {TIME_LIMIT_S} s)",
            t.name,
            data.len()
        );
    }
}
