//! The fixed frame header. All fields are little-endian on the wire.

use crate::error::ProtoError;
use bytemuck::{Pod, Zeroable};

/// "PSF1" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PSF1");
/// The frame protocol's version; a peer of another version is refused at its first frame.
/// 2: the exact codec's whole-number value formats (wire ids 8, 9, 0x18, 0x19), which a
/// version-1 peer would refuse in the middle of a job.
pub const VERSION: u16 = 2;
pub const HEADER_LEN: usize = std::mem::size_of::<RawHeader>();

/// The header exactly as it lies on the wire (little-endian fields, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub struct RawHeader {
    pub magic: u32,
    pub version: u16,
    pub kind: u16,
    pub table: u32,
    pub codec: u16,
    pub flags: u16,
    pub clock: u64,
    pub aux: u64,
    pub worker: u32,
    pub key_count: u32,
    pub width: u32,
    pub reserved: u32,
    pub payload_len: u64,
}

const _: () = assert!(HEADER_LEN == 56);

/// What a frame is. Control frames carry a JSON payload and no keys; data frames carry keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// node -> coordinator: JSON [`crate::Register`]
    Register = 1,
    /// coordinator -> node: JSON [`crate::Assign`]
    Assign = 2,
    /// worker -> shard: keys to read, `clock` = min clock the rows must be complete through,
    /// `width` = expected row width.
    Pull = 3,
    /// shard -> worker: rows for the pulled keys; `clock` = shard min clock when served,
    /// `aux` = how many of the requesting worker's clocks the rows contain.
    PullReply = 4,
    /// worker -> shard: row deltas tagged with `clock`.
    Push = 5,
    /// worker -> shard: ends the worker's clock `clock`; `aux` = number of push frames before it.
    Clock = 6,
    /// shard -> worker: a clock batch was accepted; `clock` = shard min clock, `aux` = worker's clocks applied.
    /// An optional 8-byte payload (u64 LE) gives how many of the worker's clocks the shard's
    /// checkpoints cover: the worker may forget its batches below it (see [`crate::Frame::ack_covered`]).
    Ack = 7,
    /// node -> coordinator liveness (datagram).
    Heartbeat = 8,
    /// worker -> coordinator: JSON [`crate::ClockReport`]
    Report = 9,
    /// coordinator -> node: JSON [`crate::Shutdown`]
    Shutdown = 10,
    /// either way: `aux` = [`crate::ErrorCode`], payload = UTF-8 message.
    Error = 11,
    /// worker -> coordinator: JSON [`crate::Done`], the final figures.
    Done = 12,
    /// either way, during the job: JSON [`crate::ControlEvent`] (a shard restored from its
    /// checkpoint, a worker evicted, a shard's new address).
    Event = 13,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            1 => Register,
            2 => Assign,
            3 => Pull,
            4 => PullReply,
            5 => Push,
            6 => Clock,
            7 => Ack,
            8 => Heartbeat,
            9 => Report,
            10 => Shutdown,
            11 => Error,
            12 => Done,
            13 => Event,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            Register => "register",
            Assign => "assign",
            Pull => "pull",
            PullReply => "pull-reply",
            Push => "push",
            Clock => "clock",
            Ack => "ack",
            Heartbeat => "heartbeat",
            Report => "report",
            Shutdown => "shutdown",
            Error => "error",
            Done => "done",
            Event => "event",
        }
    }

    /// Frames whose payload is a JSON document or text.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Kind::Register
                | Kind::Assign
                | Kind::Report
                | Kind::Shutdown
                | Kind::Error
                | Kind::Done
                | Kind::Event
        )
    }

    /// Frames that carry one row of values per key.
    pub fn carries_values(self) -> bool {
        matches!(self, Kind::Push | Kind::PullReply)
    }
}

/// How the value payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// No value payload (control and key-only frames). Wire id 0.
    None,
    /// Little-endian f32, `key_count * width` of them. Wire id 1.
    RawF32,
    /// A compressed payload: the wire id of a lossy or sparse [`crate::codec::CodecChain`]
    /// (any id [`crate::codec::wire_format`] knows except 1). Decode with
    /// [`crate::codec::decode`] or [`crate::Frame::decoded`].
    Encoded(u16),
}

impl Codec {
    /// The codec of a header's codec field; None for an id no codec has.
    pub fn from_u16(v: u16) -> Option<Codec> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::RawF32),
            v if crate::codec::wire_format(v).is_some() => Some(Codec::Encoded(v)),
            _ => None,
        }
    }

    /// The header's codec field.
    pub fn to_u16(self) -> u16 {
        match self {
            Codec::None => 0,
            Codec::RawF32 => 1,
            Codec::Encoded(v) => v,
        }
    }

    /// The codec of a chain's wire id (1 is `RawF32`).
    pub fn from_wire_id(wire_id: u16) -> Codec {
        match wire_id {
            0 => Codec::None,
            1 => Codec::RawF32,
            v => Codec::Encoded(v),
        }
    }
}

