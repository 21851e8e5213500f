//! MLP sessions against a plain loop of `local_sgd_clock` on the `CpuMlp` oracle with model
//! averaging (64-16-10 on the built-in data, two clocks per epoch). Oracle engines: every
//! clock's pushed layers and the final tables bit for bit. Fast engine (`FastMlp`, f32 GEMM
//! against the f64 oracle): final parameters within 1e-2 relative (floor 1e-2) and held-out
//! accuracy within 0.02.

use ps_apps::app::testing::{run_bsp, BspRun};
use ps_apps::app::{App, CpuEngines, OracleEngines, Plan};
use ps_apps::mlp::{
    local_sgd_clock, synthetic_mlp, worker_split, Arch, ClockKey, CpuMlp, MlpApp, MlpArgs,
    MlpSettings, SyntheticMlpSpec, Visit,
};

use super::common::{job, max_rel};

const CLOCKS: u64 = 4;
const PER_EPOCH: u64 = 2;

fn plan() -> Plan<MlpSettings> {
    let args = MlpArgs {
        hidden: Some(vec![16]),
        batch: None,
        lr: None,
        lr_decay: None,
        clocks_per_epoch: Some(PER_EPOCH as u32),
        data: None,
        ..Default::default()
    };
    MlpApp.plan(&args, &job(2)).unwrap()
}

/// The oracle loop: per clock, per worker, the pushed layers; and the final layers.
#[allow(clippy::type_complexity)]
fn oracle(plan: &Plan<MlpSettings>) -> (Vec<Vec<Vec<Vec<f32>>>>, Vec<Vec<f32>>) {
    let s = &plan.settings;
    let (train, _) = synthetic_mlp(&SyntheticMlpSpec::default_builtin(s.seed));
    let arch = Arch::new(train.d, &s.hidden, train.classes);
    // The shards start from the seeded initial model, as the workers do.
    let mut table = arch.init_params(s.seed);
    let mut clocks = Vec::new();
    for clock in 0..CLOCKS {
        let mut this = Vec::new();
        for w in 0..2u32 {
            let read = if clock == 0 {
                arch.init_params(s.seed)
            } else {
                table.clone()
            };
            let samples = worker_split(train.n, 2, w as usize);
            let key = ClockKey {
                seed: s.seed,
                worker: w,
                clock: (clock / PER_EPOCH) as u32,
            };
            // The clock's slice of the epoch's permutation of the worker's samples.
            let i = (clock % PER_EPOCH) as usize;
            let slice: Vec<usize> = Visit::for_clock(key, samples.len(), i, PER_EPOCH as usize)
                .order()
                .into_iter()
                .map(|j| samples[j])
                .collect();
            let mut out =
                local_sgd_clock(&mut CpuMlp, &arch, &read, &train, &slice, &s.hyper, key).unwrap();
            out.scale(0.5);
            this.push(out.delta);
        }
        for d in &this {
            for (t, l) in table.iter_mut().zip(d) {
                t.iter_mut().zip(l).for_each(|(a, b)| *a += b);
            }
        }
        clocks.push(this);
    }
    (clocks, table)
}

fn tables(run: &BspRun<MlpApp>, plan: &Plan<MlpSettings>) -> Vec<Vec<f32>> {
    plan.tables
        .iter()
        .map(|t| run.ps.read(t.id, &(0..t.rows).collect::<Vec<_>>()))
        .collect()
}

#[test]
fn mlp_sessions_on_the_oracle_engine_equal_the_oracle_loop_clock_by_clock() {
    let plan = plan();
    let run = run_bsp(&MlpApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (want, table) = oracle(&plan);
    for (clock, (got, want)) in run.clocks.iter().zip(&want).enumerate() {
        for (w, ((_, updates), layers)) in got.iter().zip(want).enumerate() {
            for (l, layer) in layers.iter().enumerate() {
                let pushed: Vec<f32> = updates.of_table(l as u32).into_values().flatten().collect();
                assert_eq!(&pushed, layer, "clock {clock} worker {w} layer {l}");
            }
        }
    }
    assert_eq!(tables(&run, &plan), table);
}

#[test]
fn mlp_sessions_on_the_fast_engine_stay_within_tolerance() {
    let plan = plan();
    let fast = run_bsp(&MlpApp, &plan, 2, CLOCKS, &CpuEngines).unwrap();
    let (_, table) = oracle(&plan);
    let got = tables(&fast, &plan);
    let dev = max_rel(&got.concat(), &table.concat(), 1e-2);
    println!("mlp fast vs oracle: max relative deviation of the parameters {dev:e}");
    assert!(dev < 1e-2, "{dev}");
    let acc = |run: &BspRun<MlpApp>| {
        let (c, n) = run.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.test_correct, b + f.sums.test_n)
        });
        c / n
    };
    let slow = run_bsp(&MlpApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (f, s) = (acc(&fast), acc(&slow));
    println!("mlp held-out accuracy after {CLOCKS} clocks: fast {f:.4}, oracle {s:.4}");
    assert!((f - s).abs() < 0.02, "fast {f} vs oracle {s}");
    assert!(f > 0.3, "it learns (10 classes): {f}");
}
