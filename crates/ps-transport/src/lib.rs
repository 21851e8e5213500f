//! Transport of the parameter server: QUIC endpoints (quinn + rustls, TLS 1.3, mutual TLS against
//! a cluster CA, ALPN `ps/1`), certificate generation for local clusters and loading for real
//! ones, and frame I/O on QUIC streams.
//!
//! This crate knows nothing of tables, clocks or applications: it moves `ps_proto::Frame`s.
//! It must not depend on the server, the client or the apps.

mod endpoint;
mod error;
mod framing;
mod tls;

pub use endpoint::{client_config, connect, make_client_endpoint, make_endpoint, EndpointOptions};
pub use error::TransportError;
pub use framing::{read_frame, write_frame, write_frame_owned, FrameRead};
pub use tls::{generate_cluster_certs, CertPaths, ClusterIdentity, DEFAULT_SERVER_NAME};