/// Caps on what a peer may ask us to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum bytes after the header (keys + payload).
    pub max_frame_bytes: u64,
    /// Maximum row width.
    pub max_width: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 << 20,
            max_width: 1 << 20,
        }
    }
}

/// Header flag: the key section is one u64, the first key of `key_count` consecutive keys.
pub const FLAG_KEY_RANGE: u16 = 0x1;
/// Header flag: the key section is a u64 cache id then the `key_count` keys; the receiver stores
/// the list under that id ([`crate::codec::KeyCacheReceiver`], one per connection and table).
pub const FLAG_KEY_ASSIGN: u16 = 0x2;
/// Header flag: the key section is a u64 cache id and the u64 hash of a list stored before.
pub const FLAG_KEY_CACHED: u16 = 0x4;
/// Header flag (push only): this frame also ends the worker's clock batch, in place of a
/// separate clock frame; `aux` = the number of push frames in the batch, this one included.
pub const FLAG_END_CLOCK: u16 = 0x8;
const KEY_FLAGS: u16 = FLAG_KEY_RANGE | FLAG_KEY_ASSIGN | FLAG_KEY_CACHED;
const KNOWN_FLAGS: u16 = KEY_FLAGS | FLAG_END_CLOCK;

/// A validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub table: u32,
    pub codec: Codec,
    pub flags: u16,
    pub clock: u64,
    pub aux: u64,
    pub worker: u32,
    pub key_count: u32,
    pub width: u32,
    pub payload_len: u64,
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: Kind) -> Header {
        Header {
            kind,
            table: 0,
            codec: Codec::None,
            flags: 0,
            clock: 0,
            aux: 0,
            worker: 0,
            key_count: 0,
            width: 0,
            payload_len: 0,
        }
    }

    /// Bytes that follow the header: keys then payload.
    pub fn body_len(&self) -> u64 {
        self.key_section_len() + self.payload_len
    }

    /// Bytes of the key section, which the flags shape: a list of `key_count` u64s, or the first
    /// key of a range, or a cache id before a list, or a cache id and hash.
    pub fn key_section_len(&self) -> u64 {
        match self.flags & KEY_FLAGS {
            FLAG_KEY_RANGE => 8,
            FLAG_KEY_ASSIGN => 8 + self.key_count as u64 * 8,
            FLAG_KEY_CACHED => 16,
            _ => self.key_count as u64 * 8,
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let raw = RawHeader {
            magic: MAGIC.to_le(),
            version: VERSION.to_le(),
            kind: (self.kind as u16).to_le(),
            table: self.table.to_le(),
            codec: self.codec.to_u16().to_le(),
            flags: self.flags.to_le(),
            clock: self.clock.to_le(),
            aux: self.aux.to_le(),
            worker: self.worker.to_le(),
            key_count: self.key_count.to_le(),
            width: self.width.to_le(),
            reserved: 0,
            payload_len: self.payload_len.to_le(),
        };
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(bytemuck::bytes_of(&raw));
        out
    }

    /// Decodes and validates a header. `bytes` may be misaligned and longer than a header.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Header, ProtoError> {
        if bytes.len() < HEADER_LEN {
            return Err(ProtoError::Truncated {
                needed: HEADER_LEN as u64,
                got: bytes.len() as u64,
            });
        }
        let raw: RawHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_LEN]);
        let magic = u32::from_le(raw.magic);
        if magic != MAGIC {
            return Err(ProtoError::BadMagic(magic));
        }
        let version = u16::from_le(raw.version);
        if version != VERSION {
            return Err(ProtoError::BadVersion(version));
        }
        let kind_raw = u16::from_le(raw.kind);
        let kind = Kind::from_u16(kind_raw).ok_or(ProtoError::UnknownKind(kind_raw))?;
        let codec_raw = u16::from_le(raw.codec);
        let codec = Codec::from_u16(codec_raw).ok_or(ProtoError::BadCodec {
            codec: codec_raw,
            kind: kind.name(),
        })?;
        if u32::from_le(raw.reserved) != 0 {
            return Err(ProtoError::Malformed(
                "reserved header field is not zero".into(),
            ));
        }
        let h = Header {
            kind,
            table: u32::from_le(raw.table),
            codec,
            flags: u16::from_le(raw.flags),
            clock: u64::from_le(raw.clock),
            aux: u64::from_le(raw.aux),
            worker: u32::from_le(raw.worker),
            key_count: u32::from_le(raw.key_count),
            width: u32::from_le(raw.width),
            payload_len: u64::from_le(raw.payload_len),
        };
        h.validate(limits)?;
        Ok(h)
    }

    /// Checks the fields against each other and against the limits.
    pub fn validate(&self, limits: &Limits) -> Result<(), ProtoError> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(ProtoError::Malformed(format!(
                "unknown flags {:#x}",
                self.flags
            )));
        }
        let key_flags = self.flags & KEY_FLAGS;
        if key_flags.count_ones() > 1 {
            return Err(ProtoError::Malformed(format!(
                "flags {:#x} name more than one key form",
                self.flags
            )));
        }
        if key_flags != 0 && !matches!(self.kind, Kind::Pull | Kind::PullReply | Kind::Push) {
            return Err(ProtoError::Malformed(format!(
                "{} frame with a key form flag",
                self.kind.name()
            )));
        }
        if key_flags != 0 && self.key_count == 0 {
            return Err(ProtoError::Malformed(
                "key form flag on a frame with no keys".into(),
            ));
        }
        if self.flags & FLAG_END_CLOCK != 0 && self.kind != Kind::Push {
            return Err(ProtoError::Malformed(format!(
                "{} frame with the end-of-clock flag",
                self.kind.name()
            )));
        }
        // Every form expands to `key_count` keys in memory: bound them as if listed.
        // Overflow-free: key_count < 2^32, so key_count * 8 < 2^35.
        let listed = self.key_count as u64 * 8;
        if listed > limits.max_frame_bytes {
            return Err(ProtoError::TooLarge {
                declared: listed,
                cap: limits.max_frame_bytes,
            });
        }
        let declared = self.key_section_len().checked_add(self.payload_len);
        match declared {
            Some(d) if d <= limits.max_frame_bytes => {}
            Some(d) => {
                return Err(ProtoError::TooLarge {
                    declared: d,
                    cap: limits.max_frame_bytes,
                })
            }
            None => {
                return Err(ProtoError::TooLarge {
                    declared: u64::MAX,
                    cap: limits.max_frame_bytes,
                })
            }
        }
        let bad_codec = || ProtoError::BadCodec {
            codec: self.codec.to_u16(),
            kind: self.kind.name(),
        };
        if self.kind.carries_values() {
            if !matches!(self.codec, Codec::RawF32 | Codec::Encoded(_)) {
                return Err(bad_codec());
            }
            if self.width == 0 || self.width > limits.max_width {
                return Err(ProtoError::Malformed(format!(
                    "row width {} outside 1..={}",
                    self.width, limits.max_width
                )));
            }
            // key_count * width < 2^64, but the bytes (x 4) may not fit in a u64 under limits
            // that allow rows of 2^30 values or more: such a block is over any cap.
            let Some(raw) = (self.key_count as u64 * self.width as u64).checked_mul(4) else {
                return Err(ProtoError::TooLarge {
                    declared: u64::MAX,
                    cap: limits.max_frame_bytes,
                });
            };
            if self.codec == Codec::RawF32 {
                if self.payload_len != raw {
                    return Err(ProtoError::Malformed(format!(
                        "{} frame: payload of {} bytes, expected {} ({} keys x width {} x 4)",
                        self.kind.name(),
                        self.payload_len,
                        raw,
                        self.key_count,
                        self.width
                    )));
                }
            } else {
                // A compressed frame may not stand for more values than a raw one could carry
                // (decoding allocates them), and is never much larger than the raw payload.
                if raw > limits.max_frame_bytes {
                    return Err(ProtoError::TooLarge {
                        declared: raw,
                        cap: limits.max_frame_bytes,
                    });
                }
                let bound = raw.saturating_add(16 * (self.key_count as u64 + 1));
                if self.payload_len > bound {
                    return Err(ProtoError::Malformed(format!(
                        "{} frame: compressed payload of {} bytes, more than {} ({} keys x width {})",
                        self.kind.name(),
                        self.payload_len,
                        bound,
                        self.key_count,
                        self.width
                    )));
                }
            }
        } else {
            if self.codec != Codec::None {
                return Err(bad_codec());
            }
            match self.kind {
                Kind::Pull => {
                    if self.payload_len != 0 {
                        return Err(ProtoError::Malformed("pull frame with a payload".into()));
                    }
                    if self.width == 0 || self.width > limits.max_width {
                        return Err(ProtoError::Malformed(format!(
                            "row width {} outside 1..={}",
                            self.width, limits.max_width
                        )));
                    }
                }
                _ => {
                    if self.key_count != 0 {
                        return Err(ProtoError::Malformed(format!(
                            "{} frame with keys",
                            self.kind.name()
                        )));
                    }
                    let allowed = if self.kind == Kind::Ack {
                        &[0, 8][..]
                    } else {
                        &[0][..]
                    };
                    if !self.kind.is_control() && !allowed.contains(&self.payload_len) {
                        return Err(ProtoError::Malformed(format!(
                            "{} frame with a payload",
                            self.kind.name()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
