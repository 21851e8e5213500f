//! The server node role: register with the coordinator, build the shard it is assigned, serve
//! workers, send heartbeats, and stop when the coordinator says so.

use crate::error::ServerError;
use crate::service::serve_shard;
use crate::shard::Shard;
use ps_proto::{Assign, Frame, FrameBuilder, Kind, Limits, Register, Role, Shutdown};
use ps_transport::{
    connect, make_endpoint, read_frame, write_frame, ClusterIdentity, EndpointOptions, FrameRead,
};
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

/// Frames a node needs from registration: its assignment and the control stream.
pub struct Registration {
    pub assign: Assign,
    pub conn: quinn::Connection,
    pub control_send: quinn::SendStream,
    pub control_recv: quinn::RecvStream,
}

/// Connects to the coordinator and registers; returns once the coordinator has assigned us.
pub async fn register(
    endpoint: &quinn::Endpoint,
    coordinator: SocketAddr,
    server_name: &str,
    reg: Register,
    limits: &Limits,
) -> Result<Registration, ServerError> {
    let conn = connect(endpoint, coordinator, server_name).await?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ServerError::Coordinator(format!("opening the control stream: {e}")))?;
    write_frame(&mut send, &Frame::control(Kind::Register, &reg)).await?;
    let assign = match read_frame(&mut recv, limits).await? {
        FrameRead::Frame(f) if f.header.kind == Kind::Error => {
            let (_, msg) = f.error_parts().unwrap_or((None, String::new()));
            return Err(ServerError::Coordinator(format!(
                "registration refused: {msg}"
            )));
        }
        FrameRead::Frame(f) => f.parse_control::<Assign>(Kind::Assign)?,
        FrameRead::End => {
            return Err(ServerError::Coordinator(
                "coordinator closed the control stream".into(),
            ))
        }
    };
    if assign.role != reg.role {
        return Err(ServerError::Coordinator("assigned the wrong role".into()));
    }
    Ok(Registration {
        assign,
        conn,
        control_send: send,
        control_recv: recv,
    })
}

/// Sends a heartbeat datagram every `period` until the connection closes.
pub fn spawn_heartbeats(
    conn: quinn::Connection,
    node: u32,
    period: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let bytes = FrameBuilder::heartbeat(node, 0).encode();
            if conn.send_datagram(bytes.into()).is_err() {
                return;
            }
        }
    })
}

/// Waits for the coordinator's Shutdown on the control stream.
pub async fn await_shutdown(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Shutdown, ServerError> {
    match read_frame(recv, limits).await {
        Ok(FrameRead::Frame(f)) => Ok(f.parse_control::<Shutdown>(Kind::Shutdown)?),
        Ok(FrameRead::End) => Err(ServerError::Coordinator(
            "coordinator closed the control stream".into(),
        )),
        Err(e) => Err(ServerError::Coordinator(format!(
            "lost the coordinator: {e}"
        ))),
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
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
