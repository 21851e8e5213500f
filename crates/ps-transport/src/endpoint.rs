//! QUIC endpoints tuned for bulk transfer between cluster nodes.

use crate::error::TransportError;
use crate::tls::{ClusterIdentity, DEFAULT_SERVER_NAME};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Transport knobs. The defaults favour bulk throughput on fast links.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Per-stream receive window in bytes.
    pub stream_window: u64,
    /// Per-connection receive window in bytes.
    pub connection_window: u64,
    /// Initial UDP payload size. 1200 is safe everywhere; loopback and jumbo-frame links take more.
    pub initial_mtu: u16,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    /// Name checked in the peer's certificate.
    pub server_name: String,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            stream_window: 16 << 20,
            connection_window: 64 << 20,
            initial_mtu: 1200,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(2),
            server_name: DEFAULT_SERVER_NAME.to_string(),
        }
    }
}

impl EndpointOptions {
    /// Options for links that carry large UDP payloads (loopback): bigger initial MTU.
    pub fn for_loopback() -> Self {
        EndpointOptions {
            initial_mtu: 8192,
            ..Default::default()
        }
    }

    fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        let vi = |v: u64| quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX);
        t.stream_receive_window(vi(self.stream_window))
            .receive_window(vi(self.connection_window))
            .send_window(self.connection_window)
            .max_concurrent_bidi_streams(vi(1024))
            .max_concurrent_uni_streams(vi(1024))
            .initial_mtu(self.initial_mtu.max(1200))
            .keep_alive_interval(Some(self.keep_alive))
            .datagram_receive_buffer_size(Some(1 << 20));
        if let Ok(idle) = quinn::IdleTimeout::try_from(self.idle_timeout) {
            t.max_idle_timeout(Some(idle));
        }
        t
    }
}

/// An endpoint that both accepts connections (mutual TLS) and connects out with `identity`.
pub fn make_endpoint(
    addr: SocketAddr,
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = Arc::new(opts.transport());
    let server_crypto = QuicServerConfig::try_from(identity.server_config()?)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let mut endpoint = quinn::Endpoint::server(server, addr)
        .map_err(|source| TransportError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config(identity.client_config()?, transport)?);
    Ok(endpoint)
}

/// A quinn client config from a rustls config (used directly by tests that need odd identities).
pub fn client_config(
    crypto: rustls::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let quic =
        QuicClientConfig::try_from(crypto).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// Connects to `addr`, checking the peer's certificate for `server_name`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| TransportError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    connecting.await.map_err(|e| TransportError::Connect {
        addr,
        reason: e.to_string(),
    })
}

/// A client-only endpoint (workers): connects out with `identity`, accepts nothing.
pub fn make_client_endpoint(
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<quinn::Endpoint, TransportError> {
    let addr: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut endpoint =
        quinn::Endpoint::client(addr).map_err(|source| TransportError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config(
        identity.client_config()?,
        Arc::new(opts.transport()),
    )?);
    Ok(endpoint)
}
