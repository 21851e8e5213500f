//! Link emulation: a wrapper around the UDP socket quinn uses that imposes bandwidth, one-way
//! latency, random loss and a bounded bottleneck queue on everything an endpoint sends, so QUIC's
//! own congestion control reacts to it.
//!
//! A link is written `BANDWIDTH,LATENCY[,LOSS[,QUEUE]]`, e.g. `1gbit,100us,0.0`:
//!
//! * `BANDWIDTH`: a number with `bit`, `kbit`, `mbit` or `gbit` (`kbps`, `mbps`, `gbps` are read
//!   as the same *bit* rates, unlike tc, where they mean bytes); decimal prefixes (1 kbit = 1000 bit).
//! * `LATENCY`: one-way delay, a number with `ns`, `us`, `ms` or `s`.
//! * `LOSS`: probability in [0, 1) that a datagram is dropped; 0 when left out.
//! * `QUEUE`: bottleneck queue in bytes (`b`, `kb`, `kib`, `mb`, `mib`, or a bare number); when
//!   left out, `max(1 MiB, 2 x bandwidth x latency)`: a shallow 64 KiB queue made two concurrent flows through one port spend tens of milliseconds per clock in loss recovery, which no switch port of the links emulated here would do.
//!
//! Shaping applies to an endpoint's egress only; when both ends of a path are emulated, each
//! direction sees its sender's link, so a round trip takes at least twice the latency.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes of IPv4 + UDP header counted on the wire for every datagram, on top of its payload.
pub const WIRE_OVERHEAD: usize = 28;

/// Smallest queue the derived default gives.
pub const MIN_DEFAULT_QUEUE: usize = 1 << 20;

/// An emulated link: what every datagram an endpoint sends goes through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Bits per second.
    pub bandwidth_bps: u64,
    /// One-way delay added after a datagram has been serialised onto the link.
    pub latency: Duration,
    /// Probability in [0, 1) that a datagram is dropped before it enters the queue.
    pub loss: f64,
    /// Bottleneck queue: a datagram that does not fit behind the bytes still waiting to be
    /// serialised is dropped (tail drop). An empty queue always takes one datagram.
    pub queue_bytes: usize,
}

/// A link written wrongly, or one that cannot be emulated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    #[error("link {0:?}: expected BANDWIDTH,LATENCY[,LOSS[,QUEUE]], e.g. 1gbit,100us,0.0")]
    Shape(String),
    #[error("link bandwidth {0:?}: expected a positive number with bit, kbit, mbit or gbit")]
    Bandwidth(String),
    #[error("link latency {0:?}: expected a non-negative number with ns, us, ms or s")]
    Latency(String),
    #[error("link loss {0:?}: expected a probability in [0, 1)")]
    Loss(String),
    #[error("link queue {0:?}: expected a positive size in bytes (b, kb, kib, mb, mib)")]
    Queue(String),
    #[error("starting the link emulation thread: {0}")]
    Thread(String),
}

impl LinkSpec {
    /// A link with the default queue for its bandwidth and latency.
    pub fn new(bandwidth_bps: u64, latency: Duration, loss: f64) -> LinkSpec {
        LinkSpec {
            bandwidth_bps,
            latency,
            loss,
            queue_bytes: Self::default_queue(bandwidth_bps, latency),
        }
    }

    /// `max(1 MiB, 2 x bandwidth-delay product)` in bytes.
    pub fn default_queue(bandwidth_bps: u64, latency: Duration) -> usize {
        let bdp = bandwidth_bps as u128 * latency.as_nanos() / 8 / 1_000_000_000;
        (2 * bdp)
            .min(usize::MAX as u128)
            .max(MIN_DEFAULT_QUEUE as u128) as usize
    }

    /// Checks a spec built by hand the way parsing checks a written one.
    pub fn validate(&self) -> Result<(), LinkError> {
        if self.bandwidth_bps == 0 {
            return Err(LinkError::Bandwidth(self.bandwidth_bps.to_string()));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(LinkError::Loss(self.loss.to_string()));
        }
        if self.queue_bytes == 0 {
            return Err(LinkError::Queue(self.queue_bytes.to_string()));
        }
        Ok(())
    }

    /// Time to serialise `bytes` onto the link, rounded up so the link is never faster than set.
    pub fn serialisation_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u128 * 8 * 1_000_000_000;
        let nanos = bits.div_ceil(self.bandwidth_bps.max(1) as u128);
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }
}

/// Splits `s` into a decimal number and a lower-cased unit suffix.
fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(s.len());
    // An exponent 'e' directly followed by a unit letter would be eaten; units never start with 'e'.
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    Some((value, unit.trim().to_ascii_lowercase()))
}

