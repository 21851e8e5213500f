//! Link emulation under real QUIC connections on loopback.
//!
//! Timing assertions are lower bounds only: the emulator must never be faster than its link, and
//! a slow or busy machine only makes transfers slower.

use ps_transport::{
    connect, generate_cluster_certs, make_client_endpoint_with_stats, make_endpoint_with_stats,
    CertPaths, ClusterIdentity, EndpointOptions, LinkSpec, LinkStats, DEFAULT_SERVER_NAME,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest any one test may take before it counts as hung.
const HANG: Duration = Duration::from_secs(30);

struct Pair {
    _certs: tempfile::TempDir,
    server: quinn::Endpoint,
    server_stats: Option<LinkStats>,
    client: quinn::Endpoint,
    client_stats: Option<LinkStats>,
    addr: SocketAddr,
}

fn options(link: Option<&str>, seed: u64) -> EndpointOptions {
    EndpointOptions {
        link: link.map(|l| l.parse::<LinkSpec>().unwrap()),
        link_seed: Some(seed),
        ..EndpointOptions::for_loopback()
    }
}

/// A server that answers every bi stream with the length and FNV-1a hash of what it read, and a
/// client endpoint; each end sends through its own link, if any.
fn pair(server_link: Option<&str>, client_link: Option<&str>) -> Pair {
    let certs = tempfile::tempdir().unwrap();
    let names = vec!["server".to_string(), "client".to_string()];
    generate_cluster_certs(certs.path(), &names, &[]).unwrap();
    let id = |n: &str| ClusterIdentity::load(&CertPaths::in_dir(certs.path(), n)).unwrap();
    let (server, server_stats) = make_endpoint_with_stats(
        ([127, 0, 0, 1], 0).into(),
        &id("server"),
        &options(server_link, 11),
    )
    .unwrap();
    let (client, client_stats) =
        make_client_endpoint_with_stats(&id("client"), &options(client_link, 22)).unwrap();
    assert_eq!(server_stats.is_some(), server_link.is_some());
    assert_eq!(client_stats.is_some(), client_link.is_some());
    let addr = server.local_addr().unwrap();
    let accept = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let data = recv.read_to_end(64 << 20).await.unwrap();
                        let mut reply = (data.len() as u64).to_le_bytes().to_vec();
                        reply.extend(fnv(&data).to_le_bytes());
                        send.write_all(&reply).await.unwrap();
                        send.finish().unwrap();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    Pair {
        _certs: certs,
        server,
        server_stats,
        client,
        client_stats,
        addr,
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Incompressible-looking test data.
fn data(len: usize) -> Vec<u8> {
    let mut s = 0x1234_5678_9abc_def1u64;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Sends `payload` on a new bi stream and checks the server saw exactly it.
async fn round_trip(conn: &quinn::Connection, payload: &[u8]) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(payload).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(64).await.unwrap();
    assert_eq!(reply.len(), 16);
    assert_eq!(
        u64::from_le_bytes(reply[..8].try_into().unwrap()),
        payload.len() as u64
    );
    assert_eq!(
        u64::from_le_bytes(reply[8..].try_into().unwrap()),
        fnv(payload),
        "payload corrupted"
    );
}

async fn connected(p: &Pair) -> quinn::Connection {
    connect(&p.client, p.addr, DEFAULT_SERVER_NAME)
        .await
        .unwrap()
}

/// 4 MB through a 50 Mbit/s link cannot take less than 4e6 x 8 / 50e6 = 0.64 s (QUIC and UDP/IP
/// headers only add to that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_bounds_a_transfer() {
    tokio::time::timeout(HANG, async {
        let p = pair(Some("50mbit,100us"), Some("50mbit,100us"));
        let conn = connected(&p).await;
        let payload = data(4_000_000);
        let start = Instant::now();
        round_trip(&conn, &payload).await;
        let took = start.elapsed();
        let floor = Duration::from_secs_f64(4e6 * 8.0 / 50e6);
        let stats = p.client_stats.as_ref().unwrap();
        println!(
            "4 MB over 50mbit: {took:.3?} (floor {floor:.3?}, {:.1} Mbit/s goodput); client link: {stats}",
            4e6 * 8.0 / took.as_secs_f64() / 1e6
        );
        assert!(
            took + Duration::from_millis(5) >= floor,
            "4 MB over 50 Mbit/s in {took:?}, faster than the link"
        );
        assert!(stats.sent_bytes() >= 4_000_000);
        drop(p.server);
    })
    .await
    .unwrap();
}

/// With 5 ms one-way latency at both ends, a request reaches the server no sooner than 5 ms after
/// it is sent and the reply reaches the client no sooner than 5 ms after that: every request/reply
/// round trip, and the handshake (its first round trip), takes at least 10 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_bounds_a_round_trip() {
    tokio::time::timeout(HANG, async {
        let p = pair(Some("1gbit,5ms"), Some("1gbit,5ms"));
        let start = Instant::now();
        let conn = connected(&p).await;
        let handshake = start.elapsed();
        round_trip(&conn, b"warm up").await;
        let mut rtts = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            round_trip(&conn, b"ping").await;
            rtts.push(start.elapsed());
        }
        println!(
            "5 ms each way: handshake {handshake:.3?}, request/reply {rtts:.3?}, quinn rtt {:?}",
            conn.rtt()
        );
        let floor = Duration::from_millis(10);
        assert!(handshake >= floor, "handshake in {handshake:?}");
        for rtt in rtts {
            assert!(rtt >= floor, "round trip in {rtt:?}, under 2 x 5 ms");
        }
        assert!(conn.rtt() >= floor, "quinn measured rtt {:?}", conn.rtt());
        drop(p.server);
    })
    .await
    .unwrap();
}

