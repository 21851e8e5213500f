//! The resident CUDA MLP engine against its CPU oracle `HostMlpResident` on `CpuMlp` (f64
//! accumulation): a few clocks of local SGD, both engines loading the same read model each clock
//! (the oracle's read plus its pushed delta, as the server would), so each clock's comparison
//! measures that clock's rounding alone.
//!
//! - Softmax regression (no hidden layer: the loss is smooth in the parameters): every clock's
//!   delta within 1e-4 relative, loss totals within 1e-4 relative.
//! - A ReLU network: a hidden pre-activation within f32 rounding of 0 can take the other side of
//!   the kink on the device, which switches one sample's gradient through that unit on or off,
//!   so the deltas agree to 1e-2 relative there (a wrong batch, step or scale is off by far
//!   more), the loss totals to 1e-3, the held-out accuracy to 0.01.
//!
//! Also: the engine compresses its own delta as the worker library would (top-k with f32 or
//! f16 values, the residual on the device); repeated device runs give bit-identical deltas, the
//! bus traffic per clock is exactly the model in, the order in, and the delta and the totals
//! out; a clock whose order the device makes itself (`run_visit`) is the host-ordered clock bit
//! for bit, without the order on the bus; and bad input is a typed error.

use ps_apps::app::device_codec::{DeltaBlock, DeviceChain, Fraction, ResidualKeeper};
use ps_apps::mlp::{
    epoch_order, synthetic_mlp, Arch, BatchStats, ClockKey, CpuMlp, Dataset, HostMlpResident,
    MlpResident, SyntheticMlpSpec, Visit,
};
use ps_proto::codec::ValueFormat;
use std::sync::Arc;

use worker_gpu::cuda::mlp::MlpGemm;
use worker_gpu::cuda::mlp_resident::CudaMlpResident;
use worker_gpu::cuda::Gpu;

use crate::common::{rel_err, seed};

const CLOCKS: u32 = 3;

pub(crate) fn data(seed: u64) -> (Dataset, Dataset) {
    let mut spec = SyntheticMlpSpec::default_builtin(seed);
    spec.train = 1_000;
    spec.test = 500;
    synthetic_mlp(&spec)
}

/// Loads `read` in two pieces per layer (as shard replies arrive).
pub(crate) fn load(e: &mut dyn MlpResident, arch: &Arch, read: &[Vec<f32>]) {
    for (l, p) in read.iter().enumerate() {
        let s = arch.layer(l);
        let half = s.rows() / 2;
        e.load(l, half, &p[half * s.width()..]).expect("load");
        e.load(l, 0, &p[..half * s.width()]).expect("load");
    }
}

/// One clock on an engine: held-out figures of `read`, the clock's training totals, the delta.
fn clock(
    e: &mut dyn MlpResident,
    arch: &Arch,
    read: &[Vec<f32>],
    order: &[usize],
    batch: usize,
) -> (BatchStats, BatchStats, Vec<Vec<f32>>) {
    load(e, arch, read);
    let held_out = e.evaluate().expect("evaluate");
    let train = e.run_clock(order, batch, 0.1).expect("run_clock");
    let mut delta = arch.zeros();
    e.delta(0.5, &mut delta).expect("delta");
    (held_out, train, delta)
}

pub(crate) fn order(n: usize, c: u32) -> Vec<usize> {
    let key = ClockKey {
        seed: 7,
        worker: 0,
        clock: c,
    };
    // Most of the samples, so that the last batch is partial.
    let mut o = epoch_order(n, key);
    o.truncate(n - 13);
    o
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-12)
}

