//! The MLP session's resident path (the one a GPU engine takes), run here with its CPU oracle
//! `HostMlpResident` wrapping the same engine as the host path: over a few clocks of the built-in
//! job every clock's pushed delta, training loss and held-out figures, the final model and the
//! final held-out accuracy are bit for bit those of the host path; and the oracle refuses bad
//! loads and sample indices, push plans with gaps and, once it keeps a residual, partial reads,
//! with typed errors.

use ps_apps::app::device_codec::{DeltaBlock, DeviceChain};
use ps_apps::app::testing::{run_bsp, BspRun};
use ps_apps::app::{App, CpuEngines, Engines, JobCommon, OracleEngines};
use ps_apps::lda::LdaCompute;
use ps_apps::lr::LrCompute;
use ps_apps::mf::MfCompute;
use ps_apps::mlp::{
    synthetic_mlp, Arch, CpuMlp, Dataset, HostMlpResident, MlpApp, MlpArgs, MlpCompute,
    MlpResident, SyntheticMlpSpec,
};
use ps_apps::AppError;
use ps_proto::codec::ValueFormat;

/// The host engines of `base`, with the resident MLP oracle on the same MLP engine.
struct Resident<E: Engines> {
    base: E,
}

impl<E: Engines> Engines for Resident<E> {
    fn device(&self) -> String {
        "cpu-resident".into()
    }
    fn mf(&self, t: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        self.base.mf(t)
    }
    fn lda(&self, t: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        self.base.lda(t)
    }
    fn mlp(&self, _t: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        Err(AppError::Settings(
            "the resident path must not ask for a host engine".into(),
        ))
    }
    fn lr(&self, t: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        self.base.lr(t)
    }
    fn mlp_resident(&self) -> Result<Option<Box<dyn MlpResident>>, AppError> {
        Ok(Some(Box::new(HostMlpResident::new(self.base.mlp(1)?))))
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

fn run(args: &MlpArgs, clocks: u64, engines: &dyn Engines) -> BspRun<MlpApp> {
    let plan = MlpApp.plan(args, &job()).unwrap();
    run_bsp(&MlpApp, &plan, 2, clocks, engines).unwrap()
}

fn args(hidden: Option<Vec<usize>>, clocks_per_epoch: u32) -> MlpArgs {
    MlpArgs {
        hidden,
        batch: None,
        lr: None,
        lr_decay: None,
        clocks_per_epoch: Some(clocks_per_epoch),
        data: None,
        ..Default::default()
    }
}

/// Every clock's figures and pushes, and the finals, are identical on both paths.
fn assert_same(host: &BspRun<MlpApp>, res: &BspRun<MlpApp>) {
    assert_eq!(host.clocks.len(), res.clocks.len());
    for (c, (h, r)) in host.clocks.iter().zip(&res.clocks).enumerate() {
        for (w, ((hc, hu), (rc, ru))) in h.iter().zip(r).enumerate() {
            assert_eq!(hc.train_loss, rc.train_loss, "clock {c} worker {w}");
            assert_eq!(hc.train_n, rc.train_n, "clock {c} worker {w}");
            assert!(rc.train_n > 0.0);
            assert_eq!(hc.test_correct, rc.test_correct, "clock {c} worker {w}");
            assert_eq!(hc.test_n, rc.test_n, "clock {c} worker {w}");
            assert!(hu == ru, "clock {c} worker {w}: the pushed deltas differ");
        }
    }
    for (w, (h, r)) in host.finals.iter().zip(&res.finals).enumerate() {
        assert_eq!(h.sums.test_correct, r.sums.test_correct, "worker {w}");
        assert_eq!(h.sums.test_loss, r.sums.test_loss, "worker {w}");
        assert_eq!(h.sums.samples, r.sums.samples, "worker {w}");
        // The host path moves nothing over a bus; the oracle counts what a device would.
        assert_eq!(h.sums.device, Default::default());
        assert!(r.sums.device.pcie_h2d > 0.0 && r.sums.device.pcie_d2h > 0.0);
    }
    let hash = |r: &BspRun<MlpApp>| r.finals[0].facts.model_hash.clone();
    assert!(hash(host).is_some());
    assert_eq!(hash(host), hash(res), "final model");
}

#[test]
fn resident_path_matches_the_host_path_on_the_builtin_job() {
    // The built-in job (64-128-128-10, batch 32) with its epochs split over two clocks, the
    // fast engine on both paths.
    let a = args(None, 2);
    let host = run(&a, 3, &CpuEngines);
    let res = run(&a, 3, &Resident { base: CpuEngines });
    assert_same(&host, &res);
    let acc = |r: &BspRun<MlpApp>| {
        let (c, n) = r.finals.iter().fold((0.0, 0.0), |(c, n), f| {
            (c + f.sums.test_correct, n + f.sums.test_n)
        });
        c / n
    };
    eprintln!(
        "built-in, 3 clocks: held-out accuracy host {:.4}, resident {:.4}",
        acc(&host),
        acc(&res)
    );
    assert!(acc(&res) > 0.5, "it learns: {}", acc(&res));
}

#[test]
fn resident_path_matches_the_host_path_on_the_oracle() {
    let a = args(Some(vec![16]), 1);
    let host = run(&a, 2, &OracleEngines);
    let res = run(
        &a,
        2,
        &Resident {
            base: OracleEngines,
        },
    );
    assert_same(&host, &res);
}

/// A small set (50 training, 10 held-out samples) and a model with one hidden layer of 8.
/// Loads every row of the model with `v`.
fn load_whole(e: &mut HostMlpResident, arch: &Arch, v: f32) {
    for l in 0..arch.num_layers() {
        e.load(l, 0, &plain(v, arch.layer(l).len())).unwrap();
    }
}

/// `n` values about `v` that are neither 16-bit values nor codes of a few scales: they cross
/// as f32.
fn plain(v: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| v * (1.0 + ((i as u32).wrapping_mul(2_654_435_761) >> 12) as f32 * 1.3e-7))
        .collect()
}

/// Blocks of whole layers, `k` values of each to send (a top-k's plan).
fn whole_layers(arch: &Arch, k: usize) -> Vec<DeltaBlock> {
    (0..arch.num_layers())
        .map(|l| DeltaBlock {
            table: l as u32,
            first_row: 0,
            rows: arch.layer(l).rows(),
            k,
        })
        .collect()
}

fn small() -> (Dataset, Dataset, Arch) {
    let mut spec = SyntheticMlpSpec::default_builtin(1);
    spec.train = 50;
    spec.test = 10;
    let (train, test) = synthetic_mlp(&spec);
    let arch = Arch::new(train.d, &[8], train.classes);
    (train, test, arch)
}

#[test]
fn the_oracle_refuses_bad_loads_and_samples() {
    let (train, test, arch) = small();
    let mut e = HostMlpResident::new(Box::new(CpuMlp));
    let wrong = Arch::new(train.d + 1, &[8], train.classes);
    assert!(e.setup(&wrong, &train, &test).is_err(), "input width");
    e.setup(&arch, &train, &test).unwrap();
    let w = arch.layer(0).width();
    assert!(e.load(2, 0, &vec![0.0; w]).is_err(), "no such layer");
    assert!(e.load(0, 8, &vec![0.0; w]).is_err(), "past the last row");
    assert!(e.load(0, 0, &vec![0.0; w - 1]).is_err(), "a partial row");
    e.load(0, 7, &vec![0.5; w]).unwrap();
    assert!(e.run_clock(&[0, 50], 4, 0.1).is_err(), "sample 50 of 50");
    let mut out = arch.zeros();
    out.pop();
    assert!(
        e.delta(1.0, &mut out).is_err(),
        "a delta of the wrong shape"
    );
}

/// What an engine that compresses its own delta needs of its caller, checked by the oracle as
/// the CUDA engine checks it: a push plan that covers the model once, and, while a residual is
/// kept, reads that load every row or none.
#[test]
fn the_oracle_refuses_plans_with_gaps_and_partial_reads_once_it_keeps_a_residual() {
    let (train, test, arch) = small();
    let mut e = HostMlpResident::new(Box::new(CpuMlp));
    e.setup(&arch, &train, &test).unwrap();
    let load_all = |e: &mut HostMlpResident, v: f32| load_whole(e, &arch, v);
    // Before any residual, a partial read is fine.
    e.load(0, 0, &vec![0.1; arch.layer(0).width()]).unwrap();
    e.run_clock(&[0, 1, 2, 3], 2, 0.1).unwrap();
    load_all(&mut e, 0.1);
    e.run_clock(&[0, 1, 2, 3], 2, 0.1).unwrap();
    let block = |table: u32, rows: usize| DeltaBlock {
        table,
        first_row: 0,
        rows,
        k: 3,
    };
    let whole: Vec<DeltaBlock> = (0..arch.num_layers())
        .map(|l| block(l as u32, arch.layer(l).rows()))
        .collect();
    let mut out = Vec::new();
    let gap = e.delta_encoded(
        1.0,
        DeviceChain::TopK(ValueFormat::F32),
        &whole[..1],
        &mut out,
    );
    assert!(gap.is_err(), "a plan that leaves a layer out");
    e.delta_encoded(1.0, DeviceChain::TopK(ValueFormat::F32), &whole, &mut out)
        .unwrap();
    assert_eq!(out.len(), whole.len());
    // Now a residual is kept: a read of part of the model is refused, a whole one is not.
    e.load(0, 0, &vec![0.1; arch.layer(0).width()]).unwrap();
    let partial = e.run_clock(&[0, 1], 2, 0.1).unwrap_err();
    assert!(partial.message.contains("must load every row"), "{partial}");
    load_all(&mut e, 0.2);
    e.run_clock(&[0, 1], 2, 0.1).unwrap();
    e.evaluate().unwrap();
}

/// The oracle counts the bytes the CUDA engine copies for the same calls: the data at set-up;
/// the read model once after loads changed it; a host-made order in, 16 bytes of totals out
/// per clock and per evaluation (a visit's order is made on the device); the plain delta out;
/// an encoded delta's payloads (a dense chain: the payload as whole words); for a top-k, only
/// what comes out; and what is held back, at the drop.
#[test]
fn the_oracle_counts_what_the_device_copies() {
    let (train, test, arch) = small();
    let params = arch.num_params() as u64;
    let mut e = HostMlpResident::new(Box::new(CpuMlp));
    e.setup(&arch, &train, &test).unwrap();
    let data = 4 * (train.x.len() + test.x.len()) as u64 + (train.n + test.n) as u64;
    let t = e.traffic();
    assert_eq!((t.h2d_bytes, t.d2h_bytes), (data, 0));
    let load_all = |e: &mut HostMlpResident| load_whole(e, &arch, 0.1);
    load_all(&mut e);
    e.evaluate().unwrap();
    e.run_clock(&[0, 1, 2, 3], 2, 0.1).unwrap();
    let mut out = arch.zeros();
    e.delta(1.0, &mut out).unwrap();
    let t = e.traffic();
    // The model once (the clock's use found nothing new), the order, totals twice, the delta.
    assert_eq!(t.h2d_bytes, data + 4 * params + 4 * 4);
    assert_eq!(t.d2h_bytes, 16 + 16 + 4 * params);
    let before = e.traffic();
    load_all(&mut e);
    let visit = ps_apps::visit::Visit::for_clock(
        ps_apps::seed::ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        },
        train.n,
        0,
        1,
    );
    e.run_visit(&visit, 8, 0.1).unwrap();
    let blocks = whole_layers(&arch, 5);
    let mut payloads = Vec::new();
    e.delta_encoded(
        1.0,
        DeviceChain::Dense(ValueFormat::Q4),
        &blocks,
        &mut payloads,
    )
    .unwrap();
    let words: u64 = (0..arch.num_layers())
        .map(|l| {
            ps_apps::app::device_codec::dense_device_bytes(ValueFormat::Q4, arch.layer(l).len())
                .unwrap()
        })
        .sum();
    let t = e.traffic();
    assert_eq!(t.h2d_bytes - before.h2d_bytes, 4 * params);
    assert_eq!(t.d2h_bytes - before.d2h_bytes, 16 + words);
    // A top-k plan: its encoders copy nothing in (the device makes the sample positions),
    // the counts, indices and values out; the drop copies every block's residual out.
    let before = e.traffic();
    e.delta_encoded(
        1.0,
        DeviceChain::TopK(ValueFormat::Sign),
        &blocks,
        &mut payloads,
    )
    .unwrap();
    let t = e.traffic();
    assert_eq!(t.h2d_bytes, before.h2d_bytes);
    assert!(t.d2h_bytes - before.d2h_bytes >= blocks.len() as u64 * (4 + 4 * 5));
    let before = e.traffic();
    assert!(e.drop_unsent().unwrap() > 0.0);
    assert_eq!(e.traffic().d2h_bytes - before.d2h_bytes, 4 * params);
}

