//! Transport of the parameter server: QUIC endpoints (quinn + rustls, TLS 1.3, mutual TLS against
//! a cluster CA, ALPN `ps/1`), plaintext packets after the handshake where both ends ask for
//! them ([`PacketProtection`]), certificate generation for local clusters and loading for real
//! ones, frame I/O on QUIC streams, the UDP socket under quinn (segmentation batches capped to
//! one datagram, receives staged away from slow copy alignments), link emulation (bandwidth,
//! latency, loss) under QUIC, and the node side of the coordinator protocol ([`node`]: register,
//! heartbeats, shutdown).
//!
//! This crate knows nothing of tables, clocks or applications: it moves `ps_proto::Frame`s.
//! It must not depend on the server, the client or the apps.

mod endpoint;
mod error;
mod framing;
mod gso;
mod link;
pub mod node;
mod plain;
mod recv_staging;
mod tls;

pub use endpoint::{
    client_config, connect, make_client_endpoint, make_client_endpoint_with_stats, make_endpoint,
    make_endpoint_with_stats, EndpointOptions,
};
pub use error::TransportError;
pub use framing::{read_frame, write_frame, write_frame_owned, FrameRead};
pub use link::{LinkError, LinkSocket, LinkSpec, LinkStats};
pub use plain::{is_plain, PacketProtection};
pub use tls::{generate_cluster_certs, CertPaths, ClusterIdentity, DEFAULT_SERVER_NAME};
