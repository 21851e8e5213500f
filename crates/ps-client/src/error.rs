use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] ps_transport::TransportError),
    #[error(transparent)]
    Proto(#[from] ps_proto::ProtoError),
    #[error("unknown table {0}")]
    UnknownTable(u32),
    #[error("table {table}: row {row} out of range (rows {rows})")]
    RowOutOfRange { table: u32, row: u64, rows: u64 },
    #[error("table {table}: column {col} out of range (width {width})")]
    ColumnOutOfRange { table: u32, col: u32, width: u32 },
    #[error("table {table}: delta of length {got}, row width is {width}")]
    WrongLength { table: u32, got: usize, width: u32 },
    #[error("shard {shard} at {addr}: {reason}")]
    Shard {
        shard: u32,
        addr: String,
        reason: String,
    },
    #[error("bad shard map: {0}")]
    BadShardMap(String),
    #[error("a background push failed: {0}")]
    PushFailed(String),
}
