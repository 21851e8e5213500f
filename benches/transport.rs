//! Push and pull throughput of dense f32 rows over QUIC on loopback, through the real shard
//! service (mutual TLS, frames, validation, clock vector, apply), next to raw TCP loopback measured
//! in the same run. The QUIC runs go once with both ends in this process and once with the shard
//! in a child process (this bench run again with `--serve-shard`).
//!
//! `cargo bench -p ps-benches --bench transport [-- --seconds 3] [--only tuned|plain] [--mtu N]
//! [--repeats R]`
//!
//! With `--repeats R` every figure is the median of R runs, and the table shows their range: on a
//! shared 2-core machine one run of raw TCP varied from 4.6 to 7.6 GB/s between runs, so one run
//! per figure makes the QUIC/TCP ratio as noisy as that. Each row also gives the CPU seconds
//! both ends spent per GB of payload (`getrusage` of this process and of the shard's child),
//! which moves less with the machine's other load than the rate does.

use anyhow::Result;
use ps_benches::{arg, record};
use ps_proto::{FrameBuilder, Init, Kind, Limits, TableSpec, UpdateRule};
use ps_server::{serve_shard, Shard, ShardHandle};
use ps_transport::{
    generate_cluster_certs, make_client_endpoint, make_endpoint, read_frame, write_frame,
    write_frame_owned, CertPaths, ClusterIdentity, EndpointOptions, FrameRead, PacketProtection,
};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WIDTH: u32 = 1024;
const ROWS: u64 = 4096;
/// Rows per request: 256 x 1024 f32 = 1 MiB of values.
const BATCH_ROWS: u64 = 256;

/// Payload bytes moved over the seconds of a run.
#[derive(Debug, Clone, Copy)]
struct Moved {
    bytes: u64,
    secs: f64,
}

impl Moved {
    fn new(bytes: u64, secs: f64) -> Self {
        Moved { bytes, secs }
    }
}

/// CPU seconds (user and system, every thread) of this process (`RUSAGE_SELF`) or of its
/// children that have been waited for (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return f64::NAN;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// One run: payload MB/s, and the CPU seconds both ends spent per GB of payload (both ends are
/// on this machine, so this is the stack's whole cost per byte: less noisy than the rate, which
/// moves with what else the machine runs). The CPU time covers the run's set-up too (endpoints,
/// handshakes, the child's start), a few hundredths of a second.
#[derive(Debug, Clone, Copy)]
struct Run {
    mb_per_s: f64,
    cpu_s_per_gb: f64,
}

/// Runs `f` and measures the CPU time this process, and the children it waited for meanwhile
/// (the split runs' shard), spent.
async fn timed<F: std::future::Future<Output = Result<Moved>>>(f: F) -> Result<Run> {
    let cpu = || cpu_seconds(libc::RUSAGE_SELF) + cpu_seconds(libc::RUSAGE_CHILDREN);
    let cpu0 = cpu();
    let m = f.await?;
    let cpu_s = cpu() - cpu0;
    let gb = m.bytes as f64 / 1e9;
    Ok(Run {
        mb_per_s: m.bytes as f64 / m.secs / 1e6,
        cpu_s_per_gb: if gb > 0.0 { cpu_s / gb } else { f64::NAN },
    })
}

/// The median rate of `runs`, their range as text (empty for one run) and the median CPU
/// seconds per GB.
fn medians(runs: &[Run]) -> (f64, String, f64) {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.mb_per_s).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_s_per_gb).collect();
    let (rate, range) = median_and_range(&mut rates);
    (rate, range, median_and_range(&mut cpu).0)
}

/// The median of `runs` (sorted in place) and their range as text (empty for one run).
fn median_and_range(runs: &mut [f64]) -> (f64, String) {
    runs.sort_by(f64::total_cmp);
    let n = runs.len();
    let median = if n % 2 == 1 {
        runs[n / 2]
    } else {
        (runs[n / 2 - 1] + runs[n / 2]) / 2.0
    };
    let range = if n > 1 {
        format!("{:.0}-{:.0}", runs[0], runs[n - 1])
    } else {
        String::new()
    };
    (median, range)
}

