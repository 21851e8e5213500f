//! The applications as cluster jobs: what tables they need, what a worker does each clock, and
//! how their figures are printed. Model math lives in `ps-apps`.

pub mod mf;

use crate::cli::JobArgs;
use anyhow::{bail, Result};
use ps_proto::{JobSpec, TableSpec};
use ps_server::{ClockSummary, JobResult};

/// What the coordinator needs to start a job.
pub struct Plan {
    pub tables: Vec<TableSpec>,
    pub job: JobSpec,
    /// Facts about the data for the summary (users, items, noise_sigma...).
    pub facts: serde_json::Map<String, serde_json::Value>,
}

pub fn plan(job: &JobArgs) -> Result<Plan> {
    match job.app.as_str() {
        "mf" => mf::plan(job),
        other => bail!("unknown app {other:?}"),
    }
}

/// One human-readable line for a finished clock.
pub fn clock_line(app: &str, s: &ClockSummary) -> String {
    let app_part = match app {
        "mf" => mf::clock_figures(s),
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
    if app == "mf" {
        mf::summary_fields(r, out)
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
