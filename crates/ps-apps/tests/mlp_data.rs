//! IDX loader, synthetic generator and split tests for the MLP app.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use ps_apps::mlp::{
    load_idx_pair, load_idx_pair_classes, load_mnist_dir, parse_idx_images, parse_idx_labels,
    read_idx_images, split_train_test, standardise, synthetic_mlp, SyntheticMlpSpec,
    MAX_IDX_PAYLOAD,
};
use ps_apps::DataError;

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// 3 images of 2x2 and their labels.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = vec![0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40];
    (idx_images(3, 2, 2, &pixels), idx_labels(&[7, 0, 9]))
}

fn format_reason(e: DataError, path_part: &str) -> String {
    match e {
        DataError::Format { path, reason } => {
            assert!(path.contains(path_part), "error names {path}");
            reason
        }
        other => panic!("expected Format error, got {other:?}"),
    }
}

#[test]
fn mlp_idx_loads_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, labels) = sample();
    for gzip in [false, true] {
        let (i, l) = if gzip {
            (gz(&imgs), gz(&labels))
        } else {
            (imgs.clone(), labels.clone())
        };
        let ip = write(dir.path(), &format!("imgs{gzip}"), &i);
        let lp = write(dir.path(), &format!("labels{gzip}"), &l);
        let ds = load_idx_pair(&ip, &lp).unwrap();
        assert_eq!((ds.n, ds.d, ds.classes), (3, 4, 10));
        assert_eq!(ds.y, vec![7, 0, 9]);
        assert_eq!(ds.x[0], 0.0);
        assert_eq!(ds.x[1], 1.0);
        assert!((ds.x[2] - 0.2).abs() < 1e-7);
        assert!(ds.x.iter().all(|v| (0.0..=1.0).contains(v)));
        let raw = read_idx_images(&ip).unwrap();
        assert_eq!(raw.dims, vec![2, 2]);
        assert_eq!(raw.n, 3);
    }
    // Mixed: gzip images, plain labels.
    let ip = write(dir.path(), "mixed-imgs.gz", &gz(&imgs));
    let lp = write(dir.path(), "mixed-labels", &labels);
    assert_eq!(load_idx_pair(&ip, &lp).unwrap().n, 3);
}

#[test]
fn mlp_idx_multimember_gzip_is_read_whole() {
    let (imgs, labels) = sample();
    let mut two = gz(&imgs[..10]);
    two.extend(gz(&imgs[10..]));
    let ds = parse_idx_images("two.gz", &two).unwrap();
    assert_eq!(ds.pixels.len(), 12);
    assert_eq!(parse_idx_labels("l", &labels, 10).unwrap(), vec![7, 0, 9]);
}

