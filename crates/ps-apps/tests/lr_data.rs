//! Loader, generator, split and metric tests for the LR app.

use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;
use ps_apps::lr::{
    accuracy, add_bias, auc, batch_keys, labels, load_libsvm, log_loss, margins, nonzero_weights,
    objective, shuffle_epoch, split_train_test, synthetic, synthetic_key, synthetic_truth,
    worker_range, worker_split, SparseRow, SyntheticLrSpec, BIAS_KEY, MAX_FEATURES_PER_ROW,
    MAX_LINE_BYTES,
};
use ps_apps::DataError;

fn write_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).expect("create temp file");
    f.write_all(content).expect("write temp file");
    path
}

fn row(label: f32, features: &[(u64, f32)]) -> SparseRow {
    SparseRow {
        label,
        features: features.to_vec(),
    }
}

const SMALL: &[u8] =
    b"+1 1:0.5 3:1 10:-2\n# a comment line\n\n-1 2:1e-1 3:1 # trailing comment\r\n-1\n";

fn check_small(rows: &[SparseRow]) {
    assert_eq!(
        rows,
        &[
            row(1.0, &[(1, 0.5), (3, 1.0), (10, -2.0)]),
            row(0.0, &[(2, 0.1), (3, 1.0)]),
            row(0.0, &[]),
        ]
    );
}

#[test]
fn loads_plain_libsvm() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "small.svm", SMALL);
    let d = load_libsvm(&p).unwrap();
    check_small(&d.rows);
    assert_eq!(d.num_features_hint, 10);
}

#[test]
fn loads_gzipped_libsvm_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(SMALL).unwrap();
    let gz = enc.finish().unwrap();
    // The name does not matter; the magic bytes do.
    for name in ["small.svm.gz", "small.svm"] {
        let p = write_file(&dir, name, &gz);
        check_small(&load_libsvm(&p).unwrap().rows);
    }
}

#[test]
fn label_mapping_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[u8], &[f32])] = &[
        (b"1 1:1\n0 1:1\n", &[1.0, 0.0]),
        (b"-1 1:1\n+1 1:1\n", &[0.0, 1.0]),
        (b"2 1:1\n4 1:1\n2\n", &[0.0, 1.0, 0.0]),
        (b"1\n1\n", &[1.0, 1.0]),
        (b"-1\n-1\n", &[0.0, 0.0]),
        (b"0\n", &[0.0]),
        (b"1.0\n-1.0\n", &[1.0, 0.0]),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let p = write_file(&dir, &format!("l{i}"), content);
        let got = labels(&load_libsvm(&p).unwrap().rows);
        assert_eq!(&got, want, "case {i}");
    }
}

#[test]
fn unsorted_indices_are_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "u", b"1 5:1 2:2\t9:3\n");
    assert_eq!(
        load_libsvm(&p).unwrap().rows,
        vec![row(1.0, &[(2, 2.0), (5, 1.0), (9, 3.0)])]
    );
}

fn malformed_line(content: &[u8]) -> (u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "bad.svm", content);
    match load_libsvm(&p) {
        Err(e @ DataError::Malformed { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&p.display().to_string()), "{msg}");
            match e {
                DataError::Malformed { line, reason, .. } => (line, reason),
                _ => unreachable!(),
            }
        }
        other => panic!("expected Malformed for {content:?}, got {other:?}"),
    }
}

