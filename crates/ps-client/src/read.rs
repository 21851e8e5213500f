//! Reads: rows served from the cache when it is fresh enough for the staleness bound, pulled
//! from their shards otherwise; replies streamed to the caller shard by shard as they arrive;
//! asynchronous pulls; and prefetches of the next clock's rows started when a clock ends.

use crate::client::{lock, lock_keys, PsClient};
use crate::error::ClientError;
use crate::pending::strictly_sorted;
use crate::wire::{pull, Traffic};
use ps_proto::codec::Decoded;
use ps_proto::{Frame, KeyForm, ProtoError, ShardMap, SparseRows};
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Every reply frame of one shard for one read, or why the shard could not answer.
pub(crate) type ShardReplies = Result<Vec<(Frame, Traffic)>, ClientError>;

/// Replies of every shard of one read, and the seconds the pulls took.
pub(crate) type Pulled = (Vec<(u32, ShardReplies)>, f64);

/// Rows pulled without waiting ([`crate::Table::pull_async`]); [`PsClient::wait`] collects them.
pub struct PullTicket {
    pub(crate) table: u32,
    pub(crate) rows: Vec<u64>,
    pub(crate) handle: Option<JoinHandle<Pulled>>,
    /// The clock it was started in: its rows count as fetched for that clock.
    pub(crate) issued: u64,
    /// Holds the ticket's floor in the table's `tickets` while it lives.
    pub(crate) _floor: std::sync::Arc<()>,
}

impl PullTicket {
    pub fn table(&self) -> u32 {
        self.table
    }

    pub fn rows(&self) -> &[u64] {
        &self.rows
    }
}

/// One shard's run of rows of a streamed read, as handed to the reader.
#[derive(Debug, Clone, Copy)]
pub enum Run<'a> {
    /// The rows' values, row-major.
    Dense(&'a [f32]),
    /// The same rows by their entries (every other value `+0.0`), for a reader that asked for
    /// them, when the cache holds most of the run's rows that way and reads add nothing to
    /// them.
    Sparse(SparseRows<'a>),
}

/// Where a streamed read hands its rows: `(first, keys, run)`.
pub(crate) type RowSink<'a, E> = dyn FnMut(usize, &[u64], Run<'_>) -> Result<(), E> + 'a;

/// One shard's part of a read: (shard, frames of keys to pull, each with its key form).
/// One shard's pull frames: (shard, key cache epoch, [(keys, key form)]).
type ShardRequests = (u32, u64, Vec<(Vec<u64>, KeyForm)>);

impl PsClient {
    /// Groups `rows` by shard, splits them under the frame cap, and picks each frame's key form.
    fn requests(
        &self,
        id: u32,
        width: u32,
        rows: impl IntoIterator<Item = u64>,
    ) -> Vec<ShardRequests> {
        let nshards = self.links.len() as u32;
        let nrows = self.tables.get(&id).map(|t| t.spec.rows).unwrap_or(0);
        let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for r in rows {
            by_shard
                .entry(ShardMap::shard_of(nrows, nshards, r))
                .or_default()
                .push(r);
        }
        let per_frame = ps_proto::push_plan::rows_per_frame(width, self.cfg.max_frame_body);
        let mut caches = lock_keys(&self.key_caches);
        by_shard
            .into_iter()
            .map(|(s, mut keys)| {
                keys.sort_unstable();
                keys.dedup();
                let epoch = caches.epoch(s);
                let frames = keys
                    .chunks(per_frame)
                    .map(|chunk| (chunk.to_vec(), caches.form(s, id, chunk)))
                    .collect();
                (s, epoch, frames)
            })
            .collect()
    }

