//! `ps-cluster local`: a real cluster on this machine. The launcher runs the coordinator itself and
//! starts every shard and worker as a separate OS process (this same binary, re-executed in the
//! `server` or `worker` role), all talking QUIC with mutual TLS over loopback. Certificates are
//! generated into a fresh directory. If any process fails, the job fails naming it.

use crate::cli::LocalArgs;
use crate::progress::ClockLog;
use crate::roles::{coordinator_config, drive_coordinator, plan_job, runtime, summary};
use crate::telemetry::{self, MetricsArgs};
use anyhow::{anyhow, bail, Context, Result};
use ps_apps::app::DynApp;
use ps_transport::{
    generate_cluster_certs, make_endpoint, CertPaths, ClusterIdentity, EndpointOptions,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

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

fn with_pid(name: &str, child: &Child) -> String {
    match child.id() {
        Some(pid) => format!("{name} (pid {pid})"),
        None => name.to_string(),
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
    let link_arg: Vec<String> = match &a.link {
        Some(l) => {
            eprintln!("link: every shard and worker sends through an emulated {l} link");
            plan.plan.facts.insert("link".into(), l.to_string().into());
            vec!["--link".into(), l.to_string()]
        }
        None => Vec::new(),
    };

    let metrics = local_metrics(&a)?;
    let mut log = ClockLog::from_args(app, plan.spec.clocks, &a.progress)?;

    let rt = runtime(2)?;
    let (result, children) = rt.block_on(async {
        let endpoint = make_endpoint(
            ([127, 0, 0, 1], 0).into(),
            &identity,
            &EndpointOptions::for_loopback(),
        )?;
        let coord_addr = endpoint.local_addr()?;
        let mut children: Vec<(String, Child)> = Vec::new();
        // Names carry the pid: after a child is reaped its id is gone.
        for i in 0..a.cluster.servers {
            let name = format!("shard-{i}");
            let mut extra = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--id".into(),
                i.to_string(),
            ];
            extra.extend(link_arg.iter().cloned());
            extra.extend(metrics_arg(&metrics, &name));
            let child = spawn_role(&exe, "server", &name, certs, coord_addr, &extra)?;
            children.push((with_pid(&name, &child), child));
        }
        for i in 0..a.cluster.workers {
            let name = format!("worker-{i}");
            let mut extra = vec![
                "--device".into(),
                a.device.clone(),
                "--id".into(),
                i.to_string(),
            ];
            extra.extend(link_arg.iter().cloned());
            extra.extend(metrics_arg(&metrics, &name));
            let child = spawn_role(&exe, "worker", &name, certs, coord_addr, &extra)?;
            children.push((with_pid(&name, &child), child));
        }
        let reason = Arc::new(OnceLock::new());
        let coord = drive_coordinator(
            endpoint,
            coordinator_config(&a.job, &a.cluster, &plan),
            &mut log,
            Some(reason.clone()),
        );
        // Run the coordinator while watching every child: a child that exits with failure before
        // the job ends fails the job at once, named by its process.
        let watch = async {
            loop {
                for (name, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        if !status.success() {
                            // A node that exits because the coordinator failed the job is a
                            // consequence: report the coordinator's reason, which names the cause.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return match reason.get() {
                                Some(why) => anyhow!("{why}"),
                                None => anyhow!("{name} exited with {status}"),
                            };
                        }
                    }
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
                for (_, c) in children.iter_mut() {
                    let _ = c.kill().await;
                }
            });
            bail!("job failed: {e:#}");
        }
    };
    // Every process must end cleanly after the coordinator's shutdown.
    let failures = rt.block_on(async {
        let mut failures = Vec::new();
        for (name, c) in children.iter_mut() {
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
