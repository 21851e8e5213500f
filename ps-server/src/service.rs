//! A shard served over QUIC. Each request is one bidirectional stream:
//! - a pull: one `Pull` frame, answered by one `PullReply` (after parking on the clock vector);
//! - a clock batch: `Push` frames then one `Clock` frame, answered by one `Ack` once the batch is
//!   accepted. A batch is applied whole or not at all.
//!
//! A bad frame is answered by an `Error` frame on its stream and changes nothing; the connection
//! and every other stream keep working.

use crate::checkpoint::CheckpointStore;
use crate::checkpointer::Checkpointer;
use crate::shard::{ExactRows, PushRows, Shard};
use ps_proto::codec::{self, KeyCacheReceiver, DEFAULT_KEY_CACHE_IDS};
use ps_proto::{Frame, FrameBuilder, KeyForm, Kind, Limits, ProtoError, FLAG_END_CLOCK};
use ps_transport::{read_frame, write_frame, write_frame_owned, FrameRead, TransportError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, warn};

/// A running shard service.
pub struct ShardHandle {
    pub addr: SocketAddr,
    shard: Arc<Mutex<Shard>>,
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
    checkpoints: Option<Arc<Checkpointer>>,
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock would be a bug in this crate; keep serving what is there.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShardHandle {
    /// A copy of this shard's slice of a dense table (row-major); `None` for an unknown or a
    /// sparse table.
    pub fn snapshot(&self, table: u32) -> Option<Vec<f32>> {
        lock(&self.shard)
            .table(table)
            .ok()
            .and_then(|t| t.as_dense())
            .map(|t| t.data().to_vec())
    }

    /// The rows stored in this shard's slice of a sparse table, as (key, row) sorted by key;
    /// `None` for an unknown or a dense table.
    pub fn snapshot_sparse(&self, table: u32) -> Option<Vec<(u64, Vec<f32>)>> {
        lock(&self.shard)
            .table(table)
            .ok()
            .and_then(|t| t.as_sparse())
            .map(|t| {
                t.sorted_rows()
                    .into_iter()
                    .map(|(k, r)| (k, r.to_vec()))
                    .collect()
            })
    }

    pub fn params_applied(&self) -> u64 {
        lock(&self.shard).params_applied()
    }

    pub fn min_clock(&self) -> u64 {
        lock(&self.shard).min_clock()
    }

    /// Removes a dead worker from the shard's clock vector (see [`Shard::evict`]).
    pub fn evict(&self, worker: u32) -> Result<(), ps_ssp::SspError> {
        lock(&self.shard).evict(worker)
    }

    /// Writes the final checkpoint (the end of the job), if the shard checkpoints.
    pub fn finish_checkpoints(&self) -> Result<(), crate::checkpoint::CheckpointError> {
        match &self.checkpoints {
            Some(c) => c.finish(),
            None => Ok(()),
        }
    }

    /// Stops accepting, fails parked pulls, closes connections.
    pub fn shutdown(&self) {
        lock(&self.shard).shutdown();
        self.endpoint.close(0u32.into(), b"shard shutting down");
        self.task.abort();
    }
}

/// Serves `shard` on `endpoint` (which must be a server endpoint) until shut down.
pub fn serve_shard(
    endpoint: quinn::Endpoint,
    shard: Shard,
    limits: Limits,
) -> Result<ShardHandle, TransportError> {
    serve_shard_with(endpoint, shard, limits, None)
}

/// [`serve_shard`], writing checkpoints into `checkpoints` (a store and the job's fingerprint)
/// when the shard's plan says they are due.
pub fn serve_shard_with(
    endpoint: quinn::Endpoint,
    shard: Shard,
    limits: Limits,
    checkpoints: Option<(CheckpointStore, u64)>,
) -> Result<ShardHandle, TransportError> {
    let addr = endpoint
        .local_addr()
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    let shard = Arc::new(Mutex::new(shard));
    let checkpoints =
        checkpoints.map(|(store, fp)| Arc::new(Checkpointer::start(store, shard.clone(), fp)));
    let ep = endpoint.clone();
    let st = shard.clone();
    let ck = checkpoints.clone();
    let task = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let st = st.clone();
            let ck = ck.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        // Includes peers without a certificate from the cluster CA.
                        warn!("rejected connection: {e}");
                        return;
                    }
                };
                // Key lists this worker sent for caching, per table: one cache per connection.
                let keys: KeyCaches = Arc::new(Mutex::new(HashMap::new()));
                loop {
                    match conn.accept_bi().await {
                        Ok((send, recv)) => {
                            let (st, keys, ck) = (st.clone(), keys.clone(), ck.clone());
                            tokio::spawn(async move {
                                handle_stream(st, keys, send, recv, limits).await;
                                if let Some(c) = ck {
                                    c.maybe_checkpoint();
                                }
                            });
                        }
                        Err(e) => {
                            debug!("connection from {} ended: {e}", conn.remote_address());
                            break;
                        }
                    }
                }
            });
        }
    });
    Ok(ShardHandle {
        addr,
        shard,
        endpoint,
        task,
        checkpoints,
    })
}

