//! MF sessions against a plain loop of `worker_clock_ordered` over the `CpuMf` oracle. Oracle
//! engines, on a sparse ratings file with four clocks per epoch (so each clock reads and pushes
//! only the items its slice touches): every clock's update and the final table bit for bit.
//! Fast engine (`FastMf`, one thread, rank 8, where only the dot product's summation order
//! differs), on the built-in data: final table within 1e-3 relative (floor 1e-3) and final
//! train RMSE within 1% of the oracle's.

use super::common::{job, max_rel};
use ps_apps::app::testing::{run_bsp, FakePs};
use ps_apps::app::{App, CpuEngines, DeltaSink, OracleEngines, Plan, WorkerContext};
use ps_apps::mf::{
    init_user_factors, load_ratings, split_train_test, synthetic, worker_clock_ordered,
    worker_shard, CpuMf, Hyper, MfApp, MfArgs, MfSettings, SyntheticSpec, Visiting, ITEMS,
};
use ps_apps::seed::ClockKey;
use ps_apps::{AppError, SinkError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

const CLOCKS: u64 = 8;

fn plan(data: Option<&Path>, clocks_per_epoch: u32) -> Plan<MfSettings> {
    let args = MfArgs {
        // The synthetic defaults, also for a file (whose own defaults are the biased model).
        rank: Some(8),
        lr: Some(0.025),
        lr_decay: Some(0.95),
        reg: Some(0.003),
        bias: Some(false),
        clocks_per_epoch,
        data: data.map(Path::to_path_buf),
        ..Default::default()
    };
    MfApp.plan(&args, &job(2)).unwrap()
}

/// A sparse ratings file: 300 users, 400 items, 3,000 ratings of a rank-2 model.
fn sparse_file(dir: &Path) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut text = String::new();
    for _ in 0..3000 {
        let (u, i) = (rng.gen_range(0..300u32), rng.gen_range(0..400u32));
        let r = ((u % 7) as f32 - 3.0) * ((i % 5) as f32 - 2.0) / 4.0 + rng.gen_range(-0.1..0.1);
        text.push_str(&format!("{u},{i},{r}\n"));
    }
    let p = dir.join("ratings.csv");
    std::fs::write(&p, text).unwrap();
    p
}

/// The oracle loop: items in a plain vector, every worker's clock by `worker_clock_ordered`,
/// deltas added in worker order at the clock boundary. Returns per clock, per worker, the delta
/// (dense over all items) and the training SSE, and the final items.
#[allow(clippy::type_complexity)]
fn oracle(plan: &Plan<MfSettings>) -> (Vec<Vec<(Vec<f32>, f64)>>, Vec<f32>) {
    let s = &plan.settings;
    let hyper: Hyper = s.hyper;
    let rank = hyper.rank as usize;
    let per_epoch = u64::from(s.clocks_per_epoch);
    let set = match &s.data {
        Some(p) => load_ratings(Path::new(p)).unwrap(),
        None => synthetic(&SyntheticSpec::default_builtin(s.seed)),
    };
    let (train, test) = split_train_test(&set, s.test_fraction, s.seed);
    let mut shards: Vec<_> = (0..2).map(|w| worker_shard(&train, &test, 2, w)).collect();
    let visiting: Vec<Visiting> = shards
        .iter_mut()
        .map(|sh| Visiting::new(s.order, &mut sh.train, sh.users.len() as u32, set.num_items))
        .collect();
    let mut users: Vec<Vec<f32>> = shards
        .iter()
        .map(|sh| init_user_factors(&sh.users, hyper.rank, s.seed))
        .collect();
    let mut items = vec![0.0f32; set.num_items as usize * rank];
    ps_proto::init::fill(plan.tables[0].init, ITEMS, 0, hyper.rank, &mut items);
    let mut clocks = Vec::new();
    for clock in 0..CLOCKS {
        let mut this = Vec::new();
        for w in 0..2u32 {
            let key = ClockKey {
                seed: s.seed,
                worker: w,
                clock: (clock / per_epoch) as u32,
            };
            let slice = ((clock % per_epoch) as usize, per_epoch as usize);
            let out = worker_clock_ordered(
                &mut CpuMf,
                &shards[w as usize].train,
                &visiting[w as usize].epoch(key),
                &mut users[w as usize],
                &items,
                &hyper,
                key,
                slice,
            )
            .unwrap();
            this.push((out.delta, out.train_sse));
        }
        for (d, _) in &this {
            items.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
        clocks.push(this);
    }
    (clocks, items)
}

#[test]
fn mf_sessions_on_the_oracle_engine_equal_the_oracle_loop_clock_by_clock() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(Some(&sparse_file(dir.path())), 4);
    let rank = plan.settings.hyper.rank as usize;
    let run = run_bsp(&MfApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (want, items) = oracle(&plan);
    for (clock, (got, want)) in run.clocks.iter().zip(&want).enumerate() {
        for (w, ((figures, updates), (delta, sse))) in got.iter().zip(want).enumerate() {
            let rows = updates.of_table(ITEMS);
            assert!(
                rows.len() < items.len() / rank,
                "clock {clock}: a slice touches a subset"
            );
            for (i, d) in delta.chunks_exact(rank).enumerate() {
                match rows.get(&(i as u64)) {
                    Some(row) => assert_eq!(row, d, "clock {clock} worker {w} item {i}"),
                    None => assert!(d.iter().all(|x| *x == 0.0), "item {i} changed unpushed"),
                }
            }
            assert_eq!(figures.train_se, *sse, "clock {clock} worker {w}");
            // Held-out error at the end of each epoch only.
            assert_eq!(figures.test_n > 0.0, clock % 4 == 3, "clock {clock}");
        }
    }
    let n = items.len() / rank;
    let table = run.ps.read(ITEMS, &(0..n as u64).collect::<Vec<_>>());
    assert_eq!(table, items, "final item table");
    let final_n: f64 = run.finals.iter().map(|f| f.sums.train_n).sum();
    assert!(final_n > 0.0);
    assert!(run.finals[0].facts.item_table_hash.is_some());
    assert!(run.finals[1].facts.item_table_hash.is_none());
}

#[test]
fn mf_sessions_on_the_fast_engine_stay_within_tolerance() {
    let plan = plan(None, 2);
    let rank = plan.settings.hyper.rank as usize;
    let run = run_bsp(&MfApp, &plan, 2, CLOCKS, &CpuEngines).unwrap();
    let (_, items) = oracle(&plan);
    let n = items.len() / rank;
    let table = run.ps.read(ITEMS, &(0..n as u64).collect::<Vec<_>>());
    let dev = max_rel(&table, &items, 1e-3);
    println!("mf fast vs oracle: max relative deviation of the item table {dev:e}");
    assert!(dev < 1e-3, "{dev}");
    let rmse = |run: &ps_apps::app::testing::BspRun<MfApp>| {
        let (se, n) = run.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.train_se, b + f.sums.train_n)
        });
        (se / n).sqrt()
    };
    let oracle_run = run_bsp(&MfApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (fast, slow) = (rmse(&run), rmse(&oracle_run));
    assert!(
        (fast - slow).abs() < 0.01 * slow,
        "train rmse {fast} vs {slow}"
    );
}

