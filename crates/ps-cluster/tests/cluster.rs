//! Cluster tests over real QUIC on loopback with mutual TLS: the SSP read guarantee and bound
//! with a deliberately slow worker, rows spanning shards, bad frames, peers without a cluster
//! certificate, and whole jobs through the `ps-cluster` binary (determinism, failure naming).

mod common;

use common::{ps_cluster, summary};
use ps_client::{ClientConfig, PsClient};
use ps_proto::{
    ErrorCode, FrameBuilder, Init, Kind, Limits, RawHeader, ShardMap, TableSpec, UpdateRule, MAGIC,
};
use ps_server::{serve_shard, Shard, ShardHandle};
use ps_transport::{
    generate_cluster_certs, make_client_endpoint, make_endpoint, read_frame, CertPaths,
    ClusterIdentity, EndpointOptions, FrameRead,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct TestCluster {
    rt: tokio::runtime::Runtime,
    shards: Vec<ShardHandle>,
    map: ShardMap,
    certs: tempfile::TempDir,
}

fn table(id: u32, rows: u64, width: u32, staleness: Option<u64>) -> TableSpec {
    TableSpec {
        id,
        name: format!("t{id}"),
        rows,
        width,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness,
        layout: Default::default(),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

impl TestCluster {
    fn start(
        shards: u32,
        workers: u32,
        tables: Vec<TableSpec>,
        deterministic: bool,
    ) -> TestCluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let certs = tempfile::tempdir().unwrap();
        let mut names: Vec<String> = (0..shards).map(|i| format!("shard-{i}")).collect();
        names.extend((0..workers + 2).map(|i| format!("worker-{i}")));
        generate_cluster_certs(certs.path(), &names, &[]).unwrap();
        let mut handles = Vec::new();
        for i in 0..shards {
            let id = ClusterIdentity::load(&CertPaths::in_dir(certs.path(), &format!("shard-{i}")))
                .unwrap();
            let _g = rt.enter();
            let ep = make_endpoint(
                ([127, 0, 0, 1], 0).into(),
                &id,
                &EndpointOptions::for_loopback(),
            )
            .unwrap();
            let shard = Shard::new(i, shards, &tables, workers, deterministic);
            handles.push(serve_shard(ep, shard, Limits::default()).unwrap());
        }
        let map = ShardMap {
            shards: handles.iter().map(|h| h.addr.to_string()).collect(),
            tables,
        };
        TestCluster {
            rt,
            shards: handles,
            map,
            certs,
        }
    }

    fn identity(&self, name: &str) -> ClusterIdentity {
        ClusterIdentity::load(&CertPaths::in_dir(self.certs.path(), name)).unwrap()
    }

    fn client(&self, worker: u32, workers: u32) -> PsClient {
        self.client_with(worker, workers, |_| {})
    }

    fn client_with(
        &self,
        worker: u32,
        workers: u32,
        f: impl FnOnce(&mut ClientConfig),
    ) -> PsClient {
        let id = self.identity(&format!("worker-{worker}"));
        let ep = {
            let _g = self.rt.enter();
            make_client_endpoint(&id, &EndpointOptions::for_loopback()).unwrap()
        };
        let mut cfg = ClientConfig::new(worker, workers, self.map.clone());
        f(&mut cfg);
        PsClient::connect(self.rt.handle().clone(), &ep, cfg).unwrap()
    }

    /// The whole table, gathered from every shard's slice.
    fn table(&self, id: u32) -> Vec<f32> {
        self.shards
            .iter()
            .flat_map(|s| s.snapshot(id).unwrap())
            .collect()
    }
}

/// (a) Each worker adds 1 to its own cell (worker, clock) every clock; every read checks that all
/// cells of clocks <= c - s - 1 are there, that all its own cells are there, and that no worker
/// ever got more than s clocks ahead of the slowest. Worker 1 is slowed down.
fn run_ssp_guarantee(staleness: Option<u64>) -> u64 {
    run_ssp_guarantee_with(staleness, None)
}

/// [`run_ssp_guarantee`]; with `dies = Some((p, d))` worker `p` stops at clock `d` (its clocks
/// before `d` pushed) and every shard evicts it: the guarantee and the bound must then hold
/// over the live workers, and the others must finish.
fn run_ssp_guarantee_with(staleness: Option<u64>, dies: Option<(u32, u64)>) -> u64 {
    const WORKERS: u32 = 3;
    const CLOCKS: u64 = 8;
    let cluster = TestCluster::start(
        2,
        WORKERS,
        vec![table(7, WORKERS as u64, CLOCKS as u32, staleness)],
        false,
    );
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let max_lead = Arc::new(AtomicU64::new(0));
    let rows: Vec<u64> = (0..WORKERS as u64).collect();
    std::thread::scope(|scope| {
        for p in 0..WORKERS {
            let mut client = cluster.client(p, WORKERS);
            let (done, max_lead, rows) = (done.clone(), max_lead.clone(), rows.clone());
            let cluster = &cluster;
            scope.spawn(move || {
                for c in 0..CLOCKS {
                    if dies == Some((p, c)) {
                        client.flush().unwrap();
                        // Gone: the slowest live worker is another one.
                        done[p as usize].store(u64::MAX, Ordering::SeqCst);
                        for s in &cluster.shards {
                            s.evict(p).unwrap();
                        }
                        return;
                    }
                    if p == 1 {
                        std::thread::sleep(Duration::from_millis(25));
                    }
                    let mut t = client.table(7).unwrap();
                    let v = t.read_rows(&rows).unwrap();
                    let slowest = done.iter().map(|d| d.load(Ordering::SeqCst)).min().unwrap();
                    max_lead.fetch_max(c.saturating_sub(slowest), Ordering::SeqCst);
                    if let Some(s) = staleness {
                        assert!(slowest + s >= c, "worker {p} read at clock {c} while the slowest had done {slowest} (s={s})");
                    }
                    for q in 0..WORKERS as usize {
                        for k in 0..CLOCKS as usize {
                            let cell = v[q * CLOCKS as usize + k];
                            assert!(cell == 0.0 || cell == 1.0, "cell ({q},{k}) = {cell}");
                            let died_before = dies.is_some_and(|(d, at)| d == q as u32 && k as u64 >= at);
                            let required = !died_before && (match staleness {
                                Some(s) => (k as u64) + s < c,
                                None => false,
                            } || (q as u32 == p && (k as u64) < c));
                            if required {
                                assert_eq!(cell, 1.0, "worker {p} at clock {c}: missing update of worker {q} clock {k} (s={staleness:?})");
                            }
                        }
                    }
                    t.inc(p as u64, c as u32, 1.0).unwrap();
                    // Read-my-writes within the clock.
                    assert_eq!(t.read_row(p as u64).unwrap()[c as usize], 1.0);
                    done[p as usize].store(c + 1, Ordering::SeqCst);
                    client.clock().unwrap();
                }
                client.flush().unwrap();
                let all = client.table(7).unwrap().read_rows_synced(&rows).unwrap();
                assert_eq!(all, expected(dies), "final table");
            });
        }
    });
    assert_eq!(cluster.table(7), expected(dies));
    max_lead.load(Ordering::SeqCst)
}

/// The final table of [`run_ssp_guarantee_with`]: every cell 1 but a dead worker's from its
/// death on.
fn expected(dies: Option<(u32, u64)>) -> Vec<f32> {
    let (workers, clocks) = (3u32, 8u64);
    (0..workers)
        .flat_map(|q| (0..clocks).map(move |k| (q, k)))
        .map(|(q, k)| match dies {
            Some((d, at)) if d == q && k >= at => 0.0,
            _ => 1.0,
        })
        .collect()
}

/// A worker that dies is evicted from every shard's clock vector: the live ones keep the read
/// guarantee and the staleness bound among themselves and finish.
#[test]
fn ssp_read_guarantee_holds_for_the_live_workers_after_an_eviction() {
    assert!(run_ssp_guarantee_with(Some(1), Some((2, 3))) <= 1);
    assert_eq!(run_ssp_guarantee_with(Some(0), Some((0, 2))), 0);
}

#[test]
fn ssp_read_guarantee_and_bound_staleness_0() {
    assert_eq!(run_ssp_guarantee(Some(0)), 0);
}

#[test]
fn ssp_read_guarantee_and_bound_staleness_2() {
    assert!(run_ssp_guarantee(Some(2)) <= 2);
}

#[test]
fn ssp_read_guarantee_unbounded() {
    let lead = run_ssp_guarantee(None);
    eprintln!("unbounded staleness: fastest worker led the slowest by up to {lead} clocks");
}

/// (c) Rows that span shards route to their shard and read back, with requests split into
/// several frames.
#[test]
fn rows_spanning_shards_route_and_read_back() {
    let cluster = TestCluster::start(3, 1, vec![table(2, 10, 3, Some(0))], false);
    let mut client = cluster.client_with(0, 1, |c| c.max_frame_body = 40);
    let mut t = client.table(2).unwrap();
    for r in 0..10u64 {
        t.inc_row(r, &[r as f32, r as f32 + 0.5, -(r as f32)])
            .unwrap();
    }
    assert!(t.inc_row(10, &[0.0; 3]).is_err());
    assert!(t.inc_row(1, &[0.0; 2]).is_err());
    assert!(t.inc(1, 3, 1.0).is_err());
    client.clock().unwrap();
    let keys = [9u64, 0, 5, 4, 7, 3];
    let v = client.table(2).unwrap().read_rows(&keys).unwrap();
    for (i, r) in keys.iter().enumerate() {
        assert_eq!(
            &v[i * 3..i * 3 + 3],
            &[*r as f32, *r as f32 + 0.5, -(*r as f32)],
            "row {r}"
        );
    }
    client.flush().unwrap();
    for (s, h) in cluster.shards.iter().enumerate() {
        let range = ShardMap::range_of(10, 3, s as u32);
        let expect: Vec<f32> = (range.start..range.end)
            .flat_map(|r| [r as f32, r as f32 + 0.5, -(r as f32)])
            .collect();
        assert_eq!(
            h.snapshot(2).unwrap(),
            expect,
            "shard {s} holds rows {range:?}"
        );
    }
}

/// Two workers push through a lossy codec (top-k with error feedback, f16) and read rows whose
/// key lists repeat (so they go by key-cache reference after the first clock), over 2 shards.
/// Every worker sees its own updates whole (read-my-writes covers the residual); the shards hold
/// exactly what was sent (each cell is an f16 value or sum of them); after enough clocks of zero
/// updates the residual drains and the shards hold every update.
#[test]
fn compressed_pushes_and_cached_keys_lose_nothing() {
    let mut spec = table(4, 200, 4, Some(0));
    spec.push_codec = "topk:0.05,f16".parse().unwrap();
    spec.pull_codec = "f16".parse().unwrap();
    let cluster = TestCluster::start(2, 2, vec![spec], false);
    // Every third row: never a range, so the lists go through the key cache.
    let rows: Vec<u64> = (0..200).step_by(3).collect();
    let value =
        |w: u32, r: u64, c: usize| ((r as f32) * 0.25 + c as f32) * if w == 0 { 1.0 } else { -0.5 };
    let clocks = 40u64;
    let run = |w: u32| {
        let mut client = cluster.client(w, 2);
        let mut sent = 0u64;
        for clock in 0..clocks {
            let mut t = client.table(4).unwrap();
            let seen = t.read_rows(&rows).unwrap();
            if clock == 1 {
                // Own clock-0 update whole (residual included); of the other worker's, only
                // what its top-k sent: each cell either nothing or its f16 value.
                for (i, &r) in rows.iter().enumerate() {
                    for c in 0..4 {
                        let other = seen[i * 4 + c] - value(w, r, c);
                        let theirs = value(1 - w, r, c);
                        assert!(
                            other.abs() <= 0.01
                                || (other - theirs).abs() <= 0.01 * theirs.abs().max(1.0),
                            "worker {w} row {r} col {c}: saw {} with own {}",
                            seen[i * 4 + c],
                            value(w, r, c)
                        );
                    }
                }
            }
            if clock == 0 {
                for &r in &rows {
                    let d: Vec<f32> = (0..4).map(|c| value(w, r, c)).collect();
                    t.inc_row(r, &d).unwrap();
                }
            }
            client.clock().unwrap();
            sent = clock;
        }
        client.flush().unwrap();
        let last = client.table(4).unwrap().read_rows_synced(&rows).unwrap();
        let mut reports = client.take_reports().unwrap();
        let (mut pull_bytes, mut counted) = (0, 0);
        while let Ok(r) = reports.try_recv() {
            if r.clock >= 2 {
                pull_bytes += r.bytes_sent - r.push_bytes;
                counted += 1;
            }
        }
        // From clock 2 on, each pull request names its 33 or 34 keys by cache reference (a
        // header and 16 bytes, not 8 bytes a key). The push lists change every clock, so they
        // are never stored and cannot take the cache's in-flight slot (which used to send the
        // odd pull listed, timing-dependent).
        assert!(counted > 30);
        let listed = counted * 2 * (ps_proto::HEADER_LEN as u64 + 8 * 34);
        assert!(
            pull_bytes * 3 < listed,
            "{pull_bytes} bytes of pull requests over {counted} clocks, {listed} listed"
        );
        (sent, last)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(0));
        let b = s.spawn(|| run(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.0, clocks - 1);
    let full = cluster.table(4);
    for (i, &r) in rows.iter().enumerate() {
        for c in 0..4 {
            let want = value(0, r, c) + value(1, r, c);
            let got = full[r as usize * 4 + c];
            // Every cell was sent in the end (f16 rounding of each sent part aside).
            assert!(
                (got - want).abs() <= 0.01 * want.abs().max(1.0),
                "row {r} col {c}: shard holds {got}, pushed {want}"
            );
            // The final reads went through f16 pull replies.
            assert!((a.1[i * 4 + c] - got).abs() <= 0.002 * got.abs().max(1.0));
            assert!((b.1[i * 4 + c] - got).abs() <= 0.002 * got.abs().max(1.0));
        }
    }
    for r in (1..200).step_by(3) {
        assert_eq!(
            &full[r * 4..r * 4 + 4],
            &[0.0; 4],
            "row {r} was never pushed"
        );
    }
}

fn raw_header(kind: u16) -> RawHeader {
    RawHeader {
        magic: MAGIC,
        version: 1,
        kind,
        table: 1,
        codec: 0,
        flags: 0,
        clock: 0,
        aux: 0,
        worker: 1,
        key_count: 0,
        width: 0,
        reserved: 0,
        payload_len: 0,
    }
}

/// Sends `bytes` on a fresh stream and returns the error code the shard answers with.
async fn send_raw(conn: &quinn::Connection, bytes: Vec<u8>) -> Option<ErrorCode> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&bytes).await;
    let _ = send.finish();
    match tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut recv, &Limits::default()),
    )
    .await
    {
        Ok(Ok(FrameRead::Frame(f))) => f.error_parts().and_then(|(c, _)| c),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// (d) Every kind of bad frame gets an error answer, changes no table, and the shard keeps
/// serving a well-behaved client at the same time.
#[test]
fn bad_frames_get_errors_and_change_nothing() {
    // Table 1 is unbounded so the good worker 0 never waits for "worker 1", the bad client.
    let cluster = TestCluster::start(2, 2, vec![table(1, 10, 4, None)], false);
    let good = {
        let mut client = cluster.client(0, 2);
        std::thread::spawn(move || {
            for c in 0..40u64 {
                let mut t = client.table(1).unwrap();
                t.inc_row(c % 10, &[1.0; 4]).unwrap();
                client.clock().unwrap();
                let v = client
                    .table(1)
                    .unwrap()
                    .read_rows(&(0..10).collect::<Vec<_>>())
                    .unwrap();
                let total: f32 = v.iter().sum();
                assert_eq!(total, 4.0 * (c + 1) as f32, "read-my-writes at clock {c}");
            }
            client.flush().unwrap();
        })
    };
    let id = cluster.identity("worker-1");
    let addr: std::net::SocketAddr = cluster.map.shards[0].parse().unwrap();
    let codes = cluster.rt.block_on(async {
        let ep = make_client_endpoint(&id, &EndpointOptions::for_loopback()).unwrap();
        let conn = ps_transport::connect(&ep, addr, ps_transport::DEFAULT_SERVER_NAME)
            .await
            .unwrap();
        let mut codes = Vec::new();
        let bytes_of = |h: RawHeader, body: &[u8]| {
            let mut b = bytemuck::bytes_of(&h).to_vec();
            b.extend_from_slice(body);
            b
        };
        // Truncated header.
        codes.push((
            "truncated header",
            send_raw(&conn, bytes_of(raw_header(3), &[])[..20].to_vec()).await,
        ));
        // Truncated body: a pull of 2 keys with one key's bytes.
        let mut h = raw_header(Kind::Pull as u16);
        h.width = 4;
        h.key_count = 2;
        codes.push((
            "truncated body",
            send_raw(&conn, bytes_of(h, &[0u8; 8])).await,
        ));
        let mut h = raw_header(Kind::Pull as u16);
        h.magic = 0x1234_5678;
        codes.push(("wrong magic", send_raw(&conn, bytes_of(h, &[])).await));
        let mut h = raw_header(Kind::Pull as u16);
        h.version = 2;
        codes.push(("wrong version", send_raw(&conn, bytes_of(h, &[])).await));
        codes.push((
            "unknown kind",
            send_raw(&conn, bytes_of(raw_header(77), &[])).await,
        ));
        let pull = FrameBuilder::pull(9, 1, 0, 4, &[0]);
        codes.push(("unknown table", send_raw(&conn, pull.encode()).await));
        // A batch with a good push then a bad one: nothing of it may land.
        let good_push = FrameBuilder::push(1, 1, 0, 4, &[1], &[100.0; 4]);
        let far_key = FrameBuilder::push(1, 1, 0, 4, &[4], &[100.0; 4]); // shard 0 holds rows 0..5
        let out_of_range = FrameBuilder::push(1, 1, 0, 4, &[7], &[100.0; 4]);
        let mut b = good_push.encode();
        b.extend(far_key.encode());
        b.extend(out_of_range.encode());
        b.extend(FrameBuilder::clock(1, 0, 3).encode());
        codes.push(("key out of range", send_raw(&conn, b).await));
        let mut b = good_push.encode();
        b.extend(FrameBuilder::push(1, 1, 0, 3, &[2], &[100.0; 3]).encode());
        b.extend(FrameBuilder::clock(1, 0, 2).encode());
        codes.push(("wrong width", send_raw(&conn, b).await));
        let mut h = raw_header(Kind::Push as u16);
        h.codec = 1;
        h.width = 1024;
        h.key_count = 1 << 20;
        h.payload_len = (1u64 << 20) * 1024 * 4;
        codes.push((
            "declared length over the cap",
            send_raw(&conn, bytes_of(h, &[0u8; 64])).await,
        ));
        // A batch larger than the shard (20 cells): a runaway or hostile peer.
        let mut b = Vec::new();
        for _ in 0..6 {
            b.extend(good_push.encode());
        }
        codes.push(("batch larger than the shard", send_raw(&conn, b).await));
        // A batch that ends without its clock frame.
        codes.push((
            "batch without clock",
            send_raw(&conn, good_push.encode()).await,
        ));
        // A pull that is fine still works on the same connection.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&FrameBuilder::pull(1, 1, 0, 4, &[0, 3]).encode())
            .await
            .unwrap();
        send.finish().unwrap();
        match read_frame(&mut recv, &Limits::default()).await.unwrap() {
            FrameRead::Frame(f) => assert_eq!(f.header.kind, Kind::PullReply),
            FrameRead::End => panic!("no reply"),
        }
        codes
    });
    good.join().unwrap();
    let expect = [
        ErrorCode::Truncated,
        ErrorCode::Truncated,
        ErrorCode::BadMagic,
        ErrorCode::BadVersion,
        ErrorCode::UnknownKind,
        ErrorCode::UnknownTable,
        ErrorCode::KeyOutOfRange,
        ErrorCode::WrongWidth,
        ErrorCode::TooLarge,
        ErrorCode::TooLarge,
        ErrorCode::Protocol,
    ];
    assert_eq!(codes.len(), expect.len());
    for ((what, got), want) in codes.iter().zip(expect) {
        assert_eq!(*got, Some(want), "{what}");
    }
    // The table holds exactly the good worker's updates: 40 clocks of +1 over 10 rows.
    let t = cluster.table(1);
    assert!(
        t.iter().all(|v| *v == 4.0),
        "table changed by bad frames: {t:?}"
    );
}

/// (e) A client whose certificate is not from the cluster CA, or that has none, gets no data.
#[test]
fn client_without_cluster_certificate_gets_nothing() {
    let cluster = TestCluster::start(1, 1, vec![table(1, 4, 2, Some(0))], false);
    let rogue_dir = tempfile::tempdir().unwrap();
    generate_cluster_certs(rogue_dir.path(), &["mallory".to_string()], &[]).unwrap();
    let rogue = ClusterIdentity::load(&CertPaths::in_dir(rogue_dir.path(), "mallory")).unwrap();
    let real = cluster.identity("worker-0");
    // Trusts the real CA (so it accepts the shard) but presents a certificate from another CA.
    let foreign_cert = ClusterIdentity {
        roots: real.roots.clone(),
        chain: rogue.chain.clone(),
        key: rogue.key.clone_key(),
    };
    let addr: std::net::SocketAddr = cluster.map.shards[0].parse().unwrap();
    let transport = Arc::new(quinn::TransportConfig::default());
    let no_cert = {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(real.roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![ps_proto::ALPN.to_vec()];
        ps_transport::client_config(c, transport.clone()).unwrap()
    };
    let foreign =
        ps_transport::client_config(foreign_cert.client_config().unwrap(), transport).unwrap();
    for (what, cfg) in [
        ("no certificate", no_cert),
        ("certificate from another CA", foreign),
    ] {
        let got = cluster.rt.block_on(async {
            let mut ep = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
            ep.set_default_client_config(cfg);
            let attempt = async {
                let conn = ps_transport::connect(&ep, addr, ps_transport::DEFAULT_SERVER_NAME)
                    .await
                    .ok()?;
                let (mut send, mut recv) = conn.open_bi().await.ok()?;
                send.write_all(&FrameBuilder::pull(1, 0, 0, 2, &[0]).encode())
                    .await
                    .ok()?;
                send.finish().ok()?;
                match read_frame(&mut recv, &Limits::default()).await {
                    Ok(FrameRead::Frame(f)) => Some(f),
                    _ => None,
                }
            };
            tokio::time::timeout(Duration::from_secs(10), attempt)
                .await
                .ok()
                .flatten()
        });
        assert!(got.is_none(), "{what}: the shard answered {got:?}");
    }
    // A client with a cluster certificate is served.
    let mut ok = cluster.client(0, 1);
    assert_eq!(ok.table(1).unwrap().read_row(0).unwrap(), vec![0.0, 0.0]);
}

/// The main job, as the README runs it, reaches the noise floor.
#[test]
fn local_mf_job_reaches_the_noise_floor() {
    let out = ps_cluster(&["local", "--app", "mf"]);
    let s = summary(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("clock")).count(),
        20,
        "{stdout}"
    );
    for key in [
        "app",
        "servers",
        "workers",
        "staleness",
        "clocks",
        "wall_s",
        "compute_s",
        "comm_s",
        "blocked_s",
        "bytes_sent",
        "bytes_received",
        "train_rmse",
        "test_rmse",
        "noise_sigma",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
    assert_eq!(
        (s["servers"].as_u64(), s["workers"].as_u64()),
        (Some(2), Some(2))
    );
    let (rmse, sigma) = (
        s["test_rmse"].as_f64().unwrap(),
        s["noise_sigma"].as_f64().unwrap(),
    );
    assert!(
        rmse <= 1.15 * sigma,
        "test_rmse {rmse} above 1.15 x sigma {sigma}"
    );
    assert!(s["bytes_sent"].as_u64().unwrap() > 0);
}

/// (b) --deterministic gives bit-identical item tables in two runs with one seed.
#[test]
fn deterministic_runs_are_bit_identical() {
    let args = [
        "local",
        "--app",
        "mf",
        "--deterministic",
        "--clocks",
        "6",
        "--seed",
        "7",
        "--workers",
        "3",
        "--slow-worker",
        "1:20",
    ];
    let a = summary(&ps_cluster(&args));
    let b = summary(&ps_cluster(&args));
    assert_eq!(a["item_table_hash"], b["item_table_hash"]);
    assert!(a["item_table_hash"].is_string());
    assert!(
        !ps_cluster(&["local", "--deterministic", "--staleness", "2"])
            .status
            .success()
    );
}

/// SSP through the whole stack: bounded staleness with a straggler trains to near the noise
/// floor, and asynchronous mode still trains. Without a bound the outcome depends on how the
/// two workers are scheduled: on a loaded machine the fast worker may finish its clocks before
/// the slow one has pushed much, and its users then fit an item table the slow worker goes on
/// to move. That fully separated schedule, forced with `--slow-worker 1:100` (or `1:300`), ends
/// at 1.650 x sigma (`0:100`: 1.673 x); a CI run under a parallel build hit it with `1:20`;
/// unloaded `1:20` gives 1.06 x. So the asynchronous run is held to 2 x sigma, the bounded one
/// to 1.3 x.
#[test]
fn local_jobs_with_staleness_and_a_straggler() {
    for (staleness, bound) in [("2", 1.3), ("inf", 2.0)] {
        let s = summary(&ps_cluster(&[
            "local",
            "--staleness",
            staleness,
            "--slow-worker",
            "1:20",
        ]));
        assert_eq!(s["staleness"], staleness);
        let (rmse, sigma) = (
            s["test_rmse"].as_f64().unwrap(),
            s["noise_sigma"].as_f64().unwrap(),
        );
        assert!(
            rmse <= bound * sigma,
            "staleness {staleness}: test_rmse {rmse}"
        );
    }
}

/// An emulated link on every worker-shard path still trains, and the summary says which link.
#[test]
fn local_job_over_an_emulated_link() {
    let s = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--link",
        "200mbit,1ms,0.001",
    ]));
    assert_eq!(s["link"], "200mbit,1ms,0.001");
    assert!(s["test_rmse"].as_f64().unwrap() < 0.12, "{s}");
    assert!(!ps_cluster(&["local", "--link", "fast"]).status.success());
}

