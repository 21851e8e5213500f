//! A UDP socket that has the kernel copy received datagrams to where the copy is fast.
//!
//! On the 2-core AMD EPYC machines this project builds on, the kernel's copy of a received
//! datagram into user memory took 4 to 5 times the CPU (0.38-0.59 against 0.08-0.10 CPU
//! seconds per GB, loopback, 61,440-byte GSO sends) when the destination began 1 to 31 bytes
//! past a page boundary and the datagram's bytes began on one, as they do on loopback with
//! whole-page packets. `rep movsb`, which both the kernel and glibc copy with, is slow when
//! the destination is a few bytes past the source modulo 4096. quinn receives into one large
//! buffer cut into equal slots, and glibc serves a buffer that large from `mmap`, 16 bytes past
//! a page boundary: every slot sat at page offset 16, the slowest place.
//!
//! [`StagedRecv`] checks where the caller's buffers lie. Where one lies in [`SLOW_OFFSETS`],
//! the kernel writes into a staging buffer placed half a page from it instead, and the bytes
//! are then copied into the caller's buffer (a user-space copy at a fast relative offset). With
//! quinn's buffers at offset 16 this took the shard service's transport bench from 0.89-0.92
//! to 0.73-0.83 CPU seconds per GB pulled and from 1.25-1.41 to 0.92-1.15 per GB pushed
//! (README, Transport throughput). Where the caller's buffers lie elsewhere, datagrams go straight to them.
//! `PS_UDP_RECV_DIRECT=1` in the environment turns staging off (to measure it).

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The page size the copies' alignment is measured against.
pub const PAGE: usize = 4096;

/// Page offsets of a destination that make the kernel's copy from page-aligned data slow
/// (measured: 1 to 31; the range is widened to a cache line).
pub const SLOW_OFFSETS: RangeInclusive<usize> = 1..=63;

/// Where `buf` starts within its page.
fn page_offset(buf: &[u8]) -> usize {
    buf.as_ptr() as usize % PAGE
}

/// Whether a receive buffer at page offset `offset` is better staged.
pub fn needs_staging(offset: usize) -> bool {
    SLOW_OFFSETS.contains(&(offset % PAGE))
}

/// The page offset of the staging buffer for a destination at a page offset `offset` in
/// [`SLOW_OFFSETS`]: half a page from it, so neither the kernel's copy (from a page boundary)
/// nor the copy on to the destination falls in [`SLOW_OFFSETS`].
pub fn staging_offset(offset: usize) -> usize {
    (offset + PAGE / 2) % PAGE
}

/// `inner`, receiving through a staging buffer where the caller's buffers lie at slow page
/// offsets (see the module).
pub struct StagedRecv {
    inner: Arc<dyn AsyncUdpSocket>,
    direct: bool,
    staging: Mutex<Vec<u8>>,
    told: AtomicBool,
}

impl StagedRecv {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> StagedRecv {
        StagedRecv {
            inner,
            direct: std::env::var_os("PS_UDP_RECV_DIRECT").is_some_and(|v| v == "1"),
            staging: Mutex::new(Vec::new()),
            told: AtomicBool::new(false),
        }
    }
}

impl fmt::Debug for StagedRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedRecv")
            .field("direct", &self.direct)
            .finish()
    }
}

