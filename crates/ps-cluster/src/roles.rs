//! Each role as a process: coordinator, server shard, worker.

use crate::apps;
use crate::cli::{ClusterArgs, CoordinatorArgs, JobArgs, ServerArgs, WorkerArgs};
use crate::summary::{summary_line, SummaryContext};
use anyhow::{bail, Context, Result};
use ps_client::{ClientConfig, PsClient};
use ps_proto::{Frame, Kind, Register, Role};
use ps_server::node::{await_shutdown, host_name, register, spawn_heartbeats};
use ps_server::{CoordEvent, Coordinator, CoordinatorConfig, JobResult, ServerNodeConfig};
use ps_transport::{make_client_endpoint, make_endpoint, write_frame, EndpointOptions};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn coordinator_config(
    job: &JobArgs,
    cluster: &ClusterArgs,
    plan: &apps::Plan,
) -> CoordinatorConfig {
    CoordinatorConfig {
        servers: cluster.servers,
        workers: cluster.workers,
        tables: plan.tables.clone(),
        job: plan.job.clone(),
        deterministic: job.deterministic,
        heartbeat: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs_f64(cluster.heartbeat_timeout),
        register_timeout: Duration::from_secs(60),
        limits: cluster.limits(),
    }
}

/// Runs a coordinator to the end, printing a line per clock to stdout.
/// `failure`, if given, receives the coordinator's reason the moment it fails the job, before any
/// node is told to stop.
pub async fn drive_coordinator(
    endpoint: quinn::Endpoint,
    config: CoordinatorConfig,
    app: String,
    failure: Option<Arc<OnceLock<String>>>,
) -> Result<JobResult> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                CoordEvent::Clock(s) => println!("{}", apps::clock_line(&app, &s)),
                CoordEvent::Registered {
                    role,
                    id,
                    host,
                    pid,
                } => {
                    tracing::info!(?role, id, %host, pid, "node registered")
                }
                CoordEvent::Started => tracing::info!("all nodes registered; job started"),
                CoordEvent::Failed(why) => {
                    if let Some(slot) = &failure {
                        let _ = slot.set(why);
                    }
                }
            }
        }
    });
    let result = Coordinator { endpoint, config }.run(tx).await;
    let _ = printer.await;
    Ok(result?)
}

pub fn summary(
    job: &JobArgs,
    cluster: &ClusterArgs,
    plan: &apps::Plan,
    device: Option<String>,
    r: &JobResult,
) -> String {
    summary_line(
        &SummaryContext {
            app: &job.app,
            servers: cluster.servers,
            workers: cluster.workers,
            staleness: job.staleness.to_string(),
            clocks: plan.job.clocks,
            deterministic: job.deterministic,
            device,
            push_codec: job.push_codec.to_string(),
            pull_codec: job.pull_codec.to_string(),
            facts: &plan.facts,
        },
        r,
    )
}

pub fn run_coordinator_cli(a: CoordinatorArgs) -> Result<()> {
    a.job.validate()?;
    a.cluster.validate()?;
    let plan = apps::plan(&a.job, a.cluster.workers)?;
    let identity = a.tls.identity()?;
    let rt = runtime(2)?;
    let opts = EndpointOptions {
        server_name: a.tls.server_name.clone(),
        ..Default::default()
    };
    let result = rt.block_on(async {
        let endpoint = make_endpoint(a.listen, &identity, &opts)?;
        eprintln!("coordinator listening on {}", endpoint.local_addr()?);
        drive_coordinator(
            endpoint,
            coordinator_config(&a.job, &a.cluster, &plan),
            a.job.app.clone(),
            None,
        )
        .await
    })?;
    println!("{}", summary(&a.job, &a.cluster, &plan, None, &result));
    Ok(())
}

