//! Command-line flags of every role.

use crate::driver::{Fault, FaultKind};
use crate::telemetry::MetricsArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ps_ssp::Staleness;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ps-cluster",
    version,
    about = "A stale-synchronous parameter server over QUIC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole cluster on this machine: coordinator, shards and workers as separate processes
    /// over QUIC on loopback with mutual TLS; prints one line per clock and a JSON summary last.
    Local(LocalArgs),
    /// Run the coordinator of a multi-host job (prints the per-clock lines and the summary).
    Coordinator(CoordinatorArgs),
    /// Run one server shard.
    Server(ServerArgs),
    /// Run one worker.
    Worker(WorkerArgs),
    /// Write a cluster CA and node certificates for a multi-host job.
    Certs(CertsArgs),
    /// Sweep links, codecs, staleness, workers, devices and stragglers, each combination a
    /// local cluster; time to a quality target, compute/communication, CSV, JSON and plots.
    Bench(crate::bench::BenchArgs),
    /// Run one task of a Slurm job step (under srun): task 0 is the coordinator, tasks 1..=S the
    /// shards, the rest workers (their number is SLURM_NTASKS - 1 - S); see README, Under Slurm.
    Slurm(crate::slurm_run::SlurmArgs),
}

/// What to train and how: the flags every app shares. Each app adds its own (see
/// `--app NAME --help`).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Application (its flags are listed under its name: `--app NAME --help`).
    #[arg(long, default_value = "mf")]
    pub app: String,
    /// Read staleness: 0 (bulk synchronous), N, or inf (asynchronous).
    #[arg(long, default_value = "0", value_parser = parse_staleness)]
    pub staleness: Staleness,
    /// Clocks to run [default: the app's].
    #[arg(long)]
    pub clocks: Option<u64>,
    /// Seed for data generation, initialisation and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Compute threads per worker (the fast CPU engines split a clock's work over them; LDA's
    /// sweep cuts the worker's documents into that many runs that see each other's moves at the
    /// clock's end, as that many workers would, each run holding a copy of the worker's
    /// word-topic counts; its log-likelihood uses them too).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Apply each clock's updates at the clock boundary in worker-id order: two runs with one seed
    /// give bit-identical models. Requires --staleness 0.
    #[arg(long)]
    pub deterministic: bool,
    /// Make every clock wait for its push to be acknowledged, and prefetch nothing (to measure
    /// what overlapping communication with compute buys).
    #[arg(long)]
    pub no_overlap: bool,
    /// Which rows a worker's reads use under staleness >= 1. `fresh`: rows pulled for this
    /// clock; the clock's first read waits for the pull started when the last one ended (a
    /// round trip). `overlapped`: rows pulled for the previous clock also serve when they meet
    /// the bound, so the pull hides behind compute and reads are a clock staler.
    #[arg(long, value_enum, default_value_t = ReadsArg::Fresh)]
    pub reads: ReadsArg,
    /// How workers encode pushed deltas, per table: stages then a value format, e.g. `raw`,
    /// `f16`, `bf16`, `topk:0.01,f16`, `topk:100`, `filter:0.01,topk:0.05`. Lossy chains keep
    /// what they do not send in a residual added to the next clock's delta (error feedback).
    #[arg(long, default_value = "raw", value_parser = parse_codec)]
    pub push_codec: ps_proto::codec::CodecChain,
    /// How shards encode pull replies: `raw`, `f16` or `bf16`.
    #[arg(long, default_value = "raw", value_parser = parse_pull_codec)]
    pub pull_codec: ps_proto::codec::CodecChain,
    /// Fault and straggler injection for tests and demos: WORKER:MS sleeps MS per clock on WORKER.
    #[arg(long, value_parser = parse_pair)]
    pub slow_worker: Option<(u32, u64)>,
    /// Transient stragglers: PROB:FACTOR makes each (worker, clock), with probability PROB,
    /// FACTOR times as slow as its compute (seeded by --seed); e.g. 0.1:4. The summary gives
    /// the delay added (injected_delay_s, over workers).
    #[arg(long, value_parser = parse_straggle)]
    pub straggle: Option<(f64, f64)>,
    /// Fault injection for tests and demos: WORKER:CLOCK:crash makes WORKER exit abruptly at
    /// CLOCK; WORKER:CLOCK:hang makes it stop (SIGSTOP), alive but silent.
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<Fault>,
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    let bad = || format!("expected WORKER:CLOCK:crash|hang, got {s:?}");
    let mut parts = s.split(':');
    let (Some(w), Some(c), Some(k), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let kind = match k {
        "crash" => FaultKind::Crash,
        "hang" => FaultKind::Hang,
        _ => return Err(bad()),
    };
    Ok(Fault {
        worker: w.parse().map_err(|_| bad())?,
        clock: c.parse().map_err(|_| bad())?,
        kind,
    })
}