async fn reply_error(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, err: &ProtoError) {
    debug!("answering bad request: {err}");
    let _ = write_frame(send, &Frame::error(err.code(), &err.to_string())).await;
    let _ = send.finish();
    let _ = recv.stop(0u32.into());
}

/// The receiving side of the key caches of one connection, per table.
type KeyCaches = Arc<Mutex<HashMap<u32, KeyCacheReceiver>>>;

/// Fills in the keys of a frame sent in a cached form, from its connection's cache.
fn resolve_keys(caches: &KeyCaches, f: &mut Frame) -> Result<(), ProtoError> {
    if matches!(f.key_form, KeyForm::List | KeyForm::Range) {
        return Ok(());
    }
    let mut caches = caches.lock().unwrap_or_else(|p| p.into_inner());
    let cache = caches
        .entry(f.header.table)
        .or_insert_with(|| KeyCacheReceiver::new(DEFAULT_KEY_CACHE_IDS));
    f.resolve_keys(cache)
}

async fn handle_stream(
    shard: Arc<Mutex<Shard>>,
    caches: KeyCaches,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    limits: Limits,
) {
    let first = match read_frame(&mut recv, &limits).await {
        Ok(FrameRead::Frame(f)) => f,
        Ok(FrameRead::End) => return,
        Err(TransportError::Proto(e)) => return reply_error(&mut send, &mut recv, &e).await,
        Err(e) => {
            debug!("stream failed: {e}");
            return;
        }
    };
    let result = match first.header.kind {
        Kind::Pull => handle_pull(&shard, &caches, &mut send, first).await,
        Kind::Push | Kind::Clock => {
            handle_batch(&shard, &caches, &mut send, &mut recv, first, &limits).await
        }
        other => Err(ProtoError::Protocol(format!(
            "a {} frame cannot open a request stream",
            other.name()
        ))),
    };
    match result {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => reply_error(&mut send, &mut recv, &e).await,
    }
}

async fn handle_pull(
    shard: &Mutex<Shard>,
    caches: &KeyCaches,
    send: &mut quinn::SendStream,
    mut f: Frame,
) -> Result<(), ProtoError> {
    resolve_keys(caches, &mut f)?;
    let h = f.header;
    let waiter = {
        let mut s = lock(shard);
        s.check_worker(h.worker)?;
        s.check(h.table, h.width, &f.keys)?;
        s.park(h.clock)
    };
    if let Some(rx) = waiter {
        rx.await
            .map_err(|_| ProtoError::Protocol("shard is shutting down".into()))?;
    }
    let (r, codec, id, payload) = {
        let s = lock(shard);
        let codec = s.table(h.table)?.spec().pull_codec.at_clock(h.clock);
        // A raw reply's rows go straight into its payload (or its sparse form); others are
        // encoded from the values.
        let (r, raw) = if codec.is_lossless() {
            let (r, rows) = s.read_exact(h.table, &f.keys, h.worker)?;
            (r, Some(rows))
        } else {
            (s.read(h.table, &f.keys, h.worker)?, None)
        };
        (r, codec, s.id, raw)
    };
    let (wire_id, payload) = match payload {
        // Exact either way: rows that are mostly zero (LDA's word-topic counts) go as their
        // nonzero entries.
        Some(ExactRows::Nonzero(entries)) => match entries.encode() {
            Some(sparse) => sparse,
            // Rare: few enough nonzero, but their indices cost too much. Raw is exact too.
            None => (codec.wire_id(), entries.raw()),
        },
        Some(ExactRows::Dense(p)) => (codec.wire_id(), p),
        Some(ExactRows::Unchecked(p)) => match codec::exact_sparse_raw(&p) {
            Some(sparse) => sparse,
            None => (codec.wire_id(), p),
        },
        None => {
            let mut payload = Vec::new();
            codec::encode(&codec, &r.values, None, &mut payload)?;
            (codec.wire_id(), payload)
        }
    };
    let mut reply = FrameBuilder::pull_reply_encoded(
        h.table,
        h.worker,
        r.min_clock,
        r.worker_clock,
        h.width,
        &f.keys,
        wire_id,
        payload,
    );
    // The reply names its keys the way the request did, never longer.
    match f.key_form {
        KeyForm::List | KeyForm::Range => reply.compact_keys(),
        KeyForm::Assign(id) | KeyForm::Cached { id, .. } => reply.set_key_form(KeyForm::Cached {
            id,
            hash: codec::default_key_hash(&f.keys),
        }),
    }
    let sent = write_frame_owned(send, reply)
        .await
        .map_err(|e| ProtoError::Protocol(e.to_string()))?;
    crate::telemetry::pulled(id, h.table, sent);
    Ok(())
}

