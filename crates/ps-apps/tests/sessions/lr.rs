//! LR sessions against a plain loop of `CpuLr` mini-batch gradients with FTRL-proximal applied
//! per key in worker order (the shards' rule). Oracle engines: every clock's keys and gradients
//! and the final weights bit for bit. Fast engine (`FastLr`): every clock's gradients within
//! `FAST_REL_TOL` of the oracle's on the same weights, so the weights within 1e-3 (floor 1e-3).
//! The sink refuses what a real client refuses.

use ps_apps::app::testing::{run_bsp, FakePs};
use ps_apps::app::{App, CpuEngines, DeltaSink, OracleEngines, Plan, Session, WorkerContext};
use ps_apps::lr::{
    add_bias, batch_keys, split_train_test, spread_key, synthetic, worker_split, CpuLr, LrApp,
    LrArgs, LrCompute, LrSettings, SparseRow, SyntheticLrSpec, WEIGHTS,
};
use ps_apps::seed::ClockKey;
use ps_apps::visit::Visit;
use ps_proto::rules::{ftrl, FtrlParams};
use std::collections::BTreeMap;

use super::common::{job, max_rel};

const CLOCKS: u64 = 6;

fn plan() -> Plan<LrSettings> {
    let args = LrArgs {
        lr: None,
        l1: None,
        l2: None,
        batch: None,
        data: None,
        test: None,
        test_fraction: None,
    };
    LrApp.plan(&args, &job(2)).unwrap()
}

fn spread(rows: &mut [SparseRow]) {
    add_bias(rows);
    for r in rows.iter_mut() {
        r.features.iter_mut().for_each(|f| f.0 = spread_key(f.0));
        r.features.sort_by_key(|f| f.0);
    }
}

type Clock = Vec<(Vec<u64>, Vec<f32>)>;

/// The oracle loop: per clock, per worker, (keys, gradient); and the final weights by key.
fn oracle(plan: &Plan<LrSettings>) -> (Vec<Clock>, BTreeMap<u64, f32>) {
    let s = &plan.settings;
    let data = synthetic(&SyntheticLrSpec::default_builtin(s.seed));
    let (mut train, _) = split_train_test(data.rows, s.test_fraction, s.seed);
    spread(&mut train);
    let mine: Vec<Vec<SparseRow>> = (0..2)
        .map(|w| worker_split(&train, 2, w).to_vec())
        .collect();
    let p = FtrlParams::new(s.ftrl.alpha, s.ftrl.beta, s.ftrl.l1, s.ftrl.l2);
    let mut weights: BTreeMap<u64, (f32, [f32; 2])> = BTreeMap::new();
    let batch = s.batch as usize;
    let mut clocks = Vec::new();
    for clock in 0..CLOCKS {
        let mut this = Vec::new();
        for (w, rows) in mine.iter().enumerate() {
            let per_epoch = rows.len().div_ceil(batch) as u64;
            let (epoch, b) = (clock / per_epoch, (clock % per_epoch) as usize);
            // The epoch's keyed permutation of the worker's rows; the batch is a run of it.
            let key = ClockKey {
                seed: s.seed,
                worker: w as u32,
                clock: epoch as u32,
            };
            let order = Visit::for_clock(key, rows.len(), 0, 1).order();
            let rows: Vec<SparseRow> = order[b * batch..((b + 1) * batch).min(rows.len())]
                .iter()
                .map(|&i| rows[i].clone())
                .collect();
            let rows = &rows[..];
            let keys = batch_keys(rows);
            let read: Vec<f32> = keys
                .iter()
                .map(|k| weights.get(k).map_or(0.0, |e| e.0))
                .collect();
            let mut grad = vec![0.0; keys.len()];
            CpuLr.gradient(rows, &keys, &read, &mut grad).unwrap();
            this.push((keys, grad));
        }
        for (keys, grad) in &this {
            for (k, g) in keys.iter().zip(grad) {
                let e = weights.entry(*k).or_insert((0.0, [0.0, 0.0]));
                ftrl(
                    std::slice::from_mut(&mut e.0),
                    &mut e.1,
                    std::slice::from_ref(g),
                    p,
                );
            }
        }
        clocks.push(this);
    }
    (clocks, weights.into_iter().map(|(k, e)| (k, e.0)).collect())
}

