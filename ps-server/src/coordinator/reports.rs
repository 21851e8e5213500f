//! The coordinator's book of clock reports: each clock is summarised once every live worker
//! has reported it, in clock order. Pure bookkeeping: no I/O.
//!
//! A worker reports a clock when every shard has acknowledged its push, from that push's own
//! task, so under staleness (several pushes in flight) its report of clock 1 may arrive before
//! that of clock 0. A clock complete before an earlier one waits for it: summarising it first
//! would mark the earlier clock done and drop its reports when they came, losing its figures
//! from the job's totals and its row from the per-clock log.

use ps_proto::{ClockReport, ClockSummary};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct ReportBook {
    /// Reports of clocks not summarised yet, by clock and worker (a rejoined worker reports
    /// its clocks again: the latest report of a worker wins).
    pending: BTreeMap<u64, BTreeMap<u32, ClockReport>>,
    /// Clocks below this are summarised; later reports of them are ignored.
    summarised: u64,
}

impl ReportBook {
    /// Files a worker's report of a clock not summarised yet.
    pub fn add(&mut self, r: ClockReport) {
        if r.clock >= self.summarised {
            self.pending.entry(r.clock).or_default().insert(r.worker, r);
        }
    }

    /// Summaries of the clocks now complete, in order: the next clock once at least `live`
    /// workers (at least one) have reported it, then the one after it, and so on.
    pub fn complete(&mut self, live: usize) -> Vec<ClockSummary> {
        let mut done = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.summarised || entry.get().len() < live.max(1) {
                break;
            }
            let (clock, reports) = entry.remove_entry();
            self.summarised = clock + 1;
            let reports: Vec<ClockReport> = reports.into_values().collect();
            done.push(ClockSummary::from_reports(&reports, reports.len() as u32));
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(worker: u32, clock: u64, compute_s: f64) -> ClockReport {
        ClockReport {
            worker,
            clock,
            compute_s,
            ..Default::default()
        }
    }

    #[test]
    fn a_clock_complete_before_an_earlier_one_waits_for_it() {
        let mut book = ReportBook::default();
        book.add(report(0, 1, 1.0));
        assert!(book.complete(1).is_empty(), "clock 0 not reported yet");
        book.add(report(0, 2, 2.0));
        book.add(report(0, 0, 0.5));
        let s = book.complete(1);
        assert_eq!(s.iter().map(|s| s.clock).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(s[0].compute_s, 0.5, "clock 0's own figures");
        // A late copy of a summarised clock is ignored.
        book.add(report(0, 1, 9.0));
        assert!(book.complete(1).is_empty());
    }

    #[test]
    fn a_clock_waits_for_every_live_worker_and_the_latest_report_wins() {
        let mut book = ReportBook::default();
        book.add(report(0, 0, 1.0));
        book.add(report(1, 1, 1.0));
        book.add(report(0, 1, 1.0));
        assert!(
            book.complete(2).is_empty(),
            "worker 1 has not reported clock 0"
        );
        book.add(report(1, 0, 2.0));
        book.add(report(1, 0, 3.0)); // rejoined: reports clock 0 again
        let s = book.complete(2);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].compute_s, (1.0 + 3.0) / 2.0);
        // With a worker evicted, one report completes a clock.
        book.add(report(0, 2, 1.0));
        assert!(book.complete(2).is_empty());
        assert_eq!(book.complete(1).len(), 1);
    }
}
