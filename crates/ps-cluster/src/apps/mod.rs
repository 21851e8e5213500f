//! The applications as cluster jobs: what tables they need, what a worker does each clock, and
//! how their figures are printed. Model math lives in `ps-apps`; engines come from `worker-gpu`.

pub mod lda;
pub mod lr;
pub mod mf;
pub mod mlp;

use crate::cli::{Fault, FaultKind, JobArgs};
use anyhow::{bail, Context, Result};
use ps_client::PsClient;
use ps_proto::{Assign, Done, JobSpec, TableSpec};
use ps_server::{ClockSummary, JobResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the coordinator needs to start a job.
pub struct Plan {
    pub tables: Vec<TableSpec>,
    pub job: JobSpec,
    /// Facts about the data for the summary (users, items, noise_sigma...).
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// The job's tables and settings, for `workers` workers.
pub fn plan(job: &JobArgs, workers: u32) -> Result<Plan> {
    match job.app.as_str() {
        "mf" => mf::plan(job),
        "lda" => lda::plan(job),
        "mlp" => mlp::plan(job),
        "lr" => lr::plan(job, workers),
        other => bail!("unknown app {other:?}"),
    }
}

/// One worker's whole job, on the engine for `device`.
pub fn run_worker(
    client: &mut PsClient,
    assign: &Assign,
    device: worker_gpu::Device,
) -> Result<Done> {
    match assign.job.app.as_str() {
        "mf" => mf::run_worker(client, assign, device),
        "lda" => lda::run_worker(client, assign, device),
        "mlp" => mlp::run_worker(client, assign, device),
        "lr" => lr::run_worker(client, assign, device),
        other => bail!("unknown app {other:?}"),
    }
}

/// One human-readable line for a finished clock.
pub fn clock_line(app: &str, s: &ClockSummary) -> String {
    let app_part = match app {
        "mf" => mf::clock_figures(s),
        "lda" => lda::clock_figures(s),
        "mlp" => mlp::clock_figures(s),
        "lr" => lr::clock_figures(s),
        _ => String::new(),
    };
    format!(
        "clock {:>3}  {app_part}  compute {:.3}s  comm {:.3}s  overlapped {:.3}s  blocked {:.3}s  sent {}  recv {}",
        s.clock,
        s.compute_s,
        s.comm_s,
        s.overlap_s,
        s.blocked_s,
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received)
    )
}

/// App fields of the summary line.
pub fn summary_fields(
    app: &str,
    r: &JobResult,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    match app {
        "mf" => mf::summary_fields(r, out),
        "lda" => lda::summary_fields(r, out),
        "mlp" => mlp::summary_fields(r, out),
        "lr" => lr::summary_fields(r, out),
        _ => {}
    }
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

/// An f32 as JSON through its decimal text, so 0.025 prints as 0.025 rather than its f32
/// widening.
pub fn decimal(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().unwrap_or(x as f64).into()
}

/// `sums[num] / sums[den]`, if the denominator is there and positive.
pub fn ratio_of(sums: &BTreeMap<String, f64>, num: &str, den: &str) -> Option<f64> {
    let n = sums.get(num)?;
    let d = sums.get(den)?;
    (*d > 0.0).then(|| n / d)
}

/// A JSON number, or null.
pub fn num(v: Option<f64>) -> serde_json::Value {
    v.map(serde_json::Value::from)
        .unwrap_or(serde_json::Value::Null)
}

/// `sums[count]` over the workers' compute seconds: a cluster rate (all workers' work over the
/// per-worker mean compute time, which is what the clock summaries carry).
pub fn rate(r: &JobResult, count: &str) -> Option<f64> {
    let n = r.sums.get(count).copied()?;
    let compute: f64 = r.clocks.iter().map(|c| c.compute_s).sum();
    (compute > 0.0).then(|| n / compute)
}

/// Straggler and fault injection, the same for every app: carried in each app's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Chaos {
    pub slow_worker: Option<(u32, u64)>,
    pub fault: Option<Fault>,
}

impl Chaos {
    pub fn from_job(job: &JobArgs) -> Chaos {
        Chaos {
            slow_worker: job.slow_worker,
            fault: job.fault,
        }
    }

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

/// The `data` fact of the summary: the file or directory the job read, or the built-in set.
pub fn data_fact(data: &Option<String>) -> serde_json::Value {
    data.clone()
        .map(Into::into)
        .unwrap_or_else(|| "builtin-synthetic".into())
}

/// The job spec every worker receives: the app, its clocks and its settings.
pub fn job_spec<S: Serialize>(
    app: &str,
    job: &JobArgs,
    clocks: u64,
    settings: &S,
) -> Result<JobSpec> {
    Ok(JobSpec {
        app: app.into(),
        clocks,
        settings: serde_json::to_value(settings)?,
        overlap: !job.no_overlap,
    })
}

/// A worker's side of [`job_spec`]: the app's settings out of its assignment.
pub fn settings_of<S: serde::de::DeserializeOwned>(assign: &Assign) -> Result<S> {
    serde_json::from_value(assign.job.settings.clone())
        .with_context(|| format!("{} settings", assign.job.app))
}

/// Copies the facts named `keys` that workers reported into the summary.
pub fn copy_facts(
    r: &JobResult,
    keys: &[&str],
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    for key in keys {
        if let Some(v) = r.facts.get(*key) {
            out.insert((*key).into(), v.clone());
        }
    }
}

/// The staleness of a job's tables: `None` is unbounded.
pub fn table_staleness(job: &JobArgs) -> Option<u64> {
    match job.staleness {
        ps_ssp::Staleness::Bounded(s) => Some(s),
        ps_ssp::Staleness::Unbounded => None,
    }
}

/// FNV-1a over the bit patterns of the values: a fingerprint of a model for reproducibility
/// checks.
pub fn hash_bits(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