#[test]
fn mlp_idx_rejects_bad_files_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, labels) = sample();
    let lp = write(dir.path(), "good-labels", &labels);
    let ip = write(dir.path(), "good-imgs", &imgs);

    let check = |name: &str, bytes: &[u8], want: &str| {
        for gzip in [false, true] {
            let fname = format!("{name}{}", if gzip { ".gz" } else { "" });
            let data = if gzip { gz(bytes) } else { bytes.to_vec() };
            let p = write(dir.path(), &fname, &data);
            let reason = format_reason(load_idx_pair(&p, &lp).unwrap_err(), &fname);
            assert!(
                reason.contains(want),
                "{fname}: reason {reason:?} lacks {want:?}"
            );
        }
    };
    let mut bad_magic = imgs.clone();
    bad_magic[0] = 1;
    check("bad-magic", &bad_magic, "bad IDX magic");
    let mut bad_type = imgs.clone();
    bad_type[2] = 0x0D;
    check("bad-type", &bad_type, "data type");
    check("labels-as-images", &labels, "dimensions");
    check("truncated", &imgs[..imgs.len() - 1], "needs 12 data bytes");
    let mut trailing = imgs.clone();
    trailing.push(0);
    check("trailing", &trailing, "");
    check("short-header", &imgs[..7], "");
    check("empty-file", &[], "");
    // Hostile header: 2^32-1 x 2^32-1 x 2^32-1 images in a tiny file.
    let huge = idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2, 3]);
    check(
        "huge",
        &huge,
        &format!("over the {MAX_IDX_PAYLOAD}-byte limit"),
    );
    // Declared 1000x28x28 (784 kB, under the cap) but only 12 bytes present.
    let lying = idx_images(1000, 28, 28, &imgs[16..]);
    check("lying", &lying, "needs 784000 data bytes");
    let zero_dim = idx_images(3, 0, 2, &[]);
    check("zero-dim", &zero_dim, "image dimensions");

    // Label out of range.
    let bad_l = write(dir.path(), "bad-labels", &idx_labels(&[1, 10, 2]));
    let reason = format_reason(load_idx_pair(&ip, &bad_l).unwrap_err(), "bad-labels");
    assert!(reason.contains("label 10 at index 1"), "{reason}");
    // ... but fine with more classes.
    assert_eq!(load_idx_pair_classes(&ip, &bad_l, 11).unwrap().classes, 11);

    // Count mismatch names both files.
    let two = write(dir.path(), "two-labels", &idx_labels(&[1, 2]));
    match load_idx_pair(&ip, &two).unwrap_err() {
        DataError::Mismatch { what } => {
            assert!(
                what.contains("good-imgs") && what.contains("two-labels"),
                "{what}"
            );
        }
        e => panic!("expected Mismatch, got {e:?}"),
    }

    // Zero images.
    let none_i = write(dir.path(), "none-imgs", &idx_images(0, 2, 2, &[]));
    let none_l = write(dir.path(), "none-labels", &idx_labels(&[]));
    assert!(matches!(
        load_idx_pair(&none_i, &none_l).unwrap_err(),
        DataError::Empty { .. }
    ));

    // Missing file.
    let missing = dir.path().join("nope");
    assert!(matches!(
        load_idx_pair(&missing, &lp).unwrap_err(),
        DataError::Io { .. }
    ));

    // Corrupt gzip: valid gzip magic, garbage after; and a truncated stream.
    let mut corrupt = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    corrupt.extend_from_slice(&[0xff; 40]);
    let p = write(dir.path(), "corrupt.gz", &corrupt);
    format_reason(load_idx_pair(&p, &lp).unwrap_err(), "corrupt.gz");
    let full = gz(&imgs);
    let p = write(dir.path(), "cut.gz", &full[..full.len() - 6]);
    format_reason(load_idx_pair(&p, &lp).unwrap_err(), "cut.gz");
}

