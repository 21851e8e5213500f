//! The deterministic SSP simulation: cells, messages, shards, workers and the scheduler that
//! delivers messages and steps workers in the order a `Chooser` picks.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ps_ssp::{is_fresh, ParkedReads, ShardClock, Staleness, WorkerClock};

#[path = "sim/checks.rs"]
mod checks;

/// A cell: (worker, clock) written once by that worker at that clock, or (ACC, shard) for the
/// per-shard accumulator every worker adds to at every clock.
type Cell = (u32, u64);
type Batch = Vec<(Cell, f64)>;
type Rows = BTreeMap<Cell, f64>;

const ACC: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) workers: u32,
    pub(crate) shards: u32,
    pub(crate) staleness: Staleness,
    pub(crate) deterministic: bool,
    pub(crate) clocks: u64,
    pub(crate) slow: Option<u32>,
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
pub(crate) struct Chooser {
    choices: Vec<u32>,
    pos: usize,
    rng: u64,
}

impl Chooser {
    pub(crate) fn new(choices: Vec<u32>, seed: u64) -> Self {
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

pub(crate) struct Outcome {
    pub(crate) applied: Vec<Vec<(u32, u64)>>,
    pub(crate) tables: Vec<Vec<(Cell, u64)>>,
    pub(crate) reads_served: u64,
    pub(crate) pulls: u64,
}

pub(crate) struct Sim {
    cfg: Config,
    shards: Vec<Shard>,
    workers: Vec<Worker>,
    net: Vec<Msg>,
    reads_served: u64,
    pulls: u64,
}

impl Sim {
    pub(crate) fn new(cfg: Config) -> Self {
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

    pub(crate) fn run(mut self, chooser: &mut Chooser) -> Result<Outcome, TestCaseError> {
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
}
