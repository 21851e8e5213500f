//! `PsClient`: one worker's connection to every shard, its clock, cache and metrics. Reads are in
//! `read.rs`, the end of a clock in `clock.rs`, table handles in `table.rs`.

use crate::cache::TableCache;
use crate::error::ClientError;
use crate::keys::KeyCaches;
use crate::links::{Restarts, ShardLinks};
use crate::prefetch::Prefetch;
use crate::retained::Retained;
use crate::wire::Traffic;
use ps_proto::{ClockReport, Limits, ShardMap, TableSpec, UpdateRule};
use ps_ssp::{Staleness, WorkerClock};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub worker: u32,
    pub num_workers: u32,
    pub shard_map: ShardMap,
    pub limits: Limits,
    pub server_name: String,
    /// Largest push or pull frame body the client builds (rows are split across frames).
    pub max_frame_body: u64,
    /// Overlap communication with compute: `clock()` returns while its push travels, and the rows
    /// read in a clock are prefetched for the next. Off: `clock()` waits for every shard's ack
    /// (the wait counts as blocked time) and nothing is prefetched.
    pub overlap: bool,
    /// Which cached rows reads may use: only those pulled for the current clock (the default),
    /// or those pulled for the previous one too, so the pull hides behind compute.
    pub reads: ps_ssp::Reads,
    /// The job restarts dead shards from checkpoints: keep every batch no checkpoint covers,
    /// and wait for a shard whose connection died instead of failing.
    pub restartable: bool,
    /// How long to wait for a dead shard to come back.
    pub restart_wait: std::time::Duration,
}

impl ClientConfig {
    pub fn new(worker: u32, num_workers: u32, shard_map: ShardMap) -> ClientConfig {
        ClientConfig {
            worker,
            num_workers,
            shard_map,
            limits: Limits::default(),
            server_name: ps_transport::DEFAULT_SERVER_NAME.to_string(),
            max_frame_body: 4 << 20,
            overlap: true,
            reads: ps_ssp::Reads::Fresh,
            restartable: false,
            restart_wait: std::time::Duration::from_secs(60),
        }
    }
}

pub(crate) struct TableState {
    pub spec: TableSpec,
    pub staleness: Staleness,
    pub cache: TableCache,
    /// Rows read in the current clock: what the next clock is expected to read, unless the
    /// caller said otherwise (`next_reads`).
    pub read_this_clock: HashSet<u64>,
    /// Rows the caller said the next clock reads (`Table::prefetch_next`).
    pub next_reads: Option<Vec<u64>>,
    /// Prefetches in flight, oldest first.
    pub prefetch: VecDeque<Prefetch>,
    /// Pull tickets handed out ([`PsClient::pull_async`]): while one lives, the own-update log
    /// is kept from its floor, as for a prefetch, since its replies may lack what was logged
    /// after it started. A ticket waited on or dropped lets its floor go.
    pub tickets: Vec<(std::sync::Weak<()>, u64)>,
}

/// State shared with background push tasks.
#[derive(Default)]
pub(crate) struct Shared {
    /// Per shard: how many of this worker's clocks it has applied (from acks).
    pub applied: Vec<u64>,
    pub failure: Option<String>,
}

pub struct PsClient {
    pub(crate) rt: Handle,
    pub(crate) cfg: ClientConfig,
    pub(crate) links: Arc<ShardLinks>,
    pub(crate) retained: Arc<Mutex<Retained>>,
    endpoint: quinn::Endpoint,
    restart_serial: Arc<tokio::sync::Mutex<()>>,
    pub(crate) tables: HashMap<u32, TableState>,
    pub(crate) clock: WorkerClock,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) in_flight: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) key_caches: Arc<Mutex<KeyCaches>>,
    pub(crate) reports_tx: mpsc::UnboundedSender<ClockReport>,
    pub(crate) reports_rx: Option<mpsc::UnboundedReceiver<ClockReport>>,
    pub(crate) clock_started: Instant,
    pub(crate) blocked_s: f64,
    /// Seconds the last [`PsClient::clock`] spent folding acknowledged pushes (reported with
    /// the next clock, whose compute time it is part of).
    pub(crate) fold_s: f64,
    /// The next clock sends every lossy table's residual too (see [`PsClient::last_clock`]).
    pub(crate) flush_residual: bool,
    pub(crate) pull_comm_s: f64,
    pub(crate) pull_traffic: Traffic,
    /// App figures of the current clock, as they travel in its report.
    pub(crate) figures: BTreeMap<String, f64>,
    /// Reused buffer for composing streamed rows.
    pub(crate) scratch: Vec<f32>,
    /// The same for runs handed on by their entries.
    pub(crate) sparse_scratch: ps_proto::SparseRowsBuf,
}