/// Cluster size and liveness settings, for `local` and `coordinator`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Number of server shards.
    #[arg(long, default_value_t = 2)]
    pub servers: u32,
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// A node silent for this many seconds fails the job.
    #[arg(long, default_value_t = 10.0)]
    pub heartbeat_timeout: f64,
    /// Largest frame body a node accepts, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_frame_mib: u64,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
}

/// Checkpoints, shard restarts and worker failures.
#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    /// Shards write a checkpoint every N clocks (of their slowest worker) and at the end; a
    /// shard that dies is then restarted from its last checkpoint and workers resend what it
    /// lacks, so nothing is lost. 0: no checkpoints, and a dead shard fails the job.
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Checkpoints each shard keeps (at least 1; 2 survives a torn newest file).
    #[arg(long, default_value_t = 2)]
    pub keep: u32,
    /// Seconds to wait for a dead shard to come back before the job fails.
    #[arg(long, default_value_t = 60.0)]
    pub restart_timeout: f64,
    /// What a dead worker does to the job: fail; evict (it leaves every shard's clock vector,
    /// the others go on, its data share is dropped); or wait (the others wait for it to
    /// register again with its id, `local` restarts it; it replays its clocks to rebuild its
    /// state, and shards drop what they already have) [default: evict under `local`, fail
    /// otherwise].
    #[arg(long)]
    pub on_worker_failure: Option<ps_proto::WorkerFailure>,
}

impl RecoveryArgs {
    pub fn validate(&self) -> Result<()> {
        if self.keep == 0 {
            bail!("--keep must be at least 1");
        }
        if !(self.restart_timeout.is_finite() && self.restart_timeout > 0.0) {
            bail!("--restart-timeout must be positive");
        }
        Ok(())
    }

    /// The job's recovery settings, with `default_policy` when no worker policy was given.
    pub fn recovery(&self, default_policy: ps_proto::WorkerFailure) -> ps_proto::Recovery {
        // Tells this run's checkpoints from any other's.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 32);
        ps_proto::Recovery {
            checkpoint_every: self.checkpoint_every,
            keep: self.keep,
            restart_timeout_ms: (self.restart_timeout * 1000.0) as u64,
            on_worker_failure: self.on_worker_failure.unwrap_or(default_policy),
            job_nonce: nonce,
            resume: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub progress: crate::progress::ProgressArgs,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Compute device for workers: auto, cpu, cpu-resident (the GPU path on CPU oracles), cuda or
    /// cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Keep the generated certificates in this directory instead of a temporary one.
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Where shards keep their checkpoints (DIR/shard-N), with --checkpoint-every [default: a
    /// temporary directory removed at the end].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Emulate a network link on every worker-shard path: BANDWIDTH,LATENCY[,LOSS[,QUEUE]],
    /// e.g. 1gbit,100us or 100mbit,2ms,0.001 (each node's sending side is shaped, so a round
    /// trip sees the latency twice).
    #[arg(long)]
    pub link: Option<ps_transport::LinkSpec>,
    #[command(flatten)]
    pub packets: PacketArgs,
    /// Threads each shard serves on (`server --threads`).
    #[arg(long, default_value_t = 1, value_parser = server_threads)]
    pub server_threads: usize,
}

/// Certificate files of a node.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Cluster CA certificate (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), signed by the CA.
    #[arg(long)]
    pub cert: PathBuf,
    /// This node's private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Name to check in peers' certificates.
    #[arg(long, default_value = ps_transport::DEFAULT_SERVER_NAME)]
    pub server_name: String,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub progress: crate::progress::ProgressArgs,
    /// Address to listen on, e.g. 0.0.0.0:7000.
    #[arg(long)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address to serve workers on.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Address workers should dial (default: the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where this shard keeps its checkpoints (DIR/shard-N), when the job checkpoints; a shard
    /// started again with the same --id and directory restores the latest one.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Threads the shard serves on: its QUIC connections, and the decoding of pushes and the
    /// encoding of pull replies, which run outside the table's lock. One suits a host whose
    /// cores the workers use; a shard host of its own may give it more.
    #[arg(long, default_value_t = 1, value_parser = server_threads)]
    pub threads: usize,
}

/// A shard's thread count: 1 to 256.
pub fn server_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=256) => Ok(n),
        _ => Err(format!("expected a thread count from 1 to 256, got {s:?}")),
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Compute device: auto, cpu, cpu-resident (the GPU path on CPU oracles), cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// A directory that outlives this worker's process, where it keeps what an exact replay
    /// needs if it dies and rejoins under `--on-worker-failure wait` (LDA's moves, and a
    /// snapshot of its assignments once the shards hold the clocks before for good; the same
    /// directory for the worker's every life; `local` makes one).
    #[arg(long)]
    pub state_dir: Option<std::path::PathBuf>,
}

