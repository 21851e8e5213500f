//! The fuzz harness's tool: lists the targets, writes their seed corpus, and replays files
//! through a target under the same rules as the fuzzer (no panic, heap cap, CPU time limit),
//! without libFuzzer.
//!
//! ```text
//! ps-fuzz-tool --list                  # "name max_len" per line
//! ps-fuzz-tool --write-corpus [DIR]    # seeds into DIR/<target>/ (default fuzz/corpus)
//! ps-fuzz-tool --replay TARGET FILE... # each file through TARGET; non-zero exit on a finding
//! ps-fuzz-tool --replay-all [DIR...]   # every DIR/<target>/* (default corpus, regressions)
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ps_fuzz::targets::{self, Target};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_corpus(dir: &Path) -> std::io::Result<()> {
    for t in targets::all() {
        let d = dir.join(t.name);
        std::fs::create_dir_all(&d)?;
        let seeds = (t.seeds)();
        for (name, bytes) in &seeds {
            std::fs::write(d.join(name), bytes)?;
        }
        println!("{:<16} {} seeds", t.name, seeds.len());
    }
    Ok(())
}

/// Runs one file; Err describes the finding.
fn replay(t: &Target, file: &Path) -> Result<(), String> {
    let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let r = std::panic::catch_unwind(|| ps_fuzz::check(t, &data));
    match r {
        Ok(()) => Ok(()),
        Err(_) => Err(format!("{}: a finding (see above)", file.display())),
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn replay_all(dirs: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for t in targets::all() {
        let mut n = 0;
        for d in dirs {
            for f in files(&d.join(t.name)) {
                n += 1;
                if let Err(e) = replay(&t, &f) {
                    eprintln!("{}: {e}", t.name);
                    bad += 1;
                }
            }
        }
        println!("{:<16} {n} files", t.name);
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{bad} findings");
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--list") => {
            for t in targets::all() {
                println!("{} {}", t.name, t.max_len);
            }
            ExitCode::SUCCESS
        }
        Some("--write-corpus") => {
            let dir = args
                .get(1)
                .map_or_else(|| root().join("corpus"), PathBuf::from);
            match write_corpus(&dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("writing the corpus to {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some("--replay") if args.len() >= 3 => {
            let Some(t) = targets::by_name(&args[1]) else {
                eprintln!("no target {}", args[1]);
                return ExitCode::from(2);
            };
            let mut bad = 0;
            for f in &args[2..] {
                match replay(&t, Path::new(f)) {
                    Ok(()) => println!("{f}: ok"),
                    Err(e) => {
                        eprintln!("{e}");
                        bad += 1;
                    }
                }
            }
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("--replay-all") => {
            let dirs: Vec<PathBuf> = if args.len() > 1 {
                args[1..].iter().map(PathBuf::from).collect()
            } else {
                vec![root().join("corpus"), root().join("regressions")]
            };
            replay_all(&dirs)
        }
        _ => {
            eprintln!(
                "usage: ps-fuzz-tool --list | --write-corpus [DIR] | --replay TARGET FILE... | --replay-all [DIR...]"
            );
            ExitCode::from(2)
        }
    }
}
