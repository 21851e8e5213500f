//! GPU benchmarks of the CUDA engines, each next to its floor (`tools: device METHOD.md`): the
//! time the work needs at the device's measured ceilings, operations over the peak rate or bytes
//! over the copy bandwidth, whichever is larger, expressed as the best rate possible.
//!
//! The ceilings are measured first on the device itself: a 1 GiB device-to-device copy (bytes
//! read plus bytes written) and a cuBLAS SGEMM of 8192³ (plain f32, no TF32).
//!
//! Usage: `gpu-bench [--quick] [--out DIR] [--device N] [--only mf,lda,mlp,mlp-clock,codec]`. Prints a table
//! last and writes `gpu-bench.csv` and `gpu-bench.json` under `--out` (default `.`).
//! Needs a GPU: without one it says why and exits with status 2.

mod codec;
mod lda;
mod mf;
mod mlp;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::CudaStream;
use worker_gpu::cuda::{Gpu, GpuError};

/// The device's measured ceilings.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    /// Device-memory bandwidth of a large device-to-device copy, bytes read + written per second.
    pub copy_bytes_per_s: f64,
    /// f32 multiply-add rate of a large cuBLAS SGEMM, flops (2 per FMA) per second.
    pub fp32_flops_per_s: f64,
}

impl Ceilings {
    /// The floor of a piece of work as a best-possible rate of `units` per second: the larger of
    /// `flops / peak` and `bytes / bandwidth` is the least time it can take.
    pub fn floor_rate(&self, units: f64, flops: f64, bytes: f64) -> (f64, &'static str) {
        let t_ops = flops / self.fp32_flops_per_s;
        let t_bytes = bytes / self.copy_bytes_per_s;
        if t_ops >= t_bytes {
            (units / t_ops, "flops")
        } else {
            (units / t_bytes, "bytes")
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, e.g. `mf_sgd kernel`.
    pub bench: String,
    /// The shape, e.g. `rank 32, 20M ratings`.
    pub shape: String,
    /// The measured rate (median).
    pub rate: f64,
    /// Its unit, e.g. `updates/s`.
    pub unit: &'static str,
    /// The best rate the ceilings allow for this work (see [`Ceilings::floor_rate`]).
    pub floor_rate: f64,
    /// Which ceiling sets the floor: `bytes` or `flops`.
    pub bound: &'static str,
    /// A peer's figure on the same device and shape, when one was measured.
    pub peer: Option<(String, f64)>,
    /// Anything a reader needs (e.g. the spread of repeats).
    pub note: String,
}

/// Median of `reps` timed runs of `f`, after `warmup` untimed ones, in milliseconds. `f` must
/// leave the device idle when it returns (the engines' trait calls do); the host clock times it.
pub fn median_wall_ms(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), GpuError>,
) -> Result<(f64, f64), GpuError> {
    for _ in 0..warmup {
        f()?;
    }
    gpu.synchronize()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        gpu.synchronize()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median_and_spread(t))
}

/// Median of `reps` runs of `f` timed with events on `stream` (for work that `f` only enqueues
/// there), after `warmup` untimed ones, in milliseconds; also the spread (max − min) / median.
pub fn median_event_ms(
    stream: &Arc<CudaStream>,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), GpuError>,
) -> Result<(f64, f64), GpuError> {
    use cudarc::driver::sys::CUevent_flags;
    let call = |e: cudarc::driver::DriverError| GpuError::Driver {
        call: "event",
        error: e.to_string(),
    };
    for _ in 0..warmup {
        f()?;
    }
    stream.synchronize().map_err(call)?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let a = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(call)?;
        f()?;
        let b = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(call)?;
        t.push(f64::from(a.elapsed_ms(&b).map_err(call)?));
    }
    Ok(median_and_spread(t))
}

pub fn median_and_spread(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    let med = t[t.len() / 2];
    let spread = (t[t.len() - 1] - t[0]) / med.max(1e-12);
    (med, spread)
}

fn main() {
    std::process::exit(match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("gpu-bench: {e}");
            2
        }
    })
}

