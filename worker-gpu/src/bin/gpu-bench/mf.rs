//! MF SGD: updates per second at rank 32 and 128 on a Netflix-shaped random problem
//! (480,189 users × 17,770 items, 20 M ratings; `--quick`: 2 M), three ways:
//! the `mf_sgd` kernel alone on device-resident data (events), the whole `MfCompute::sgd_epoch`
//! call with its copies (wall), and the CPU engine `FastMf` on all host threads as the peer.
//!
//! Floor (METHOD.md, compulsory traffic): every rating read once (12 B) and both tables read and
//! written once; flops 6 × rank per update. The note adds the per-update row-traffic bound
//! (16 × rank + 12 B per update, when no factor row stays in cache).

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use ps_apps::mf::{FastMf, MfCompute, Rating};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mf::CudaMf;
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_event_ms, median_wall_ms, Ceilings, Row};

const USERS: u32 = 480_189;
const ITEMS: u32 = 17_770;

fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Driver {
        call,
        error: e.to_string(),
    }
}

pub fn run(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    let n: usize = if quick { 2_000_000 } else { 20_000_000 };
    let mut rng = ChaCha8Rng::seed_from_u64(0x3F_5EED);
    let ratings: Vec<Rating> = (0..n)
        .map(|_| Rating {
            user: rng.gen_range(0..USERS),
            item: rng.gen_range(0..ITEMS),
            value: rng.gen_range(1.0f32..5.0),
        })
        .collect();
    let mut rows = Vec::new();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    for rank in [32usize, 128] {
        let shape = format!("rank {rank}, {}M ratings, 480k×17.8k", n / 1_000_000);
        let tables = (USERS as usize + ITEMS as usize) * rank;
        let bytes = (n * 12 + 2 * tables * 4) as f64;
        let flops = (n * 6 * rank) as f64;
        let (floor, bound) = ceil.floor_rate(n as f64, flops, bytes);
        let row_bound = ceil.copy_bytes_per_s / (16.0 * rank as f64 + 12.0);
        let scale = 0.1 / (rank as f32).sqrt();
        let u0: Vec<f32> = (0..USERS as usize * rank)
            .map(|_| rng.gen_range(-scale..scale))
            .collect();
        let v0: Vec<f32> = (0..ITEMS as usize * rank)
            .map(|_| rng.gen_range(-scale..scale))
            .collect();

        // (a) the kernel alone, on device-resident data.
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
        let (ms, spread) = median_event_ms(s, 2, 9, || {
            let mut b = s.launch_builder(&f);
            b.arg(&du)
                .arg(&di)
                .arg(&dv)
                .arg(&nn)
                .arg(&mut dusers)
                .arg(&mut ditems);
            b.arg(&rk).arg(&lr).arg(&reg).arg(&mut dsse);
            // SAFETY: indices are below USERS / ITEMS; the tables hold USERS / ITEMS rows.
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(driver("mf_sgd"))
        })?;
        let kernel_rate = n as f64 / (ms * 1e-3);
        rows.push(Row {
            bench: "mf_sgd kernel".into(),
            shape: shape.clone(),
            rate: kernel_rate,
            unit: "updates/s",
            floor_rate: floor,
            bound,
            peer: None,
            note: format!(
                "median of 9 epochs {ms:.2} ms (spread {:.0}%); row-traffic bound {:.3e} updates/s (16·rank+12 B/update)",
                spread * 100.0,
                row_bound
            ),
        });
        drop((du, di, dv, dusers, ditems, dsse));

        // (b) the trait call with its copies, and (c) the CPU engine on every host thread.
        let mut engine = CudaMf::new(Arc::clone(gpu))?;
        let (mut u, mut v) = (u0.clone(), v0.clone());
        let (wall, wspread) = median_wall_ms(gpu, 1, 5, || {
            engine.sgd_epoch(&ratings, &mut u, &mut v, rank, 0.005, 0.02)?;
            Ok(())
        })?;
        let mut cpu = FastMf::new(threads);
        let (mut u, mut v) = (u0.clone(), v0.clone());
        let cpu_n = n.min(5_000_000);
        let t = Instant::now();
        cpu.sgd_epoch(&ratings[..cpu_n], &mut u, &mut v, rank, 0.005, 0.02)?;
        let cpu_rate = cpu_n as f64 / t.elapsed().as_secs_f64();
        rows.push(Row {
            bench: "MfCompute::sgd_epoch (cuda)".into(),
            shape,
            rate: n as f64 / (wall * 1e-3),
            unit: "updates/s",
            floor_rate: floor,
            bound,
            peer: Some((format!("cpu FastMf {threads}t"), cpu_rate)),
            note: format!(
                "median of 5 calls {wall:.1} ms (spread {:.0}%), incl. tables and ratings over PCIe; CPU peer in random order on {cpu_n} ratings",
                wspread * 100.0
            ),
        });
    }
    Ok(rows)
}
