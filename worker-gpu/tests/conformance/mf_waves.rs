//! The resident CUDA MF engine (conflict-free waves) against its CPU oracle `HostResident`, which
//! runs the same waves block by block on one thread: on a heavily conflicting set (few items,
//! many ratings each) the tables agree to f32 rounding after several epochs, the device run is
//! bit-identical when repeated and when an epoch is split over calls, and the row and error
//! helpers agree with the host. With f16 factors the same holds against the oracle that rounds
//! both rows after every step, to f16 rounding, and every stored value is an f16. The engine's
//! own encoding of a dense lossy chain is the worker library's of its own delta, byte for byte,
//! with what it holds back in the rows it loads and in its drop, and only the payloads cross.

use ps_apps::app::device_codec::PulledRows;
use ps_apps::mf::{
    bands_for, ClockKey, CpuMf, Factors, HostResident, Layout, MfResident, Rating, ResidentSetup,
    Split, WaveSchedule,
};
use ps_proto::codec::ValueFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mf_resident::{CudaMfResident, MfWaveKernel};

use crate::common::{rel_err, seed};

struct Problem {
    layout: Layout,
    train: Vec<Rating>,
    test: Vec<Rating>,
    schedule: WaveSchedule,
    users: Vec<f32>,
    items: Vec<f32>,
    num_items: usize,
    factors: Factors,
}

/// 400 users x 24 items (every item in hundreds of ratings: Hogwild's worst case).
fn problem(rng: &mut ChaCha8Rng, layout: Layout, factors: Factors, lanes: usize) -> Problem {
    problem_of((400, 24, 20_000), rng, layout, factors, lanes)
}

/// `ratings` random ratings of `users` x `items`, arranged for the waves of `lanes` warps.
fn problem_of(
    (users, items, ratings): (u32, u32, usize),
    rng: &mut ChaCha8Rng,
    layout: Layout,
    factors: Factors,
    lanes: usize,
) -> Problem {
    let rating = |rng: &mut ChaCha8Rng| Rating {
        user: rng.gen_range(0..users),
        item: rng.gen_range(0..items),
        value: rng.gen_range(-2.0f32..2.0),
    };
    let mut train: Vec<Rating> = (0..ratings).map(|_| rating(rng)).collect();
    let test: Vec<Rating> = (0..2_000).map(|_| rating(rng)).collect();
    let bands = bands_for(train.len(), users, items, lanes);
    let schedule = WaveSchedule::new(&train, users, items, bands);
    schedule.arrange(&mut train);
    let w = layout.width();
    let s = 0.3f32;
    Problem {
        layout,
        users: (0..users as usize * w)
            .map(|_| rng.gen_range(-s..s))
            .collect(),
        items: (0..items as usize * w)
            .map(|_| rng.gen_range(-s..s))
            .collect(),
        train,
        test,
        schedule,
        num_items: items as usize,
        factors,
    }
}

fn setup(e: &mut dyn MfResident, p: &Problem) {
    e.setup(&ResidentSetup {
        layout: p.layout,
        train: &p.train,
        schedule: &p.schedule,
        test: &p.test,
        users: &p.users,
        num_items: p.num_items,
        factors: p.factors,
    })
    .expect("setup");
    let keys: Vec<u64> = (0..p.num_items as u64).collect();
    e.expect_items(&keys).expect("expect");
    // In two chunks, as shard replies arrive.
    let w = p.layout.width();
    let half = p.num_items / 2;
    e.load_items(half, &p.items[half * w..]).expect("load");
    e.load_items(0, &p.items[..half * w]).expect("load");
}

fn tables(e: &mut dyn MfResident, p: &Problem) -> (Vec<f32>, Vec<f32>) {
    let w = p.layout.width();
    let users: Vec<u32> = (0..(p.users.len() / w) as u32).collect();
    let keys: Vec<u64> = (0..p.num_items as u64).collect();
    let (mut u, mut v) = (vec![0.0; p.users.len()], vec![0.0; p.items.len()]);
    e.user_rows(&users, &mut u).expect("users");
    e.item_rows(&keys, &mut v).expect("items");
    (u, v)
}