/// Codec flags reach the tables: the summary names them and counts what they saved (the last
/// clock's dense send of the residual included); a bad chain is refused before anything starts.
#[test]
fn local_job_with_codecs_reports_compression() {
    let s = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--push-codec",
        "topk:0.01,sign",
        "--pull-codec",
        "f16",
    ]));
    assert_eq!(s["push_codec"], "topk:0.01,sign");
    assert_eq!(s["pull_codec"], "f16");
    let ratio = s["push_compression_ratio"].as_f64().unwrap();
    assert!(ratio > 50.0, "{s}");
    let (push, logical) = (
        s["push_bytes"].as_u64().unwrap(),
        s["push_bytes_logical"].as_u64().unwrap(),
    );
    assert!(push > 0 && push * 50 < logical, "{s}");
    assert!(s["test_rmse"].as_f64().unwrap().is_finite());
    let raw = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--pull-codec",
        "f16",
    ]));
    assert!(raw["test_rmse"].as_f64().unwrap() < 0.13, "{raw}");
    // f16 pull replies: half the value bytes of raw ones.
    let raw32 = summary(&ps_cluster(&["local", "--clocks", "10"]));
    assert!(
        raw["bytes_received"].as_u64().unwrap() * 10
            < raw32["bytes_received"].as_u64().unwrap() * 6,
        "{raw} {raw32}"
    );
    for bad in [["--push-codec", "topk:2.0"], ["--pull-codec", "topk:0.1"]] {
        let out = ps_cluster(&["local", bad[0], bad[1]]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad[1]));
    }
}

