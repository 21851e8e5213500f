//! Property tests over random interleavings.
//!
//! A small deterministic simulation of workers and shards is driven by proptest-generated
//! scheduling choices: which in-flight message is delivered next (update batches, pulls and pull
//! replies may be reordered arbitrarily) and which worker steps next (one worker may be slow).
//! The simulation checks the SSP read guarantee, the staleness bound, liveness (no deadlock) and,
//! in deterministic mode, that the application order does not depend on the interleaving.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ps_ssp::{is_fresh, ParkedReads, ShardClock, SspError, Staleness, WorkerClock};

/// A cell: (worker, clock) written once by that worker at that clock, or (ACC, shard) for the
/// per-shard accumulator every worker adds to at every clock.
type Cell = (u32, u64);
type Batch = Vec<(Cell, f64)>;
type Rows = BTreeMap<Cell, f64>;

const ACC: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Config {
    workers: u32,
    shards: u32,
    staleness: Staleness,
    deterministic: bool,
    clocks: u64,
    slow: Option<u32>,
}

fn shard_of(cell: Cell, shards: u32) -> u32 {
    if cell.0 == ACC {
        return cell.1 as u32;
    }
    ((u64::from(cell.0) * 7 + cell.1 * 13) % u64::from(shards)) as u32
}

/// Accumulator deltas of very different magnitudes, so that the float sum depends on the order.
fn acc_delta(worker: u32, clock: u64, shard: u32) -> f64 {
    let k = u64::from(worker) * 31 + clock * 17 + u64::from(shard) * 5;
    let mantissa = (k % 97 + 1) as f64 / 3.0;
    mantissa * 10f64.powi(((worker as u64 + clock) % 9) as i32 - 4)
}

/// Scheduling choices: the proptest-generated list first, then a seeded splitmix64 stream.
struct Chooser {
    choices: Vec<u32>,
    pos: usize,
    rng: u64,
}

impl Chooser {
    fn new(choices: Vec<u32>, seed: u64) -> Self {
        Self {
            choices,
            pos: 0,
            rng: seed,
        }
    }

    fn next(&mut self, n: u32) -> u32 {
        assert!(n > 0);
        let v = if let Some(v) = self.choices.get(self.pos) {
            *v
        } else {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u32
        };
        self.pos += 1;
        v % n
    }
}

#[derive(Debug)]
enum Msg {
    Batch {
        shard: u32,
        worker: u32,
        clock: u64,
        batch: Batch,
    },
    Pull {
        shard: u32,
        worker: u32,
        required: u64,
    },
    Reply {
        worker: u32,
        shard: u32,
        rows: Rows,
        complete_through: u64,
        own_completed: u64,
        required: u64,
    },
}

struct Shard {
    clock: ShardClock<Batch>,
    table: Rows,
    /// (worker, required)
    parked: ParkedReads<(u32, u64)>,
    applied: Vec<(u32, u64)>,
}

#[derive(Clone, Debug, Default)]
struct CacheEntry {
    complete_through: u64,
    /// The shard's clock of this worker when the rows were served: own updates of clocks
    /// >= this are not in `rows` and come from the own-update log.
    own_completed: u64,
    rows: Rows,
}

#[derive(Debug, PartialEq, Eq)]
enum WState {
    Idle,
    Waiting { outstanding: BTreeSet<u32> },
    Served,
    Done,
}

struct Worker {
    clock: WorkerClock,
    cache: Vec<CacheEntry>,
    /// Own sent-but-maybe-unapplied updates: (shard, clock, cell, delta).
    log: Vec<(u32, u64, Cell, f64)>,
    state: WState,
}

enum Event {
    Deliver(usize),
    Step(u32),
}

struct Outcome {
    applied: Vec<Vec<(u32, u64)>>,
    tables: Vec<Vec<(Cell, u64)>>,
    reads_served: u64,
    pulls: u64,
}

struct Sim {
    cfg: Config,
    shards: Vec<Shard>,
    workers: Vec<Worker>,
    net: Vec<Msg>,
    reads_served: u64,
    pulls: u64,
}

impl Sim {
    fn new(cfg: Config) -> Self {
        let shards = (0..cfg.shards)
            .map(|_| Shard {
                clock: ShardClock::new(cfg.workers, cfg.deterministic),
                table: Rows::new(),
                parked: ParkedReads::new(),
                applied: Vec::new(),
            })
            .collect();
        let workers = (0..cfg.workers)
            .map(|_| Worker {
                clock: WorkerClock::new(),
                // An empty table is complete through clock 0.
                cache: vec![CacheEntry::default(); cfg.shards as usize],
                log: Vec::new(),
                state: WState::Idle,
            })
            .collect();
        Self {
            cfg,
            shards,
            workers,
            net: Vec::new(),
            reads_served: 0,
            pulls: 0,
        }
    }

