//! A whole frame: header, keys, payload.

use crate::codec::{self, Decoded};
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

    /// The values of a Push or PullReply frame as f32s (aligned copy): raw f32 as is, f16/bf16
    /// widened, sparse payloads densified to `key_count * width` values (use
    /// [`Frame::decoded`] to apply a sparse payload without densifying).
    pub fn values(&self) -> Result<Vec<f32>, ProtoError> {
        match self.header.codec {
            Codec::RawF32 => decode_f32s(&self.payload),
            Codec::Encoded(_) => self.decoded()?.into_dense(self.block_len()?),
            Codec::None => Err(ProtoError::BadCodec {
                codec: self.header.codec.to_u16(),
                kind: self.header.kind.name(),
            }),
        }
    }

    /// The values of a Push or PullReply frame as one block of `key_count * width` values
    /// (row-major), dense or sparse as the codec sent them.
    pub fn decoded(&self) -> Result<Decoded, ProtoError> {
        let n = self.block_len()?;
        match self.header.codec {
            Codec::RawF32 => {
                let v = decode_f32s(&self.payload)?;
                if v.len() != n {
                    return Err(ProtoError::Malformed(format!(
                        "raw payload of {} values, expected {n}",
                        v.len()
                    )));
                }
                Ok(Decoded::Dense(v))
            }
            Codec::Encoded(id) => codec::decode(id, &self.payload, n),
            Codec::None => Err(ProtoError::BadCodec {
                codec: 0,
                kind: self.header.kind.name(),
            }),
        }
    }

    /// `key_count * width`.
    fn block_len(&self) -> Result<usize, ProtoError> {
        usize::try_from(self.header.key_count as u64 * self.header.width as u64)
            .map_err(|_| ProtoError::Malformed("block too large for this machine".into()))
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

    /// A push whose payload was made by [`codec::encode`] (or [`codec::ErrorFeedback`]) with a
    /// chain of wire id `wire_id`, over the rows of `keys` as one block of `keys.len() * width`.
    pub fn push_encoded(
        table: u32,
        worker: u32,
        clock: u64,
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        Self::rows_encoded(
            Kind::Push,
            table,
            worker,
            (clock, 0),
            width,
            keys,
            wire_id,
            payload,
        )
    }

    /// A pull reply with an encoded payload; see [`FrameBuilder::push_encoded`].
    #[allow(clippy::too_many_arguments)]
    pub fn pull_reply_encoded(
        table: u32,
        worker: u32,
        min_clock: u64,
        worker_clock: u64,
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        Self::rows_encoded(
            Kind::PullReply,
            table,
            worker,
            (min_clock, worker_clock),
            width,
            keys,
            wire_id,
            payload,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn rows_encoded(
        kind: Kind,
        table: u32,
        worker: u32,
        (clock, aux): (u64, u64),
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        debug_assert!(codec::wire_format(wire_id).is_some(), "wire id {wire_id}");
        let mut h = Header::new(kind);
        h.table = table;
        h.worker = worker;
        h.clock = clock;
        h.aux = aux;
        h.width = width;
        h.codec = Codec::from_wire_id(wire_id);
        h.key_count = keys.len() as u32;
        h.payload_len = payload.len() as u64;
        Frame {
            header: h,
            keys: keys.to_vec(),
            payload,
        }
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
        // Wire id 1 is raw little-endian f32 (`Codec::RawF32`).
        Self::rows_encoded(
            kind,
            table,
            worker,
            (clock, aux),
            width,
            keys,
            1,
            encode_f32s(values),
        )
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

    #[test]
    fn encoded_frames_round_trip() {
        use crate::codec::{encode, CodecChain, Decoded};
        let values: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.75).collect();
        for s in [
            "raw",
            "f16",
            "bf16",
            "topk:2,f16",
            "topk:0.5",
            "topk:20,bf16",
        ] {
            let chain: CodecChain = s.parse().unwrap();
            let mut payload = Vec::new();
            encode(&chain, &values, None, &mut payload).unwrap();
            let f = FrameBuilder::push_encoded(
                2,
                1,
                5,
                4,
                &[7, 8, 9, 10, 11, 12],
                chain.wire_id(),
                payload,
            );
            let g = Frame::decode(&f.encode(), &limits()).unwrap();
            assert_eq!(f, g, "{s}");
            let dense = g.values().unwrap();
            assert_eq!(dense.len(), 24);
            let decoded = g.decoded().unwrap();
            assert_eq!(decoded.clone().into_dense(24).unwrap(), dense);
            if chain.is_lossless() {
                assert_eq!(dense, values);
                assert_eq!(g.header.codec, Codec::RawF32);
                assert_eq!(
                    g,
                    FrameBuilder::push(2, 1, 5, 4, &[7, 8, 9, 10, 11, 12], &values)
                );
            }
            if s == "topk:2,f16" {
                // 9.0 (index 23), then -8.25 (index 0) and 8.25 (index 22) tie: lower index wins.
                assert_eq!(
                    decoded,
                    Decoded::Sparse {
                        indices: vec![0, 23],
                        values: vec![-8.25, 9.0]
                    }
                );
            }
        }
        let r = FrameBuilder::pull_reply_encoded(1, 0, 2, 3, 2, &[4], 2, vec![0, 0x3c, 0, 0x3c]);
        let g = Frame::decode(&r.encode(), &limits()).unwrap();
        assert_eq!(g.values().unwrap(), vec![1.0, 1.0]);
    }

    #[test]
    fn encoded_payload_length_rules() {
        let mut r = raw(Kind::Push as u16);
        r.codec = 0x12;
        r.width = 4;
        r.key_count = 2;
        // Over raw + 16 * (keys + 1).
        r.payload_len = 2 * 4 * 4 + 16 * 3 + 1;
        let body = vec![0u8; 16 + r.payload_len as usize];
        assert!(matches!(
            decode_raw(r, &body),
            Err(ProtoError::Malformed(_))
        ));
        // Within the bound: the header passes, the payload is decoded later.
        r.payload_len = 3;
        let f = decode_raw(r, &[0u8; 19]).unwrap();
        assert!(f.decoded().is_err());
        assert!(f.values().is_err());
        // A tiny compressed frame may not stand for more values than a raw frame could hold.
        r.width = 4096;
        r.key_count = 100;
        r.payload_len = 1;
        assert!(matches!(
            decode_raw(r, &[0u8; 801]),
            Err(ProtoError::TooLarge { .. })
        ));
        // Compressed codecs only on value frames; unknown ids stay unknown.
        let mut r = raw(Kind::Pull as u16);
        r.codec = 2;
        r.width = 1;
        assert!(matches!(
            decode_raw(r, &[]),
            Err(ProtoError::BadCodec { .. })
        ));
        for bad in [4u16, 7, 0x10, 0x14, 0x21, 0xFFFF] {
            let mut r = raw(Kind::Push as u16);
            r.codec = bad;
            r.width = 1;
            assert!(
                matches!(decode_raw(r, &[]), Err(ProtoError::BadCodec { .. })),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes, &limits());
        }

        #[test]
        fn arbitrary_headers_never_panic(magic in prop_oneof![Just(MAGIC), any::<u32>()], version in 0u16..3,
            kind in 0u16..14, codec in prop_oneof![0u16..4, 0x10u16..0x14], key_count in 0u32..8, width in 0u32..8, payload_len in 0u64..80,
            body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = raw(kind);
            r.magic = magic; r.version = version; r.codec = codec; r.key_count = key_count;
            r.width = width; r.payload_len = payload_len;
            if let Ok(f) = decode_raw(r, &body) {
                // Whatever decodes re-encodes to the same bytes.
                let mut b = bytemuck::bytes_of(&r).to_vec();
                b.extend_from_slice(&body);
                prop_assert_eq!(f.encode(), b);
                if f.header.kind.carries_values() {
                    let _ = f.values();
                    let _ = f.decoded();
                }
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
