//! The server node role: register with the coordinator, build the shard it is assigned (or,
//! replacing a dead one, restore it from its latest checkpoint), serve workers, send
//! heartbeats, follow the coordinator's events (evicted workers), and stop when told to.

use crate::checkpoint::{job_fingerprint, CheckpointStore, ShardFacts};
use crate::error::ServerError;
use crate::plan::CheckpointPlan;
use crate::service::serve_shard_with;
use crate::shard::Shard;
use ps_proto::{Assign, ControlEvent, Frame, Kind, Limits, Register, Role, Shutdown};
use ps_transport::node::{host_name, next_control, register, spawn_heartbeats, Control};
use ps_transport::{make_endpoint, write_frame, ClusterIdentity, EndpointOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct ServerNodeConfig {
    pub coordinator: SocketAddr,
    pub listen: SocketAddr,
    /// Address workers should use; defaults to the bound address.
    pub advertise: Option<String>,
    /// The shard id to ask the coordinator for.
    pub requested_id: Option<u32>,
    pub options: EndpointOptions,
    pub limits: Limits,
    /// Where this shard keeps its checkpoints (`DIR/shard-{id}`), when the job checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
}

/// The fingerprint a checkpoint of this job carries: the tables, the job, the cluster's shape,
/// and the run's nonce. A checkpoint with another one is refused.
pub fn fingerprint_of(a: &Assign) -> u64 {
    let tables = serde_json::to_vec(&a.shard_map.tables).unwrap_or_default();
    let job = serde_json::to_vec(&a.job).unwrap_or_default();
    job_fingerprint(&[
        &tables[..],
        &job[..],
        &a.num_servers.to_le_bytes(),
        &a.num_workers.to_le_bytes(),
        &[a.deterministic as u8],
        &a.recovery.job_nonce.to_le_bytes(),
    ])
}

/// What a replacement shard restored: the checkpoint's clock and its per-worker clocks.
type Restored = (u64, Vec<u64>);

/// The shard as assigned: new, or restored from the latest checkpoint when it replaces a dead
/// one. Returns the shard, the store to write checkpoints to, and what was restored.
fn build_shard(
    a: &Assign,
    dir: Option<&PathBuf>,
) -> Result<(Shard, Option<CheckpointStore>, Option<Restored>), ServerError> {
    let r = &a.recovery;
    let tables = &a.shard_map.tables;
    let fresh = || Shard::try_new(a.id, a.num_servers, tables, a.num_workers, a.deterministic);
    if !r.restartable() {
        return Ok((fresh()?, None, None));
    }
    let dir = dir.ok_or_else(|| {
        ServerError::Recovery(
            "the job checkpoints (--checkpoint-every) but this shard has no --checkpoint-dir"
                .into(),
        )
    })?;
    let store = CheckpointStore::open(dir, a.id, r.keep as usize)?;
    let fp = fingerprint_of(a);
    let plan = CheckpointPlan::new(r.checkpoint_every, r.keep);
    if !r.resume {
        if let Some((_, f)) = store.list()?.last() {
            return Err(ServerError::Recovery(format!(
                "{} holds checkpoints of an earlier run ({}): remove them or pick another --checkpoint-dir",
                store.dir().display(),
                f.display()
            )));
        }
        let mut shard = fresh()?;
        shard.plan = plan;
        return Ok((shard, Some(store), None));
    }
    let facts = ShardFacts::new(a.id, a.num_servers, tables, a.num_workers, a.deterministic);
    let loaded = store.load_latest(fp, &facts)?;
    let (mut shard, restored) = match loaded {
        Some(l) => {
            for s in &l.skipped {
                warn!(shard = a.id, file = %s.path.display(), "skipped a damaged checkpoint: {}", s.reason);
            }
            let snap = l.snapshot;
            info!(shard = a.id, clock = snap.clock, path = %l.path.display(), "restoring checkpoint");
            let restored = (snap.clock, snap.completed.clone());
            let shard = Shard::from_snapshot(
                a.id,
                a.num_servers,
                tables,
                a.num_workers,
                a.deterministic,
                snap,
            )?;
            (shard, restored)
        }
        None => {
            warn!(
                shard = a.id,
                "no checkpoint yet: restarting from the initial state"
            );
            (fresh()?, (0, vec![0; a.num_workers as usize]))
        }
    };
    shard.plan = plan.resumed(restored.0, restored.1.clone());
    Ok((shard, Some(store), Some(restored)))
}

/// Runs a shard until the coordinator ends the job. Returns an error if the job failed.
pub async fn run_server_node(
    cfg: ServerNodeConfig,
    identity: ClusterIdentity,
) -> Result<(), ServerError> {
    let endpoint = make_endpoint(cfg.listen, &identity, &cfg.options)?;
    let bound = endpoint
        .local_addr()
        .map_err(|e| ServerError::Coordinator(e.to_string()))?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    let reg = Register {
        role: Role::Server,
        listen_addr: Some(advertise.clone()),
        host: host_name(),
        pid: std::process::id(),
        requested_id: cfg.requested_id,
    };
    let mut r = register(
        &endpoint,
        cfg.coordinator,
        &cfg.options.server_name,
        reg,
        &cfg.limits,
    )
    .await?;
    let a = r.assign.clone();
    info!(shard = a.id, %advertise, resume = a.recovery.resume, "assigned");
    let (shard, store, restored) = build_shard(&a, cfg.checkpoint_dir.as_ref())?;
    let limits = Limits {
        max_frame_bytes: a.max_frame_bytes,
        ..cfg.limits
    };
    let checkpoints = store.map(|s| (s, fingerprint_of(&a)));
    let handle = serve_shard_with(endpoint.clone(), shard, limits, checkpoints)?;
    let hb = spawn_heartbeats(
        r.conn.clone(),
        a.id,
        Duration::from_millis(a.heartbeat_ms.max(10)),
    );
    // A replacement says what it restored, so workers resend the rest.
    let mut events = None;
    if let Some((clock, worker_clocks)) = restored {
        let mut uni = r
            .conn
            .open_uni()
            .await
            .map_err(|e| ServerError::Coordinator(format!("opening the event stream: {e}")))?;
        let ev = ControlEvent::Restored {
            shard: a.id,
            checkpoint_clock: clock,
            worker_clocks,
        };
        write_frame(&mut uni, &Frame::control(Kind::Event, &ev)).await?;
        events = Some(uni);
    }
    let outcome = loop {
        match next_control(&mut r.control_recv, &cfg.limits).await {
            Ok(Control::Event(ControlEvent::Evict { worker })) => {
                info!(shard = a.id, worker, "evicting a dead worker");
                if let Err(e) = handle.evict(worker) {
                    warn!("evicting worker {worker}: {e}");
                }
            }
            Ok(Control::Event(other)) => warn!("ignoring an unexpected event: {other:?}"),
            Ok(Control::Shutdown(s)) => break Ok(s),
            Err(e) => break Err(e),
        }
    };
    if matches!(outcome, Ok(Shutdown { ok: true, .. })) {
        if let Err(e) = handle.finish_checkpoints() {
            warn!(shard = a.id, "the final checkpoint failed: {e}");
        }
    }
    hb.abort();
    handle.shutdown();
    if let Some(mut uni) = events {
        let _ = uni.finish();
    }
    r.conn.close(0u32.into(), b"bye");
    endpoint.wait_idle().await;
    match outcome? {
        Shutdown { ok: true, .. } => Ok(()),
        Shutdown { ok: false, reason } => Err(ServerError::JobFailed(reason)),
    }
}