pub fn run_server(a: ServerArgs) -> Result<()> {
    let identity = a.node.tls.identity()?;
    let rt = runtime(1)?;
    let cfg = ServerNodeConfig {
        coordinator: a.node.coordinator,
        listen: a.listen,
        advertise: a.advertise.clone(),
        requested_id: a.node.id,
        options: a.node.endpoint_options(),
        limits: ps_proto::Limits::default(),
    };
    rt.block_on(ps_server::run_server_node(cfg, identity))?;
    Ok(())
}

pub fn run_worker(a: WorkerArgs) -> Result<()> {
    let request: worker_gpu::DeviceRequest = a.device.parse()?;
    let selection = worker_gpu::select(request)?;
    tracing::info!(device = %selection.device, reason = %selection.reason, "device");
    let identity = a.node.tls.identity()?;
    let rt = runtime(1)?;
    let options = a.node.endpoint_options();
    let limits = ps_proto::Limits::default();
    let endpoint = {
        let _guard = rt.enter();
        make_client_endpoint(&identity, &options)?
    };
    let reg = Register {
        role: Role::Worker,
        listen_addr: None,
        host: host_name(),
        pid: std::process::id(),
        requested_id: a.node.id,
    };
    let mut registration = rt.block_on(register(
        &endpoint,
        a.node.coordinator,
        &options.server_name,
        reg,
        &limits,
    ))?;
    let assign = registration.assign.clone();
    let conn = registration.conn.clone();
    let _hb = {
        let _guard = rt.enter();
        spawn_heartbeats(
            conn.clone(),
            assign.id,
            Duration::from_millis(assign.heartbeat_ms.max(10)),
        )
    };

    // Outgoing control frames (reports, done) on one unidirectional stream.
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Frame>();
    let mut uni = rt
        .block_on(conn.open_uni())
        .context("opening the report stream")?;
    let writer = rt.spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if write_frame(&mut uni, &f).await.is_err() {
                break;
            }
        }
        let _ = uni.finish();
        // Keep the stream object alive until its data is acknowledged.
        let _ = uni.stopped().await;
    });

    // The coordinator's shutdown: success only after we are done; failure at any time.
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
    rt.spawn(async move {
        let outcome = await_shutdown(&mut registration.control_recv, &limits).await;
        match outcome {
            Ok(s) if !s.ok => {
                eprintln!("worker {}: job failed: {}", assign.id, s.reason);
                std::process::exit(1);
            }
            other => {
                let _ = shutdown_tx.send(other);
            }
        }
    });

    let mut client_config =
        ClientConfig::new(assign.id, assign.num_workers, assign.shard_map.clone());
    client_config.limits.max_frame_bytes = assign.max_frame_bytes;
    client_config.overlap = assign.job.overlap;
    client_config.max_frame_body = client_config
        .max_frame_body
        .min(assign.max_frame_bytes / 2)
        .max(4096);
    let mut client = PsClient::connect(rt.handle().clone(), &endpoint, client_config)?;
    let mut reports = client.take_reports().context("report channel")?;
    let tx = frames_tx.clone();
    let forwarder = rt.spawn(async move {
        while let Some(r) = reports.recv().await {
            if tx.send(Frame::control(Kind::Report, &r)).is_err() {
                break;
            }
        }
    });

    let done = apps::run_worker(&mut client, &assign, selection.device)?;
    // Reports of the last clocks go out before Done.
    drop(client);
    let _ = rt.block_on(forwarder);
    let _ = frames_tx.send(Frame::control(Kind::Done, &done));
    drop(frames_tx);
    let outcome =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), shutdown_rx).await });
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), writer).await });
    conn.close(0u32.into(), b"done");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await })
        .ok();
    match outcome {
        Ok(Ok(Ok(s))) if s.ok => Ok(()),
        Ok(Ok(Ok(s))) => bail!("job failed: {}", s.reason),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(_)) => bail!("lost the shutdown watcher"),
        Err(_) => bail!("no shutdown from the coordinator within 60 s of finishing"),
    }
}
