//! Frames on QUIC streams: a fixed header, then exactly `body_len` bytes.

use crate::error::TransportError;
use ps_proto::{Frame, Header, Limits, ProtoError, HEADER_LEN};

/// What reading a frame from a stream gave.
#[derive(Debug)]
pub enum FrameRead {
    Frame(Frame),
    /// The peer finished the stream cleanly between frames.
    End,
}

/// Reads one frame. A header that fails validation is returned as `TransportError::Proto` before
/// its body is read, so a declared length over the cap never causes an allocation.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<FrameRead, TransportError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0usize;
    while got < HEADER_LEN {
        match recv.read(&mut head[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) if got == 0 => return Ok(FrameRead::End),
            Ok(None) => {
                return Err(ProtoError::Truncated {
                    needed: HEADER_LEN as u64,
                    got: got as u64,
                }
                .into())
            }
            Err(e) => return Err(TransportError::Stream(e.to_string())),
        }
    }
    let header = Header::decode(&head, limits)?;
    let body_len = header.body_len();
    // Keys and payload are read into their own buffers, each filled from quinn's chunks (one
    // copy, and no zero-filling first); the payload is never copied again here.
    let mut key_bytes = Vec::new();
    let mut payload = Vec::new();
    let mut done = 0u64;
    for (buf, len) in [
        (&mut key_bytes, header.key_section_len()),
        (&mut payload, header.payload_len),
    ] {
        buf.reserve_exact(len as usize);
        while (buf.len() as u64) < len {
            match recv.read_chunk(len as usize - buf.len(), true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    return Err(ProtoError::Truncated {
                        needed: HEADER_LEN as u64 + body_len,
                        got: HEADER_LEN as u64 + done + buf.len() as u64,
                    }
                    .into())
                }
                Err(e) => return Err(TransportError::Stream(e.to_string())),
            }
        }
        done += len;
    }
    Ok(FrameRead::Frame(Frame::from_sections(
        header, &key_bytes, payload,
    )?))
}

/// Header and key section of a frame, as one buffer.
fn head_of(frame: &Frame) -> Vec<u8> {
    let keys = frame.key_section();
    let mut head = Vec::with_capacity(HEADER_LEN + keys.len());
    head.extend_from_slice(&frame.header.to_bytes());
    head.extend_from_slice(&keys);
    head
}

/// Writes one frame; returns the bytes written. Header and keys go in one write and the payload
/// in another, so the payload is not first copied into a contiguous frame buffer.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &Frame,
) -> Result<u64, TransportError> {
    let head = head_of(frame);
    let err = |e: quinn::WriteError| TransportError::Stream(e.to_string());
    send.write_all(&head).await.map_err(err)?;
    send.write_all(&frame.payload).await.map_err(err)?;
    Ok((head.len() + frame.payload.len()) as u64)
}

/// Writes one frame it owns: the payload buffer is handed to quinn without a copy.
pub async fn write_frame_owned(
    send: &mut quinn::SendStream,
    frame: Frame,
) -> Result<u64, TransportError> {
    let head = head_of(&frame);
    let n = (head.len() + frame.payload.len()) as u64;
    let mut chunks = [bytes::Bytes::from(head), bytes::Bytes::from(frame.payload)];
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    Ok(n)
}
