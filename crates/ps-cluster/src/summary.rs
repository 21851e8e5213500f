//! The summary line: the last thing a job prints to stdout, one JSON object.

use anyhow::Result;
use ps_apps::app::DynApp;
use ps_proto::{ClockSummary, JobResult};
use serde_json::{Map, Value};

pub struct SummaryContext<'a> {
    pub servers: u32,
    pub workers: u32,
    pub staleness: String,
    pub clocks: u64,
    pub deterministic: bool,
    pub device: Option<String>,
    pub push_codec: String,
    pub pull_codec: String,
    pub facts: &'a Map<String, Value>,
}

pub fn summary_line(app: &dyn DynApp, ctx: &SummaryContext<'_>, r: &JobResult) -> Result<String> {
    let mut m = Map::new();
    m.insert("app".into(), app.name().into());
    m.insert("servers".into(), ctx.servers.into());
    m.insert("workers".into(), ctx.workers.into());
    m.insert("staleness".into(), ctx.staleness.clone().into());
    m.insert("clocks".into(), ctx.clocks.into());
    m.insert("deterministic".into(), ctx.deterministic.into());
    if let Some(d) = &ctx.device {
        m.insert("device".into(), d.clone().into());
    }
    m.insert("wall_s".into(), round(r.wall_s).into());
    // Seconds are per-worker means summed over clocks; bytes are totals over workers.
    let seconds = |f: fn(&ClockSummary) -> f64| round(f(&r.totals));
    let bytes = |f: fn(&ClockSummary) -> u64| f(&r.totals);
    m.insert("compute_s".into(), seconds(|c| c.compute_s).into());
    m.insert("comm_s".into(), seconds(|c| c.comm_s).into());
    m.insert("overlap_s".into(), seconds(|c| c.overlap_s).into());
    m.insert("blocked_s".into(), seconds(|c| c.blocked_s).into());
    // Where the compute time went (see `host_time`), per worker like the seconds above.
    for (k, v) in crate::host_time::summary_figures(&r.totals.sums, ctx.workers) {
        m.insert(k.into(), v.into());
    }
    m.insert("bytes_sent".into(), bytes(|c| c.bytes_sent).into());
    m.insert("bytes_received".into(), bytes(|c| c.bytes_received).into());
    let (logical, sent) = (bytes(|c| c.bytes_logical), bytes(|c| c.bytes_sent));
    m.insert("bytes_logical".into(), logical.into());
    m.insert("compression_ratio".into(), ratio(logical, sent).into());
    let (push_logical, push) = (bytes(|c| c.push_bytes_logical), bytes(|c| c.push_bytes));
    m.insert("push_bytes".into(), push.into());
    m.insert("push_bytes_logical".into(), push_logical.into());
    m.insert(
        "push_compression_ratio".into(),
        ratio(push_logical, push).into(),
    );
    for key in [crate::driver::INJECTED_DELAY, crate::driver::UNSENT_L1] {
        if let Some(d) = r.sums.get(key) {
            m.insert(key.into(), round(*d).into());
        }
    }
    m.insert("restarts".into(), r.restarts.into());
    m.insert("evicted_workers".into(), r.evicted_workers.len().into());
    m.insert("rejoins".into(), r.rejoins.into());
    if !r.evicted_workers.is_empty() {
        m.insert(
            "evicted_worker_ids".into(),
            r.evicted_workers.clone().into(),
        );
    }
    m.insert("push_codec".into(), ctx.push_codec.clone().into());
    m.insert("pull_codec".into(), ctx.pull_codec.clone().into());

    for (k, v) in ctx.facts {
        m.insert(k.clone(), v.clone());
    }
    m.extend(app.summary(r)?);
    Ok(Value::Object(m).to_string())
}

/// `a / b` to 4 significant decimals; 0 when nothing was sent.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        round(a as f64 / b as f64)
    }
}

fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}
