//! Where a worker's compute time goes in a clock. The driver times the calls it makes: reading
//! the clock's rows (the session naming them, the library storing each shard's reply, and the
//! session loading them), the session's step (the app's own work, a resident engine's device time
//! included, and the library taking its delta), and, with overlap, asking for the next clock's
//! rows ahead (the session naming them, the library sending the pulls). The library times the
//! clock's sealing (encoding its push frames, [`ps_client::SEAL_SECONDS`]) and the folding of
//! acknowledged pushes into its cached rows ([`ps_client::FOLD_SECONDS`]). Each clock's report
//! carries the figures (the `--log-csv` columns `sum_host_*`), and the summary gives them over
//! the clocks, as a mean over workers, beside `compute_s`. With a resident engine, `host_step_s`
//! less `device_compute_s` is the host's own work in the step.

use std::collections::BTreeMap;
use std::time::Instant;

/// Seconds in the clock's reads, less the seconds blocked in them: the session naming the rows,
/// the library storing the replies, and the session's loads.
pub const READ: &str = "host_read_s";
/// Of [`READ`], the session's loads (a resident engine copying rows to its device).
pub const LOAD: &str = "host_load_s";
/// Seconds in the session's step, `run_clock`.
pub const STEP: &str = "host_step_s";
/// Of [`STEP`], the library taking the step's delta (the sink's calls).
pub const SINK: &str = "host_sink_s";
/// Seconds asking for the next clock's rows ahead, less the seconds blocked there.
pub const PREFETCH: &str = "host_prefetch_s";

/// Every figure this module's summary reports, in its order.
const ALL: [&str; 7] = [
    READ,
    LOAD,
    STEP,
    SINK,
    PREFETCH,
    ps_client::SEAL_SECONDS,
    ps_client::FOLD_SECONDS,
];

/// A clock's timings so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct HostTimes {
    pub read: f64,
    pub load: f64,
    pub step: f64,
    pub sink: f64,
    pub prefetch: f64,
}

impl HostTimes {
    /// Adds the figures to a clock's app figures.
    pub fn add_to(&self, figures: &mut BTreeMap<String, f64>) {
        for (k, v) in [
            (READ, self.read),
            (LOAD, self.load),
            (STEP, self.step),
            (SINK, self.sink),
            (PREFETCH, self.prefetch),
        ] {
            *figures.entry(k.into()).or_default() += v;
        }
    }
}

/// Adds the time `f` takes to `into`.
pub fn timed<T>(into: &mut f64, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    *into += started.elapsed().as_secs_f64();
    out
}

/// Seconds from `started` less `blocked` (never below zero).
pub fn unblocked(started: Instant, blocked: f64) -> f64 {
    (started.elapsed().as_secs_f64() - blocked).max(0.0)
}

/// The summary's figures: each one's sum over clocks and workers (`totals`, a job's summed
/// clock sums) over `workers`, to 4 decimals; nothing for a figure no clock reported.
pub fn summary_figures(
    totals: &BTreeMap<String, f64>,
    workers: u32,
) -> impl Iterator<Item = (&'static str, f64)> + '_ {
    let w = f64::from(workers.max(1));
    ALL.into_iter()
        .filter_map(move |k| totals.get(k).map(|&v| (k, (v / w * 1e4).round() / 1e4)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn figures_add_up_and_the_summary_gives_means_over_workers() {
        let mut clock = BTreeMap::from([("train_n".to_string(), 3.0)]);
        let t = HostTimes {
            read: 0.5,
            load: 0.25,
            step: 2.0,
            sink: 0.125,
            prefetch: 0.0625,
        };
        t.add_to(&mut clock);
        t.add_to(&mut clock);
        assert_eq!(clock["train_n"], 3.0, "app figures untouched");
        assert_eq!(
            [
                clock[READ],
                clock[LOAD],
                clock[STEP],
                clock[SINK],
                clock[PREFETCH]
            ],
            [1.0, 0.5, 4.0, 0.25, 0.125]
        );
        clock.insert(ps_client::SEAL_SECONDS.into(), 0.75);
        clock.insert(ps_client::FOLD_SECONDS.into(), 0.5);
        let got: Vec<(&str, f64)> = summary_figures(&clock, 2).collect();
        assert_eq!(
            got,
            vec![
                (READ, 0.5),
                (LOAD, 0.25),
                (STEP, 2.0),
                (SINK, 0.125),
                (PREFETCH, 0.0625),
                (ps_client::SEAL_SECONDS, 0.375),
                (ps_client::FOLD_SECONDS, 0.25)
            ]
        );
        assert_eq!(summary_figures(&BTreeMap::new(), 2).count(), 0);
    }

    #[test]
    fn time_outside_blocking_is_never_negative() {
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let left = unblocked(started, 0.005);
        assert!(left >= 0.015, "{left}");
        assert_eq!(unblocked(started, 100.0), 0.0);
        let mut total = 0.0;
        assert_eq!(timed(&mut total, || 7), 7);
        assert!(total >= 0.0);
    }
}