struct Args {
    quick: bool,
    out: std::path::PathBuf,
    device: u32,
    only: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, GpuError> {
    let mut a = Args {
        quick: false,
        out: ".".into(),
        device: 0,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| GpuError::Input(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = value("--out")?.into(),
            "--device" => {
                a.device = value("--device")?
                    .parse()
                    .map_err(|_| GpuError::Input("--device takes a number".into()))?
            }
            "--only" => a.only = Some(value("--only")?.split(',').map(str::to_string).collect()),
            other => return Err(GpuError::Input(format!("unknown argument {other:?}"))),
        }
    }
    Ok(a)
}

fn run() -> Result<(), GpuError> {
    let args = parse_args()?;
    let gpu = Gpu::open(args.device)?;
    eprintln!("gpu-bench on {}", gpu.info);
    let ceil = ceilings::measure(&gpu)?;
    eprintln!(
        "ceilings: copy {:.0} GB/s (read + write), SGEMM {:.1} TFLOP/s",
        ceil.copy_bytes_per_s / 1e9,
        ceil.fp32_flops_per_s / 1e12
    );
    let wants = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    };
    let mut rows = Vec::new();
    type Bench = fn(&Arc<Gpu>, &Ceilings, bool) -> Result<Vec<Row>, GpuError>;
    // The cheapest first, and the MLP clock (check.sh's MLP bar) before anything else, so that
    // a time limit cuts the long LDA rows rather than the bar's figure.
    let benches: [(&str, Bench); 5] = [
        ("mlp-clock", mlp::run_clock),
        ("mlp", mlp::run),
        ("codec", codec::run),
        ("mf", mf::run),
        ("lda", lda::run),
    ];
    // Each bench's rows are printed and written as it ends, so that a step cut short by its
    // time limit (check.sh) keeps what finished; each says how long it took.
    print_header(&gpu, &ceil);
    for (name, bench) in benches {
        if !wants(name) {
            continue;
        }
        let t0 = std::time::Instant::now();
        match bench(&gpu, &ceil, args.quick) {
            Ok(r) => {
                print_rows(&r);
                rows.extend(r);
                write_results(&args.out, &gpu, &ceil, &rows)?;
            }
            Err(e) => eprintln!("gpu-bench: {name} failed: {e}"),
        }
        eprintln!("gpu-bench: {name} took {:.1} s", t0.elapsed().as_secs_f64());
    }
    write_results(&args.out, &gpu, &ceil, &rows)?;
    Ok(())
}

mod ceilings;

fn print_header(gpu: &Gpu, ceil: &Ceilings) {
    println!(
        "\n{} | copy {:.0} GB/s | SGEMM {:.1} TFLOP/s",
        gpu.info,
        ceil.copy_bytes_per_s / 1e9,
        ceil.fp32_flops_per_s / 1e12
    );
    println!(
        "{:<28} {:<34} {:>14} {:<11} {:>14} {:>7} {:>6} {:>22}",
        "bench", "shape", "rate", "unit", "floor rate", "of flr", "bound", "peer (ours/peer)"
    );
}

fn print_rows(rows: &[Row]) {
    for r in rows {
        let peer = r
            .peer
            .as_ref()
            .map(|(n, v)| format!("{n} {:.3e} ({:.2})", v, r.rate / v))
            .unwrap_or_default();
        println!(
            "{:<28} {:<34} {:>14.4e} {:<11} {:>14.4e} {:>7.3} {:>6} {:>22}",
            r.bench,
            r.shape,
            r.rate,
            r.unit,
            r.floor_rate,
            r.rate / r.floor_rate,
            r.bound,
            peer
        );
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
}

fn write_results(
    dir: &std::path::Path,
    gpu: &Gpu,
    ceil: &Ceilings,
    rows: &[Row],
) -> Result<(), GpuError> {
    let io =
        |e: std::io::Error| GpuError::Input(format!("writing results to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut csv = String::from(
        "device,bench,shape,rate,unit,floor_rate,fraction_of_floor,bound,peer,peer_rate,note\n",
    );
    let mut json = String::from("[\n");
    let esc = |s: &str| s.replace('"', "'");
    for (i, r) in rows.iter().enumerate() {
        let (pn, pv) = r
            .peer
            .as_ref()
            .map(|(n, v)| (n.clone(), v.to_string()))
            .unwrap_or_default();
        csv.push_str(&format!(
            "\"{}\",\"{}\",\"{}\",{},{},{},{},{},\"{}\",{},\"{}\"\n",
            esc(&gpu.info.name),
            esc(&r.bench),
            esc(&r.shape),
            r.rate,
            r.unit,
            r.floor_rate,
            r.rate / r.floor_rate,
            r.bound,
            esc(&pn),
            pv,
            esc(&r.note)
        ));
        json.push_str(&format!(
            "  {{\"device\": \"{}\", \"copy_bytes_per_s\": {}, \"fp32_flops_per_s\": {}, \"bench\": \"{}\", \"shape\": \"{}\", \"rate\": {}, \"unit\": \"{}\", \"floor_rate\": {}, \"bound\": \"{}\", \"peer\": \"{}\", \"peer_rate\": {}, \"note\": \"{}\"}}{}\n",
            esc(&gpu.info.name),
            ceil.copy_bytes_per_s,
            ceil.fp32_flops_per_s,
            esc(&r.bench),
            esc(&r.shape),
            r.rate,
            r.unit,
            r.floor_rate,
            r.bound,
            esc(&pn),
            if pv.is_empty() { "null".to_string() } else { pv },
            esc(&r.note),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("]\n");
    std::fs::write(dir.join("gpu-bench.csv"), csv).map_err(io)?;
    std::fs::write(dir.join("gpu-bench.json"), json).map_err(io)?;
    Ok(())
}
