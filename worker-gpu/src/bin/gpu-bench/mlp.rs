//! MLP training: samples per second of one mini-batch gradient of the 784-256-256-10 network
//! (MNIST shape, random inputs in [0, 1) and random labels) at batch 64 and 1,024, two ways: the
//! kernels alone on a batch already on the device (`CudaMlp::gradient_kernels`, events; one row
//! with the tiled kernel's matrix products, one with cuBLAS's, `MlpGemm`), and the
//! whole `MlpCompute::gradient` call with its copies (parameters and batch up, gradients down;
//! wall clock), the latter beside the CPU engine `FastMlp` on every host thread. The PyTorch
//! figure of the same step comes from `benches/gpu/torch_mlp.py`.
//!
//! [`run_clock`] times what a GPU worker's clock is (issue 11's MLP bar: a clock on the device
//! against PyTorch's train step at batch 1,024): `CudaMlpResident::run_visit` over 60,000
//! resident samples at batch 1,024, the device making the visiting order and gathering each
//! mini-batch, with the forward and backward passes and the SGD step of every batch back to
//! back; wall clock of the call, which returns once the clock's statistics are back (a row per
//! library of the matrix products, as above; cuBLAS's is skipped, with a message, where the
//! library cannot be loaded). PyTorch's
//! figure with its optimizer step is `torch_mlp.py`'s `"sgd": true` line.
//!
//! Floor (METHOD.md): flops per sample 2 · (3 · Σ fan_in·fan_out − 784·256) — forward, weight
//! gradients and input deltas, with no delta propagated into the input layer, as the engine (and
//! PyTorch, whose input needs no gradient) runs it: 1.211 MFLOP. (`6 · Σ fan_in·fan_out` =
//! 1.613 MFLOP counts that unneeded input delta too; the note gives the rate against it.)
//! Compulsory bytes per batch: 4 · (2 · params + b · 784 + 2 · b · (256 + 256 + 10)) —
//! parameters read and gradients written once, the input read once, every activation and every
//! delta written once.

use std::sync::Arc;
use std::time::Instant;

use ps_apps::mlp::{Arch, ClockKey, Dataset, FastMlp, MlpCompute, MlpResident, Visit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mlp::{CudaMlp, MlpGemm, DEFAULT_CHUNK};
use worker_gpu::cuda::mlp_resident::CudaMlpResident;
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_event_ms, median_wall_ms, Ceilings, Row};

