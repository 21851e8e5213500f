//! A whole frame: header, keys, payload.

use crate::error::{ErrorCode, ProtoError};
use crate::header::{Codec, Header, Kind, Limits, HEADER_LEN};
use serde::{de::DeserializeOwned, Serialize};

/// A decoded frame. Keys and payload are owned, aligned copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Header,
    pub keys: Vec<u64>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes a frame from one contiguous buffer (header + body). Trailing bytes are an error.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, ProtoError> {
        let header = Header::decode(bytes, limits)?;
        let body = &bytes[HEADER_LEN..];
        let need = header.body_len();
        if (body.len() as u64) < need {
            return Err(ProtoError::Truncated {
                needed: HEADER_LEN as u64 + need,
                got: bytes.len() as u64,
            });
        }
        if body.len() as u64 > need {
            return Err(ProtoError::Malformed(format!(
                "{} trailing bytes after the frame",
                body.len() as u64 - need
            )));
        }
        Frame::from_parts(header, body)
    }

    /// Builds a frame from a validated header and exactly `header.body_len()` body bytes.
    pub fn from_parts(header: Header, body: &[u8]) -> Result<Frame, ProtoError> {
        if body.len() as u64 != header.body_len() {
            return Err(ProtoError::Truncated {
                needed: header.body_len(),
                got: body.len() as u64,
            });
        }
        let key_bytes = header.key_count as usize * 8;
        let keys = body[..key_bytes]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Frame {
            header,
            keys,
            payload: body[key_bytes..].to_vec(),
        })
    }

    /// The frame as bytes: header, keys, payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.keys.len() * 8 + self.payload.len());
        out.extend_from_slice(&self.header.to_bytes());
        for k in &self.keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// A control frame with a JSON payload.
    pub fn control<T: Serialize>(kind: Kind, msg: &T) -> Frame {
        debug_assert!(kind.is_control());
        // Serialising plain data structs to JSON cannot fail.
        let payload = serde_json::to_vec(msg).unwrap_or_default();
        let mut header = Header::new(kind);
        header.payload_len = payload.len() as u64;
        Frame {
            header,
            keys: Vec::new(),
            payload,
        }
    }

    /// Parses the JSON payload of a control frame, expecting `kind`.
    pub fn parse_control<T: DeserializeOwned>(&self, kind: Kind) -> Result<T, ProtoError> {
        if self.header.kind != kind {
            return Err(ProtoError::Protocol(format!(
                "expected a {} frame, got {}",
                kind.name(),
                self.header.kind.name()
            )));
        }
        serde_json::from_slice(&self.payload).map_err(|e| {
            ProtoError::Malformed(format!("{} payload is not valid: {e}", kind.name()))
        })
    }

    /// An error frame.
    pub fn error(code: ErrorCode, message: &str) -> Frame {
        let mut header = Header::new(Kind::Error);
        header.aux = code as u64;
        header.payload_len = message.len() as u64;
        Frame {
            header,
            keys: Vec::new(),
            payload: message.as_bytes().to_vec(),
        }
    }

    /// (code, message) of an error frame.
    pub fn error_parts(&self) -> Option<(Option<ErrorCode>, String)> {
        if self.header.kind != Kind::Error {
            return None;
        }
        Some((
            ErrorCode::from_u64(self.header.aux),
            String::from_utf8_lossy(&self.payload).into_owned(),
        ))
    }

    /// The values of a Push or PullReply frame as f32s (aligned copy).
    pub fn values(&self) -> Result<Vec<f32>, ProtoError> {
        if self.header.codec != Codec::RawF32 {
            return Err(ProtoError::BadCodec {
                codec: self.header.codec as u16,
                kind: self.header.kind.name(),
            });
        }
        decode_f32s(&self.payload)
    }
}

/// Builds data frames without an intermediate copy of the values.
pub struct FrameBuilder;

impl FrameBuilder {
    pub fn pull(table: u32, worker: u32, min_clock: u64, width: u32, keys: &[u64]) -> Frame {
        let mut h = Header::new(Kind::Pull);
        h.table = table;
        h.worker = worker;
        h.clock = min_clock;
        h.width = width;
        h.key_count = keys.len() as u32;
        Frame {
            header: h,
            keys: keys.to_vec(),
            payload: Vec::new(),
        }
    }