    /// A task pulling one shard's frames concurrently.
    fn pull_shard(
        &self,
        id: u32,
        width: u32,
        need: u64,
        req: ShardRequests,
    ) -> JoinHandle<ShardReplies> {
        let (s, epoch, frames) = req;
        let links = self.links.clone();
        let (limits, worker, caches) = (self.cfg.limits, self.cfg.worker, self.key_caches.clone());
        self.rt.spawn(async move {
            let tasks: Vec<_> = frames
                .into_iter()
                .map(|(keys, form)| {
                    let (links, caches) = (links.clone(), caches.clone());
                    tokio::spawn(async move {
                        // Sent again after a shard restart: listed, the new shard caches nothing.
                        let r = links
                            .with_link(s as usize, |conn, retry| {
                                let form = if retry { KeyForm::List } else { form };
                                let keys = &keys;
                                async move {
                                    pull(&conn, &limits, id, worker, need, width, keys, form).await
                                }
                            })
                            .await;
                        if let (Ok(_), KeyForm::Assign(k)) = (&r, form) {
                            lock_keys(&caches).confirm_at(s, id, k, epoch);
                        }
                        r
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                match t.await {
                    Ok(r) => out.push(r?),
                    Err(e) => return Err(ClientError::PushFailed(format!("pull task: {e}"))),
                }
            }
            Ok(out)
        })
    }

    /// Starts pulls of `rows` of table `id` complete through `need`; the task yields every
    /// shard's replies and the seconds the pulls took.
    pub(crate) fn spawn_pulls(
        &self,
        id: u32,
        width: u32,
        rows: impl IntoIterator<Item = u64>,
        need: u64,
    ) -> JoinHandle<Pulled> {
        let shards: Vec<_> = self
            .requests(id, width, rows)
            .into_iter()
            .map(|req| (req.0, self.pull_shard(id, width, need, req)))
            .collect();
        self.rt.spawn(async move {
            let started = Instant::now();
            let mut out = Vec::with_capacity(shards.len());
            for (s, h) in shards {
                let r = h
                    .await
                    .unwrap_or_else(|e| Err(ClientError::PushFailed(format!("pull task: {e}"))));
                out.push((s, r));
            }
            (out, started.elapsed().as_secs_f64())
        })
    }

    /// Starts pulls of `rows`, each shard's replies sent on the returned channel as soon as
    /// that shard has answered in full, with the seconds since the pulls started. Also returns
    /// the shards pulled from.
    pub(crate) fn spawn_streamed(
        &self,
        id: u32,
        width: u32,
        rows: impl IntoIterator<Item = u64>,
        need: u64,
    ) -> (mpsc::UnboundedReceiver<(u32, ShardReplies, f64)>, Vec<u32>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let requests = self.requests(id, width, rows);
        let shards = requests.iter().map(|r| r.0).collect();
        let started = Instant::now();
        for req in requests {
            let s = req.0;
            let h = self.pull_shard(id, width, need, req);
            let tx = tx.clone();
            self.rt.spawn(async move {
                let r = h
                    .await
                    .unwrap_or_else(|e| Err(ClientError::PushFailed(format!("pull task: {e}"))));
                let _ = tx.send((s, r, started.elapsed().as_secs_f64()));
            });
        }
        (rx, shards)
    }

    /// A shard's replies, or its failure named by shard and address.
    pub(crate) fn answered(
        &self,
        shard: u32,
        replies: ShardReplies,
    ) -> Result<Vec<(Frame, Traffic)>, ClientError> {
        replies.map_err(|e| ClientError::Shard {
            shard,
            addr: self.cfg.shard_map.shards[shard as usize].clone(),
            reason: e.to_string(),
        })
    }

    /// Puts one shard's pulled rows into the cache, tagged with the clocks they are complete
    /// through and as fetched in clock `fetched`.
    pub(crate) fn ingest_frames(
        &mut self,
        id: u32,
        frames: &[(Frame, Traffic)],
        fetched: u64,
    ) -> Result<(), ClientError> {
        let width = self.state(id)?.spec.width as usize;
        for (reply, traffic) in frames {
            self.pull_traffic.add(*traffic);
            let (min_clock, own_clock) = (reply.header.clock, reply.header.aux);
            let decoded;
            let dense: &[f32] = match reply.raw_f32() {
                Some(values) => values,
                None => {
                    decoded = reply.decoded()?;
                    match &decoded {
                        Decoded::Dense(values) => values,
                        Decoded::Sparse { indices, values } => {
                            let cache = &mut self.state_mut(id)?.cache;
                            let at = (min_clock, own_clock, fetched);
                            cache.store_sparse(&reply.keys, indices, values, at)?;
                            continue;
                        }
                    }
                }
            };
            let cache = &mut self.state_mut(id)?.cache;
            if dense.len() != reply.keys.len() * width {
                return Err(ProtoError::Malformed(format!(
                    "a reply of {} values for {} rows of {width}",
                    dense.len(),
                    reply.keys.len()
                ))
                .into());
            }
            for (k, v) in reply.keys.iter().zip(dense.chunks_exact(width)) {
                cache.store(*k, v, min_clock, own_clock, fetched);
            }
        }
        Ok(())
    }

    /// Every shard's replies of one pull issued in clock `fetched`, after `waited` seconds
    /// blocked on them.
    fn ingest_all(
        &mut self,
        id: u32,
        (replies, took): Pulled,
        waited: f64,
        fetched: u64,
    ) -> Result<(), ClientError> {
        self.blocked_s += waited;
        self.pull_comm_s += took;
        for (s, r) in replies {
            let frames = self.answered(s, r)?;
            self.ingest_frames(id, &frames, fetched)?;
        }
        Ok(())
    }

    /// Whether the cached copy of `row` serves a read that needs `need` clocks: complete
    /// through them, and pulled recently enough for the client's read policy
    /// ([`ps_ssp::serves_read`]). Under [`ps_ssp::Reads::Fresh`] each row is pulled once a clock
    /// (the prefetch started when the last clock ended, else the read itself) and a read waits
    /// for that pull's round trip, and for other workers only as long as the bound demands.
    fn cache_serves(&self, id: u32, row: u64, need: u64) -> bool {
        self.tables.get(&id).is_some_and(|t| {
            t.cache.rows.get(&row).is_some_and(|c| {
                c.min_clock >= need
                    && ps_ssp::serves_read(
                        c.min_clock,
                        c.fetched_at,
                        self.clock.current(),
                        t.staleness,
                        self.cfg.reads,
                    )
            })
        })
    }

    /// Checks a read of `rows` of table `id`: the job has not failed, every row is in range.
    fn check_read(&self, id: u32, rows: &[u64]) -> Result<(), ClientError> {
        self.check_failure()?;
        let nrows = self.state(id)?.spec.rows;
        match rows.iter().find(|r| **r >= nrows) {
            Some(&row) => Err(ClientError::RowOutOfRange {
                table: id,
                row,
                rows: nrows,
            }),
            None => Ok(()),
        }
    }

    /// Notes `rows` as read this clock: what the next clock's prefetch pulls.
    fn note_read(&mut self, id: u32, rows: &[u64]) -> Result<(), ClientError> {
        if self.cfg.overlap {
            self.state_mut(id)?
                .read_this_clock
                .extend(rows.iter().copied());
        }
        Ok(())
    }

    /// The shards holding rows of `rows` the cache cannot serve for `need`.
    fn shards_lacking(&self, id: u32, rows: &[u64], need: u64) -> Result<Vec<u32>, ClientError> {
        let nrows = self.state(id)?.spec.rows;
        let nshards = self.links.len() as u32;
        let mut shards: Vec<u32> = rows
            .iter()
            .filter(|r| !self.cache_serves(id, **r, need))
            .map(|r| ShardMap::shard_of(nrows, nshards, *r))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        Ok(shards)
    }

    /// What every read does first: checks, then takes prefetched rows that have arrived, and
    /// waits for more only while a prefetch is still waiting on a shard holding rows the cache
    /// cannot serve; the other prefetches travel on behind compute.
    fn prepare_read(&mut self, id: u32, rows: &[u64], need: u64) -> Result<(), ClientError> {
        self.check_read(id, rows)?;
        loop {
            self.take_prefetched(id)?;
            let lacking = self.shards_lacking(id, rows, need)?;
            if lacking.is_empty() || !self.wait_prefetched(id, &lacking)? {
                break;
            }
        }
        self.note_read(id, rows)
    }

    /// Reads `rows` (any order) of table `id` complete through at least `need` clocks of every
    /// worker, appending them to `out`.
    pub(crate) fn read_with(
        &mut self,
        id: u32,
        rows: &[u64],
        need: u64,
        out: &mut Vec<f32>,
    ) -> Result<(), ClientError> {
        self.prepare_read(id, rows, need)?;
        let misses: Vec<u64> = rows
            .iter()
            .copied()
            .filter(|r| !self.cache_serves(id, *r, need))
            .collect();
        if !misses.is_empty() {
            let width = self.state(id)?.spec.width;
            let handle = self.spawn_pulls(id, width, misses, need);
            let started = Instant::now();
            let pulled = self
                .rt
                .block_on(handle)
                .map_err(|e| ClientError::PushFailed(format!("pull task: {e}")))?;
            let current = self.clock.current();
            self.ingest_all(id, pulled, started.elapsed().as_secs_f64(), current)?;
        }
        let t = self.state(id)?;
        out.reserve(rows.len() * t.spec.width as usize);
        for &r in rows {
            if !t.cache.compose(r, out) {
                return Err(missing(id, r));
            }
        }
        Ok(())
    }

    /// Reads `rows` (sorted, distinct) like [`PsClient::read_with`], handing them to `sink`
    /// one shard's run at a time as replies arrive: `sink(first, keys, run)` gets
    /// `rows[first..first + keys.len()]` and their values, row-major, or (with `sparse`, where
    /// the cache holds them so) by their entries. Runs the cache serves go first, then each
    /// run as its shard's prefetch reply lands, then the runs pulled now as their shards
    /// answer. The sink's error stops the read and is returned.
    pub(crate) fn read_streamed<E: From<ClientError>>(
        &mut self,
        id: u32,
        rows: &[u64],
        need: u64,
        sparse: bool,
        sink: &mut RowSink<'_, E>,
    ) -> Result<(), E> {
        if !strictly_sorted(rows) {
            return Err(ClientError::Unsorted { table: id }.into());
        }
        self.check_read(id, rows)?;
        self.note_read(id, rows)?;
        let t = self.state(id)?;
        let (nrows, width) = (t.spec.rows, t.spec.width);
        let nshards = self.links.len() as u32;
        // Each shard's rows are one run of the sorted list.
        let mut runs: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for (i, &r) in rows.iter().enumerate() {
            let e = runs
                .entry(ShardMap::shard_of(nrows, nshards, r))
                .or_insert((i, i));
            e.1 = i + 1;
        }
        // Runs the cache serves, at once or as prefetch replies land.
        loop {
            self.take_prefetched(id)?;
            let served: Vec<u32> = runs
                .iter()
                .filter(|(_, (a, b))| rows[*a..*b].iter().all(|r| self.cache_serves(id, *r, need)))
                .map(|(s, _)| *s)
                .collect();
            for s in served {
                if let Some(run) = runs.remove(&s) {
                    self.deliver(id, rows, run, sparse, sink)?;
                }
            }
            let left: Vec<u32> = runs.keys().copied().collect();
            if left.is_empty() || !self.wait_prefetched(id, &left)? {
                break;
            }
        }
        // The rest is pulled now; each run goes as its shard answers.
        let misses: Vec<u64> = runs
            .values()
            .flat_map(|(a, b)| rows[*a..*b].iter().copied())
            .filter(|r| !self.cache_serves(id, *r, need))
            .collect();
        let (mut rx, pending) = self.spawn_streamed(id, width, misses, need);
        let mut took_max = 0.0f64;
        for _ in 0..pending.len() {
            let started = Instant::now();
            let (s, replies, took) = self
                .rt
                .block_on(rx.recv())
                .ok_or_else(|| ClientError::PushFailed("pull tasks stopped".into()))?;
            self.blocked_s += started.elapsed().as_secs_f64();
            took_max = took_max.max(took);
            let frames = self.answered(s, replies)?;
            self.ingest_frames(id, &frames, self.clock.current())?;
            let Some((start, end)) = runs.remove(&s) else {
                continue;
            };
            // One raw reply with exactly the run's rows, which the cache holds as they are: the
            // sink reads them from the reply itself, saving a copy.
            if let [(frame, _)] = frames.as_slice() {
                let keys = &rows[start..end];
                if let Some(values) = frame.raw_f32() {
                    let cache = &self.state(id)?.cache;
                    if frame.keys == keys && cache.serves_as_is(keys, frame.header.clock) {
                        sink(start, keys, Run::Dense(values))?;
                        continue;
                    }
                }
            }
            self.deliver(id, rows, (start, end), sparse, sink)?;
        }
        self.pull_comm_s += took_max;
        // Every run left after the prefetches lacked a row, so its shard was pulled above.
        debug_assert!(runs.is_empty(), "runs neither served nor pulled: {runs:?}");
        Ok(())
    }

    /// Composes `rows[start..end]` and hands them to the sink: by their entries when `sparse`
    /// and the cache holds most of them so (and reads add nothing to them), else dense.
    fn deliver<E: From<ClientError>>(
        &mut self,
        id: u32,
        rows: &[u64],
        (start, end): (usize, usize),
        sparse: bool,
        sink: &mut RowSink<'_, E>,
    ) -> Result<(), E> {
        let keys = &rows[start..end];
        if sparse && self.state(id)?.cache.mostly_sparse(keys) {
            let mut buf = std::mem::take(&mut self.sparse_scratch);
            let cache = &self.state(id)?.cache;
            buf.clear(cache.width);
            let composed = cache.compose_sparse(keys, &mut buf);
            let result = if composed {
                sink(start, keys, Run::Sparse(buf.view()))
            } else {
                Ok(())
            };
            self.sparse_scratch = buf;
            if composed {
                return result;
            }
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let t = self.state(id)?;
        for &r in keys {
            if !t.cache.compose(r, &mut buf) {
                self.scratch = buf;
                return Err(missing(id, r).into());
            }
        }
        let result = sink(start, keys, Run::Dense(&buf));
        self.scratch = buf;
        result
    }

    /// Starts pulling what a read of `rows` of table `id` at the current clock would need,
    /// without waiting.
    pub(crate) fn pull_async(&mut self, id: u32, rows: &[u64]) -> Result<PullTicket, ClientError> {
        self.check_failure()?;
        let t = self.state(id)?;
        let (nrows, width) = (t.spec.rows, t.spec.width);
        if let Some(&row) = rows.iter().find(|r| **r >= nrows) {
            return Err(ClientError::RowOutOfRange {
                table: id,
                row,
                rows: nrows,
            });
        }
        let need = t.staleness.required_min_clock(self.clock.current());
        let misses: Vec<u64> = rows
            .iter()
            .copied()
            .filter(|r| !self.cache_serves(id, *r, need))
            .collect();
        let floor = self.log_floor();
        let handle = (!misses.is_empty()).then(|| self.spawn_pulls(id, width, misses, need));
        let hold = std::sync::Arc::new(());
        self.state_mut(id)?
            .tickets
            .push((std::sync::Arc::downgrade(&hold), floor));
        Ok(PullTicket {
            table: id,
            rows: rows.to_vec(),
            handle,
            issued: self.clock.current(),
            _floor: hold,
        })
    }

    /// The rows of an asynchronous pull, appended to `out` in the order asked for. They satisfy
    /// the read guarantee of the clock the worker is in now: if it has moved on since the pull
    /// started and the rows are too old for it, they are pulled again.
    pub fn wait(&mut self, ticket: PullTicket, out: &mut Vec<f32>) -> Result<(), ClientError> {
        if let Some(h) = ticket.handle {
            let started = Instant::now();
            let pulled = self
                .rt
                .block_on(h)
                .map_err(|e| ClientError::PushFailed(format!("pull task: {e}")))?;
            let secs = started.elapsed().as_secs_f64();
            self.ingest_all(ticket.table, pulled, secs, ticket.issued)?;
        }
        let need = self
            .state(ticket.table)?
            .staleness
            .required_min_clock(self.clock.current());
        self.read_with(ticket.table, &ticket.rows, need, out)
    }
}

impl PsClient {
    /// The lowest own-clock count any shard has acknowledged: a pull started now gets replies
    /// that report at least this, so the own-update log is kept from here while it is in flight.
    pub(crate) fn log_floor(&self) -> u64 {
        lock(&self.shared)
            .applied
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
    }
}

fn missing(id: u32, row: u64) -> ClientError {
    ps_proto::ProtoError::Protocol(format!("row {row} of table {id} missing after its pull")).into()
}
