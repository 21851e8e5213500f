//! Running a sweep: each configuration's repeats as `ps-cluster local` child processes (this
//! binary), their CSV logs and summaries read back, and the sweep's files written.

use super::figures::{self, ClockRow, Figures, Run};
use super::sweep::Config;
use super::{BenchArgs, Plan};
use crate::parse::{parse, NotRun};
use crate::plots::{self, BytesQuality, QualitySeries, TimeSplit};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ps_apps::app::{DynApp, Target};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The `local` command line of one run (program name first).
fn local_argv(a: &BenchArgs, c: &Config, seed: u64, csv: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "ps-cluster".into(),
        "local".into(),
        "--app".into(),
        a.app.clone(),
    ];
    v.extend(c.local_args());
    v.extend([
        "--servers".into(),
        a.servers.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--log-csv".into(),
        csv.display().to_string(),
        "--no-progress".into(),
    ]);
    if let Some(n) = a.clocks {
        v.extend(["--clocks".into(), n.to_string()]);
    }
    v.extend(a.extra.iter().cloned());
    v
}

/// Runs every configuration's repeats, then writes the files and prints the table.
pub fn sweep(a: &BenchArgs, plan: &Plan, apps: &[Box<dyn DynApp>]) -> Result<()> {
    let configs = plan.axes.configs();
    let varying = plan.axes.varying();
    let labels: Vec<String> = configs.iter().map(|c| c.label(varying)).collect();
    // Every run's flags must parse before the first one starts.
    for c in &configs {
        let argv = local_argv(a, c, a.seed, Path::new("x.csv"));
        match parse(&argv, apps) {
            Ok(_) => {}
            Err(NotRun::Clap(e)) => bail!("{}: {}", c.label(varying), e.render()),
            Err(NotRun::ForeignFlag(m)) => bail!("{m}"),
        }
    }
    let logs = a.out.join("runs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let total = configs.len() * a.repeats as usize;
    eprintln!(
        "bench: {} configurations x {} repeats = {total} runs of --app {}, timing {}; files in {}",
        configs.len(),
        a.repeats,
        a.app,
        plan.target,
        a.out.display()
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(total as u64);
        if let Ok(s) = ProgressStyle::with_template("{bar:30} run {pos}/{len}  {msg}  (eta {eta})")
        {
            b.set_style(s);
        }
        b
    });
    let started = Instant::now();
    let (mut runs, mut failures) = (Vec::new(), Vec::new());
    // In rounds: each repeat runs every configuration once, so whatever drifts on the machine
    // over the sweep (other load, heat) falls on every configuration alike rather than on the
    // ones that happened to run late.
    for r in 0..u64::from(a.repeats) {
        for (i, c) in configs.iter().enumerate() {
            let seed = a.seed.saturating_add(r);
            let n = r as usize * configs.len() + i;
            let name = format!("{n:03}");
            let msg = format!("{} (seed {seed})", labels[i]);
            if let Some(b) = &bar {
                b.set_message(msg.clone());
            }
            let t = Instant::now();
            match one_run(&exe, a, c, seed, &logs, &name, &plan.target) {
                Ok((rows, summary)) => runs.push(Run {
                    config: i,
                    seed,
                    rows,
                    summary,
                }),
                Err(e) => failures.push(format!("run {name} ({msg}): {e:#}")),
            }
            match &bar {
                Some(b) => b.inc(1),
                None => eprintln!(
                    "bench: run {}/{total} {msg}: {:.1} s",
                    n + 1,
                    t.elapsed().as_secs_f64()
                ),
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let figs: Vec<Figures> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mine: Vec<&Run> = runs.iter().filter(|r| r.config == i).collect();
            figures::figures(l.clone(), &mine, a.repeats as usize, &plan.target)
        })
        .collect();
    let table = format!(
        "every configuration: {}\n{}",
        plan.axes.fixed().join(", "),
        figures::table(&figs, &plan.target)
    );
    write_files(&a.out, &configs, &labels, &runs, &figs, &table, plan)?;
    print!("{table}");
    eprintln!(
        "bench: {} runs in {:.1} s; files in {}",
        runs.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    if !failures.is_empty() {
        bail!(
            "{} of {total} runs failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// One `local` run: its per-clock rows and its summary. Its stderr goes to `logs/NAME.log`.
fn one_run(
    exe: &Path,
    a: &BenchArgs,
    c: &Config,
    seed: u64,
    logs: &Path,
    name: &str,
    target: &Target,
) -> Result<(Vec<ClockRow>, serde_json::Value)> {
    let csv = logs.join(format!("{name}.csv"));
    let log = logs.join(format!("{name}.log"));
    let argv = local_argv(a, c, seed, &csv);
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let out = Command::new(exe)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(stderr)
        .output()
        .context("starting ps-cluster local")?;
    if !out.status.success() {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let last: Vec<&str> = tail.lines().rev().take(3).collect();
        bail!(
            "exited with {} ({}; log {})",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" / "),
            log.display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .context("no JSON summary on the last line of stdout")?;
    Ok((read_rows(&csv, &target.metric)?, summary))
}

/// The rows of a run's CSV log.
fn read_rows(path: &Path, metric: &str) -> Result<Vec<ClockRow>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = r.headers()?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name}", path.display()))
    };
    let cols = [
        "clock",
        "elapsed_s",
        "compute_s",
        "comm_s",
        "blocked_s",
        "bytes_sent",
        "bytes_received",
        "push_bytes",
    ]
    .map(col);
    let [clock, elapsed, compute, comm, blocked, sent, received, pushed] = cols;
    let (clock, elapsed, compute, comm, blocked, sent, received, pushed) = (
        clock?, elapsed?, compute?, comm?, blocked?, sent?, received?, pushed?,
    );
    let m = col(metric)?;
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        let num = |i: usize| -> f64 { rec.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        rows.push(ClockRow {
            clock: num(clock) as u64,
            elapsed_s: num(elapsed),
            compute_s: num(compute),
            comm_s: num(comm),
            blocked_s: num(blocked),
            bytes: num(sent) + num(received),
            push_bytes: num(pushed),
            metric: rec
                .get(m)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite()),
        });
    }
    Ok(rows)
}

/// clocks.csv, runs.json, configs.json, table.txt and the plots.
fn write_files(
    out: &Path,
    configs: &[Config],
    labels: &[String],
    runs: &[Run],
    figs: &[Figures],
    table: &str,
    plan: &Plan,
) -> Result<Vec<PathBuf>> {
    let target = &plan.target;
    let path = out.join("clocks.csv");
    let mut w =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "config",
        "link",
        "push_codec",
        "pull_codec",
        "staleness",
        "reads",
        "workers",
        "device",
        "straggle",
        "seed",
        "clock",
        "elapsed_s",
        "compute_s",
        "comm_s",
        "blocked_s",
        "bytes",
        "push_bytes",
        &target.metric,
    ])?;
    for run in runs {
        let c = &configs[run.config];
        for r in &run.rows {
            w.write_record([
                labels[run.config].clone(),
                c.link.clone().unwrap_or_else(|| "loopback".into()),
                c.push_codec.clone(),
                c.pull_codec.clone(),
                c.staleness.clone(),
                c.reads.clone(),
                c.workers.to_string(),
                c.device.clone(),
                c.straggle.clone().unwrap_or_else(|| "none".into()),
                run.seed.to_string(),
                r.clock.to_string(),
                r.elapsed_s.to_string(),
                r.compute_s.to_string(),
                r.comm_s.to_string(),
                r.blocked_s.to_string(),
                r.bytes.to_string(),
                r.push_bytes.to_string(),
                r.metric.map(|m| m.to_string()).unwrap_or_default(),
            ])?;
        }
    }
    w.flush()?;
    let json = |name: &str, v: serde_json::Value| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))
    };
    let run_list: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "config": labels[r.config], "settings": configs[r.config], "seed": r.seed,
                "time_to_target_s": figures::time_to_target(&r.rows, target),
                "summary": r.summary,
            })
        })
        .collect();
    json(
        "runs.json",
        serde_json::json!({ "target": target.to_string(), "runs": run_list }),
    )?;
    json(
        "configs.json",
        serde_json::json!({
            "target": target.to_string(),
            "fastest": figures::fastest(figs).map(|i| labels[i].clone()),
            "configs": figs,
        }),
    )?;
    let p = out.join("table.txt");
    std::fs::write(&p, table).with_context(|| format!("writing {}", p.display()))?;
    // The plots: the median-time run of each configuration over time, its split and bytes.
    let series: Vec<QualitySeries> = labels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let mine: Vec<&Run> = runs.iter().filter(|r| r.config == i).collect();
            let run = figures::median_run(&mine, target)?;
            Some(QualitySeries {
                label: l.clone(),
                points: run
                    .rows
                    .iter()
                    .filter_map(|c| c.metric.map(|m| (c.elapsed_s, m)))
                    .collect(),
            })
        })
        .collect();
    let splits: Vec<TimeSplit> = figs
        .iter()
        .filter(|f| f.runs > 0)
        .map(|f| TimeSplit {
            label: f.label.clone(),
            compute_s: f.compute_s,
            comm_s: f.comm_s,
            blocked_s: f.blocked_s,
        })
        .collect();
    let points: Vec<BytesQuality> = figs
        .iter()
        .filter_map(|f| {
            Some(BytesQuality {
                label: f.label.clone(),
                bytes: f.bytes,
                quality: f.final_metric?,
            })
        })
        .collect();
    match plots::draw_all(
        out,
        &target.metric,
        target.lower_is_better,
        Some(target.value),
        &series,
        &splits,
        &points,
    ) {
        Ok(drawn) => Ok(drawn),
        // The SVGs are there; only the PNGs need a font.
        Err(e @ plots::PlotError::NoFont { .. }) => {
            eprintln!("warning: {e}");
            match e {
                plots::PlotError::NoFont { written, .. } => Ok(written),
                _ => Ok(Vec::new()),
            }
        }
        Err(e) => Err(e).context("drawing the plots (the CSV and JSON files are written)"),
    }
}
