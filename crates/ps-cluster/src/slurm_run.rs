//! `ps-cluster slurm`: one task of a Slurm job step. The task reads Slurm's variables (the pure
//! part is `slurm`), takes its role, and runs the ordinary role function: the coordinator, a
//! shard or a worker.
//!
//! Task 0 writes a CA and every node's certificate (with every host of the node list as a name)
//! into a temporary directory under `--dir`, loads its own, plans the job and starts listening on
//! `--port`; only then does it rename the directory to `--dir/ps-job<ID>[-step<S>]`, so a
//! directory that exists is complete and its coordinator accepts nodes. The CA's private key is
//! deleted before that: nothing can sign further certificates. Every other task waits for that
//! directory (`--wait` seconds), reads its certificate and dials the coordinator on the first host
//! of the node list. A coordinator that fails writes its error to `--dir/ps-job<ID>....failed`,
//! which stops the waiting tasks with that message. Task 0 removes the job's directory when
//! the job ends.

use crate::cli::{
    ClusterArgs, CoordinatorArgs, JobArgs, NodeArgs, ServerArgs, TlsArgs, WorkerArgs,
};
use crate::roles;
use crate::slurm::{Layout, Role, SlurmEnv};
use crate::telemetry::MetricsArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::Args;
use ps_apps::app::DynApp;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Flags of `ps-cluster slurm`. Every task of the step gets the same command line.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Shared directory, the same path on every node (e.g. on NFS): task 0 writes the job's
    /// certificates into a directory of its own under it.
    #[arg(long)]
    pub dir: PathBuf,
    /// Port the coordinator (task 0) listens on, on the first host of the node list.
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    /// Shards listen on this port plus SLURM_LOCALID [default: a free port].
    #[arg(long)]
    pub shard_port: Option<u16>,
    /// Compute device for workers: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[command(flatten)]
    pub packets: crate::cli::PacketArgs,
    /// Threads each shard serves on (`server --threads`).
    #[arg(long, default_value_t = 1, value_parser = crate::cli::server_threads)]
    pub server_threads: usize,
    /// Serve Prometheus metrics at http://HOST:PORT+SLURM_LOCALID/metrics on every task (tasks
    /// on one node get consecutive ports).
    #[arg(long, help_heading = "Metrics")]
    pub metrics_port: Option<u16>,
    /// The coordinator's per-clock CSV log and progress bar (task 0 only).
    #[command(flatten)]
    pub progress: crate::progress::ProgressArgs,
    /// Seconds shards and workers wait for task 0 to write the certificates and start listening.
    #[arg(long, default_value_t = 300.0)]
    pub wait: f64,
}

/// The Slurm variables of this process (those whose name and value are UTF-8).
fn slurm_vars() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("SLURM"))
        .collect()
}