    fn events(&self) -> Vec<(Event, u32)> {
        let mut ev: Vec<(Event, u32)> = (0..self.net.len())
            .map(|i| (Event::Deliver(i), 4))
            .collect();
        for (p, w) in self.workers.iter().enumerate() {
            if matches!(w.state, WState::Idle | WState::Served) {
                let weight = if self.cfg.slow == Some(p as u32) {
                    1
                } else {
                    4
                };
                ev.push((Event::Step(p as u32), weight));
            }
        }
        ev
    }

    fn run(mut self, chooser: &mut Chooser) -> Result<Outcome, TestCaseError> {
        let mut steps = 0u64;
        loop {
            let events = self.events();
            if events.is_empty() {
                break;
            }
            steps += 1;
            prop_assert!(steps < 1_000_000, "runaway simulation");
            let total: u32 = events.iter().map(|(_, w)| *w).sum();
            let mut pick = chooser.next(total);
            let mut chosen = None;
            for (e, w) in events {
                if pick < w {
                    chosen = Some(e);
                    break;
                }
                pick -= w;
            }
            match chosen.expect("weighted pick") {
                Event::Deliver(i) => {
                    let msg = self.net.swap_remove(i);
                    self.deliver(msg)?;
                }
                Event::Step(p) => self.step(p, chooser)?,
            }
        }
        self.finish()
    }

    fn reply(&mut self, shard: u32, worker: u32, required: u64) -> Result<(), TestCaseError> {
        let sh = &self.shards[shard as usize];
        let complete_through = sh.clock.min_clock();
        prop_assert!(
            complete_through >= required,
            "pull served before the min clock reached its requirement"
        );
        self.net.push(Msg::Reply {
            worker,
            shard,
            rows: sh.table.clone(),
            complete_through,
            own_completed: sh.clock.worker_clock(worker).expect("known worker"),
            required,
        });
        Ok(())
    }

    fn deliver(&mut self, msg: Msg) -> Result<(), TestCaseError> {
        match msg {
            Msg::Batch {
                shard,
                worker,
                clock,
                batch,
            } => {
                let n = self.cfg.workers;
                let sh = &mut self.shards[shard as usize];
                let min_before = sh.clock.min_clock();
                let released = sh
                    .clock
                    .submit(worker, clock, batch)
                    .map_err(|e| TestCaseError::fail(format!("submit failed: {e}")))?;
                for (w, c, b) in released {
                    for (cell, delta) in b {
                        prop_assert_eq!(shard_of(cell, self.cfg.shards), shard);
                        *sh.table.entry(cell).or_insert(0.0) += delta;
                    }
                    sh.applied.push((w, c));
                }
                // The vector entries match what was applied.
                for w in 0..n {
                    let count = sh.applied.iter().filter(|(q, _)| *q == w).count() as u64;
                    prop_assert_eq!(sh.clock.worker_clock(w), Some(count));
                }
                let min = sh.clock.min_clock();
                prop_assert!(min >= min_before, "min clock went back");
                let ready = sh.parked.release(min);
                for (w, required) in ready {
                    prop_assert!(required <= min);
                    self.reply(shard, w, required)?;
                }
                let sh = &self.shards[shard as usize];
                if let Some(low) = sh.parked.lowest_required() {
                    prop_assert!(low > min, "a satisfiable read stayed parked");
                }
            }
            Msg::Pull {
                shard,
                worker,
                required,
            } => {
                self.pulls += 1;
                let sh = &mut self.shards[shard as usize];
                let min = sh.clock.min_clock();
                if sh.parked.park(required, min, (worker, required)).is_some() {
                    self.reply(shard, worker, required)?;
                }
            }
            Msg::Reply {
                worker,
                shard,
                rows,
                complete_through,
                own_completed,
                required,
            } => {
                let wk = &mut self.workers[worker as usize];
                let entry = &mut wk.cache[shard as usize];
                prop_assert!(complete_through >= entry.complete_through);
                prop_assert!(complete_through >= required);
                *entry = CacheEntry {
                    complete_through,
                    own_completed,
                    rows,
                };
                // Own updates now applied on the shard are in the cached rows.
                wk.log
                    .retain(|(s, c, _, _)| *s != shard || *c >= own_completed);
                let WState::Waiting { outstanding } = &mut wk.state else {
                    return Err(TestCaseError::fail("reply to a worker that is not waiting"));
                };
                prop_assert!(outstanding.remove(&shard), "unexpected reply");
                if outstanding.is_empty() {
                    self.serve_read(worker)?;
                }
            }
        }
        Ok(())
    }

