//! Data through the in-process cluster: rows spanning shards route and read back; compressed
//! pushes and key-cache pulls lose nothing.

use ps_proto::ShardMap;

use crate::{table, TestCluster};

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

/// Sparse entries of wide rows (LDA's count deltas) go to the shards as their entries: reads
/// see them at once (read-my-writes, from the pending update and then the own log), the shards
/// hold exactly the dense equivalent, and the pushes and pull replies are a small fraction of
/// the rows' raw bytes. Bad entries and overlapping updates are refused, changing nothing.
#[test]
fn sparse_entries_of_wide_rows_travel_as_entries_and_read_back() {
    const W: u64 = 1000;
    let cluster = TestCluster::start(2, 1, vec![table(5, 60, W as u32, Some(0))], false);
    let mut client = cluster.client(0, 1);
    let keys: Vec<u64> = (0..60).step_by(2).collect();
    // Row keys[i] gets i + 1 at column 7 i (mod W), and -2 at column W - 1.
    let mut at = Vec::new();
    let mut values = Vec::new();
    for i in 0..keys.len() as u64 {
        at.extend([i * W + (7 * i) % W, i * W + W - 1]);
        values.extend([i as f32 + 1.0, -2.0]);
    }
    let mut dense = vec![0f32; 60 * W as usize];
    for (j, &p) in at.iter().enumerate() {
        dense[(keys[(p / W) as usize] * W + p % W) as usize] += values[j];
    }
    let mut t = client.table(5).unwrap();
    let err = t
        .push_entries(keys.clone(), vec![5, 3], vec![1.0, 1.0])
        .unwrap_err();
    assert!(err.to_string().contains("strictly increasing"), "{err}");
    let err = t
        .push_entries(keys.clone(), vec![30 * W], vec![1.0])
        .unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    t.push_entries(keys.clone(), at.clone(), values.clone())
        .unwrap();
    assert!(matches!(
        t.inc(2, 0, 1.0),
        Err(ps_client::ClientError::Overlap { .. })
    ));
    let all: Vec<u64> = (0..60).collect();
    let w = W as usize;
    let seen = t.read_rows(&all).unwrap();
    assert!(seen == dense, "this clock's entries are read back");
    client.clock().unwrap();
    let seen = client.table(5).unwrap().read_rows(&all).unwrap();
    assert!(seen == dense, "the own log's entries are read back");
    client.flush().unwrap();
    assert!(
        cluster.table(5) == dense,
        "the shards hold the dense update"
    );
    let synced = client.table(5).unwrap().read_rows_synced(&all).unwrap();
    assert!(synced == dense);
    let mut reports = client.take_reports().unwrap();
    let (mut pushed, mut pulled) = (0u64, 0u64);
    while let Ok(r) = reports.try_recv() {
        pushed += r.push_bytes;
        pulled += r.bytes_received;
    }
    let raw = (keys.len() * w * 4) as u64;
    assert!(
        pushed > 0 && pushed * 20 < raw,
        "pushed {pushed} bytes of {raw} raw"
    );
    assert!(
        pulled * 20 < raw * 3,
        "pulled {pulled} bytes for three reads of 60 rows"
    );
}
