//! Static check of the CUDA kernels, no GPU needed: compiles every `kernels/*.cu` to PTX through
//! the worker's own path (`worker_gpu::kernels`, NVRTC loaded at run time), assembles each PTX
//! for a real architecture with `ptxas -v`, and prints every entry point's registers, shared
//! memory, stack and spills.
//!
//! ```text
//! kernel-check [--arch compute_90] [--sm sm_90] [--out DIR] [--deny-spills]
//! ```
//!
//! NVRTC is found through the loader's search path (`LD_LIBRARY_PATH`); ptxas is `$PTXAS`, else
//! `ptxas` on `PATH`. `--out DIR` keeps the PTX and cubin files (otherwise a temporary directory
//! is used and removed). Exit status: 0 when every kernel compiles and assembles (and, with
//! `--deny-spills`, nothing spills); 1 when one does not; 2 when NVRTC or ptxas is missing or the
//! arguments are bad. `.ci/check-kernels` installs both from PyPI wheels and runs this.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use worker_gpu::kernels::{self, Kernel, KERNELS};
use worker_gpu::ptxas::{self, Usage};

struct Args {
    arch: &'static str,
    sm: String,
    out: Option<PathBuf>,
    deny_spills: bool,
}

const USAGE: &str =
    "usage: kernel-check [--arch compute_90] [--sm sm_90] [--out DIR] [--deny-spills]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        arch: kernels::DEFAULT_ARCH,
        sm: String::new(),
        out: None,
        deny_spills: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            // The arch string must be 'static for cudarc's CompileOptions; the check runs once.
            "--arch" => args.arch = Box::leak(value("--arch")?.into_boxed_str()),
            "--sm" => args.sm = value("--sm")?,
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--deny-spills" => args.deny_spills = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.sm.is_empty() {
        // compute_90 -> sm_90, compute_90a -> sm_90a
        args.sm = match args.arch.strip_prefix("compute_") {
            Some(n) => format!("sm_{n}"),
            None => args.arch.to_string(),
        };
    }
    Ok(args)
}

/// `$PTXAS`, else the first `ptxas` on `PATH`.
fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

fn ptxas_version(ptxas: &Path) -> Result<String, String> {
    let out = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.contains("release"))
        .unwrap_or_else(|| text.lines().last().unwrap_or("?"))
        .trim()
        .to_string())
}

/// What happened to one kernel file.
struct Outcome {
    kernel: &'static Kernel,
    usage: Vec<Usage>,
    error: Option<String>,
}

