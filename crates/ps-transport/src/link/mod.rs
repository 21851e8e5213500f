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

mod rng;
mod socket;
mod spec;
#[cfg(test)]
mod tests;

pub(crate) use rng::fresh_seed;
pub use socket::{LinkSocket, LinkStats};
pub use spec::{LinkError, LinkSpec};
