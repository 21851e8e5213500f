//! Work cut into parts run on scoped threads, each taking the next part as it finishes one:
//! the built-in data sets' generators, an LDA worker's state and its log-likelihood.
//!
//! [`memory_available`] asks the OS how much memory is left, for the engines that hold a copy
//! of their counts per thread.
//!
//! The callers cut their work into parts that do not depend on the number of threads (a
//! generator's chunks of users, documents or samples each draw from their own RNG seeded by the
//! spec's seed and the chunk's or item's index), so their output is the same whatever the number
//! of threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The threads a generator uses by default: the machine's parallelism.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bytes this process may still allocate, as far as the OS says: Linux's `MemAvailable`, or less
/// where a cgroup (v2) memory limit leaves less. `None` where neither can be read.
pub fn memory_available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let system = read("/proc/meminfo").and_then(|t| meminfo_available(&t));
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(current)) => cgroup_left(&max, &current),
        _ => None,
    };
    match (system, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// What a cgroup's `memory.max` (a byte count, or `max` for no limit) leaves above its
/// `memory.current`.
fn cgroup_left(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// `f(0), ..., f(n - 1)` in order, computed on up to `threads` threads.
pub fn map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, f(i)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a generator thread panicked"))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Calls `f(i, part_i)` for every part of `out` cut at `ends` (part `i` is
/// `out[ends[i - 1]..ends[i]]`, part 0 starts at 0), on up to `threads` threads.
///
/// # Panics
/// If `ends` is not ascending or its last entry is not `out.len()` (caller bug).
pub fn fill<T: Send>(
    out: &mut [T],
    ends: &[usize],
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert_eq!(ends.last().copied().unwrap_or(0), out.len(), "fill: ends");
    let mut parts = Vec::with_capacity(ends.len());
    let mut rest = out;
    let mut at = 0;
    for (i, &end) in ends.iter().enumerate() {
        let (part, tail) = rest.split_at_mut(end - at);
        parts.push((i, part));
        rest = tail;
        at = end;
    }
    let threads = threads.clamp(1, parts.len().max(1));
    parts.reverse(); // popped from the back: part 0 first
    let queue = Mutex::new(parts);
    let work = || loop {
        let next = queue.lock().expect("queue").pop();
        match next {
            Some((i, part)) => f(i, part),
            None => return,
        }
    };
    if threads == 1 {
        work();
        return;
    }
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(work);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_whatever_the_threads() {
        let one = map(100, 1, |i| i * i);
        assert_eq!(one, (0..100).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(map(100, 7, |i| i * i), one);
        assert!(map(0, 4, |i| i).is_empty());
    }

    #[test]
    fn fill_hands_out_each_part_once() {
        let mut out = vec![0usize; 10];
        fill(&mut out, &[3, 3, 7, 10], 3, |i, part| {
            part.iter_mut().for_each(|x| *x = i + 1)
        });
        assert_eq!(out, [1, 1, 1, 3, 3, 3, 3, 4, 4, 4]);
    }

    #[test]
    fn memory_is_read_from_meminfo_and_the_cgroup() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n\
                       MemAvailable:   20000000 kB\nBuffers: 1 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
        assert_eq!(meminfo_available("MemAvailable: lots kB\n"), None);
        assert_eq!(meminfo_available("MemAvailable: 5 MB\n"), None);
        assert_eq!(cgroup_left("max\n", "100\n"), None);
        assert_eq!(cgroup_left("1000\n", "300\n"), Some(700));
        assert_eq!(cgroup_left("1000", "3000"), Some(0));
    }
}
