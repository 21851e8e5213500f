//! `ps-cluster local`: a real cluster on this machine. The launcher runs the coordinator itself and
//! starts every shard and worker as a separate OS process (this same binary, re-executed in the
//! `server` or `worker` role), all talking QUIC with mutual TLS over loopback. Certificates are
//! generated into a fresh directory.
//!
//! The launcher supervises its processes: with `--checkpoint-every`, a shard that dies is
//! started again with the same id and restores its last checkpoint (a shard that dies again
//! within seconds of a restart fails the job: it cannot start); under `--on-worker-failure
//! evict` (the default here) a worker that dies is left dead and the coordinator evicts it.
//! Any other process that fails fails the job, naming it.

use crate::cli::LocalArgs;
use crate::progress::ClockLog;
use crate::roles::{coordinator_config, drive_coordinator, plan_job, runtime, summary};
use crate::telemetry::{self, MetricsArgs};
use anyhow::{anyhow, bail, Context, Result};
use ps_apps::app::DynApp;
use ps_proto::Role;
use ps_server::ProcessExit;
use ps_transport::{
    generate_cluster_certs, make_endpoint, CertPaths, ClusterIdentity, EndpointOptions,
    PacketProtection,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long after a child's exit the coordinator is told of it (see `run`).
const EXIT_GRACE: Duration = Duration::from_millis(250);

fn spawn_role(
    exe: &Path,
    role: &str,
    name: &str,
    certs: &Path,
    coordinator: std::net::SocketAddr,
    extra: &[String],
) -> Result<Child> {
    let p = CertPaths::in_dir(certs, name);
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .arg("--coordinator")
        .arg(coordinator.to_string())
        .arg("--ca")
        .arg(&p.ca)
        .arg("--cert")
        .arg(&p.cert)
        .arg("--key")
        .arg(&p.key)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// A process of the local cluster, as the launcher supervises it.
struct Proc {
    /// "server" or "worker".
    role: &'static str,
    id: u32,
    name: String,
    extra: Vec<String>,
    child: Child,
    pid: Option<u32>,
    started: Instant,
    restarts: u32,
    /// Dead and left so (an evicted worker).
    gone: bool,
}

impl Proc {
    #[allow(clippy::too_many_arguments)]
    fn start(
        exe: &Path,
        role: &'static str,
        id: u32,
        name: String,
        certs: &Path,
        coordinator: SocketAddr,
        extra: Vec<String>,
    ) -> Result<Proc> {
        let child = spawn_role(exe, role, &name, certs, coordinator, &extra)?;
        Ok(Proc {
            role,
            id,
            pid: child.id(),
            name,
            extra,
            child,
            started: Instant::now(),
            restarts: 0,
            gone: false,
        })
    }

    /// The name with the pid: after a child is reaped its id is gone.
    fn name(&self) -> String {
        match self.pid {
            Some(pid) => format!("{} (pid {pid})", self.name),
            None => self.name.clone(),
        }
    }

    /// Starts the process again with the same id and flags.
    fn restart(
        &mut self,
        exe: &Path,
        certs: &Path,
        coordinator: SocketAddr,
    ) -> Result<(), anyhow::Error> {
        self.child = spawn_role(exe, self.role, &self.name, certs, coordinator, &self.extra)?;
        self.pid = self.child.id();
        self.started = Instant::now();
        self.restarts += 1;
        Ok(())
    }
}

/// With `--metrics-addr`: checks every process's metrics port is free (a port in use stops
/// the job before anything starts), serves the coordinator's (this process's), and prints
/// where each process serves. Returns the addresses by process name.
fn local_metrics(a: &LocalArgs) -> Result<Vec<(String, SocketAddr)>> {
    let Some(base) = a.metrics.metrics_addr else {
        return Ok(Vec::new());
    };
    let addrs = telemetry::local_addrs(base, a.cluster.servers, a.cluster.workers)?;
    telemetry::check_free(&addrs)?;
    telemetry::serve(&MetricsArgs {
        metrics_addr: Some(addrs[0].1),
    })?;
    for (name, addr) in &addrs {
        eprintln!("metrics: {name} {}", telemetry::url(*addr));
    }
    Ok(addrs)
}

/// The `--metrics-addr` flag of process `name`, if the job serves metrics.
fn metrics_arg(addrs: &[(String, SocketAddr)], name: &str) -> Vec<String> {
    match addrs.iter().find(|(n, _)| n == name) {
        Some((_, addr)) => vec!["--metrics-addr".into(), addr.to_string()],
        None => Vec::new(),
    }
}

pub fn run_local(app: &dyn DynApp, matches: &clap::ArgMatches, a: LocalArgs) -> Result<()> {
    // The workers inherit this environment: a kernel or sampler it names wrongly stops the job
    // here, before any process starts.
    worker_gpu::check_env_choices().map_err(|e| anyhow!(e))?;
    let selection = worker_gpu::select(a.device.parse()?)?;
    eprintln!("device: {} ({})", selection.device, selection.reason);
    let started = Instant::now();
    let mut plan = plan_job(app, &a.job, &a.cluster, matches)?;

    let tmp;
    let certs: &Path = match &a.certs_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("creating a certificate directory")?;
            tmp.path()
        }
    };
    let mut names = vec!["coordinator".to_string()];
    names.extend((0..a.cluster.servers).map(|i| format!("shard-{i}")));
    names.extend((0..a.cluster.workers).map(|i| format!("worker-{i}")));
    generate_cluster_certs(certs, &names, &[])?;
    let identity = ClusterIdentity::load(&CertPaths::in_dir(certs, "coordinator"))?;
    let exe = std::env::current_exe().context("locating this executable")?;
    // What every shard and worker is told about its network: the emulated link, the packets.
    let mut network_args: Vec<String> = match &a.link {
        Some(l) => {
            eprintln!("link: every shard and worker sends through an emulated {l} link");
            plan.plan.facts.insert("link".into(), l.to_string().into());
            vec!["--link".into(), l.to_string()]
        }
        None => Vec::new(),
    };
    network_args.extend(a.packets.to_args());
    if a.packets.packet_protection == PacketProtection::None {
        eprintln!("packets: plaintext after the handshake (--packet-protection none)");
        plan.plan
            .facts
            .insert("packet_protection".into(), "none".into());
    }
    if a.server_threads != 1 {
        plan.plan
            .facts
            .insert("server_threads".into(), a.server_threads.into());
    }

    let metrics = local_metrics(&a)?;
    let mut log = ClockLog::from_args(app, plan.spec.clocks, &a.progress)?;

    let config = coordinator_config(&a.job, &a.cluster, &plan, ps_proto::WorkerFailure::Evict);
    let recovery = config.recovery.clone();
    let ckpt_tmp;
    let checkpoint_arg: Vec<String> = if recovery.restartable() {
        let dir = match &a.checkpoint_dir {
            Some(d) => d.clone(),
            None => {
                ckpt_tmp = tempfile::tempdir().context("creating a checkpoint directory")?;
                ckpt_tmp.path().to_path_buf()
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("--checkpoint-dir {}", dir.display()))?;
        eprintln!(
            "checkpoints: every {} clocks into {} (keeping {})",
            recovery.checkpoint_every,
            dir.display(),
            recovery.keep
        );
        vec!["--checkpoint-dir".into(), dir.display().to_string()]
    } else {
        Vec::new()
    };

    // Under `wait` a restarted worker finds what its last life kept here (LDA's moves).
    let state_tmp;
    let state_arg: Vec<String> = if recovery.on_worker_failure == ps_proto::WorkerFailure::Wait {
        state_tmp = tempfile::tempdir().context("creating the workers' state directory")?;
        vec!["--state-dir".into(), state_tmp.path().display().to_string()]
    } else {
        Vec::new()
    };

    let rt = runtime(2)?;
    let (result, children) = rt.block_on(async {
        let mut options = EndpointOptions::for_loopback();
        a.packets.apply(&mut options);
        let endpoint = make_endpoint(([127, 0, 0, 1], 0).into(), &identity, &options)?;
        let coord_addr = endpoint.local_addr()?;
        let mut children: Vec<Proc> = Vec::new();
        for i in 0..a.cluster.servers {
            let name = format!("shard-{i}");
            let mut extra = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--id".into(),
                i.to_string(),
            ];
            extra.extend(network_args.iter().cloned());
            extra.extend(metrics_arg(&metrics, &name));
            extra.extend(checkpoint_arg.iter().cloned());
            extra.extend(["--threads".into(), a.server_threads.to_string()]);
            children.push(Proc::start(
                &exe, "server", i, name, certs, coord_addr, extra,
            )?);
        }
        for i in 0..a.cluster.workers {
            let name = format!("worker-{i}");
            let mut extra = vec![
                "--device".into(),
                a.device.clone(),
                "--id".into(),
                i.to_string(),
            ];
            extra.extend(network_args.iter().cloned());
            extra.extend(metrics_arg(&metrics, &name));
            extra.extend(state_arg.iter().cloned());
            children.push(Proc::start(
                &exe, "worker", i, name, certs, coord_addr, extra,
            )?);
        }
        let reason = Arc::new(OnceLock::new());
        // A child seen exiting where the job goes on without it (an evicted worker, a worker
        // or shard restarted) is reported to the coordinator, which evicts it or waits for it
        // then rather than once its heartbeats have been missing for --heartbeat-timeout. The
        // report waits EXIT_GRACE, so that a node's own last words (an error it sent) name the
        // failure when there are any.
        let (exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
        let mut notices: Vec<(Instant, ProcessExit)> = Vec::new();
        let coord = drive_coordinator(
            endpoint,
            config,
            &mut log,
            Some(reason.clone()),
            Some(exits),
        );
        // Run the coordinator while watching every child (see the module docs).
        let watch = async {
            loop {
                for p in children.iter_mut() {
                    let Ok(Some(status)) = p.child.try_wait() else {
                        continue;
                    };
                    if status.success() || p.gone {
                        continue;
                    }
                    let quick = p.started.elapsed() < Duration::from_secs(5) && p.restarts > 0;
                    let waited = p.role == "worker"
                        && recovery.on_worker_failure == ps_proto::WorkerFailure::Wait;
                    let evicted = p.role == "worker"
                        && recovery.on_worker_failure == ps_proto::WorkerFailure::Evict;
                    let restarted =
                        (waited || p.role == "server" && recovery.restartable()) && !quick;
                    if let (Some(pid), true) = (p.pid, restarted || evicted) {
                        let role = if p.role == "worker" {
                            Role::Worker
                        } else {
                            Role::Server
                        };
                        let how = status.to_string();
                        let exit = ProcessExit {
                            role,
                            id: p.id,
                            pid,
                            how,
                        };
                        notices.push((Instant::now(), exit));
                    }
                    if restarted {
                        eprintln!("{} exited with {status}; restarting it", p.name());
                        if let Err(e) = p.restart(&exe, certs, coord_addr) {
                            return e;
                        }
                        continue;
                    }
                    if evicted {
                        eprintln!("{} exited with {status}; it will be evicted", p.name());
                        p.gone = true;
                        continue;
                    }
                    // A node that exits because the coordinator failed the job is a
                    // consequence: report the coordinator's reason, which names the cause.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return match reason.get() {
                        Some(why) => anyhow!("{why}"),
                        None => anyhow!("{} exited with {status}", p.name()),
                    };
                }
                for (_, exit) in notices.extract_if(.., |(at, _)| at.elapsed() >= EXIT_GRACE) {
                    let _ = exits_tx.send(exit);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let outcome = tokio::select! {
            r = coord => r,
            e = watch => Err(e),
        };
        Ok::<_, anyhow::Error>((outcome, children))
    })?;

    let mut children = children;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            rt.block_on(async {
                for p in children.iter_mut() {
                    let _ = p.child.kill().await;
                }
            });
            bail!("job failed: {e:#}");
        }
    };
    // Evicted workers may still be alive (hung): they are not part of the job any more.
    rt.block_on(async {
        for p in children.iter_mut() {
            if p.role == "worker" && result.evicted_workers.contains(&p.id) && !p.gone {
                let _ = p.child.kill().await;
                p.gone = true;
            }
        }
    });
    // Every live process must end cleanly after the coordinator's shutdown.
    let failures = rt.block_on(async {
        let mut failures = Vec::new();
        for p in children.iter_mut().filter(|p| !p.gone) {
            let (name, c) = (p.name(), &mut p.child);
            match tokio::time::timeout(Duration::from_secs(15), c.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => failures.push(format!("{name} exited with {s}")),
                Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                Err(_) => {
                    let _ = c.kill().await;
                    failures.push(format!("{name} did not exit after shutdown"));
                }
            }
        }
        failures
    });
    if !failures.is_empty() {
        bail!("job failed: {}", failures.join("; "));
    }
    tracing::info!(elapsed = ?started.elapsed(), "local job complete");
    println!(
        "{}",
        summary(
            app,
            &a.job,
            &a.cluster,
            &plan,
            Some(selection.device.to_string()),
            &result
        )?
    );
    Ok(())
}
