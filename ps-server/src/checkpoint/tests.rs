//! A shard through snapshot -> encode -> decode -> from_snapshot, and the refusals of a
//! snapshot that does not fit the job.

use super::*;
use crate::shard::{Batch, PushRows};
use crate::{ServerError, Shard};
use ps_proto::codec::Decoded;
use ps_proto::{Init, UpdateRule};

const SHARDS: u32 = 2;
const SHARD: u32 = 1;
const WORKERS: u32 = 3;
const FP: u64 = 0xfeed_f00d;

fn spec(id: u32, name: &str, rows: u64, width: u32, rule: UpdateRule, layout: Layout) -> TableSpec {
    TableSpec {
        id,
        name: name.into(),
        rows,
        width,
        rule,
        init: Init::Zeros,
        staleness: Some(0),
        layout,
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

/// A dense `add` table (seeded init), a dense `adagrad` one and a sparse `ftrl` one over
/// hashed u64 keys.
fn tables() -> Vec<TableSpec> {
    let add = TableSpec {
        init: Init::Normal { std: 0.5, seed: 7 },
        ..spec(1, "emb", 10, 3, UpdateRule::Add, Layout::Dense)
    };
    let ada = UpdateRule::Adagrad {
        lr: 0.1,
        eps: 1e-6,
        initial_accumulator: 0.1,
    };
    let ftrl = UpdateRule::Ftrl {
        alpha: 0.3,
        beta: 1.0,
        l1: 0.05,
        l2: 0.01,
    };
    vec![
        add,
        spec(2, "dense_ada", 8, 2, ada, Layout::Dense),
        spec(3, "lr_weights", u64::MAX, 2, ftrl, Layout::Sparse),
    ]
}

fn range(t: u32) -> KeyRange {
    let rows = tables().iter().find(|s| s.id == t).map_or(0, |s| s.rows);
    ShardMap::range_of(rows, SHARDS, SHARD)
}

/// A deterministic pseudo-random value in [-1, 1) from (worker, clock, i).
fn val(w: u32, c: u64, i: u64) -> f32 {
    let mut x = (u64::from(w) << 48) ^ (c << 24) ^ i ^ 0x9e37_79b9_7f4a_7c15;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

/// Worker `w`'s batch for clock `c` to shard 1: dense rows of every table, plus a sparse block
/// on the `add` table.
fn batch(w: u32, c: u64) -> Batch {
    let (r1, r2, r3) = (range(1), range(2), range(3));
    let k = |r: KeyRange, n: u64| r.start + (u64::from(w) + c + n) % r.len();
    let dense = |t: u32, keys: Vec<u64>, width: usize| {
        let values = (0..keys.len() * width)
            .map(|i| val(w, c, u64::from(t) * 100 + i as u64))
            .collect();
        PushRows::dense(t, keys, values)
    };
    // Sparse keys: a few fixed hashed keys (shared by workers) and one new per (w, c).
    let fresh = r3.start + (u64::from(w) * 1_000_003 + c * 7_777_777_777) % (r3.len() / 2);
    let sparse_keys = vec![r3.start + 5, r3.end - 1, fresh];
    vec![
        dense(1, vec![k(r1, 0), k(r1, 2)], 3),
        dense(2, vec![k(r2, 1)], 2),
        dense(3, sparse_keys, 2),
        PushRows {
            table: 1,
            keys: vec![r1.start, r1.start + 3],
            values: Decoded::Sparse {
                indices: vec![1, 5],
                values: vec![val(w, c, 900), val(w, c, 901)],
            },
        },
    ]
}

fn submit_all(s: &mut Shard, clocks: std::ops::Range<u64>) {
    for c in clocks {
        for w in 0..WORKERS {
            s.submit(w, c, batch(w, c)).unwrap();
        }
    }
}

/// Every value the shard serves for the keys it has (dense: the whole range; sparse: the
/// stored keys plus an absent one), as bits.
fn served(s: &Shard) -> Vec<u32> {
    let mut out = Vec::new();
    for t in 1..=3 {
        let table = s.table(t).unwrap();
        let keys: Vec<u64> = match table.as_sparse() {
            Some(sp) => sp
                .keys()
                .iter()
                .copied()
                .chain([range(3).start + 1])
                .collect(),
            None => (range(t).start..range(t).end).collect(),
        };
        out.extend(
            s.read(t, &keys, 0)
                .unwrap()
                .values
                .iter()
                .map(|v| v.to_bits()),
        );
    }
    out
}

fn restore(s: &ShardSnapshot) -> Result<Shard, ServerError> {
    let bytes = encode(s);
    let back = decode(&bytes)?;
    back.check(
        FP,
        &ShardFacts::new(SHARD, SHARDS, &tables(), WORKERS, true),
    )?;
    Shard::from_snapshot(SHARD, SHARDS, &tables(), WORKERS, true, back)
}

#[test]
fn deterministic_restore_matches_a_shard_that_never_stopped_bit_for_bit() {
    let mut a = Shard::new(SHARD, SHARDS, &tables(), WORKERS, true);
    submit_all(&mut a, 0..3);
    // Held back at the snapshot: worker 0's clock 3, worker 2's clocks 3 and 4.
    for (w, c) in [(0, 3), (2, 3), (2, 4)] {
        a.submit(w, c, batch(w, c)).unwrap();
    }
    let snap = a.snapshot(FP);
    assert_eq!(snap.clock, 3);
    assert_eq!(snap.completed, vec![3; 3]);
    assert_eq!(
        snap.tables.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        snap.tables[1].state.len(),
        2 * 4,
        "adagrad: one float per cell"
    );
    assert_eq!(snap.tables[2].keys.len(), 2 + 3 * 3, "ftrl rows written");
    assert_eq!(
        snap.tables[2].state.len(),
        snap.tables[2].keys.len() * 2 * 2
    );

    let mut b = restore(&snap).unwrap();
    assert_eq!(served(&b), served(&a));
    assert_eq!((b.min_clock(), b.worker_clock(2)), (3, 3));
    assert_eq!(
        encode(&b.snapshot(FP)),
        encode(&snap),
        "restored state is the snapshot"
    );
    // A resend of a clock the checkpoint covers is acknowledged and changes nothing.
    b.submit(1, 2, batch(1, 2)).unwrap();
    assert_eq!(served(&b), served(&a));
    assert_eq!(b.worker_clock(1), 3);

    // A goes on; B gets the held batches again (resent by their workers) in another order.
    for (w, c) in [(1, 3), (0, 4), (1, 4)] {
        a.submit(w, c, batch(w, c)).unwrap();
    }
    for (w, c) in [(2, 4), (1, 3), (2, 3), (0, 4), (0, 3), (1, 4)] {
        b.submit(w, c, batch(w, c)).unwrap();
    }
    submit_all(&mut a, 5..7);
    submit_all(&mut b, 5..7);
    assert_eq!(a.min_clock(), 7);
    assert_eq!(served(&b), served(&a));
    assert_eq!(encode(&b.snapshot(FP)), encode(&a.snapshot(FP)));
}

#[test]
fn free_running_restore_keeps_workers_ahead_of_the_boundary() {
    let mut a = Shard::new(SHARD, SHARDS, &tables(), WORKERS, false);
    submit_all(&mut a, 0..2);
    // Worker 2 runs two clocks ahead; worker 0 sent clock 3 before its clock 2 (held).
    for (w, c) in [(2, 2), (2, 3), (0, 3)] {
        a.submit(w, c, batch(w, c)).unwrap();
    }
    let snap = a.snapshot(FP);
    assert_eq!((snap.clock, snap.completed.clone()), (2, vec![2, 2, 4]));
    let back = decode(&encode(&snap)).unwrap();
    let mut b = Shard::from_snapshot(SHARD, SHARDS, &tables(), WORKERS, false, back).unwrap();
    assert_eq!(served(&b), served(&a));
    assert_eq!((b.worker_clock(2), b.min_clock()), (4, 2));
    // Worker 0 resends its clock 3 after its clock 2; both continue with the same pushes.
    // (Same order of application on both: A releases its held clock 3 with clock 2.)
    a.submit(0, 2, batch(0, 2)).unwrap();
    b.submit(0, 2, batch(0, 2)).unwrap();
    b.submit(0, 3, batch(0, 3)).unwrap();
    for s in [&mut a, &mut b] {
        s.submit(1, 2, batch(1, 2)).unwrap();
        s.submit(1, 3, batch(1, 3)).unwrap();
        assert_eq!(s.min_clock(), 4);
    }
    assert_eq!(served(&b), served(&a));
    assert_eq!(encode(&b.snapshot(FP)), encode(&a.snapshot(FP)));
}

#[test]
fn a_snapshot_that_does_not_fit_the_job_is_refused_naming_the_difference() {
    let mut a = Shard::new(SHARD, SHARDS, &tables(), WORKERS, true);
    submit_all(&mut a, 0..1);
    let snap = a.snapshot(FP);
    let facts = ShardFacts::new(SHARD, SHARDS, &tables(), WORKERS, true);
    assert!(snap.check(FP, &facts).is_ok());
    assert!(matches!(
        snap.check(FP + 1, &facts),
        Err(CheckpointError::OtherJob { found: FP, expected }) if expected == FP + 1
    ));

    let refused = |id: u32, shards: u32, specs: Vec<TableSpec>, workers: u32, det: bool| {
        let e = Shard::from_snapshot(id, shards, &specs, workers, det, snap.clone())
            .err()
            .expect("refused");
        let facts = ShardFacts::new(id, shards, &specs, workers, det);
        let checked = snap.check(FP, &facts).expect_err("check refuses it too");
        assert!(matches!(checked, CheckpointError::Layout(_)), "{checked}");
        assert_eq!(e.to_string(), checked.to_string());
        e.to_string()
    };
    let t = tables();
    let e = refused(0, SHARDS, t.clone(), WORKERS, true);
    assert!(
        e.contains("the shard id is 1 in the checkpoint but 0 in the job"),
        "{e}"
    );
    let e = refused(SHARD, 3, t.clone(), WORKERS, true);
    assert!(
        e.contains("number of shards is 2 in the checkpoint but 3"),
        "{e}"
    );
    let e = refused(SHARD, SHARDS, t.clone(), 4, true);
    assert!(
        e.contains("number of workers is 3 in the checkpoint but 4"),
        "{e}"
    );
    let e = refused(SHARD, SHARDS, t.clone(), WORKERS, false);
    assert!(
        e.contains("deterministic mode is true in the checkpoint but false"),
        "{e}"
    );

    let mut wider = t.clone();
    wider[1].width = 4;
    let e = refused(SHARD, SHARDS, wider, WORKERS, true);
    assert!(
        e.contains("table 2 (\"dense_ada\"): the width is 2 in the checkpoint but 4 in the job"),
        "{e}"
    );
    let mut sgd = t.clone();
    sgd[1].rule = UpdateRule::Sgd { lr: 0.1 };
    let e = refused(SHARD, SHARDS, sgd, WORKERS, true);
    assert!(
        e.contains("state floats per cell is 1 in the checkpoint but 0"),
        "{e}"
    );
    let mut dense = t.clone();
    dense[2].layout = Layout::Dense;
    dense[2].rows = 1000;
    let e = refused(SHARD, SHARDS, dense, WORKERS, true);
    assert!(
        e.contains("the layout is sparse in the checkpoint but dense"),
        "{e}"
    );
    let mut rows = t.clone();
    rows[0].rows = 12;
    let e = refused(SHARD, SHARDS, rows, WORKERS, true);
    assert!(
        e.contains("table 1 (\"emb\"): rows is 10 in the checkpoint but 12"),
        "{e}"
    );
    let mut more = t.clone();
    more.push(spec(4, "bias", 4, 1, UpdateRule::Add, Layout::Dense));
    let e = refused(SHARD, SHARDS, more, WORKERS, true);
    assert!(
        e.contains("table 4 (\"bias\") of the job is missing"),
        "{e}"
    );
    let e = refused(SHARD, SHARDS, t[..2].to_vec(), WORKERS, true);
    assert!(
        e.contains("holds table 3, which the job does not have"),
        "{e}"
    );

    // Another version, and contents that do not add up, are refused as well.
    let other = ShardSnapshot {
        version: 9,
        ..snap.clone()
    };
    let e = Shard::from_snapshot(SHARD, SHARDS, &t, WORKERS, true, other).err();
    assert!(
        matches!(
            e,
            Some(ServerError::Checkpoint(
                CheckpointError::UnsupportedVersion { found: 9, .. }
            ))
        ),
        "{e:?}"
    );
    let mut dup = snap.clone();
    let k = dup.tables[2].keys[0];
    dup.tables[2].keys[1] = k;
    let e = Shard::from_snapshot(SHARD, SHARDS, &t, WORKERS, true, dup).err();
    assert!(
        matches!(&e, Some(ServerError::BadTable { table: 3, reason }) if reason.contains("stored twice")),
        "{e:?}"
    );
}
