//! `PsClient`: one worker's connection to every shard, its clock, cache and metrics.

use crate::cache::{CachedRow, TableCache};
use crate::error::ClientError;
use crate::keys::KeyCaches;
use crate::push;
use crate::wire::{pull, push_batch, Traffic};
use ps_proto::{ClockReport, Frame, KeyForm, Limits, ShardMap, TableSpec, UpdateRule, HEADER_LEN};
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
        }
    }
}

struct TableState {
    spec: TableSpec,
    staleness: Staleness,
    cache: TableCache,
    /// Rows read in the current clock: what the next clock is expected to read.
    read_this_clock: HashSet<u64>,
    /// Prefetches in flight, oldest first.
    prefetch: VecDeque<Prefetch>,
}

type PullReplies =
    Vec<Result<(u32, Result<(Frame, Traffic), ClientError>), tokio::task::JoinError>>;

/// Pulls started when a clock ended, for the rows a later clock will read.
struct Prefetch {
    handle: tokio::task::JoinHandle<(PullReplies, f64)>,
    /// The clocks its rows are complete through, at least.
    need: u64,
    /// The lowest own-clock count any shard had acknowledged when the prefetch started: its replies
    /// report at least this, so the own-update log is kept from here while it is in flight.
    floor: u64,
}

/// State shared with background push tasks.
#[derive(Default)]
struct Shared {
    /// Per shard: how many of this worker's clocks it has applied (from acks).
    applied: Vec<u64>,
    failure: Option<String>,
}

