//! The server node role: register with the coordinator, build the shard it is assigned, serve
//! workers, send heartbeats, and stop when the coordinator says so.

use crate::error::ServerError;
use crate::service::serve_shard;
use crate::shard::Shard;
use ps_proto::{Limits, Register, Role, Shutdown};
use ps_transport::node::{await_shutdown, host_name, register, spawn_heartbeats};
use ps_transport::{make_endpoint, ClusterIdentity, EndpointOptions};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::info;

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
    let a = &r.assign;
    info!(shard = a.id, %advertise, "assigned");
    let shard = Shard::try_new(
        a.id,
        a.num_servers,
        &a.shard_map.tables,
        a.num_workers,
        a.deterministic,
    )?;
    let limits = Limits {
        max_frame_bytes: a.max_frame_bytes,
        ..cfg.limits
    };
    let handle = serve_shard(endpoint.clone(), shard, limits)?;
    let hb = spawn_heartbeats(
        r.conn.clone(),
        a.id,
        Duration::from_millis(a.heartbeat_ms.max(10)),
    );
    let outcome = await_shutdown(&mut r.control_recv, &cfg.limits).await;
    hb.abort();
    handle.shutdown();
    r.conn.close(0u32.into(), b"bye");
    endpoint.wait_idle().await;
    match outcome? {
        Shutdown { ok: true, .. } => Ok(()),
        Shutdown { ok: false, reason } => Err(ServerError::JobFailed(reason)),
    }
}
