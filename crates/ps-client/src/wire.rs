//! The two request shapes a worker sends a shard, over one bidirectional stream each.

use crate::error::ClientError;
use ps_proto::codec::default_key_hash;
use ps_proto::{Frame, FrameBuilder, KeyForm, Kind, Limits, HEADER_LEN};
use ps_transport::{read_frame, write_frame, write_frame_owned, FrameRead, TransportError};

/// Bytes sent and received by one request, and what it would have sent as listed keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
    pub logical_sent: u64,
}

impl Traffic {
    pub fn add(&mut self, t: Traffic) {
        self.sent += t.sent;
        self.received += t.received;
        self.logical_sent += t.logical_sent;
    }
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

/// Pulls `keys` of `table`, complete through `min_clock`, naming the keys in `form` (see
/// `keys::KeyCaches`; `List` sends a range where it can). Returns the reply frame (validated
/// against the request) and the traffic.
#[allow(clippy::too_many_arguments)]
pub async fn pull(
    conn: &quinn::Connection,
    limits: &Limits,
    table: u32,
    worker: u32,
    min_clock: u64,
    width: u32,
    keys: &[u64],
    form: KeyForm,
) -> Result<(Frame, Traffic), ClientError> {
    let started = std::time::Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(stream_err)?;
    // Pulls unblock compute: ahead of pushes.
    let _ = send.set_priority(1);
    let mut request = FrameBuilder::pull(table, worker, min_clock, width, keys);
    match form {
        KeyForm::List => request.compact_keys(),
        f => request.set_key_form(f),
    }
    let logical_sent = (HEADER_LEN + 8 * keys.len()) as u64;
    let sent = write_frame(&mut send, &request).await?;
    send.finish().map_err(stream_err)?;
    let (mut reply, received) = read_reply(&mut recv, limits, Kind::PullReply).await?;
    crate::telemetry::pulled(worker, table, received, started.elapsed().as_secs_f64());
    if let KeyForm::Cached { id, hash } = reply.key_form {
        // The shard names the keys by the cache entry the request used: check it is ours.
        let ours = match request.key_form {
            KeyForm::Assign(a) => a == id && hash == default_key_hash(keys),
            KeyForm::Cached { id: i, hash: h } => (i, h) == (id, hash),
            _ => false,
        };
        if ours {
            reply.keys = keys.to_vec();
        }
    }
    let h = reply.header;
    if h.table != table || h.width != width || reply.keys != keys {
        return Err(
            ps_proto::ProtoError::Protocol("pull reply does not match the request".into()).into(),
        );
    }
    Ok((
        reply,
        Traffic {
            sent,
            received,
            logical_sent,
        },
    ))
}

/// What a shard's ack of a clock batch says.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    /// This worker's clocks the shard has applied.
    pub applied: u64,
    /// This worker's clocks the shard's kept checkpoints cover, if it checkpoints.
    pub covered: Option<u64>,
}

/// Sends one clock batch (push frames, the last ending the clock, or a lone clock frame; see
/// `push::end_batches`) and waits for the ack.
pub async fn push_batch(
    conn: &quinn::Connection,
    limits: &Limits,
    frames: Vec<Frame>,
) -> Result<(Acked, Traffic), ClientError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(stream_err)?;
    let mut sent = 0;
    for f in frames {
        let h = f.header;
        let n = write_frame_owned(&mut send, f).await?;
        if h.kind == Kind::Push {
            crate::telemetry::pushed(h.worker, h.table, n);
        }
        sent += n;
    }
    send.finish().map_err(stream_err)?;
    let (ack, received) = read_reply(&mut recv, limits, Kind::Ack).await?;
    Ok((
        Acked {
            applied: ack.header.aux,
            covered: ack.ack_covered(),
        },
        Traffic {
            sent,
            received,
            logical_sent: 0,
        },
    ))
}