/// A clock with no samples (a worker with fewer samples than clocks in an epoch) still starts
/// from the read model, as the host path and the CUDA engine do: its delta is zero, whatever
/// the clock before it did.
#[test]
fn an_empty_clock_pushes_a_zero_delta() {
    let (train, test, arch) = small();
    let mut e = HostMlpResident::new(Box::new(CpuMlp));
    e.setup(&arch, &train, &test).unwrap();
    let load_all = |e: &mut HostMlpResident, v: f32| load_whole(e, &arch, v);
    let mut out = arch.zeros();
    load_all(&mut e, 0.1);
    e.run_clock(&[0, 1, 2, 3], 2, 0.1).unwrap();
    e.delta(1.0, &mut out).unwrap();
    assert!(out.iter().flatten().any(|&d| d != 0.0), "the clock trained");
    load_all(&mut e, 0.2);
    e.run_clock(&[], 2, 0.1).unwrap();
    e.delta(1.0, &mut out).unwrap();
    assert!(out.iter().flatten().all(|&d| d == 0.0), "an empty order");
    e.run_clock(&[0, 1], 2, 0.1).unwrap();
    load_all(&mut e, 0.3);
    let empty = ps_apps::visit::Visit {
        count: 0,
        ..ps_apps::visit::Visit::for_clock(
            ps_apps::seed::ClockKey {
                seed: 1,
                worker: 0,
                clock: 0,
            },
            train.n,
            0,
            1,
        )
    };
    e.run_visit(&empty, 2, 0.1).unwrap();
    e.delta(1.0, &mut out).unwrap();
    assert!(out.iter().flatten().all(|&d| d == 0.0), "an empty visit");
}

