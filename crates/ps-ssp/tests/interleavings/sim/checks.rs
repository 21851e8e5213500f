//! The simulation's checks: at every served read (read guarantee, staleness bound,
//! read-my-writes) and at the end of a run (liveness, application order, final tables).

use proptest::prelude::*;
use ps_ssp::{is_fresh, Staleness};

use super::{acc_delta, shard_of, Outcome, Rows, Sim, WState, ACC};

impl Sim {
    /// Worker `p`'s read at its current clock is served: check the guarantee and the bound.
    pub(super) fn serve_read(&mut self, p: u32) -> Result<(), TestCaseError> {
        let s = self.cfg.staleness;
        let wk = &self.workers[p as usize];
        let c = wk.clock.current();
        // Computed from the contract, independently of the crate under test.
        let required = match s {
            Staleness::Bounded(s) => c.saturating_sub(s),
            Staleness::Unbounded => 0,
        };
        self.reads_served += 1;

        // BOUND: no worker is more than s clocks ahead of the slowest.
        for (q, other) in self.workers.iter().enumerate() {
            prop_assert!(
                other.clock.current() >= required,
                "worker {} read at clock {} (s = {}) while worker {} had completed only {}",
                p,
                c,
                s,
                q,
                other.clock.current()
            );
        }

        // The view: cached rows plus own updates not yet applied when the rows were served.
        let mut view = Rows::new();
        for (shard, entry) in wk.cache.iter().enumerate() {
            prop_assert!(
                is_fresh(entry.complete_through, c, s),
                "stale cache entry used"
            );
            for (cell, v) in &entry.rows {
                *view.entry(*cell).or_insert(0.0) += v;
            }
            for (sh, clock, cell, delta) in &wk.log {
                if *sh as usize == shard && *clock >= entry.own_completed {
                    *view.entry(*cell).or_insert(0.0) += delta;
                }
            }
        }

        // READ GUARANTEE: every update tagged <= c - s - 1 from every worker is present.
        for q in 0..self.cfg.workers {
            for k in 0..required {
                prop_assert_eq!(
                    view.get(&(q, k)).copied(),
                    Some(1.0),
                    "worker {} read at clock {} (s = {}) misses update ({}, {})",
                    p,
                    c,
                    s,
                    q,
                    k
                );
            }
        }
        // Read-my-writes: all of p's own earlier updates are visible.
        for k in 0..c {
            prop_assert_eq!(
                view.get(&(p, k)).copied(),
                Some(1.0),
                "worker {} read at clock {} misses its own update of clock {}",
                p,
                c,
                k
            );
        }
        // Nothing phantom: every visible cell was written, exactly once.
        for (cell, v) in &view {
            if cell.0 == ACC {
                continue;
            }
            prop_assert_eq!(*v, 1.0);
            prop_assert!(cell.1 < self.workers[cell.0 as usize].clock.current());
        }

        self.workers[p as usize].state = WState::Served;
        Ok(())
    }

    pub(super) fn finish(self) -> Result<Outcome, TestCaseError> {
        let cfg = &self.cfg;
        // LIVENESS: everybody reached the final clock, nothing is stuck.
        for (p, w) in self.workers.iter().enumerate() {
            prop_assert_eq!(
                &w.state,
                &WState::Done,
                "deadlock: worker {} stuck at clock {}",
                p,
                w.clock.current()
            );
            prop_assert_eq!(w.clock.current(), cfg.clocks);
        }
        let mut applied = Vec::new();
        let mut tables = Vec::new();
        for (si, sh) in self.shards.iter().enumerate() {
            prop_assert_eq!(sh.clock.pending(), 0);
            prop_assert!(sh.parked.is_empty());
            prop_assert_eq!(sh.clock.min_clock(), cfg.clocks);
            prop_assert_eq!(sh.applied.len() as u64, cfg.clocks * u64::from(cfg.workers));
            // Per worker, batches were applied in clock order.
            for w in 0..cfg.workers {
                let clocks: Vec<u64> = sh
                    .applied
                    .iter()
                    .filter(|(q, _)| *q == w)
                    .map(|(_, c)| *c)
                    .collect();
                prop_assert_eq!(clocks, (0..cfg.clocks).collect::<Vec<_>>());
            }
            if cfg.deterministic {
                let canonical: Vec<(u32, u64)> = (0..cfg.clocks)
                    .flat_map(|c| (0..cfg.workers).map(move |w| (w, c)))
                    .collect();
                prop_assert_eq!(&sh.applied, &canonical);
            }
            // Final table: every cell exactly once, the accumulator (approximately) complete.
            let mut expected_acc = 0.0;
            for q in 0..cfg.workers {
                for k in 0..cfg.clocks {
                    expected_acc += acc_delta(q, k, si as u32);
                    if shard_of((q, k), cfg.shards) as usize == si {
                        prop_assert_eq!(sh.table.get(&(q, k)).copied(), Some(1.0));
                    }
                }
            }
            let acc = sh.table[&(ACC, si as u64)];
            prop_assert!((acc - expected_acc).abs() <= 1e-9 * expected_acc.abs());
            applied.push(sh.applied.clone());
            tables.push(sh.table.iter().map(|(c, v)| (*c, v.to_bits())).collect());
        }
        Ok(Outcome {
            applied,
            tables,
            reads_served: self.reads_served,
            pulls: self.pulls,
        })
    }
}
