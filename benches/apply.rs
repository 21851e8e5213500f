//! The shard's apply rate for the `add` rule, next to a plain f32 accumulate over the same sizes
//! on the same core. `cargo bench -p ps-benches --bench apply [-- --seconds 2]`

use ps_benches::{arg, record, run_for};
use ps_proto::{Init, TableSpec, UpdateRule};
use ps_server::{DenseTable, PushRows, Shard};
use serde_json::json;

fn main() {
    let secs: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(2.0);
    // Cache-resident: 1 MiB of deltas per batch onto a 16 MiB slice.
    bench(secs, "cache-resident", 4096, 256);
    // Memory-bound: 64 MiB of deltas per batch onto a 256 MiB slice.
    bench(secs, "memory-bound", 65536, 16384);
}

fn bench(secs: f64, size: &str, rows: u64, batch_rows: usize) {
    let width = 1024u32;
    println!(
        "\n{size}: {} MiB batches onto a {} MiB table slice",
        (batch_rows * 4 * width as usize) >> 20,
        (rows as usize * 4 * width as usize) >> 20
    );
    let spec = TableSpec {
        id: 0,
        name: "t".into(),
        rows,
        width,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness: None,
        layout: Default::default(),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    };
    let n = batch_rows * width as usize;
    let delta: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.25).collect();

    // Reference: dst[i] += src[i] over the same bytes, walking the same 16 MiB.
    let mut dst = vec![0f32; rows as usize * width as usize];
    let mut off = 0;
    let (iters, el) = run_for(secs, 10, || {
        let d = &mut dst[off..off + n];
        for (a, b) in d.iter_mut().zip(&delta) {
            *a += *b;
        }
        off = (off + n) % dst.len();
    });
    std::hint::black_box(&dst);
    let accumulate = (iters * n as u64) as f64 / el;

    // DenseTable::apply with contiguous keys (the common dense push).
    let mut table = DenseTable::new(
        spec.clone(),
        ps_proto::KeyRange {
            start: 0,
            end: rows,
        },
    );
    let mut start = 0u64;
    let (iters, el) = run_for(secs, 10, || {
        let keys: Vec<u64> = (start..start + batch_rows as u64).collect();
        table.apply(&keys, &delta);
        start = (start + batch_rows as u64) % rows;
    });
    let contiguous = (iters * n as u64) as f64 / el;

    // Scattered keys (every 16th row): one row at a time.
    let mut k = 0u64;
    let (iters, el) = run_for(secs, 10, || {
        let keys: Vec<u64> = (0..batch_rows as u64)
            .map(|i| (k + i * 16) % rows)
            .collect();
        table.apply(&keys, &delta);
        k = (k + 1) % 16;
    });
    let scattered = (iters * n as u64) as f64 / el;
    std::hint::black_box(table.data());

    // The whole shard path: Shard::submit through the clock vector (one worker, one clock per batch).
    let mut shard = Shard::new(0, 1, &[spec], 1, false);
    let mut clock = 0u64;
    let (iters, el) = run_for(secs, 10, || {
        let s = (clock * batch_rows as u64) % rows;
        let rows_ = PushRows::dense(0, (s..s + batch_rows as u64).collect(), delta.clone());
        shard
            .submit(0, clock, vec![rows_])
            .expect("in-order clocks");
        clock += 1;
    });
    let submit = (iters * n as u64) as f64 / el;

    println!("{:<36} {:>14}", "operation", "M params/s");
    for (name, v) in [
        ("plain accumulate (reference)", accumulate),
        ("DenseTable::apply contiguous", contiguous),
        ("DenseTable::apply scattered rows", scattered),
        ("Shard::submit (incl. cloning the batch)", submit),
    ] {
        println!(
            "{name:<36} {:>14.0}   {:>5.1}% of accumulate",
            v / 1e6,
            100.0 * v / accumulate
        );
    }
    record(
        "apply",
        json!({"bench": "apply", "size": size, "batch_params": n, "table_params": rows * width as u64, "accumulate_params_per_s": accumulate, "apply_contiguous_params_per_s": contiguous,
               "apply_scattered_params_per_s": scattered, "shard_submit_params_per_s": submit,
               "apply_vs_accumulate": contiguous / accumulate}),
    );
}
