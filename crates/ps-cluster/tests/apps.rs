//! Whole jobs of every application through the `ps-cluster` binary (2 shards and 2 workers as
//! separate processes over QUIC): the built-in data reaches each app's bar, real file formats
//! load and train, bad files are named by file and line, and the datasets beside the repository
//! (`../shared/data`), when present, reach the bars a user would expect.

mod common;

use common::{ps_cluster, summary};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

fn f(s: &serde_json::Value, key: &str) -> f64 {
    s[key]
        .as_f64()
        .unwrap_or_else(|| panic!("summary lacks a number {key}: {s}"))
}

/// The per-clock log-likelihoods an LDA job printed (clock 0 pushes the initial counts).
fn lda_clock_logliks(out: &Output) -> Vec<f64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("loglik/token ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        println!("SKIP: {rel} is not in ../shared/data beside the repository");
        None
    }
}

fn assert_fails_naming(args: &[&str], needle: &str) {
    let out = ps_cluster(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "{args:?}: wanted {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn local_lda_job_recovers_the_topics() {
    let out = ps_cluster(&["local", "--app", "lda"]);
    let s = summary(&out);
    assert_eq!(
        (s["servers"].as_u64(), s["workers"].as_u64()),
        (Some(2), Some(2))
    );
    let recovery = f(&s, "topic_recovery");
    assert!(recovery >= 0.9, "topic_recovery {recovery} < 0.9: {s}");
    let (initial, last) = (f(&s, "loglik_per_token_initial"), f(&s, "loglik_per_token"));
    assert!(last > initial + 0.5, "loglik {initial} -> {last}");
    let per_clock = lda_clock_logliks(&out);
    assert_eq!(per_clock.len(), 29, "clocks 1..=29 print a loglik");
    assert!(per_clock.first().unwrap() < per_clock.last().unwrap());
    assert!(f(&s, "tokens_per_s") > 0.0);
    assert_eq!(s["tokens"].as_u64(), Some(200_000));
    // Raw pushes of count deltas go as their nonzero entries (1.0 when they went dense).
    let ratio = f(&s, "push_compression_ratio");
    assert!(ratio > 1.3, "push_compression_ratio {ratio}: {s}");
    // The final model's counts are counts, and its totals their column sums.
    assert_eq!(s["word_topic_negative_counts"].as_u64(), Some(0), "{s}");
    assert_eq!(f(&s, "topic_totals_gap"), 0.0, "{s}");
}

/// `--eval-every 3` measures the log-likelihood at clocks 1, 4 and 7 (and the final model's),
/// says so on the clocks between, and leaves the chain alone: the same word-topic table, and the
/// same figures where both measure.
#[test]
fn lda_measures_its_likelihood_every_nth_clock_when_asked() {
    let args = ["local", "--app", "lda", "--clocks", "8"];
    let every = ps_cluster(&args);
    let third = ps_cluster(&[&args[..], &["--eval-every", "3"]].concat());
    let (a, b) = (summary(&every), summary(&third));
    assert_eq!(a["word_topic_hash"], b["word_topic_hash"]);
    assert_eq!(a["loglik_per_token"], b["loglik_per_token"]);
    assert_eq!(a["loglik_per_token_initial"], b["loglik_per_token_initial"]);
    let lines = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("clock"))
            .map(|l| {
                // "clock   N  <the app's part>  compute ...": the app's part.
                let number_on = l["clock".len()..].trim_start();
                let rest = number_on
                    .split_once(' ')
                    .map_or("", |(_, r)| r.trim_start());
                rest.split("  compute").next().unwrap_or("").to_string()
            })
            .collect()
    };
    let (all, some) = (lines(&every), lines(&third));
    assert_eq!((all.len(), some.len()), (8, 8), "{all:?}\n{some:?}");
    for c in 1..8 {
        if (c - 1) % 3 == 0 {
            assert_eq!(some[c], all[c], "clock {c}");
        } else {
            assert_eq!(
                some[c], "loglik/token not measured (--eval-every)",
                "clock {c}"
            );
        }
    }
    assert_fails_naming(
        &["local", "--app", "lda", "--eval-every", "0"],
        "--eval-every",
    );
}

#[test]
fn local_mlp_job_reaches_095() {
    let s = summary(&ps_cluster(&["local", "--app", "mlp"]));
    let acc = f(&s, "test_accuracy");
    assert!(acc >= 0.95, "test_accuracy {acc} < 0.95: {s}");
    assert!(f(&s, "train_loss") < 0.5);
    assert!(f(&s, "samples_per_s") > 0.0);
    assert_eq!(s["layers"], "64-128-128-10");
    assert_eq!(s["clocks"].as_u64(), Some(15));
}