pub fn run(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    let arch = Arch::mnist();
    let params = arch.init_params(0x004D_4C50);
    let flops_per_sample = flops_per_sample(&arch);
    let flops_all_deltas = 6.0 * arch.macs_per_sample() as f64;
    let n_params = arch.num_params();
    let outs: usize = arch.layers().iter().map(|s| s.fan_out).sum();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let reps = if quick { 20 } else { 200 };
    let mut rng = ChaCha8Rng::seed_from_u64(0x4D4C_5042);
    let mut rows = Vec::new();
    for b in [64usize, 1024] {
        let Dataset { x, y, .. } = samples(&arch, b, &mut rng);
        let shape = format!("784-256-256-10, batch {b}");
        let flops = b as f64 * flops_per_sample;
        let bytes = 4.0 * (2 * n_params + b * arch.input + 2 * b * outs) as f64;
        let (floor, bound) = ceil.floor_rate(b as f64, flops, bytes);
        let (floor_all, _) = ceil.floor_rate(b as f64, b as f64 * flops_all_deltas, bytes);

        // (a) the kernels alone, on a batch already on the device, with each library's products
        // (issue 11: compare cuBLAS with the tiled kernel and keep the faster). The trait call
        // below runs the tiled kernel's.
        let mut ms = f64::NAN;
        // Each library's gradient is checked against the CPU engine's before its rate counts: a
        // fast but wrong product must not win the comparison.
        // (The CPU engine's first call, which also warms it up for its timing below.)
        let mut cpu = FastMlp::with_threads(threads);
        let mut reference = arch.zeros();
        cpu.gradient(&arch, &params, &x, &y, &mut reference)?;
        for gemm in MlpGemm::ALL {
            let mut engine = match CudaMlp::with_gemm(Arc::clone(gpu), DEFAULT_CHUNK, gemm) {
                Ok(e) => e,
                Err(e) if gemm != MlpGemm::Tiled => {
                    eprintln!("mlp gradient kernels ({}): {e}", gemm.name());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let timed = engine.stage_batch(&arch, &params, &x, &y).and_then(|_| {
                median_event_ms(gpu.compute_stream(), 10, reps, || engine.gradient_kernels())
            });
            // cuBLAS's products have never run on a GPU: their failure costs their row only.
            let (gms, spread) = match timed {
                Ok(t) => t,
                Err(e) if gemm != MlpGemm::Tiled => {
                    eprintln!("mlp gradient kernels ({}, {shape}): {e}", gemm.name());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut got = arch.zeros();
            let err = match engine.gradient(&arch, &params, &x, &y, &mut got) {
                Ok(_) => relative_error(&got, &reference),
                Err(e) => {
                    eprintln!("mlp gradient ({}, {shape}): {e}", gemm.name());
                    f64::INFINITY
                }
            };
            let right = err <= MAX_REL_ERR;
            if !right {
                eprintln!(
                    "mlp gradient kernels ({}, {shape}): relative error {err:.2e} against the \
                     CPU engine, over {MAX_REL_ERR:e}; its rate is not reported",
                    gemm.name()
                );
            }
            if gemm == MlpGemm::Tiled {
                ms = gms;
            }
            let rate = if right {
                b as f64 / (gms * 1e-3)
            } else {
                f64::NAN
            };
            rows.push(Row {
                bench: bench_name("mlp gradient kernels", gemm),
                shape: shape.clone(),
                rate,
                unit: "samples/s",
                floor_rate: floor,
                bound,
                peer: None,
                note: format!(
                    "median of {reps} steps {:.1} us (spread {:.0}%), {:.2} TFLOP/s; vs the \
                     6·macs floor {:.3e}: {:.3}; gradient's relative error against the CPU \
                     engine {err:.1e}",
                    gms * 1e3,
                    spread * 100.0,
                    rate * flops_per_sample / 1e12,
                    floor_all,
                    rate / floor_all
                ),
            });
        }
        let mut engine = CudaMlp::with_gemm(Arc::clone(gpu), DEFAULT_CHUNK, MlpGemm::Tiled)?;

        // (b) the trait call with its copies, and (c) the CPU engine on every host thread.
        let mut grads = arch.zeros();

        let (wall, wspread) = median_wall_ms(gpu, 10, reps, || {
            engine.gradient(&arch, &params, &x, &y, &mut grads)?;
            Ok(())
        })?;
        let mut cpu_grads = arch.zeros();
        let cpu_reps = if b >= 1024 { 5 } else { 20 };
        let mut t = Vec::with_capacity(cpu_reps);
        for _ in 0..cpu_reps {
            let start = Instant::now();
            cpu.gradient(&arch, &params, &x, &y, &mut cpu_grads)?;
            t.push(start.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        let cpu_rate = b as f64 / t[t.len() / 2];
        let wrate = b as f64 / (wall * 1e-3);
        rows.push(Row {
            bench: "MlpCompute::gradient (cuda)".into(),
            shape,
            rate: wrate,
            unit: "samples/s",
            floor_rate: floor,
            bound,
            peer: Some((format!("cpu FastMlp {threads}t"), cpu_rate)),
            note: format!(
                "median of {reps} calls {:.1} us (spread {:.0}%), incl. {:.2} MB of parameters and \
                 inputs up and {:.2} MB of gradients down; kernels are {:.0}% of it",
                wall * 1e3,
                wspread * 100.0,
                4.0 * (n_params + b * arch.input) as f64 / 1e6,
                4.0 * n_params as f64 / 1e6,
                100.0 * ms / wall
            ),
        });
    }
    Ok(rows)
}

/// The largest relative error (2-norm over all layers) a GPU gradient may have against the CPU
/// engine's for its rate to be reported: f32 sums in another order, far under this.
const MAX_REL_ERR: f64 = 1e-4;

/// `|got - want| / |want|` over all layers (2-norms); infinite where `got` has a NaN.
fn relative_error(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        if g.is_nan() {
            return f64::INFINITY;
        }
        num += (f64::from(*g) - f64::from(*w)).powi(2);
        den += f64::from(*w).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// A row's name for the products of `gemm`: the tiled kernel's keeps the plain name that
/// earlier runs' tables and check.sh's MLP bar use; cuBLAS's adds `(cublas)`.
fn bench_name(base: &str, gemm: MlpGemm) -> String {
    match gemm {
        MlpGemm::Tiled => base.into(),
        g => format!("{base} ({})", g.name()),
    }
}

/// Training flops per sample (the module docs): forward, weight gradients and input deltas, with
/// no delta propagated into the input layer.
fn flops_per_sample(arch: &Arch) -> f64 {
    let l0 = arch.layer(0);
    2.0 * (3 * arch.macs_per_sample() - l0.fan_in * l0.fan_out) as f64
}

/// Random samples of `arch`'s input in [0, 1) with random labels.
fn samples(arch: &Arch, n: usize, rng: &mut ChaCha8Rng) -> Dataset {
    Dataset {
        x: (0..n * arch.input)
            .map(|_| rng.gen_range(0.0..1.0))
            .collect(),
        y: (0..n)
            .map(|_| rng.gen_range(0..arch.classes) as u8)
            .collect(),
        n,
        d: arch.input,
        classes: arch.classes,
    }
}

/// A whole clock on the device (see the module docs): samples per second of
/// `CudaMlpResident::run_visit` over the worker's resident samples at batch 1,024.
pub fn run_clock(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    const BATCH: usize = 1024;
    let arch = Arch::mnist();
    let n = if quick { 10 * BATCH } else { 60_000 };
    let mut rng = ChaCha8Rng::seed_from_u64(0x4D4C_5043);
    let train = samples(&arch, n, &mut rng);
    let test = samples(&arch, BATCH, &mut rng);
    let mut rows = Vec::new();
    for gemm in MlpGemm::ALL {
        match clock_row(gpu, ceil, quick, &arch, &train, &test, gemm) {
            Ok(row) => rows.push(row),
            Err(e) if gemm != MlpGemm::Tiled => {
                eprintln!("mlp resident clock ({}): {e}", gemm.name())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// [`run_clock`]'s row for one library of the products.
fn clock_row(
    gpu: &Arc<Gpu>,
    ceil: &Ceilings,
    quick: bool,
    arch: &Arch,
    train: &Dataset,
    test: &Dataset,
    gemm: MlpGemm,
) -> Result<Row, GpuError> {
    const BATCH: usize = 1024;
    let n = train.n;
    let mut engine = CudaMlpResident::with_gemm(Arc::clone(gpu), gemm)?;
    engine.setup(arch, train, test)?;
    for (layer, values) in arch.init_params(0x004D_4C50).iter().enumerate() {
        engine.load(layer, 0, values)?;
    }
    let mut clock = 0u32;
    let reps = if quick { 3 } else { 10 };
    let (ms, spread) = median_wall_ms(gpu, 2, reps, || {
        let key = ClockKey {
            seed: 7,
            worker: 0,
            clock,
        };
        clock += 1;
        engine.run_visit(&Visit::for_clock(key, n, 0, 1), BATCH, 0.05)?;
        Ok(())
    })?;
    let flops = n as f64 * flops_per_sample(arch);
    let outs: usize = arch.layers().iter().map(|s| s.fan_out).sum();
    let batches = n.div_ceil(BATCH);
    // Per batch: parameters read and written by the step, the gathered inputs read, every
    // activation and delta written once (METHOD.md's compulsory traffic).
    let bytes = 4.0 * (batches * 2 * arch.num_params() + n * arch.input + 2 * n * outs) as f64;
    let (floor, bound) = ceil.floor_rate(n as f64, flops, bytes);
    let rate = n as f64 / (ms * 1e-3);
    Ok(Row {
        bench: bench_name("mlp resident clock", gemm),
        shape: format!("784-256-256-10, b {BATCH}, {n} samples"),
        rate,
        unit: "samples/s",
        floor_rate: floor,
        bound,
        peer: None,
        note: format!(
            "median of {reps} clocks {ms:.2} ms (spread {:.0}%), {batches} SGD steps each, the \
             order made and the batches gathered on the device; compare torch_mlp.py's train \
             step with SGD at batch {BATCH} (issue 11: >= 1.5x)",
            spread * 100.0
        ),
    })
}
