//! Shared helpers of the benchmark targets (`cargo bench -p ps-benches`). Benchmarks print a
//! human table and one JSON object per measurement, and append the JSON lines to
//! `target/bench-results/NAME.jsonl`.

use std::io::Write;
use std::time::{Duration, Instant};

/// Runs `f` repeatedly for about `secs` seconds (at least `min_iters` times); returns
/// (iterations, elapsed seconds).
pub fn run_for(secs: f64, min_iters: u64, mut f: impl FnMut()) -> (u64, f64) {
    let start = Instant::now();
    let mut n = 0;
    while n < min_iters || start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += 1;
    }
    (n, start.elapsed().as_secs_f64())
}

/// Reads `--name value` from the bench's arguments (cargo adds `--bench`, which is ignored).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Prints a JSON line and appends it to target/bench-results/<bench>.jsonl.
pub fn record(bench: &str, value: serde_json::Value) {
    println!("{value}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    if std::fs::create_dir_all(&dir).is_ok() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{bench}.jsonl")))
        {
            let _ = writeln!(f, "{value}");
        }
    }
}
