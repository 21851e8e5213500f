//! Hostile peers: every kind of bad frame gets an error and changes nothing, and a client
//! without a cluster certificate gets no data.

use ps_proto::{ErrorCode, FrameBuilder, Kind, Limits, RawHeader, MAGIC};
use ps_transport::{
    generate_cluster_certs, make_client_endpoint, read_frame, CertPaths, ClusterIdentity,
    EndpointOptions, FrameRead,
};
use std::sync::Arc;
use std::time::Duration;

use crate::{table, TestCluster};

fn raw_header(kind: u16) -> RawHeader {
    RawHeader {
        magic: MAGIC,
        version: ps_proto::VERSION,
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
        h.version = ps_proto::VERSION + 1;
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
