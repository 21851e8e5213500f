//! What a job reports: per-clock summaries over every worker, the job's result, and the bridge
//! between an application's typed figures and the numeric maps that travel in
//! [`ClockReport::sums`](crate::ClockReport) and [`Done`](crate::Done).
//!
//! Applications keep their figures as plain structs (`train_se`, `train_n`, ...). On the wire they
//! are flat maps of numbers, because the coordinator adds them up over workers without knowing
//! the application; [`to_sums`] and [`from_sums`] convert, so an app never spells a key twice.

use crate::error::ProtoError;
use crate::{ClockReport, Done};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;

/// Per-clock figures over all workers: times are means per worker, bytes are totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClockSummary {
    pub clock: u64,
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
    pub overlap_s: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_logical: u64,
    pub push_bytes: u64,
    pub push_bytes_logical: u64,
    /// App sums added over workers.
    pub sums: BTreeMap<String, f64>,
}

impl ClockSummary {
    /// The summary of one clock from every worker's report of it.
    pub fn from_reports(reports: &[ClockReport], workers: u32) -> ClockSummary {
        let w = workers.max(1) as f64;
        let mut s = ClockSummary {
            clock: reports.first().map(|r| r.clock).unwrap_or(0),
            ..Default::default()
        };
        for r in reports {
            s.compute_s += r.compute_s / w;
            s.comm_s += r.comm_s / w;
            s.blocked_s += r.blocked_s / w;
            s.overlap_s += r.overlap_s / w;
            s.bytes_sent += r.bytes_sent;
            s.bytes_received += r.bytes_received;
            s.bytes_logical += r.bytes_logical;
            s.push_bytes += r.push_bytes;
            s.push_bytes_logical += r.push_bytes_logical;
            add_sums(&mut s.sums, &r.sums);
        }
        s
    }
}

/// Clock summaries a [`JobResult`] keeps one by one; later clocks only add to its totals, so
/// the coordinator's memory stays flat however long the job runs.
pub const KEPT_CLOCKS: usize = 256;

/// What a finished job produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobResult {
    /// The first [`KEPT_CLOCKS`] clocks' summaries, in clock order.
    pub clocks: Vec<ClockSummary>,
    /// Every clock's summary added up: seconds, bytes and app sums (see [`JobResult::add_clock`]).
    pub totals: ClockSummary,
    /// Clocks summarised.
    pub clock_count: u64,
    /// Final app sums over workers.
    pub sums: BTreeMap<String, f64>,
    /// Facts the workers reported (the lowest worker id wins on a clash).
    pub facts: BTreeMap<String, serde_json::Value>,
    pub wall_s: f64,
    /// Shards that died and came back from their checkpoints.
    pub restarts: u32,
    /// Workers that died and were evicted (ids).
    pub evicted_workers: Vec<u32>,
    /// Workers that died and registered again (under `--on-worker-failure wait`).
    pub rejoins: u32,
}

impl JobResult {
    /// Adds a clock's summary: to the totals, and kept whole while fewer than [`KEPT_CLOCKS`]
    /// are.
    pub fn add_clock(&mut self, s: ClockSummary) {
        let t = &mut self.totals;
        t.clock = s.clock;
        t.compute_s += s.compute_s;
        t.comm_s += s.comm_s;
        t.blocked_s += s.blocked_s;
        t.overlap_s += s.overlap_s;
        t.bytes_sent += s.bytes_sent;
        t.bytes_received += s.bytes_received;
        t.bytes_logical += s.bytes_logical;
        t.push_bytes += s.push_bytes;
        t.push_bytes_logical += s.push_bytes_logical;
        add_sums(&mut t.sums, &s.sums);
        self.clock_count += 1;
        if self.clocks.len() < KEPT_CLOCKS {
            self.clocks.push(s);
        }
    }

    /// Adds the final figures of every worker, in worker-id order.
    pub fn add_done(&mut self, mut done: Vec<Done>) {
        done.sort_by_key(|d| d.worker);
        for d in done {
            add_sums(&mut self.sums, &d.sums);
            for (k, v) in d.facts {
                self.facts.entry(k).or_insert(v);
            }
        }
    }
}

fn add_sums(into: &mut BTreeMap<String, f64>, from: &BTreeMap<String, f64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// A figures struct as the numeric map that travels: every field must serialise to a number
/// (a bool counts as 0 or 1). Nested or text fields are an error naming the field.
pub fn to_sums<T: Serialize>(figures: &T) -> Result<BTreeMap<String, f64>, ProtoError> {
    let mut out = BTreeMap::new();
    for (k, v) in to_object(figures)? {
        let x = match &v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        };
        let x =
            x.ok_or_else(|| ProtoError::Malformed(format!("figure {k:?} is not a number: {v}")))?;
        out.insert(k, x);
    }
    Ok(out)
}