fn waves(p: &Problem, epoch: u32) -> Vec<u32> {
    p.schedule.epoch_waves(ClockKey {
        seed: 3,
        worker: 0,
        clock: epoch,
    })
}

#[test]
fn waves_engine_matches_the_host_oracle_under_heavy_conflicts() {
    let Some(gpu) = worker_gpu::gpu_or_skip("waves_engine_matches_the_host_oracle") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf waves"));
    let biased = Layout {
        rank: 16,
        mean: Some(0.2),
    };
    // The last five load rows of 16-bit values (an f16 or bf16 pull codec's), which cross in
    // 16 bits, or of codes (a q8 or sign pull codec's), which cross as codes; the oracle counts
    // the same bytes.
    for (layout, factors, rows) in [
        (Layout::plain(8), Factors::F32, ValueFormat::F32),
        (Layout::plain(130), Factors::F32, ValueFormat::F32),
        (biased, Factors::F32, ValueFormat::F32),
        (Layout::plain(32), Factors::F16, ValueFormat::F32),
        (Layout::plain(130), Factors::F16, ValueFormat::F32),
        (biased, Factors::F16, ValueFormat::F32),
        (Layout::plain(8), Factors::F32, ValueFormat::F16),
        (Layout::plain(32), Factors::F16, ValueFormat::F16),
        (Layout::plain(16), Factors::F32, ValueFormat::Bf16),
        (Layout::plain(16), Factors::F32, ValueFormat::Q8),
        (Layout::plain(130), Factors::F16, ValueFormat::Sign),
    ] {
        let mut dev = CudaMfResident::new(gpu.clone()).expect("engine");
        let mut p = problem(&mut rng, layout, factors, dev.lanes());
        if rows != ValueFormat::F32 {
            p.items = rows.round_trip(&p.items);
            // Each load's rows (two, as in `setup`) cross as codes or 16-bit values.
            let half = p.num_items / 2 * layout.width();
            for part in [&p.items[half..], &p.items[..half]] {
                let narrow = PulledRows::of(part);
                assert!(
                    match rows {
                        ValueFormat::F16 | ValueFormat::Bf16 => {
                            matches!(narrow, PulledRows::Halves(..))
                        }
                        _ => matches!(narrow, PulledRows::Levels(_)),
                    },
                    "{rows:?}: {narrow:?}"
                );
            }
        }
        let mut host = HostResident::new(Box::new(CpuMf), dev.lanes());
        setup(&mut dev, &p);
        setup(&mut host, &p);
        let (mut sd, mut sh) = (0.0, 0.0);
        for epoch in 0..4 {
            let w = waves(&p, epoch);
            sd = dev.run_waves(&w, 0.01, 0.02).expect("device waves");
            sh = host.run_waves(&w, 0.01, 0.02).expect("host waves");
        }
        let ((ud, vd), (uh, vh)) = (tables(&mut dev, &p), tables(&mut host, &p));
        let (eu, ev) = (rel_err(&ud, &uh), rel_err(&vd, &vh));
        eprintln!(
            "{layout:?} {factors:?} ({} bands): users {eu:.2e} items {ev:.2e} sse {sd} vs {sh}",
            p.schedule.bands()
        );
        // f16: a dot product summed in another order, or an update NVRTC contracts into an FMA
        // (the host rounds the product and the sum apart), can round a stored value the other
        // way, one f16 step (2^-11 relative), and SGD carries that on.
        let tol = match factors {
            Factors::F32 => 1e-4,
            Factors::F16 => 5e-3,
        };
        assert!(
            eu < tol && ev < tol,
            "{layout:?} {factors:?}: users {eu:.2e} items {ev:.2e}"
        );
        assert!((sd - sh).abs() <= tol * sh, "{layout:?}: sse {sd} vs {sh}");
        if factors == Factors::F16 {
            let is_f16 = |x: &f32| half::f16::from_f32(*x).to_f32() == *x;
            assert!(
                ud.iter().chain(&vd).all(is_f16),
                "the device stores f16 values"
            );
        }
        for which in [Split::Train, Split::Test] {
            let (d, h) = (
                dev.squared_error(which).unwrap(),
                host.squared_error(which).unwrap(),
            );
            assert!((d - h).abs() <= tol * h, "{which:?}: {d} vs {h}");
        }
        let t = dev.traffic();
        // The oracle counts what the device copied for the same calls.
        let o = host.traffic();
        assert_eq!(
            (t.h2d_bytes, t.d2h_bytes),
            (o.h2d_bytes, o.d2h_bytes),
            "{layout:?} {factors:?}: bytes each way, device against oracle"
        );
        assert!(
            t.h2d_bytes > 0
                && t.d2h_bytes > 0
                && t.compute_s > 0.0
                && t.h2d_s > 0.0
                && t.d2h_s > 0.0,
            "{t:?}"
        );
    }
}