pub struct PsClient {
    rt: Handle,
    cfg: ClientConfig,
    conns: Vec<quinn::Connection>,
    tables: HashMap<u32, TableState>,
    clock: WorkerClock,
    shared: Arc<Mutex<Shared>>,
    in_flight: Vec<tokio::task::JoinHandle<()>>,
    key_caches: Arc<Mutex<KeyCaches>>,
    reports_tx: mpsc::UnboundedSender<ClockReport>,
    reports_rx: Option<mpsc::UnboundedReceiver<ClockReport>>,
    clock_started: Instant,
    blocked_s: f64,
    pull_comm_s: f64,
    pull_traffic: Traffic,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_keys(m: &Mutex<KeyCaches>) -> std::sync::MutexGuard<'_, KeyCaches> {
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
                    cache: TableCache::new(t.rule == UpdateRule::Add),
                    read_this_clock: HashSet::new(),
                    prefetch: VecDeque::new(),
                },
            );
        }
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        Ok(PsClient {
            rt,
            shared: Arc::new(Mutex::new(Shared {
                applied: vec![0; conns.len()],
                failure: None,
            })),
            conns,
            cfg,
            tables,
            clock: WorkerClock::new(),
            in_flight: Vec::new(),
            key_caches: Arc::default(),
            reports_tx,
            reports_rx: Some(reports_rx),
            clock_started: Instant::now(),
            blocked_s: 0.0,
            pull_comm_s: 0.0,
            pull_traffic: Traffic::default(),
        })
    }

    pub fn worker(&self) -> u32 {
        self.cfg.worker
    }

    pub fn num_workers(&self) -> u32 {
        self.cfg.num_workers
    }

    /// The clock this worker is in (number of clocks it has ended).
    pub fn current_clock(&self) -> u64 {
        self.clock.current()
    }

    /// Per-clock reports, sent once every shard has acknowledged that clock's push. Take once.
    pub fn take_reports(&mut self) -> Option<mpsc::UnboundedReceiver<ClockReport>> {
        self.reports_rx.take()
    }

    /// A handle on table `id`.
    pub fn table(&mut self, id: u32) -> Result<Table<'_>, ClientError> {
        if !self.tables.contains_key(&id) {
            return Err(ClientError::UnknownTable(id));
        }
        Ok(Table { client: self, id })
    }

    pub fn spec(&self, id: u32) -> Option<&TableSpec> {
        self.tables.get(&id).map(|t| &t.spec)
    }

    fn check_failure(&self) -> Result<(), ClientError> {
        match &lock(&self.shared).failure {
            Some(f) => Err(ClientError::PushFailed(f.clone())),
            None => Ok(()),
        }
    }

    /// Reads `rows` of table `id` complete through at least `need` clocks of every worker,
    /// appending them to `out`.
    fn read_with(
        &mut self,
        id: u32,
        rows: &[u64],
        need: u64,
        out: &mut Vec<f32>,
    ) -> Result<(), ClientError> {
        self.check_failure()?;
        let nshards = self.conns.len() as u32;
        let t = self.tables.get(&id).ok_or(ClientError::UnknownTable(id))?;
        let (width, nrows) = (t.spec.width, t.spec.rows);
        if let Some(&row) = rows.iter().find(|r| **r >= nrows) {
            return Err(ClientError::RowOutOfRange {
                table: id,
                row,
                rows: nrows,
            });
        }
        // Prefetches started at earlier clock boundaries may carry these rows: take those that
        // have arrived, and wait for more (oldest first) only while the cache cannot serve the
        // read; the others travel on behind compute.
        while let Some(t) = self.tables.get_mut(&id) {
            let finished = t.prefetch.iter().position(|p| p.handle.is_finished());
            let p = match finished {
                Some(i) => t.prefetch.remove(i),
                None => {
                    let t = &self.tables[&id];
                    if t.prefetch.is_empty() || rows.iter().all(|r| self.cache_serves(t, *r, need))
                    {
                        break;
                    }
                    self.tables
                        .get_mut(&id)
                        .and_then(|t| t.prefetch.pop_front())
                }
            };
            let Some(p) = p else { break };
            let started = Instant::now();
            let (replies, took) = self
                .rt
                .block_on(p.handle)
                .map_err(|e| ClientError::PushFailed(format!("prefetch task: {e}")))?;
            self.blocked_s += started.elapsed().as_secs_f64();
            self.pull_comm_s += took;
            self.ingest(id, width, replies)?;
        }
        let t = self
            .tables
            .get_mut(&id)
            .ok_or(ClientError::UnknownTable(id))?;
        if self.cfg.overlap {
            t.read_this_clock.extend(rows.iter().copied());
        }
        let t = self.tables.get(&id).ok_or(ClientError::UnknownTable(id))?;
        // Misses, grouped by shard, split into frames under the size cap. Under bounded staleness a
        // cached row serves while it is complete through `need`. Under unbounded staleness any
        // row satisfies the contract, so each row is refreshed once per clock by a pull that does
        // not wait for other workers: reads then see others' progress without ever blocking on it.
        let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for &r in rows {
            if !self.cache_serves(t, r, need) {
                by_shard
                    .entry(ShardMap::shard_of(nrows, nshards, r))
                    .or_default()
                    .push(r);
            }
        }
        if !by_shard.is_empty() {
            let handle = self.spawn_pulls(id, width, by_shard.into_values().flatten(), need);
            let started = Instant::now();
            let (replies, took) = self
                .rt
                .block_on(handle)
                .map_err(|e| ClientError::PushFailed(format!("pull task: {e}")))?;
            self.blocked_s += started.elapsed().as_secs_f64();
            self.pull_comm_s += took;
            self.ingest(id, width, replies)?;
        }
        let t = self.tables.get(&id).ok_or(ClientError::UnknownTable(id))?;
        out.reserve(rows.len() * width as usize);
        for &r in rows {
            if !t.cache.compose(r, out) {
                return Err(ps_proto::ProtoError::Protocol(format!(
                    "row {r} of table {id} missing after its pull"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Whether the cached copy of `row` serves a read that needs `need` clocks. Under unbounded
    /// staleness any row satisfies the contract, so each row is refreshed once per clock by a
    /// pull that never waits for other workers: reads see others' progress without blocking.
    fn cache_serves(&self, t: &TableState, row: u64, need: u64) -> bool {
        t.cache.rows.get(&row).is_some_and(|c| {
            c.min_clock >= need
                && (!t.staleness.is_unbounded() || c.fetched_at == self.clock.current())
        })
    }

    /// Starts pulls of `rows` of table `id` complete through `need`, grouped by shard and split
    /// under the frame cap. The task yields every reply and the seconds the pulls took.
    fn spawn_pulls(
        &self,
        id: u32,
        width: u32,
        rows: impl IntoIterator<Item = u64>,
        need: u64,
    ) -> tokio::task::JoinHandle<(PullReplies, f64)> {
        let nshards = self.conns.len() as u32;
        let nrows = self.tables.get(&id).map(|t| t.spec.rows).unwrap_or(0);
        let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for r in rows {
            by_shard
                .entry(ShardMap::shard_of(nrows, nshards, r))
                .or_default()
                .push(r);
        }
        let per_frame = ((self.cfg.max_frame_body / (8 + 4 * width as u64)).max(1)) as usize;
        let mut requests = Vec::new();
        for (s, mut keys) in by_shard {
            keys.sort_unstable();
            keys.dedup();
            for chunk in keys.chunks(per_frame) {
                requests.push((s, chunk.to_vec()));
            }
        }
        let (conns, limits, worker) = (self.conns.clone(), self.cfg.limits, self.cfg.worker);
        let caches = self.key_caches.clone();
        let requests: Vec<_> = {
            let mut c = lock_keys(&caches);
            requests
                .into_iter()
                .map(|(s, keys)| {
                    let form = c.form(s, id, &keys);
                    (s, keys, form)
                })
                .collect()
        };
        self.rt.spawn(async move {
            let started = Instant::now();
            let tasks: Vec<_> = requests
                .into_iter()
                .map(|(s, keys, form)| {
                    let conn = conns[s as usize].clone();
                    let caches = caches.clone();
                    tokio::spawn(async move {
                        let r = pull(&conn, &limits, id, worker, need, width, &keys, form).await;
                        if let (Ok(_), KeyForm::Assign(k)) = (&r, form) {
                            lock_keys(&caches).confirm(s, id, k);
                        }
                        (s, r)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            (out, started.elapsed().as_secs_f64())
        })
    }

    /// Puts pulled rows into the cache, tagged with the clocks they are complete through.
    fn ingest(&mut self, id: u32, width: u32, replies: PullReplies) -> Result<(), ClientError> {
        let current = self.clock.current();
        let addrs = &self.cfg.shard_map.shards;
        let t = self
            .tables
            .get_mut(&id)
            .ok_or(ClientError::UnknownTable(id))?;
        for joined in replies {
            let (s, r) = joined.map_err(|e| ClientError::PushFailed(format!("pull task: {e}")))?;
            let (reply, traffic) = r.map_err(|e| ClientError::Shard {
                shard: s,
                addr: addrs[s as usize].clone(),
                reason: e.to_string(),
            })?;
            self.pull_traffic.add(traffic);
            let values = reply.values()?;
            let (min_clock, own_clock) = (reply.header.clock, reply.header.aux);
            for (k, v) in reply.keys.iter().zip(values.chunks_exact(width as usize)) {
                // Prefetches may land out of order: never replace a fresher copy.
                if t.cache.rows.get(k).is_some_and(|c| c.min_clock > min_clock) {
                    continue;
                }
                t.cache.rows.insert(
                    *k,
                    CachedRow {
                        values: v.to_vec(),
                        min_clock,
                        own_clock,
                        fetched_at: current,
                    },
                );
            }
        }
        Ok(())
    }

    /// Ends the current clock: seals its updates, hands them to background push tasks (one per
    /// shard; every shard gets a clock frame even when it has no rows), and returns at once.
    /// `sums` are app figures reported with this clock's metrics.
    pub fn clock_with(&mut self, sums: BTreeMap<String, f64>) -> Result<u64, ClientError> {
        self.check_failure()?;
        let ended = self.clock.tick();
        let worker = self.cfg.worker;
        let nshards = self.conns.len() as u32;
        let max_body = self.cfg.max_frame_body;
        let mut per_shard: Vec<Vec<Frame>> = vec![Vec::new(); nshards as usize];
        let mut ids: Vec<u32> = self.tables.keys().copied().collect();
        ids.sort_unstable();
        let mut push_logical = 0u64;
        for id in ids {
            let Some(t) = self.tables.get_mut(&id) else {
                continue;
            };
            push_logical += push::encode_table(
                &t.spec,
                &mut t.cache,
                worker,
                ended,
                max_body,
                &mut per_shard,
            )?;
        }
        push_logical += push::end_batches(worker, ended, &mut per_shard);
        // Repeated key lists go by reference; lists sent to be stored are confirmed by the ack.
        let mut assigned: Vec<Vec<(u32, u32)>> = vec![Vec::new(); nshards as usize];
        {
            let mut caches = lock_keys(&self.key_caches);
            for (s, frames) in per_shard.iter_mut().enumerate() {
                for f in frames.iter_mut().filter(|f| f.key_form == KeyForm::List) {
                    if f.header.kind != ps_proto::Kind::Push {
                        continue;
                    }
                    let form = caches.form(s as u32, f.header.table, &f.keys);
                    if let KeyForm::Assign(k) = form {
                        assigned[s].push((f.header.table, k));
                    }
                    if form != KeyForm::List {
                        f.set_key_form(form);
                    }
                }
            }
        }
        let caches = self.key_caches.clone();
        let now = Instant::now();
        let wall = now.duration_since(self.clock_started).as_secs_f64();
        let mut report = ClockReport {
            worker,
            clock: ended,
            compute_s: (wall - self.blocked_s).max(0.0),
            blocked_s: self.blocked_s,
            comm_s: self.pull_comm_s,
            overlap_s: 0.0,
            bytes_sent: self.pull_traffic.sent,
            bytes_received: self.pull_traffic.received,
            bytes_logical: self.pull_traffic.logical_sent + push_logical,
            push_bytes: 0,
            push_bytes_logical: push_logical,
            sums,
        };
        self.clock_started = now;
        self.blocked_s = 0.0;
        self.pull_comm_s = 0.0;
        self.pull_traffic = Traffic::default();

        let limits = self.cfg.limits;
        let conns = self.conns.clone();
        let addrs = self.cfg.shard_map.shards.clone();
        let shared = self.shared.clone();
        let reports = self.reports_tx.clone();
        let push = async move {
            let started = Instant::now();
            let tasks: Vec<_> = per_shard
                .into_iter()
                .enumerate()
                .map(|(s, frames)| {
                    let conn = conns[s].clone();
                    tokio::spawn(async move { (s, push_batch(&conn, &limits, frames).await) })
                })
                .collect();
            let mut push_s = 0.0f64;
            for t in tasks {
                match t.await {
                    Ok((s, Ok((applied, traffic)))) => {
                        for &(table, k) in &assigned[s] {
                            lock_keys(&caches).confirm(s as u32, table, k);
                        }
                        let mut sh = lock(&shared);
                        sh.applied[s] = sh.applied[s].max(applied);
                        report.bytes_sent += traffic.sent;
                        report.push_bytes += traffic.sent;
                        report.bytes_received += traffic.received;
                        push_s = started.elapsed().as_secs_f64();
                    }
                    Ok((s, Err(e))) => {
                        let mut sh = lock(&shared);
                        sh.failure.get_or_insert(format!(
                            "push of clock {ended} to shard {s} at {}: {e}",
                            addrs[s]
                        ));
                        return None;
                    }
                    Err(e) => {
                        lock(&shared)
                            .failure
                            .get_or_insert(format!("push task: {e}"));
                        return None;
                    }
                }
            }
            report.comm_s += push_s;
            Some(report)
        };
        if self.cfg.overlap {
            let task = self.rt.spawn(async move {
                if let Some(mut r) = push.await {
                    r.overlap_s = (r.comm_s - r.blocked_s).max(0.0);
                    let _ = reports.send(r);
                }
            });
            self.in_flight.retain(|t| !t.is_finished());
            self.in_flight.push(task);
            self.start_prefetch(ended + 1);
        } else {
            let waited = Instant::now();
            if let Some(mut r) = self.rt.block_on(push) {
                r.blocked_s += waited.elapsed().as_secs_f64();
                r.overlap_s = (r.comm_s - r.blocked_s).max(0.0);
                let _ = reports.send(r);
            }
            self.clock_started = Instant::now();
        }
        self.fold_acknowledged();
        Ok(ended)
    }

    /// Prefetches the rows each table read in the clock that just ended, for the clock they will
    /// be needed at. Under staleness 0 that is clock `next`: the pull parks at the shards until
    /// every worker has pushed, and the read at `next` waits for it. Under staleness s >= 1 the
    /// rows in the cache already serve `next` (they were prefetched one clock earlier), so the
    /// pull targets `next + 1`: it waits at the shards for this clock's pushes while the worker
    /// computes `next`, and its rows, one clock fresher than a pull made now would get, arrive
    /// behind that compute. So under staleness a prefetch starts every clock and up to two are
    /// in flight: that pulls every row every clock (a worker without overlap pulls late and gets
    /// rows that serve two clocks), trading pull bytes for never waiting on them.
    fn start_prefetch(&mut self, next: u64) {
        let floor = lock(&self.shared)
            .applied
            .iter()
            .copied()
            .min()
            .unwrap_or(0);
        let mut ids: Vec<u32> = self.tables.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(t) = self.tables.get_mut(&id) else {
                continue;
            };
            let mut rows = std::mem::take(&mut t.read_this_clock);
            let target = match t.staleness {
                Staleness::Bounded(s) if s >= 1 => next + 1,
                _ => next,
            };
            let (need, width) = (t.staleness.required_min_clock(target), t.spec.width);
            // Rows the cache will still serve next clock need no prefetch (unbounded tables
            // refresh every clock, so all of theirs do).
            if !t.staleness.is_unbounded() {
                rows.retain(|r| t.cache.rows.get(r).is_none_or(|c| c.min_clock < need));
            }
            if rows.is_empty() || t.prefetch.iter().any(|p| p.need >= need) || t.prefetch.len() >= 2
            {
                continue;
            }
            let handle = self.spawn_pulls(id, width, rows, need);
            if let Some(t) = self.tables.get_mut(&id) {
                t.prefetch.push_back(Prefetch {
                    handle,
                    need,
                    floor,
                });
            }
        }
    }

    /// Ends the current clock with no app figures.
    pub fn clock(&mut self) -> Result<u64, ClientError> {
        self.clock_with(BTreeMap::new())
    }

    fn fold_acknowledged(&mut self) {
        let applied = lock(&self.shared).applied.clone();
        let all = applied.iter().copied().min().unwrap_or(0);
        let nshards = applied.len() as u32;
        for t in self.tables.values_mut() {
            let rows = t.spec.rows;
            // Keep what an in-flight prefetch's replies may still need.
            let keep_from = t.prefetch.iter().map(|p| p.floor).fold(all, u64::min);
            t.cache.fold_acknowledged(
                |r| applied[ShardMap::shard_of(rows, nshards, r) as usize],
                keep_from,
            );
        }
    }

    /// Waits until every push so far is acknowledged.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let tasks = std::mem::take(&mut self.in_flight);
        self.rt.block_on(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        self.check_failure()?;
        self.fold_acknowledged();
        Ok(())
    }

    /// Bytes of one frame header (for callers estimating traffic).
    pub const FRAME_OVERHEAD: usize = HEADER_LEN;
}

/// A handle on one table of a `PsClient`.
pub struct Table<'a> {
    client: &'a mut PsClient,
    id: u32,
}

impl Table<'_> {
    fn state(&mut self) -> &mut TableState {
        // `table()` checked the id exists and tables are never removed.
        self.client
            .tables
            .get_mut(&self.id)
            .expect("table handle of a known table")
    }

    pub fn width(&self) -> u32 {
        self.client.tables[&self.id].spec.width
    }

    pub fn rows(&self) -> u64 {
        self.client.tables[&self.id].spec.rows
    }

    pub fn staleness(&self) -> Staleness {
        self.client.tables[&self.id].staleness
    }

    /// One row under the table's staleness.
    pub fn read_row(&mut self, row: u64) -> Result<Vec<f32>, ClientError> {
        self.read_rows(&[row])
    }

    /// Rows (concatenated) under the table's staleness: complete through every worker's clock
    /// `c - s - 1` and containing every update of this worker. Blocks while the slowest worker is
    /// too far behind.
    pub fn read_rows(&mut self, rows: &[u64]) -> Result<Vec<f32>, ClientError> {
        let need = self
            .staleness()
            .required_min_clock(self.client.clock.current());
        let mut out = Vec::new();
        self.client.read_with(self.id, rows, need, &mut out)?;
        Ok(out)
    }

    /// Rows complete through every worker's clocks before this worker's current clock, whatever the
    /// staleness: a barrier read, e.g. for the final model.
    pub fn read_rows_synced(&mut self, rows: &[u64]) -> Result<Vec<f32>, ClientError> {
        let need = self.client.clock.current();
        let mut out = Vec::new();
        self.client.read_with(self.id, rows, need, &mut out)?;
        Ok(out)
    }

    /// This clock's pending update of `row` (zeros if none yet), after checking the row exists.
    fn pending_row(&mut self, row: u64) -> Result<&mut Vec<f32>, ClientError> {
        let (table, width, rows) = (self.id, self.width(), self.rows());
        if row >= rows {
            return Err(ClientError::RowOutOfRange { table, row, rows });
        }
        Ok(self
            .state()
            .cache
            .pending
            .entry(row)
            .or_insert_with(|| vec![0.0; width as usize]))
    }

    /// Adds `delta` to cell (row, col) in this clock's update.
    pub fn inc(&mut self, row: u64, col: u32, delta: f32) -> Result<(), ClientError> {
        let (table, width) = (self.id, self.width());
        if col >= width {
            return Err(ClientError::ColumnOutOfRange { table, col, width });
        }
        self.pending_row(row)?[col as usize] += delta;
        Ok(())
    }

    /// Adds a whole row delta in this clock's update.
    pub fn inc_row(&mut self, row: u64, delta: &[f32]) -> Result<(), ClientError> {
        let (table, width) = (self.id, self.width());
        if delta.len() != width as usize {
            return Err(ClientError::WrongLength {
                table,
                got: delta.len(),
                width,
            });
        }
        for (a, b) in self.pending_row(row)?.iter_mut().zip(delta) {
            *a += *b;
        }
        Ok(())
    }
}
