//! A whole frame: header, keys, payload. This file holds the frame itself, its key forms and
//! its wire encoding; `values.rs` reads its value payload, `builder.rs` makes data frames.

mod builder;
#[cfg(test)]
mod tests;
mod values;

pub use builder::FrameBuilder;
pub use values::{decode_f32s, encode_f32s, extend_f32s};

use crate::codec;
use crate::error::{ErrorCode, ProtoError};
use crate::header::{
    Header, Kind, Limits, FLAG_KEY_ASSIGN, FLAG_KEY_CACHED, FLAG_KEY_RANGE, HEADER_LEN,
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
}

/// Two or more keys, each one more than the last.
pub fn is_range(keys: &[u64]) -> bool {
    keys.windows(2).all(|p| p[0].checked_add(1) == Some(p[1]))
}
