//! [`LinkSpec`]: an emulated link's bandwidth, latency, loss and queue; parsing it from
//! `BANDWIDTH,LATENCY[,LOSS[,QUEUE]]` and writing it back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

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
