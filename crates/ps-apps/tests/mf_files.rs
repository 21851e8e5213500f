//! MF on rating files: the biased model's engines (the oracle by hand, the fast engine against
//! the oracle), a training file with a separate held-out file (ids, cold users and items), and
//! a whole job on such files through the in-memory parameter server.

use ps_apps::app::testing::run_bsp;
use ps_apps::app::{App, CpuEngines, JobCommon, OracleEngines};
use ps_apps::mf::{
    load_train_test, squared_error_in, worker_cold, worker_shard, ColdRating, CpuMf, FastMf,
    Layout, MfApp, MfArgs, MfCompute, Rating,
};
use ps_apps::AppError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn job(workers: u32) -> JobCommon {
    JobCommon {
        workers,
        seed: 7,
        threads: 1,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

/// Ratings `mean + b_u + b_i + p_u·q_i + noise` of `users × items` with density `fill`.
fn additive(users: u32, items: u32, fill: f64, seed: u64) -> Vec<Rating> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bu: Vec<f32> = (0..users).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let bi: Vec<f32> = (0..items).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let pu: Vec<f32> = (0..users).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let qi: Vec<f32> = (0..items).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let mut out = Vec::new();
    for u in 0..users {
        for i in 0..items {
            if rng.gen_bool(fill) {
                let (uu, ii) = (u as usize, i as usize);
                let noise: f32 = rng.gen_range(-0.05..0.05);
                out.push(Rating {
                    user: u,
                    item: i,
                    value: 3.5 + bu[uu] + bi[ii] + pu[uu] * qi[ii] + noise,
                });
            }
        }
    }
    out
}

fn random_rows(n: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * width).map(|_| rng.gen_range(-0.1..0.1)).collect()
}

#[test]
fn the_oracles_biased_step_is_the_written_update() {
    // rank 2, rows [p0, p1, b].
    let mut u = vec![0.1, 0.2, 0.3];
    let mut v = vec![0.4, -0.5, -0.1];
    let (mean, lr, reg, r) = (3.0f32, 0.1f32, 0.02f32, 4.0f32);
    let pred = mean + 0.3 + -0.1 + (0.1 * 0.4 + 0.2 * -0.5);
    let e = r - pred;
    let sse = CpuMf
        .sgd_epoch_biased(
            &[Rating {
                user: 0,
                item: 0,
                value: r,
            }],
            &mut u,
            &mut v,
            2,
            mean,
            lr,
            reg,
        )
        .unwrap();
    assert!((sse - f64::from(e * e)).abs() < 1e-6);
    let want_u = [
        0.1 + lr * (e * 0.4 - reg * 0.1),
        0.2 + lr * (e * -0.5 - reg * 0.2),
        0.3 + lr * (e - reg * 0.3),
    ];
    let want_v = [
        0.4 + lr * (e * 0.1 - reg * 0.4),
        -0.5 + lr * (e * 0.2 - reg * -0.5),
        -0.1 + lr * (e - reg * -0.1),
    ];
    for (got, want) in u.iter().zip(want_u).chain(v.iter().zip(want_v)) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}