/// What every shard and worker takes: where the coordinator is, who it is, how it sends.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Coordinator address.
    #[arg(long)]
    pub coordinator: SocketAddr,
    /// Shard or worker id to ask for (default: the next free one).
    #[arg(long)]
    pub id: Option<u32>,
    /// Emulate a link on everything this node sends (see `local --link`).
    #[arg(long)]
    pub link: Option<ps_transport::LinkSpec>,
    #[command(flatten)]
    pub packets: PacketArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The packet-size ceiling of a node's QUIC endpoint.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PacketArgs {
    /// Largest UDP payload path-MTU discovery may reach, in bytes: 8952 for a network of
    /// 9000-byte jumbo frames. Default 1472 (Ethernet), 16384 when the coordinator is on loopback.
    /// Discovery starts small and never goes past what the path carries.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1200..=65527))]
    pub max_packet: Option<u16>,
    /// How packets are protected after the TLS handshake: `aead` (AES-GCM, the default) or
    /// `none` (trusted networks only: no encryption and no integrity tag, for about 1.4x the
    /// bytes per CPU second on loopback). `none` applies to a connection only when both ends
    /// ask for it; certificates are checked either way.
    #[arg(long, default_value_t = ps_transport::PacketProtection::Aead)]
    pub packet_protection: ps_transport::PacketProtection,
}

impl PacketArgs {
    /// `options` with this ceiling, if one was given, and this packet protection.
    pub fn apply(self, options: &mut ps_transport::EndpointOptions) {
        if let Some(max) = self.max_packet {
            options.max_udp_payload = max;
            options.initial_mtu = options.initial_mtu.min(max);
        }
        options.packet_protection = self.packet_protection;
    }

    /// The flags that give a child process these settings.
    pub fn to_args(self) -> Vec<String> {
        let mut args = vec![
            "--packet-protection".to_string(),
            self.packet_protection.to_string(),
        ];
        if let Some(max) = self.max_packet {
            args.extend(["--max-packet".to_string(), max.to_string()]);
        }
        args
    }
}

impl NodeArgs {
    /// Endpoint options: loopback tuning when the coordinator is on loopback, the peer name to
    /// check, the emulated link if any, and the packet-size ceiling if given.
    pub fn endpoint_options(&self) -> ps_transport::EndpointOptions {
        let mut options = if self.coordinator.ip().is_loopback() {
            ps_transport::EndpointOptions::for_loopback()
        } else {
            ps_transport::EndpointOptions::default()
        };
        options.server_name = self.tls.server_name.clone();
        options.link = self.link;
        self.packets.apply(&mut options);
        options
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca.key, NODE.pem and NODE.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Node names, comma-separated (e.g. coordinator,shard-0,shard-1,worker-0).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Extra host names or IP addresses to put in every certificate.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
}

fn parse_staleness(s: &str) -> Result<Staleness, String> {
    Staleness::parse(s).map_err(|e| e.to_string())
}

/// `PROB:FACTOR`, PROB in (0, 1], FACTOR in 1..=1000.
pub fn parse_straggle(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("expected PROB:FACTOR (e.g. 0.1:4), got {s:?}");
    let (p, f) = s.split_once(':').ok_or_else(bad)?;
    let (p, f): (f64, f64) = (
        p.trim().parse().map_err(|_| bad())?,
        f.trim().parse().map_err(|_| bad())?,
    );
    if !(p > 0.0 && p <= 1.0) {
        return Err(format!("{s:?}: PROB must be in (0, 1]"));
    }
    if !(f.is_finite() && (1.0..=1000.0).contains(&f)) {
        return Err(format!("{s:?}: FACTOR must be in 1..=1000"));
    }
    Ok((p, f))
}

fn parse_pair(s: &str) -> Result<(u32, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected A:B, got {s:?}"))?;
    Ok((
        a.parse().map_err(|e| format!("{a:?}: {e}"))?,
        b.parse().map_err(|e| format!("{b:?}: {e}"))?,
    ))
}

impl JobArgs {
    /// Checks the flags every app shares; each app's plan checks its own.
    pub fn validate(&self) -> Result<()> {
        if self.deterministic && self.staleness != Staleness::Bounded(0) {
            bail!("--deterministic needs --staleness 0 (with staleness, what a read sees depends on timing)");
        }
        if self.clocks == Some(0) {
            bail!("--clocks must be at least 1");
        }
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be in 1..=256");
        }
        Ok(())
    }