/// Rows of f16 values (an `f16` pull codec's) cross as f16, 2 bytes a value, when every row of
/// the model was loaded since its last use and every value was an f16 value; a model of codes
/// in runs of scales (a `q8` pull codec's, or values all alike) crosses as its codes where they
/// take fewer bytes still; otherwise the model crosses as f32.
#[test]
fn a_model_loaded_whole_in_f16_values_crosses_as_f16() {
    let (train, test, arch) = small();
    let params = arch.num_params() as u64;
    let mut e = HostMlpResident::new(Box::new(CpuMlp));
    e.setup(&arch, &train, &test).unwrap();
    let load = |e: &mut HostMlpResident, layers: usize, make: &dyn Fn(usize, usize) -> Vec<f32>| {
        let before = e.traffic().h2d_bytes;
        for l in 0..layers {
            e.load(l, 0, &make(l, arch.layer(l).len())).unwrap();
        }
        e.evaluate().unwrap();
        e.traffic().h2d_bytes - before
    };
    let all = arch.num_layers();
    let same = |v: f32| move |_: usize, n: usize| vec![v; n];
    let f16s = |v: f32| {
        move |l: usize, n: usize| -> Vec<f32> {
            plain(v + l as f32, n)
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect()
        }
    };
    assert_eq!(load(&mut e, all, &f16s(0.5)), 2 * params, "f16 values");
    // All alike: f16 values, but their codes take fewer bytes: a segment, a scale a group of
    // 128, 1 bit a code.
    let heads = 8 + 4 * params.div_ceil(128);
    assert_eq!(
        load(&mut e, all, &same(0.5)),
        heads + params.div_ceil(8),
        "codes of one value"
    );
    let f32s = load(&mut e, all, &|l, n| plain(0.1 + l as f32, n));
    assert_eq!(f32s, 4 * params, "f32 values");
    // 0.1, then 0.5s: one run of scale 0.1, codes 1 and 5, 4 bits each.
    let one_odd = |l: usize, n: usize| {
        let mut v = vec![0.5; n];
        if l == 0 {
            v[0] = 0.1;
        }
        v
    };
    assert_eq!(
        load(&mut e, all, &one_odd),
        heads + params.div_ceil(2),
        "codes of one scale"
    );
    // Layer 0 alike, the rest f32 still.
    load(&mut e, all, &|l, n| plain(0.3 + l as f32, n));
    assert_eq!(
        load(&mut e, 1, &same(0.25)),
        4 * params,
        "part of the model"
    );
    assert_eq!(load(&mut e, all, &f16s(-0.375)), 2 * params, "f16 again");
    assert_eq!(load(&mut e, 0, &same(0.5)), 0, "no loads, no copy");
}

