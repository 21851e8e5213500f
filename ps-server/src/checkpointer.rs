//! Writes a shard's checkpoints off the request path. The service takes a snapshot under the
//! shard's lock when one is due (a copy of its vectors) and offers it here; one thread encodes
//! and writes it (temporary file, fsync, rename, fsync of the directory: see `checkpoint`), and
//! once it is durable tells the shard, whose acks then let workers forget what it covers.
//!
//! A write that fails (a full disk, a directory gone) is logged and the shard keeps serving:
//! nothing is lost, because workers keep every batch no durable checkpoint covers.

use crate::checkpoint::{CheckpointError, CheckpointStore, ShardSnapshot};
use crate::shard::Shard;
use crate::telemetry;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tracing::{error, info, warn};

pub struct Checkpointer {
    tx: Mutex<Option<SyncSender<ShardSnapshot>>>,
    thread: Mutex<Option<JoinHandle<CheckpointStore>>>,
    shard: Arc<Mutex<Shard>>,
    fingerprint: u64,
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `snap` and, once durable, records it in the shard's plan.
fn write(store: &CheckpointStore, shard: &Mutex<Shard>, snap: &ShardSnapshot) -> bool {
    let started = std::time::Instant::now();
    match store.write(snap) {
        Ok(w) => {
            info!(
                shard = snap.shard,
                clock = snap.clock,
                bytes = w.bytes,
                ms = started.elapsed().as_millis() as u64,
                path = %w.path.display(),
                "checkpoint written"
            );
            lock(shard).plan.durable(snap.completed.clone());
            telemetry::checkpoint(snap.shard, "written", Some(started.elapsed().as_secs_f64()));
            true
        }
        Err(e) => {
            telemetry::checkpoint(snap.shard, "failed", None);
            error!(
                shard = snap.shard,
                clock = snap.clock,
                "checkpoint failed: {e}; the shard keeps serving and workers keep their batches"
            );
            false
        }
    }
}

impl Checkpointer {
    /// Starts the writer for `shard`'s checkpoints into `store`, stamped with `fingerprint`.
    pub fn start(store: CheckpointStore, shard: Arc<Mutex<Shard>>, fingerprint: u64) -> Self {
        // One snapshot waits while another is written; more are skipped (the next boundary
        // brings a newer one).
        let (tx, rx) = sync_channel::<ShardSnapshot>(1);
        let sh = shard.clone();
        let thread = std::thread::spawn(move || {
            while let Ok(snap) = rx.recv() {
                write(&store, &sh, &snap);
            }
            store
        });
        Checkpointer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            shard,
            fingerprint,
        }
    }

    /// Takes a snapshot if the shard's plan says one is due, and hands it to the writer. Call
    /// after each accepted batch.
    pub fn maybe_checkpoint(&self) {
        let snap = {
            let mut s = lock(&self.shard);
            let min = s.min_clock();
            if !s.plan.due(min) {
                return;
            }
            s.plan.taken(min);
            s.snapshot(self.fingerprint)
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            match tx.try_send(snap) {
                Ok(()) => {}
                Err(TrySendError::Full(s)) => {
                    telemetry::checkpoint(s.shard, "skipped", None);
                    warn!(
                        shard = s.shard,
                        clock = s.clock,
                        "checkpoint skipped: the previous one is still being written"
                    )
                }
                Err(TrySendError::Disconnected(_)) => {
                    error!("the checkpoint writer is gone");
                }
            }
        }
    }

    /// Waits for pending writes, then writes the shard's final state (the end of the job).
    pub fn finish(&self) -> Result<(), CheckpointError> {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = thread else {
            return Ok(());
        };
        let store = thread
            .join()
            .map_err(|_| CheckpointError::Malformed("the checkpoint writer panicked".into()))?;
        let snap = lock(&self.shard).snapshot(self.fingerprint);
        store.write(&snap)?;
        info!(
            shard = snap.shard,
            clock = snap.clock,
            "final checkpoint written"
        );
        Ok(())
    }
}
