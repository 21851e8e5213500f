//! The two request shapes a worker sends a shard, over one bidirectional stream each.

use crate::error::ClientError;
use ps_proto::{Frame, FrameBuilder, Kind, Limits};
use ps_transport::{read_frame, write_frame, write_frame_owned, FrameRead, TransportError};

/// Bytes sent and received by one request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

async fn read_reply(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
    expect: Kind,
) -> Result<(Frame, u64), ClientError> {
    match read_frame(recv, limits).await? {
        FrameRead::Frame(f) if f.header.kind == expect => {
            let n = ps_proto::HEADER_LEN as u64 + f.header.body_len();
            Ok((f, n))
        }
        FrameRead::Frame(f) if f.header.kind == Kind::Error => {
            let (code, message) = f.error_parts().unwrap_or((None, String::new()));
            Err(TransportError::Remote { code, message }.into())
        }
        FrameRead::Frame(f) => Err(ps_proto::ProtoError::Protocol(format!(
            "expected {}, got {}",
            expect.name(),
            f.header.kind.name()
        ))
        .into()),
        FrameRead::End => Err(ps_proto::ProtoError::Protocol(format!(
            "stream ended before {}",
            expect.name()
        ))
        .into()),
    }
}

fn stream_err(e: impl std::fmt::Display) -> ClientError {
    TransportError::Stream(e.to_string()).into()
}

/// Pulls `keys` of `table`, complete through `min_clock`. Returns the reply frame (validated
/// against the request) and the traffic.
pub async fn pull(
    conn: &quinn::Connection,
    limits: &Limits,
    table: u32,
    worker: u32,
    min_clock: u64,
    width: u32,
    keys: &[u64],
) -> Result<(Frame, Traffic), ClientError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(stream_err)?;
    // Pulls unblock compute: ahead of pushes.
    let _ = send.set_priority(1);
    let sent = write_frame(
        &mut send,
        &FrameBuilder::pull(table, worker, min_clock, width, keys),
    )
    .await?;
    send.finish().map_err(stream_err)?;
    let (reply, received) = read_reply(&mut recv, limits, Kind::PullReply).await?;
    let h = reply.header;
    if h.table != table || h.width != width || reply.keys != keys {
        return Err(
            ps_proto::ProtoError::Protocol("pull reply does not match the request".into()).into(),
        );
    }
    Ok((reply, Traffic { sent, received }))
}

/// Sends one clock batch (push frames then the clock frame) and waits for the ack.
/// Returns (worker clocks applied at the shard, traffic).
pub async fn push_batch(
    conn: &quinn::Connection,
    limits: &Limits,
    frames: Vec<Frame>,
    worker: u32,
    clock: u64,
) -> Result<(u64, Traffic), ClientError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(stream_err)?;
    let mut sent = 0;
    let count = frames.len() as u64;
    for f in frames {
        sent += write_frame_owned(&mut send, f).await?;
    }
    sent += write_frame(&mut send, &FrameBuilder::clock(worker, clock, count)).await?;
    send.finish().map_err(stream_err)?;
    let (ack, received) = read_reply(&mut recv, limits, Kind::Ack).await?;
    Ok((ack.header.aux, Traffic { sent, received }))
}