/// Runs `CLOCKS` clocks on both engines (hidden layers `hidden`, data of `data_seed`); returns
/// the device's deltas.
fn compare(
    gpu: &Arc<Gpu>,
    gemm: MlpGemm,
    hidden: &[usize],
    data_seed: u64,
    batch: usize,
    (delta_tol, loss_tol): (f64, f64),
) -> Vec<Vec<Vec<f32>>> {
    let (train, test) = data(data_seed);
    let arch = Arch::new(train.d, hidden, train.classes);
    let mut dev = CudaMlpResident::with_gemm(Arc::clone(gpu), gemm).expect("engine");
    let mut host = HostMlpResident::new(Box::new(CpuMlp));
    dev.setup(&arch, &train, &test).expect("setup");
    host.setup(&arch, &train, &test).expect("setup");
    let setup = dev.traffic();
    let x_bytes = 4 * (train.x.len() + test.x.len()) + train.n + test.n;
    assert_eq!(
        setup.h2d_bytes, x_bytes as u64,
        "the set-up uploads the data once"
    );
    let mut read = arch.init_params(3);
    let mut deltas = Vec::new();
    let params = arch.num_params() as u64;
    for c in 0..CLOCKS {
        let o = order(train.n, c);
        let before = dev.traffic();
        let (hd, td, dd) = clock(&mut dev, &arch, &read, &o, batch);
        let (hh, th, dh) = clock(&mut host, &arch, &read, &o, batch);
        let t = dev.traffic().since(&before);
        let e = rel_err(&dd.concat(), &dh.concat());
        eprintln!(
            "{arch:?} clock {c}: delta rel_err {e:.2e}, train loss {} vs {}, held-out correct \
             {} vs {}, {t:?}",
            td.loss_sum, th.loss_sum, hd.correct, hh.correct
        );
        assert!(e <= delta_tol, "clock {c}: delta rel_err {e:.3e}");
        assert_eq!((td.count, hd.count), (th.count, hh.count));
        assert!(
            close(td.loss_sum, th.loss_sum, loss_tol),
            "clock {c}: train loss"
        );
        assert!(
            close(hd.loss_sum, hh.loss_sum, loss_tol),
            "clock {c}: held-out loss"
        );
        let acc = |s: &BatchStats| s.correct as f64 / s.count as f64;
        assert!((acc(&hd) - acc(&hh)).abs() <= 0.01, "clock {c}: accuracy");
        // The model in, the order in; the delta, the training and held-out totals out.
        assert_eq!(t.h2d_bytes, 4 * params + 4 * o.len() as u64, "clock {c}");
        assert_eq!(t.d2h_bytes, 4 * params + 16 + 16, "clock {c}");
        assert!(t.compute_s > 0.0);
        // Both ways' copies are timed on the device, within the clock.
        assert!(t.h2d_s > 0.0 && t.d2h_s > 0.0, "clock {c}: {t:?}");
        // The next read: what the server makes of this delta.
        for (r, d) in read.iter_mut().zip(&dh) {
            for (r, d) in r.iter_mut().zip(d) {
                *r = if c == 0 { *d } else { *r + d };
            }
        }
        deltas.push(dd);
    }
    deltas
}

#[test]
fn resident_softmax_regression_matches_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("resident_softmax_regression_matches_the_oracle")
    else {
        return;
    };
    let s = seed("resident softmax regression");
    for batch in [32, 1_000] {
        compare(&gpu, MlpGemm::Tiled, &[], s, batch, (1e-4, 1e-4));
    }
}

#[test]
fn resident_relu_network_matches_the_oracle_and_repeats_exactly() {
    let Some(gpu) = worker_gpu::gpu_or_skip("resident_relu_network_matches_the_oracle") else {
        return;
    };
    let s = seed("resident relu network");
    let a = compare(&gpu, MlpGemm::Tiled, &[128, 128], s, 32, (1e-2, 1e-3));
    let b = compare(&gpu, MlpGemm::Tiled, &[128, 128], s, 32, (1e-2, 1e-3));
    assert!(a == b, "two device runs differ");
}

/// The products through cuBLAS (`PS_MLP_GEMM=cublas`): the same bars against the oracle, for
/// softmax regression and the ReLU network, and two runs alike bit for bit.
#[test]
fn resident_engine_with_cublas_matches_the_oracle_and_repeats_exactly() {
    let Some(gpu) = worker_gpu::gpu_or_skip("resident_engine_with_cublas_matches_the_oracle")
    else {
        return;
    };
    let s = seed("resident softmax regression");
    for batch in [32, 1_000] {
        compare(&gpu, MlpGemm::Cublas, &[], s, batch, (1e-4, 1e-4));
    }
    let s = seed("resident relu network");
    let a = compare(&gpu, MlpGemm::Cublas, &[128, 128], s, 32, (1e-2, 1e-3));
    let b = compare(&gpu, MlpGemm::Cublas, &[128, 128], s, 32, (1e-2, 1e-3));
    assert!(a == b, "two device runs differ");
}

