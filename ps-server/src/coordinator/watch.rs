//! Watches one node's connection: heartbeat datagrams, and the reports, final figures and
//! events it sends on the unidirectional stream it opens after its assignment. Every event is
//! tagged with the node's slot and incarnation, so that events of a replaced node are ignored.

use ps_proto::{ClockReport, ControlEvent, Done, Kind, Limits};
use ps_transport::{read_frame, FrameRead};
use tokio::sync::mpsc;

pub(super) enum NodeEvent {
    Report(ClockReport),
    Done(Done),
    Event(ControlEvent),
    Heartbeat,
    Lost(String),
}

/// An event of node slot `slot` in its incarnation `incarnation`.
pub(super) struct Tagged {
    pub slot: usize,
    pub incarnation: u32,
    pub event: NodeEvent,
}

pub(super) fn spawn_watchers(
    slot: usize,
    incarnation: u32,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Tagged>,
    limits: Limits,
) {
    let tag = move |event| Tagged {
        slot,
        incarnation,
        event,
    };
    let c = conn.clone();
    let t = tx.clone();
    tokio::spawn(async move {
        loop {
            match c.read_datagram().await {
                Ok(_) => {
                    if t.send(tag(NodeEvent::Heartbeat)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = t.send(tag(NodeEvent::Lost(format!("connection lost: {e}"))));
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut recv = match conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(tag(NodeEvent::Lost(format!("connection lost: {e}"))));
                return;
            }
        };
        loop {
            match read_frame(&mut recv, &limits).await {
                Ok(FrameRead::Frame(f)) => {
                    let ev = match f.header.kind {
                        Kind::Report => f.parse_control(Kind::Report).map(NodeEvent::Report),
                        Kind::Done => f.parse_control(Kind::Done).map(NodeEvent::Done),
                        Kind::Event => f.parse_control(Kind::Event).map(NodeEvent::Event),
                        other => Err(ps_proto::ProtoError::Protocol(format!(
                            "unexpected {} frame",
                            other.name()
                        ))),
                    };
                    match ev {
                        Ok(ev) => {
                            if tx.send(tag(ev)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ =
                                tx.send(tag(NodeEvent::Lost(format!("sent a bad report: {e}"))));
                            return;
                        }
                    }
                }
                Ok(FrameRead::End) => return,
                Err(e) => {
                    let _ = tx.send(tag(NodeEvent::Lost(format!("report stream failed: {e}"))));
                    return;
                }
            }
        }
    });
}