fn parse_bandwidth(s: &str) -> Result<u64, LinkError> {
    let err = || LinkError::Bandwidth(s.trim().to_string());
    let (value, unit) = number_and_unit(s).ok_or_else(err)?;
    let scale = match unit.as_str() {
        "bit" | "bps" => 1.0,
        "kbit" | "kbps" => 1e3,
        "mbit" | "mbps" => 1e6,
        "gbit" | "gbps" => 1e9,
        _ => return Err(err()),
    };
    let bps = (value * scale).round();
    if !(bps >= 1.0 && bps < u64::MAX as f64) {
        return Err(err());
    }
    Ok(bps as u64)
}

fn parse_latency(s: &str) -> Result<Duration, LinkError> {
    let err = || LinkError::Latency(s.trim().to_string());
    let (value, unit) = number_and_unit(s).ok_or_else(err)?;
    let scale = match unit.as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(err()),
    };
    let nanos = (value * scale).round();
    if !(nanos >= 0.0 && nanos < u64::MAX as f64) || value < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

fn parse_loss(s: &str) -> Result<f64, LinkError> {
    let err = || LinkError::Loss(s.trim().to_string());
    let loss: f64 = s.trim().parse().map_err(|_| err())?;
    if !(0.0..1.0).contains(&loss) {
        return Err(err());
    }
    Ok(loss)
}

fn parse_queue(s: &str) -> Result<usize, LinkError> {
    let err = || LinkError::Queue(s.trim().to_string());
    let (value, unit) = number_and_unit(s).ok_or_else(err)?;
    let scale = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" => 1024.0,
        "mb" => 1e6,
        "mib" => (1u64 << 20) as f64,
        _ => return Err(err()),
    };
    let bytes = (value * scale).round();
    if !(bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(err());
    }
    Ok(bytes as usize)
}