#[test]
fn mlp_load_mnist_dir_accepts_name_variants() {
    let (imgs, labels) = sample();
    let (timgs, tlabels) = (idx_images(1, 2, 2, &[9, 9, 9, 9]), idx_labels(&[4]));
    // Dash names, gzipped.
    let a = tempfile::tempdir().unwrap();
    write(a.path(), "train-images-idx3-ubyte.gz", &gz(&imgs));
    write(a.path(), "train-labels-idx1-ubyte.gz", &gz(&labels));
    write(a.path(), "t10k-images-idx3-ubyte.gz", &gz(&timgs));
    write(a.path(), "t10k-labels-idx1-ubyte.gz", &gz(&tlabels));
    let (tr, te) = load_mnist_dir(a.path()).unwrap();
    assert_eq!((tr.n, te.n, tr.d, te.y[0]), (3, 1, 4, 4));
    // Dot names, plain.
    let b = tempfile::tempdir().unwrap();
    write(b.path(), "train-images.idx3-ubyte", &imgs);
    write(b.path(), "train-labels.idx1-ubyte", &labels);
    write(b.path(), "t10k-images.idx3-ubyte", &timgs);
    write(b.path(), "t10k-labels.idx1-ubyte", &tlabels);
    let (tr2, te2) = load_mnist_dir(b.path()).unwrap();
    assert_eq!(tr, tr2);
    assert_eq!(te, te2);
    // Missing test labels.
    std::fs::remove_file(b.path().join("t10k-labels.idx1-ubyte")).unwrap();
    match load_mnist_dir(b.path()).unwrap_err() {
        DataError::Io { path, source } => {
            assert!(path.contains("t10k-labels"), "{path}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("expected Io, got {e:?}"),
    }
    // Train/test image size mismatch.
    write(b.path(), "t10k-labels.idx1-ubyte", &tlabels);
    write(
        b.path(),
        "t10k-images.idx3-ubyte",
        &idx_images(1, 1, 3, &[1, 2, 3]),
    );
    assert!(matches!(
        load_mnist_dir(b.path()).unwrap_err(),
        DataError::Mismatch { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic (plain or behind a gzip header).
    #[test]
    fn mlp_idx_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                        classes in 0usize..300) {
        let _ = parse_idx_images("rand", &bytes);
        let _ = parse_idx_labels("rand", &bytes, classes);
        let mut g = vec![0x1f, 0x8b];
        g.extend_from_slice(&bytes);
        let _ = parse_idx_images("rand.gz", &g);
        let _ = parse_idx_labels("rand.gz", &g, classes);
        let _ = parse_idx_images("rand.gz", &gz(&bytes));
    }

    /// A valid magic with arbitrary dims and payload never panics, and is
    /// accepted exactly when the payload length matches the dims.
    #[test]
    fn mlp_idx_random_headers(n in 0u32..5, rows in prop_oneof![0u32..4, Just(u32::MAX)],
                              cols in 0u32..4, extra in 0usize..40, gzip in any::<bool>()) {
        let payload = vec![7u8; extra];
        let mut bytes = idx_images(n, rows, cols, &payload);
        if gzip {
            bytes = gz(&bytes);
        }
        let res = parse_idx_images("hdr", &bytes);
        let want = u64::from(n) * u64::from(rows) * u64::from(cols);
        let ok = want == extra as u64 && rows > 0 && cols > 0;
        prop_assert_eq!(res.is_ok(), ok, "{:?}", res);
    }
}

#[test]
fn mlp_synthetic_is_deterministic_and_balanced() {
    let mut spec = SyntheticMlpSpec::default_builtin(3);
    spec.train = 2000;
    spec.test = 500;
    let (a, at) = synthetic_mlp(&spec);
    let (b, bt) = synthetic_mlp(&spec);
    assert_eq!(a, b);
    assert_eq!(at, bt);
    assert_eq!((a.n, a.d, a.classes, at.n), (2000, 64, 10, 500));
    assert_eq!(a.x.len(), 2000 * 64);
    assert!(a.x.iter().all(|v| v.is_finite() && v.abs() < 2.0));
    let counts = a.class_counts();
    assert!(
        counts.iter().all(|&c| (120..=280).contains(&c)),
        "{counts:?}"
    );
    spec.seed = 4;
    assert_ne!(synthetic_mlp(&spec).0, a);
}

#[test]
fn mlp_split_and_standardise() {
    let mut spec = SyntheticMlpSpec::default_builtin(5);
    spec.train = 1000;
    spec.test = 10;
    let (ds, _) = synthetic_mlp(&spec);
    let (tr, te) = split_train_test(&ds, 0.25, 1);
    assert_eq!((tr.n, te.n), (750, 250));
    let (tr2, te2) = split_train_test(&ds, 0.25, 1);
    assert_eq!((&tr, &te), (&tr2, &te2));
    // Every sample lands in exactly one half.
    let mut all: Vec<Vec<f32>> = (0..tr.n).map(|i| tr.row(i).to_vec()).collect();
    all.extend((0..te.n).map(|i| te.row(i).to_vec()));
    let mut orig: Vec<Vec<f32>> = (0..ds.n).map(|i| ds.row(i).to_vec()).collect();
    let key = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    all.sort_by_key(key);
    orig.sort_by_key(key);
    assert_eq!(all, orig);

    let (mut a, mut b) = (tr.clone(), te.clone());
    standardise(&mut a, &mut [&mut b]).unwrap();
    for j in 0..a.d {
        let col: Vec<f64> = (0..a.n).map(|i| f64::from(a.row(i)[j])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }
    let mut other = SyntheticMlpSpec::default_builtin(5);
    other.features = 3;
    other.train = 5;
    let (mut c, _) = synthetic_mlp(&other);
    assert!(matches!(
        standardise(&mut a, &mut [&mut c]).unwrap_err(),
        DataError::Mismatch { .. }
    ));
}

#[test]
fn mlp_fashion_mnist_loads_when_present() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        println!(
            "SKIP: {} not present (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let (tr, te) = load_mnist_dir(dir).expect("load fashion-mnist");
    assert_eq!((tr.n, tr.d, te.n, te.d), (60_000, 784, 10_000, 784));
    assert_eq!(tr.class_counts(), vec![6000; 10]);
    assert_eq!(te.class_counts(), vec![1000; 10]);
    assert!(tr.x.iter().all(|v| (0.0..=1.0).contains(v)));
}
