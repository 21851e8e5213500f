//! Loader, generator and split tests for the LDA app.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use ps_apps::lda::{
    load_ldac, load_uci, parse_ldac, parse_uci_docword, split_docs, synthetic_lda, worker_doc_ids,
    Corpus, SyntheticLdaSpec, MAX_COUNT,
};
use ps_apps::DataError;

fn write_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).expect("create temp file");
    f.write_all(content).expect("write temp file");
    path
}

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}

const UCI: &[u8] = b"3\n5\n4\n1 2 2\n1 5 1\n3 1 3\n2 4 1\n";
const VOCAB: &[u8] = b"apple\nbanana\r\ncherry\ndate\nelder\n";
const LDAC: &[u8] = b"2 1:2 4:1\n1 3:1\n\n1 0:3\n";

fn check_uci(c: &Corpus) {
    assert_eq!(c.vocab_size, 5);
    assert_eq!(c.docs, vec![vec![1, 1, 4], vec![3], vec![0, 0, 0]]);
    assert_eq!(c.num_tokens(), 7);
}

#[test]
fn loads_uci_plain_with_vocab() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "docword.t.txt", UCI);
    let v = write_file(&dir, "vocab.t.txt", VOCAB);
    let c = load_uci(&p, Some(&v)).unwrap();
    check_uci(&c);
    assert_eq!(
        c.vocab.as_deref().unwrap(),
        ["apple", "banana", "cherry", "date", "elder"]
    );
}

#[test]
fn loads_uci_gzip_by_name_and_by_magic() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip(UCI);
    let p = write_file(&dir, "docword.t.txt.gz", &gz);
    check_uci(&load_uci(&p, None).unwrap());
    let p = write_file(&dir, "docword_no_ext", &gz);
    check_uci(&load_uci(&p, None).unwrap());
}

#[test]
fn loads_ldac_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let expected = vec![vec![1, 1, 4], vec![3], vec![0, 0, 0]];
    let p = write_file(&dir, "c.ldac", LDAC);
    let c = load_ldac(&p, None).unwrap();
    assert_eq!(c.docs, expected);
    assert_eq!(c.vocab_size, 5);
    let p = write_file(&dir, "c.ldac.gz", &gzip(LDAC));
    let v = write_file(&dir, "vocab.txt", b"a\nb\nc\nd\ne\nf\ng\n");
    let c = load_ldac(&p, Some(&v)).unwrap();
    assert_eq!(c.docs, expected);
    assert_eq!(c.vocab_size, 7);
    assert_eq!(c.vocab.as_ref().unwrap().len(), 7);
}