pub(crate) fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock_keys(m: &Mutex<KeyCaches>) -> std::sync::MutexGuard<'_, KeyCaches> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PsClient {
    /// Connects to every shard of `cfg.shard_map` from `endpoint`, on runtime `rt`.
    pub fn connect(
        rt: Handle,
        endpoint: &quinn::Endpoint,
        cfg: ClientConfig,
    ) -> Result<PsClient, ClientError> {
        let map = &cfg.shard_map;
        if map.shards.is_empty() {
            return Err(ClientError::BadShardMap("no shards".into()));
        }
        let mut tables = HashMap::new();
        for t in &map.tables {
            if t.width == 0 || t.rows == 0 {
                return Err(ClientError::BadShardMap(format!(
                    "table {} has no cells",
                    t.id
                )));
            }
            tables.insert(
                t.id,
                TableState {
                    spec: t.clone(),
                    staleness: t
                        .staleness
                        .map(Staleness::Bounded)
                        .unwrap_or(Staleness::Unbounded),
                    cache: TableCache::new(t.width as usize, t.rule == UpdateRule::Add),
                    read_this_clock: HashSet::new(),
                    next_reads: None,
                    prefetch: VecDeque::new(),
                    tickets: Vec::new(),
                },
            );
        }
        let mut conns = Vec::new();
        for (i, addr) in map.shards.iter().enumerate() {
            let sa: SocketAddr = addr.parse().map_err(|e| {
                ClientError::BadShardMap(format!("shard {i} address {addr:?}: {e}"))
            })?;
            let conn = rt
                .block_on(ps_transport::connect(endpoint, sa, &cfg.server_name))
                .map_err(|e| ClientError::Shard {
                    shard: i as u32,
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            conns.push(conn);
        }
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let n = conns.len();
        let links = ShardLinks::new(conns, map.shards.clone(), cfg.restartable, cfg.restart_wait);
        Ok(PsClient {
            rt,
            shared: Arc::new(Mutex::new(Shared {
                applied: vec![0; n],
                failure: None,
            })),
            links: Arc::new(links),
            retained: Arc::new(Mutex::new(Retained::new(n, cfg.restartable))),
            endpoint: endpoint.clone(),
            restart_serial: Arc::default(),
            cfg,
            tables,
            clock: WorkerClock::new(),
            in_flight: Vec::new(),
            key_caches: Arc::default(),
            reports_tx,
            reports_rx: Some(reports_rx),
            clock_started: Instant::now(),
            blocked_s: 0.0,
            fold_s: 0.0,
            flush_residual: false,
            pull_comm_s: 0.0,
            pull_traffic: Traffic::default(),
            figures: BTreeMap::new(),
            scratch: Vec::new(),
            sparse_scratch: ps_proto::SparseRowsBuf::default(),
        })
    }

    pub fn worker(&self) -> u32 {
        self.cfg.worker
    }

    /// What the worker's control task needs to bring back a shard that restarted.
    pub fn restarts(&self) -> Restarts {
        Restarts {
            links: self.links.clone(),
            retained: self.retained.clone(),
            keys: self.key_caches.clone(),
            shared: self.shared.clone(),
            endpoint: self.endpoint.clone(),
            server_name: self.cfg.server_name.clone(),
            limits: self.cfg.limits,
            worker: self.cfg.worker,
            serial: self.restart_serial.clone(),
        }
    }

    pub fn num_workers(&self) -> u32 {
        self.cfg.num_workers
    }

    /// How many of this worker's first clocks every shard holds for good (see
    /// [`Retained::durable`]): a worker that may rejoin need not keep what replaying them
    /// would take. Acks arrive in the background, so this lags the clocks pushed.
    pub fn durable_clocks(&self) -> u64 {
        let applied = (self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied)
            .clone();
        let retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        retained.durable(&applied)
    }

    /// The clock this worker is in (number of clocks it has ended).
    pub fn current_clock(&self) -> u64 {
        self.clock.current()
    }

    /// Per-clock reports, sent once every shard has acknowledged that clock's push. Take once.
    pub fn take_reports(&mut self) -> Option<mpsc::UnboundedReceiver<ClockReport>> {
        self.reports_rx.take()
    }

    /// The specs of every table of the job.
    pub fn specs(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values().map(|t| &t.spec)
    }

    pub fn spec(&self, id: u32) -> Option<&TableSpec> {
        self.tables.get(&id).map(|t| &t.spec)
    }

    /// Seconds the current clock has waited in reads so far (the clock report's `blocked_s`).
    pub fn blocked_so_far(&self) -> f64 {
        self.blocked_s
    }

    /// The application's figures of the current clock (e.g. a struct of squared-error sums and
    /// counts), reported with the clock's metrics when it ends. Every field must be a number:
    /// the coordinator adds them up over workers. Replaces figures set earlier in the clock.
    pub fn set_figures<T: serde::Serialize>(&mut self, figures: &T) -> Result<(), ClientError> {
        self.figures = ps_proto::report::to_sums(figures)?;
        Ok(())
    }

    pub(crate) fn check_failure(&self) -> Result<(), ClientError> {
        match &lock(&self.shared).failure {
            Some(f) => Err(ClientError::PushFailed(f.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn state(&self, id: u32) -> Result<&TableState, ClientError> {
        self.tables.get(&id).ok_or(ClientError::UnknownTable(id))
    }

    pub(crate) fn state_mut(&mut self, id: u32) -> Result<&mut TableState, ClientError> {
        self.tables
            .get_mut(&id)
            .ok_or(ClientError::UnknownTable(id))
    }
}