#[test]
fn resident_engine_rejects_bad_input() {
    let Some(gpu) = worker_gpu::gpu_or_skip("resident_engine_rejects_bad_input") else {
        return;
    };
    let (train, test) = data(1);
    let arch = Arch::new(train.d, &[8], train.classes);
    let mut dev = CudaMlpResident::new(gpu).expect("engine");
    assert!(dev.run_clock(&[0], 4, 0.1).is_err(), "before setup");
    let wide = Arch::new(train.d + 1, &[8], train.classes);
    assert!(dev.setup(&wide, &train, &test).is_err(), "input width");
    dev.setup(&arch, &train, &test).expect("setup");
    let w = arch.layer(0).width();
    assert!(dev.load(2, 0, &vec![0.0; w]).is_err(), "no such layer");
    assert!(dev.load(0, 8, &vec![0.0; w]).is_err(), "past the last row");
    assert!(dev.load(0, 0, &vec![0.0; w - 1]).is_err(), "a partial row");
    assert!(dev.run_clock(&[0, train.n], 4, 0.1).is_err(), "sample n");
    let mut out = arch.zeros();
    out.pop();
    assert!(dev.delta(1.0, &mut out).is_err(), "wrong shape");
    // Still usable after refusals: an empty clock leaves local = read, a zero delta.
    load(&mut dev, &arch, &arch.init_params(1));
    dev.run_clock(&[], 4, 0.1).expect("empty clock");
    let mut d = arch.zeros();
    dev.delta(1.0, &mut d).expect("delta");
    assert!(d.iter().flatten().all(|&v| v == 0.0));
}

/// Blocks as the worker library cuts the layers over two shards: every layer in two row runs.
pub(crate) fn two_shard_blocks(arch: &Arch, fraction: f64) -> Vec<DeltaBlock> {
    let mut blocks = Vec::new();
    for l in 0..arch.num_layers() {
        let s = arch.layer(l);
        let half = s.rows() / 2;
        for (first_row, rows) in [(0, half), (half, s.rows() - half)] {
            let n = rows * s.width();
            blocks.push(DeltaBlock {
                table: l as u32,
                first_row,
                rows,
                k: ((n as f64 * fraction).ceil() as usize).min(n),
            });
        }
    }
    blocks
}

/// A coded engine beside a plain one, and the keeper of what the coded one holds back.
struct CodedPair {
    plain: CudaMlpResident,
    coded: CudaMlpResident,
    keeper: ResidualKeeper,
    /// The model as the shards hold it.
    read: Vec<Vec<f32>>,
}

impl CodedPair {
    fn new(gpu: &Arc<Gpu>, arch: &Arch, train: &Dataset, test: &Dataset, seed: u64) -> Self {
        let mut plain = CudaMlpResident::new(Arc::clone(gpu)).expect("engine");
        let mut coded = CudaMlpResident::new(Arc::clone(gpu)).expect("engine");
        plain.setup(arch, train, test).expect("setup");
        coded.setup(arch, train, test).expect("setup");
        let shapes: Vec<(usize, usize)> = arch
            .layers()
            .iter()
            .map(|s| (s.rows(), s.width()))
            .collect();
        CodedPair {
            plain,
            coded,
            keeper: ResidualKeeper::new(&shapes),
            read: arch.init_params(seed),
        }
    }

    /// Clock `c`: the plain engine reads what the coded one sees (the read plus the residual),
    /// both run the same order, and the coded engine's payloads of `chain` must be the
    /// keeper's of the plain delta; the read then takes the payloads as a shard would. Returns
    /// the payloads and the coded engine's traffic of the encoding.
    fn clock(
        &mut self,
        arch: &Arch,
        n: usize,
        blocks: &[DeltaBlock],
        chain: DeviceChain,
        c: u32,
    ) -> (Vec<Vec<u8>>, ps_apps::mlp::Traffic) {
        let mut seen = self.read.clone();
        for (l, r) in seen.iter_mut().enumerate() {
            self.keeper.add_to(l as u32, 0, r).expect("add");
        }
        load(&mut self.plain, arch, &seen);
        load(&mut self.coded, arch, &self.read);
        let o = order(n, c);
        self.plain.run_clock(&o, 32, 0.1).expect("run_clock");
        self.coded.run_clock(&o, 32, 0.1).expect("run_clock");
        let mut delta = arch.zeros();
        self.plain.delta(0.5, &mut delta).expect("delta");
        let parts: Vec<&[f32]> = blocks
            .iter()
            .map(|b| {
                let w = arch.layer(b.table as usize).width();
                &delta[b.table as usize][b.first_row * w..(b.first_row + b.rows) * w]
            })
            .collect();
        let want = self
            .keeper
            .encode_blocks(blocks, chain, &parts)
            .expect("keeper");
        let before = self.coded.traffic();
        let mut got = Vec::new();
        self.coded
            .delta_encoded(0.5, chain, blocks, &mut got)
            .expect("encoded");
        let t = self.coded.traffic().since(&before);
        assert!(
            got == want,
            "{chain:?} clock {c}: payloads differ from the library's"
        );
        for (b, p) in blocks.iter().zip(&got) {
            let w = arch.layer(b.table as usize).width();
            let m = b.rows * w;
            let sent = ps_proto::codec::decode(chain.chain(b.k).wire_id(), p, m)
                .expect("decode")
                .into_dense(m)
                .expect("dense");
            let r = &mut self.read[b.table as usize][b.first_row * w..b.first_row * w + m];
            r.iter_mut().zip(sent).for_each(|(r, s)| *r += s);
        }
        (got, t)
    }
}