/// The compression issue 13 asks for, kept from regressing: on MF at the default clocks, top-k
/// with the scaled sign format sends over 25x fewer push bytes than raw at about raw's test
/// RMSE; the final figures are of the shards' model (the last clock sent the residual, and what
/// was left is reported, not counted in).
#[test]
fn sign_and_top_k_keep_mf_quality_at_a_fraction_of_the_bytes() {
    let run = |codec: &str| {
        summary(&ps_cluster(&[
            "local",
            "--deterministic",
            "--push-codec",
            codec,
        ]))
    };
    let raw = run("raw");
    let lossy = run("topk:0.15,warmup:1,sign");
    let bytes = |s: &serde_json::Value| s["push_bytes"].as_u64().unwrap();
    let rmse = |s: &serde_json::Value| s["test_rmse"].as_f64().unwrap();
    assert!(bytes(&lossy) * 25 < bytes(&raw), "{lossy} {raw}");
    assert!(rmse(&lossy) < rmse(&raw) * 1.01, "{lossy} {raw}");
    assert!(
        lossy["unsent_residual_l1"].as_f64().unwrap() > 0.0,
        "{lossy}"
    );
    assert!(raw.get("unsent_residual_l1").is_none(), "{raw}");
    let q4 = run("q4");
    assert!(bytes(&q4) * 7 < bytes(&raw), "{q4}");
    assert!(rmse(&q4) < rmse(&raw) * 1.01, "{q4} {raw}");
    // Block-quantized pull replies through the shard service: a quarter of raw's bytes received.
    let q8_pulls = summary(&ps_cluster(&[
        "local",
        "--deterministic",
        "--pull-codec",
        "q8",
    ]));
    let received = |s: &serde_json::Value| s["bytes_received"].as_u64().unwrap();
    assert!(received(&q8_pulls) * 3 < received(&raw), "{q8_pulls} {raw}");
    assert!(rmse(&q8_pulls) < rmse(&raw) * 1.01, "{q8_pulls} {raw}");
}