#[test]
fn malformed_lines_name_the_line() {
    let cases: &[(&[u8], u64, &str)] = &[
        (b"1 1:1\nx 1:1\n", 2, "bad label"),
        (b"nan 1:1\n", 1, "non-finite label"),
        (b"1 1:1\n0 2:abc\n", 2, "bad feature value"),
        (b"1 1:nan\n", 1, "non-finite feature value"),
        (b"1 1:inf\n", 1, "non-finite feature value"),
        (b"1 2:1 2:3\n", 1, "duplicate feature index 2"),
        (b"1 3:1 2:1 3:1\n", 1, "duplicate feature index 3"),
        (b"1 0:1\n", 1, "index 0"),
        (b"1 -1:1\n", 1, "bad feature index"),
        (b"1 18446744073709551615:1\n", 1, "reserved"),
        (b"1 18446744073709551616:1\n", 1, "bad feature index"),
        (b"1 1:1 5\n", 1, "missing ':'"),
        (b"1 qid:3 1:1\n", 1, "bad feature index"),
        (b"\n\n1 1:1\n0 1:1\n2 1:1\n", 5, "third distinct label"),
        (b"1 1:1\n\xff\xfe\n", 2, "invalid UTF-8"),
        (b"1 1:1:1\n", 1, "bad feature value"),
    ];
    for (content, line, needle) in cases {
        let (l, reason) = malformed_line(content);
        assert_eq!(l, *line, "{reason}");
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
    }
}

#[test]
fn hostile_lengths_are_bounded() {
    let mut long = b"1 1:1\n1 ".to_vec();
    long.extend_from_slice(&vec![b' '; MAX_LINE_BYTES + 10]);
    long.extend_from_slice(b"2:1\n");
    let (line, reason) = malformed_line(&long);
    assert_eq!(line, 2);
    assert!(reason.contains("longer than"), "{reason}");

    let mut many = b"1".to_vec();
    for i in 1..=MAX_FEATURES_PER_ROW + 1 {
        many.extend_from_slice(format!(" {i}:1").as_bytes());
    }
    let (line, reason) = malformed_line(&many);
    assert_eq!(line, 1);
    assert!(reason.contains("more than"), "{reason}");

    // Exactly the limits is fine.
    let mut ok = b"1".to_vec();
    for i in 1..=MAX_FEATURES_PER_ROW {
        ok.extend_from_slice(format!(" {i}:1").as_bytes());
    }
    assert!(ok.len() <= MAX_LINE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "ok", &ok);
    assert_eq!(
        load_libsvm(&p).unwrap().rows[0].features.len(),
        MAX_FEATURES_PER_ROW
    );
}

