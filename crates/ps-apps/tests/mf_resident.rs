//! The MF session's resident path (the one a GPU engine takes), run here with its CPU oracle
//! `HostResident`: the built-in job learns as well as the host path, an epoch split over clocks
//! visits every rating once, a run is a pure function of the seed, the biased model works, and
//! f16 factor rows (`--factors f16`) keep the test RMSE on both paths.

use ps_apps::app::testing::{run_bsp, BspRun};
use ps_apps::app::{App, CpuEngines, Engines, JobCommon, OracleEngines};
use ps_apps::lda::LdaCompute;
use ps_apps::lr::LrCompute;
use ps_apps::mf::{
    CpuMf, Factors, HostResident, MfApp, MfArgs, MfCompute, MfResident, DEFAULT_CLOCKS,
};
use ps_apps::mlp::MlpCompute;
use ps_apps::AppError;

/// The CPU engines, with the resident MF oracle scheduled for `lanes` lanes.
struct Waves {
    lanes: usize,
}

impl Engines for Waves {
    fn device(&self) -> String {
        "cpu-waves".into()
    }
    fn mf(&self, t: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        CpuEngines.mf(t)
    }
    fn lda(&self, t: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        OracleEngines.lda(t)
    }
    fn mlp(&self, t: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        OracleEngines.mlp(t)
    }
    fn lr(&self, t: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        OracleEngines.lr(t)
    }
    fn mf_resident(&self) -> Result<Option<Box<dyn MfResident>>, AppError> {
        Ok(Some(Box::new(HostResident::new(
            Box::new(CpuMf),
            self.lanes,
        ))))
    }
}

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

fn run(args: &MfArgs, clocks: u64, engines: &dyn Engines) -> BspRun<MfApp> {
    let plan = MfApp.plan(args, &job()).unwrap();
    run_bsp(&MfApp, &plan, 2, clocks, engines).unwrap()
}

fn test_rmse(r: &BspRun<MfApp>) -> f64 {
    let (se, n) = r.finals.iter().fold((0.0, 0.0), |(a, b), f| {
        (a + f.sums.test_se, b + f.sums.test_n)
    });
    (se / n).sqrt()
}

#[test]
fn resident_waves_learn_like_the_host_path() {
    let args = MfArgs::default();
    let clocks = u64::from(DEFAULT_CLOCKS);
    let host = test_rmse(&run(&args, clocks, &CpuEngines));
    let waves = run(&args, clocks, &Waves { lanes: 2_112 });
    let w = test_rmse(&waves);
    eprintln!("built-in test rmse: host {host:.5}, resident waves {w:.5}");
    assert!(w <= 0.115, "the built-in bar: {w}");
    assert!((w - host).abs() <= 0.02 * host, "{w} vs {host}");
    // Every clock visited every training rating once (one clock an epoch).
    let train: f64 = waves.finals.iter().map(|f| f.sums.train_n).sum();
    for (c, per_worker) in waves.clocks.iter().enumerate() {
        let n: f64 = per_worker.iter().map(|(f, _)| f.train_n).sum();
        assert_eq!(n, train, "clock {c}");
    }
}

#[test]
fn an_epoch_split_over_clocks_visits_every_rating_once_and_repeats_exactly() {
    let args = MfArgs {
        clocks_per_epoch: 3,
        rank: Some(4),
        ..Default::default()
    };
    let engines = Waves { lanes: 64 };
    let a = run(&args, 6, &engines);
    let train: f64 = a.finals.iter().map(|f| f.sums.train_n).sum();
    for epoch in a.clocks.chunks(3) {
        let n: f64 = epoch
            .iter()
            .flat_map(|w| w.iter().map(|(f, _)| f.train_n))
            .sum();
        assert_eq!(n, train);
        // Each clock of the epoch does part of it.
        assert!(epoch.iter().all(|w| w.iter().all(|(f, _)| f.train_n > 0.0)));
    }
    // Held-out error is measured at each epoch's end only.
    assert!(a.clocks[1].iter().all(|(f, _)| f.test_n == 0.0));
    assert!(a.clocks[2].iter().all(|(f, _)| f.test_n > 0.0));
    let b = run(&args, 6, &engines);
    let hash = |r: &BspRun<MfApp>| r.finals[0].facts.item_table_hash.clone();
    assert!(hash(&a).is_some());
    assert_eq!(hash(&a), hash(&b), "a pure function of the seed");
}

#[test]
fn the_biased_model_learns_on_the_resident_path() {
    let args = MfArgs {
        bias: Some(true),
        ..Default::default()
    };
    let clocks = u64::from(DEFAULT_CLOCKS);
    let host = test_rmse(&run(&args, clocks, &CpuEngines));
    let w = test_rmse(&run(&args, clocks, &Waves { lanes: 100 }));
    eprintln!("biased test rmse: host {host:.5}, resident waves {w:.5}");
    assert!((w - host).abs() <= 0.03 * host, "{w} vs {host}");
}

#[test]
fn f16_factors_keep_the_test_rmse_on_both_paths() {
    let clocks = u64::from(DEFAULT_CLOCKS);
    let f32_host = run(&MfArgs::default(), clocks, &CpuEngines);
    let f16 = MfArgs {
        factors: Factors::F16,
        ..Default::default()
    };
    let f16_host = run(&f16, clocks, &CpuEngines);
    let f16_waves = run(&f16, clocks, &Waves { lanes: 2_112 });
    let (a, b, c) = (
        test_rmse(&f32_host),
        test_rmse(&f16_host),
        test_rmse(&f16_waves),
    );
    eprintln!("built-in test rmse: f32 {a:.5}, f16 host {b:.5}, f16 resident waves {c:.5}");
    assert!(b <= 1.01 * a && c <= 1.02 * a, "{a} {b} {c}");
    let hash = |r: &BspRun<MfApp>| r.finals[0].facts.item_table_hash.clone();
    assert_ne!(hash(&f32_host), hash(&f16_host), "f16 rounds the rows");
}