fn check_kernel(kernel: &'static Kernel, args: &Args, ptxas: &Path, dir: &Path) -> Outcome {
    let mut outcome = Outcome {
        kernel,
        usage: Vec::new(),
        error: None,
    };
    let ptx = match kernels::compile_ptx(kernel, args.arch) {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let ptx_path = dir.join(format!("{}.ptx", kernel.name));
    let cubin_path = dir.join(format!("{}.{}.cubin", kernel.name, args.sm));
    if let Err(e) = std::fs::write(&ptx_path, ptx.as_bytes()) {
        outcome.error = Some(format!("cannot write {}: {e}", ptx_path.display()));
        return outcome;
    }
    let run = Command::new(ptxas)
        .arg(format!("-arch={}", args.sm))
        .arg("-v")
        .arg(&ptx_path)
        .arg("-o")
        .arg(&cubin_path)
        .output();
    let out = match run {
        Ok(o) => o,
        Err(e) => {
            outcome.error = Some(format!("cannot run {}: {e}", ptxas.display()));
            return outcome;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        outcome.error = Some(format!(
            "ptxas failed on {} ({}):\n{text}",
            ptx_path.display(),
            out.status
        ));
        return outcome;
    }
    outcome.usage = ptxas::parse(&text);
    let missing: Vec<&str> = kernel
        .entries
        .iter()
        .copied()
        .filter(|e| !outcome.usage.iter().any(|u| u.entry && u.function == *e))
        .collect();
    if !missing.is_empty() {
        outcome.error = Some(format!(
            "ptxas reported no usage for entry point(s) {missing:?}; its output:\n{text}"
        ));
    }
    outcome
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<14} {:<22} {:>5} {:>10} {:>7} {:>12} {:>11}",
        "kernel file", "entry", "regs", "smem B", "stack B", "spill st B", "spill ld B"
    );
    println!("{}", "-".repeat(87));
    for o in outcomes {
        // Entry points in source order, then any device function ptxas reported separately.
        let mut rows: Vec<&Usage> = o
            .kernel
            .entries
            .iter()
            .filter_map(|e| o.usage.iter().find(|u| u.entry && u.function == *e))
            .collect();
        rows.extend(o.usage.iter().filter(|u| !u.entry));
        if rows.is_empty() {
            println!("{:<14} {:<22} {:>5}", o.kernel.file, "-", "FAILED");
        }
        for u in rows {
            let name = if u.entry {
                u.function.clone()
            } else {
                format!("({})", u.function)
            };
            println!(
                "{:<14} {:<22} {:>5} {:>10} {:>7} {:>12} {:>11}",
                o.kernel.file,
                name,
                u.registers,
                u.smem_bytes,
                u.stack_bytes,
                u.spill_stores,
                u.spill_loads
            );
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };

    let nvrtc = match kernels::nvrtc_version() {
        Ok((major, minor)) => format!("NVRTC {major}.{minor}"),
        Err(e) => {
            eprintln!("kernel-check: {e}");
            eprintln!(
                "kernel-check: cannot compile the kernels without NVRTC; nothing was checked"
            );
            return ExitCode::from(2);
        }
    };
    let Some(ptxas) = find_ptxas() else {
        eprintln!(
            "kernel-check: ptxas not found: set PTXAS to its path or put it on PATH (it comes \
             with the PyPI wheel nvidia-cuda-nvcc-cu12, as .ci/check-kernels installs it)"
        );
        return ExitCode::from(2);
    };
    let ptxas_ver = match ptxas_version(&ptxas) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("kernel-check: {e}");
            return ExitCode::from(2);
        }
    };

    let (dir, temporary) = match &args.out {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("kernel-check-{}", std::process::id())),
            true,
        ),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("kernel-check: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }

    println!(
        "kernel-check: {} kernel files, {nvrtc} -> {}, ptxas {} ({ptxas_ver}) -> {}",
        KERNELS.len(),
        args.arch,
        ptxas.display(),
        args.sm
    );
    let start = Instant::now();
    let outcomes: Vec<Outcome> = KERNELS
        .iter()
        .map(|k| check_kernel(k, &args, &ptxas, &dir))
        .collect();
    let elapsed = start.elapsed();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }

    println!();
    print_table(&outcomes);
    println!();

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    for o in &failed {
        eprintln!(
            "kernel-check: {} FAILED: {}",
            o.kernel.file,
            o.error.as_deref().unwrap_or("")
        );
    }
    let spilling: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.usage.iter().filter(|u| u.spills()))
        .map(|u| u.function.clone())
        .collect();
    let entries: usize = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.kernel.entries.len())
        .sum();
    println!(
        "kernel-check: {} of {} kernel files compiled and assembled ({entries} entry points) in \
         {:.1} s; spills: {}",
        outcomes.len() - failed.len(),
        outcomes.len(),
        elapsed.as_secs_f64(),
        if spilling.is_empty() {
            "none".to_string()
        } else {
            spilling.join(", ")
        }
    );
    if let Some(d) = &args.out {
        println!("kernel-check: PTX and cubins kept in {}", d.display());
    }
    if !failed.is_empty() {
        return ExitCode::from(1);
    }
    if args.deny_spills && !spilling.is_empty() {
        eprintln!("kernel-check: register spills are denied (--deny-spills)");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
