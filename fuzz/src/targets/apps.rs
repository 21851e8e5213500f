// The data-file decoders of ps-apps, one function per fuzz target: each parses the fuzzer's
// bytes as a whole file (through the in-memory seam the path loader wraps) and checks what the
// loader promises of its result. A loader may return an error for any input; it must never
// panic, hang or allocate more than the input justifies.
//
// Shared word for word by the fuzz harness (fuzz/src/targets/mod.rs) and the regression test
// crates/ps-apps/tests/fuzz_regressions.rs (through `include!`). Plain `//` comments only: this
// file is included inside a module.

use ps_apps::lda::{parse_ldac, parse_uci_docword, parse_vocab, Corpus};
use ps_apps::lr::{parse_libsvm, parse_libsvm_values, LrDataset, MAX_FEATURE_INDEX};
use ps_apps::mf::parse_ratings;
use ps_apps::mlp::{parse_idx_images, parse_idx_labels};

/// A fuzz target: its name and the function that runs one input.
pub type Entry = (&'static str, fn(&[u8]));

/// The targets of this file.
pub const APP_TARGETS: &[Entry] = &[
    ("mf_ratings", mf_ratings),
    ("lda_uci", lda_uci),
    ("lda_ldac", lda_ldac),
    ("lda_vocab", lda_vocab),
    ("lr_libsvm", lr_libsvm),
    ("mlp_idx_images", mlp_idx_images),
    ("mlp_idx_labels", mlp_idx_labels),
];

const PATH: &str = "fuzz-input";

/// MF ratings (`u.data`, `ratings.csv`, `ratings.dat`, plain 3 or 4 columns): dense ids in range.
pub fn mf_ratings(data: &[u8]) {
    if let Ok(set) = parse_ratings(data, PATH) {
        assert!(!set.ratings.is_empty());
        for r in &set.ratings {
            assert!(r.user < set.num_users && r.item < set.num_items);
            assert!(r.value.is_finite());
        }
    }
}

fn check_corpus(c: &Corpus) {
    assert!(c.num_tokens() > 0);
    for d in &c.docs {
        assert!(d.iter().all(|&w| w < c.vocab_size), "word ids in range");
    }
}

/// LDA UCI bag-of-words `docword` files.
pub fn lda_uci(data: &[u8]) {
    if let Ok(c) = parse_uci_docword(data, PATH) {
        check_corpus(&c);
    }
}

/// LDA lda-c files, without a vocabulary and then with one exactly as long as the ids need
/// (the same corpus) and one word shorter (an error).
pub fn lda_ldac(data: &[u8]) {
    let Ok(c) = parse_ldac(data, PATH, None) else {
        let _ = parse_ldac(data, PATH, Some(16));
        return;
    };
    check_corpus(&c);
    let v = u64::from(c.vocab_size);
    let with = parse_ldac(data, PATH, Some(v));
    assert!(with
        .as_ref()
        .is_ok_and(|w| w.docs == c.docs && w.vocab_size == c.vocab_size));
    assert!(parse_ldac(data, PATH, Some(v - 1)).is_err());
}

/// LDA vocabulary files (one word per line).
pub fn lda_vocab(data: &[u8]) {
    if let Ok(words) = parse_vocab(data, PATH) {
        assert!(words.iter().all(|w| !w.is_empty() && w.trim() == w));
    }
}

fn check_rows(d: &LrDataset) {
    assert!(!d.rows.is_empty());
    for r in &d.rows {
        assert!(r.features.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        for &(k, v) in &r.features {
            assert!((1..=MAX_FEATURE_INDEX).contains(&k) && v.is_finite());
            assert!(k <= d.num_features_hint);
        }
    }
}

/// LR libsvm files (plain or gzip), two-class and values: a file the two-class loader takes,
/// the values loader takes with the same rows.
pub fn lr_libsvm(data: &[u8]) {
    let values = parse_libsvm_values(data, PATH);
    if let Ok(v) = &values {
        check_rows(v);
    }
    if let Ok(two) = parse_libsvm(data, PATH) {
        check_rows(&two);
        assert!(two.rows.iter().all(|r| r.label == 0.0 || r.label == 1.0));
        let v = values.as_ref().ok();
        assert!(v.is_some_and(|v| v.rows.len() == two.rows.len()
            && v.rows
                .iter()
                .zip(&two.rows)
                .all(|(a, b)| a.features == b.features)));
    }
}

/// MLP IDX image files (plain or gzip).
pub fn mlp_idx_images(data: &[u8]) {
    if let Ok(img) = parse_idx_images(PATH, data) {
        assert!(matches!(img.dims.len(), 1 | 2) && img.dims.iter().all(|&d| d >= 1));
        assert_eq!(img.pixels.len(), img.n * img.d());
    }
}

/// MLP IDX label files (plain or gzip), for 10 classes and for 256: labels within 10 are
/// within 256 too.
pub fn mlp_idx_labels(data: &[u8]) {
    let all = parse_idx_labels(PATH, data, 256);
    if let Ok(ten) = parse_idx_labels(PATH, data, 10) {
        assert!(ten.iter().all(|&l| l < 10));
        assert_eq!(all.ok(), Some(ten));
    }
}
