//! Each role as a process: coordinator, server shard, worker.

use crate::cli::{ClusterArgs, CoordinatorArgs, JobArgs, ServerArgs, WorkerArgs};
use crate::driver::Chaos;
use crate::progress::ClockLog;
use crate::summary::{summary_line, SummaryContext};
use anyhow::{bail, Context, Result};
use ps_apps::app::{DynApp, ErasedPlan};
use ps_client::{Worker, WorkerOptions};
use ps_proto::{JobResult, JobSpec};
use ps_server::{CoordEvent, Coordinator, CoordinatorConfig, ProcessExit, ServerNodeConfig};
use ps_transport::{make_endpoint, EndpointOptions};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// A planned job: the app's plan and the spec every worker receives.
pub struct JobPlan {
    pub plan: ErasedPlan,
    pub spec: JobSpec,
}

/// Checks the shared flags and has the app plan the job from its own.
pub fn plan_job(
    app: &dyn DynApp,
    job: &JobArgs,
    cluster: &ClusterArgs,
    matches: &clap::ArgMatches,
) -> Result<JobPlan> {
    job.validate()?;
    cluster.validate()?;
    let plan = app
        .plan(matches, &job.common(cluster.workers))
        .with_context(|| format!("--app {}", app.name()))?;
    let chaos = Chaos {
        slow_worker: job.slow_worker,
        straggle: job.straggle.map(|(prob, factor)| crate::driver::Straggle {
            prob,
            factor,
            seed: job.seed,
        }),
        fault: job.fault,
    };
    let spec = JobSpec {
        app: app.name().into(),
        clocks: job.clocks.unwrap_or(plan.clocks),
        settings: plan.settings.clone(),
        overlap: !job.no_overlap,
        overlapped_reads: job.reads == crate::cli::ReadsArg::Overlapped,
        driver: serde_json::to_value(chaos)?,
    };
    Ok(JobPlan { plan, spec })
}

pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The coordinator's settings; `default_policy` is what a dead worker does when the flags do
/// not say.
pub fn coordinator_config(
    job: &JobArgs,
    cluster: &ClusterArgs,
    plan: &JobPlan,
    default_policy: ps_proto::WorkerFailure,
) -> CoordinatorConfig {
    CoordinatorConfig {
        servers: cluster.servers,
        workers: cluster.workers,
        tables: plan.plan.tables.clone(),
        job: plan.spec.clone(),
        deterministic: job.deterministic,
        heartbeat: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs_f64(cluster.heartbeat_timeout),
        register_timeout: Duration::from_secs(60),
        limits: cluster.limits(),
        recovery: cluster.recovery.recovery(default_policy),
    }
}

/// Runs a coordinator to the end, giving each finished clock to `log`.
/// `failure`, if given, receives the coordinator's reason the moment it fails the job, before any
/// node is told to stop.
pub async fn drive_coordinator(
    endpoint: quinn::Endpoint,
    config: CoordinatorConfig,
    log: &mut ClockLog<'_>,
    failure: Option<Arc<OnceLock<String>>>,
    exits: Option<mpsc::UnboundedReceiver<ProcessExit>>,
) -> Result<JobResult> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handle = |ev: CoordEvent| {
        match ev {
        CoordEvent::Clock(s) => log.clock(&s),
        CoordEvent::Registered {
            role,
            id,
            host,
            pid,
        } => tracing::info!(?role, id, %host, pid, "node registered"),
        CoordEvent::Started => {
            tracing::info!("all nodes registered; job started");
            log.start();
        }
        CoordEvent::ShardDown { shard, why } => {
            eprintln!("shard {shard} failed ({why}); waiting for it to restart from its checkpoint")
        }
        CoordEvent::ShardRestored {
            shard,
            checkpoint_clock,
        } => eprintln!(
            "shard {shard} is back from its checkpoint of clock {checkpoint_clock}; workers resend what it lacks"
        ),
        CoordEvent::WorkerDown { worker, why } => {
            eprintln!("worker {worker} failed ({why}); waiting for it to register again")
        }
        CoordEvent::WorkerRejoined { worker } => {
            eprintln!("worker {worker} is back; it replays its clocks and goes on")
        }
        CoordEvent::WorkerEvicted { worker, why } => {
            eprintln!("worker {worker} failed ({why}); evicted, the others go on")
        }
        CoordEvent::Failed(why) => {
            if let Some(slot) = &failure {
                let _ = slot.set(why);
            }
        }
    }
    };
    let run = Coordinator { endpoint, config }.run_watching(tx, exits);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(ev) = rx.recv() => handle(ev),
        }
    };
    while let Ok(ev) = rx.try_recv() {
        handle(ev);
    }
    log.finish()?;
    Ok(result?)
}

