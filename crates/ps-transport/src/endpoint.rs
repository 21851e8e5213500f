//! QUIC endpoints tuned for bulk transfer between cluster nodes.

use crate::error::TransportError;
use crate::gso::GsoCapped;
use crate::link::{fresh_seed, LinkSocket, LinkSpec, LinkStats};
use crate::plain::{PacketProtection, PlainClient, PlainServer};
use crate::recv_staging::StagedRecv;
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
    /// Largest UDP payload this endpoint accepts and path-MTU discovery probes up to.
    pub max_udp_payload: u16,
    /// Requested UDP socket send and receive buffer sizes (the kernel caps them at
    /// net.core.rmem_max / wmem_max). Bursts of large segmented datagrams overflow small buffers.
    pub socket_buffer: usize,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    /// Name checked in the peer's certificate.
    pub server_name: String,
    /// Emulated link every datagram this endpoint sends goes through (bandwidth, one-way latency,
    /// loss, queue); `None` sends straight to the socket.
    pub link: Option<LinkSpec>,
    /// Seed of the link's loss draws; `None` picks a fresh one per endpoint.
    pub link_seed: Option<u64>,
    /// How 1-RTT packets are protected; [`PacketProtection::None`] only on connections whose
    /// peer asks for it too (see `plain.rs`).
    pub packet_protection: PacketProtection,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            stream_window: 16 << 20,
            connection_window: 64 << 20,
            initial_mtu: 1200,
            max_udp_payload: 1472,
            socket_buffer: 4 << 20,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(2),
            server_name: DEFAULT_SERVER_NAME.to_string(),
            link: None,
            link_seed: None,
            packet_protection: PacketProtection::Aead,
        }
    }
}

