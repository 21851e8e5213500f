//! A whole frame: header, keys, payload.

use crate::codec::{self, Decoded};
use crate::error::{ErrorCode, ProtoError};
use crate::header::{
    Codec, Header, Kind, Limits, FLAG_KEY_ASSIGN, FLAG_KEY_CACHED, FLAG_KEY_RANGE, HEADER_LEN,
};
use serde::{de::DeserializeOwned, Serialize};

/// How a data frame's keys travel; the header's key flags say which (see [`FLAG_KEY_RANGE`]).
/// In memory [`Frame::keys`] is always the full list (once resolved, for the cached forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyForm {
    /// `key_count` u64s.
    #[default]
    List,
    /// The first key of `key_count` consecutive keys.
    Range,
    /// The list, to be stored by the receiver's key cache under `id`.
    Assign(u32),
    /// A list stored before under `id`, with its hash; [`Frame::keys`] is empty until resolved.
    Cached { id: u32, hash: u64 },
}

impl KeyForm {
    fn flag(self) -> u16 {
        match self {
            KeyForm::List => 0,
            KeyForm::Range => FLAG_KEY_RANGE,
            KeyForm::Assign(_) => FLAG_KEY_ASSIGN,
            KeyForm::Cached { .. } => FLAG_KEY_CACHED,
        }
    }
}

/// A decoded frame. Keys and payload are owned, aligned copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Header,
    pub keys: Vec<u64>,
    pub payload: Vec<u8>,
    /// How the keys go on the wire; kept in step with the header's flags by [`Frame::set_key_form`].
    pub key_form: KeyForm,
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn read_cache_id(b: &[u8]) -> Result<u32, ProtoError> {
    u32::try_from(read_u64(b))
        .map_err(|_| ProtoError::Malformed("key cache id does not fit 32 bits".into()))
}

impl Frame {
    /// A frame from a validated header, its key section (`header.key_section_len()` bytes) and
    /// payload (`header.payload_len` bytes).
    pub fn from_sections(
        header: Header,
        key_bytes: &[u8],
        payload: Vec<u8>,
    ) -> Result<Frame, ProtoError> {
        if key_bytes.len() as u64 != header.key_section_len()
            || payload.len() as u64 != header.payload_len
        {
            return Err(ProtoError::Truncated {
                needed: header.body_len(),
                got: (key_bytes.len() + payload.len()) as u64,
            });
        }
        let list = |b: &[u8]| -> Vec<u64> { b.chunks_exact(8).map(read_u64).collect() };
        let n = header.key_count as u64;
        let (key_form, keys) =
            match header.flags & (FLAG_KEY_RANGE | FLAG_KEY_ASSIGN | FLAG_KEY_CACHED) {
                FLAG_KEY_RANGE => {
                    let first = read_u64(key_bytes);
                    if first.checked_add(n).is_none() {
                        return Err(ProtoError::Malformed(format!(
                            "key range {first} + {n} overflows"
                        )));
                    }
                    (KeyForm::Range, (first..first + n).collect())
                }
                FLAG_KEY_ASSIGN => (
                    KeyForm::Assign(read_cache_id(key_bytes)?),
                    list(&key_bytes[8..]),
                ),
                FLAG_KEY_CACHED => (
                    KeyForm::Cached {
                        id: read_cache_id(key_bytes)?,
                        hash: read_u64(&key_bytes[8..]),
                    },
                    Vec::new(),
                ),
                _ => (KeyForm::List, list(key_bytes)),
            };
        Ok(Frame {
            header,
            keys,
            payload,
            key_form,
        })
    }