#[test]
fn local_lr_job_reaches_auc_09() {
    let s = summary(&ps_cluster(&["local", "--app", "lr"]));
    let auc = f(&s, "test_auc");
    assert!(auc >= 0.9, "test_auc {auc} < 0.9: {s}");
    assert!(f(&s, "test_accuracy") > 0.8);
    assert!(f(&s, "objective").is_finite());
    // L1 keeps the model sparse: the truth has 1,000 nonzero weights of ~90,000 features seen.
    let nonzero = f(&s, "nonzero_weights");
    assert!(nonzero > 100.0 && nonzero < 0.1 * f(&s, "features"), "{s}");
    assert!(f(&s, "samples_per_s") > 0.0);
}

#[test]
fn flags_of_another_app_are_refused() {
    assert_fails_naming(
        &["local", "--app", "lda", "--rank", "4"],
        "--rank does not apply",
    );
    assert_fails_naming(
        &["local", "--app", "mf", "--topics", "4"],
        "--topics does not apply",
    );
    assert_fails_naming(
        &["local", "--app", "lr", "--hidden", "4"],
        "--hidden does not apply",
    );
    assert_fails_naming(
        &["local", "--app", "lr", "--test", "x"],
        "--test needs --data",
    );
    assert_fails_naming(&["local", "--app", "svm"], "invalid value 'svm'");
}

// ----- file formats -----

/// A small corpus of `topics` disjoint 10-word topics, one topic per document.
fn small_corpus(docs: usize, topics: usize) -> Vec<Vec<(u32, u32)>> {
    (0..docs)
        .map(|d| {
            let t = d % topics;
            (0..10)
                .filter(|w| (w + d) % 3 != 0)
                .map(|w| ((t * 10 + w) as u32, 1 + ((w + d) % 4) as u32))
                .collect()
        })
        .collect()
}

#[test]
fn lda_trains_on_uci_and_lda_c_files_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = small_corpus(200, 4);
    let vocab: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    // UCI docword (1-based ids) with vocab.NAME.txt beside it, found without --vocab.
    let nnz: usize = corpus.iter().map(Vec::len).sum();
    let mut uci = format!("{}\n{}\n{nnz}\n", corpus.len(), vocab.len());
    for (d, doc) in corpus.iter().enumerate() {
        for (w, c) in doc {
            uci += &format!("{} {} {c}\n", d + 1, w + 1);
        }
    }
    let docword = dir.path().join("docword.small.txt");
    std::fs::write(&docword, &uci).unwrap();
    std::fs::write(dir.path().join("vocab.small.txt"), vocab.join("\n") + "\n").unwrap();
    let out = ps_cluster(&[
        "local",
        "--app",
        "lda",
        "--data",
        docword.to_str().unwrap(),
        "--topics",
        "4",
        "--clocks",
        "12",
    ]);
    let s = summary(&out);
    assert_eq!(s["format"], "uci");
    assert_eq!(
        (s["docs"].as_u64(), s["vocab"].as_u64()),
        (Some(200), Some(40))
    );
    assert!(f(&s, "loglik_per_token") > f(&s, "loglik_per_token_initial"));
    // The vocabulary was found: worker 0 lists each topic's top words.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("topic   3: w"), "{stderr}");

    // lda-c: "N id:count ...", 0-based ids.
    let ldac: String = corpus
        .iter()
        .map(|doc| {
            let pairs: Vec<String> = doc.iter().map(|(w, c)| format!("{w}:{c}")).collect();
            format!("{} {}\n", doc.len(), pairs.join(" "))
        })
        .collect();
    let ldac_path = dir.path().join("small.ldac");
    std::fs::write(&ldac_path, &ldac).unwrap();
    let s = summary(&ps_cluster(&[
        "local",
        "--app",
        "lda",
        "--data",
        ldac_path.to_str().unwrap(),
        "--topics",
        "4",
        "--clocks",
        "12",
    ]));
    assert_eq!(s["format"], "lda-c");
    assert!(f(&s, "loglik_per_token") > f(&s, "loglik_per_token_initial"));

    // A bad line is named by file and line.
    let bad = dir.path().join("docword.bad.txt");
    std::fs::write(&bad, "2\n5\n2\n1 3 2\n2 x 1\n").unwrap();
    assert_fails_naming(
        &["local", "--app", "lda", "--data", bad.to_str().unwrap()],
        "docword.bad.txt:5",
    );
    let bad = dir.path().join("bad.ldac");
    std::fs::write(&bad, "1 0:1\n2 3:1 4\n").unwrap();
    assert_fails_naming(
        &["local", "--app", "lda", "--data", bad.to_str().unwrap()],
        "bad.ldac:2",
    );
}

