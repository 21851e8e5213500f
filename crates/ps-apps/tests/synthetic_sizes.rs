//! The built-in synthetic sets at other sizes: each generator is a pure function of its spec
//! whatever the thread count, the flags that size them reach the data, and flags out of range
//! are refused by name.

use ps_apps::app::{App, JobCommon};
use ps_apps::lda::{
    split_docs, synthetic_lda_threads, synthetic_lda_worker, LdaApp, LdaArgs, SyntheticLdaSpec,
};
use ps_apps::mf::{synthetic_threads, MfApp, MfArgs, SyntheticSpec};
use ps_apps::mlp::{synthetic_mlp_threads, MlpApp, MlpArgs, SyntheticMlpSpec, SAMPLES_PER_CHUNK};
use ps_apps::AppError;

fn job() -> JobCommon {
    JobCommon {
        workers: 2,
        seed: 42,
        threads: 1,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

fn refused<T: std::fmt::Debug>(r: Result<T, AppError>, flag: &str) {
    match r {
        Err(AppError::Settings(m)) => assert!(m.contains(flag), "{m}"),
        other => panic!("{flag}: expected a settings error, got {other:?}"),
    }
}

#[test]
fn mf_beyond_the_sequential_size_is_the_same_on_any_thread_count() {
    let spec = SyntheticSpec {
        users: 20_000,
        items: 900,
        ratings: 1_200_000,
        rank: 4,
        noise_sigma: 0.1,
        item_zipf: 0.0,
        seed: 3,
    };
    let one = synthetic_threads(&spec, 1);
    assert_eq!(one.ratings.len(), 1_200_000);
    assert_eq!(synthetic_threads(&spec, 3).ratings, one.ratings);
}

#[test]
fn lda_in_chunks_is_the_same_on_any_thread_count() {
    let spec = SyntheticLdaSpec {
        docs: 3_000,
        doc_len: 400,
        vocab: 5_000,
        topics: 50,
        ..SyntheticLdaSpec::default_builtin(4)
    };
    let one = synthetic_lda_threads(&spec, 1);
    let c = &one.corpus;
    assert_eq!(c.num_docs(), 3_000);
    assert!(c.docs.iter().all(|d| d.len() == 400));
    assert!(c.docs.iter().flatten().all(|&w| w < 5_000));
    assert_eq!(one.topics.len(), 50 * 5_000);
    for row in one.topics.chunks(5_000) {
        let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
        assert!((sum - 1.0).abs() < 1e-3, "a topic sums to {sum}");
    }
    assert_eq!(synthetic_lda_threads(&spec, 3), one);
    // A document mostly speaks of a few topics: its most frequent block holds far more than
    // the 1/50 of its tokens a uniform mixture would give (about 0.3 on average, with the
    // noise words counted in whatever block they fall; a document alone varies widely).
    let top = c
        .docs
        .iter()
        .map(|d| {
            let mut n = [0u32; 50];
            d.iter().for_each(|&w| n[(w / 100) as usize] += 1);
            f64::from(*n.iter().max().unwrap()) / d.len() as f64
        })
        .sum::<f64>()
        / c.docs.len() as f64;
    assert!(top > 0.2, "mean top-topic share {top}");
}

#[test]
fn an_lda_worker_draws_its_share_of_the_corpus_and_nothing_else() {
    // Above SEQUENTIAL_MAX_TOKENS each document has its own stream and a worker draws only its
    // own; below, the corpus is drawn whole and split. Either way a worker's documents are
    // split_docs's share of the whole corpus, and its topics are all the true topics.
    for (docs, doc_len) in [(3_001u32, 400u32), (90, 30)] {
        let spec = SyntheticLdaSpec {
            docs,
            doc_len,
            vocab: 2_000,
            topics: 20,
            ..SyntheticLdaSpec::default_builtin(6)
        };
        let all = synthetic_lda_threads(&spec, 2);
        for workers in [1u32, 3, 4] {
            for w in 0..workers {
                let mine = synthetic_lda_worker(&spec, workers, w, 3);
                assert_eq!(
                    mine.corpus.docs,
                    split_docs(&all.corpus, workers, w),
                    "{docs} docs, worker {w} of {workers}"
                );
                assert_eq!(mine.topics, all.topics);
                assert_eq!(mine.corpus.vocab_size, 2_000);
            }
        }
    }
    // More workers than documents: the last ones hold none.
    let spec = SyntheticLdaSpec {
        docs: 2,
        doc_len: 600_000,
        vocab: 50,
        topics: 3,
        ..SyntheticLdaSpec::default_builtin(7)
    };
    assert!(synthetic_lda_worker(&spec, 3, 2, 2).corpus.docs.is_empty());
    assert_eq!(synthetic_lda_worker(&spec, 3, 1, 2).corpus.docs.len(), 1);
}

#[test]
fn mlp_in_chunks_is_the_same_on_any_thread_count_and_keeps_its_first_chunk() {
    let spec = SyntheticMlpSpec {
        train: SAMPLES_PER_CHUNK + 1_000,
        test: 500,
        features: 12,
        ..SyntheticMlpSpec::default_builtin(5)
    };
    let (train, test) = synthetic_mlp_threads(&spec, 1);
    assert_eq!(
        (train.n, train.d, test.n),
        (SAMPLES_PER_CHUNK + 1_000, 12, 500)
    );
    assert_eq!(train.x.len(), train.n * 12);
    assert_eq!(synthetic_mlp_threads(&spec, 3), (train.clone(), test));
    // The first chunk is the stream's, as for a set that fits in one chunk.
    let small = SyntheticMlpSpec {
        train: SAMPLES_PER_CHUNK,
        ..spec
    };
    let (head, _) = synthetic_mlp_threads(&small, 2);
    assert_eq!(head.x[..], train.x[..head.x.len()]);
}

#[test]
fn size_flags_reach_the_data() {
    let plan = LdaApp
        .plan(
            &LdaArgs {
                docs: 300,
                doc_length: 20,
                vocab_size: 700,
                true_topics: 7,
                ..Default::default()
            },
            &job(),
        )
        .unwrap();
    assert_eq!(plan.facts["docs"], 300);
    assert_eq!(plan.facts["tokens"], 6_000);
    assert_eq!(plan.facts["vocab"], 700);
    let plan = MlpApp
        .plan(
            &MlpArgs {
                samples: 400,
                features: 9,
                ..Default::default()
            },
            &job(),
        )
        .unwrap();
    let spec = plan.settings.synthetic.unwrap();
    assert_eq!((spec.train, spec.test, spec.features), (400, 100, 9));
    let plan = MfApp
        .plan(
            &MfArgs {
                users: 300,
                items: 200,
                ratings: 5_000,
                item_zipf: 0.9,
                ..Default::default()
            },
            &job(),
        )
        .unwrap();
    assert_eq!(plan.settings.synthetic.unwrap().item_zipf, 0.9);
}

#[test]
fn size_flags_out_of_range_are_refused_by_name() {
    let mf = |a: MfArgs| MfApp.plan(&a, &job()).map(|_| ());
    refused(
        mf(MfArgs {
            item_zipf: -0.5,
            ..Default::default()
        }),
        "--item-zipf",
    );
    refused(
        mf(MfArgs {
            item_zipf: f64::NAN,
            ..Default::default()
        }),
        "--item-zipf",
    );
    let lda = |a: LdaArgs| a.synthetic_spec(1);
    for (args, flag) in [
        (
            LdaArgs {
                docs: 0,
                ..Default::default()
            },
            "--docs",
        ),
        (
            LdaArgs {
                doc_length: 0,
                ..Default::default()
            },
            "--doc-length",
        ),
        (
            LdaArgs {
                vocab_size: 0,
                ..Default::default()
            },
            "--vocab-size",
        ),
        (
            LdaArgs {
                true_topics: 0,
                ..Default::default()
            },
            "--true-topics",
        ),
        (
            LdaArgs {
                true_topics: 100_000,
                vocab_size: 1 << 24,
                ..Default::default()
            },
            "--true-topics x --vocab-size",
        ),
    ] {
        refused(lda(args), flag);
    }
    let mlp = |a: MlpArgs| a.synthetic_spec(1);
    refused(
        mlp(MlpArgs {
            samples: 0,
            ..Default::default()
        }),
        "--samples",
    );
    refused(
        mlp(MlpArgs {
            features: 0,
            ..Default::default()
        }),
        "--features",
    );
    refused(
        mlp(MlpArgs {
            samples: 3,
            test_samples: Some(0),
            ..Default::default()
        }),
        "--test-samples",
    );
    refused(
        mlp(MlpArgs {
            samples: 10_000_000,
            features: 1_000,
            ..Default::default()
        }),
        "--features is",
    );
}

/// Seconds to generate the GPU-scale shapes (Netflix MF, NYTimes LDA, a wide MLP set).
#[test]
#[ignore = "timing probe; run by hand in release: cargo test --release -p ps-apps --test synthetic_sizes -- --ignored --nocapture"]
fn gpu_scale_generation_probe() {
    use std::time::Instant;
    for item_zipf in [0.0, 0.9] {
        let t = Instant::now();
        let mf = synthetic_threads(
            &SyntheticSpec {
                users: 480_189,
                items: 17_770,
                ratings: 100_000_000,
                item_zipf,
                ..SyntheticSpec::default_builtin(1)
            },
            ps_apps::par::threads(),
        );
        println!("mf netflix 100M, zipf {item_zipf}: {:.2?}", t.elapsed());
        drop(mf);
    }
    let t = Instant::now();
    let lda = synthetic_lda_threads(
        &SyntheticLdaSpec {
            docs: 300_000,
            doc_len: 330,
            vocab: 100_000,
            topics: 1_000,
            ..SyntheticLdaSpec::default_builtin(1)
        },
        ps_apps::par::threads(),
    );
    println!(
        "lda nytimes {} tokens: {:.2?}",
        lda.corpus.num_tokens(),
        t.elapsed()
    );
    drop(lda);
    let t = Instant::now();
    let (train, _) = synthetic_mlp_threads(
        &SyntheticMlpSpec {
            train: 1_000_000,
            test: 100_000,
            features: 784,
            ..SyntheticMlpSpec::default_builtin(1)
        },
        ps_apps::par::threads(),
    );
    println!("mlp 1.1M x 784: {:.2?} ({} samples)", t.elapsed(), train.n);
}
