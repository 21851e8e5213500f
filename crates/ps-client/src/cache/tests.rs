use super::*;

fn row(values: Vec<f32>, own_clock: u64) -> CachedRow {
    CachedRow {
        values: RowValues::Dense(values),
        min_clock: 0,
        own_clock,
        fetched_at: 0,
    }
}

fn block(key: u64, values: Vec<f32>) -> Vec<Sent> {
    vec![Sent::Rows(crate::pending::Block {
        keys: vec![key],
        values,
    })]
}

#[test]
fn compose_adds_unapplied_own_updates_once() {
    let mut t = TableCache::new(2, true);
    t.rows.insert(3, row(vec![1.0, 1.0], 1));
    t.own_log.insert(0, block(3, vec![100.0, 100.0])); // already in values
    t.own_log.insert(1, block(3, vec![1.0, 2.0]));
    t.pending.singles.insert(3, vec![0.5, 0.5]);
    let mut out = Vec::new();
    assert!(t.compose(3, &mut out));
    assert_eq!(out, vec![2.5, 3.5]);
    // Shard applied clocks 0 and 1: fold clock 1 into the row, drop the log.
    t.fold_acknowledged(|_| 2, |_| false, 2);
    assert!(t.own_log.is_empty());
    out.clear();
    t.compose(3, &mut out);
    assert_eq!(out, vec![2.5, 3.5]);
    assert!(!t.compose(4, &mut out));
    // Entries are logged and folded like rows.
    let e = crate::entries::Entries {
        keys: vec![3],
        at: vec![1],
        values: vec![10.0],
    };
    t.own_log.insert(2, vec![Sent::Entries(e)]);
    out.clear();
    t.compose(3, &mut out);
    assert_eq!(out, vec![2.5, 13.5]);
    assert!(!t.serves_as_is(&[3], 0));
    t.fold_acknowledged(|_| 3, |_| false, 3);
    assert!(t.own_log.is_empty());
    assert_eq!(t.rows[&3].values.to_dense(2), vec![2.0, 13.0]);
}