    /// The settings the apps' plans see.
    pub fn common(&self, workers: u32) -> ps_apps::app::JobCommon {
        ps_apps::app::JobCommon {
            workers,
            seed: self.seed,
            threads: self.threads,
            staleness: match self.staleness {
                Staleness::Bounded(s) => Some(s),
                Staleness::Unbounded => None,
            },
            push_codec: self.push_codec.clone(),
            pull_codec: self.pull_codec.clone(),
        }
    }
}

impl ClusterArgs {
    pub fn validate(&self) -> Result<()> {
        if self.servers == 0 || self.workers == 0 {
            bail!("--servers and --workers must be at least 1");
        }
        if self.servers > 256 || self.workers > 1024 {
            bail!("at most 256 servers and 1024 workers");
        }
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            bail!("--heartbeat-timeout must be positive");
        }
        self.recovery.validate()
    }

    pub fn limits(&self) -> ps_proto::Limits {
        ps_proto::Limits {
            max_frame_bytes: self.max_frame_mib.max(1) << 20,
            ..Default::default()
        }
    }
}

impl TlsArgs {
    pub fn identity(&self) -> Result<ps_transport::ClusterIdentity> {
        ps_transport::ClusterIdentity::load(&ps_transport::CertPaths {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
        .context("loading certificates")
    }
}

fn parse_codec(s: &str) -> Result<ps_proto::codec::CodecChain, String> {
    s.parse().map_err(|e: ps_proto::ProtoError| e.to_string())
}

fn parse_pull_codec(s: &str) -> Result<ps_proto::codec::CodecChain, String> {
    let c = parse_codec(s)?;
    if c.is_sparse() {
        return Err(format!(
            "{s}: pull replies carry values, not deltas: use raw, f16 or bf16"
        ));
    }
    Ok(c)
}

/// `--reads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadsArg {
    Fresh,
    Overlapped,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Node {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn options(args: &[&str]) -> Result<ps_transport::EndpointOptions, clap::Error> {
        let tls = ["--ca", "ca.pem", "--cert", "n.pem", "--key", "n.key"];
        let all = ["node"].iter().chain(args).chain(&tls);
        Node::try_parse_from(all).map(|n| n.node.endpoint_options())
    }

    #[test]
    fn the_packet_ceiling_reaches_the_endpoint_and_only_when_given() {
        let lan = options(&["--coordinator", "10.0.0.5:7000"]).unwrap();
        assert_eq!(lan.max_udp_payload, 1472);
        let jumbo = options(&["--coordinator", "10.0.0.5:7000", "--max-packet", "8952"]).unwrap();
        assert_eq!((jumbo.initial_mtu, jumbo.max_udp_payload), (1200, 8952));
        let loopback = options(&["--coordinator", "127.0.0.1:7000"]).unwrap();
        assert_eq!(loopback.max_udp_payload, 16_384);
        // Under loopback's 4096-byte start, the start comes down to the ceiling.
        let low = options(&["--coordinator", "127.0.0.1:7000", "--max-packet", "2000"]).unwrap();
        assert_eq!((low.initial_mtu, low.max_udp_payload), (2000, 2000));
        for bad in ["1199", "65528", "big"] {
            let e = options(&["--coordinator", "10.0.0.5:7000", "--max-packet", bad]);
            assert!(e.is_err(), "--max-packet {bad} was taken");
        }
    }
}
