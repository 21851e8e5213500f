//! The pure part of a benchmark sweep's results: a run's per-clock records, time to a target,
//! the figures of each configuration over its repeats, the table and the fastest configuration.
//! No I/O.

use ps_apps::app::Target;
use serde::Serialize;

/// One clock of one run, as its CSV log gave it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockRow {
    pub clock: u64,
    pub elapsed_s: f64,
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
    pub bytes: f64,
    /// Of `bytes`, what the workers' pushes sent (push codecs act on these).
    pub push_bytes: f64,
    /// The target's figure on this clock, if the clock measured it.
    pub metric: Option<f64>,
}

/// One finished run of a configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub config: usize,
    pub seed: u64,
    pub rows: Vec<ClockRow>,
    /// The job's JSON summary.
    pub summary: serde_json::Value,
}

/// Seconds from the job's start to the end of the first clock whose figure reaches `target`.
pub fn time_to_target(rows: &[ClockRow], target: &Target) -> Option<f64> {
    rows.iter()
        .find(|r| r.metric.is_some_and(|m| target.met(m)))
        .map(|r| r.elapsed_s)
}

/// [`time_to_target`] counted from the end of the first clock rather than the job's start:
/// what the configuration's training took, without the set-up (data made or loaded, first
/// pulls) that every configuration pays alike and that would otherwise dilute their ratios.
pub fn training_to_target(rows: &[ClockRow], target: &Target) -> Option<f64> {
    let first = rows.first()?.elapsed_s;
    time_to_target(rows, target).map(|t| t - first)
}

/// What a configuration did over its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub label: String,
    pub runs: usize,
    /// Runs that reached the target.
    pub reached: usize,
    /// Median time to the target over the runs that reached it.
    pub time_to_target_s: Option<f64>,
    /// The same counted from the end of the first clock ([`training_to_target`]).
    pub training_to_target_s: Option<f64>,
    /// The fastest and slowest of those, over the runs that reached the target: how much the
    /// repeats disagree, to read the medians against.
    pub training_range_s: Option<(f64, f64)>,
    /// Mean of each run's final figure: the job summary's, which is of the shards' model, else
    /// the last clock's.
    pub final_metric: Option<f64>,
    /// Runs that reached the target on a clock whose final model then misses it. Per-clock
    /// figures are the workers' view, which includes what a lossy push codec has not sent yet;
    /// the final figures are of what the shards hold.
    pub final_misses: usize,
    /// Mean job wall time from the job's start to its last clock.
    pub wall_s: f64,
    /// Per clock, averaged over clocks and runs (each a mean over workers).
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
    /// Mean bytes sent and received per run.
    pub bytes: f64,
    /// Mean bytes of pushes per run.
    pub push_bytes: f64,
}

impl Figures {
    /// Compute over communication time.
    pub fn compute_to_comm(&self) -> Option<f64> {
        (self.comm_s > 0.0).then(|| self.compute_s / self.comm_s)
    }
}

/// A run's final figure: the summary's (the shards' model), else its last clock's.
pub fn final_figure(run: &Run, target: &Target) -> Option<f64> {
    run.summary
        .get(&target.metric)
        .and_then(serde_json::Value::as_f64)
        .or_else(|| run.rows.iter().rev().find_map(|c| c.metric))
}