#[test]
fn rows_a_pull_will_replace_keep_their_log_and_read_the_same() {
    let mut t = TableCache::new(2, true);
    t.rows.insert(1, row(vec![1.0, 1.0], 1));
    t.rows.insert(2, row(vec![2.0, 2.0], 1));
    let both = |v: f32| {
        vec![Sent::Rows(crate::pending::Block {
            keys: vec![1, 2],
            values: vec![v; 4],
        })]
    };
    t.own_log.insert(1, both(10.0));
    t.own_log.insert(2, both(100.0));
    let read = |t: &TableCache| {
        let mut out = Vec::new();
        assert!(t.compose(1, &mut out) && t.compose(2, &mut out));
        out
    };
    let before = read(&t);
    assert_eq!(before, [111.0, 111.0, 112.0, 112.0]);
    // Every shard applied clock 1; a pull on its way will overwrite row 2.
    t.fold_acknowledged(|_| 2, |r| r == 2, 2);
    assert_eq!(t.rows[&1].values.to_dense(2), [11.0, 11.0]);
    assert_eq!((t.rows[&1].own_clock, t.rows[&2].own_clock), (2, 1));
    assert_eq!(t.rows[&2].values.to_dense(2), [2.0, 2.0], "not folded");
    assert_eq!(t.own_log.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(read(&t), before);
    // The pull brings row 2 with clock 1 applied: the log entry goes at the next fold.
    t.store(2, &[12.0, 12.0], 1, 2, 3);
    assert_eq!(read(&t), before);
    t.fold_acknowledged(|_| 2, |_| false, 2);
    assert_eq!(t.own_log.keys().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(read(&t), before);
    // A row the pull did not replace after all is folded then.
    t.rows.insert(3, row(vec![0.0, 0.0], 2));
    t.own_log.get_mut(&2).unwrap()[0] = Sent::Rows(crate::pending::Block {
        keys: vec![1, 2, 3],
        values: vec![100.0; 6],
    });
    t.fold_acknowledged(|_| 3, |r| r == 3, 3);
    assert_eq!(t.own_log.keys().copied().collect::<Vec<_>>(), [2]);
    t.fold_acknowledged(|_| 3, |_| false, 3);
    assert!(t.own_log.is_empty());
    assert_eq!(t.rows[&3].values.to_dense(2), [100.0, 100.0]);
    // A row that would lack more than MAX_DEFERRED_CLOCKS is folded, replaced or not.
    for clock in 3..7 {
        t.own_log.insert(clock, block(3, vec![1.0, 1.0]));
    }
    t.fold_acknowledged(|_| 3 + MAX_DEFERRED_CLOCKS, |_| true, 0);
    assert_eq!(t.rows[&3].own_clock, 3);
    t.fold_acknowledged(|_| 4 + MAX_DEFERRED_CLOCKS, |_| true, 0);
    assert_eq!(t.rows[&3].own_clock, 4 + MAX_DEFERRED_CLOCKS);
    assert_eq!(t.rows[&3].values.to_dense(2), [103.0, 103.0]);
}

#[test]
fn log_keeps_sent_updates_only_with_overlay() {
    let mut t = TableCache::new(1, true);
    t.log_sent(5, block(9, vec![1.0]));
    assert_eq!(t.own_log[&5].len(), 1);
    t.log_sent(6, Vec::new());
    assert!(!t.own_log.contains_key(&6));
    let mut g = TableCache::new(1, false);
    g.log_sent(5, block(9, vec![1.0]));
    assert!(g.own_log.is_empty());
}

#[test]
fn without_overlay_reads_show_only_what_shards_applied() {
    let mut t = TableCache::new(1, false);
    t.rows.insert(1, row(vec![3.0], 0));
    t.pending.singles.insert(1, vec![100.0]);
    t.residual.insert(1, vec![7.0]);
    let mut out = Vec::new();
    assert!(t.compose(1, &mut out));
    assert_eq!(out, vec![3.0]);
}

#[test]
fn the_residual_is_part_of_own_updates() {
    let mut t = TableCache::new(1, true);
    t.rows.insert(1, row(vec![3.0], 0));
    t.residual.insert(1, vec![0.25]);
    t.pending.singles.insert(1, vec![1.0]);
    let mut out = Vec::new();
    t.compose(1, &mut out);
    assert_eq!(out, vec![4.25]);
}

#[test]
fn rows_serve_as_is_only_when_reads_add_nothing() {
    let mut t = TableCache::new(1, true);
    t.store(1, &[1.0], 3, 2, 0);
    t.store(2, &[1.0], 3, 2, 0);
    assert!(t.serves_as_is(&[1, 2], 3));
    assert!(!t.serves_as_is(&[1, 2], 2), "another reply's clock");
    assert!(!t.serves_as_is(&[1, 3], 3), "a row not cached");
    t.own_log.insert(1, block(2, vec![5.0])); // applied: own_clock 2 covers clock 1
    assert!(t.serves_as_is(&[2], 3));
    t.own_log.insert(2, block(2, vec![5.0]));
    assert!(!t.serves_as_is(&[2], 3), "an unapplied own update");
    t.pending.singles.insert(1, vec![1.0]);
    assert!(!t.serves_as_is(&[1], 3), "a pending update");
    let mut g = TableCache::new(1, false);
    g.store(1, &[1.0], 3, 0, 0);
    g.pending.singles.insert(1, vec![1.0]);
    assert!(
        g.serves_as_is(&[1], 3),
        "no overlay: reads are what shards applied"
    );
}

#[test]
fn a_stale_reply_never_replaces_a_fresher_row_and_buffers_are_reused() {
    let mut t = TableCache::new(2, true);
    t.store(1, &[1.0, 1.0], 3, 0, 0);
    let ptr = |t: &TableCache| match &t.rows[&1].values {
        RowValues::Dense(v) => v.as_ptr(),
        RowValues::Sparse { .. } => std::ptr::null(),
    };
    let before = ptr(&t);
    t.store(1, &[2.0, 2.0], 2, 0, 1);
    assert_eq!(t.rows[&1].values.to_dense(2), vec![1.0, 1.0]);
    t.store(1, &[5.0, 6.0], 4, 1, 2);
    assert_eq!(t.rows[&1].values.to_dense(2), vec![5.0, 6.0]);
    assert_eq!(ptr(&t), before);
    assert_eq!((t.rows[&1].min_clock, t.rows[&1].own_clock), (4, 1));
    // As complete, but pulled for an earlier clock than the cached copy: kept out.
    t.store(1, &[7.0, 7.0], 4, 1, 1);
    assert_eq!(
        (t.rows[&1].values.to_dense(2), t.rows[&1].fetched_at),
        (vec![5.0, 6.0], 2)
    );
    // More complete but pulled for an earlier clock (it landed late): the shard served it
    // after the cached copy, so it takes the copy's place and its clock.
    t.store(1, &[8.0, 8.0], 5, 2, 1);
    assert_eq!(
        (t.rows[&1].values.to_dense(2), t.rows[&1].fetched_at),
        (vec![8.0, 8.0], 2)
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_sparse_reply_is_stored_row_by_row_as_its_dense_form_would_be() {
    let width = 4;
    let mut cache = TableCache::new(width, true);
    // A stale copy of row 7 with other values: replaced.
    cache.store(7, &[9.0; 4], 0, 0, 0);
    let keys = [3u64, 7, 8, 9];
    // Rows 3 and 8 hold two entries each (kept by them), row 9 three (dense), row 7 none.
    let indices = [1u32, 3, 9, 10, 12, 13, 15];
    let values = [1.5, -0.0, f32::NAN, 2.0, 1.0, 2.0, 3.0];
    cache
        .store_sparse(&keys, &indices, &values, (2, 1, 5))
        .unwrap();
    let dense = ps_proto::codec::Decoded::Sparse {
        indices: indices.to_vec(),
        values: values.to_vec(),
    }
    .into_dense(16)
    .unwrap();
    for (r, k) in keys.iter().enumerate() {
        let c = &cache.rows[k];
        let v = c.values.to_dense(4);
        assert_eq!(bits(&v), bits(&dense[r * 4..(r + 1) * 4]), "row {k}");
        assert_eq!((c.min_clock, c.own_clock, c.fetched_at), (2, 1, 5));
        assert_eq!(c.values.is_sparse(), *k != 9, "row {k}");
    }
    // Read back by their entries: the same bits, dense rows' zeros left out.
    let mut buf = SparseRowsBuf::default();
    buf.clear(4);
    assert!(cache.compose_sparse(&keys, &mut buf));
    assert_eq!(bits(&buf.view().to_dense()), bits(&dense));
    assert_eq!(buf.view().entries(), 7);
    let mut composed = Vec::new();
    for k in keys {
        cache.compose(k, &mut composed);
    }
    assert_eq!(bits(&composed), bits(&dense));
    // Not when a row is missing, or a read would add an own update to it.
    assert!(!cache.compose_sparse(&[3, 4], &mut buf));
    cache.pending.singles.insert(8, vec![1.0; 4]);
    assert!(!cache.compose_sparse(&[8], &mut buf));
    cache.pending.singles.clear();
    // A reply older than the cached rows changes nothing.
    cache.store_sparse(&keys, &[0], &[5.0], (1, 0, 6)).unwrap();
    assert_eq!(cache.rows[&3].values.to_dense(4)[0], 0.0);
    // Acknowledged own entries fold into a sparse row, which stays sparse.
    let e = crate::entries::Entries {
        keys: vec![3, 7],
        at: vec![0, 6],
        values: vec![4.0, 5.0],
    };
    cache.own_log.insert(1, vec![Sent::Entries(e)]);
    cache.fold_acknowledged(|_| 2, |_| false, 2);
    let (r3, r7) = (&cache.rows[&3].values, &cache.rows[&7].values);
    assert_eq!(bits(&r3.to_dense(4)), bits(&[4.0, 1.5, 0.0, -0.0]));
    assert!(!r3.is_sparse(), "three entries of four: dense");
    assert_eq!(r7.to_dense(4), [0.0, 0.0, 5.0, 0.0]);
    assert!(r7.is_sparse());
}

/// A reader under staleness: its cached rows lack its last clocks' pushes, which the own
/// log holds. Composed by their entries, the rows are the dense compose's, bit for bit,
/// whether the log adds entries (merged) or whole rows (the row goes dense), and whatever
/// part of the log a row already holds.
#[test]
fn rows_with_logged_own_updates_compose_by_their_entries_as_dense() {
    let width = 8;
    let mut cache = TableCache::new(width, true);
    let keys = [2u64, 5, 6, 9];
    // Rows 2, 5 and 9 by a few entries (a -0.0 among them), row 6 dense.
    let indices = [1u32, 4, 9, 14, 16, 17, 18, 19, 20, 21, 22, 23, 27];
    let values = [
        1.0, -0.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 4.0,
    ];
    cache
        .store_sparse(&keys, &indices, &values, (1, 1, 1))
        .unwrap();
    assert!(!cache.rows[&6].values.is_sparse());
    // Clock 0's update is in every row already (own_clock 1), clocks 1 and 2 are not.
    let entries = |keys: Vec<u64>, at: Vec<u64>, values: Vec<f32>| {
        Sent::Entries(crate::entries::Entries { keys, at, values })
    };
    cache
        .own_log
        .insert(0, vec![entries(vec![2], vec![0], vec![100.0])]);
    cache.own_log.insert(
        1,
        vec![entries(
            vec![2, 5, 6],
            vec![1, 2, 9, 17],
            vec![-1.0, 0.5, -3.0, 1.0],
        )],
    );
    cache.own_log.insert(
        2,
        vec![
            entries(vec![2, 9], vec![1, 8], vec![0.25, -0.0]),
            Sent::Rows(crate::pending::Block {
                keys: vec![9],
                values: vec![0.5; 8],
            }),
        ],
    );
    let mut buf = SparseRowsBuf::default();
    buf.clear(width);
    assert!(cache.compose_sparse(&keys, &mut buf));
    let mut dense = Vec::new();
    for k in keys {
        assert!(cache.compose(k, &mut dense));
    }
    assert_eq!(bits(&buf.view().to_dense()), bits(&dense));
    assert_eq!(
        dense[1], 0.25,
        "1 - 1 + 0.25: clock 0's 100 not added again"
    );
    // The cached rows themselves are unchanged.
    assert_eq!(cache.rows[&2].values.to_dense(width)[..2], [0.0, 1.0]);
    // A residual or a pending change of a row still sends the read the dense way.
    cache.residual.insert(5, vec![0.5; 8]);
    assert!(!cache.compose_sparse(&keys, &mut buf));
    cache.residual.clear();
    cache.pending.singles.insert(9, vec![1.0; 8]);
    assert!(!cache.compose_sparse(&keys, &mut buf));
}

/// A random log of several clocks, each with blocks of entries and of whole rows over
/// some of the keys (some not cached), shards that have applied different clocks:
/// composed by their entries before the fold, rows are the dense compose's; the fold,
/// walking each block once, leaves every row as folding row by row through its own range
/// of the log does, bit for bit; and a row every shard has applied reads as it did before.
#[test]
fn a_random_log_folds_block_by_block_as_row_by_row() {
    let (width, nrows) = (16usize, 3000u64);
    let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
    let mut cache = TableCache::new(width, true);
    for k in 0..nrows {
        // A third of the rows dense, the rest by a few entries; own clock 0 to 3.
        let own = next(4);
        if next(3) == 0 {
            let row: Vec<f32> = (0..width).map(|_| next(7) as f32 - 3.0).collect();
            cache.store(k, &row, 1, own, 1);
        } else {
            let cols: Vec<u32> = (0..width as u32).filter(|_| next(6) == 0).collect();
            let vals: Vec<f32> = cols.iter().map(|_| next(5) as f32 - 2.0).collect();
            cache.store_with(k, 1, own, 1, |v| {
                v.set_entries(width, cols.iter().copied(), &vals)
            });
        }
    }
    for clock in 0..4 {
        let mut blocks = Vec::new();
        for _ in 0..1 + next(3) {
            // Half the keys, some beyond the cached rows.
            let keys: Vec<u64> = (0..nrows + 200).filter(|_| next(2) == 0).collect();
            if next(4) == 0 {
                let values = (0..keys.len() * width)
                    .map(|_| next(9) as f32 - 4.0)
                    .collect();
                blocks.push(Sent::Rows(crate::pending::Block { keys, values }));
                continue;
            }
            let (mut at, mut values) = (Vec::new(), Vec::new());
            for p in 0..(keys.len() * width) as u64 {
                if next(5) == 0 {
                    at.push(p);
                    values.push([-0.0, 1.0, -2.5, 3.0][next(4) as usize]);
                }
            }
            let e = crate::entries::Entries { keys, at, values };
            blocks.push(Sent::Entries(e));
        }
        cache.own_log.insert(clock, blocks);
    }
    let keys: Vec<u64> = (0..nrows).collect();
    let mut dense = Vec::new();
    for &k in &keys {
        assert!(cache.compose(k, &mut dense));
    }
    let mut buf = SparseRowsBuf::default();
    buf.clear(width);
    assert!(cache.compose_sparse(&keys, &mut buf));
    assert_eq!(bits(&buf.view().to_dense()), bits(&dense));

    // Rows of even keys: their shard applied clocks 0-3; odd keys: 0-1.
    let applied_of = |r: u64| if r.is_multiple_of(2) { 4 } else { 2 };
    let mut by_rows = TableCache::new(width, true);
    by_rows.rows = cache.rows.clone();
    by_rows.own_log = cache.own_log.clone();
    for (&row, c) in by_rows.rows.iter_mut() {
        let lacked = c.own_clock..applied_of(row).max(c.own_clock);
        let logged = by_rows.own_log.range(lacked);
        for u in logged
            .flat_map(|(_, b)| b)
            .filter_map(|b| b.row_update(row, width))
        {
            c.values.add_update(width, u);
        }
        c.own_clock = c.own_clock.max(applied_of(row));
    }
    cache.fold_acknowledged(applied_of, |_| false, 2);
    assert_eq!(cache.own_log.keys().copied().collect::<Vec<_>>(), [2, 3]);
    for &k in &keys {
        let (c, r) = (&cache.rows[&k], &by_rows.rows[&k]);
        assert_eq!(c.own_clock, r.own_clock, "row {k}");
        assert_eq!(c.values.is_sparse(), r.values.is_sparse(), "row {k}");
        let (c, r) = (c.values.to_dense(width), r.values.to_dense(width));
        assert_eq!(bits(&c), bits(&r), "row {k}");
    }
    let mut after = Vec::new();
    for &k in &keys {
        assert!(cache.compose(k, &mut after));
    }
    assert_eq!(bits(&after), bits(&dense), "reads unchanged by the fold");
}

#[test]
fn a_bad_sparse_reply_stores_nothing() {
    let mut cache = TableCache::new(2, true);
    let at = (1, 0, 1);
    for (indices, values) in [
        (vec![0u32, 4], vec![1.0f32, 2.0]), // past the block of 2 x 2
        (vec![2, 1], vec![1.0, 2.0]),       // out of order
        (vec![1, 1], vec![1.0, 2.0]),       // repeated
        (vec![1], vec![1.0, 2.0]),          // lengths differ
    ] {
        assert!(cache.store_sparse(&[1, 2], &indices, &values, at).is_err());
        assert!(cache.rows.is_empty(), "{indices:?}");
    }
}
