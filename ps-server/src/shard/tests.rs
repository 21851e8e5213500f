use super::*;
use ps_proto::{Init, Layout, UpdateRule};

fn spec() -> TableSpec {
    TableSpec {
        id: 1,
        name: "t".into(),
        rows: 10,
        width: 2,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness: Some(0),
        layout: Layout::Dense,
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

#[test]
fn deterministic_mode_applies_at_the_boundary_in_worker_order() {
    let mut s = Shard::new(0, 2, &[spec()], 2, true);
    assert!(s.check(1, 2, &[4]).is_ok());
    assert!(matches!(
        s.check(1, 2, &[5]),
        Err(ProtoError::KeyOutOfRange { .. })
    ));
    assert!(matches!(
        s.check(1, 3, &[0]),
        Err(ProtoError::WrongWidth { .. })
    ));
    assert!(matches!(
        s.check(2, 2, &[0]),
        Err(ProtoError::UnknownTable(2))
    ));
    let rx = s.park(1).expect("must park until clock 0 is complete");
    s.submit(1, 0, vec![PushRows::dense(1, vec![0], vec![1.0, 2.0])])
        .unwrap();
    assert_eq!(
        s.read(1, &[0], 1).unwrap().values,
        vec![0.0, 0.0],
        "held back until worker 0 is in"
    );
    s.submit(0, 0, vec![]).unwrap();
    let r = s.read(1, &[0], 1).unwrap();
    assert_eq!(r.values, vec![1.0, 2.0]);
    assert_eq!((r.min_clock, r.worker_clock), (1, 1));
    assert!(rx.blocking_recv().is_ok());
    assert!(s.park(1).is_none());
}

/// `read_exact` gives the bytes the old path gave (a raw copy, then sparse if smaller),
/// encoding consecutive rows from the table and leaving other reads unchecked.
#[test]
fn exact_reads_match_a_copy_then_a_sparse_check() {
    let spec = TableSpec {
        rows: 400,
        width: 10,
        ..spec()
    };
    let mut s = Shard::new(0, 1, &[spec], 1, false);
    // The payload and its wire id (raw: 1).
    let old = |s: &Shard, keys: &[u64]| {
        let (_, raw) = s.read_wire(1, keys, 0).unwrap();
        codec::exact_sparse_raw(&raw).unwrap_or((1, raw))
    };
    let bytes = |rows: ExactRows| match rows {
        ExactRows::Nonzero(e) => e.encode().unwrap_or_else(|| (1, e.raw())),
        ExactRows::Dense(p) | ExactRows::Unchecked(p) => (1, p),
    };
    let all: Vec<u64> = (0..400).collect();
    // A few nonzero cells: sparse, from the table.
    s.submit(0, 0, vec![PushRows::dense(1, vec![3, 250], vec![1.5; 20])])
        .unwrap();
    let (r, rows) = s.read_exact(1, &all, 0).unwrap();
    assert!(matches!(rows, ExactRows::Nonzero(_)), "{rows:?}");
    assert_eq!(bytes(rows), old(&s, &all));
    assert_eq!((r.min_clock, r.worker_clock), (1, 1));
    // A run starting past the first row, and non-consecutive keys.
    let (_, rows) = s.read_exact(1, &all[200..300], 0).unwrap();
    assert_eq!(bytes(rows), old(&s, &all[200..300]));
    let scattered = [250, 3, 7];
    let (_, rows) = s.read_exact(1, &scattered, 0).unwrap();
    assert!(matches!(rows, ExactRows::Unchecked(_)), "{rows:?}");
    assert_eq!(bytes(rows), (1, s.read_wire(1, &scattered, 0).unwrap().1));
    // Every cell nonzero: raw, checked.
    s.submit(
        0,
        1,
        vec![PushRows::dense(1, all.clone(), vec![0.25; 4000])],
    )
    .unwrap();
    let (_, rows) = s.read_exact(1, &all, 0).unwrap();
    assert!(matches!(rows, ExactRows::Dense(_)), "{rows:?}");
    assert_eq!(bytes(rows), old(&s, &all));
}

fn ftrl_spec() -> TableSpec {
    TableSpec {
        id: 9,
        name: "lr_weights".into(),
        rows: u64::MAX,
        width: 1,
        rule: UpdateRule::Ftrl {
            alpha: 0.5,
            beta: 1.0,
            l1: 1.0,
            l2: 0.5,
        },
        init: Init::Zeros,
        staleness: Some(0),
        layout: Layout::Sparse,
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

#[test]
fn sparse_ftrl_table_end_to_end_through_submit_and_read() {
    let (shards, workers) = (2, 2);
    let spec = ftrl_spec();
    let mut s = Shard::new(1, shards, &[spec.clone(), spec_add_dense()], workers, false);
    let range = ShardMap::range_of(u64::MAX, shards, 1);
    let t = s.table(9).unwrap();
    assert!(t.as_sparse().is_some() && t.is_empty());
    // Hashed feature keys in shard 1's half of the key space.
    let (a, b, c) = (range.start + 17, u64::MAX - 2, range.start + (1 << 40));
    assert!(s.check(9, 1, &[a, b, c]).is_ok());
    assert!(matches!(
        s.check(9, 1, &[range.start - 1]),
        Err(ProtoError::KeyOutOfRange { .. })
    ));
    assert!(matches!(
        s.check(9, 1, &[u64::MAX]),
        Err(ProtoError::KeyOutOfRange { .. })
    ));
    // Absent keys read as 0 and are not stored by the read.
    let r = s.read(9, &[a, b, c], 0).unwrap();
    assert_eq!(r.values, vec![0.0; 3]);
    let (w, payload) = s.read_wire(9, &[a, b, c], 0).unwrap();
    assert_eq!(payload, vec![0u8; 12]);
    assert_eq!((w.min_clock, w.worker_clock), (r.min_clock, r.worker_clock));
    assert_eq!(s.table(9).unwrap().len(), 0);
    assert_eq!(s.cells(), 5, "the dense table's 5 rows of width 1");

    // Scalar reference for one coordinate.
    let (alpha, beta, l1, l2) = (0.5f32, 1.0f32, 1.0f32, 0.5f32);
    let step = |(z, n, w): (f32, f32, f32), g: f32| {
        let sigma = ((n + g * g).sqrt() - n.sqrt()) / alpha;
        let z = z + (g - sigma * w);
        let n = n + g * g;
        let w = if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
        };
        (z, n, w)
    };
    let push = |keys: Vec<u64>, values: Vec<f32>| vec![PushRows::dense(9, keys, values)];
    // Clock 0: worker 0 pushes g = 0.6 on a, worker 1 g = 0.3 on a and 2.0 on b.
    s.submit(0, 0, push(vec![a], vec![0.6])).unwrap();
    s.submit(1, 0, push(vec![a, b], vec![0.3, 2.0])).unwrap();
    let mut ra = step(step((0.0, 0.0, 0.0), 0.6), 0.3);
    let mut rb = step((0.0, 0.0, 0.0), 2.0);
    let r = s.read(9, &[a, b, c], 1).unwrap();
    assert_eq!(r.values, vec![ra.2, rb.2, 0.0]);
    assert_eq!(ra.2, 0.0, "|z| = 0.9 <= l1: a stays exactly 0");
    assert!(rb.2 < 0.0, "b left the l1 ball");
    assert_eq!((r.min_clock, r.worker_clock), (1, 1));
    assert_eq!(s.table(9).unwrap().len(), 2, "a and b stored, c only read");
    assert_eq!(s.params_applied(), 3);

    // Clock 1: more gradient on a pushes it out of the l1 ball.
    s.submit(1, 1, push(vec![a], vec![0.5])).unwrap();
    s.submit(0, 1, push(vec![b, a], vec![-1.0, 0.4])).unwrap();
    // Worker order of release within a clock follows arrival (non-deterministic mode).
    ra = step(step(ra, 0.5), 0.4);
    rb = step(rb, -1.0);
    let r = s.read(9, &[c, a, b], 0).unwrap();
    assert_eq!(r.values, vec![0.0, ra.2, rb.2]);
    assert!(ra.2 < 0.0);
    let t = s.table(9).unwrap().as_sparse().unwrap();
    assert_eq!(t.sorted_rows(), vec![(a, &[ra.2][..]), (b, &[rb.2][..])]);
    assert_eq!(t.state(), &[ra.0, ra.1, rb.0, rb.1]);
    assert_eq!(s.cells(), 5 + 2);
}

fn spec_add_dense() -> TableSpec {
    TableSpec {
        id: 2,
        rows: 10,
        width: 1,
        ..spec()
    }
}

#[test]
fn batch_bound_counts_sparse_tables_up_to_their_cap() {
    let s = Shard::new(0, 2, &[ftrl_spec(), spec_add_dense()], 1, false);
    assert_eq!(s.max_batch_cells(), DEFAULT_SPARSE_BATCH_CELLS + 5);
    let s = s.with_sparse_batch_cells(100);
    assert_eq!(s.max_batch_cells(), 105);
    let small = TableSpec {
        rows: 40,
        width: 3,
        ..ftrl_spec()
    };
    let s = Shard::new(0, 2, &[small], 1, false);
    assert_eq!(s.max_batch_cells(), 60, "a small key range bounds it first");
}

#[test]
fn invalid_table_specs_are_refused_by_name() {
    let bad = TableSpec {
        rule: UpdateRule::Adagrad {
            lr: 0.1,
            eps: 0.0,
            initial_accumulator: 0.0,
        },
        ..spec()
    };
    let e = Shard::try_new(0, 1, &[bad], 1, false).err().unwrap();
    assert!(
        matches!(&e, ServerError::BadTable { table: 1, reason } if reason.contains("eps")),
        "{e}"
    );
    let dup = Shard::try_new(0, 1, &[spec(), spec()], 1, false)
        .err()
        .unwrap();
    assert!(dup.to_string().contains("another table"), "{dup}");
    let ftrl_normal = TableSpec {
        init: Init::Normal { std: 0.1, seed: 1 },
        ..ftrl_spec()
    };
    assert!(validate_tables(&[ftrl_normal]).is_err());
    assert!(validate_tables(&[spec(), ftrl_spec()]).is_ok());
}
