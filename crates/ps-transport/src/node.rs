//! The node side of the coordinator protocol, shared by shards and workers: register on a
//! control stream and receive the assignment, send heartbeat datagrams, and wait for the
//! coordinator's shutdown.

use crate::error::TransportError;
use crate::{connect, read_frame, write_frame, FrameRead};
use ps_proto::{Assign, ControlEvent, Frame, FrameBuilder, Kind, Limits, Register, Shutdown};
use std::net::SocketAddr;
use std::time::Duration;

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
) -> Result<Registration, TransportError> {
    let conn = connect(endpoint, coordinator, server_name).await?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| TransportError::Coordinator(format!("opening the control stream: {e}")))?;
    write_frame(&mut send, &Frame::control(Kind::Register, &reg)).await?;
    let assign = match read_frame(&mut recv, limits).await? {
        FrameRead::Frame(f) if f.header.kind == Kind::Error => {
            let (_, msg) = f.error_parts().unwrap_or((None, String::new()));
            return Err(TransportError::Coordinator(format!(
                "registration refused: {msg}"
            )));
        }
        FrameRead::Frame(f) => f.parse_control::<Assign>(Kind::Assign)?,
        FrameRead::End => {
            return Err(TransportError::Coordinator(
                "coordinator closed the control stream".into(),
            ))
        }
    };
    if assign.role != reg.role {
        return Err(TransportError::Coordinator(
            "assigned the wrong role".into(),
        ));
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

/// What the coordinator says on a node's control stream while the job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Shutdown(Shutdown),
    Event(ControlEvent),
}

/// Waits for the coordinator's Shutdown on the control stream, ignoring events.
pub async fn await_shutdown(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Shutdown, TransportError> {
    loop {
        if let Control::Shutdown(s) = next_control(recv, limits).await? {
            return Ok(s);
        }
    }
}

/// The next message on the control stream: an event of the running job, or the shutdown.
pub async fn next_control(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Control, TransportError> {
    match read_frame(recv, limits).await {
        Ok(FrameRead::Frame(f)) if f.header.kind == Kind::Event => {
            Ok(Control::Event(f.parse_control(Kind::Event)?))
        }
        Ok(FrameRead::Frame(f)) => Ok(Control::Shutdown(
            f.parse_control::<Shutdown>(Kind::Shutdown)?,
        )),
        Ok(FrameRead::End) => Err(TransportError::Coordinator(
            "coordinator closed the control stream".into(),
        )),
        Err(e) => Err(TransportError::Coordinator(format!(
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
