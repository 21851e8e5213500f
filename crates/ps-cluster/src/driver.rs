//! The worker's clock loop, the same for every app: per clock, read the rows the session asks
//! for (streamed into it shard by shard), run the clock into the client's pending update, tell
//! the client which rows the next clock reads (so its prefetch pulls those), and end the clock;
//! then the final read and evaluation. Fault and straggler injection live here too.

use crate::host_time::{timed, unblocked, HostTimes};
use anyhow::{Context, Result};
use ps_apps::app::{DeltaSink, DynApp, DynSession, Engines, Rejoin, TableRows, WorkerContext};
use ps_apps::SinkError;
use ps_client::{ClientError, PsClient, Run, Worker};
use ps_proto::{Done, PushPlan};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// An injected failure of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub worker: u32,
    pub clock: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Crash,
    Hang,
}

/// Transient stragglers: each (worker, clock) is, with probability `prob`, `factor` times as
/// slow as it computed, drawn from a stream seeded by `(seed, worker, clock)` so a run is
/// reproducible. The SSP paper's "occasional, random slowdowns in different machines".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Straggle {
    pub prob: f64,
    pub factor: f64,
    pub seed: u64,
}

impl Straggle {
    /// The extra time worker `w` takes on `clock`, whose compute took `compute`.
    pub fn delay(&self, w: u32, clock: u64, compute: Duration) -> Duration {
        let h = ps_apps::seed::mix64(
            ps_apps::seed::mix64(self.seed ^ 0x57A6_61E5) ^ (u64::from(w) << 40) ^ clock,
        );
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.prob {
            let extra = compute.as_secs_f64() * (self.factor - 1.0).max(0.0);
            Duration::try_from_secs_f64(extra).unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        }
    }
}

/// Straggler and fault injection, carried to the workers in the job spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Chaos {
    pub slow_worker: Option<(u32, u64)>,
    pub fault: Option<Fault>,
    #[serde(default)]
    pub straggle: Option<Straggle>,
}

impl Chaos {
    /// Sleeps or fails as asked before worker `w` starts clock `clock`.
    pub fn before_clock(&self, w: u32, clock: u64) {
        if let Some((sw, ms)) = self.slow_worker {
            if sw == w {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        if let Some(f) = self.fault.filter(|f| (f.worker, f.clock) == (w, clock)) {
            inject(f);
        }
    }
}

/// Makes this worker fail as asked: exit abruptly, or stop dead while its process stays alive.
fn inject(f: Fault) {
    match f.kind {
        FaultKind::Crash => {
            eprintln!("worker {}: injected crash at clock {}", f.worker, f.clock);
            std::process::exit(3);
        }
        FaultKind::Hang => {
            eprintln!("worker {}: injected hang at clock {}", f.worker, f.clock);
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status();
        }
    }
}

/// A session's update goes straight into the client's pending update of the clock; `secs` adds
/// up the time of its calls.
struct ClientSink<'a> {
    client: &'a mut PsClient,
    secs: f64,
}

fn refused(table: u32, e: ClientError) -> SinkError {
    SinkError {
        table,
        reason: e.to_string(),
    }
}

impl DeltaSink for ClientSink<'_> {
    fn rows(&mut self, table: u32, keys: &[u64]) -> Result<&mut [f32], SinkError> {
        // The session writes into the rows after this returns: its own time, not the sink's.
        let started = Instant::now();
        let rows = self.client.rows_mut(table, keys);
        self.secs += started.elapsed().as_secs_f64();
        rows.map_err(|e| refused(table, e))
    }

    fn entries(
        &mut self,
        table: u32,
        keys: Vec<u64>,
        at: Vec<u64>,
        values: Vec<f32>,
    ) -> Result<(), SinkError> {
        let client = &mut *self.client;
        timed(&mut self.secs, || {
            client
                .table(table)
                .and_then(|mut t| t.push_entries(keys, at, values))
        })
        .map_err(|e| refused(table, e))
    }