impl EndpointOptions {
    /// Options for loopback: connections start with 4096-byte UDP payloads and path-MTU
    /// discovery takes them up to 16,384 within a few round trips. Measured on loopback with
    /// segmentation offload (benches/transport.rs, 2 cores): 16,384 moves about 1.3x the bytes
    /// of 4096 both ways, and larger packets buy nothing more. Starting higher than about 11,000
    /// stalls the handshake, so the start stays at 4096. Every send's segments fit in one
    /// datagram (see `gso.rs`); before that cap, packets over about 6,500 bytes were lost.
    pub fn for_loopback() -> Self {
        EndpointOptions {
            initial_mtu: 4096,
            max_udp_payload: 16_384,
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
            .mtu_discovery_config(Some({
                let mut m = quinn::MtuDiscoveryConfig::default();
                m.upper_bound(self.max_udp_payload.max(1200));
                m
            }))
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
    make_endpoint_with_stats(addr, identity, opts).map(|(endpoint, _)| endpoint)
}

/// [`make_endpoint`], also returning the counters of the emulated link when `opts.link` is set.
pub fn make_endpoint_with_stats(
    addr: SocketAddr,
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<(quinn::Endpoint, Option<LinkStats>), TransportError> {
    let transport = Arc::new(opts.transport());
    let mut server = quinn::ServerConfig::with_crypto(server_crypto(identity, opts)?);
    server.transport_config(transport.clone());
    let (mut endpoint, stats) = bind(addr, Some(server), opts)?;
    endpoint.set_default_client_config(node_client_config(identity, opts, transport)?);
    Ok((endpoint, stats))
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

/// ALPN ids a node offers (client) or accepts (server), most preferred first.
fn alpn_protocols(protection: PacketProtection) -> Vec<Vec<u8>> {
    match protection {
        PacketProtection::Aead => vec![ps_proto::ALPN.to_vec()],
        PacketProtection::None => vec![ps_proto::ALPN_PLAIN.to_vec(), ps_proto::ALPN.to_vec()],
    }
}

/// The server half of a node's crypto: mutual TLS, and plaintext packets if both ends ask.
fn server_crypto(
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<Arc<dyn quinn::crypto::ServerConfig>, TransportError> {
    let mut tls = identity.server_config()?;
    tls.alpn_protocols = alpn_protocols(opts.packet_protection);
    let quic =
        Arc::new(QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?);
    Ok(match opts.packet_protection {
        PacketProtection::Aead => quic,
        PacketProtection::None => Arc::new(PlainServer(quic)),
    })
}

/// The client half of a node's crypto, as [`server_crypto`].
fn node_client_config(
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = identity.client_config()?;
    tls.alpn_protocols = alpn_protocols(opts.packet_protection);
    let quic =
        Arc::new(QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?);
    let crypto: Arc<dyn quinn::crypto::ClientConfig> = match opts.packet_protection {
        PacketProtection::Aead => quic,
        PacketProtection::None => Arc::new(PlainClient(quic)),
    };
    let mut cfg = quinn::ClientConfig::new(crypto);
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
    let connection = connecting.await.map_err(|e| TransportError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    if crate::plain::is_plain(&connection) == Some(true) {
        tracing::info!(%addr, "connected; packets travel in the clear (both ends asked)");
    }
    Ok(connection)
}

/// A client-only endpoint (workers): connects out with `identity`, accepts nothing.
pub fn make_client_endpoint(
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<quinn::Endpoint, TransportError> {
    make_client_endpoint_with_stats(identity, opts).map(|(endpoint, _)| endpoint)
}

/// [`make_client_endpoint`], also returning the counters of the emulated link when `opts.link` is
/// set.
pub fn make_client_endpoint_with_stats(
    identity: &ClusterIdentity,
    opts: &EndpointOptions,
) -> Result<(quinn::Endpoint, Option<LinkStats>), TransportError> {
    // Through `bind` even without a link: the endpoint's largest UDP payload is what this end
    // advertises to its peers, so a client built with quinn's defaults (1472 bytes) held every
    // pull reply to 1472-byte packets whatever the options said.
    let addr: SocketAddr = ([0, 0, 0, 0], 0).into();
    let (mut endpoint, stats) = bind(addr, None, opts)?;
    endpoint.set_default_client_config(node_client_config(
        identity,
        opts,
        Arc::new(opts.transport()),
    )?);
    Ok((endpoint, stats))
}

/// Binds a UDP socket and wraps it in an endpoint whose packet-size cap follows `opts`, sending
/// through an emulated link when `opts.link` is set.
fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    opts: &EndpointOptions,
) -> Result<(quinn::Endpoint, Option<LinkStats>), TransportError> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(opts.max_udp_payload.max(1200))
        .map_err(|e| TransportError::Tls(format!("max UDP payload: {e}")))?;
    let bind_err = |source| TransportError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    // Best effort: a smaller buffer than asked for still works, only with more loss under bursts.
    let _ = socket.set_recv_buffer_size(opts.socket_buffer);
    let _ = socket.set_send_buffer_size(opts.socket_buffer);
    note_if_capped(socket.recv_buffer_size().ok(), opts.socket_buffer);
    socket.bind(&addr.into()).map_err(bind_err)?;
    let socket: std::net::UdpSocket = socket.into();
    let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Bind {
        addr,
        source: std::io::Error::other("no async runtime"),
    })?;
    let socket = runtime
        .wrap_udp_socket(socket)
        .map_err(|source| TransportError::Bind { addr, source })?;
    let socket: Arc<dyn quinn::AsyncUdpSocket> = Arc::new(GsoCapped::new(
        socket,
        opts.max_udp_payload.max(1200).into(),
    ));
    let socket: Arc<dyn quinn::AsyncUdpSocket> = Arc::new(StagedRecv::new(socket));
    let (socket, stats): (Arc<dyn quinn::AsyncUdpSocket>, _) = match opts.link {
        None => (socket, None),
        Some(spec) => {
            let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
            let seed = opts.link_seed.unwrap_or_else(|| fresh_seed(port.into()));
            let link = LinkSocket::new(socket, spec, seed)?;
            let stats = link.stats();
            (link, Some(stats))
        }
    };
    let endpoint = quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
        .map_err(|source| TransportError::Bind { addr, source })?;
    Ok((endpoint, stats))
}

/// Says once per process, at info level, when the kernel granted a smaller UDP receive buffer
/// than asked for. Linux caps it at `net.core.rmem_max` (208 KiB by default) and reports twice
/// what it keeps for data. Transfers still complete and the main job runs as well, hence not a
/// warning. Bulk pushes into a shard lose bursts and QUIC backs off (loopback, transport bench:
/// 1,500-4,000 packets lost in 2 s, with about the same throughput).
fn note_if_capped(granted: Option<usize>, asked: usize) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(granted) = granted.filter(|&g| g < asked) {
        SAID.call_once(|| {
            tracing::info!(
                granted,
                asked,
                "the kernel capped this UDP socket's receive buffer; raise net.core.rmem_max \
                 (sysctl) to at least the size asked for to avoid losses under bulk transfers"
            )
        });
    }
}