/// Ratings of the arranged blocks that a window of `w` hands a row to instead of loading it:
/// those that share a user or an item with one of the `w - 1` ratings before them in their block
/// (`mf_block_window`).
fn forwarded(p: &Problem, w: usize) -> usize {
    let shares = |a: &Rating, b: &Rating| a.user == b.user || a.item == b.item;
    p.schedule
        .starts()
        .windows(2)
        .map(|b| {
            let block = &p.train[b[0]..b[1]];
            (0..block.len())
                .filter(|&m| {
                    block[m.saturating_sub(w - 1)..m]
                        .iter()
                        .any(|o| shares(o, &block[m]))
                })
                .count()
        })
        .sum()
}

#[test]
fn window_kernels_give_the_next_rating_kernels_tables() {
    let Some(gpu) = worker_gpu::gpu_or_skip("window_kernels_give_the_next_rating_kernels_tables")
    else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf wave kernels"));
    let engine = |kernel: MfWaveKernel| {
        let mut e = CudaMfResident::new(gpu.clone()).expect("engine");
        e.set_wave_kernel(kernel).expect("wave kernel");
        e
    };
    // Every kernel must hold the schedule's warps: plan for the fewest lanes.
    let lanes = MfWaveKernel::ALL
        .iter()
        .map(|&k| engine(k).lanes())
        .min()
        .expect("kernels");
    let biased = Layout {
        rank: 16,
        mean: Some(0.2),
    };
    // Heavy conflicts (every block one item: each rating takes its item row from the one
    // before it) and light ones (blocks of ~16 ratings over ~14 items and ~70 users: most
    // ratings load both rows ahead, about a quarter take one from an earlier rating).
    for shape in [(400, 24, 20_000), (3_000, 600, 30_000)] {
        // The window's layouts (plain rows of whole 16-byte pieces up to rank 128), and two it
        // leaves to the next-rating loop inside the same kernels.
        // The third element: whether the window kernels must run their window there (on a
        // device with cp.async, compute capability 8 or later), said here and not by the
        // engine's own prediction, so that a wrong prediction cannot make the case compare the
        // next-rating loop with itself.
        for (layout, factors, window) in [
            (Layout::plain(4), Factors::F32, true),
            (Layout::plain(32), Factors::F32, true),
            (Layout::plain(128), Factors::F32, true),
            (Layout::plain(8), Factors::F16, true),
            (Layout::plain(128), Factors::F16, true),
            (Layout::plain(130), Factors::F32, false),
            (biased, Factors::F16, false),
        ] {
            let p = problem_of(shape, &mut rng, layout, factors, lanes);
            let handed = forwarded(&p, 4);
            eprintln!(
                "{shape:?} {layout:?} {factors:?}: {} bands, window-4 forwards rows to {handed} of {} ratings",
                p.schedule.bands(),
                p.train.len()
            );
            if shape.1 > 100 {
                assert!(
                    handed > 0 && handed < p.train.len() / 2,
                    "the light problem exercises both the loads ahead and the forwarding"
                );
            }
            let run = |kernel: MfWaveKernel| {
                let mut dev = engine(kernel);
                setup(&mut dev, &p);
                let mut sse = 0.0;
                for epoch in 0..3 {
                    sse = dev.run_waves(&waves(&p, epoch), 0.01, 0.02).expect("waves");
                }
                // The kernel's own word that its window ran (or that it fell back), so that
                // this case never compares the fallback loop with itself unawares.
                let ran = dev.window_ran().expect("window flag");
                assert_eq!(
                    ran,
                    dev.runs_window(),
                    "{} {layout:?} {factors:?}: the window ran: {ran}",
                    kernel.name()
                );
                let must =
                    window && kernel != MfWaveKernel::NextRating && gpu.info.capability.0 >= 8;
                assert_eq!(
                    ran,
                    must,
                    "{} {layout:?} {factors:?} on compute capability {:?}: the window ran: {ran}",
                    kernel.name(),
                    gpu.info.capability
                );
                (tables(&mut dev, &p), sse, ran)
            };
            let (want, want_sse, _) = run(MfWaveKernel::NextRating);
            for kernel in [MfWaveKernel::Window2, MfWaveKernel::Window4] {
                let (got, sse, ran) = run(kernel);
                let (eu, ev) = (rel_err(&got.0, &want.0), rel_err(&got.1, &want.1));
                // Same ratings, same order, same arithmetic (mf_apply), and a copied or handed
                // row holds what a load would give: the same bits. A difference means a rating
                // used a row before an earlier rating's write to it. The squared errors are
                // summed by atomics in whatever order the warps finish: close, not equal.
                let bits = |t: &(Vec<f32>, Vec<f32>)| -> Vec<u32> {
                    t.0.iter().chain(&t.1).map(|x| x.to_bits()).collect()
                };
                assert!(
                    bits(&got) == bits(&want) && (sse - want_sse).abs() <= 1e-12 * want_sse,
                    "{} ({}) {shape:?} {layout:?} {factors:?}: users {eu:.2e} items {ev:.2e}, \
                     sse {sse} vs {want_sse}",
                    kernel.name(),
                    if ran { "window" } else { "next-rating loop" }
                );
            }
        }
    }
}

