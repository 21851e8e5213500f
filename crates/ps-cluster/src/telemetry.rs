//! `--metrics-addr`: each process serves its metrics in the Prometheus text format over HTTP.
//! The libraries record through the `metrics` facade; this installs the Prometheus exporter
//! (`metrics-exporter-prometheus`, its HTTP listener) as the process's recorder.
//!
//! In `local`, one address names them all: the coordinator (the launcher itself) serves on
//! PORT, shard `i` on PORT+1+i and worker `j` on PORT+1+SERVERS+j, all on HOST. Every port is
//! checked before anything starts, so a port in use stops the job before it begins.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use std::net::{SocketAddr, TcpListener};

/// Where a process serves its metrics.
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics. With `local`, the
    /// coordinator serves on PORT, shard i on PORT+1+i, worker j on PORT+1+SERVERS+j.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Metrics")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Upper bounds of the histograms' buckets, in seconds (every histogram here is in seconds):
/// 50 us to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The URL a Prometheus server scrapes for `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

/// Installs the Prometheus exporter serving on `args.metrics_addr`, if given. Call before any
/// async runtime of the process is entered: the exporter runs on its own thread.
pub fn serve(args: &MetricsArgs) -> Result<()> {
    let Some(addr) = args.metrics_addr else {
        return Ok(());
    };
    if addr.port() == 0 {
        bail!("--metrics-addr {addr}: give a port (a scraper must know where to look)");
    }
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)
        .and_then(|b| b.install())
        .map_err(|e| match e {
            BuildError::FailedToCreateHTTPListener(why) => {
                anyhow!("cannot serve metrics on {addr}: {why}")
            }
            e => anyhow!("cannot serve metrics on {addr}: {e}"),
        })?;
    ps_client::telemetry::describe();
    ps_server::telemetry::describe();
    tracing::info!(%addr, "serving metrics");
    Ok(())
}

/// The metrics address of every process of a local job, named: the coordinator, then the
/// shards, then the workers, on consecutive ports from `base`.
pub fn local_addrs(
    base: SocketAddr,
    servers: u32,
    workers: u32,
) -> Result<Vec<(String, SocketAddr)>> {
    if base.port() == 0 {
        bail!("--metrics-addr {base}: local needs a port (its processes serve on consecutive ports from it)");
    }
    let names = std::iter::once("coordinator".to_string())
        .chain((0..servers).map(|i| format!("shard-{i}")))
        .chain((0..workers).map(|j| format!("worker-{j}")));
    names
        .enumerate()
        .map(|(k, name)| {
            let port = u16::try_from(base.port() as u64 + k as u64).map_err(|_| {
                anyhow!(
                    "--metrics-addr {base}: {name} would need port {} (past 65535)",
                    base.port() as u64 + k as u64
                )
            })?;
            Ok((name, SocketAddr::new(base.ip(), port)))
        })
        .collect()
}

/// Checks that every address can be bound now (all at once, then released), naming the first
/// that cannot and the process it was for.
pub fn check_free(addrs: &[(String, SocketAddr)]) -> Result<()> {
    let mut held = Vec::with_capacity(addrs.len());
    for (name, addr) in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => held.push(l),
            Err(e) => bail!("cannot serve metrics for {name} on {addr}: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_are_consecutive_coordinator_shards_workers() {
        let a = local_addrs("127.0.0.1:9100".parse().unwrap(), 2, 3).unwrap();
        let got: Vec<(&str, u16)> = a.iter().map(|(n, s)| (n.as_str(), s.port())).collect();
        assert_eq!(
            got,
            [
                ("coordinator", 9100),
                ("shard-0", 9101),
                ("shard-1", 9102),
                ("worker-0", 9103),
                ("worker-1", 9104),
                ("worker-2", 9105)
            ]
        );
    }

    #[test]
    fn local_refuses_port_zero_and_ports_past_the_end() {
        assert!(local_addrs("127.0.0.1:0".parse().unwrap(), 1, 1).is_err());
        let e = local_addrs("127.0.0.1:65534".parse().unwrap(), 1, 1).unwrap_err();
        assert!(e.to_string().contains("worker-0"), "{e}");
    }
}