/// Slices of `staging` as long as `bufs`, each at [`staging_offset`] of its buffer's page
/// offset. `staging` must hold the buffers' lengths plus a page for each.
fn place<'a>(staging: &'a mut [u8], bufs: &[IoSliceMut<'_>]) -> Vec<IoSliceMut<'a>> {
    let mut rest = staging;
    let mut slots = Vec::with_capacity(bufs.len());
    for buf in bufs {
        let want = staging_offset(page_offset(buf));
        let here = page_offset(rest);
        let pad = (want + PAGE - here) % PAGE;
        let taken = std::mem::take(&mut rest);
        let (slot, tail) = taken[pad..].split_at_mut(buf.len());
        slots.push(IoSliceMut::new(slot));
        rest = tail;
    }
    slots
}

impl AsyncUdpSocket for StagedRecv {
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
        let slow = bufs.iter().any(|b| needs_staging(page_offset(b)));
        let told = &self.told;
        if !told.load(Ordering::Relaxed) && !told.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "UDP receive buffers at page offset {}: {}",
                bufs.first().map_or(0, |b| page_offset(b)),
                if slow && !self.direct {
                    "staged"
                } else {
                    "direct"
                }
            );
        }
        if self.direct || !slow {
            return self.inner.poll_recv(cx, bufs, meta);
        }
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let need = bufs.iter().map(|b| b.len() + PAGE).sum::<usize>();
        if staging.len() < need {
            // Zeroed by the allocator as pages are first touched: only what datagrams fill.
            *staging = vec![0u8; need];
        }
        let mut slots = place(&mut staging, bufs);
        let got = match self.inner.poll_recv(cx, &mut slots, meta) {
            Poll::Ready(Ok(got)) => got,
            other => return other,
        };
        for ((buf, slot), m) in bufs.iter_mut().zip(&slots).zip(&meta[..got]) {
            let len = m.len.min(buf.len()).min(slot.len());
            buf[..len].copy_from_slice(&slot[..len]);
        }
        Poll::Ready(Ok(got))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
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

    /// The kernel's copy starts from a page boundary: its destination's offset is the slot's.
    #[test]
    fn staging_lies_where_both_copies_are_fast() {
        for offset in SLOW_OFFSETS {
            let staged = staging_offset(offset);
            assert!(!needs_staging(staged), "{offset}: staged at {staged}");
            let onward = (offset + PAGE - staged) % PAGE;
            assert!(!SLOW_OFFSETS.contains(&onward), "{offset}: onward {onward}");
        }
        assert!(needs_staging(16) && needs_staging(1) && needs_staging(63));
        assert!(!needs_staging(0) && !needs_staging(64) && !needs_staging(PAGE + 2048));
    }

    #[test]
    fn slots_are_as_long_as_the_buffers_at_their_offsets() {
        let mut a = vec![0u8; 3 * PAGE + 16];
        let mut b = vec![0u8; 5000];
        let mut c = [0u8; 100];
        let bufs = [
            IoSliceMut::new(&mut a[16..]),
            IoSliceMut::new(&mut b[..]),
            IoSliceMut::new(&mut c[7..]),
        ];
        let need = bufs.iter().map(|b| b.len() + PAGE).sum::<usize>();
        let mut staging = vec![0u8; need];
        let slots = place(&mut staging, &bufs);
        assert_eq!(slots.len(), 3);
        for (buf, slot) in bufs.iter().zip(&slots) {
            assert_eq!(slot.len(), buf.len());
            assert_eq!(page_offset(slot), staging_offset(page_offset(buf)));
        }
    }

    /// Receives what `sender` sent to `socket` into slots `offset` bytes past a page boundary.
    async fn receive_at(socket: &Arc<StagedRecv>, offset: usize, want: usize) -> Vec<Vec<u8>> {
        let slot = 2048;
        let mut backing = vec![0u8; 4 * 2 * PAGE + PAGE];
        let start = (offset + PAGE - page_offset(&backing)) % PAGE;
        let mut got = Vec::new();
        while got.len() < want {
            let mut rest = &mut backing[start..];
            let mut bufs = Vec::new();
            for _ in 0..4 {
                let (b, tail) = std::mem::take(&mut rest).split_at_mut(2 * PAGE);
                bufs.push(IoSliceMut::new(&mut b[..slot]));
                rest = tail;
            }
            let mut meta = [RecvMeta::default(); 4];
            let n = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .unwrap();
            for (b, m) in bufs.iter().zip(&meta[..n]) {
                assert_eq!(page_offset(b), offset);
                got.push(b[..m.len].to_vec());
            }
        }
        got
    }

    #[tokio::test]
    async fn datagrams_arrive_whole_at_fast_and_slow_offsets() {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = std_socket.local_addr().unwrap();
        let runtime = quinn::default_runtime().unwrap();
        let inner = runtime.wrap_udp_socket(std_socket).unwrap();
        let socket = Arc::new(StagedRecv::new(inner));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for offset in [16, 1, 63, 0, 64, 2048] {
            let sent: Vec<Vec<u8>> = (0..6u8)
                .map(|i| {
                    (0..1000 + 97 * i as usize)
                        .map(|j| (j as u8) ^ i ^ offset as u8)
                        .collect()
                })
                .collect();
            for d in &sent {
                sender.send_to(d, to).unwrap();
            }
            let got = receive_at(&socket, offset, sent.len()).await;
            assert_eq!(got, sent, "offset {offset}");
        }
    }
}