#[test]
fn lr_sessions_on_the_oracle_engine_equal_the_oracle_loop_clock_by_clock() {
    let plan = plan();
    let run = run_bsp(&LrApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (want, weights) = oracle(&plan);
    for (clock, (got, want)) in run.clocks.iter().zip(&want).enumerate() {
        for (w, ((figures, updates), (keys, grad))) in got.iter().zip(want).enumerate() {
            let pushed = updates.of_table(WEIGHTS);
            assert_eq!(pushed.keys().copied().collect::<Vec<_>>(), *keys);
            let values: Vec<f32> = pushed.into_values().flatten().collect();
            assert_eq!(&values, grad, "clock {clock} worker {w}");
            assert!(figures.train_n > 0.0 && figures.train_loss > 0.0);
        }
    }
    let keys: Vec<u64> = weights.keys().copied().collect();
    let got = run.ps.read(WEIGHTS, &keys);
    assert_eq!(got, weights.values().copied().collect::<Vec<_>>());
    assert!(run.finals[0].facts.test_auc.is_some());
    assert!(run.finals[1].facts.test_auc.is_none());
}

#[test]
fn lr_sessions_on_the_fast_engine_stay_within_tolerance() {
    let plan = plan();
    let run = run_bsp(&LrApp, &plan, 2, CLOCKS, &CpuEngines).unwrap();
    let (_, weights) = oracle(&plan);
    let keys: Vec<u64> = weights.keys().copied().collect();
    let want: Vec<f32> = weights.values().copied().collect();
    let dev = max_rel(&run.ps.read(WEIGHTS, &keys), &want, 1e-3);
    println!("lr fast vs oracle: max relative deviation of the weights {dev:e}");
    assert!(dev < 1e-3, "{dev}");
}

#[test]
fn the_sink_refuses_what_a_client_refuses() {
    let plan = plan();
    let ps = FakePs::new(&plan.tables).unwrap();
    struct Bad;
    // A session that writes unsorted keys, then one with a codec the table does not take.
    impl Session<LrApp> for Bad {
        fn reads(&mut self, _: u64) -> Result<Vec<ps_apps::app::TableRows>, ps_apps::AppError> {
            Ok(Vec::new())
        }
        fn load(
            &mut self,
            _: u32,
            _: usize,
            _: &[u64],
            _: &[f32],
        ) -> Result<(), ps_apps::AppError> {
            Ok(())
        }
        fn run_clock(
            &mut self,
            clock: u64,
            out: &mut dyn DeltaSink,
        ) -> Result<ps_apps::lr::LrClock, ps_apps::AppError> {
            if clock == 0 {
                out.rows(WEIGHTS, &[5, 3])?;
            } else {
                let chain: ps_proto::codec::CodecChain = "f16".parse().unwrap();
                let mut payload = Vec::new();
                ps_proto::codec::encode(&chain, &[1.0], None, &mut payload).unwrap();
                out.encoded(WEIGHTS, &[3], chain.wire_id(), payload)?;
            }
            Ok(Default::default())
        }
        fn final_reads(&mut self) -> Result<Vec<ps_apps::app::TableRows>, ps_apps::AppError> {
            Ok(Vec::new())
        }
        fn evaluate(
            &mut self,
        ) -> Result<
            ps_apps::app::Outcome<ps_apps::lr::LrFinal, ps_apps::lr::LrFacts>,
            ps_apps::AppError,
        > {
            Ok(Default::default())
        }
    }
    for clock in [0, 1] {
        let e = ps.run_clock(&mut Bad, clock).expect_err("refused");
        assert!(matches!(e, ps_apps::AppError::Sink(_)), "{e}");
    }
    // A real session is fine with the same double.
    let ctx = WorkerContext {
        worker: 1,
        workers: 2,
        engines: &CpuEngines,
        rejoin: Default::default(),
    };
    let mut s = LrApp.session(plan.settings.clone(), &ctx).unwrap();
    let reads = s.reads(0).unwrap();
    ps.feed(&reads, |t, f, k, v| s.load(t, f, k, v)).unwrap();
    ps.run_clock(s.as_mut(), 0).unwrap();
}
