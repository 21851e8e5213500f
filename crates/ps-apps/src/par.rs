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
/// where the process's memory cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`) leaves
/// less. `None` where none of them can be read.
pub fn memory_available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut left = read("/proc/meminfo").and_then(|t| meminfo_available(&t));
    let own = read("/proc/self/cgroup").unwrap_or_default();
    for (limit, usage) in cgroup_files(&own) {
        if let (Some(max), Some(current)) = (read(&limit), read(&usage)) {
            if let Some(b) = cgroup_left(&max, &current) {
                left = Some(left.map_or(b, |a| a.min(b)));
            }
        }
    }
    left
}

/// The (limit, usage) files of the memory cgroups that may bound this process: the root of
/// each hierarchy as a container sees it, and the process's own group named in
/// `/proc/self/cgroup` (`proc_cgroup`), for cgroup v2 and v1.
fn cgroup_files(proc_cgroup: &str) -> Vec<(String, String)> {
    let v2 = |dir: &str| (format!("{dir}/memory.max"), format!("{dir}/memory.current"));
    let v1 = |dir: &str| {
        (
            format!("{dir}/memory.limit_in_bytes"),
            format!("{dir}/memory.usage_in_bytes"),
        )
    };
    let mut files = vec![v2("/sys/fs/cgroup"), v1("/sys/fs/cgroup/memory")];
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if path.is_empty() || path.contains("..") {
            continue;
        }
        if controllers.is_empty() {
            files.push(v2(&format!("/sys/fs/cgroup{path}")));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(v1(&format!("/sys/fs/cgroup/memory{path}")));
        }
    }
    files
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

/// What a cgroup's limit (a byte count, or `max` for none; v1 writes a huge count instead) leaves
/// above its usage.
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
        let own = "12:memory:/docker/abc\n4:cpu,cpuacct:/x\n0::/user.slice/job\n1:pids:/\n";
        let files = cgroup_files(own);
        let has = |f: &str| files.iter().any(|(limit, _)| limit == f);
        assert!(has("/sys/fs/cgroup/memory.max"));
        assert!(has("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
        assert!(has(
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"
        ));
        assert!(has("/sys/fs/cgroup/user.slice/job/memory.max"));
        assert_eq!(files.len(), 4, "{files:?}");
        assert_eq!(cgroup_files("0::/\n3:memory:/\n").len(), 2);
        assert_eq!(cgroup_files("0::/../x\n").len(), 2);
    }
}