#[test]
fn empty_missing_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    for content in [&b""[..], b"\n\n", b"# only a comment\n  \n"] {
        let p = write_file(&dir, "empty", content);
        assert!(matches!(load_libsvm(&p), Err(DataError::Empty { .. })));
    }
    let missing = dir.path().join("nope");
    assert!(matches!(load_libsvm(&missing), Err(DataError::Io { .. })));
    // Gzip magic followed by garbage: an I/O error, not a panic.
    let p = write_file(&dir, "bad.gz", b"\x1f\x8b\x08\x00garbage-garbage");
    assert!(matches!(load_libsvm(&p), Err(DataError::Io { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random lines (libsvm-ish tokens and arbitrary bytes): the loader
    /// returns Ok or a typed error, never panics, and accepted rows are
    /// well formed.
    #[test]
    fn loader_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            "[-+]?[0-9]{1,3}(\\.[0-9])?( [0-9]{1,4}:[-+]?[0-9]{0,3}(\\.[0-9]*)?(e[-+]?[0-9]{1,3})?){0,6}",
            "[ -~\\t]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            Just("1 1:1 # c".to_string()),
            Just("-1 99999999999999999999:1".to_string()),
            Just("0 1:NaN 2:inf".to_string()),
        ],
        0..12,
    ), raw in proptest::collection::vec(any::<u8>(), 0..64), use_raw in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let content = if use_raw { raw } else { lines.join("\n").into_bytes() };
        let p = write_file(&dir, "p.svm", &content);
        match load_libsvm(&p) {
            Ok(d) => {
                prop_assert!(!d.rows.is_empty());
                for r in &d.rows {
                    prop_assert!(r.label == 0.0 || r.label == 1.0);
                    prop_assert!(r.features.windows(2).all(|w| w[0].0 < w[1].0));
                    prop_assert!(r.features.iter().all(|f| f.0 >= 1 && f.0 < BIAS_KEY && f.1.is_finite()));
                }
            }
            Err(DataError::Malformed { line, .. }) => prop_assert!(line >= 1),
            Err(DataError::Empty { .. }) | Err(DataError::Io { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }
}

#[test]
fn synthetic_is_deterministic_and_well_formed() {
    let mut spec = SyntheticLrSpec::default_builtin(3);
    spec.rows = 2_000;
    let a = synthetic(&spec);
    let b = synthetic(&spec);
    assert_eq!(a, b);
    assert_eq!(a.rows.len(), 2_000);
    assert_eq!(a.num_features_hint, 100_000);
    let mut pos = 0;
    for r in &a.rows {
        assert_eq!(r.features.len(), 20);
        assert!(r.features.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(r.features.iter().all(|f| f.1 == 1.0 && f.0 != BIAS_KEY));
        pos += (r.label == 1.0) as usize;
    }
    // Roughly balanced (intercept 0).
    assert!((600..1400).contains(&pos), "{pos}");
    // Keys are spread over the u64 range, not contiguous.
    let keys = batch_keys(&a.rows);
    assert!(keys.first().copied().unwrap_or(0) < u64::MAX / 64);
    assert!(keys.last().copied().unwrap_or(0) > u64::MAX / 64 * 63);
    // A different seed gives different data.
    spec.seed = 4;
    assert_ne!(synthetic(&spec), a);
}

#[test]
fn synthetic_truth_matches_spec() {
    let spec = SyntheticLrSpec::default_builtin(9);
    let (w, b) = synthetic_truth(&spec);
    assert_eq!(w.len(), 1_000);
    assert_eq!(b, 0.0);
    assert!(w.windows(2).all(|p| p[0].0 < p[1].0));
    // The truth is on the most frequent features, 0..1000.
    let mut expect: Vec<u64> = (0..1_000).map(|j| synthetic_key(9, j)).collect();
    expect.sort_unstable();
    assert_eq!(w.iter().map(|p| p.0).collect::<Vec<_>>(), expect);
}

#[test]
fn synthetic_degenerate_specs_do_not_panic() {
    let base = SyntheticLrSpec::default_builtin(1);
    for (features, nnz, k) in [(0u64, 20u32, 10u64), (5, 20, 10), (5, 5, 0), (1, 1, 1)] {
        let spec = SyntheticLrSpec {
            rows: 50,
            features,
            nnz_per_row: nnz,
            true_nonzeros: k,
            zipf_exponent: f64::NAN,
            weight_std: f32::INFINITY,
            ..base
        };
        let d = synthetic(&spec);
        assert_eq!(d.rows.len(), 50);
        for r in &d.rows {
            assert_eq!(r.features.len() as u64, u64::from(nnz).min(features));
            assert!(r.features.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}

#[test]
fn splits_partition_the_rows() {
    let rows: Vec<SparseRow> = (0..1000)
        .map(|i| row((i % 2) as f32, &[(i as u64 + 1, 1.0)]))
        .collect();
    let (train, test) = split_train_test(rows.clone(), 0.2, 5);
    assert_eq!(train.len() + test.len(), 1000);
    assert!((150..250).contains(&test.len()), "{}", test.len());
    assert_eq!(
        split_train_test(rows.clone(), 0.2, 5),
        (train.clone(), test)
    );
    assert_eq!(split_train_test(rows.clone(), 0.0, 5).0.len(), 1000);
    assert_eq!(split_train_test(rows.clone(), 1.0, 5).1.len(), 1000);

    for len in [0usize, 1, 7, 1000] {
        for workers in 1..5u32 {
            let mut next = 0;
            for w in 0..workers {
                let r = worker_range(len, workers, w);
                assert_eq!(r.start, next);
                assert!(r.len() <= len / workers as usize + 1);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
    assert_eq!(
        worker_split(&train, 2, 1).len(),
        train.len() - train.len().div_ceil(2)
    );

    let mut a = train.clone();
    let mut b = train.clone();
    shuffle_epoch(&mut a, 1, 0, 3);
    shuffle_epoch(&mut b, 1, 0, 3);
    assert_eq!(a, b);
    assert_ne!(a, train);
    shuffle_epoch(&mut b, 1, 0, 4);
    assert_ne!(a, b);
}

#[test]
fn add_bias_is_idempotent() {
    let mut rows = vec![row(1.0, &[(3, 1.0)]), row(0.0, &[])];
    add_bias(&mut rows);
    add_bias(&mut rows);
    assert_eq!(rows[0].features, vec![(3, 1.0), (BIAS_KEY, 1.0)]);
    assert_eq!(rows[1].features, vec![(BIAS_KEY, 1.0)]);
}

#[test]
fn batch_keys_sorted_distinct() {
    let rows = vec![
        row(1.0, &[(9, 1.0), (3, 1.0)]),
        row(0.0, &[(3, 2.0), (BIAS_KEY, 1.0), (0, 1.0)]),
    ];
    assert_eq!(batch_keys(&rows), vec![0, 3, 9, BIAS_KEY]);
    assert!(batch_keys(&[]).is_empty());
}

/// O(n^2) AUC by definition, for checking.
fn auc_naive(y: &[f32], s: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..y.len() {
        for j in 0..y.len() {
            if y[i] > 0.5 && y[j] <= 0.5 {
                den += 1.0;
                if s[i] > s[j] {
                    num += 1.0;
                } else if s[i] == s[j] {
                    num += 0.5;
                }
            }
        }
    }
    if den == 0.0 {
        0.5
    } else {
        num / den
    }
}

#[test]
fn metrics_on_known_values() {
    let y = [1.0, 0.0, 1.0, 0.0];
    assert_eq!(auc(&y, &[0.9, 0.1, 0.8, 0.2]), 1.0);
    assert_eq!(auc(&y, &[0.1, 0.9, 0.2, 0.8]), 0.0);
    assert_eq!(auc(&y, &[0.5; 4]), 0.5);
    assert_eq!(auc(&[1.0, 1.0], &[0.1, 0.2]), 0.5);
    assert_eq!(auc(&[], &[]), 0.5);
    assert_eq!(accuracy(&y, &[1.0, -1.0, -1.0, 0.0]), 0.75);
    assert_eq!(accuracy(&[], &[]), 0.0);
    assert!((log_loss(&[1.0, 0.0], &[0.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-12);
    assert!(log_loss(&[1.0], &[-1e6]).is_finite());
    assert!((log_loss(&[1.0], &[-1e6]) - 1e6).abs() < 1e-6);
    let o = objective(&[1.0, 0.0], &[0.0, 0.0], &[1.0, -2.0, 0.0], 0.1, 0.5);
    assert!((o - (std::f64::consts::LN_2 + 0.3 + 0.25 * 5.0)).abs() < 1e-12);
    assert_eq!(nonzero_weights(&[0.0, 1.0, -0.0, 3.0]), 2);
    let rows = vec![row(1.0, &[(1, 2.0), (7, 1.0)]), row(0.0, &[(4, 1.0)])];
    assert_eq!(margins(&rows, &[1, 4], &[0.5, -3.0]), vec![1.0, -3.0]);
}

proptest! {
    #[test]
    fn auc_matches_definition(
        pts in proptest::collection::vec((any::<bool>(), -5i32..5), 0..60)
    ) {
        // Small integer scores force many ties.
        let y: Vec<f32> = pts.iter().map(|p| if p.0 { 1.0 } else { 0.0 }).collect();
        let s: Vec<f64> = pts.iter().map(|p| f64::from(p.1)).collect();
        let a = auc(&y, &s);
        prop_assert!((a - auc_naive(&y, &s)).abs() < 1e-12);
    }
}

#[test]
fn regression_labels_are_kept_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("reg.libsvm");
    std::fs::write(&p, "0.5 1:1\n-2 2:3\n7.25 1:2 3:1\n").unwrap();
    let d = ps_apps::lr::load_libsvm_values(&p).unwrap();
    let labels: Vec<f32> = d.rows.iter().map(|r| r.label).collect();
    assert_eq!(labels, vec![0.5, -2.0, 7.25]);
    // The classification loader refuses the third label, naming its line.
    let e = ps_apps::lr::load_libsvm(&p).unwrap_err().to_string();
    assert!(e.contains("reg.libsvm:3"), "{e}");
}
