use thiserror::Error;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("reading {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate material in {path}: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("certificate generation: {0}")]
    CertGen(String),
    #[error("binding UDP endpoint on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("peer sent a bad frame: {0}")]
    Proto(#[from] ps_proto::ProtoError),
    #[error("coordinator: {0}")]
    Coordinator(String),
    #[error("peer answered with error ({code:?}): {message}")]
    Remote {
        code: Option<ps_proto::ErrorCode>,
        message: String,
    },
}
