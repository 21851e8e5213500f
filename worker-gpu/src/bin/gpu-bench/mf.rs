//! MF SGD: updates per second at rank 32 and 128 on a Netflix-shaped random problem
//! (480,189 users × 17,770 items, 20 M ratings; `--quick`: 2 M; `GPU_BENCH_MF_RATINGS=N` overrides),
//! three ways:
//!
//! - `mf_sgd_waves` (resident): the engine the sessions use ([`CudaMfResident`]), ratings,
//!   users and items on the device, one epoch of conflict-free waves per launch, timed with
//!   events (its `Traffic::compute_s`), median of 5 epochs after one warm-up; with each wave
//!   kernel ([`MfWaveKernel`]: the next rating's rows loaded ahead, or windows of 2 and 4) on
//!   the same schedule (its bands fit the kernel with the fewest lanes) and the same tables;
//! - `mf_sgd hogwild kernel`: the whole-grid kernel (a warp per rating, no conflict control),
//!   for comparison with cuMF_SGD's batch-Hogwild figure; it loses updates on hot rows;
//! - the CPU engine `FastMf` on all host threads, as the peer.
//!
//! Floor (METHOD.md, compulsory traffic): every rating read once (12 B) and both tables read and
//! written once; flops 6 × rank per update. The note adds the per-update row-traffic bound
//! (16 × rank + 12 B per update, when no factor row stays in cache).

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use ps_apps::mf::{
    bands_with, ClockKey, Factors, FastMf, Layout, MfCompute, MfResident, Rating, ResidentSetup,
    WaveSchedule,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mf_resident::{CudaMfResident, MfWaveKernel};
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_and_spread, median_event_ms, Ceilings, Row};

const USERS: u32 = 480_189;
const ITEMS: u32 = 17_770;

fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Driver {
        call,
        error: e.to_string(),
    }
}

/// Ratings of random users on random items (uniform), values in [1, 5).
fn ratings(n: usize) -> Vec<Rating> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x3F_5EED);
    (0..n)
        .map(|_| Rating {
            user: rng.gen_range(0..USERS),
            item: rng.gen_range(0..ITEMS),
            value: rng.gen_range(1.0f32..5.0),
        })
        .collect()
}

fn table(rng: &mut ChaCha8Rng, rows: u32, rank: usize) -> Vec<f32> {
    let scale = 0.1 / (rank as f32).sqrt();
    (0..rows as usize * rank)
        .map(|_| rng.gen_range(-scale..scale))
        .collect()
}

