//! The worker's connection to each shard, replaceable while the job runs. When a shard dies
//! and a replacement restores its checkpoint, the coordinator says where it is; the worker
//! connects, resends every batch the restored shard lacks (see `retained`), and only then
//! swaps the connection in. Requests that failed because the old connection died wait for the
//! new one (up to the job's restart timeout) and are sent again: a pull as it was, a push
//! batch in listed form (the shard acknowledges a batch it already holds without applying it
//! twice).

use crate::client::{lock, Shared};
use crate::error::ClientError;
use crate::keys::KeyCaches;
use crate::retained::{listed, Retained};
use crate::wire::push_batch;
use ps_proto::Limits;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info};

#[derive(Clone)]
struct Link {
    conn: Option<quinn::Connection>,
    generation: u64,
    failed: Option<String>,
}

pub(crate) struct ShardLinks {
    slots: Vec<watch::Sender<Link>>,
    addrs: Mutex<Vec<String>>,
    /// Whether a lost connection is waited for (the job restarts shards) or an error.
    restartable: bool,
    wait: Duration,
}

impl ShardLinks {
    pub fn new(
        conns: Vec<quinn::Connection>,
        addrs: Vec<String>,
        restartable: bool,
        wait: Duration,
    ) -> ShardLinks {
        let slots = conns
            .into_iter()
            .map(|c| {
                watch::Sender::new(Link {
                    conn: Some(c),
                    generation: 0,
                    failed: None,
                })
            })
            .collect();
        ShardLinks {
            slots,
            addrs: Mutex::new(addrs),
            restartable,
            wait,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn addr(&self, s: usize) -> String {
        let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        addrs.get(s).cloned().unwrap_or_default()
    }

    /// Shard `s`'s connection and its generation, waiting while the shard is down.
    pub async fn get(&self, s: usize) -> Result<(u64, quinn::Connection), ClientError> {
        let mut rx = self.slots[s].subscribe();
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            {
                let l = rx.borrow_and_update();
                if let Some(why) = &l.failed {
                    return Err(ClientError::JobFailed(why.clone()));
                }
                if let Some(c) = &l.conn {
                    return Ok((l.generation, c.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ClientError::Shard {
                        shard: s as u32,
                        addr: self.addr(s),
                        reason: format!(
                            "the shard is down and did not come back within {:.0}s",
                            self.wait.as_secs_f64()
                        ),
                    })
                }
            }
        }
    }

    /// Runs `op` on shard `s`'s connection. When that connection dies under it and the job
    /// restarts shards, waits for the replacement and runs `op` again with `retry` set.
    pub async fn with_link<T, F, Fut>(&self, s: usize, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(quinn::Connection, bool) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut retry = false;
        loop {
            let (generation, conn) = self.get(s).await?;
            match op(conn.clone(), retry).await {
                Err(e) if self.restartable && conn.close_reason().is_some() => {
                    debug!(
                        shard = s,
                        "connection lost ({e}); waiting for the shard to return"
                    );
                    self.mark_down(s, generation);
                    retry = true;
                }
                r => return r,
            }
        }
    }

    /// The connection of `generation` died: requests wait for a new one.
    fn mark_down(&self, s: usize, generation: u64) {
        self.slots[s].send_if_modified(|l| {
            let stale = l.generation == generation && l.conn.is_some();
            if stale {
                l.conn = None;
            }
            stale
        });
    }

    /// Takes shard `s`'s connection out (requests wait) and returns it.
    fn take(&self, s: usize) -> Option<quinn::Connection> {
        let mut old = None;
        self.slots[s].send_modify(|l| old = l.conn.take());
        old
    }

    /// Puts in shard `s`'s new connection, at `addr`.
    fn replace(&self, s: usize, conn: quinn::Connection, addr: String) {
        if let Some(a) = self
            .addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(s)
        {
            *a = addr;
        }
        self.slots[s].send_modify(|l| {
            l.conn = Some(conn);
            l.generation += 1;
        });
    }

    /// The job failed: every request waiting for a shard gets `why`.
    pub fn fail_all(&self, why: &str) {
        for slot in &self.slots {
            slot.send_modify(|l| l.failed = Some(why.to_string()));
        }
    }
}

/// What a worker needs to bring a restarted shard back: shared with the client.
#[derive(Clone)]
pub struct Restarts {
    pub(crate) links: Arc<ShardLinks>,
    pub(crate) retained: Arc<Mutex<Retained>>,
    pub(crate) keys: Arc<Mutex<KeyCaches>>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) server_name: String,
    pub(crate) limits: Limits,
    pub(crate) worker: u32,
    /// One restart at a time (a shard that dies again while it comes back).
    pub(crate) serial: Arc<tokio::sync::Mutex<()>>,
}

impl Restarts {
    /// Shard `shard` restarted at `addr` holding `worker_clocks[w]` clocks of each worker:
    /// connects, resends this worker's batches it lacks, and swaps the connection in. An
    /// error fails the worker (the caller records it).
    pub async fn shard_restarted(
        &self,
        shard: u32,
        addr: &str,
        worker_clocks: &[u64],
    ) -> Result<(), ClientError> {
        let _one_at_a_time = self.serial.lock().await;
        let s = shard as usize;
        if s >= self.links.len() {
            return Err(ClientError::BadShardMap(format!(
                "a restarted shard {shard} is not in the map"
            )));
        }
        let holds = worker_clocks
            .get(self.worker as usize)
            .copied()
            .unwrap_or(0);
        let batches = {
            let r = self.retained.lock().unwrap_or_else(|p| p.into_inner());
            r.resend(s, holds).map_err(ClientError::JobFailed)?
        };
        let sa: SocketAddr = addr.parse().map_err(|e| {
            ClientError::BadShardMap(format!("shard {shard} address {addr:?}: {e}"))
        })?;
        let shard_err = |reason: String| ClientError::Shard {
            shard,
            addr: addr.to_string(),
            reason,
        };
        let conn = ps_transport::connect(&self.endpoint, sa, &self.server_name)
            .await
            .map_err(|e| shard_err(e.to_string()))?;
        if let Some(old) = self.links.take(s) {
            old.close(0u32.into(), b"shard restarted");
        }
        crate::client::lock_keys(&self.keys).reset_shard(shard);
        let n = batches.len();
        for (clock, frames) in batches {
            let (applied, _) = push_batch(&conn, &self.limits, listed(&frames))
                .await
                .map_err(|e| shard_err(format!("resending clock {clock}: {e}")))?;
            let mut sh = lock(&self.shared);
            sh.applied[s] = sh.applied[s].max(applied.applied);
            drop(sh);
            if let Some(c) = applied.covered {
                self.retained
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .covered(s, c);
            }
        }
        info!(shard, holds, resent = n, %addr, "shard restarted: batches resent");
        self.links.replace(s, conn, addr.to_string());
        Ok(())
    }
}