/// A figures struct back from a (summed) map. Keys the map lacks take the struct's defaults
/// (give it `#[serde(default)]`).
pub fn from_sums<T: DeserializeOwned>(sums: &BTreeMap<String, f64>) -> Result<T, ProtoError> {
    let map: serde_json::Map<String, serde_json::Value> =
        sums.iter().map(|(k, v)| (k.clone(), number(*v))).collect();
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ProtoError::Malformed(format!("figures: {e}")))
}

/// A facts struct as the JSON map that travels in [`Done::facts`].
pub fn to_facts<T: Serialize>(
    facts: &T,
) -> Result<BTreeMap<String, serde_json::Value>, ProtoError> {
    Ok(to_object(facts)?.into_iter().collect())
}

/// A facts struct back from the map the coordinator gathered.
pub fn from_facts<T: DeserializeOwned>(
    facts: &BTreeMap<String, serde_json::Value>,
) -> Result<T, ProtoError> {
    let map: serde_json::Map<String, serde_json::Value> =
        facts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ProtoError::Malformed(format!("facts: {e}")))
}

fn to_object<T: Serialize>(
    x: &T,
) -> Result<serde_json::Map<String, serde_json::Value>, ProtoError> {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(serde_json::Value::Null) => Ok(Default::default()),
        Ok(other) => Err(ProtoError::Malformed(format!(
            "figures must be a struct of named fields, got {other}"
        ))),
        Err(e) => Err(ProtoError::Malformed(format!("figures: {e}"))),
    }
}

/// A JSON number (an integer when `x` is one, so integer fields read back); NaN and
/// infinities (which JSON lacks) become null.
fn number(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        return serde_json::Value::from(x as i64);
    }
    serde_json::Number::from_f64(x)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Fig {
        se: f64,
        n: u64,
    }

    #[test]
    fn figures_round_trip_and_add_up() {
        let a = to_sums(&Fig { se: 1.5, n: 3 }).unwrap();
        let b = to_sums(&Fig { se: 0.5, n: 1 }).unwrap();
        let mut sum = a.clone();
        add_sums(&mut sum, &b);
        assert_eq!(from_sums::<Fig>(&sum).unwrap(), Fig { se: 2.0, n: 4 });
        // A missing key takes the default.
        assert_eq!(from_sums::<Fig>(&BTreeMap::new()).unwrap(), Fig::default());
    }

    #[test]
    fn text_figures_are_refused_by_name() {
        #[derive(Serialize)]
        struct Bad {
            name: String,
        }
        let e = to_sums(&Bad { name: "x".into() }).unwrap_err();
        assert!(e.to_string().contains("\"name\""), "{e}");
    }

    #[test]
    fn clock_summary_means_times_and_adds_bytes() {
        let r = |w: u32, c: f64| ClockReport {
            worker: w,
            clock: 4,
            compute_s: c,
            bytes_sent: 10,
            sums: BTreeMap::from([("n".to_string(), 1.0)]),
            ..Default::default()
        };
        let s = ClockSummary::from_reports(&[r(0, 1.0), r(1, 3.0)], 2);
        assert_eq!((s.clock, s.compute_s, s.bytes_sent), (4, 2.0, 20));
        assert_eq!(s.sums["n"], 2.0);
    }

    #[test]
    fn a_long_job_keeps_its_first_clocks_and_the_totals_of_all() {
        let mut r = JobResult::default();
        for c in 0..(KEPT_CLOCKS as u64 + 50) {
            r.add_clock(ClockSummary {
                clock: c,
                compute_s: 0.5,
                bytes_sent: 3,
                sums: BTreeMap::from([("n".to_string(), 2.0)]),
                ..Default::default()
            });
        }
        assert_eq!(r.clocks.len(), KEPT_CLOCKS);
        assert_eq!(r.clock_count, KEPT_CLOCKS as u64 + 50);
        assert_eq!(r.totals.compute_s, 0.5 * r.clock_count as f64);
        assert_eq!(r.totals.bytes_sent, 3 * r.clock_count);
        assert_eq!(r.totals.sums["n"], 2.0 * r.clock_count as f64);
        assert_eq!(r.totals.clock, r.clock_count - 1);
    }

    #[test]
    fn job_result_keeps_the_lowest_workers_facts() {
        let d = |w: u32, fact: &str| Done {
            worker: w,
            sums: BTreeMap::from([("x".to_string(), 1.0)]),
            facts: BTreeMap::from([("hash".to_string(), fact.into())]),
        };
        let mut r = JobResult::default();
        r.add_done(vec![d(1, "b"), d(0, "a")]);
        assert_eq!(r.sums["x"], 2.0);
        assert_eq!(r.facts["hash"], "a");
    }
}