#[test]
fn waves_engine_is_deterministic_and_splits_epochs_exactly() {
    let Some(gpu) = worker_gpu::gpu_or_skip("waves_engine_is_deterministic") else {
        return;
    };
    let layout = Layout::plain(32);
    for factors in [Factors::F32, Factors::F16] {
        deterministic_and_split_exactly(&gpu, layout, factors);
    }
}

fn deterministic_and_split_exactly(
    gpu: &std::sync::Arc<worker_gpu::cuda::Gpu>,
    layout: Layout,
    factors: Factors,
) {
    let run = |split: bool| {
        let mut dev = CudaMfResident::new(gpu.clone()).expect("engine");
        let rng = &mut ChaCha8Rng::seed_from_u64(11);
        let p = problem(rng, layout, factors, dev.lanes());
        setup(&mut dev, &p);
        for epoch in 0..3 {
            let w = waves(&p, epoch);
            if split {
                let (a, b) = w.split_at(w.len() / 3);
                dev.run_waves(a, 0.01, 0.02).unwrap();
                dev.run_waves(b, 0.01, 0.02).unwrap();
            } else {
                dev.run_waves(&w, 0.01, 0.02).unwrap();
            }
        }
        tables(&mut dev, &p)
    };
    let a = run(false);
    let b = run(false);
    let c = run(true);
    assert!(a == b, "{factors:?}: two runs differ");
    assert!(
        a == c,
        "{factors:?}: an epoch split over two launches differs"
    );
}

