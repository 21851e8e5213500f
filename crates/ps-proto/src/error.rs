use thiserror::Error;

/// Error codes carried in an `Error` frame (header field `aux`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    Truncated = 1,
    BadMagic = 2,
    BadVersion = 3,
    UnknownKind = 4,
    BadCodec = 5,
    TooLarge = 6,
    Malformed = 7,
    UnknownTable = 8,
    KeyOutOfRange = 9,
    WrongWidth = 10,
    Protocol = 11,
    Internal = 12,
    ShuttingDown = 13,
}

impl ErrorCode {
    pub fn from_u64(v: u64) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match v {
            1 => Truncated,
            2 => BadMagic,
            3 => BadVersion,
            4 => UnknownKind,
            5 => BadCodec,
            6 => TooLarge,
            7 => Malformed,
            8 => UnknownTable,
            9 => KeyOutOfRange,
            10 => WrongWidth,
            11 => Protocol,
            12 => Internal,
            13 => ShuttingDown,
            _ => return None,
        })
    }
}

/// Everything that can be wrong with a frame or a message.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProtoError {
    #[error("truncated frame: needed {needed} bytes, got {got}")]
    Truncated { needed: u64, got: u64 },
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported protocol version {0}")]
    BadVersion(u16),
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    #[error("codec {codec} is not valid for a {kind} frame")]
    BadCodec { codec: u16, kind: &'static str },
    #[error("frame of {declared} bytes exceeds the cap of {cap} bytes")]
    TooLarge { declared: u64, cap: u64 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unknown table {0}")]
    UnknownTable(u32),
    #[error("key {key} out of range {start}..{end} of table {table}")]
    KeyOutOfRange {
        table: u32,
        key: u64,
        start: u64,
        end: u64,
    },
    #[error("wrong width {got} for table {table} (width {expected})")]
    WrongWidth { table: u32, expected: u32, got: u32 },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A codec chain that cannot be parsed or used as asked (sender side).
    #[error("codec error: {0}")]
    Codec(String),
}

impl ProtoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::Truncated { .. } => ErrorCode::Truncated,
            ProtoError::BadMagic(_) => ErrorCode::BadMagic,
            ProtoError::BadVersion(_) => ErrorCode::BadVersion,
            ProtoError::UnknownKind(_) => ErrorCode::UnknownKind,
            ProtoError::BadCodec { .. } => ErrorCode::BadCodec,
            ProtoError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtoError::Malformed(_) => ErrorCode::Malformed,
            ProtoError::UnknownTable(_) => ErrorCode::UnknownTable,
            ProtoError::KeyOutOfRange { .. } => ErrorCode::KeyOutOfRange,
            ProtoError::WrongWidth { .. } => ErrorCode::WrongWidth,
            ProtoError::Protocol(_) => ErrorCode::Protocol,
            ProtoError::Codec(_) => ErrorCode::BadCodec,
        }
    }
}
