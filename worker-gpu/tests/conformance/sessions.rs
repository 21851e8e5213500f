//! Whole sessions on the CUDA engines against the same sessions on the fast CPU engines, through
//! the in-memory parameter server (`ps_apps::app::testing`), several clocks each: the bar is the
//! CPU run's quality, not its bits (the CUDA engines run in parallel and sum in another order).
//! MF (the resident waves engine): held-out RMSE within 2%; LDA: log-likelihood per token within
//! 0.05 nats of the range of four CPU chains (seeds 42-45); MLP: held-out accuracy within 0.02; LR:
//! held-out AUC within 0.01. All passed on an H200 (the LDA case against one CPU chain failed
//! once, by chance: see the case).

use ps_apps::app::testing::{run_bsp, BspRun};
use ps_apps::app::{App, CpuEngines, Engines, JobCommon};
use ps_apps::lda::{LdaApp, LdaArgs};
use ps_apps::lr::{LrApp, LrArgs};
use ps_apps::mf::{MfApp, MfArgs};
use ps_apps::mlp::{MlpApp, MlpArgs};
use worker_gpu::{Device, DeviceEngines};

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

/// The CUDA engines of GPU 0, or `None` after a visible SKIP.
fn cuda(test: &str) -> Option<DeviceEngines> {
    worker_gpu::gpu_or_skip(test).map(|_| DeviceEngines(Device::Cuda(0)))
}

/// Runs `app` on the CPU and on the GPU and returns both runs.
fn both<A: App>(app: &A, args: &A::Args, clocks: u64, gpu: &dyn Engines) -> (BspRun<A>, BspRun<A>) {
    let plan = app.plan(args, &job()).unwrap();
    let cpu = run_bsp(app, &plan, 2, clocks, &CpuEngines).unwrap();
    let dev = run_bsp(app, &plan, 2, clocks, gpu).unwrap();
    (cpu, dev)
}

#[test]
fn mf_sessions_on_cuda_reach_the_cpu_rmse() {
    let Some(gpu) = cuda("mf_sessions_on_cuda_reach_the_cpu_rmse") else {
        return;
    };
    let rmse = |r: &BspRun<MfApp>| {
        let (se, n) = r.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.test_se, b + f.sums.test_n)
        });
        (se / n).sqrt()
    };
    // The plain model (the built-in data's default) and the biased one (--data's default).
    for bias in [false, true] {
        let args = MfArgs {
            rank: Some(8),
            bias: Some(bias),
            clocks_per_epoch: 1,
            data: None,
            ..Default::default()
        };
        let (cpu, dev) = both(&MfApp, &args, 20, &gpu);
        let (c, g) = (rmse(&cpu), rmse(&dev));
        eprintln!("mf (bias {bias}) test rmse after 20 clocks: cpu {c:.5} cuda {g:.5}");
        assert!(
            g.is_finite() && g <= 1.02 * c,
            "bias {bias}: cuda {g} vs cpu {c}"
        );
    }
}

#[test]
fn lda_sessions_on_cuda_reach_the_cpu_likelihood() {
    let Some(gpu) = cuda("lda_sessions_on_cuda_reach_the_cpu_likelihood") else {
        return;
    };
    let args = LdaArgs {
        topics: 10,
        alpha: 0.1,
        beta: 0.01,
        data: None,
        vocab: None,
        test: None,
        ..Default::default()
    };
    let per_token = |r: &BspRun<LdaApp>| {
        let (ll, n) = r.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.final_loglik, b + f.sums.final_tokens)
        });
        ll / n
    };
    // The GPU sweeps documents concurrently, so its chain is not the CPU's: compare it with
    // several CPU chains. After 8 clocks the chains of different seeds still spread over about
    // 0.17 nats (seeds 1-6 and 42 on the CPU: -5.80 to -5.97), so one CPU chain is no bar: on an
    // H200 the GPU chain of seed 42 ended at -5.93 against the CPU's -5.80 for the same seed,
    // inside that spread.
    let plan = LdaApp.plan(&args, &job()).unwrap();
    let dev = per_token(&run_bsp(&LdaApp, &plan, 2, 8, &gpu).unwrap());
    let cpu: Vec<f64> = (42..46u64)
        .map(|seed| {
            let plan = LdaApp.plan(&args, &JobCommon { seed, ..job() }).unwrap();
            per_token(&run_bsp(&LdaApp, &plan, 2, 8, &CpuEngines).unwrap())
        })
        .collect();
    let lo = cpu.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    eprintln!("lda loglik/token after 8 clocks: cuda {dev:.4}, cpu seeds 42-45 {cpu:.4?}");
    assert!(
        dev > lo - 0.05 && dev < hi + 0.05,
        "cuda {dev} outside the cpu chains' {lo}..{hi} (+-0.05)"
    );
}

#[test]
fn mlp_sessions_on_cuda_reach_the_cpu_accuracy() {
    let Some(gpu) = cuda("mlp_sessions_on_cuda_reach_the_cpu_accuracy") else {
        return;
    };
    let args = MlpArgs {
        hidden: None,
        batch: None,
        lr: None,
        lr_decay: None,
        clocks_per_epoch: None,
        data: None,
        ..Default::default()
    };
    let (cpu, dev) = both(&MlpApp, &args, 5, &gpu);
    let acc = |r: &BspRun<MlpApp>| {
        let (c, n) = r.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.test_correct, b + f.sums.test_n)
        });
        c / n
    };
    let (c, g) = (acc(&cpu), acc(&dev));
    eprintln!("mlp held-out accuracy after 5 clocks: cpu {c:.4} cuda {g:.4}");
    assert!((c - g).abs() < 0.02, "cuda {g} vs cpu {c}");
}

#[test]
fn lr_sessions_on_cuda_reach_the_cpu_auc() {
    let Some(gpu) = cuda("lr_sessions_on_cuda_reach_the_cpu_auc") else {
        return;
    };
    let args = LrArgs {
        lr: None,
        l1: None,
        l2: None,
        batch: None,
        data: None,
        test: None,
        test_fraction: None,
    };
    let (cpu, dev) = both(&LrApp, &args, 60, &gpu);
    let auc = |r: &BspRun<LrApp>| r.finals[0].facts.test_auc.unwrap_or(f64::NAN);
    let (c, g) = (auc(&cpu), auc(&dev));
    eprintln!("lr held-out AUC after 60 clocks: cpu {c:.4} cuda {g:.4}");
    assert!((c - g).abs() < 0.01, "cuda {g} vs cpu {c}");
}