#[test]
fn waves_engine_rejects_bad_rows_and_oversized_schedules() {
    let Some(gpu) = worker_gpu::gpu_or_skip("waves_engine_rejects_bad_rows") else {
        return;
    };
    let mut dev = CudaMfResident::new(gpu.clone()).expect("engine");
    let p = problem(
        &mut ChaCha8Rng::seed_from_u64(5),
        Layout::plain(4),
        Factors::F32,
        dev.lanes(),
    );
    setup(&mut dev, &p);
    assert!(dev.expect_items(&[p.num_items as u64]).is_err());
    assert!(
        dev.load_items(p.num_items, &[0.0; 4]).is_err(),
        "past the read"
    );
    assert!(dev.load_items(0, &[0.0; 3]).is_err(), "a partial row");
    let mut out = [0.0; 4];
    assert!(dev.item_rows(&[1 << 40], &mut out).is_err());
    assert!(dev.user_rows(&[400], &mut out).is_err());
    assert!(dev
        .run_waves(&[p.schedule.bands() as u32], 0.1, 0.1)
        .is_err());
    // A schedule wider than the device's resident warps is refused, not run into a hang.
    let lanes = dev.lanes();
    let many: Vec<Rating> = (0..(lanes as u32 + 1) * 4)
        .map(|k| Rating {
            user: k % (lanes as u32 + 1),
            item: k / 4,
            value: 1.0,
        })
        .collect();
    let n = lanes as u32 + 1;
    let wide = WaveSchedule::new(&many, n, n, lanes + 1);
    assert_eq!(wide.bands(), lanes + 1);
    let users = vec![0.0; n as usize * 4];
    let mut fresh = CudaMfResident::new(gpu).expect("engine");
    let r = fresh.setup(&ResidentSetup {
        layout: Layout::plain(4),
        train: &many,
        schedule: &wide,
        test: &[],
        users: &users,
        num_items: n as usize,
        factors: Factors::F32,
    });
    assert!(r.is_err(), "{r:?}");
}