pub fn run_slurm(
    app: &dyn DynApp,
    matches: &clap::ArgMatches,
    mut a: SlurmArgs,
    apps: &[Box<dyn DynApp>],
) -> Result<()> {
    // Every task has the job's environment: a kernel or sampler it names wrongly stops each
    // task here, before any role starts (`local` checks the same).
    worker_gpu::check_env_choices().map_err(|e| anyhow!(e))?;
    let env = SlurmEnv::from_vars(&slurm_vars())?;
    let given = (matches.value_source("workers") == Some(ValueSource::CommandLine))
        .then_some(a.cluster.workers);
    let layout = env.layout(a.cluster.servers, given)?;
    a.cluster.workers = layout.workers;
    if !(a.wait.is_finite() && a.wait > 0.0) {
        bail!("--wait must be a positive number of seconds");
    }
    let name = env.job_dir_name();
    let job_dir = a.dir.join(&name);
    let failed = a.dir.join(format!("{name}.failed"));
    eprintln!(
        "slurm task {} of {}: {} ({} shards, {} workers; coordinator {}:{})",
        env.procid,
        env.ntasks,
        layout.role.node_name(),
        layout.servers,
        layout.workers,
        layout.coordinator_host,
        a.port
    );
    // Shards and workers wait for the coordinator, then dial it with their own certificate.
    let node = |id| -> Result<NodeArgs> {
        wait_for(&job_dir, &failed, a.wait)?;
        Ok(NodeArgs {
            coordinator: coordinator_addr(&layout.coordinator_host, a.port, &env.nodes)?,
            id: Some(id),
            link: None,
            packets: a.packets,
            tls: tls_in(&job_dir, layout.role),
            metrics: metrics_at(a.metrics_port, env.localid)?,
        })
    };
    match layout.role {
        Role::Coordinator => run_coordinator(app, matches, a, &env, &layout, &job_dir, &failed),
        Role::Shard(i) => {
            let node = node(i)?;
            let port = match a.shard_port {
                Some(p) => p
                    .checked_add(u16::try_from(env.localid).unwrap_or(u16::MAX))
                    .ok_or_else(|| {
                        anyhow!(
                            "--shard-port {p} plus SLURM_LOCALID {} is past 65535",
                            env.localid
                        )
                    })?,
                None => free_port()?,
            };
            let coordinator = node.coordinator;
            let advertise = SocketAddr::new(local_ip_toward(coordinator)?, port).to_string();
            eprintln!(
                "shard-{i} listens on port {port}, advertises {advertise}, dials {coordinator}"
            );
            // Checkpoints go to the shared directory, one subdirectory per Slurm job.
            let checkpoint_dir = (a.cluster.recovery.checkpoint_every > 0)
                .then(|| a.dir.join(format!("checkpoints-{}", env.job_id)));
            roles::run_server(ServerArgs {
                node,
                listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                advertise: Some(advertise),
                checkpoint_dir,
                threads: a.server_threads,
            })
        }
        Role::Worker(i) => {
            // Under `wait`, what a worker's next life replays goes to the shared directory.
            let waits = a.cluster.recovery.on_worker_failure == Some(ps_proto::WorkerFailure::Wait);
            roles::run_worker(
                WorkerArgs {
                    node: node(i)?,
                    device: a.device.clone(),
                    state_dir: waits.then(|| a.dir.join(format!("worker-state-{}", env.job_id))),
                },
                apps,
            )
        }
    }
}

/// Where a task serves its metrics: `--metrics-port` plus its local id, on every address.
fn metrics_at(port: Option<u16>, localid: u32) -> Result<MetricsArgs> {
    let Some(p) = port else {
        return Ok(MetricsArgs::default());
    };
    let port = u16::try_from(localid)
        .ok()
        .and_then(|l| p.checked_add(l))
        .ok_or_else(|| anyhow!("--metrics-port {p} plus SLURM_LOCALID {localid} is past 65535"))?;
    Ok(MetricsArgs {
        metrics_addr: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
    })
}

fn tls_in(dir: &Path, role: Role) -> TlsArgs {
    let name = role.node_name();
    TlsArgs {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        server_name: ps_transport::DEFAULT_SERVER_NAME.into(),
    }
}