/// A worker that dies fails the job with a message naming it.
#[test]
fn a_dead_worker_fails_the_job_naming_it() {
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "50",
        "--fault",
        "1:3:crash",
        "--on-worker-failure",
        "fail",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job failed: worker-1 (pid"), "{stderr}");
}

/// A worker that hangs (alive but silent) is caught by the coordinator's heartbeat watch, which
/// fails the job naming it.
#[test]
fn a_hung_worker_fails_the_job_by_heartbeat() {
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "50",
        "--heartbeat-timeout",
        "1",
        "--fault",
        "0:2:hang",
        "--on-worker-failure",
        "fail",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job failed: worker 0 (pid") && stderr.contains("missed heartbeats"),
        "{stderr}"
    );
}

/// The roles run as separate commands, as on several hosts: certificates from `ps-cluster certs`,
/// a coordinator, two shards and two workers started by hand.
#[test]
fn roles_run_as_separate_commands() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    let nodes = "coordinator,shard-0,shard-1,worker-0,worker-1";
    assert!(ps_cluster(&["certs", "--out", certs, "--nodes", nodes])
        .status
        .success());
    let tls = |name: &str| {
        vec![
            "--ca".to_string(),
            format!("{certs}/ca.pem"),
            "--cert".to_string(),
            format!("{certs}/{name}.pem"),
            "--key".to_string(),
            format!("{certs}/{name}.key"),
        ]
    };
    // A free UDP port for the coordinator.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coord_addr = format!("127.0.0.1:{port}");
    let exe = env!("CARGO_BIN_EXE_ps-cluster");
    let coordinator = std::process::Command::new(exe)
        .args(["coordinator", "--listen", &coord_addr, "--clocks", "8"])
        .args(tls("coordinator"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            std::process::Command::new(exe)
                .args([
                    "server",
                    "--coordinator",
                    &coord_addr,
                    "--listen",
                    "127.0.0.1:0",
                ])
                .args(tls(&format!("shard-{i}")))
                .spawn()
                .unwrap(),
        );
        nodes.push(
            std::process::Command::new(exe)
                .args(["worker", "--coordinator", &coord_addr])
                .args(tls(&format!("worker-{i}")))
                .spawn()
                .unwrap(),
        );
    }
    let out = coordinator.wait_with_output().unwrap();
    for mut n in nodes {
        assert!(n.wait().unwrap().success());
    }
    let s = summary(&out);
    assert_eq!(
        (
            s["servers"].as_u64(),
            s["workers"].as_u64(),
            s["clocks"].as_u64()
        ),
        (Some(2), Some(2), Some(8))
    );
    assert!(s["test_rmse"].as_f64().unwrap() < 0.2, "{s}");
}

#[test]
fn bad_data_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ratings.csv");
    std::fs::write(
        &p,
        "userId,movieId,rating,timestamp\n1,2,3.5,100\n1,x,4,100\n",
    )
    .unwrap();
    let out = ps_cluster(&["local", "--data", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ratings.csv:3"), "{stderr}");
}