#[test]
fn lr_trains_on_libsvm_files_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    // Label 1 exactly when feature 1 or 2 is present; features 3..=30 are noise.
    let line = |i: usize| {
        let positive = i.is_multiple_of(2);
        let signal = if positive { 1 + (i / 2) % 2 } else { 0 };
        let mut feats: Vec<usize> = (0..4).map(|j| 3 + (i * 7 + j * 5) % 28).collect();
        if signal > 0 {
            feats.push(signal);
        }
        feats.sort_unstable();
        feats.dedup();
        let fs: Vec<String> = feats.iter().map(|k| format!("{k}:1")).collect();
        format!("{} {}\n", if positive { "+1" } else { "-1" }, fs.join(" "))
    };
    let train = dir.path().join("small.train");
    let test = dir.path().join("small.test");
    std::fs::write(&train, (0..2000).map(line).collect::<String>()).unwrap();
    std::fs::write(&test, (2000..2500).map(line).collect::<String>()).unwrap();
    let s = summary(&ps_cluster(&[
        "local",
        "--app",
        "lr",
        "--data",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--batch",
        "50",
        "--lr",
        "1",
    ]));
    assert_eq!(
        (s["train_rows"].as_u64(), s["test_rows"].as_u64()),
        (Some(2000), Some(500))
    );
    assert!(f(&s, "test_accuracy") > 0.95, "{s}");
    assert!(f(&s, "test_auc") > 0.95, "{s}");
    // 10 epochs of 20 batches per worker.
    assert_eq!(s["clocks"].as_u64(), Some(200));

    let bad = dir.path().join("bad.svm");
    std::fs::write(&bad, "+1 1:1 2:1\n-1 3:x\n").unwrap();
    assert_fails_naming(
        &["local", "--app", "lr", "--data", bad.to_str().unwrap()],
        "bad.svm:2",
    );
}

/// IDX files: images `n x side x side` (u8) and labels, gzipped or not.
fn write_idx(dir: &Path, prefix: &str, n: usize, side: usize, gzip: bool, seed: usize) {
    let mut images = vec![0, 0, 8, 3];
    for x in [n, side, side] {
        images.extend((x as u32).to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    for i in 0..n {
        // Class c lights up row c of the image; every pixel gets a little noise.
        let c = (i * 7 + seed) % 4;
        labels.push(c as u8);
        for p in 0..side * side {
            let noise = ((i * 31 + p * 17 + seed) % 40) as u8;
            images.push(if p / side == c {
                200 + noise / 4
            } else {
                noise
            });
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        if gzip {
            let file = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    write(&format!("{prefix}-images-idx3-ubyte"), &images);
    write(&format!("{prefix}-labels-idx1-ubyte"), &labels);
}

#[test]
fn mlp_trains_on_idx_files_and_names_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), "train", 800, 6, true, 1);
    write_idx(dir.path(), "t10k", 200, 6, false, 2);
    let s = summary(&ps_cluster(&[
        "local",
        "--app",
        "mlp",
        "--data",
        dir.path().to_str().unwrap(),
        "--hidden",
        "16",
        "--clocks",
        "8",
    ]));
    assert_eq!(s["layers"], "36-16-10");
    assert_eq!(
        (s["train_samples"].as_u64(), s["test_samples"].as_u64()),
        (Some(800), Some(200))
    );
    assert!(f(&s, "test_accuracy") > 0.9, "{s}");

    // A label beyond the classes is an error naming the file.
    let bad = tempfile::tempdir().unwrap();
    write_idx(bad.path(), "train", 10, 4, false, 1);
    write_idx(bad.path(), "t10k", 10, 4, false, 1);
    let labels = bad.path().join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[8] = 200;
    std::fs::write(&labels, bytes).unwrap();
    assert_fails_naming(
        &[
            "local",
            "--app",
            "mlp",
            "--data",
            bad.path().to_str().unwrap(),
        ],
        "t10k-labels-idx1-ubyte",
    );
    // A file instead of a directory is refused with a hint.
    assert_fails_naming(
        &["local", "--app", "mlp", "--data", labels.to_str().unwrap()],
        "directory of IDX files",
    );
}

// ----- the datasets beside the repository -----

#[test]
fn lda_on_kos_gains_likelihood_clock_by_clock() {
    let Some(docword) = shared_data("kos/docword.kos.txt.gz") else {
        return;
    };
    let out = ps_cluster(&[
        "local",
        "--app",
        "lda",
        "--data",
        docword.to_str().unwrap(),
        "--topics",
        "20",
        "--clocks",
        "15",
    ]);
    let s = summary(&out);
    assert_eq!(s["docs"].as_u64(), Some(3430));
    let per_clock = lda_clock_logliks(&out);
    assert_eq!(per_clock.len(), 14);
    for w in per_clock.windows(2) {
        assert!(w[1] > w[0], "loglik fell: {per_clock:?}");
    }
    assert!(f(&s, "loglik_per_token") > *per_clock.last().unwrap());
}

#[test]
fn lr_on_a9a_reaches_0845() {
    let (Some(train), Some(test)) = (shared_data("a9a/a9a"), shared_data("a9a/a9a.t")) else {
        return;
    };
    let s = summary(&ps_cluster(&[
        "local",
        "--app",
        "lr",
        "--data",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
    ]));
    let acc = f(&s, "test_accuracy");
    assert!(acc >= 0.845, "a9a test accuracy {acc} < 0.845: {s}");
}