/// The device compresses its own delta as the worker library would: over several clocks, an
/// engine that encodes (`delta_encoded`, residual on the device, added to its reads) gives the
/// bytes `ResidualKeeper` makes of a second engine's plain delta on the same reads, for a top-k
/// in f32, f16, bf16, q4 and sign, an energy stage in sign and f16 (counted on the device) and
/// every dense lossy format; only the selection, or the dense payload,
/// crosses PCIe; and the final plain delta hands back what was held.
#[test]
fn resident_engine_encodes_its_delta_as_the_library_would() {
    let Some(gpu) =
        worker_gpu::gpu_or_skip("resident_engine_encodes_its_delta_as_the_library_would")
    else {
        return;
    };
    let (train, test) = data(seed("resident encoded delta"));
    let arch = Arch::new(train.d, &[64], train.classes);
    let params = arch.num_params() as u64;
    let chains = [
        DeviceChain::TopK(ValueFormat::F16),
        DeviceChain::TopK(ValueFormat::F32),
        DeviceChain::TopK(ValueFormat::Sign),
        DeviceChain::TopK(ValueFormat::Q4),
        DeviceChain::TopK(ValueFormat::Bf16),
        DeviceChain::Energy(Fraction::new(0.1), ValueFormat::Sign),
        DeviceChain::Energy(Fraction::new(0.4), ValueFormat::F16),
        DeviceChain::Dense(ValueFormat::F16),
        DeviceChain::Dense(ValueFormat::Bf16),
        DeviceChain::Dense(ValueFormat::Q8),
        DeviceChain::Dense(ValueFormat::Q4),
        DeviceChain::Dense(ValueFormat::Q2),
        DeviceChain::Dense(ValueFormat::Sign),
    ];
    for chain in chains {
        let mut pair = CodedPair::new(&gpu, &arch, &train, &test, 5);
        assert!(pair.coded.encodes(chain));
        let blocks = two_shard_blocks(&arch, 0.05);
        for c in 0..CLOCKS {
            let (got, t) = pair.clock(&arch, train.n, &blocks, chain, c);
            let selected: u64 = blocks.iter().map(|b| b.k as u64).sum();
            eprintln!("{chain:?} clock {c}: {t:?} for {selected} selected of {params}");
            if let DeviceChain::Dense(_) = chain {
                // The payloads alone come back, read as whole words for a block chain.
                let bytes: u64 = got.iter().map(|p| p.len() as u64).sum();
                let most = bytes + 3 * blocks.len() as u64;
                assert!(
                    (bytes..=most).contains(&t.d2h_bytes) && t.h2d_bytes == 0,
                    "{chain:?} clock {c}: {t:?} for payloads of {bytes} bytes"
                );
            } else {
                // The plain delta would be 4 x params bytes; the selection (candidates,
                // values) of 5% is a fraction of it.
                assert!(
                    t.d2h_bytes < 4 * params / 2,
                    "clock {c}: only the selection comes back"
                );
            }
        }
        let CodedPair {
            mut plain,
            mut coded,
            mut keeper,
            read,
        } = pair;
        // The last clock goes plain: the delta plus everything held back.
        let mut seen = read.clone();
        for (l, r) in seen.iter_mut().enumerate() {
            keeper.add_to(l as u32, 0, r).expect("add");
        }
        load(&mut plain, &arch, &seen);
        load(&mut coded, &arch, &read);
        let o = order(train.n, CLOCKS);
        plain.run_clock(&o, 32, 0.1).expect("run_clock");
        coded.run_clock(&o, 32, 0.1).expect("run_clock");
        let (mut want, mut got) = (arch.zeros(), arch.zeros());
        plain.delta(0.5, &mut want).expect("delta");
        for (l, w) in want.iter_mut().enumerate() {
            keeper.take_into(l as u32, w).expect("take");
        }
        coded.delta(0.5, &mut got).expect("delta");
        let e = rel_err(&got.concat(), &want.concat());
        assert!(
            e <= 1e-6,
            "{chain:?}: the final delta with what was held, rel_err {e:.2e}"
        );
    }
}