/// Raw TCP loopback: `conns` connections, each writing 1 MiB buffers as fast as the reader drains them.
async fn tcp(conns: usize, secs: f64) -> Result<Moved> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    r.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let buf = vec![7u8; 1 << 20];
            while Instant::now() < deadline {
                s.write_all(&buf).await?;
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(Moved::new(
        received.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}

/// TCP with the QUIC bench's request pattern: each request is a 1 MiB frame answered by a
/// 56-byte ack, `conns` connections in parallel, no encryption.
async fn tcp_request_ack(conns: usize, secs: f64) -> Result<Moved> {
    const REQ: usize = 1 << 20;
    const ACK: usize = ps_proto::HEADER_LEN;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; REQ];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&[1u8; ACK]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let moved = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let moved = moved.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let req = vec![7u8; REQ];
            let mut ack = [0u8; ACK];
            while Instant::now() < deadline {
                s.write_all(&req).await?;
                s.read_exact(&mut ack).await?;
                moved.fetch_add(REQ as u64, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(Moved::new(
        moved.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}

struct Setup {
    certs: tempfile::TempDir,
}

fn bench_tables() -> Vec<TableSpec> {
    vec![TableSpec {
        id: 0,
        name: "bench".into(),
        rows: ROWS,
        width: WIDTH,
        rule: UpdateRule::Add,
        // Dense values: rows of zeros would travel as sparse entries, a few bytes a reply.
        init: Init::Uniform {
            low: 0.5,
            high: 1.5,
            seed: 1,
        },
        staleness: None,
        layout: Default::default(),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }]
}

/// The bench's shard, serving `lanes` worker ids.
fn start_shard(certs: &Path, opts: &EndpointOptions, lanes: u32) -> Result<ShardHandle> {
    let shard_id = ClusterIdentity::load(&CertPaths::in_dir(certs, "shard-0"))?;
    let ep = make_endpoint(([127, 0, 0, 1], 0).into(), &shard_id, opts)?;
    Ok(serve_shard(
        ep,
        Shard::new(0, 1, &bench_tables(), lanes, false),
        Limits::default(),
    )?)
}

fn options(label: &str) -> EndpointOptions {
    let mut loopback = EndpointOptions::for_loopback();
    if let Some(m) = arg("--mtu").and_then(|m| m.parse::<u16>().ok()) {
        loopback.initial_mtu = m.min(4096);
        loopback.max_udp_payload = m;
    }
    match label {
        TUNED => loopback,
        PLAIN => EndpointOptions {
            packet_protection: PacketProtection::None,
            ..loopback
        },
        _ => EndpointOptions::default(),
    }
}

const TUNED: &str = "tuned for loopback";
/// The same, with plaintext packets after the handshake (`--packet-protection none`).
const PLAIN: &str = "tuned, plaintext packets";

/// `--serve-shard CERTS LANES LABEL`: the child side of a split run. Prints the shard's address
/// and serves until its standard input closes.
fn serve_child(certs: &str) -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--serve-shard").unwrap_or(0);
    let lanes: u32 = args.get(at + 2).and_then(|l| l.parse().ok()).unwrap_or(1);
    let label = args.get(at + 3).cloned().unwrap_or_default();
    // One runtime thread, as `ps-cluster server` runs a shard. (It was two; beside the parent's
    // two on a 2-core machine, best push 1.39-1.45 GB/s with AES-GCM against 1.72-1.74 with one.)
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let handle = start_shard(Path::new(certs), &options(&label), lanes)?;
        println!("{}", handle.addr);
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
        handle.shutdown();
        Ok(())
    })
}

/// QUIC through the shard service: `conns` workers, each keeping `streams` requests in flight;
/// the shard in this process, or (`split`) in a child process.
async fn quic(
    setup: &Setup,
    label: &str,
    pull: bool,
    conns: u32,
    streams: u32,
    secs: f64,
    split: bool,
) -> Result<Moved> {
    let opts = options(label);
    let lanes = conns * streams;
    if !split {
        let handle = start_shard(setup.certs.path(), &opts, lanes)?;
        let r = drive(setup, &opts, handle.addr, pull, conns, streams, secs).await;
        handle.shutdown();
        return r;
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-shard")
        .arg(setup.certs.path())
        .arg(lanes.to_string())
        .arg(label)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let addr: Result<SocketAddr> = line
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("shard child printed {line:?}: {e}"));
    let r = match addr {
        Ok(addr) => drive(setup, &opts, addr, pull, conns, streams, secs).await,
        Err(e) => Err(e),
    };
    drop(child.stdin.take());
    child.wait()?;
    r
}

/// The worker side: `conns` connections to the shard at `addr`, `streams` lanes each.
async fn drive(
    setup: &Setup,
    opts: &EndpointOptions,
    addr: SocketAddr,
    pull: bool,
    conns: u32,
    streams: u32,
    secs: f64,
) -> Result<Moved> {
    let worker_id = ClusterIdentity::load(&CertPaths::in_dir(setup.certs.path(), "worker-0"))?;
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let values = vec![0.5f32; (BATCH_ROWS * WIDTH as u64) as usize];
    let mut tasks = Vec::new();
    let mut conns_kept = Vec::new();
    let start = Instant::now();
    for c in 0..conns {
        let ep = make_client_endpoint(&worker_id, opts)?;
        let conn = ps_transport::connect(&ep, addr, &opts.server_name).await?;
        conns_kept.push(conn.clone());
        for s in 0..streams {
            // Each (connection, stream) lane is its own worker id so its clocks apply in order.
            let worker = c * streams + s;
            let (conn, bytes, values) = (conn.clone(), bytes.clone(), values.clone());
            let ep = ep.clone();
            tasks.push(tokio::spawn(async move {
                let _ep = ep;
                let mut clock = 0u64;
                let limits = Limits::default();
                while Instant::now() < deadline {
                    let first = (clock * BATCH_ROWS) % ROWS;
                    let keys: Vec<u64> = (first..first + BATCH_ROWS).collect();
                    let (mut send, mut recv) = conn.open_bi().await?;
                    if pull {
                        write_frame(&mut send, &FrameBuilder::pull(0, worker, 0, WIDTH, &keys))
                            .await?;
                        send.finish()?;
                        if let FrameRead::Frame(f) = read_frame(&mut recv, &limits).await? {
                            anyhow::ensure!(
                                f.header.kind == Kind::PullReply,
                                "got {:?}",
                                f.header.kind
                            );
                            bytes.fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                        }
                    } else {
                        let f = FrameBuilder::push(0, worker, clock, WIDTH, &keys, &values);
                        let payload_len = f.payload.len() as u64;
                        write_frame_owned(&mut send, f).await?;
                        write_frame(&mut send, &FrameBuilder::clock(worker, clock, 1)).await?;
                        send.finish()?;
                        match read_frame(&mut recv, &limits).await? {
                            FrameRead::Frame(a) if a.header.kind == Kind::Ack => {}
                            other => anyhow::bail!("no ack: {other:?}"),
                        }
                        bytes.fetch_add(payload_len, Ordering::Relaxed);
                    }
                    clock += 1;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    if std::env::var_os("PS_BENCH_STATS").is_some() {
        for c in &conns_kept {
            let s = c.stats();
            eprintln!("{:?}\nudp_tx {:?}\nudp_rx {:?}", s.path, s.udp_tx, s.udp_rx);
        }
    }
    Ok(Moved::new(
        bytes.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}

fn main() -> Result<()> {
    if let Some(certs) = arg("--serve-shard") {
        return serve_child(&certs);
    }
    let secs: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let repeats: usize = arg("--repeats")
        .and_then(|s| s.parse().ok())
        .filter(|&r| r >= 1)
        .unwrap_or(1);
    // `--only tuned`: the loopback settings, with and without plaintext packets; `--only plain`:
    // plaintext packets alone (for a profile of them).
    let only = arg("--only");
    let skip = |label: &str| match only.as_deref() {
        Some("tuned") => label != TUNED && label != PLAIN,
        Some("plain") => label != PLAIN,
        _ => false,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let certs = tempfile::tempdir()?;
    generate_cluster_certs(certs.path(), &["shard-0".into(), "worker-0".into()], &[])?;
    let setup = Setup { certs };
    rt.block_on(async {
        // `--profile DIR` (push or pull): skip the TCP baseline and run only that QUIC direction, for perf.
        let profile = arg("--profile");
        let nan = Run { mb_per_s: f64::NAN, cpu_s_per_gb: f64::NAN };
        let ((tcp1, tcp1_range, tcp1_cpu), tcp4, tcp_ra) = if profile.is_some() {
            ((f64::NAN, String::new(), f64::NAN), nan, nan)
        } else {
            let mut runs = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                runs.push(timed(tcp(1, secs)).await?);
            }
            (medians(&runs), timed(tcp(4, secs)).await?, timed(tcp_request_ack(1, secs)).await?)
        };
        let of = if repeats > 1 { format!("median of {repeats}") } else { String::new() };
        println!("{:<58} {:>9} {:>9} {:>9} {:>11}", "transfer (payload MB/s; 1 MB = 1e6 bytes)", "MB/s", "x TCP(1)", "CPU s/GB", of);
        println!("{:<58} {:>9.0} {:>9.2} {:>9.2} {:>11}", "raw TCP loopback, 1 connection", tcp1, 1.0, tcp1_cpu, tcp1_range);
        println!("{:<58} {:>9.0} {:>9.2} {:>9.2}", "raw TCP loopback, 4 connections", tcp4.mb_per_s, tcp4.mb_per_s / tcp1, tcp4.cpu_s_per_gb);
        println!("{:<58} {:>9.0} {:>9.2} {:>9.2}", "raw TCP loopback, 1 MiB request + ack, 1 connection", tcp_ra.mb_per_s, tcp_ra.mb_per_s / tcp1, tcp_ra.cpu_s_per_gb);
        record("transport", json!({"bench": "transport", "transport": "tcp", "conns": 1, "mb_per_s": tcp1, "cpu_s_per_gb": tcp1_cpu, "repeats": repeats}));
        record("transport", json!({"bench": "transport", "transport": "tcp-request-ack", "conns": 1, "mb_per_s": tcp_ra.mb_per_s, "cpu_s_per_gb": tcp_ra.cpu_s_per_gb}));
        record("transport", json!({"bench": "transport", "transport": "tcp", "conns": 4, "mb_per_s": tcp4.mb_per_s, "cpu_s_per_gb": tcp4.cpu_s_per_gb}));
        let mut best = 0f64;
        for label in ["quinn defaults (1200-byte packets)", TUNED, PLAIN] {
            let opts = options(label);
            if skip(label) {
                continue;
            }
            for (dir, pull) in [("push", false), ("pull", true)] {
                if profile.as_deref().is_some_and(|p| p != dir) {
                    continue;
                }
                // Both ends in this process; then, tuned and not profiling, the shard in a child.
                let tuned = label == TUNED || label == PLAIN;
                let splits: &[bool] = if profile.is_none() && tuned { &[false, true] } else { &[false] };
                for &split in splits {
                    let ends = if split { "2 processes" } else { "1 process" };
                    for (conns, streams) in [(1, 1), (1, 4), (2, 4)] {
                        let mut runs = Vec::with_capacity(repeats);
                        for _ in 0..repeats {
                            runs.push(timed(quic(&setup, label, pull, conns, streams, secs, split)).await?);
                        }
                        let (r, range, cpu) = medians(&runs);
                        best = best.max(r);
                        println!("{:<58} {:>9.0} {:>9.2} {:>9.2} {:>11}", format!("QUIC {dir}, {label}, {ends}, {conns}x{streams}"), r, r / tcp1, cpu, range);
                        let rates: Vec<f64> = runs.iter().map(|x| x.mb_per_s).collect();
                        record("transport", json!({"bench": "transport", "transport": "quic", "direction": dir, "config": label,
                            "initial_mtu": opts.initial_mtu, "processes": if split { 2 } else { 1 }, "conns": conns,
                            "streams": streams, "mb_per_s": r, "ratio_to_tcp": r / tcp1, "cpu_s_per_gb": cpu,
                            "repeats": repeats, "runs": rates}));
                    }
                }
            }
        }
        println!("best QUIC / TCP streaming: {:.2}; / TCP request+ack: {:.2}", best / tcp1, best / tcp_ra.mb_per_s);
        Ok::<_, anyhow::Error>(())
    })
}