#[test]
fn the_fast_engines_biased_pass_matches_the_oracle() {
    let ratings = additive(120, 90, 0.3, 1);
    for rank in [4usize, 16] {
        let w = rank + 1;
        let (mut uo, mut vo) = (random_rows(120, w, 2), random_rows(90, w, 3));
        let (mut uf, mut vf) = (uo.clone(), vo.clone());
        let mut fast = FastMf::new(1);
        for _ in 0..3 {
            let a = CpuMf
                .sgd_epoch_biased(&ratings, &mut uo, &mut vo, rank, 3.5, 0.02, 0.03)
                .unwrap();
            let b = fast
                .sgd_epoch_biased(&ratings, &mut uf, &mut vf, rank, 3.5, 0.02, 0.03)
                .unwrap();
            if rank < 8 {
                // Same summation order: bit for bit.
                assert_eq!(a.to_bits(), b.to_bits());
                assert_eq!(uo, uf);
                assert_eq!(vo, vf);
            } else {
                assert!((a - b).abs() <= 1e-5 * a.abs(), "sse {a} vs {b}");
                for (x, y) in uo.iter().chain(&vo).zip(uf.iter().chain(&vf)) {
                    assert!((x - y).abs() <= 1e-4 * x.abs() + 1e-5, "{x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn the_blocked_biased_pass_trains_like_the_oracle() {
    let ratings = additive(400, 300, 0.2, 4);
    assert!(ratings.len() > 2 * ps_apps::mf::PARALLEL_MIN_RATINGS);
    let layout = Layout {
        rank: 4,
        mean: Some(3.5),
    };
    let w = layout.width();
    let start = (random_rows(400, w, 5), random_rows(300, w, 6));
    let train = |engine: &mut dyn MfCompute| {
        let (mut u, mut v) = start.clone();
        for _ in 0..15 {
            engine
                .sgd_pass(&ratings, &mut u, &mut v, layout, 0.02, 0.01)
                .unwrap();
        }
        let (se, n) = squared_error_in(layout, &ratings, &u, &v);
        (se / n as f64).sqrt()
    };
    let oracle = train(&mut CpuMf);
    let blocked = train(&mut FastMf::new(3));
    eprintln!("train rmse after 15 passes: oracle {oracle:.4}, 3 threads {blocked:.4}");
    assert!(
        oracle < 0.2,
        "the oracle did not learn the biases: {oracle}"
    );
    assert!(
        (blocked - oracle).abs() <= 0.05 * oracle,
        "{blocked} vs {oracle}"
    );
}

#[test]
fn biases_fit_what_factors_alone_fit_badly() {
    let ratings = additive(200, 150, 0.3, 8);
    let fit = |layout: Layout| {
        let w = layout.width();
        let (mut u, mut v) = (random_rows(200, w, 9), random_rows(150, w, 10));
        for _ in 0..60 {
            CpuMf
                .sgd_pass(&ratings, &mut u, &mut v, layout, 0.05, 0.002)
                .unwrap();
        }
        let (se, n) = squared_error_in(layout, &ratings, &u, &v);
        (se / n as f64).sqrt()
    };
    // Rank 1: the data is mean + biases + a rank-1 product, which one plain factor cannot hold.
    let plain = fit(Layout::plain(1));
    let biased = fit(Layout {
        rank: 1,
        mean: Some(3.5),
    });
    eprintln!("rank 1 train rmse: plain {plain:.4}, biased {biased:.4}");
    assert!(biased < 0.5 * plain, "biased {biased} vs plain {plain}");
}

#[test]
fn an_engine_without_biases_says_so() {
    struct PlainOnly;
    impl MfCompute for PlainOnly {
        fn sgd_epoch(
            &mut self,
            _: &[Rating],
            _: &mut [f32],
            _: &mut [f32],
            _: usize,
            _: f32,
            _: f32,
        ) -> Result<f64, ps_apps::ComputeError> {
            Ok(0.0)
        }
        fn name(&self) -> &'static str {
            "plain-only"
        }
    }
    let layout = Layout {
        rank: 1,
        mean: Some(0.0),
    };
    let e = PlainOnly
        .sgd_pass(&[], &mut [], &mut [], layout, 0.1, 0.0)
        .unwrap_err();
    assert!(e.to_string().contains("--bias off"), "{e}");
}

/// Writes `lines` to `dir/name`.
fn file(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn a_held_out_file_keeps_the_training_ids_and_its_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let train = file(
        dir.path(),
        "train.data",
        &["10\t100\t4\t1", "10\t200\t3\t2", "20\t100\t5\t3"],
    );
    // A known pair, a new item of a known user, a new user of a known item, both new.
    let test = file(
        dir.path(),
        "test.csv",
        &[
            "userId,movieId,rating,timestamp",
            "20,200,2,9",
            "10,300,1,9",
            "30,100,4,9",
            "31,301,5,9",
        ],
    );
    let tt = load_train_test(&train, &test).unwrap();
    assert_eq!((tt.train.num_users, tt.train.num_items), (2, 2));
    assert_eq!(
        tt.test,
        vec![Rating {
            user: 1,
            item: 1,
            value: 2.0
        }]
    );
    let cold = |user, item, file_user, value| ColdRating {
        user,
        item,
        file_user,
        value,
    };
    assert_eq!(
        tt.cold,
        vec![
            cold(Some(0), None, 10, 1.0),
            cold(None, Some(0), 30, 4.0),
            cold(None, None, 31, 5.0),
        ]
    );
    // Each cold rating lands on exactly one of two workers, a known user's on its owner.
    let shards: Vec<_> = (0..2)
        .map(|w| worker_shard(&tt.train.ratings, &tt.test, 2, w))
        .collect();
    let per: Vec<_> = (0..2)
        .map(|w| worker_cold(&tt.cold, &shards[w as usize], 2, w))
        .collect();
    assert_eq!(per[0].len() + per[1].len(), 3);
    assert!(per[0]
        .iter()
        .any(|c| c.file_user == 10 && c.user == Some(0)));
    assert!(per[0].iter().any(|c| c.file_user == 30 && c.user.is_none()));
    assert!(per[1].iter().any(|c| c.file_user == 31));

    let missing = dir.path().join("nope.data");
    let e = load_train_test(&train, &missing).unwrap_err().to_string();
    assert!(e.contains("nope.data"), "{e}");
}

#[test]
fn a_cold_rating_is_predicted_from_the_mean_and_the_known_bias() {
    let biased = Layout {
        rank: 2,
        mean: Some(3.0),
    };
    let u = [0.5, 0.5, 0.25];
    let v = [1.0, 1.0, -0.5];
    assert_eq!(biased.predict(&u, &v), 3.0 + 0.25 - 0.5 + 1.0);
    assert_eq!(biased.predict_cold(9.0, Some(&u), None), 3.25);
    assert_eq!(biased.predict_cold(9.0, None, Some(&v)), 2.5);
    assert_eq!(biased.predict_cold(9.0, None, None), 3.0);
    // A plain model has no bias to use: the training mean it was given.
    assert_eq!(Layout::plain(2).predict_cold(3.6, Some(&u), Some(&v)), 3.6);
}

/// Train and test files of an additive model; the test file has 5 ratings of a new user.
fn rating_files(dir: &Path) -> (PathBuf, PathBuf, usize) {
    let all = additive(60, 40, 0.5, 11);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (k, r) in all.iter().enumerate() {
        let line = format!("{},{},{}", r.user + 1, r.item + 1, r.value);
        if k % 5 == 0 {
            test.push(line);
        } else {
            train.push(line);
        }
    }
    for i in 1..=5 {
        test.push(format!("999,{i},4"));
    }
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let n = test.len();
    (
        file(dir, "train.csv", &refs(&train)),
        file(dir, "test.csv", &refs(&test)),
        n,
    )
}

#[test]
fn a_job_on_a_training_and_a_held_out_file_counts_every_held_out_rating() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, n_test) = rating_files(dir.path());
    let args = MfArgs {
        data: Some(train),
        test: Some(test),
        ..Default::default()
    };
    let plan = MfApp.plan(&args, &job(2)).unwrap();
    assert!(plan.settings.bias, "--data defaults to the biased model");
    assert_eq!(plan.facts["test_cold_ratings"], 5);
    assert_eq!(plan.tables[0].width, plan.settings.hyper.rank + 1);
    for engines in [&OracleEngines as &dyn ps_apps::app::Engines, &CpuEngines] {
        let run = run_bsp(&MfApp, &plan, 2, 10, engines).unwrap();
        let sum = |f: fn(&ps_apps::mf::MfFinal) -> f64| -> f64 {
            run.finals.iter().map(|o| f(&o.sums)).sum()
        };
        assert_eq!(sum(|f| f.test_n) as usize, n_test);
        assert_eq!(sum(|f| f.cold_n), 5.0);
        let test_rmse = (sum(|f| f.test_se) / sum(|f| f.test_n)).sqrt();
        eprintln!("test rmse on the held-out file: {test_rmse:.4}");
        assert!(test_rmse.is_finite() && test_rmse < 0.6, "{test_rmse}");
    }
}

#[test]
fn a_held_out_file_needs_a_training_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, test, _) = rating_files(dir.path());
    let args = MfArgs {
        test: Some(test),
        ..Default::default()
    };
    match MfApp.plan(&args, &job(2)) {
        Err(AppError::Settings(m)) => assert!(m.contains("--data"), "{m}"),
        other => panic!("expected a settings error, got {:?}", other.err()),
    }
}