/// One human-readable line for a finished clock.
pub fn clock_line(app: &dyn DynApp, s: &ps_proto::ClockSummary) -> String {
    format!(
        "clock {:>3}  {}  compute {:.3}s  comm {:.3}s  overlapped {:.3}s  blocked {:.3}s  sent {}  recv {}",
        s.clock,
        app.clock_line(&s.sums),
        s.compute_s,
        s.comm_s,
        s.overlap_s,
        s.blocked_s,
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received)
    )
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

pub fn summary(
    app: &dyn DynApp,
    job: &JobArgs,
    cluster: &ClusterArgs,
    plan: &JobPlan,
    device: Option<String>,
    r: &JobResult,
) -> Result<String> {
    summary_line(
        app,
        &SummaryContext {
            servers: cluster.servers,
            workers: cluster.workers,
            staleness: job.staleness.to_string(),
            clocks: plan.spec.clocks,
            deterministic: job.deterministic,
            device,
            push_codec: job.push_codec.to_string(),
            pull_codec: job.pull_codec.to_string(),
            facts: &plan.plan.facts,
        },
        r,
    )
}

pub fn run_coordinator_cli(
    app: &dyn DynApp,
    matches: &clap::ArgMatches,
    a: CoordinatorArgs,
) -> Result<()> {
    run_coordinator_then(app, matches, a, |_| Ok(()))
}

/// [`run_coordinator_cli`], calling `listening` with the bound address once the job is planned
/// and the coordinator accepts nodes (before any has registered).
pub fn run_coordinator_then(
    app: &dyn DynApp,
    matches: &clap::ArgMatches,
    a: CoordinatorArgs,
    listening: impl FnOnce(std::net::SocketAddr) -> Result<()>,
) -> Result<()> {
    let plan = plan_job(app, &a.job, &a.cluster, matches)?;
    let identity = a.tls.identity()?;
    crate::telemetry::serve(&a.metrics)?;
    let rt = runtime(2)?;
    let opts = EndpointOptions {
        server_name: a.tls.server_name.clone(),
        ..Default::default()
    };
    let result = rt.block_on(async {
        let endpoint = make_endpoint(a.listen, &identity, &opts)?;
        let addr = endpoint.local_addr()?;
        eprintln!("coordinator listening on {addr}");
        listening(addr)?;
        let mut log = ClockLog::from_args(app, plan.spec.clocks, &a.progress)?;
        drive_coordinator(
            endpoint,
            coordinator_config(&a.job, &a.cluster, &plan, ps_proto::WorkerFailure::Fail),
            &mut log,
            None,
            None,
        )
        .await
    })?;
    println!(
        "{}",
        summary(app, &a.job, &a.cluster, &plan, None, &result)?
    );
    Ok(())
}

pub fn run_server(a: ServerArgs) -> Result<()> {
    let identity = a.node.tls.identity()?;
    crate::telemetry::serve(&a.node.metrics)?;
    let rt = runtime(a.threads)?;
    tracing::info!("shard runtime started on {} threads", a.threads);
    let cfg = ServerNodeConfig {
        coordinator: a.node.coordinator,
        listen: a.listen,
        advertise: a.advertise.clone(),
        requested_id: a.node.id,
        options: a.node.endpoint_options(),
        limits: ps_proto::Limits::default(),
        checkpoint_dir: a.checkpoint_dir.clone(),
    };
    rt.block_on(ps_server::run_server_node(cfg, identity))?;
    Ok(())
}

pub fn run_worker(a: WorkerArgs, apps: &[Box<dyn DynApp>]) -> Result<()> {
    let request: worker_gpu::DeviceRequest = a.device.parse()?;
    let selection = worker_gpu::select(request)?;
    tracing::info!(device = %selection.device, reason = %selection.reason, "device");
    crate::telemetry::serve(&a.node.metrics)?;
    let mut opts = WorkerOptions::new(a.node.coordinator, a.node.tls.identity()?);
    opts.requested_id = a.node.id;
    opts.endpoint = a.node.endpoint_options();
    let mut worker = Worker::join(opts)?;
    let name = worker.assignment().job.app.clone();
    let app = apps
        .iter()
        .find(|x| x.name() == name)
        .ok_or_else(|| anyhow::anyhow!("the job runs app {name:?}, which this binary lacks"))?;
    let engines = worker_gpu::DeviceEngines(selection.device);
    let state_dir = a.state_dir.as_deref();
    let done = match crate::driver::run_session(&mut worker, app.as_ref(), &engines, state_dir) {
        Ok(d) => d,
        // A failure the coordinator announced explains the local one.
        Err(e) => match worker.failure() {
            Some(why) => bail!("worker {}: {why}", worker.id()),
            None => return Err(e),
        },
    };
    worker.finish(done)?;
    Ok(())
}