    /// A push of row deltas tagged with the worker's `clock`.
    pub fn push(
        table: u32,
        worker: u32,
        clock: u64,
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        Self::rows(Kind::Push, table, worker, (clock, 0), width, keys, values)
    }

    /// A pull reply: rows complete through `min_clock`, containing `worker_clock` of the
    /// requesting worker's clocks.
    pub fn pull_reply(
        table: u32,
        worker: u32,
        min_clock: u64,
        worker_clock: u64,
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        Self::rows(
            Kind::PullReply,
            table,
            worker,
            (min_clock, worker_clock),
            width,
            keys,
            values,
        )
    }

    fn rows(
        kind: Kind,
        table: u32,
        worker: u32,
        (clock, aux): (u64, u64),
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        debug_assert!(kind.carries_values());
        debug_assert_eq!(keys.len() * width as usize, values.len());
        let mut h = Header::new(kind);
        h.table = table;
        h.worker = worker;
        h.clock = clock;
        h.aux = aux;
        h.width = width;
        h.codec = Codec::RawF32;
        h.key_count = keys.len() as u32;
        let payload = encode_f32s(values);
        h.payload_len = payload.len() as u64;
        Frame {
            header: h,
            keys: keys.to_vec(),
            payload,
        }
    }

    pub fn clock(worker: u32, clock: u64, pushes: u64) -> Frame {
        let mut h = Header::new(Kind::Clock);
        h.worker = worker;
        h.clock = clock;
        h.aux = pushes;
        Frame {
            header: h,
            keys: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn ack(worker: u32, min_clock: u64, worker_clock: u64) -> Frame {
        let mut h = Header::new(Kind::Ack);
        h.worker = worker;
        h.clock = min_clock;
        h.aux = worker_clock;
        Frame {
            header: h,
            keys: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn heartbeat(node: u32, clock: u64) -> Frame {
        let mut h = Header::new(Kind::Heartbeat);
        h.worker = node;
        h.clock = clock;
        Frame {
            header: h,
            keys: Vec::new(),
            payload: Vec::new(),
        }
    }
}

/// f32s as little-endian bytes.
pub fn encode_f32s(values: &[f32]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Little-endian bytes (possibly misaligned) to f32s.
pub fn decode_f32s(bytes: &[u8]) -> Result<Vec<f32>, ProtoError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(ProtoError::Malformed(format!(
            "f32 payload of {} bytes is not a multiple of 4",
            bytes.len()
        )));
    }
    let mut out = vec![0f32; bytes.len() / 4];
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut::<f32, u8>(&mut out).copy_from_slice(bytes);
    } else {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{RawHeader, MAGIC};
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_frame_bytes: 1 << 20,
            max_width: 4096,
        }
    }

    #[test]
    fn push_round_trips() {
        let f = FrameBuilder::push(3, 1, 7, 2, &[5, 9], &[1.0, 2.0, 3.0, -4.5]);
        let bytes = f.encode();
        let g = Frame::decode(&bytes, &limits()).unwrap();
        assert_eq!(f, g);
        assert_eq!(g.values().unwrap(), vec![1.0, 2.0, 3.0, -4.5]);
    }

    #[test]
    fn decodes_from_misaligned_buffer() {
        let f = FrameBuilder::pull_reply(1, 0, 2, 3, 3, &[1], &[0.5, 0.25, 8.0]);
        let mut bytes = vec![0u8];
        bytes.extend(f.encode());
        let g = Frame::decode(&bytes[1..], &limits()).unwrap();
        assert_eq!(f, g);
    }

    #[test]
    fn control_round_trips() {
        let s = crate::Shutdown {
            ok: false,
            reason: "worker 1 died".into(),
        };
        let f = Frame::control(Kind::Shutdown, &s);
        let g = Frame::decode(&f.encode(), &limits()).unwrap();
        assert_eq!(
            g.parse_control::<crate::Shutdown>(Kind::Shutdown).unwrap(),
            s
        );
        assert!(g.parse_control::<crate::Shutdown>(Kind::Assign).is_err());
    }

    fn raw(kind: u16) -> RawHeader {
        RawHeader {
            magic: MAGIC,
            version: 1,
            kind,
            table: 0,
            codec: 0,
            flags: 0,
            clock: 0,
            aux: 0,
            worker: 0,
            key_count: 0,
            width: 0,
            reserved: 0,
            payload_len: 0,
        }
    }

    fn decode_raw(r: RawHeader, body: &[u8]) -> Result<Frame, ProtoError> {
        let mut b = bytemuck::bytes_of(&r).to_vec();
        b.extend_from_slice(body);
        Frame::decode(&b, &limits())
    }

    #[test]
    fn rejects_each_kind_of_bad_header() {
        let mut r = raw(Kind::Heartbeat as u16);
        assert!(decode_raw(r, &[]).is_ok());
        r.magic = 0xdead_beef;
        assert!(matches!(
            decode_raw(r, &[]),
            Err(ProtoError::BadMagic(0xdead_beef))
        ));
        let mut r = raw(Kind::Heartbeat as u16);
        r.version = 9;
        assert!(matches!(decode_raw(r, &[]), Err(ProtoError::BadVersion(9))));
        let r = raw(99);
        assert!(matches!(
            decode_raw(r, &[]),
            Err(ProtoError::UnknownKind(99))
        ));
        let mut r = raw(Kind::Push as u16);
        r.codec = 1;
        r.width = 2;
        r.key_count = 1;
        r.payload_len = 4; // should be 8
        assert!(matches!(
            decode_raw(r, &[0; 12]),
            Err(ProtoError::Malformed(_))
        ));
        let mut r = raw(Kind::Push as u16);
        r.codec = 7;
        assert!(matches!(
            decode_raw(r, &[]),
            Err(ProtoError::BadCodec { .. })
        ));
        let mut r = raw(Kind::Register as u16);
        r.payload_len = 1 << 40;
        assert!(matches!(
            decode_raw(r, &[]),
            Err(ProtoError::TooLarge { .. })
        ));
        let mut r = raw(Kind::Pull as u16);
        r.width = 1;
        r.key_count = 2;
        assert!(matches!(
            decode_raw(r, &[0; 9]),
            Err(ProtoError::Truncated { .. })
        ));
        assert!(matches!(
            Frame::decode(&[1, 2, 3], &limits()),
            Err(ProtoError::Truncated { .. })
        ));
        let mut r = raw(Kind::Heartbeat as u16);
        r.flags = 1;
        assert!(decode_raw(r, &[]).is_err());
        let r = raw(Kind::Heartbeat as u16);
        assert!(decode_raw(r, &[0]).is_err(), "trailing bytes");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes, &limits());
        }

