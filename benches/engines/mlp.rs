//! MLP: random MNIST-sized samples (784-256-256-10), timed minibatch SGD epochs.

use std::process::exit;
use std::time::Instant;

use ps_apps::mlp::{self, MlpCompute};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::{
    emit, export_dir, rates, timed, write_file, write_meta, Args, Fingerprint, Run, CPU_ENGINE,
};

pub(crate) fn run_mlp(args: &Args, run: &Run) {
    let n: usize = args.get("--samples", 60_000, 6_000);
    let batch: usize = args.get("--batch", 64, 64);
    if n == 0 || batch == 0 {
        eprintln!("engines: mlp needs samples, batch >= 1");
        exit(2);
    }
    let arch = mlp::Arch::mnist();
    let d = arch.input;
    let t = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(run.seed ^ 0x4D4C_5044_4154);
    let pixels: Vec<u8> = (0..n * d).map(|_| rng.gen()).collect();
    let labels: Vec<u8> = (0..n)
        .map(|_| rng.gen_range(0..arch.classes as u8))
        .collect();
    let mut fp = Fingerprint::new();
    for c in pixels.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        fp.add(u64::from_le_bytes(w));
    }
    for &y in &labels {
        fp.add(u64::from(y));
    }
    eprintln!(
        "mlp: generated {n} random samples x {d} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "mlp", "samples": n, "input": d, "hidden": arch.hidden, "classes": arch.classes,
        "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        write_file(dir, "x.u8", &pixels);
        write_file(dir, "y.u8", &labels);
        let mut meta = shape.clone();
        meta["format"] = json!(concat!(
            "x.u8: samples x input bytes, row-major, feature = byte / 255 as f32; ",
            "y.u8: one label byte per sample, < classes"
        ));
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    let data = mlp::Dataset {
        x: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        y: labels,
        n,
        d,
        classes: arch.classes,
    };
    drop(pixels);
    let mut engine = mlp::FastMlp::with_threads(run.threads);
    let mut params = arch.init_params(run.seed);
    let mut grads = arch.zeros();
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    let lr = mlp::MlpHyper::mnist().lr;
    let mut stats = mlp::BatchStats::default();
    let seed = run.seed;
    let secs = timed(run, "mlp", |rep| {
        let order = mlp::epoch_order(
            n,
            mlp::ClockKey {
                seed,
                worker: 0,
                clock: rep as u32,
            },
        );
        stats = mlp::BatchStats::default();
        for chunk in order.chunks(batch) {
            data.gather(chunk, &mut xb, &mut yb);
            stats.merge(
                &engine
                    .gradient(&arch, &params, &xb, &yb, &mut grads)
                    .expect(CPU_ENGINE),
            );
            mlp::sgd_step(&mut params, &grads, lr);
        }
    });
    let extra = json!({
        "engine": "ours-fastmlp", "measure": "train", "threads": run.threads,
        "batch": batch, "lr": lr, "warmup": run.warmup, "reps": secs.len(),
        "unit": "samples/s", "train_loss": stats.mean_loss(), "quick": run.quick,
    });
    emit(&[&shape, &extra, &rates(n as f64, &secs)]);
}
