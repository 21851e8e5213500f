//! MF's block order (the default) learns as well as a fully random order: the same job on the
//! built-in data, through the in-memory parameter server, reaches a test RMSE within 1% of the
//! random order's, and both the noise floor's bar. With one engine thread the session runs the
//! arranged ratings in place, block by block; with two it gathers them for the blocked engine.

use ps_apps::app::testing::run_bsp;
use ps_apps::app::{App, CpuEngines, JobCommon};
use ps_apps::mf::{MfApp, MfArgs, MfOrder, DEFAULT_CLOCKS};

fn test_rmse(order: MfOrder, threads: u32) -> f64 {
    let job = JobCommon {
        workers: 2,
        seed: 42,
        threads,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    };
    let args = MfArgs {
        order,
        ..Default::default()
    };
    let plan = MfApp.plan(&args, &job).unwrap();
    let run = run_bsp(&MfApp, &plan, 2, u64::from(DEFAULT_CLOCKS), &CpuEngines).unwrap();
    let (se, n) = run.finals.iter().fold((0.0, 0.0), |(a, b), f| {
        (a + f.sums.test_se, b + f.sums.test_n)
    });
    (se / n).sqrt()
}

#[test]
fn block_order_learns_like_random_order() {
    let random = test_rmse(MfOrder::Random, 1);
    for threads in [1, 2] {
        let blocks = test_rmse(MfOrder::Blocks, threads);
        eprintln!("test rmse: random {random:.5}, blocks ({threads} thread(s)) {blocks:.5}");
        assert!(
            (blocks - random).abs() <= 0.01 * random,
            "{blocks} vs {random}"
        );
        assert!(blocks <= 0.115, "{blocks}");
    }
}