/// A sink that records nothing: for feeding sessions by hand.
struct Nowhere(Vec<f32>);

impl DeltaSink for Nowhere {
    fn rows(&mut self, _: u32, keys: &[u64]) -> Result<&mut [f32], SinkError> {
        self.0 = vec![0.0; keys.len() * 8];
        Ok(&mut self.0)
    }

    fn encoded(&mut self, table: u32, _: &[u64], _: u16, _: Vec<u8>) -> Result<(), SinkError> {
        Err(SinkError {
            table,
            reason: "no".into(),
        })
    }
}

#[test]
fn a_session_refuses_rows_it_did_not_ask_for_and_keeps_its_state() {
    let plan = plan(None, 1);
    let ctx = WorkerContext {
        worker: 0,
        workers: 2,
        engines: &OracleEngines,
        rejoin: Default::default(),
    };
    let ps = FakePs::new(&plan.tables).unwrap();
    let mut s = MfApp.session(plan.settings.clone(), &ctx).unwrap();
    let reads = s.reads(0).unwrap();
    let rows = &reads[0].rows;
    let values = ps.read(ITEMS, rows);
    let rows_err = |r: Result<(), AppError>| matches!(r, Err(AppError::Rows { .. }));
    // Wrong width, wrong count, rows not asked for, another table.
    assert!(rows_err(s.load(ITEMS, 0, &rows[..2], &values[..15])));
    assert!(rows_err(s.load(
        ITEMS,
        rows.len() - 1,
        &rows[..2],
        &values[..16]
    )));
    assert!(rows_err(s.load(
        ITEMS,
        0,
        &[rows[1], rows[0]],
        &values[..16]
    )));
    assert!(rows_err(s.load(7, 0, &rows[..1], &values[..8])));
    // The clock cannot run on missing rows.
    let mut out = Nowhere(Vec::new());
    assert!(rows_err(s.run_clock(0, &mut out).map(|_| ())));
    assert!(rows_err(s.run_clock(3, &mut out).map(|_| ())));
    // After all that, the right rows give the clock a clean session gives.
    let mut s = MfApp.session(plan.settings.clone(), &ctx).unwrap();
    let reads = s.reads(0).unwrap();
    assert!(rows_err(s.load(ITEMS, 0, &rows[..1], &values[..7])));
    s.load(ITEMS, 0, &reads[0].rows, &values).unwrap();
    assert!(
        rows_err(s.load(ITEMS, 0, &rows[..1], &values[..8])),
        "twice"
    );
    let (figures, _) = ps.run_clock(s.as_mut(), 0).unwrap();
    let mut clean = MfApp.session(plan.settings.clone(), &ctx).unwrap();
    let reads = clean.reads(0).unwrap();
    ps.feed(&reads, |t, f, k, v| clean.load(t, f, k, v))
        .unwrap();
    let (want, _) = ps.run_clock(clean.as_mut(), 0).unwrap();
    assert_eq!(figures.train_se, want.train_se);
}