async fn handle_batch(
    shard: &Mutex<Shard>,
    caches: &KeyCaches,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    first: Frame,
    limits: &Limits,
) -> Result<(), ProtoError> {
    let worker = first.header.worker;
    let clock = first.header.clock;
    lock(shard).check_worker(worker)?;
    let mut batch = Vec::new();
    let mut batch_values = 0u64;
    let mut next = Some(first);
    loop {
        let mut f = match next.take() {
            Some(f) => f,
            None => match read_frame(recv, limits).await {
                Ok(FrameRead::Frame(f)) => f,
                Ok(FrameRead::End) => {
                    return Err(ProtoError::Protocol(format!(
                        "batch of worker {worker} clock {clock} ended without a clock frame; nothing applied"
                    )))
                }
                Err(TransportError::Proto(e)) => return Err(e),
                Err(e) => return Err(ProtoError::Protocol(e.to_string())),
            },
        };
        let h = f.header;
        if h.worker != worker || h.clock != clock {
            return Err(ProtoError::Protocol(format!(
                "frame for worker {} clock {} inside the batch of worker {worker} clock {clock}",
                h.worker, h.clock
            )));
        }
        match h.kind {
            Kind::Push => {
                resolve_keys(caches, &mut f)?;
                let cells = {
                    let s = lock(shard);
                    s.check(h.table, h.width, &f.keys)?;
                    s.max_batch_cells()
                };
                // A clock's updates are coalesced per row, so a batch never needs more values
                // than the shard's key ranges have cells (sparse ranges capped, see
                // `Shard::max_batch_cells`): anything larger is a runaway or hostile peer.
                batch_values += f.keys.len() as u64 * h.width as u64;
                if batch_values > cells {
                    return Err(ProtoError::TooLarge {
                        declared: batch_values.saturating_mul(4),
                        cap: cells.saturating_mul(4),
                    });
                }
                // Dense or sparse as sent: a sparse block is applied entry by entry.
                let values = f.decoded()?;
                batch.push(PushRows {
                    table: h.table,
                    keys: f.keys,
                    values,
                });
                if h.flags & FLAG_END_CLOCK != 0 {
                    return end_batch(shard, send, worker, clock, h.aux, batch).await;
                }
            }
            Kind::Clock => return end_batch(shard, send, worker, clock, h.aux, batch).await,
            other => {
                return Err(ProtoError::Protocol(format!(
                    "unexpected {} frame inside a push batch",
                    other.name()
                )))
            }
        }
    }
}

/// Submits a complete clock batch that announced `announced` push frames, and acknowledges it.
async fn end_batch(
    shard: &Mutex<Shard>,
    send: &mut quinn::SendStream,
    worker: u32,
    clock: u64,
    announced: u64,
    batch: Vec<PushRows>,
) -> Result<(), ProtoError> {
    if announced != batch.len() as u64 {
        return Err(ProtoError::Protocol(format!(
            "the batch announces {announced} pushes, {} arrived",
            batch.len()
        )));
    }
    let ack = {
        let mut s = lock(shard);
        s.submit(worker, clock, batch)
            .map_err(|e| ProtoError::Protocol(e.to_string()))?;
        let (min_clock, worker_clock) = (s.min_clock(), s.worker_clock(worker));
        if s.plan.enabled() {
            let covered = s.plan.covered(worker);
            FrameBuilder::ack_covering(worker, min_clock, worker_clock, covered)
        } else {
            FrameBuilder::ack(worker, min_clock, worker_clock)
        }
    };
    write_frame(send, &ack)
        .await
        .map_err(|e| ProtoError::Protocol(e.to_string()))?;
    Ok(())
}