/// The engine encodes its pushes as the worker library would encode its delta: each clock the
/// rows it read (the pulled ones plus what it holds back, as stored) and the rows after the
/// waves, copied back, give the delta the keeper encodes, byte for byte the device's payloads;
/// only the payloads' words come back (for a top-k, the counts, the chosen indices' measure and
/// codes and the values' bytes `TopKCopies` predicts: the second block of the large case has
/// more candidates than one block trims; an energy stage counts on the device and sends its
/// count back instead); the rows still holding something are the keeper's; a flush of plain
/// rows (an f32 selection's last clock) is the keeper's; the drop returns the keeper's sum.
#[test]
fn waves_engine_encodes_its_pushes_as_the_library_would() {
    use ps_apps::app::device_codec::{
        block_k, DeviceChain, Fraction, KeyedBlock, ResidualKeeper, TopKCopies,
    };
    use ps_proto::codec::{CodecChain, Selector, ValueFormat};
    let Some(gpu) = worker_gpu::gpu_or_skip("waves_engine_encodes_its_pushes") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf encoded pushes"));
    for (layout, factors, chain, fraction, items) in [
        (
            Layout::plain(8),
            Factors::F32,
            DeviceChain::Dense(ValueFormat::Q4),
            1.0,
            24,
        ),
        (
            Layout::plain(130),
            Factors::F32,
            DeviceChain::Dense(ValueFormat::Sign),
            1.0,
            24,
        ),
        (
            Layout::plain(32),
            Factors::F16,
            DeviceChain::Dense(ValueFormat::F16),
            1.0,
            24,
        ),
        (
            Layout::plain(16),
            Factors::F32,
            DeviceChain::TopK(ValueFormat::Sign),
            0.15,
            24,
        ),
        (
            Layout::plain(32),
            Factors::F16,
            DeviceChain::TopK(ValueFormat::F16),
            0.01,
            24,
        ),
        (
            Layout::plain(130),
            Factors::F32,
            DeviceChain::TopK(ValueFormat::Sign),
            0.4,
            200,
        ),
        // An energy stage: the count found on the device, block by block; in sign, and in f32
        // (sent as they are, whose last clock flushes plain rows).
        (
            Layout::plain(16),
            Factors::F32,
            DeviceChain::Energy(Fraction::new(0.4), ValueFormat::Sign),
            1.0,
            200,
        ),
        (
            Layout::plain(16),
            Factors::F32,
            DeviceChain::Energy(Fraction::new(0.4), ValueFormat::F32),
            1.0,
            200,
        ),
    ] {
        let mut dev = CudaMfResident::new(gpu.clone()).expect("engine");
        let p = problem_of((400, items, 20_000), &mut rng, layout, factors, dev.lanes());
        setup(&mut dev, &p);
        let w = layout.width();
        let keys: Vec<u64> = (0..p.num_items as u64).collect();
        let top = CodecChain {
            selectors: vec![Selector::TopKFraction(fraction)],
            ..CodecChain::raw()
        };
        let blocks: Vec<KeyedBlock> = [0..p.num_items / 3, p.num_items / 3..p.num_items]
            .into_iter()
            .map(|rows| KeyedBlock {
                k: block_k(&top, rows.len() * w),
                rows,
            })
            .collect();
        let format = chain.format();
        assert!(dev.encodes(chain));
        let mut keeper = ResidualKeeper::new(&[(p.num_items, w)]);
        let mut copies = TopKCopies::new(0);
        for epoch in 0..3 {
            if epoch > 0 {
                // The next read: the pulled rows plus what the engine holds back, as stored.
                dev.expect_items(&keys).expect("expect");
                dev.load_items(0, &p.items).expect("load");
            }
            let mut read = vec![0.0; p.items.len()];
            dev.item_rows(&keys, &mut read).expect("rows");
            let mut want_read = p.items.clone();
            keeper.add_keyed(0, &keys, &mut want_read).expect("add");
            factors.round(&mut want_read);
            assert!(read == want_read, "{format:?} epoch {epoch}: the rows read");
            dev.keep_before(&keys).expect("keep");
            dev.run_waves(&waves(&p, epoch), 0.01, 0.02).expect("waves");
            let mut after = vec![0.0; p.items.len()];
            dev.item_rows(&keys, &mut after).expect("rows");
            let delta: Vec<f32> = after.iter().zip(&read).map(|(a, b)| a - b).collect();
            let (want, bytes) = keeper
                .encode_keyed_blocks(&mut copies, (0, &keys, w), chain, &blocks, &delta)
                .expect("keeper");
            let before = dev.traffic();
            let mut got = Vec::new();
            dev.delta_encoded(&keys, chain, &blocks, &mut got)
                .expect("encoded");
            let t = dev.traffic().since(&before);
            assert!(
                got == want,
                "{format:?} epoch {epoch}: payloads differ from the library's"
            );
            assert_eq!((t.h2d_bytes, t.d2h_bytes), bytes, "{chain:?}: bytes");
            // The rows still holding something (a bit a row from the device).
            let before = dev.traffic();
            let held = dev.held_rows(&keys).expect("held rows");
            assert_eq!(
                held,
                keeper.held_keyed(0, &keys).expect("keeper"),
                "{chain:?}"
            );
            let t = dev.traffic().since(&before);
            assert_eq!(
                t.d2h_bytes,
                ps_apps::mf::held_bytes(keys.len()),
                "{chain:?}"
            );
        }
        if let DeviceChain::Energy(..) = chain {
            // A flush of plain rows (an f32 selection's last clock): the delta plus all that
            // is held, `(0 + delta) + residual` as the library forms it; nothing held after.
            dev.expect_items(&keys).expect("expect");
            dev.load_items(0, &p.items).expect("load");
            let mut read = vec![0.0; p.items.len()];
            dev.item_rows(&keys, &mut read).expect("rows");
            dev.keep_before(&keys).expect("keep");
            dev.run_waves(&waves(&p, 3), 0.01, 0.02).expect("waves");
            let mut after = vec![0.0; p.items.len()];
            dev.item_rows(&keys, &mut after).expect("rows");
            let mut want: Vec<f32> = after
                .iter()
                .zip(&read)
                .map(|(a, b)| 0.0 + (a - b))
                .collect();
            keeper.take_keyed(0, &keys, &mut want).expect("take");
            let mut got = vec![0.0; want.len()];
            let before = dev.traffic();
            dev.delta_with_held(&keys, &mut got).expect("flush");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{chain:?}: the flushed rows");
            let t = dev.traffic().since(&before);
            assert_eq!(
                t.d2h_bytes,
                4 * want.len() as u64,
                "{chain:?}: flushed bytes"
            );
        }
        let held = keeper.l1();
        let dropped = dev.drop_unsent().expect("drop");
        assert!(
            (dropped - held).abs() <= 1e-9 * held,
            "{format:?}: dropped {dropped} against {held}"
        );
        assert_eq!(dev.drop_unsent().expect("again"), 0.0);
    }
}
