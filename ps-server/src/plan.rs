//! When a shard checkpoints, and how much of each worker's history its checkpoints cover.
//! Pure bookkeeping: no I/O (the writer is `checkpointer.rs`).
//!
//! A checkpoint is due each time the shard's min clock reaches a multiple of `every`. Once a
//! written checkpoint is durable its clock vector is remembered; a worker may forget its own
//! batches below what the *oldest* kept checkpoint holds of it, and only once `keep` of them
//! exist: should the newest file be torn, the shard falls back to an older one, and the workers
//! still hold every batch that one lacks.

use std::collections::VecDeque;

#[derive(Debug, Clone, Default)]
pub struct CheckpointPlan {
    every: u64,
    keep: usize,
    /// The min clock at which the next checkpoint is due.
    next: u64,
    /// Per-worker clocks of the durable checkpoints, oldest first (at most `keep`).
    durable: VecDeque<Vec<u64>>,
}

impl CheckpointPlan {
    /// A checkpoint every `every` clocks (0: never), `keep` kept (at least 1).
    pub fn new(every: u64, keep: u32) -> CheckpointPlan {
        CheckpointPlan {
            every,
            keep: keep.max(1) as usize,
            next: every,
            durable: VecDeque::new(),
        }
    }

    /// Resuming from a checkpoint taken at `clock` that holds `worker_clocks`.
    pub fn resumed(mut self, clock: u64, worker_clocks: Vec<u64>) -> CheckpointPlan {
        self.taken(clock);
        self.durable.push_back(worker_clocks);
        self
    }

    pub fn enabled(&self) -> bool {
        self.every > 0
    }

    /// Whether a checkpoint is due at min clock `min_clock`.
    pub fn due(&self, min_clock: u64) -> bool {
        self.every > 0 && min_clock >= self.next
    }

    /// A checkpoint was taken at `min_clock`: the next is due at the following multiple.
    pub fn taken(&mut self, min_clock: u64) {
        if let Some(q) = min_clock.checked_div(self.every) {
            self.next = (q + 1) * self.every;
        }
    }

    /// A checkpoint holding `worker_clocks` is durable on disk.
    pub fn durable(&mut self, worker_clocks: Vec<u64>) {
        self.durable.push_back(worker_clocks);
        while self.durable.len() > self.keep {
            self.durable.pop_front();
        }
    }

    /// How many of worker `w`'s clocks every fallback the shard could restore holds.
    pub fn covered(&self, w: u32) -> u64 {
        if self.durable.len() < self.keep {
            return 0;
        }
        self.durable
            .front()
            .and_then(|c| c.get(w as usize).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_multiples_and_covered_by_the_oldest_kept() {
        let mut p = CheckpointPlan::new(5, 2);
        assert!(!p.due(4) && p.due(5) && p.due(7));
        p.taken(7);
        assert!(!p.due(9) && p.due(10));
        p.durable(vec![7, 9]);
        assert_eq!(
            p.covered(1),
            0,
            "one checkpoint of two kept: a torn file has no fallback"
        );
        p.durable(vec![10, 12]);
        assert_eq!((p.covered(0), p.covered(1)), (7, 9));
        p.durable(vec![15, 15]);
        assert_eq!((p.covered(0), p.covered(1), p.covered(5)), (10, 12, 0));
        assert!(!CheckpointPlan::new(0, 2).due(100));
        let r = CheckpointPlan::new(5, 1).resumed(12, vec![12, 13]);
        assert!(!r.due(14) && r.due(15));
        assert_eq!(r.covered(1), 13);
    }
}