fn malformed_line(err: DataError) -> (u64, String) {
    match err {
        DataError::Malformed { line, reason, .. } => (line, reason),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn uci_err(content: &str) -> DataError {
    parse_uci_docword(content.as_bytes(), "f.txt").unwrap_err()
}

#[test]
fn uci_malformed_lines_are_named() {
    let cases: &[(&str, u64, &str)] = &[
        ("3\n5\n2\n1 2 x\n1 1 1\n", 4, "count"),
        ("3\n5\n2\n1 2 1\n4 1 1\n", 5, "docID"),
        ("3\n5\n2\n1 2 1\n0 1 1\n", 5, "docID"),
        ("3\n5\n2\n1 6 1\n1 1 1\n", 4, "wordID"),
        ("3\n5\n2\n1 2 0\n1 1 1\n", 4, "count must be"),
        ("3\n5\n2\n1 2 1000001\n1 1 1\n", 4, "exceeds"),
        ("3\n5\n2\n1 2 99999999999999999999\n", 4, "count"),
        ("3\n5\n2\n1 2\n", 4, "3 fields"),
        ("3\n5\n1\n1 2 1\n1 3 1\n", 5, "more entries"),
        ("3\n5\n3\n1 2 1\n1 3 1\n", 3, "NNZ = 3"),
        ("3\nfive\n2\n1 2 1\n", 2, "W"),
        ("3\n5\n", 3, "missing header"),
        ("3 4\n5\n1\n1 1 1\n", 1, "single integer"),
        ("-3\n5\n1\n1 1 1\n", 1, "D"),
    ];
    for (content, line, needle) in cases {
        let (l, reason) = malformed_line(uci_err(content));
        assert_eq!(l, *line, "{content:?}: {reason}");
        assert!(reason.contains(needle), "{content:?}: {reason}");
    }
    // Display names the file and the line.
    let msg = uci_err("3\n5\n2\n1 2 x\n1 1 1\n").to_string();
    assert!(msg.starts_with("f.txt:4: "), "{msg}");
    assert!(matches!(uci_err(""), DataError::Empty { .. }));
    assert!(matches!(uci_err("3\n5\n0\n"), DataError::Empty { .. }));
    let bytes = b"3\n5\n1\n1 \xff 1\n";
    let (l, reason) = malformed_line(parse_uci_docword(&bytes[..], "f").unwrap_err());
    assert_eq!(l, 4);
    assert!(reason.contains("UTF-8"), "{reason}");
}

#[test]
fn uci_file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "bad.txt", b"3\n5\n2\n1 2 1\n9 1 1\n");
    let msg = load_uci(&p, None).unwrap_err().to_string();
    assert!(msg.contains("bad.txt:5: "), "{msg}");
    let p = write_file(&dir, "good.txt", UCI);
    let v = write_file(&dir, "vocab.txt", b"a\nb\n");
    assert!(matches!(
        load_uci(&p, Some(&v)),
        Err(DataError::Mismatch { .. })
    ));
    let v = write_file(&dir, "vocab2.txt", b"a\n\nc\nd\ne\n");
    let (l, _) = malformed_line(load_uci(&p, Some(&v)).unwrap_err());
    assert_eq!(l, 2);
    let missing = dir.path().join("nope.txt");
    assert!(matches!(
        load_uci(&missing, None),
        Err(DataError::Io { .. })
    ));
    // A .gz name with non-gzip content is an error, not a panic.
    let p = write_file(&dir, "fake.txt.gz", UCI);
    assert!(load_uci(&p, None).is_err());
}

#[test]
fn ldac_malformed_lines_are_named() {
    let cases: &[(&str, Option<u64>, u64, &str)] = &[
        ("2 1:2 4:1\nx 1:1\n", None, 2, "term count"),
        ("2 1:2\n", None, 1, "N = 2"),
        ("1 1-2\n", None, 1, "id:count"),
        ("1 1:0\n", None, 1, "count must be"),
        ("1 a:1\n", None, 1, "word id"),
        ("1 1:b\n", None, 1, "count"),
        ("1 1:2\n1 5:1\n", Some(5), 2, "out of range"),
        ("1 99999999:1\n", None, 1, "exceeds"),
        ("1 1:2000000\n", None, 1, "exceeds"),
    ];
    for (content, vocab, line, needle) in cases {
        let err = parse_ldac(content.as_bytes(), "c.ldac", *vocab).unwrap_err();
        let (l, reason) = malformed_line(err);
        assert_eq!(l, *line, "{content:?}: {reason}");
        assert!(reason.contains(needle), "{content:?}: {reason}");
    }
    assert!(matches!(
        parse_ldac(&b"\n\n0\n"[..], "c", None),
        Err(DataError::Empty { .. })
    ));
}