    /// Worker `p`'s read at its current clock is served: check the guarantee and the bound.
    fn serve_read(&mut self, p: u32) -> Result<(), TestCaseError> {
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

    fn step(&mut self, p: u32, chooser: &mut Chooser) -> Result<(), TestCaseError> {
        let s = self.cfg.staleness;
        let nshards = self.cfg.shards;
        let wk = &mut self.workers[p as usize];
        match wk.state {
            WState::Idle => {
                let c = wk.clock.current();
                prop_assert!(c < self.cfg.clocks);
                let required = s.required_min_clock(c);
                // Occasionally refresh everything even if fresh (exercises pulls that are
                // served at once, also under unbounded staleness).
                let refresh = chooser.next(4) == 0;
                let outstanding: BTreeSet<u32> = (0..nshards)
                    .filter(|sh| {
                        refresh || !is_fresh(wk.cache[*sh as usize].complete_through, c, s)
                    })
                    .collect();
                if outstanding.is_empty() {
                    self.serve_read(p)?;
                } else {
                    for &shard in &outstanding {
                        self.net.push(Msg::Pull {
                            shard,
                            worker: p,
                            required,
                        });
                    }
                    self.workers[p as usize].state = WState::Waiting { outstanding };
                }
            }
            WState::Served => {
                let c = wk.clock.current();
                let mut batches: Vec<Batch> = vec![Vec::new(); nshards as usize];
                let own = (p, c);
                batches[shard_of(own, nshards) as usize].push((own, 1.0));
                for sh in 0..nshards {
                    batches[sh as usize].push(((ACC, u64::from(sh)), acc_delta(p, c, sh)));
                }
                for (sh, batch) in batches.iter().enumerate() {
                    for (cell, delta) in batch {
                        wk.log.push((sh as u32, c, *cell, *delta));
                    }
                }
                let ended = wk.clock.tick();
                prop_assert_eq!(ended, c);
                wk.state = if wk.clock.current() == self.cfg.clocks {
                    WState::Done
                } else {
                    WState::Idle
                };
                for (sh, batch) in batches.into_iter().enumerate() {
                    self.net.push(Msg::Batch {
                        shard: sh as u32,
                        worker: p,
                        clock: c,
                        batch,
                    });
                }
            }
            _ => return Err(TestCaseError::fail("stepping a worker that cannot step")),
        }
        Ok(())
    }

    fn finish(self) -> Result<Outcome, TestCaseError> {
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

fn staleness_strategy() -> impl Strategy<Value = Staleness> {
    prop_oneof![
        Just(Staleness::Bounded(0)),
        Just(Staleness::Bounded(1)),
        Just(Staleness::Bounded(2)),
        Just(Staleness::Unbounded),
    ]
}

prop_compose! {
    fn config_strategy()(
        workers in 2u32..=4,
        shards in 1u32..=3,
        staleness in staleness_strategy(),
        deterministic in any::<bool>(),
        clocks in 2u64..=6,
        slow in proptest::option::of(0u32..4),
    ) -> Config {
        Config { workers, shards, staleness, deterministic, clocks, slow: slow.filter(|s| *s < workers) }
    }
}

fn choices_strategy() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random interleavings: read guarantee, staleness bound, per-worker clock order, liveness.
    #[test]
    fn ssp_guarantee_bound_and_liveness(
        cfg in config_strategy(),
        choices in choices_strategy(),
        seed in any::<u64>(),
    ) {
        let expected_reads = cfg.clocks * u64::from(cfg.workers);
        let out = Sim::new(cfg).run(&mut Chooser::new(choices, seed))?;
        prop_assert_eq!(out.reads_served, expected_reads);
    }

    /// Deterministic mode: two different delivery interleavings give the same application order
    /// per shard, and bit-identical tables.
    #[test]
    fn deterministic_mode_is_interleaving_independent(
        cfg in config_strategy(),
        choices_a in choices_strategy(),
        seed_a in any::<u64>(),
        choices_b in choices_strategy(),
        seed_b in any::<u64>(),
    ) {
        let cfg = Config { deterministic: true, ..cfg };
        let a = Sim::new(cfg.clone()).run(&mut Chooser::new(choices_a, seed_a))?;
        let b = Sim::new(cfg).run(&mut Chooser::new(choices_b, seed_b))?;
        prop_assert_eq!(a.applied, b.applied);
        prop_assert_eq!(a.tables, b.tables);
    }
}

/// Staleness 0 with a slow worker really blocks: fast workers must pull and wait.
#[test]
fn bsp_with_a_slow_worker_needs_pulls() {
    let cfg = Config {
        workers: 3,
        shards: 2,
        staleness: Staleness::Bounded(0),
        deterministic: false,
        clocks: 5,
        slow: Some(1),
    };
    let out = Sim::new(cfg)
        .run(&mut Chooser::new(Vec::new(), 7))
        .expect("simulation");
    assert_eq!(out.reads_served, 15);
    assert!(out.pulls > 0);
}

// ---------------------------------------------------------------------------------------------
// ShardClock against invariants, with random submits (including invalid ones) and evictions.

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