    fn encoded(
        &mut self,
        table: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Result<(), SinkError> {
        let client = &mut *self.client;
        timed(&mut self.secs, || {
            client
                .table(table)
                .and_then(|mut t| t.push_encoded(keys, wire_id, payload))
        })
        .map_err(|e| refused(table, e))
    }

    fn entries_blocks(
        &mut self,
        table: u32,
        keys: &[u64],
    ) -> Result<Option<Vec<std::ops::Range<usize>>>, SinkError> {
        let client = &mut *self.client;
        timed(&mut self.secs, || {
            client.table(table).and_then(|t| t.entries_blocks(keys))
        })
        .map_err(|e| refused(table, e))
    }

    fn push_plan(&mut self, table: u32, keys: &[u64]) -> Result<Option<PushPlan>, SinkError> {
        self.client
            .table(table)
            .and_then(|t| t.push_plan(keys))
            .map(Some)
            .map_err(|e| refused(table, e))
    }
}

/// Reads `reads` into the session, each shard's run as it arrives; `synced` reads are complete
/// through every worker's clocks so far (the final model). Tables the session takes sparse
/// arrive by their entries where the cache holds them so. Returns the seconds spent in the
/// session's loads.
fn read(
    client: &mut PsClient,
    session: &mut dyn DynSession,
    reads: &[TableRows],
    synced: bool,
) -> Result<f64> {
    let mut load_s = 0.0;
    for r in reads {
        let mut t = client.table(r.table)?;
        if session.takes_sparse(r.table) {
            t.read_runs_into(&r.rows, synced, |first, keys, run| -> Result<()> {
                timed(&mut load_s, || match run {
                    Run::Dense(values) => session.load(r.table, first, keys, values),
                    Run::Sparse(rows) => session.load_sparse(r.table, first, keys, rows),
                })?;
                Ok(())
            })?;
            continue;
        }
        let sink = |first: usize, keys: &[u64], values: &[f32]| -> Result<()> {
            timed(&mut load_s, || session.load(r.table, first, keys, values))?;
            Ok(())
        };
        if synced {
            t.read_synced_into(&r.rows, sink)?;
        } else {
            t.read_into(&r.rows, sink)?;
        }
    }
    Ok(load_s)
}

/// The final sum of the seconds the straggler model added, over workers.
pub const INJECTED_DELAY: &str = "injected_delay_s";
/// Summed over workers: the magnitude of the updates a lossy push codec had not sent when the
/// job ended (its error-feedback residuals), dropped before the final figures.
pub const UNSENT_L1: &str = "unsent_residual_l1";

/// Runs one worker's whole job: `app`'s session on `engines`, under the worker's assignment;
/// `state_dir` is where it keeps what a replay after its death needs (`--state-dir`).
pub fn run_session(
    worker: &mut Worker,
    app: &dyn DynApp,
    engines: &dyn Engines,
    state_dir: Option<&Path>,
) -> Result<Done> {
    let assign = worker.assignment().clone();
    let (w, clocks) = (assign.id, assign.job.clocks);
    let chaos: Chaos = if assign.job.driver.is_null() {
        Chaos::default()
    } else {
        serde_json::from_value(assign.job.driver.clone()).context("fault injection settings")?
    };
    let rejoin = match assign.recovery.on_worker_failure {
        ps_proto::WorkerFailure::Wait => Rejoin::Replay {
            state_dir,
            run: assign.recovery.job_nonce,
        },
        _ => Rejoin::Never,
    };
    let ctx = WorkerContext {
        worker: w,
        workers: assign.num_workers,
        engines,
        rejoin,
    };
    let mut session = app.session(&assign.job.settings, &ctx)?;
    let client = worker.client();
    // Set-up is not clock 0's compute.
    client.start_clock();
    let mut injected = Duration::ZERO;
    for clock in 0..clocks {
        chaos.before_clock(w, clock);
        let (reading, blocked) = (Instant::now(), client.blocked_so_far());
        let reads = session.reads(clock)?;
        let mut host = HostTimes {
            load: read(client, session.as_mut(), &reads, false)?,
            ..HostTimes::default()
        };
        host.read = unblocked(reading, client.blocked_so_far() - blocked);
        if clock + 1 == clocks {
            // Said before the clock's update is written: an engine that encodes its own delta
            // plans the last clock (everything held back goes) from the client's push plan.
            client.mark_last_clock();
        }
        let started = Instant::now();
        let mut sink = ClientSink { client, secs: 0.0 };
        let mut figures = session
            .run_clock(clock, &mut sink)
            .with_context(|| format!("clock {clock}"))?;
        (host.step, host.sink) = (started.elapsed().as_secs_f64(), sink.secs);
        if let Some(s) = &chaos.straggle {
            let extra = s.delay(w, clock, started.elapsed());
            std::thread::sleep(extra);
            injected += extra;
        }
        if clock + 1 < clocks && assign.job.overlap {
            let (asking, blocked) = (Instant::now(), client.blocked_so_far());
            for r in session.reads(clock + 1)? {
                client.table(r.table)?.prefetch_next(r.rows)?;
            }
            host.prefetch = unblocked(asking, client.blocked_so_far() - blocked);
        }
        host.add_to(&mut figures);
        client.set_figures(&figures)?;
        client.clock()?;
        session.durable(client.durable_clocks())?;
    }
    client.flush()?;
    // The final figures are of the shards' model: what a lossy codec never sent is gone.
    let unsent = client.drop_unsent();
    let reads = session.final_reads()?;
    read(client, session.as_mut(), &reads, true)?;
    let (mut sums, facts) = session.evaluate()?;
    if unsent > 0.0 {
        // An engine that encodes its own pushes reports what it held back the same way.
        *sums.entry(UNSENT_L1.into()).or_default() += unsent;
    }
    if chaos.straggle.is_some() {
        sums.insert(INJECTED_DELAY.into(), injected.as_secs_f64());
    }
    Ok(Done {
        worker: w,
        sums,
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stragglers_slow_about_prob_of_the_clocks_by_the_factor_reproducibly() {
        let s = Straggle {
            prob: 0.1,
            factor: 4.0,
            seed: 7,
        };
        let compute = Duration::from_millis(10);
        let delays: Vec<Duration> = (0..4)
            .flat_map(|w| (0..2500).map(move |c| (w, c)))
            .map(|(w, c)| s.delay(w, c, compute))
            .collect();
        let slowed = delays.iter().filter(|d| !d.is_zero()).count();
        assert!((800..1200).contains(&slowed), "{slowed} of 10000");
        assert!(delays
            .iter()
            .all(|d| d.is_zero() || *d == Duration::from_millis(30)));
        // A function of (seed, worker, clock): the same again, different under another seed.
        assert_eq!(s.delay(3, 17, compute), s.delay(3, 17, compute));
        let other = Straggle { seed: 8, ..s };
        let moved = (0..1000)
            .filter(|&c| s.delay(0, c, compute) != other.delay(0, c, compute))
            .count();
        assert!(moved > 0);
    }
}
