//! `ps-cluster bench`: a sweep over links, codecs, staleness, read policies, workers, devices and straggler
//! models, each combination run as a real local cluster (`ps-cluster local`, the same binary)
//! with repeats, recording every clock; then the time to a quality target per configuration,
//! its compute to communication ratio, CSV and JSON files, plots, and the fastest
//! configuration. The axes and the figures are pure ([`sweep`]); running and writing are in
//! [`run`].

pub mod figures;
mod run;
pub mod sweep;

use crate::cli::parse_straggle;
use anyhow::{bail, Context, Result};
use clap::Args;
use ps_apps::app::{DynApp, Target};
use std::collections::BTreeMap;
use std::path::PathBuf;
use sweep::Axes;

/// A benchmark sweep. Every axis flag may be repeated (link and codec specs contain commas, so
/// each value is its own flag); an axis not given has one value, `local`'s default.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Application.
    #[arg(long, default_value = "mf")]
    pub app: String,
    /// An emulated link to sweep (`loopback` for none), e.g. --link loopback --link
    /// 1gbit,100us --link 100mbit,1ms.
    #[arg(long = "link", value_name = "SPEC")]
    pub links: Vec<String>,
    /// A push codec to sweep, e.g. --push-codec raw --push-codec topk:0.01,f16.
    #[arg(long = "push-codec", value_name = "CHAIN")]
    pub push_codecs: Vec<String>,
    /// A pull codec to sweep.
    #[arg(long = "pull-codec", value_name = "CHAIN")]
    pub pull_codecs: Vec<String>,
    /// A staleness to sweep: 0, N or inf.
    #[arg(long = "staleness", value_name = "S")]
    pub staleness: Vec<String>,
    /// A read policy to sweep: fresh or overlapped (see `local --reads`).
    #[arg(long = "reads", value_name = "POLICY")]
    pub reads: Vec<String>,
    /// A number of workers to sweep.
    #[arg(long = "workers", value_name = "N")]
    pub workers: Vec<u32>,
    /// A worker device to sweep: auto, cpu, cuda or cuda:N.
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// A straggler model to sweep: none, or PROB:FACTOR (see `local --straggle`).
    #[arg(long = "straggle", value_name = "MODEL")]
    pub straggle: Vec<String>,
    /// Runs of each configuration, with seeds --seed, --seed + 1, ...
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Clocks per run [default: the app's].
    #[arg(long)]
    pub clocks: Option<u64>,
    /// Shards per run.
    #[arg(long, default_value_t = 2)]
    pub servers: u32,
    /// The quality bar to time, METRIC<=VALUE or METRIC>=VALUE on a per-clock figure
    /// [default: the app's, e.g. test_rmse<=0.115 for mf].
    #[arg(long)]
    pub target: Option<String>,
    /// Directory for clocks.csv, runs.json, configs.json, table.txt, the plots and the runs'
    /// logs.
    #[arg(long, default_value = "target/bench-results/sweep")]
    pub out: PathBuf,
    /// Flags passed to every run's `local` as they are (after `--`), e.g. -- --rank 16.
    #[arg(last = true, value_name = "LOCAL FLAGS")]
    pub extra: Vec<String>,
}

/// A checked sweep, ready to run.
pub struct Plan {
    pub axes: Axes,
    pub target: Target,
}

/// Checks every value before anything starts.
pub fn plan(a: &BenchArgs, app: &dyn DynApp) -> Result<Plan> {
    if a.repeats == 0 {
        bail!("an empty sweep: --repeats must be at least 1");
    }
    if a.servers == 0 {
        bail!("--servers must be at least 1");
    }
    if a.seed.checked_add(u64::from(a.repeats)).is_none() {
        bail!("--seed {} plus --repeats {} overflows", a.seed, a.repeats);
    }
    let or = |v: &[String], d: &str| {
        if v.is_empty() {
            vec![d.to_string()]
        } else {
            v.to_vec()
        }
    };
    let mut links = Vec::new();
    for l in or(&a.links, "loopback") {
        if l == "loopback" || l == "none" {
            links.push(None);
        } else {
            l.parse::<ps_transport::LinkSpec>()
                .map_err(|e| anyhow::anyhow!("--link {l}: {e}"))?;
            links.push(Some(l));
        }
    }
    let mut straggle = Vec::new();
    for s in or(&a.straggle, "none") {
        if s == "none" {
            straggle.push(None);
        } else {
            parse_straggle(&s).map_err(|e| anyhow::anyhow!("--straggle: {e}"))?;
            straggle.push(Some(s));
        }
    }
    for c in a.push_codecs.iter().chain(&a.pull_codecs) {
        c.parse::<ps_proto::codec::CodecChain>()
            .map_err(|e| anyhow::anyhow!("codec {c}: {e}"))?;
    }
    for s in &a.staleness {
        ps_ssp::Staleness::parse(s).map_err(|e| anyhow::anyhow!("--staleness {s}: {e}"))?;
    }
    for r in &a.reads {
        <crate::cli::ReadsArg as clap::ValueEnum>::from_str(r, false)
            .map_err(|_| anyhow::anyhow!("--reads {r}: expected fresh or overlapped"))?;
    }
    if let Some(w) = a.workers.iter().find(|&&w| w == 0) {
        bail!("--workers {w}: at least 1");
    }
    let axes = Axes {
        links,
        push_codecs: or(&a.push_codecs, "raw"),
        pull_codecs: or(&a.pull_codecs, "raw"),
        staleness: or(&a.staleness, "0"),
        reads: or(&a.reads, "fresh"),
        workers: if a.workers.is_empty() {
            vec![2]
        } else {
            a.workers.clone()
        },
        devices: or(&a.devices, "auto"),
        straggle,
    };
    let own_data = a
        .extra
        .iter()
        .any(|x| x == "--data" || x.starts_with("--data="));
    let target = match &a.target {
        Some(t) => Target::parse(t).map_err(|e| anyhow::anyhow!("--target: {e}"))?,
        None if own_data => bail!(
            "the default target of --app {} is for its built-in data: with --data give --target",
            app.name()
        ),
        None => app.target().with_context(|| {
            format!(
                "--app {} has no default target: give --target METRIC<=VALUE",
                app.name()
            )
        })?,
    };
    let names: Vec<&str> = app
        .clock_metrics(&BTreeMap::new())
        .iter()
        .map(|(n, _)| *n)
        .collect();
    target
        .check(app.name(), &names)
        .map_err(|e| anyhow::anyhow!("--target {target}: {e}"))?;
    Ok(Plan { axes, target })
}

/// Runs the sweep `a` over `apps`' app and writes its files.
pub fn run_bench(a: BenchArgs, apps: &[Box<dyn DynApp>]) -> Result<()> {
    let app = apps
        .iter()
        .find(|x| x.name() == a.app)
        .with_context(|| format!("unknown app {:?}", a.app))?;
    let plan = plan(&a, app.as_ref())?;
    run::sweep(&a, &plan, apps)
}
