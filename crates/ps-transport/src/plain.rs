//! Packet protection for trusted links: after the mutual-TLS handshake, 1-RTT packets may carry
//! their payload in the clear, without AES-GCM.
//!
//! On loopback, sealing and opening packets took a quarter of the CPU time of a bulk transfer
//! (README, "Transport throughput"). A cluster on a private network may prefer the bytes/s.
//! Only the packet payloads change: the handshake still runs TLS 1.3 with both certificates
//! checked against the cluster CA, and Initial and Handshake packets are still encrypted.
//!
//! Both ends must ask for it. An endpoint with [`PacketProtection::None`] offers ALPN
//! [`ALPN_PLAIN`] before `ps/1`; the peer picks `ps/1` unless it asked too. The choice is part of
//! the authenticated handshake, so nobody on the path can impose it. Each side reads the
//! negotiated protocol when its 1-RTT keys are made and keeps rustls' keys unless it is
//! [`ALPN_PLAIN`], so one side alone never sends in the clear, and a peer without the option
//! still connects, encrypted.
//!
//! What is lost on such a connection: confidentiality, and integrity beyond the UDP checksum.
//! Anyone who can put packets on the path can read the model and inject stream data.

use bytes::BytesMut;
use ps_proto::ALPN_PLAIN;
use quinn::crypto::rustls::HandshakeData;
use quinn::crypto::{
    self, CryptoError, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey,
};
use quinn::{ConnectError, ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError as QuicError;
use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;

/// How 1-RTT packets are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PacketProtection {
    /// TLS 1.3's AEAD (AES-GCM): confidentiality and integrity. The default.
    #[default]
    Aead,
    /// No encryption and no integrity tag, on connections whose peer asks for the same.
    None,
}

impl FromStr for PacketProtection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aead" => Ok(PacketProtection::Aead),
            "none" => Ok(PacketProtection::None),
            _ => Err(format!(
                "unknown packet protection {s:?}: expected aead or none"
            )),
        }
    }
}

impl std::fmt::Display for PacketProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketProtection::Aead => "aead",
            PacketProtection::None => "none",
        })
    }
}

/// Whether a connection's handshake settled on plaintext packets (`None` before it has, and for
/// connections whose crypto is not rustls').
pub fn is_plain(connection: &quinn::Connection) -> Option<bool> {
    let data = connection.handshake_data()?;
    let data = data.downcast_ref::<HandshakeData>()?;
    Some(data.protocol.as_deref() == Some(ALPN_PLAIN))
}

/// The bytes of a tag, kept so that packet sizes and quinn's padding rules stay as with AES-GCM.
const TAG_LEN: usize = 16;

/// A packet key that leaves the payload as it is and appends a zero tag.
struct ClearKey;

impl PacketKey for ClearKey {
    fn encrypt(&self, _packet: u64, buf: &mut [u8], header_len: usize) {
        let tag_at = buf.len().saturating_sub(TAG_LEN).max(header_len);
        buf[tag_at..].fill(0);
    }

    fn decrypt(
        &self,
        _packet: u64,
        _header: &[u8],
        payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        let len = payload.len().checked_sub(TAG_LEN).ok_or(CryptoError)?;
        payload.truncate(len);
        Ok(())
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        u64::MAX
    }

    fn integrity_limit(&self) -> u64 {
        u64::MAX
    }
}

fn clear_pair() -> KeyPair<Box<dyn PacketKey>> {
    KeyPair {
        local: Box::new(ClearKey),
        remote: Box::new(ClearKey),
    }
}

/// A rustls session whose 1-RTT packet keys are [`ClearKey`]s when [`ALPN_PLAIN`] was negotiated.
struct Session {
    inner: Box<dyn crypto::Session>,
    /// Key sets handed out so far: the first is the Handshake space's, the second the 1-RTT one.
    keys_given: u8,
    plain: bool,
}

impl Session {
    fn new(inner: Box<dyn crypto::Session>) -> Session {
        Session {
            inner,
            keys_given: 0,
            plain: false,
        }
    }

    fn negotiated_plain(&self) -> bool {
        self.inner
            .handshake_data()
            .and_then(|d| d.downcast::<HandshakeData>().ok())
            .is_some_and(|d| d.protocol.as_deref() == Some(ALPN_PLAIN))
    }
}

impl crypto::Session for Session {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.inner.handshake_data()
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        self.inner.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, QuicError> {
        self.inner.read_handshake(buf)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, QuicError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let mut keys = self.inner.write_handshake(buf)?;
        self.keys_given = self.keys_given.saturating_add(1);
        if self.keys_given == 2 {
            // The 1-RTT keys: by now both sides know the protocol (the server chose it from
            // the ClientHello; the client read it in EncryptedExtensions, before Finished).
            self.plain = self.negotiated_plain();
            if self.plain {
                keys.packet = clear_pair();
            }
        }
        Some(keys)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        let next = self.inner.next_1rtt_keys()?;
        Some(if self.plain { clear_pair() } else { next })
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

/// Client crypto that may negotiate plaintext packets.
pub(crate) struct PlainClient(pub(crate) Arc<dyn crypto::ClientConfig>);

impl crypto::ClientConfig for PlainClient {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, ConnectError> {
        let inner = self.0.clone().start_session(version, server_name, params)?;
        Ok(Box::new(Session::new(inner)))
    }
}

/// Server crypto that may negotiate plaintext packets.
pub(crate) struct PlainServer(pub(crate) Arc<dyn crypto::ServerConfig>);

impl crypto::ServerConfig for PlainServer {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, crypto::UnsupportedVersion> {
        self.0.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.0.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(Session::new(self.0.clone().start_session(version, params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_key_appends_a_tag_and_strips_it() {
        let key = ClearKey;
        let header = [0xc0u8, 1, 2];
        let body = b"rows of the model";
        let mut packet = Vec::from(header);
        packet.extend_from_slice(body);
        packet.extend_from_slice(&[0xff; TAG_LEN]);
        key.encrypt(7, &mut packet, header.len());
        assert_eq!(
            &packet[..header.len() + body.len()],
            &[&header[..], body].concat()[..]
        );
        assert_eq!(&packet[header.len() + body.len()..], &[0u8; TAG_LEN]);
        let mut payload = BytesMut::from(&packet[header.len()..]);
        key.decrypt(7, &header, &mut payload).unwrap();
        assert_eq!(&payload[..], body);
    }

    #[test]
    fn a_clear_key_refuses_a_payload_shorter_than_its_tag() {
        let mut payload = BytesMut::from(&[1u8, 2, 3][..]);
        assert!(ClearKey.decrypt(0, &[], &mut payload).is_err());
    }

    #[test]
    fn the_flag_values_parse_and_print() {
        for p in [PacketProtection::Aead, PacketProtection::None] {
            assert_eq!(p.to_string().parse::<PacketProtection>(), Ok(p));
        }
        let e = "off".parse::<PacketProtection>().unwrap_err();
        assert!(e.contains("aead or none"), "{e}");
    }
}
