//! Command-line flags of every role.

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
}

/// What to train and how: every flag that defines the job. Flags without a default here take
/// the app's own (see each app's `plan` and the README's table).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Application: mf (matrix factorisation), lda (topic model by Gibbs sampling), mlp (dense
    /// network classifier) or lr (sparse logistic regression).
    #[arg(long, default_value = "mf", value_parser = ["mf", "lda", "mlp", "lr"])]
    pub app: String,
    /// Read staleness: 0 (bulk synchronous), N, or inf (asynchronous).
    #[arg(long, default_value = "0", value_parser = parse_staleness)]
    pub staleness: Staleness,
    /// Clocks to run [default: mf 20, lda 30, mlp 15 epochs' worth, lr 3 epochs' worth (10 with
    /// --data)].
    #[arg(long)]
    pub clocks: Option<u64>,
    /// MF: factor rank [default: 8].
    #[arg(long)]
    pub rank: Option<u32>,
    /// Learning rate: MF and MLP SGD step, LR FTRL alpha [default: mf 0.025, mlp 0.1, lr 3 (0.3 with
    /// --data)].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate decay per epoch, MF and MLP [default: mf 0.95, mlp 0.95 (0.9 with --data)].
    #[arg(long)]
    pub lr_decay: Option<f32>,
    /// MF: L2 regularisation [default: 0.003].
    #[arg(long)]
    pub reg: Option<f32>,
    /// Seed for data generation, initialisation and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// MF and MLP: clocks per epoch (each clock visits the next slice of the epoch; the learning
    /// rate decays per epoch). More, smaller clocks push smaller deltas more often. LR runs one
    /// mini-batch per clock, so its clocks per epoch follow from --batch [default: 1, mlp with
    /// --data 4].
    #[arg(long)]
    pub clocks_per_epoch: Option<u32>,
    /// Training data instead of the built-in synthetic set. mf: ratings file (MovieLens u.data,
    /// ratings.csv, ratings.dat, or user,item,rating); lda: UCI docword file (see --vocab) or an
    /// lda-c file; mlp: directory of MNIST-style IDX files (gzipped or not); lr: libsvm file
    /// (see --test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Held-out test file: lr, a libsvm file (default: a split of --data).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// LDA: vocabulary file, one word per line (default: vocab.NAME.txt beside a
    /// docword.NAME.txt, if there).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Fraction of the data held out for testing when there is no separate test set
    /// [default: mf 0.1, lr 0.2].
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// LDA: number of topics [default: 10].
    #[arg(long)]
    pub topics: Option<u32>,
    /// LDA: Dirichlet prior of document-topic mixtures [default: 0.1].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// LDA: Dirichlet prior of topic-word distributions [default: 0.01].
    #[arg(long)]
    pub beta: Option<f64>,
    /// MLP and LR: mini-batch size per worker [default: mlp 32 (64 with --data), lr 256].
    #[arg(long)]
    pub batch: Option<u32>,
    /// LR: FTRL L1 strength [default: 0.05 (0.1 with --data)].
    #[arg(long)]
    pub l1: Option<f32>,
    /// LR: FTRL L2 strength [default: 0].
    #[arg(long)]
    pub l2: Option<f32>,
    /// MLP: hidden layer widths, comma-separated [default: 128,128 (256,256 with --data)].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Compute threads per worker (the fast CPU engines split a clock's work over them).
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
    /// Fault injection for tests and demos: WORKER:CLOCK:crash makes WORKER exit abruptly at
    /// CLOCK; WORKER:CLOCK:hang makes it stop (SIGSTOP), alive but silent.
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<Fault>,
}

/// An injected failure of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fault {
    pub worker: u32,
    pub clock: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Crash,
    Hang,
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
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Compute device for workers: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Keep the generated certificates in this directory instead of a temporary one.
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Emulate a network link on every worker-shard path: BANDWIDTH,LATENCY[,LOSS[,QUEUE]],
    /// e.g. 1gbit,100us or 100mbit,2ms,0.001 (each node's sending side is shaped, so a round
    /// trip sees the latency twice).
    #[arg(long)]
    pub link: Option<ps_transport::LinkSpec>,
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
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Compute device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// What every shard and worker takes: where the coordinator is, who it is, how it sends.
#[derive(Debug, Args)]
pub struct NodeArgs {
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
    pub tls: TlsArgs,
}