/// The seeded initial model is made where the model is: nothing crosses for it, and the engine
/// computes from it exactly what an engine that loaded `init_params(seed)` row by row does
/// (whose loads cross as f32); loads before it are overwritten, and a partial load of f16
/// values after it makes the whole model cross as f32 (the rest is the initial model's f32
/// values). Once the engine keeps a residual it loads the model as rows, and it crosses.
#[test]
fn the_seeded_initial_model_does_not_cross() {
    let (train, test, arch) = small();
    let params = arch.num_params() as u64;
    let mut made = HostMlpResident::new(Box::new(CpuMlp));
    assert!(made.load_initial(3).is_err(), "before set-up");
    let mut loaded = HostMlpResident::new(Box::new(CpuMlp));
    made.setup(&arch, &train, &test).unwrap();
    loaded.setup(&arch, &train, &test).unwrap();
    let (m0, l0) = (made.traffic().h2d_bytes, loaded.traffic().h2d_bytes);
    made.load(0, 0, &plain(0.7, arch.layer(0).len())).unwrap();
    made.load_initial(3).unwrap();
    for (l, p) in arch.init_params(3).iter().enumerate() {
        loaded.load(l, 0, p).unwrap();
    }
    let (a, b) = (made.evaluate().unwrap(), loaded.evaluate().unwrap());
    assert_eq!(made.traffic().h2d_bytes - m0, 0, "nothing crosses");
    assert_eq!(loaded.traffic().h2d_bytes - l0, 4 * params, "loads cross");
    assert_eq!(a.loss_sum.to_bits(), b.loss_sum.to_bits(), "same model");
    assert_eq!(a.correct, b.correct);
    let order: Vec<usize> = (0..train.n).collect();
    made.run_clock(&order, 8, 0.1).unwrap();
    loaded.run_clock(&order, 8, 0.1).unwrap();
    let (mut da, mut db) = (arch.zeros(), arch.zeros());
    made.delta(1.0, &mut da).unwrap();
    loaded.delta(1.0, &mut db).unwrap();
    let bits = |m: &[Vec<f32>]| -> Vec<u32> { m.iter().flatten().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&da), bits(&db), "same delta");

    made.load_initial(4).unwrap();
    let f16s: Vec<f32> = plain(0.5, arch.layer(0).len())
        .iter()
        .map(|&x| half::f16::from_f32(x).to_f32())
        .collect();
    made.load(0, 0, &f16s).unwrap();
    let before = made.traffic().h2d_bytes;
    made.evaluate().unwrap();
    assert_eq!(
        made.traffic().h2d_bytes - before,
        4 * params,
        "f32 after a partial load"
    );

    // With a residual kept, the model is loaded and crosses.
    let blocks = whole_layers(&arch, 3);
    made.run_clock(&order, 8, 0.1).unwrap();
    let mut payloads = Vec::new();
    made.delta_encoded(
        1.0,
        DeviceChain::TopK(ValueFormat::F32),
        &blocks,
        &mut payloads,
    )
    .unwrap();
    let before = made.traffic().h2d_bytes;
    made.load_initial(5).unwrap();
    made.evaluate().unwrap();
    assert!(
        made.traffic().h2d_bytes - before >= 2 * params,
        "loaded, it crosses"
    );
}
