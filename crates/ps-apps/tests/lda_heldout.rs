//! LDA with a held-out corpus file: a job through the in-memory parameter server scores the
//! held-out documents by document completion, the score improves with training, words outside
//! the training vocabulary are counted rather than scored, and bad combinations are refused.

use ps_apps::app::testing::run_bsp;
use ps_apps::app::{App, CpuEngines, JobCommon};
use ps_apps::lda::{synthetic_lda, Corpus, LdaApp, LdaArgs, LdaFinal, SyntheticLdaSpec};
use ps_apps::AppError;
use std::path::{Path, PathBuf};

fn job() -> JobCommon {
    JobCommon {
        workers: 2,
        seed: 3,
        threads: 1,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

/// Writes documents as a UCI docword file declaring `vocab` words.
fn docword(path: &Path, docs: &[Vec<u32>], vocab: u32) {
    let mut rows = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let mut counts = std::collections::BTreeMap::new();
        for &w in doc {
            *counts.entry(w).or_insert(0u32) += 1;
        }
        for (w, c) in counts {
            rows.push(format!("{} {} {c}", d + 1, w + 1));
        }
    }
    let head = format!("{}\n{vocab}\n{}\n", docs.len(), rows.len());
    std::fs::write(path, head + &rows.join("\n") + "\n").unwrap();
}

/// A synthetic corpus, one document in ten held out; the held-out file declares 5 more words
/// than the training file and its first document uses one of them.
fn files(dir: &Path) -> (PathBuf, PathBuf, Corpus) {
    let spec = SyntheticLdaSpec {
        docs: 300,
        vocab: 200,
        topics: 5,
        doc_len: 60,
        ..SyntheticLdaSpec::default_builtin(9)
    };
    let c = synthetic_lda(&spec).corpus;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (d, doc) in c.docs.iter().enumerate() {
        if d % 10 == 0 {
            test.push(doc.clone());
        } else {
            train.push(doc.clone());
        }
    }
    test[0].push(spec.vocab + 2);
    let (tr, te) = (dir.join("docword.train.txt"), dir.join("docword.test.txt"));
    docword(&tr, &train, spec.vocab);
    docword(&te, &test, spec.vocab + 5);
    let held = Corpus {
        docs: test,
        vocab_size: spec.vocab + 5,
        vocab: None,
    };
    (tr, te, held)
}

fn args(data: &Path, test: Option<&Path>) -> LdaArgs {
    LdaArgs {
        topics: 5,
        alpha: 0.1,
        beta: 0.01,
        data: Some(data.to_path_buf()),
        vocab: None,
        test: test.map(Path::to_path_buf),
        ..Default::default()
    }
}

fn held_out(clocks: u64, data: &Path, test: &Path) -> LdaFinal {
    let plan = LdaApp.plan(&args(data, Some(test)), &job()).unwrap();
    let run = run_bsp(&LdaApp, &plan, 2, clocks, &CpuEngines).unwrap();
    let mut sum = LdaFinal::default();
    for f in &run.finals {
        sum.heldout_loglik += f.sums.heldout_loglik;
        sum.heldout_tokens += f.sums.heldout_tokens;
        sum.heldout_unknown_tokens += f.sums.heldout_unknown_tokens;
        sum.heldout_skipped_docs += f.sums.heldout_skipped_docs;
    }
    sum
}

#[test]
fn held_out_documents_are_scored_and_training_improves_the_score() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, held) = files(dir.path());
    let early = held_out(2, &train, &test);
    let late = held_out(25, &train, &test);
    // Every known token at an odd position is scored, on whichever worker holds its document.
    let odd: u64 = held
        .docs
        .iter()
        .map(|d| (d.iter().filter(|&&w| w < 200).count() / 2) as u64)
        .sum();
    assert_eq!(late.heldout_tokens as u64, odd);
    assert_eq!(late.heldout_unknown_tokens, 1.0);
    assert_eq!(late.heldout_skipped_docs, 0.0);
    let perplexity = |f: &LdaFinal| (-f.heldout_loglik / f.heldout_tokens).exp();
    let (p0, p1) = (perplexity(&early), perplexity(&late));
    eprintln!("held-out perplexity after 2 clocks {p0:.1}, after 25 {p1:.1}");
    assert!(p1.is_finite() && p1 < 0.8 * p0, "{p1} vs {p0}");
    // Fewer than the vocabulary: the topics say something about unseen documents.
    assert!(p1 < 200.0, "{p1}");
}

#[test]
fn a_held_out_corpus_must_match_the_training_format_and_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _, _) = files(dir.path());
    let ldac = dir.path().join("held.dat");
    std::fs::write(&ldac, "2 0:1 1:1\n").unwrap();
    match LdaApp.plan(&args(&train, Some(&ldac)), &job()) {
        Err(AppError::Settings(m)) => assert!(m.contains("format"), "{m}"),
        other => panic!("expected a settings error, got {:?}", other.err()),
    }
    let missing = dir.path().join("docword.none.txt");
    let e = LdaApp
        .plan(&args(&train, Some(&missing)), &job())
        .unwrap_err()
        .to_string();
    assert!(e.contains("docword.none.txt"), "{e}");
}