    /// The key section as it goes on the wire.
    pub fn key_section(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.key_section_len() as usize);
        match self.key_form {
            KeyForm::List => self
                .keys
                .iter()
                .for_each(|k| out.extend_from_slice(&k.to_le_bytes())),
            KeyForm::Range => {
                out.extend_from_slice(&self.keys.first().copied().unwrap_or(0).to_le_bytes())
            }
            KeyForm::Assign(id) => {
                out.extend_from_slice(&u64::from(id).to_le_bytes());
                self.keys
                    .iter()
                    .for_each(|k| out.extend_from_slice(&k.to_le_bytes()));
            }
            KeyForm::Cached { id, hash } => {
                out.extend_from_slice(&u64::from(id).to_le_bytes());
                out.extend_from_slice(&hash.to_le_bytes());
            }
        }
        out
    }

    /// Sets how the keys travel and the header flag that says so. A range must be what the keys
    /// are; callers use [`Frame::compact_keys`] rather than asking for one directly.
    pub fn set_key_form(&mut self, form: KeyForm) {
        debug_assert!(
            form != KeyForm::Range || is_range(&self.keys),
            "keys are not a range"
        );
        self.header.flags = (self.header.flags
            & !(FLAG_KEY_RANGE | FLAG_KEY_ASSIGN | FLAG_KEY_CACHED))
            | form.flag();
        self.header.payload_len = self.payload.len() as u64;
        self.key_form = form;
    }

    /// Marks a push frame as the last of its clock batch of `frames` push frames (this one
    /// included), so no separate clock frame follows.
    pub fn end_clock(&mut self, frames: u64) {
        debug_assert_eq!(self.header.kind, Kind::Push);
        self.header.flags |= crate::header::FLAG_END_CLOCK;
        self.header.aux = frames;
    }

    /// Sends a listed run of two or more consecutive keys as a range (8 bytes).
    pub fn compact_keys(&mut self) {
        if self.key_form == KeyForm::List && self.keys.len() >= 2 && is_range(&self.keys) {
            self.set_key_form(KeyForm::Range);
        }
    }

    /// Fills in the keys of a cached form from the receiver's key cache for this frame's
    /// connection and table (stores an assigned list; looks a cached one up and checks its
    /// length). Other forms are left as they are.
    pub fn resolve_keys(&mut self, cache: &mut codec::KeyCacheReceiver) -> Result<(), ProtoError> {
        match self.key_form {
            KeyForm::Assign(id) => {
                cache.resolve(codec::Keys::Full {
                    keys: self.keys.clone(),
                    assign: id,
                })?;
            }
            KeyForm::Cached { id, hash } => {
                let keys = cache.resolve(codec::Keys::Cached { id, hash })?;
                if keys.len() as u64 != self.header.key_count as u64 {
                    return Err(ProtoError::Protocol(format!(
                        "key cache: list {id} has {} keys, the frame says {}",
                        keys.len(),
                        self.header.key_count
                    )));
                }
                self.keys = keys.to_vec();
            }
            KeyForm::List | KeyForm::Range => {}
        }
        Ok(())
    }

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
        let key_bytes = header.key_section_len() as usize;
        Frame::from_sections(header, &body[..key_bytes], body[key_bytes..].to_vec())
    }

    /// The frame as bytes: header, keys, payload.
    pub fn encode(&self) -> Vec<u8> {
        let keys = self.key_section();
        let mut out = Vec::with_capacity(HEADER_LEN + keys.len() + self.payload.len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&keys);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Bytes on the wire: header, key section, payload.
    pub fn wire_len(&self) -> u64 {
        HEADER_LEN as u64 + self.header.body_len()
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
            key_form: KeyForm::List,
        }
    }

    /// An ack's count of the worker's clocks covered by the shard's checkpoints, if it gives one.
    pub fn ack_covered(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.payload.as_slice().try_into().ok()?;
        (self.header.kind == Kind::Ack).then(|| u64::from_le_bytes(bytes))
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
            key_form: KeyForm::List,
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

    /// The values of a raw f32 Push or PullReply frame, borrowed from the payload without a
    /// copy where this machine can (little-endian, payload 4-byte aligned, length right);
    /// `None` otherwise (use [`Frame::values`]).
    pub fn raw_f32(&self) -> Option<&[f32]> {
        if self.header.codec != Codec::RawF32 || cfg!(target_endian = "big") {
            return None;
        }
        let v: &[f32] = bytemuck::try_cast_slice(&self.payload).ok()?;
        (Some(v.len()) == self.block_len().ok()).then_some(v)
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
            key_form: KeyForm::List,
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
            key_form: KeyForm::List,
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
            key_form: KeyForm::List,
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
            key_form: KeyForm::List,
        }
    }

    /// An ack that also says how many of the worker's clocks the shard's checkpoints cover.
    pub fn ack_covering(worker: u32, min_clock: u64, worker_clock: u64, covered: u64) -> Frame {
        let mut f = FrameBuilder::ack(worker, min_clock, worker_clock);
        f.payload = covered.to_le_bytes().to_vec();
        f.header.payload_len = 8;
        f
    }

    pub fn heartbeat(node: u32, clock: u64) -> Frame {
        let mut h = Header::new(Kind::Heartbeat);
        h.worker = node;
        h.clock = clock;
        Frame {
            header: h,
            keys: Vec::new(),
            payload: Vec::new(),
            key_form: KeyForm::List,
        }
    }
}

/// f32s as little-endian bytes.
pub fn encode_f32s(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    extend_f32s(&mut out, values);
    out
}

/// Appends `values` as little-endian bytes (the raw f32 payload) to `out`.
pub fn extend_f32s(out: &mut Vec<u8>, values: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
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

/// Two or more keys, each one more than the last.
pub fn is_range(keys: &[u64]) -> bool {
    keys.windows(2).all(|p| p[0].checked_add(1) == Some(p[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_borrow_the_payload() {
        let f = FrameBuilder::push(1, 0, 0, 2, &[4, 5], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f.raw_f32(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        let mut short = f.clone();
        short.payload.truncate(8);
        assert_eq!(
            short.raw_f32(),
            None,
            "a payload of the wrong length is not borrowed"
        );
    }
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
        r.codec = 8;
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
        for bad in [8u16, 0x0F, 0x10, 0x18, 0x21, 0xFFFF] {
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
            kind in 0u16..14, codec in prop_oneof![0u16..9, 0x10u16..0x19], key_count in 0u32..8, width in 0u32..8, payload_len in 0u64..80,
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