impl NodeArgs {
    /// Endpoint options: loopback tuning when the coordinator is on loopback, the peer name to
    /// check, and the emulated link if any.
    pub fn endpoint_options(&self) -> ps_transport::EndpointOptions {
        let mut options = if self.coordinator.ip().is_loopback() {
            ps_transport::EndpointOptions::for_loopback()
        } else {
            ps_transport::EndpointOptions::default()
        };
        options.server_name = self.tls.server_name.clone();
        options.link = self.link;
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
    /// Checks the flags every app shares; each app's `plan` checks its own and names the flags
    /// that do not apply to it.
    pub fn validate(&self) -> Result<()> {
        if self.deterministic && self.staleness != Staleness::Bounded(0) {
            bail!("--deterministic needs --staleness 0 (with staleness, what a read sees depends on timing)");
        }
        if self.clocks == Some(0) {
            bail!("--clocks must be at least 1");
        }
        if let Some(k) = self.clocks_per_epoch {
            if k == 0 || k > 10_000 {
                bail!("--clocks-per-epoch must be in 1..=10000");
            }
        }
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be in 1..=256");
        }
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr > 0.0) {
                bail!("--lr must be a positive number");
            }
        }
        if let Some(d) = self.lr_decay {
            if !(d.is_finite() && d > 0.0 && d <= 1.0) {
                bail!("--lr-decay must be in (0, 1]");
            }
        }
        for (name, v) in [("--reg", self.reg), ("--l1", self.l1), ("--l2", self.l2)] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    bail!("{name} must be >= 0");
                }
            }
        }
        if let Some(f) = self.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                bail!("--test-fraction must be in (0, 1)");
            }
        }
        let applies: &[(&str, bool, &[&str])] = &[
            ("--rank", self.rank.is_some(), &["mf"]),
            ("--reg", self.reg.is_some(), &["mf"]),
            ("--topics", self.topics.is_some(), &["lda"]),
            ("--alpha", self.alpha.is_some(), &["lda"]),
            ("--beta", self.beta.is_some(), &["lda"]),
            ("--vocab", self.vocab.is_some(), &["lda"]),
            ("--batch", self.batch.is_some(), &["mlp", "lr"]),
            ("--hidden", self.hidden.is_some(), &["mlp"]),
            ("--l1", self.l1.is_some(), &["lr"]),
            ("--l2", self.l2.is_some(), &["lr"]),
            ("--test", self.test.is_some(), &["lr"]),
            ("--lr-decay", self.lr_decay.is_some(), &["mf", "mlp"]),
            ("--lr", self.lr.is_some(), &["mf", "mlp", "lr"]),
            (
                "--test-fraction",
                self.test_fraction.is_some(),
                &["mf", "lr"],
            ),
            (
                "--clocks-per-epoch",
                self.clocks_per_epoch.is_some(),
                &["mf", "mlp"],
            ),
        ];
        for (flag, given, apps) in applies {
            if *given && !apps.contains(&self.app.as_str()) {
                bail!(
                    "{flag} does not apply to --app {} (it is for {})",
                    self.app,
                    apps.join(", ")
                );
            }
        }
        Ok(())
    }

    /// `data` made absolute (workers may run elsewhere in the file system), checked to exist.
    pub fn absolute(path: &Option<PathBuf>, what: &str) -> Result<Option<String>> {
        match path {
            Some(p) => Ok(Some(
                std::fs::canonicalize(p)
                    .with_context(|| format!("{what} {}", p.display()))?
                    .display()
                    .to_string(),
            )),
            None => Ok(None),
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
        Ok(())
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

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Local(a) => crate::local::run_local(a),
        Command::Coordinator(a) => crate::roles::run_coordinator_cli(a),
        Command::Server(a) => crate::roles::run_server(a),
        Command::Worker(a) => crate::roles::run_worker(a),
        Command::Certs(a) => {
            ps_transport::generate_cluster_certs(&a.out, &a.nodes, &a.names)?;
            println!(
                "wrote ca.pem, ca.key and {} node certificates to {}",
                a.nodes.len(),
                a.out.display()
            );
            Ok(())
        }
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