        #[test]
        fn arbitrary_headers_never_panic(magic in prop_oneof![Just(MAGIC), any::<u32>()], version in 0u16..3,
            kind in 0u16..14, codec in 0u16..3, key_count in 0u32..8, width in 0u32..8, payload_len in 0u64..80,
            body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = raw(kind);
            r.magic = magic; r.version = version; r.codec = codec; r.key_count = key_count;
            r.width = width; r.payload_len = payload_len;
            if let Ok(f) = decode_raw(r, &body) {
                // Whatever decodes re-encodes to the same bytes.
                let mut b = bytemuck::bytes_of(&r).to_vec();
                b.extend_from_slice(&body);
                prop_assert_eq!(f.encode(), b);
            }
        }

        #[test]
        fn rows_round_trip(keys in proptest::collection::vec(any::<u64>(), 0..20), width in 1u32..6, seed in any::<u32>()) {
            let values: Vec<f32> = (0..keys.len() * width as usize).map(|i| (i as f32) * 0.5 + seed as f32).collect();
            let f = FrameBuilder::push(1, 2, 3, width, &keys, &values);
            let g = Frame::decode(&f.encode(), &limits()).unwrap();
            prop_assert_eq!(g.values().unwrap(), values);
            prop_assert_eq!(g.keys, keys);
        }
    }
}