impl FromStr for LinkSpec {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<LinkSpec, LinkError> {
        let fields: Vec<&str> = s.split(',').collect();
        if !(2..=4).contains(&fields.len()) {
            return Err(LinkError::Shape(s.to_string()));
        }
        let bandwidth_bps = parse_bandwidth(fields[0])?;
        let latency = parse_latency(fields[1])?;
        let loss = match fields.get(2) {
            Some(f) => parse_loss(f)?,
            None => 0.0,
        };
        let queue_bytes = match fields.get(3) {
            Some(f) => parse_queue(f)?,
            None => LinkSpec::default_queue(bandwidth_bps, latency),
        };
        let spec = LinkSpec {
            bandwidth_bps,
            latency,
            loss,
            queue_bytes,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for LinkSpec {
    /// Writes the largest unit that keeps each value exact, so parsing gives the same spec back;
    /// the queue is left out when it is the default one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bw = self.bandwidth_bps;
        match bw {
            b if b % 1_000_000_000 == 0 => write!(f, "{}gbit", b / 1_000_000_000)?,
            b if b % 1_000_000 == 0 => write!(f, "{}mbit", b / 1_000_000)?,
            b if b % 1_000 == 0 => write!(f, "{}kbit", b / 1_000)?,
            b => write!(f, "{b}bit")?,
        }
        let ns = self.latency.as_nanos();
        match ns {
            0 => write!(f, ",0us")?,
            n if n % 1_000_000_000 == 0 => write!(f, ",{}s", n / 1_000_000_000)?,
            n if n % 1_000_000 == 0 => write!(f, ",{}ms", n / 1_000_000)?,
            n if n % 1_000 == 0 => write!(f, ",{}us", n / 1_000)?,
            n => write!(f, ",{n}ns")?,
        }
        write!(f, ",{}", self.loss)?;
        if self.queue_bytes != LinkSpec::default_queue(self.bandwidth_bps, self.latency) {
            match self.queue_bytes {
                q if q % (1 << 20) == 0 => write!(f, ",{}mib", q >> 20)?,
                q if q % 1024 == 0 => write!(f, ",{}kib", q >> 10)?,
                q => write!(f, ",{q}b")?,
            }
        }
        Ok(())
    }
}

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

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*.
fn next_rand(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Uniform in [0, 1).
fn unit_f64(r: u64) -> f64 {
    (r >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A seed for an endpoint whose options give none: differs between endpoints and runs.
pub(crate) fn fresh_seed(salt: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix64(t ^ splitmix64(salt ^ std::process::id() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> LinkSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_examples() {
        let l = p("1gbit,100us,0.0");
        assert_eq!(l.bandwidth_bps, 1_000_000_000);
        assert_eq!(l.latency, Duration::from_micros(100));
        assert_eq!(l.loss, 0.0);
        assert_eq!(l.queue_bytes, 1 << 20); // 2 x BDP = 25 kB, below the floor

        let l = p("100mbit,2ms");
        assert_eq!(l.bandwidth_bps, 100_000_000);
        assert_eq!(l.latency, Duration::from_millis(2));
        assert_eq!(l.loss, 0.0);
        assert_eq!(l.queue_bytes, 1 << 20); // 2 x 25 kB, below the floor

        let l = p("10gbit,50us,0.001");
        assert_eq!(l.bandwidth_bps, 10_000_000_000);
        assert_eq!(l.latency, Duration::from_micros(50));
        assert_eq!(l.loss, 0.001);
        assert_eq!(l.queue_bytes, 1 << 20); // 2 x 62.5 kB, below the floor

        let l = p("500kbit,1ms");
        assert_eq!(l.bandwidth_bps, 500_000);
        assert_eq!(l.latency, Duration::from_millis(1));

        assert_eq!(p("1Gbps,1s").bandwidth_bps, 1_000_000_000);
        assert_eq!(p("20mbps,0us").latency, Duration::ZERO);
        assert_eq!(p("1500bit,1ns").bandwidth_bps, 1500);
        assert_eq!(p("2.5gbit,0.5ms").bandwidth_bps, 2_500_000_000);
        assert_eq!(p("2.5gbit,0.5ms").latency, Duration::from_micros(500));
        assert_eq!(p(" 1gbit , 100us , 0.01 , 8kib ").queue_bytes, 8192);
        assert_eq!(p("1gbit,100us,0,6000").queue_bytes, 6000);
        assert_eq!(p("1gbit,100us,0,2mb").queue_bytes, 2_000_000);
        assert_eq!(p("1gbit,100us,0,1mib").queue_bytes, 1 << 20);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "1gbit,100us,0.0",
            "100mbit,2ms",
            "10gbit,50us,0.001",
            "500kbit,1ms",
            "1500bit,1ns,0.5",
            "2.5gbit,0.5ms,0.02,6000",
            "1gbit,1s,0,8kib",
            "1gbit,0us,0,3mib",
            "7bit,123456789ns,0.999",
            "20mbit,1ms,0,70000b",
        ] {
            let spec = p(s);
            let shown = spec.to_string();
            assert_eq!(p(&shown), spec, "{s} -> {shown}");
        }
        assert_eq!(p("1gbit,100us,0.0").to_string(), "1gbit,100us,0");
        assert_eq!(p("10gbit,50us,0.001").to_string(), "10gbit,50us,0.001");
        assert_eq!(p("100mbit,2ms,0,8kib").to_string(), "100mbit,2ms,0,8kib");
        assert_eq!(p("2.5gbit,1000us").to_string(), "2500mbit,1ms,0");
    }

    #[test]
    fn rejects_nonsense() {
        use LinkError::*;
        let e = |s: &str| s.parse::<LinkSpec>().unwrap_err();
        assert!(matches!(e(""), Shape(_)));
        assert!(matches!(e("1gbit"), Shape(_)));
        assert!(matches!(e("1gbit,1ms,0,1kib,x"), Shape(_)));
        assert!(matches!(e("0gbit,1ms"), Bandwidth(_)));
        assert!(matches!(e("0.0001bit,1ms"), Bandwidth(_)));
        assert!(matches!(e("-1gbit,1ms"), Bandwidth(_)));
        assert!(matches!(e("1gbyte,1ms"), Bandwidth(_)));
        assert!(matches!(e("1,1ms"), Bandwidth(_)));
        assert!(matches!(e("gbit,1ms"), Bandwidth(_)));
        assert!(matches!(e("infgbit,1ms"), Bandwidth(_)));
        assert!(matches!(e("1gbit,-1ms"), Latency(_)));
        assert!(matches!(e("1gbit,1"), Latency(_)));
        assert!(matches!(e("1gbit,1min"), Latency(_)));
        assert!(matches!(e("1gbit,1ms,1.0"), Loss(_)));
        assert!(matches!(e("1gbit,1ms,-0.1"), Loss(_)));
        assert!(matches!(e("1gbit,1ms,NaN"), Loss(_)));
        assert!(matches!(e("1gbit,1ms,5%"), Loss(_)));
        assert!(matches!(e("1gbit,1ms,0,0"), Queue(_)));
        assert!(matches!(e("1gbit,1ms,0,-5kb"), Queue(_)));
        assert!(matches!(e("1gbit,1ms,0,1gb"), Queue(_)));
        let msg = e("1gbit,1ms,2").to_string();
        assert!(msg.contains("[0, 1)"), "{msg}");

        let mut bad = LinkSpec::new(1_000_000, Duration::from_millis(1), 0.0);
        bad.bandwidth_bps = 0;
        assert!(bad.validate().is_err());
        let mut bad = LinkSpec::new(1_000_000, Duration::from_millis(1), 0.0);
        bad.loss = f64::NAN;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn serialisation_time_is_never_short() {
        let l = p("1gbit,0us");
        assert_eq!(l.serialisation_time(1500), Duration::from_nanos(12_000));
        let l = p("3bit,0us");
        // 8 bits at 3 bit/s: 2.666.. s, rounded up.
        assert_eq!(l.serialisation_time(1), Duration::from_nanos(2_666_666_667));
    }

    #[test]
    fn prng_is_uniformish() {
        let mut s = splitmix64(7) | 1;
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| unit_f64(next_rand(&mut s)) < 0.02)
            .count();
        let rate = hits as f64 / n as f64;
        assert!((0.017..0.023).contains(&rate), "{rate}");
    }
}
