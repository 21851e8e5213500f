//! A UDP socket whose segmentation-offload batches always fit in one IP datagram.
//!
//! quinn builds each send as up to 10 segments of the path's packet size and hands them to the
//! kernel as one GSO datagram. The kernel refuses a GSO send whose total exceeds what one UDP
//! datagram may carry (65,507 payload bytes over IPv4), and quinn counts the refused batch as
//! lost: with packets over about 6,500 bytes every full batch was refused, congestion control
//! collapsed and path-MTU discovery declared a black hole (measured on loopback, where the MTU
//! is 65,536). This wrapper caps the segments per batch so that the batch fits.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The most payload one UDP datagram carries over IPv4 (65,535 less the IP and UDP headers);
/// IPv6 allows 20 bytes more.
pub const MAX_GSO_BYTES: usize = 65_507;

/// Segments of `packet` bytes that fit in one GSO send (at least 1).
pub fn segments_that_fit(packet: usize) -> usize {
    (MAX_GSO_BYTES / packet.max(1)).max(1)
}

/// `inner`, with at most [`segments_that_fit`]`(packet)` segments per send.
pub struct GsoCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl GsoCapped {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, packet: usize) -> GsoCapped {
        GsoCapped {
            inner,
            max_segments: segments_that_fit(packet),
        }
    }
}

impl fmt::Debug for GsoCapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GsoCapped")
            .field("max_segments", &self.max_segments)
            .finish()
    }
}

impl AsyncUdpSocket for GsoCapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_fits_in_one_datagram() {
        for packet in [1200, 1472, 4096, 6000, 6550, 8192, 9000, 16384, 65_507] {
            let n = segments_that_fit(packet);
            assert!(n >= 1);
            assert!(n * packet <= MAX_GSO_BYTES, "{packet}: {n} segments");
            assert!(
                (n + 1) * packet > MAX_GSO_BYTES,
                "{packet}: {n} could be more"
            );
        }
        assert_eq!(segments_that_fit(4096), 15);
        assert_eq!(segments_that_fit(9000), 7);
        assert_eq!(segments_that_fit(70_000), 1);
    }
}
