//! `ShardClock` alone against a model of its invariants, with random submits (including
//! invalid ones) and evictions.

use std::collections::BTreeSet;

use proptest::prelude::*;
use ps_ssp::{ShardClock, SspError};

#[derive(Clone, Debug)]
enum Op {
    Submit { worker: u32, clock: u64 },
    Evict { worker: u32 },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u32..5, 0u64..6).prop_map(|(worker, clock)| Op::Submit { worker, clock }),
        1 => (0u32..5).prop_map(|worker| Op::Evict { worker }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shard_clock_invariants(
        workers in 1u32..=4,
        deterministic in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(), 0..80),
    ) {
        let n = workers as usize;
        let mut sc: ShardClock<(u32, u64)> = ShardClock::new(workers, deterministic);
        // Model: batches held per worker, released per worker, liveness.
        let mut held: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); n];
        let mut released: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut live = vec![true; n];
        let mut all_released: Vec<(u32, u64)> = Vec::new();
        for op in ops {
            let before: Vec<Option<u64>> = (0..workers + 1).map(|w| sc.worker_clock(w)).collect();
            let (min_before, pending_before) = (sc.min_clock(), sc.pending());
            let result = match op {
                Op::Submit { worker, clock } => sc.submit(worker, clock, (worker, clock)),
                Op::Evict { worker } => sc.evict(worker),
            };
            match (&op, result) {
                (_, Err(e)) => {
                    // The error is the right one, and nothing changed.
                    let expected = match op {
                        Op::Submit { worker, clock } => {
                            let w = worker as usize;
                            if worker >= workers {
                                SspError::UnknownWorker { worker, num_workers: workers }
                            } else if !live[w] {
                                SspError::EvictedWorker { worker }
                            } else if clock < released[w].len() as u64 {
                                SspError::StaleClock { worker, clock, completed: released[w].len() as u64 }
                            } else {
                                prop_assert!(held[w].contains(&clock));
                                SspError::DuplicateClock { worker, clock }
                            }
                        }
                        Op::Evict { worker } => {
                            prop_assert!(worker >= workers);
                            SspError::UnknownWorker { worker, num_workers: workers }
                        }
                    };
                    prop_assert_eq!(e, expected);
                    let after: Vec<Option<u64>> = (0..workers + 1).map(|w| sc.worker_clock(w)).collect();
                    prop_assert_eq!(after, before);
                    prop_assert_eq!(sc.min_clock(), min_before);
                    prop_assert_eq!(sc.pending(), pending_before);
                    continue;
                }
                (Op::Submit { worker, clock }, Ok(out)) => {
                    prop_assert!(*worker < workers && live[*worker as usize]);
                    prop_assert!(held[*worker as usize].insert(*clock));
                    if !deterministic {
                        prop_assert!(out.iter().all(|(w, _, _)| w == worker));
                    }
                    for (w, c, b) in out {
                        prop_assert_eq!(b, (w, c), "the batch travels with its ids");
                        prop_assert!(held[w as usize].remove(&c), "released a batch never held");
                        released[w as usize].push(c);
                        all_released.push((w, c));
                    }
                }
                (Op::Evict { worker }, Ok(out)) => {
                    prop_assert!(*worker < workers);
                    live[*worker as usize] = false;
                    held[*worker as usize].clear();
                    prop_assert!(deterministic || out.is_empty());
                    for (w, c, b) in out {
                        prop_assert_eq!(b, (w, c));
                        prop_assert!(w != *worker);
                        prop_assert!(held[w as usize].remove(&c));
                        released[w as usize].push(c);
                        all_released.push((w, c));
                    }
                }
            }
            // Invariants after every accepted operation.
            prop_assert_eq!(sc.pending(), held.iter().map(BTreeSet::len).sum::<usize>());
            for w in 0..n {
                // Per worker: released in clock order, as a contiguous prefix from 0.
                let prefix: Vec<u64> = (0..released[w].len() as u64).collect();
                prop_assert_eq!(&released[w], &prefix);
                prop_assert_eq!(sc.worker_clock(w as u32), Some(released[w].len() as u64));
                prop_assert_eq!(sc.is_live(w as u32), Some(live[w]));
                // Nothing releasable is held back (non-deterministic mode).
                if live[w] && !deterministic {
                    prop_assert!(!held[w].contains(&(released[w].len() as u64)));
                }
            }
            let live_min = (0..n).filter(|w| live[*w]).map(|w| released[w].len() as u64).min();
            if let Some(m) = live_min {
                prop_assert_eq!(sc.min_clock(), m);
            }
            prop_assert!(sc.min_clock() >= min_before, "min clock went back");
            if deterministic {
                // Whole clocks in ascending worker id; live workers in lock step; maximal.
                prop_assert!(all_released.windows(2).all(|p| (p[0].1, p[0].0) < (p[1].1, p[1].0)));
                if let Some(m) = live_min {
                    for w in (0..n).filter(|w| live[*w]) {
                        prop_assert_eq!(released[w].len() as u64, m);
                    }
                    prop_assert!(!(0..n).filter(|w| live[*w]).all(|w| held[w].contains(&m)));
                }
            }
        }
    }
}
