//! The end of a clock: the clock's updates become push frames, background tasks send them (one
//! batch per shard; every shard gets the end of the clock even with no rows), their acks feed
//! read-my-writes, and the clock's report goes to the coordinator once every shard has it.

use crate::client::{lock, lock_keys, PsClient};
use crate::error::ClientError;
use crate::push;
use crate::retained::{listed, Batch};
use crate::wire::{push_batch, Traffic};
use ps_proto::{ClockReport, Frame, KeyForm, ShardStarts};
use std::sync::Arc;
use std::time::Instant;

/// The figure each clock report carries beside the application's: seconds [`PsClient::clock`]
/// spent sealing the clock (encoding its updates into push frames, with their key lists), part
/// of the clock's compute time.
pub const SEAL_SECONDS: &str = "host_seal_s";

/// The other figure the library adds: seconds folding acknowledged pushes into the cached rows
/// (read-my-writes' bookkeeping), done as a clock is handed off and so counted in the next
/// clock's compute time, and reported with it.
pub const FOLD_SECONDS: &str = "host_fold_s";

/// Per shard, the (table, list id, key cache epoch) of lists a batch asks the shard to store.
type Assigned = Vec<Vec<(u32, u32, u64)>>;

impl PsClient {
    /// Marks the worker's set-up (loading data, building its state) as done: the current
    /// clock's wall time, and so its compute time, starts now rather than at the join.
    pub fn start_clock(&mut self) {
        self.clock_started = Instant::now();
    }