/// The link, 1 Gbit/s with 100 us one-way: a round trip takes at least 200 us (finer than
/// tokio's millisecond timers, which is why delivery runs on its own thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_millisecond_latency() {
    tokio::time::timeout(HANG, async {
        let p = pair(Some("1gbit,100us,0.0"), Some("1gbit,100us,0.0"));
        let conn = connected(&p).await;
        round_trip(&conn, b"warm up").await;
        let mut rtts = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            round_trip(&conn, b"ping").await;
            rtts.push(start.elapsed());
        }
        rtts.sort();
        println!(
            "100 us each way: request/reply min {:.0?} median {:.0?} max {:.0?}",
            rtts[0],
            rtts[rtts.len() / 2],
            rtts[rtts.len() - 1]
        );
        assert!(rtts[0] >= Duration::from_micros(200), "{rtts:?}");
        drop(p.server);
    })
    .await
    .unwrap();
}

/// 2% loss each way: QUIC retransmits and the transfer arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_survives_random_loss() {
    tokio::time::timeout(HANG, async {
        let p = pair(Some("100mbit,1ms,0.02"), Some("100mbit,1ms,0.02"));
        let conn = connected(&p).await;
        let payload = data(2_000_000);
        let start = Instant::now();
        round_trip(&conn, &payload).await;
        let took = start.elapsed();
        let (c, s) = (
            p.client_stats.as_ref().unwrap(),
            p.server_stats.as_ref().unwrap(),
        );
        println!(
            "2 MB over 100mbit with 2% loss: {took:.3?}; client link: {c}; server link: {s}; \
             quinn lost {} packets",
            conn.stats().path.lost_packets
        );
        assert!(c.dropped_loss() > 0, "client link dropped nothing: {c}");
        assert!(took >= Duration::from_secs_f64(2e6 * 8.0 / 100e6));
        drop(p.server);
    })
    .await
    .unwrap();
}

/// A queue of 16 KiB behind a 20 Mbit/s, 1 ms link (a quarter of the default) overflows as the
/// congestion window grows: tail drops happen and QUIC still delivers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_drop_with_tiny_queue() {
    tokio::time::timeout(HANG, async {
        let p = pair(Some("20mbit,1ms"), Some("20mbit,1ms,0,16kib"));
        let conn = connected(&p).await;
        let payload = data(2_000_000);
        let start = Instant::now();
        round_trip(&conn, &payload).await;
        let took = start.elapsed();
        let c = p.client_stats.as_ref().unwrap();
        println!(
            "2 MB over 20mbit with a 16 KiB queue: {took:.3?} ({:.1} Mbit/s goodput); client link: {c}; \
             quinn lost {} packets, cwnd {}",
            2e6 * 8.0 / took.as_secs_f64() / 1e6,
            conn.stats().path.lost_packets,
            conn.stats().path.cwnd
        );
        assert!(c.dropped_queue() > 0, "no tail drop: {c}");
        assert_eq!(c.dropped_loss(), 0);
        assert!(took >= Duration::from_secs_f64(2e6 * 8.0 / 20e6));
        drop(p.server);
    })
    .await
    .unwrap();
}

/// An endpoint without a link reports no link counters and behaves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_is_plain_quic() {
    tokio::time::timeout(HANG, async {
        let p = pair(None, None);
        assert!(p.client_stats.is_none() && p.server_stats.is_none());
        let conn = connected(&p).await;
        round_trip(&conn, &data(100_000)).await;
        drop(p.server);
    })
    .await
    .unwrap();
}