#[test]
fn token_total_is_capped() {
    // 2,200 lines of the maximum count exceed MAX_TOKENS = 2^31 before the
    // tokens are materialised.
    let mut s = String::from("1\n1\n2200\n");
    for _ in 0..2200 {
        s.push_str(&format!("1 1 {MAX_COUNT}\n"));
    }
    let (l, reason) = malformed_line(uci_err(&s));
    assert!(reason.contains("total token count"), "{reason}");
    assert_eq!(l, 3 + 2148); // 2148 * 1e6 > 2^31
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_uci_docword(&bytes[..], "r");
        let _ = parse_ldac(&bytes[..], "r", None);
        let _ = parse_ldac(&bytes[..], "r", Some(3));
    }

    #[test]
    fn parsers_never_panic_on_random_lines(
        lines in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    Just("0".to_string()), Just("1".to_string()), Just("2".to_string()),
                    Just("3".to_string()), Just("-1".to_string()), Just("x".to_string()),
                    Just("1:1".to_string()), Just("0:2".to_string()), Just("2:0".to_string()),
                    Just("4294967296".to_string()), Just("1:".to_string()), Just(":".to_string()),
                    Just("1000000".to_string()),
                ],
                0..5,
            ),
            0..12,
        )
    ) {
        let text: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
        for result in [parse_uci_docword(text.as_bytes(), "r"), parse_ldac(text.as_bytes(), "r", None)] {
            match result {
                Ok(c) => {
                    prop_assert!(c.docs.iter().flatten().all(|&w| w < c.vocab_size));
                    prop_assert!(c.num_tokens() > 0);
                }
                Err(DataError::Malformed { line, .. }) => {
                    prop_assert!(line >= 1 && line as usize <= lines.len() + 1);
                }
                Err(DataError::Empty { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
        }
    }
}

#[test]
fn synthetic_is_deterministic_and_well_formed() {
    let spec = SyntheticLdaSpec {
        docs: 50,
        vocab: 40,
        topics: 4,
        doc_len: 30,
        ..SyntheticLdaSpec::default_builtin(3)
    };
    println!("seed 3");
    let a = synthetic_lda(&spec);
    let b = synthetic_lda(&spec);
    assert_eq!(a, b);
    assert_eq!(a.corpus.docs.len(), 50);
    assert!(a.corpus.docs.iter().all(|d| d.len() == 30));
    assert!(a.corpus.docs.iter().flatten().all(|&w| w < 40));
    assert_eq!(a.topics.len(), 4 * 40);
    for row in a.topics.chunks(40) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "row sums to {s}");
        assert!(row.iter().all(|&p| p > 0.0));
    }
    // Topic 1's block (words 10..20) holds ~ (1 - noise) of its mass.
    let block: f32 = a.topics[40 + 10..40 + 20].iter().sum();
    assert!((block - 0.925).abs() < 1e-3, "block mass {block}");
    let c = synthetic_lda(&SyntheticLdaSpec { seed: 4, ..spec });
    assert_ne!(a.corpus.docs, c.corpus.docs);
    // Degenerate specs do not panic.
    for (d, v, k) in [(0, 10, 2), (3, 0, 2), (3, 10, 0), (3, 2, 5)] {
        let s = synthetic_lda(&SyntheticLdaSpec {
            docs: d,
            vocab: v,
            topics: k,
            ..spec
        });
        assert!(s.corpus.docs.iter().flatten().all(|&w| w < v));
    }
}

#[test]
fn split_docs_partitions_round_robin() {
    let corpus = Corpus {
        docs: (0..7u32).map(|d| vec![d]).collect(),
        vocab_size: 7,
        vocab: None,
    };
    assert_eq!(worker_doc_ids(7, 3, 1), vec![1, 4]);
    let mut all: Vec<Vec<u32>> = (0..3).flat_map(|w| split_docs(&corpus, 3, w)).collect();
    all.sort();
    assert_eq!(all, corpus.docs);
    assert_eq!(split_docs(&corpus, 3, 0), vec![vec![0], vec![3], vec![6]]);
}

#[test]
fn loads_kos_if_present() {
    // `../shared/data` beside the repository, when there.
    let dir = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/kos");
    let dw = dir.join("docword.kos.txt.gz");
    let vocab = dir.join("vocab.kos.txt");
    if !dw.exists() || !vocab.exists() {
        println!("skipping: {} not present", dw.display());
        return;
    }
    let c = load_uci(&dw, Some(&vocab)).unwrap();
    println!(
        "kos: {} docs, V = {}, {} tokens",
        c.docs.len(),
        c.vocab_size,
        c.num_tokens()
    );
    assert_eq!(c.docs.len(), 3430);
    assert_eq!(c.vocab_size, 6906);
    assert_eq!(c.vocab.as_ref().unwrap().len(), 6906);
    assert!(c.num_tokens() > 400_000);
}