    /// Ends the current clock: seals its updates, hands them to background push tasks, and
    /// returns at once (with overlap; without, after every shard acknowledged). The figures set
    /// with [`PsClient::set_figures`] go with this clock's report. Returns the clock ended.
    pub fn clock(&mut self) -> Result<u64, ClientError> {
        self.check_failure()?;
        let sealing = Instant::now();
        let flush = std::mem::take(&mut self.flush_residual);
        let ended = self.clock.tick();
        let worker = self.cfg.worker;
        let nshards = self.links.len() as u32;
        let max_body = self.cfg.max_frame_body;
        let mut per_shard: Vec<Vec<Frame>> = vec![Vec::new(); nshards as usize];
        let mut ids: Vec<u32> = self.tables.keys().copied().collect();
        ids.sort_unstable();
        let mut push_logical = 0u64;
        for id in ids {
            let t = self.state_mut(id)?;
            push_logical += push::encode_table(
                &t.spec,
                &mut t.cache,
                worker,
                ended,
                flush,
                max_body,
                &mut per_shard,
            )?;
        }
        push_logical += push::end_batches(worker, ended, &mut per_shard);
        // Kept, in listed form, until a shard checkpoint covers them (see `retained`).
        let kept: Vec<Batch> = {
            let mut r = self.retained.lock().unwrap_or_else(|p| p.into_inner());
            let kept: Vec<Batch> = if r.enabled() {
                per_shard.iter().map(|f| Arc::new(f.clone())).collect()
            } else {
                Vec::new()
            };
            r.keep(ended, &kept);
            kept
        };
        let assigned = self.cache_key_lists(&mut per_shard);
        let now = Instant::now();
        let wall = now.duration_since(self.clock_started).as_secs_f64();
        let mut sums = std::mem::take(&mut self.figures);
        sums.insert(
            SEAL_SECONDS.into(),
            now.duration_since(sealing).as_secs_f64(),
        );
        sums.insert(FOLD_SECONDS.into(), std::mem::take(&mut self.fold_s));
        let report = ClockReport {
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
        self.send_batches(ended, per_shard, kept, assigned, report);
        let folding = Instant::now();
        self.fold_acknowledged();
        self.fold_s = folding.elapsed().as_secs_f64();
        Ok(ended)
    }

    /// Repeated key lists go by reference; lists sent to be stored are confirmed by the ack.
    /// Returns, per shard, the (table, list id) pairs the batch asks the shard to store.
    fn cache_key_lists(&self, per_shard: &mut [Vec<Frame>]) -> Assigned {
        let mut assigned: Assigned = vec![Vec::new(); per_shard.len()];
        let mut caches = lock_keys(&self.key_caches);
        for (s, frames) in per_shard.iter_mut().enumerate() {
            let epoch = caches.epoch(s as u32);
            for f in frames.iter_mut().filter(|f| f.key_form == KeyForm::List) {
                if f.header.kind != ps_proto::Kind::Push {
                    continue;
                }
                let form = caches.form(s as u32, f.header.table, &f.keys);
                if let KeyForm::Assign(k) = form {
                    assigned[s].push((f.header.table, k, epoch));
                }
                if form != KeyForm::List {
                    f.set_key_form(form);
                }
            }
        }
        assigned
    }

    /// Sends each shard its batch (again, in listed form, over a new connection if the shard
    /// restarts meanwhile); the report goes out once every shard acknowledged.
    fn send_batches(
        &mut self,
        ended: u64,
        per_shard: Vec<Vec<Frame>>,
        kept: Vec<Batch>,
        assigned: Assigned,
        mut report: ClockReport,
    ) {
        let limits = self.cfg.limits;
        let links = self.links.clone();
        let (shared, caches, reports, retained) = (
            self.shared.clone(),
            self.key_caches.clone(),
            self.reports_tx.clone(),
            self.retained.clone(),
        );
        let push = async move {
            let started = Instant::now();
            let tasks: Vec<_> = per_shard
                .into_iter()
                .enumerate()
                .map(|(s, frames)| {
                    let links = links.clone();
                    let again = kept.get(s).cloned();
                    tokio::spawn(async move {
                        let mut first = Some(frames);
                        let r = links
                            .with_link(s, |conn, retry| {
                                let frames = match (retry, &again) {
                                    (true, Some(b)) => listed(b),
                                    _ => first.take().unwrap_or_default(),
                                };
                                async move { push_batch(&conn, &limits, frames).await }
                            })
                            .await;
                        (s, r, links.addr(s))
                    })
                })
                .collect();
            let mut push_s = 0.0f64;
            for t in tasks {
                match t.await {
                    Ok((s, Ok((acked, traffic)), _)) => {
                        for &(table, k, epoch) in &assigned[s] {
                            lock_keys(&caches).confirm_at(s as u32, table, k, epoch);
                        }
                        if let Some(c) = acked.covered {
                            retained
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .covered(s, c);
                        }
                        let mut sh = lock(&shared);
                        sh.applied[s] = sh.applied[s].max(acked.applied);
                        report.bytes_sent += traffic.sent;
                        report.push_bytes += traffic.sent;
                        report.bytes_received += traffic.received;
                        push_s = started.elapsed().as_secs_f64();
                    }
                    Ok((s, Err(e), addr)) => {
                        lock(&shared).failure.get_or_insert(format!(
                            "push of clock {ended} to shard {s} at {addr}: {e}"
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
                    crate::telemetry::clock_completed(&r);
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
                crate::telemetry::clock_completed(&r);
                let _ = reports.send(r);
            }
            for t in self.tables.values_mut() {
                t.next_reads = None;
            }
            self.clock_started = Instant::now();
        }
    }

    pub(crate) fn fold_acknowledged(&mut self) {
        let applied = lock(&self.shared).applied.clone();
        let all = applied.iter().copied().min().unwrap_or(0);
        let nshards = applied.len() as u32;
        for t in self.tables.values_mut() {
            // Keep what an in-flight prefetch's or a live pull ticket's replies may still need.
            t.tickets.retain(|(live, _)| live.strong_count() > 0);
            let keep_from = t
                .prefetch
                .iter()
                .map(|p| p.floor)
                .chain(t.tickets.iter().map(|(_, floor)| *floor))
                .fold(all, u64::min);
            let starts = ShardStarts::new(t.spec.rows, nshards);
            t.cache.fold_acknowledged(
                |r| applied[starts.shard_of(r) as usize],
                |r| (t.prefetch.iter()).any(|p| p.will_store(starts.shard_of(r), r)),
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

    /// Ends the job's last clock like [`PsClient::clock`], but a lossy table with selection
    /// stages (top-k, filter) sends every row of its residual, in its value format, rather than
    /// a selection: what earlier clocks held back reaches the shards before the job ends.
    pub fn last_clock(&mut self) -> Result<u64, ClientError> {
        self.mark_last_clock();
        self.clock()
    }

    /// Says before its updates are written that the current clock is the job's last: the next
    /// [`PsClient::clock`] ends it as [`PsClient::last_clock`] does, and [`Table::push_plan`]
    /// already plans it so (for an engine that encodes its own delta).
    ///
    /// [`Table::push_plan`]: crate::Table::push_plan
    pub fn mark_last_clock(&mut self) {
        self.flush_residual = true;
    }

    /// Forgets what lossy push codecs have not sent (every table's error-feedback residual) and
    /// returns the sum of its magnitudes. For the end of a job: no later clock would send it,
    /// and reads from now on show the shards' model (plus own pushes in flight), not a worker's
    /// private copy, so final figures measure what the shards hold.
    pub fn drop_unsent(&mut self) -> f64 {
        let mut l1 = 0.0;
        for t in self.tables.values_mut() {
            for (_, r) in t.cache.residual.drain() {
                l1 += r.iter().map(|v| f64::from(v.abs())).sum::<f64>();
            }
            t.cache.velocity.clear();
        }
        l1
    }

    /// Dense push-pull for model averaging: adds `delta` (row-major over `rows`, sorted and
    /// distinct) to this clock's update of table `table`, ends the clock, and appends the rows
    /// as the next clock reads them (complete through every worker's clock `c - s - 1`) to
    /// `out`. Under staleness 0 every worker's push of the clock just ended is in them. Returns
    /// the clock ended.
    pub fn push_pull(
        &mut self,
        table: u32,
        rows: &[u64],
        delta: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<u64, ClientError> {
        self.table(table)?.push(rows, delta)?;
        let ended = self.clock()?;
        self.table(table)?.read_rows_into(rows, out)?;
        Ok(ended)
    }

    /// Bytes of one frame header (for callers estimating traffic).
    pub const FRAME_OVERHEAD: usize = ps_proto::HEADER_LEN;
}
