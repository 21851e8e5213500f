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
    #[error("table {table}: {got} values given, not a whole number of rows of width {width}")]
    WrongLength { table: u32, got: usize, width: u32 },
    #[error("table {table}: rows must be sorted and distinct")]
    Unsorted { table: u32 },
    #[error("table {table}: bad entries: {reason}")]
    BadEntries { table: u32, reason: String },
    #[error("table {table}: rows updated both in an encoded block or entries and otherwise in one clock")]
    Overlap { table: u32 },
    #[error("table {table}: an encoded block of wire codec {got}, but the table's pushes are encoded as {accepts}")]
    CodecNotAccepted {
        table: u32,
        got: u16,
        accepts: String,
    },
    #[error("table {table}: an encoded block must hold rows of one shard (see Table::shard_runs)")]
    SpansShards { table: u32 },
    #[error("table {table}: an encoded block of {bytes} bytes exceeds the frame cap of {max}")]
    FrameTooLarge { table: u32, bytes: u64, max: u64 },
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
    #[error("{0}")]
    JobFailed(String),
    #[error("async runtime: {0}")]
    Runtime(String),
}