/// The job's last clock plans the top-k chain without its selection (dense f16): the engine
/// folds its top-k residual into that clock's delta and encodes it whole, as the library would;
/// what it then holds (f16's rounding) is what `drop_unsent` reports, the keeper's sum, and a
/// read after the drop no longer has to load every row.
#[test]
fn the_last_clocks_dense_chain_and_the_drop_are_the_libraries() {
    let Some(gpu) =
        worker_gpu::gpu_or_skip("the_last_clocks_dense_chain_and_the_drop_are_the_libraries")
    else {
        return;
    };
    let (train, test) = data(seed("resident dense flush"));
    let arch = Arch::new(train.d, &[64], train.classes);
    let mut pair = CodedPair::new(&gpu, &arch, &train, &test, 6);
    let blocks = two_shard_blocks(&arch, 0.05);
    for c in 0..CLOCKS {
        let chain = if c + 1 < CLOCKS {
            DeviceChain::TopK(ValueFormat::F16)
        } else {
            DeviceChain::Dense(ValueFormat::F16)
        };
        pair.clock(&arch, train.n, &blocks, chain, c);
    }
    let CodedPair {
        mut coded,
        keeper,
        read,
        ..
    } = pair;
    let held = keeper.l1();
    let dropped = coded.drop_unsent().expect("drop");
    assert!(held > 0.0, "f16 rounding leaves something behind");
    assert!(
        (dropped - held).abs() <= 1e-9 * held,
        "dropped {dropped} against the keeper's {held}"
    );
    assert_eq!(coded.drop_unsent().expect("drop again"), 0.0);
    // Nothing is held now: a read of part of the model is fine again.
    let w = arch.layer(0).width();
    coded.load(0, 0, &read[0][..w]).expect("load");
    coded.evaluate().expect("evaluate");
}

/// A clock whose order the device makes (`run_visit`, `kernels/visit.cuh`) is the clock of the
/// order the host makes (`Visit::order`) bit for bit, and the order does not cross the bus.
#[test]
fn device_made_visit_order_is_the_hosts() {
    let Some(gpu) = worker_gpu::gpu_or_skip("device_made_visit_order_is_the_hosts") else {
        return;
    };
    let (train, test) = data(3);
    let arch = Arch::new(train.d, &[32], train.classes);
    let read = arch.init_params(3);
    let mut by_device = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
    let mut by_host = CudaMlpResident::new(gpu).expect("engine");
    for e in [&mut by_device, &mut by_host] {
        e.setup(&arch, &train, &test).expect("setup");
    }
    for c in 0..CLOCKS {
        let key = ClockKey {
            seed: 11,
            worker: 1,
            clock: c,
        };
        let visit = Visit::for_clock(key, train.n, c as usize % 3, 3);
        let (d0, h0) = (by_device.traffic(), by_host.traffic());
        load(&mut by_device, &arch, &read);
        load(&mut by_host, &arch, &read);
        let a = by_device.run_visit(&visit, 32, 0.1).expect("run_visit");
        let b = by_host
            .run_clock(&visit.order(), 32, 0.1)
            .expect("run_clock");
        // The device adds the samples' losses with atomics in whatever order the warps finish:
        // close, not equal (about 1,000 positive terms a clock; the counts are exact).
        assert_eq!((a.correct, a.count), (b.correct, b.count), "clock {c}");
        assert!(
            close(a.loss_sum, b.loss_sum, 1e-12),
            "clock {c}: loss {} vs {}",
            a.loss_sum,
            b.loss_sum
        );
        let (mut da, mut db) = (arch.zeros(), arch.zeros());
        by_device.delta(1.0, &mut da).expect("delta");
        by_host.delta(1.0, &mut db).expect("delta");
        assert!(da == db, "clock {c}: the deltas differ");
        let moved = |now: ps_apps::mlp::Traffic, then: ps_apps::mlp::Traffic| {
            now.h2d_bytes - then.h2d_bytes
        };
        assert_eq!(
            moved(by_host.traffic(), h0) - moved(by_device.traffic(), d0),
            4 * u64::from(visit.count),
            "only the host-made order crosses the bus"
        );
    }
    let wrong = Visit::for_clock(
        ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        },
        train.n + 1,
        0,
        1,
    );
    load(&mut by_device, &arch, &read);
    assert!(
        by_device.run_visit(&wrong, 32, 0.1).is_err(),
        "a visit of other samples"
    );
}