fn run_coordinator(
    app: &dyn DynApp,
    matches: &clap::ArgMatches,
    a: SlurmArgs,
    env: &SlurmEnv,
    layout: &Layout,
    job_dir: &Path,
    failed: &Path,
) -> Result<()> {
    let published = Cell::new(false);
    let tmp = a
        .dir
        .join(format!(".{}.tmp{}", env.job_dir_name(), std::process::id()));
    let result = (|| {
        if job_dir.exists() {
            bail!(
                "{} already exists (left by an earlier run of this job step?): remove it",
                job_dir.display()
            );
        }
        write_certs(&tmp, layout, env)?;
        let args = CoordinatorArgs {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), a.port),
            job: a.job,
            cluster: a.cluster,
            tls: tls_in(&tmp, Role::Coordinator),
            metrics: metrics_at(a.metrics_port, env.localid)?,
            progress: a.progress,
        };
        roles::run_coordinator_then(app, matches, args, |addr| {
            std::fs::rename(&tmp, job_dir)
                .with_context(|| format!("publishing the certificates as {}", job_dir.display()))?;
            published.set(true);
            eprintln!(
                "coordinator on {}:{} ({addr}); certificates in {}",
                layout.coordinator_host,
                addr.port(),
                job_dir.display()
            );
            Ok(())
        })
    })();
    let _ = std::fs::remove_dir_all(if published.get() { job_dir } else { &tmp });
    if let Err(e) = &result {
        // Tell the tasks still waiting, so they stop with the cause rather than a timeout.
        let _ = std::fs::write(failed, format!("{e:#}\n"));
    }
    result
}

/// Writes the CA and every node's certificate into `dir` (a new directory, private to its
/// owner), then deletes the CA's key.
fn write_certs(dir: &Path, layout: &Layout, env: &SlurmEnv) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating --dir {}", parent.display()))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    ps_transport::generate_cluster_certs(dir, &layout.node_names, &env.nodes)
        .context("writing the job's certificates")?;
    std::fs::remove_file(dir.join("ca.key")).context("removing the CA key")?;
    Ok(())
}

/// Waits until task 0 has published the job's directory, or has failed.
fn wait_for(job_dir: &Path, failed: &Path, wait_s: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(wait_s);
    loop {
        if job_dir.join("ca.pem").is_file() {
            return Ok(());
        }
        if let Ok(why) = std::fs::read_to_string(failed) {
            bail!("the coordinator (task 0) failed: {}", why.trim());
        }
        if Instant::now() >= deadline {
            bail!(
                "waited {wait_s} s for task 0 to write the certificates to {} and start the \
                 coordinator: is --dir on a file system every node shares, and is task 0 running?",
                job_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The coordinator's IPv4 address (it listens on 0.0.0.0).
fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving the coordinator's host {host:?}"))?
        .collect();
    addrs
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("the coordinator's host {host:?} has no IPv4 address"))
}

/// Where this task dials the coordinator. The coordinator's host name may resolve to loopback
/// on the coordinator's own host (Debian's `127.0.1.1 HOST` line in /etc/hosts): in a job over
/// several hosts, a task there dials it on this host's network address instead, so that its
/// endpoint is tuned for the network rather than loopback, and a shard advertises an address
/// the other hosts can reach.
fn coordinator_addr(host: &str, port: u16, nodes: &[String]) -> Result<SocketAddr> {
    let addr = resolve(host, port)?;
    if !addr.ip().is_loopback() {
        return Ok(addr);
    }
    Ok(match network_ip(nodes) {
        Some(ip) => {
            tracing::info!(%host, %ip, "the coordinator's host is this one: dialling its network address");
            SocketAddr::new(ip, port)
        }
        None => addr,
    })
}

/// This host's address toward the first node of the list that is not on loopback from here
/// (none in a job on one host).
fn network_ip(nodes: &[String]) -> Option<IpAddr> {
    nodes.iter().find_map(|host| {
        let peer = (host.as_str(), 9)
            .to_socket_addrs()
            .ok()?
            .find(|a| a.is_ipv4() && !a.ip().is_loopback())?;
        local_ip_toward(peer).ok().filter(|ip| !ip.is_loopback())
    })
}

/// The local address this host sends from toward `peer` (a UDP connect sends nothing).
fn local_ip_toward(peer: SocketAddr) -> Result<IpAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a UDP socket")?;
    s.connect(peer)
        .with_context(|| format!("finding the route to the coordinator at {peer}"))?;
    Ok(s.local_addr()?.ip())
}

/// A UDP port free now (the shard binds it right after).
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("finding a free port")?;
    Ok(s.local_addr()?.port())
}
