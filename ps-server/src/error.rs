use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Transport(#[from] ps_transport::TransportError),
    #[error(transparent)]
    Proto(#[from] ps_proto::ProtoError),
    #[error("clock: {0}")]
    Clock(#[from] ps_ssp::SspError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("table {table}: {reason}")]
    BadTable { table: u32, reason: String },
    #[error("coordinator: {0}")]
    Coordinator(String),
    #[error("{0}")]
    NodeFailed(String),
    #[error("recovery: {0}")]
    Recovery(String),
    #[error("job stopped by the coordinator: {0}")]
    JobFailed(String),
}
