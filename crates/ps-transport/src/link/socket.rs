//! [`LinkSocket`]: the UDP socket wrapper that drops or queues each datagram, its delivery
//! thread, and the link's counters ([`LinkStats`]).

use super::rng::{next_rand, splitmix64, unit_f64};
use super::spec::{LinkError, LinkSpec};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bytes of IPv4 + UDP header counted on the wire for every datagram, on top of its payload.
pub const WIRE_OVERHEAD: usize = 28;

/// Counters of one emulated link. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct LinkStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    send_errors: AtomicU64,
}

impl LinkStats {
    /// Datagrams handed to the real socket after their delay.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }
    /// Payload bytes of the datagrams in [`sent`](Self::sent).
    pub fn sent_bytes(&self) -> u64 {
        self.0.sent_bytes.load(Ordering::Relaxed)
    }
    /// Datagrams dropped by the random loss.
    pub fn dropped_loss(&self) -> u64 {
        self.0.dropped_loss.load(Ordering::Relaxed)
    }
    /// Datagrams dropped because the bottleneck queue was full.
    pub fn dropped_queue(&self) -> u64 {
        self.0.dropped_queue.load(Ordering::Relaxed)
    }
    /// Datagrams the real socket refused (they are lost, as on a real link).
    pub fn send_errors(&self) -> u64 {
        self.0.send_errors.load(Ordering::Relaxed)
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} ({} B), dropped {} by loss, {} by queue, {} by socket",
            self.sent(),
            self.sent_bytes(),
            self.dropped_loss(),
            self.dropped_queue(),
            self.send_errors()
        )
    }
}

/// A datagram waiting for its delivery time.
struct Pending {
    deliver_at: Instant,
    destination: SocketAddr,
    ecn: Option<quinn::udp::EcnCodepoint>,
    src_ip: Option<std::net::IpAddr>,
    contents: Vec<u8>,
}

struct State {
    /// Delivery times are departure + a constant latency and departures never go back, so this
    /// queue is in delivery order: a FIFO is the timer queue.
    queue: VecDeque<Pending>,
    /// When the last accepted datagram's last bit leaves the link.
    last_departure: Instant,
    rng: u64,
    closed: bool,
}

struct Shared {
    spec: LinkSpec,
    state: Mutex<State>,
    wake: Condvar,
    stats: LinkStats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A UDP socket for quinn that sends through an emulated link (see the module docs) and receives
/// unchanged.
///
/// `try_send` never blocks: it drops or queues each datagram. A background thread hands queued
/// datagrams to the real socket at their delivery time; it uses a thread rather than a tokio task
/// because tokio's timers tick in whole milliseconds, far coarser than a 100 µs link.
pub struct LinkSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
}

impl fmt::Debug for LinkSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSocket")
            .field("inner", &self.inner)
            .field("spec", &self.shared.spec)
            .finish_non_exhaustive()
    }
}