pub fn run(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    let n: usize = std::env::var("GPU_BENCH_MF_RATINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000_000 } else { 20_000_000 });
    let t = Instant::now();
    let ratings = ratings(n);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut rows = Vec::new();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    eprintln!(
        "mf: {n} ratings generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // One schedule per block size, shared by every wave kernel and rank.
    let blocks = std::env::var("GPU_BENCH_MF_BLOCKS").unwrap_or_else(|_| "16".into());
    let mut lanes = usize::MAX;
    for kernel in MfWaveKernel::ALL {
        let mut e = CudaMfResident::new(Arc::clone(gpu))?;
        e.set_wave_kernel(kernel)?;
        lanes = lanes.min(e.lanes());
    }
    let schedules: Vec<Scheduled> = blocks
        .split_whitespace()
        .filter_map(|b| b.parse::<usize>().ok())
        .map(|min_block| Scheduled::new(&ratings, lanes, min_block))
        .collect();
    for rank in [32usize, 128] {
        let shape = format!("rank {rank}, {:.0}M ratings, 480k×17.8k", n as f64 / 1e6);
        let tables = (USERS as usize + ITEMS as usize) * rank;
        let bytes = (n * 12 + 2 * tables * 4) as f64;
        let flops = (n * 6 * rank) as f64;
        let (floor, bound) = ceil.floor_rate(n as f64, flops, bytes);
        let u0 = table(&mut rng, USERS, rank);
        let v0 = table(&mut rng, ITEMS, rank);

        // (a) the resident engine: one epoch of waves per launch, blocks of 16 ratings on
        // average (the sessions' choice; blocks of 4 measured no better on an H200 at 100 M
        // ratings, GPU_BENCH_MF_BLOCKS="16 4" to compare), with f32 and with f16 factors, with
        // each wave kernel.
        for scheduled in &schedules {
            for (factors, kernel) in [Factors::F32, Factors::F16]
                .into_iter()
                .flat_map(|f| MfWaveKernel::ALL.map(|k| (f, k)))
            {
                // A kernel that fails (the window kernels have never run on a GPU) costs its
                // row, not the rows of the others.
                let mut r =
                    match resident_row(gpu, scheduled, rank, (factors, kernel), (&u0, &v0), &shape)
                    {
                        Ok(r) => r,
                        Err(e) => {
                            eprintln!("mf_sgd_waves ({factors:?}, {kernel:?}, {shape}): {e}");
                            continue;
                        }
                    };
                // The compulsory bytes with the row's factors (f16 tables are half the size).
                let bytes = (n * 12 + 2 * tables * factors.bytes()) as f64;
                (r.floor_rate, r.bound) = ceil.floor_rate(n as f64, flops, bytes);
                // Each update reads and writes a user row and an item row, plus the rating.
                let row_bytes = 4.0 * factors.bytes() as f64 * rank as f64 + 12.0;
                let row_bound = ceil.copy_bytes_per_s / row_bytes;
                r.note
                    .push_str(&format!("; row-traffic bound {row_bound:.3e} updates/s"));
                rows.push(r);
            }
        }

        // (b) the whole-grid Hogwild kernel on device-resident data.
        let s = gpu.compute_stream();
        let f = gpu.function("mf_sgd", "mf_sgd")?;
        let du = s
            .clone_htod(&ratings.iter().map(|r| r.user).collect::<Vec<u32>>())
            .map_err(driver("htod"))?;
        let di = s
            .clone_htod(&ratings.iter().map(|r| r.item).collect::<Vec<u32>>())
            .map_err(driver("htod"))?;
        let dv = s
            .clone_htod(&ratings.iter().map(|r| r.value).collect::<Vec<f32>>())
            .map_err(driver("htod"))?;
        let mut dusers = s.clone_htod(&u0).map_err(driver("htod"))?;
        let mut ditems = s.clone_htod(&v0).map_err(driver("htod"))?;
        let mut dsse = s.alloc_zeros::<f64>(1).map_err(driver("alloc"))?;
        let cfg = LaunchConfig {
            grid_dim: (gpu.grid_for(n as u64 * 32, 256, 8), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (nn, rk, lr, reg) = (n as u32, rank as u32, 0.005f32, 0.02f32);
        let (plain, mean) = (0i32, 0.0f32);
        let (ms, spread) = median_event_ms(s, 2, 9, || {
            let mut b = s.launch_builder(&f);
            b.arg(&du)
                .arg(&di)
                .arg(&dv)
                .arg(&nn)
                .arg(&mut dusers)
                .arg(&mut ditems);
            b.arg(&rk)
                .arg(&rk)
                .arg(&plain)
                .arg(&mean)
                .arg(&lr)
                .arg(&reg)
                .arg(&mut dsse);
            // SAFETY: indices are below USERS / ITEMS; the tables hold USERS / ITEMS rows of
            // `rank` (width = rank, plain model).
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(driver("mf_sgd"))
        })?;
        rows.push(Row {
            bench: "mf_sgd hogwild kernel".into(),
            shape: shape.clone(),
            rate: n as f64 / (ms * 1e-3),
            unit: "updates/s",
            floor_rate: floor,
            bound,
            peer: None,
            note: format!(
                "median of 9 epochs {ms:.2} ms (spread {:.0}%); no conflict control (loses updates on hot rows): a speed reference only",
                spread * 100.0
            ),
        });
        drop((du, di, dv, dusers, ditems, dsse));

        // (c) the CPU engine on every host thread, as the peer of the resident row.
        let mut cpu = FastMf::new(threads);
        let (mut u, mut v) = (u0.clone(), v0.clone());
        let cpu_n = n.min(5_000_000);
        let t = Instant::now();
        cpu.sgd_epoch(&ratings[..cpu_n], &mut u, &mut v, rank, 0.005, 0.02)
            .map_err(err)?;
        let cpu_rate = cpu_n as f64 / t.elapsed().as_secs_f64();
        for r in rows
            .iter_mut()
            .filter(|r| r.bench.contains("resident") && r.shape == shape)
        {
            r.peer = Some((format!("cpu FastMf {threads}t"), cpu_rate));
        }
    }
    Ok(rows)
}

fn err(e: ps_apps::ComputeError) -> GpuError {
    GpuError::Input(e.to_string())
}

/// Ratings arranged for the waves of blocks of `min_block` ratings on average.
struct Scheduled {
    min_block: usize,
    schedule: WaveSchedule,
    arranged: Vec<Rating>,
    /// Seconds the host took to make the schedule and arrange the ratings.
    arrange_s: f64,
}

impl Scheduled {
    fn new(ratings: &[Rating], lanes: usize, min_block: usize) -> Self {
        let t = Instant::now();
        let bands = bands_with(ratings.len(), USERS, ITEMS, lanes, min_block);
        let schedule = WaveSchedule::new(ratings, USERS, ITEMS, bands);
        let mut arranged = ratings.to_vec();
        schedule.arrange(&mut arranged);
        Scheduled {
            min_block,
            schedule,
            arranged,
            arrange_s: t.elapsed().as_secs_f64(),
        }
    }
}

/// One row of the resident engine with the wave kernel `kernel`: the scheduled ratings, five
/// timed epochs after a warm-up.
fn resident_row(
    gpu: &Arc<Gpu>,
    scheduled: &Scheduled,
    rank: usize,
    (factors, kernel): (Factors, MfWaveKernel),
    (u0, v0): (&[f32], &[f32]),
    shape: &str,
) -> Result<Row, GpuError> {
    let Scheduled {
        min_block,
        schedule,
        arranged,
        arrange_s,
    } = scheduled;
    let n = arranged.len();
    let mut engine = CudaMfResident::new(Arc::clone(gpu))?;
    engine.set_wave_kernel(kernel)?;
    engine
        .setup(&ResidentSetup {
            layout: Layout::plain(rank),
            train: arranged,
            schedule,
            test: &[],
            users: u0,
            num_items: ITEMS as usize,
            factors,
        })
        .map_err(err)?;
    let keys: Vec<u64> = (0..u64::from(ITEMS)).collect();
    engine.expect_items(&keys).map_err(err)?;
    engine.load_items(0, v0).map_err(err)?;
    let mut epoch_ms = Vec::new();
    for epoch in 0..6u32 {
        let waves = schedule.epoch_waves(ClockKey {
            seed: 1,
            worker: 0,
            clock: epoch,
        });
        let before = engine.traffic().compute_s;
        engine.run_waves(&waves, 0.005, 0.02).map_err(err)?;
        if epoch > 0 {
            epoch_ms.push((engine.traffic().compute_s - before) * 1e3);
        }
    }
    let (ms, spread) = median_and_spread(epoch_ms);
    Ok(Row {
        bench: format!(
            "mf_sgd_waves (resident, block {min_block}, {} factors, {})",
            factors.name(),
            kernel.name()
        ),
        shape: shape.to_string(),
        rate: n as f64 / (ms * 1e-3),
        unit: "updates/s",
        floor_rate: 0.0,
        bound: "",
        peer: None,
        note: format!(
            "{} bands (lanes {}), median of 5 epochs {ms:.2} ms (spread {:.0}%); schedule + arrange {arrange_s:.1} s on the host",
            schedule.bands(),
            engine.lanes(),
            spread * 100.0
        ),
    })
}