/// The figures of configuration `label` from the runs that finished, of `attempted` (a run that
/// failed counts as one that did not reach the target).
pub fn figures(label: String, runs: &[&Run], attempted: usize, target: &Target) -> Figures {
    let n = runs.len().max(1) as f64;
    let mut times: Vec<f64> = runs
        .iter()
        .filter_map(|r| time_to_target(&r.rows, target))
        .collect();
    times.sort_by(f64::total_cmp);
    let mut training: Vec<f64> = runs
        .iter()
        .filter_map(|r| training_to_target(&r.rows, target))
        .collect();
    training.sort_by(f64::total_cmp);
    let finals: Vec<f64> = runs
        .iter()
        .filter_map(|r| final_figure(r, target))
        .collect();
    let final_misses = runs
        .iter()
        .filter(|r| time_to_target(&r.rows, target).is_some())
        .filter(|r| final_figure(r, target).is_some_and(|f| !target.met(f)))
        .count();
    let per_clock = |f: fn(&ClockRow) -> f64| {
        let (sum, count) = runs
            .iter()
            .flat_map(|r| &r.rows)
            .fold((0.0, 0usize), |(s, c), row| (s + f(row), c + 1));
        if count == 0 {
            0.0
        } else {
            sum / count as f64
        }
    };
    Figures {
        label,
        runs: attempted.max(runs.len()),
        reached: times.len(),
        time_to_target_s: median(&times),
        training_to_target_s: median(&training),
        training_range_s: training.first().zip(training.last()).map(|(a, b)| (*a, *b)),
        final_metric: (!finals.is_empty())
            .then(|| finals.iter().sum::<f64>() / finals.len() as f64),
        final_misses,
        wall_s: runs
            .iter()
            .map(|r| r.rows.last().map_or(0.0, |c| c.elapsed_s))
            .sum::<f64>()
            / n,
        compute_s: per_clock(|c| c.compute_s),
        comm_s: per_clock(|c| c.comm_s),
        blocked_s: per_clock(|c| c.blocked_s),
        bytes: runs
            .iter()
            .map(|r| r.rows.iter().map(|c| c.bytes).sum::<f64>())
            .sum::<f64>()
            / n,
        push_bytes: runs
            .iter()
            .map(|r| r.rows.iter().map(|c| c.push_bytes).sum::<f64>())
            .sum::<f64>()
            / n,
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The configuration that reached the target soonest (every one of its runs must have, and
/// kept it in its final model).
pub fn fastest(figs: &[Figures]) -> Option<usize> {
    figs.iter()
        .enumerate()
        .filter(|(_, f)| f.runs > 0 && f.reached == f.runs && f.final_misses == 0)
        .filter_map(|(i, f)| f.time_to_target_s.map(|t| (i, t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The run of a configuration to show: the one with the median time to the target (the later
/// of the two middle ones), else the first.
pub fn median_run<'a>(runs: &[&'a Run], target: &Target) -> Option<&'a Run> {
    let mut timed: Vec<(f64, &Run)> = runs
        .iter()
        .filter_map(|r| time_to_target(&r.rows, target).map(|t| (t, *r)))
        .collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    match timed.get(timed.len() / 2) {
        Some((_, r)) => Some(*r),
        None => runs.first().copied(),
    }
}

/// The table a sweep prints: one line per configuration.
pub fn table(figs: &[Figures], target: &Target) -> String {
    let width = figs.iter().map(|f| f.label.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$}  {:>14}  {:>13}  {:>11}  {:>7}  {:>10}  {:>8}  {:>12}  {:>8}  {:>10}  {:>10}\n",
        "config",
        format!("to {target}"),
        "after clock 0",
        "range",
        "reached",
        target.metric.chars().take(10).collect::<String>(),
        "wall_s",
        "compute:comm",
        "blocked",
        "MB",
        "push MB"
    );
    for f in figs {
        let mark = if f.final_misses > 0 { "*" } else { "" };
        let t = f
            .time_to_target_s
            .map_or("not reached".to_string(), |t| format!("{t:.3} s{mark}"));
        let after = f
            .training_to_target_s
            .map_or("-".to_string(), |t| format!("{t:.3} s{mark}"));
        let range = f
            .training_range_s
            .filter(|_| f.reached > 1)
            .map_or("-".to_string(), |(a, b)| format!("{a:.3}-{b:.3}"));
        let m = f
            .final_metric
            .map_or("-".to_string(), |m| format!("{m:.4}"));
        let r = f
            .compute_to_comm()
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        out.push_str(&format!(
            "{:<width$}  {:>14}  {:>13}  {:>11}  {:>7}  {:>10}  {:>8.3}  {:>12}  {:>7.1}%  {:>10.2}  {:>10.3}\n",
            f.label,
            t,
            after,
            range,
            format!("{}/{}", f.reached, f.runs),
            m,
            f.wall_s,
            r,
            100.0 * f.blocked_s / (f.compute_s + f.blocked_s).max(f64::MIN_POSITIVE),
            f.bytes / 1e6,
            f.push_bytes / 1e6
        ));
    }
    if figs.iter().any(|f| f.final_misses > 0) {
        out.push_str(&format!(
            "* a run reached {target} in the workers' view (each worker's own updates, what a \
             lossy push codec has not sent yet, and others' as of its last read) but its final \
             model on the shards misses it\n"
        ));
    }
    match fastest(figs) {
        Some(i) => out.push_str(&format!(
            "fastest to {target}: {} ({:.3} s)\n",
            figs[i].label,
            figs[i].time_to_target_s.unwrap_or(f64::NAN)
        )),
        None => out.push_str(&format!("no configuration reached {target} in every run\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(clock: u64, elapsed_s: f64, metric: Option<f64>) -> ClockRow {
        ClockRow {
            clock,
            elapsed_s,
            compute_s: 0.01,
            comm_s: 0.02,
            blocked_s: 0.005,
            bytes: 1000.0,
            push_bytes: 400.0,
            metric,
        }
    }

    #[test]
    fn time_to_target_is_the_first_clock_that_reaches_it() {
        let t = Target::parse("test_rmse<=0.2").unwrap();
        let rows = [
            row(0, 0.1, Some(0.5)),
            row(1, 0.2, None),
            row(2, 0.3, Some(0.19)),
        ];
        assert_eq!(time_to_target(&rows, &t), Some(0.3));
        assert_eq!(time_to_target(&rows[..2], &t), None);
        // Counted from the end of clock 0 instead: the set-up before it is left out.
        assert!((training_to_target(&rows, &t).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(training_to_target(&rows[..2], &t), None);
    }

    #[test]
    fn figures_table_and_fastest() {
        let t = Target::parse("test_rmse<=0.2").unwrap();
        let run = |config, times: &[(f64, f64)]| Run {
            config,
            seed: 1,
            rows: times
                .iter()
                .enumerate()
                .map(|(i, &(e, m))| row(i as u64, e, Some(m)))
                .collect(),
            summary: serde_json::Value::Null,
        };
        let a = [
            run(0, &[(0.1, 0.5), (0.2, 0.1)]),
            run(0, &[(0.1, 0.5), (0.4, 0.1)]),
        ];
        let b = [run(1, &[(0.1, 0.15)]), run(1, &[(0.1, 0.3)])];
        let fa = figures("a".into(), &a.iter().collect::<Vec<_>>(), 2, &t);
        let fb = figures("b".into(), &b.iter().collect::<Vec<_>>(), 2, &t);
        // A run that failed counts against reaching the target.
        let fc = figures("c".into(), &b[..1].iter().collect::<Vec<_>>(), 3, &t);
        assert_eq!((fc.reached, fc.runs), (1, 3));
        assert_eq!(fastest(&[fc]), None);
        let three = [
            run(2, &[(0.5, 0.1)]),
            run(2, &[(0.1, 0.1)]),
            run(2, &[(0.3, 0.1)]),
        ];
        let refs: Vec<&Run> = three.iter().collect();
        let m = median_run(&refs, &t).unwrap();
        assert_eq!(m.rows[0].elapsed_s, 0.3);
        assert_eq!(
            (fa.reached, fa.time_to_target_s),
            (2, Some(0.30000000000000004))
        );
        assert_eq!(fa.final_metric, Some(0.1));
        // Runs a: 0.1 s and 0.3 s after their first clock ended; median 0.2 s.
        assert!((fa.training_to_target_s.unwrap() - 0.2).abs() < 1e-12);
        let (lo, hi) = fa.training_range_s.unwrap();
        assert!((lo - 0.1).abs() < 1e-12 && (hi - 0.3).abs() < 1e-12);
        assert_eq!((fb.reached, fb.time_to_target_s), (1, Some(0.1)));
        assert!((fa.compute_to_comm().unwrap() - 0.5).abs() < 1e-12);
        // b was faster once but missed the target once: a is the fastest.
        let figs = vec![fa, fb];
        assert_eq!(fastest(&figs), Some(0));
        let text = table(&figs, &t);
        assert!(text.contains("fastest to test_rmse<=0.2: a"), "{text}");
        assert!(text.contains("1/2"), "{text}");
        assert!(text.lines().next().unwrap().ends_with("push MB"), "{text}");
        // Per run, the pushes' share of the bytes: a's runs have 2 rows of 400 push bytes.
        assert_eq!(figs[0].push_bytes, 2.0 * 400.0);
        assert_eq!(fastest(&[]), None);
        // The final figure is the summary's (the shards' model) when it has one: a run whose
        // view reached the target but whose final model misses it is marked, and not fastest.
        let mut lossy = run(3, &[(0.05, 0.15)]);
        lossy.summary = serde_json::json!({"test_rmse": 0.25});
        let fl = figures("lossy".into(), &[&lossy], 1, &t);
        assert_eq!(
            (fl.reached, fl.final_misses, fl.final_metric),
            (1, 1, Some(0.25))
        );
        let mut kept = run(4, &[(0.06, 0.15)]);
        kept.summary = serde_json::json!({"test_rmse": 0.19});
        let fk = figures("kept".into(), &[&kept], 1, &t);
        assert_eq!((fk.final_misses, fk.final_metric), (0, Some(0.19)));
        let figs = vec![fl, fk];
        assert_eq!(fastest(&figs), Some(1));
        let text = table(&figs, &t);
        assert!(text.contains("0.050 s*"), "{text}");
        assert!(
            text.contains("final model on the shards misses it"),
            "{text}"
        );
    }
}