impl LinkSocket {
    /// Wraps `inner` (a socket from [`quinn::Runtime::wrap_udp_socket`]) in `spec`; `seed` seeds
    /// the loss draws. Starts the delivery thread, which ends when the socket is dropped.
    pub fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        spec: LinkSpec,
        seed: u64,
    ) -> Result<Arc<LinkSocket>, LinkError> {
        spec.validate()?;
        let shared = Arc::new(Shared {
            spec,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                last_departure: Instant::now(),
                // A zero state would stick at zero.
                rng: splitmix64(seed) | 1,
                closed: false,
            }),
            wake: Condvar::new(),
            stats: LinkStats::default(),
        });
        let name = match inner.local_addr() {
            Ok(a) => format!("ps-link-{}", a.port()),
            Err(_) => "ps-link".to_string(),
        };
        let (thread_shared, thread_inner) = (shared.clone(), inner.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || deliver(thread_shared, thread_inner))
            .map_err(|e| LinkError::Thread(e.to_string()))?;
        Ok(Arc::new(LinkSocket { inner, shared }))
    }

    pub fn spec(&self) -> &LinkSpec {
        &self.shared.spec
    }

    pub fn stats(&self) -> LinkStats {
        self.shared.stats.clone()
    }

    /// Drops, or queues for delivery, one datagram.
    fn offer(&self, st: &mut State, now: Instant, transmit: &Transmit, contents: &[u8]) {
        let spec = &self.shared.spec;
        let stats = &self.shared.stats.0;
        if spec.loss > 0.0 && unit_f64(next_rand(&mut st.rng)) < spec.loss {
            stats.dropped_loss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let wire = contents.len() + WIRE_OVERHEAD;
        // Bytes not yet serialised: the time until the last departure, at the link's rate.
        let backlog = st
            .last_departure
            .saturating_duration_since(now)
            .as_nanos()
            .saturating_mul(spec.bandwidth_bps as u128)
            / 8_000_000_000;
        if backlog > 0 && backlog + wire as u128 > spec.queue_bytes as u128 {
            stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let departure = st.last_departure.max(now) + spec.serialisation_time(wire);
        st.last_departure = departure;
        st.queue.push_back(Pending {
            deliver_at: departure + spec.latency,
            destination: transmit.destination,
            ecn: transmit.ecn,
            src_ip: transmit.src_ip,
            contents: contents.to_vec(),
        });
    }
}

impl Drop for LinkSocket {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl AsyncUdpSocket for LinkSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let now = Instant::now();
        let mut st = self.shared.lock();
        let was_empty = st.queue.is_empty();
        match transmit.segment_size {
            Some(seg) if seg > 0 && seg < transmit.contents.len() => {
                for chunk in transmit.contents.chunks(seg) {
                    self.offer(&mut st, now, transmit, chunk);
                }
            }
            _ => self.offer(&mut st, now, transmit, transmit.contents),
        }
        // The thread sleeps until the head's delivery time, which nothing queued later precedes;
        // it only needs waking when the queue was empty.
        let wake = was_empty && !st.queue.is_empty();
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
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
        // Batches are split here, so quinn may as well build them.
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The link socket accepts every datagram at once.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Below this, the delivery thread yields in a loop instead of sleeping: a timed sleep overshoots
/// by the kernel's timer slack (50 µs by default) and scheduling.
const SPIN: Duration = Duration::from_micros(200);

/// The delivery thread: hands each queued datagram to the real socket at its delivery time.
fn deliver(shared: Arc<Shared>, inner: Arc<dyn AsyncUdpSocket>) {
    let mut due = Vec::new();
    loop {
        {
            let mut st = shared.lock();
            loop {
                if st.closed {
                    return;
                }
                let now = Instant::now();
                let Some(head) = st.queue.front() else {
                    st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                    continue;
                };
                if head.deliver_at <= now {
                    while st.queue.front().is_some_and(|p| p.deliver_at <= now) {
                        due.extend(st.queue.pop_front());
                    }
                    break;
                }
                let wait = head.deliver_at - now;
                if wait > SPIN {
                    st = shared
                        .wake
                        .wait_timeout(st, wait - SPIN)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                } else {
                    drop(st);
                    std::thread::yield_now();
                    st = shared.lock();
                }
            }
        }
        for p in due.drain(..) {
            send(&shared.stats, inner.as_ref(), &p);
        }
    }
}

/// Sends one datagram on the real socket, waiting briefly while its buffer is full.
fn send(stats: &LinkStats, inner: &dyn AsyncUdpSocket, p: &Pending) {
    let transmit = Transmit {
        destination: p.destination,
        ecn: p.ecn,
        contents: &p.contents,
        segment_size: None,
        src_ip: p.src_ip,
    };
    let give_up = Instant::now() + Duration::from_millis(20);
    loop {
        match inner.try_send(&transmit) {
            Ok(()) => {
                stats.0.sent.fetch_add(1, Ordering::Relaxed);
                stats
                    .0
                    .sent_bytes
                    .fetch_add(p.contents.len() as u64, Ordering::Relaxed);
                return;
            }
            // The runtime's reactor marks the socket writable again; poll for that.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => {
                tracing::debug!(error = %e, dest = %p.destination, "link: datagram not sent");
                stats.0.send_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
