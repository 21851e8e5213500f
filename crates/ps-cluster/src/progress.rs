//! What the coordinator does with each finished clock: the per-clock line on stdout, a progress
//! bar on a terminal, and a row of a CSV log.
//!
//! The line is printed always (stdout is the job's record); when stderr is a terminal and the
//! caller asks for it, a bar below the lines shows the clock, the app's quality figure, clocks
//! per second and the time left. `--log-csv PATH` writes one row per clock: the clock, the
//! seconds since the job started (every node registered), the transport figures, the app's named figures
//! ([`DynApp::clock_metrics`]) and its raw sums (`sum_*`), with the columns fixed by the first
//! clock.

use crate::roles::clock_line;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ps_apps::app::DynApp;
use ps_proto::ClockSummary;
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How the coordinator reports clocks, for `local` and `coordinator`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProgressArgs {
    /// Write one CSV row per clock (clock, seconds since the start, compute, communication and
    /// blocked seconds, bytes, the app's per-clock figures and sums) to PATH.
    #[arg(long, value_name = "PATH")]
    pub log_csv: Option<PathBuf>,
    /// No progress bar, even when stderr is a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// The sinks of finished clocks.
pub struct ClockLog<'a> {
    app: &'a dyn DynApp,
    started: Instant,
    bar: Option<ProgressBar>,
    csv: Option<Csv>,
}

struct Csv {
    path: PathBuf,
    writer: csv::Writer<File>,
    /// The app's figure names and raw sum keys, from the first clock.
    columns: Option<(Vec<&'static str>, Vec<String>)>,
}

/// The transport figures of every row, after `clock` and `elapsed_s`.
const TRANSPORT: [&str; 9] = [
    "compute_s",
    "comm_s",
    "overlap_s",
    "blocked_s",
    "bytes_sent",
    "bytes_received",
    "bytes_logical",
    "push_bytes",
    "push_bytes_logical",
];

impl<'a> ClockLog<'a> {
    /// A log for a job of `clocks` clocks: a bar if `bar` is asked for and stderr is a
    /// terminal, a CSV file at `csv` (created now, so a bad path fails before the job starts).
    pub fn new(
        app: &'a dyn DynApp,
        clocks: u64,
        bar: bool,
        csv: Option<&Path>,
    ) -> Result<ClockLog<'a>> {
        let csv = match csv {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("--log-csv: creating {}", path.display()))?;
                Some(Csv {
                    path: path.to_path_buf(),
                    writer: csv::Writer::from_writer(file),
                    columns: None,
                })
            }
            None => None,
        };
        let bar = (bar && std::io::stderr().is_terminal()).then(|| progress_bar(clocks));
        Ok(ClockLog {
            app,
            started: Instant::now(),
            bar,
            csv,
        })
    }

    /// A log for a job as `args` ask.
    pub fn from_args(app: &'a dyn DynApp, clocks: u64, args: &ProgressArgs) -> Result<Self> {
        ClockLog::new(app, clocks, !args.no_progress, args.log_csv.as_deref())
    }

    /// The job started (every node registered): `elapsed_s` counts from now.
    pub fn start(&mut self) {
        self.started = Instant::now();
    }

    /// Records one finished clock. A CSV file that cannot be written is reported once and
    /// dropped; the job goes on.
    pub fn clock(&mut self, s: &ClockSummary) {
        let line = clock_line(self.app, s);
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| println!("{line}"));
                bar.set_message(self.app.clock_line(&s.sums));
                bar.set_position(s.clock + 1);
            }
            None => println!("{line}"),
        }
        if let Some(csv) = &mut self.csv {
            let elapsed = self.started.elapsed().as_secs_f64();
            if let Err(e) = csv.row(self.app, s, elapsed) {
                let msg = format!(
                    "--log-csv: writing {}: {e:#}; no more rows",
                    csv.path.display()
                );
                tracing::error!("{msg}");
                eprintln!("warning: {msg}");
                self.csv = None;
            }
        }
    }

    /// Clears the bar and flushes the CSV file.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(csv) = &mut self.csv {
            csv.writer
                .flush()
                .with_context(|| format!("--log-csv: writing {}", csv.path.display()))?;
        }
        Ok(())
    }
}

fn progress_bar(clocks: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(clocks), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} clock {pos}/{len}  {msg}  {per_sec:.dim}  {elapsed_precise} (eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

impl Csv {
    fn row(&mut self, app: &dyn DynApp, s: &ClockSummary, elapsed: f64) -> Result<()> {
        let metrics = app.clock_metrics(&s.sums);
        let (names, sums) = match &self.columns {
            Some(c) => c,
            None => {
                let names: Vec<&'static str> = metrics.iter().map(|(n, _)| *n).collect();
                let sums: Vec<String> = s.sums.keys().cloned().collect();
                let mut header = vec!["clock".to_string(), "elapsed_s".to_string()];
                header.extend(TRANSPORT.iter().map(|t| t.to_string()));
                header.extend(names.iter().map(|n| n.to_string()));
                header.extend(sums.iter().map(|k| format!("sum_{k}")));
                self.writer.write_record(&header)?;
                self.columns.insert((names, sums))
            }
        };
        let mut row = vec![s.clock.to_string(), format!("{elapsed:.6}")];
        row.extend([
            s.compute_s.to_string(),
            s.comm_s.to_string(),
            s.overlap_s.to_string(),
            s.blocked_s.to_string(),
            s.bytes_sent.to_string(),
            s.bytes_received.to_string(),
            s.bytes_logical.to_string(),
            s.push_bytes.to_string(),
            s.push_bytes_logical.to_string(),
        ]);
        let cell = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for n in names {
            let v = metrics.iter().find(|(m, _)| m == n).and_then(|(_, v)| *v);
            row.push(cell(v));
        }
        for k in sums {
            row.push(cell(s.sums.get(k).copied()));
        }
        self.writer.write_record(&row)?;
        Ok(())
    }
}
