//! The worker's clock batches that no shard checkpoint covers yet, kept so that a shard that
//! dies and restores an older checkpoint gets them again. Pure bookkeeping: no I/O.
//!
//! Each batch is kept per shard in its listed key form (a restarted shard knows no cached key
//! list). A shard's acks say how many of this worker's clocks its kept checkpoints cover
//! (`ps_proto::Frame::ack_covered`); batches below that are dropped. After a restart the
//! shard says how many it holds; every clock from there to the last one ended must still be
//! here, or updates would be lost, and the job fails saying so.

use ps_proto::{Frame, KeyForm};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One shard's batch of one clock.
pub type Batch = Arc<Vec<Frame>>;

#[derive(Debug, Default)]
pub struct Retained {
    enabled: bool,
    shards: Vec<BTreeMap<u64, Batch>>,
    covered: Vec<u64>,
    /// Clocks this worker has ended (and handed to the push tasks).
    ended: u64,
}

/// `frames` with every key list spelled out (a cached form refers to a connection's cache).
pub fn listed(frames: &[Frame]) -> Vec<Frame> {
    frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if matches!(f.key_form, KeyForm::Assign(_) | KeyForm::Cached { .. }) {
                f.set_key_form(KeyForm::List);
                f.compact_keys();
            }
            f
        })
        .collect()
}

impl Retained {
    /// Keeps batches only when `enabled` (the job's shards checkpoint).
    pub fn new(shards: usize, enabled: bool) -> Retained {
        Retained {
            enabled,
            shards: vec![BTreeMap::new(); shards],
            covered: vec![0; shards],
            ended: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Keeps the batches of `clock`, one per shard (each already in listed form).
    pub fn keep(&mut self, clock: u64, per_shard: &[Batch]) {
        self.ended = self.ended.max(clock + 1);
        if !self.enabled {
            return;
        }
        for (s, b) in per_shard.iter().enumerate() {
            if clock >= self.covered[s] {
                self.shards[s].insert(clock, b.clone());
            }
        }
    }

    /// Shard `s`'s checkpoints cover this worker's clocks below `covered`: forget them.
    pub fn covered(&mut self, s: usize, covered: u64) {
        if covered > self.covered[s] {
            self.covered[s] = covered;
            self.shards[s] = self.shards[s].split_off(&covered);
        }
    }

    /// This worker's clocks that every shard holds for good, given each shard's `applied`
    /// count: those its checkpoints cover where the shards checkpoint (a restarted shard gets
    /// the rest again), else those every shard applied (without checkpoints a dead shard ends
    /// the job, so what a live one applied is never lost).
    pub fn durable(&self, applied: &[u64]) -> u64 {
        let held = if self.enabled { &self.covered } else { applied };
        held.iter().copied().min().unwrap_or(0)
    }

    /// The batches to resend to shard `s`, restored with `holds` of this worker's clocks:
    /// every clock from `holds` to the last one ended, in order. An error if one is missing.
    pub fn resend(&self, s: usize, holds: u64) -> Result<Vec<(u64, Batch)>, String> {
        let kept = &self.shards[s];
        let out: Vec<(u64, Batch)> = kept.range(holds..).map(|(c, b)| (*c, b.clone())).collect();
        let want = self.ended.saturating_sub(holds);
        if out.len() as u64 != want {
            return Err(format!(
                "shard {s} restored {holds} of this worker's clocks, but this worker kept only clocks {:?} of the {} it ended: updates would be lost",
                kept.keys().next().map(|f| *f..self.ended),
                self.ended
            ));
        }
        Ok(out)
    }

    /// Batches kept over all shards.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::FrameBuilder;

    fn batch(clock: u64) -> Batch {
        Arc::new(vec![FrameBuilder::clock(0, clock, 0)])
    }

    #[test]
    fn durable_clocks_are_the_least_covered_or_else_the_least_applied() {
        let mut r = Retained::new(2, true);
        assert_eq!(r.durable(&[5, 7]), 0, "no checkpoint covers anything yet");
        r.covered(0, 4);
        assert_eq!(r.durable(&[5, 7]), 0);
        r.covered(1, 3);
        assert_eq!(r.durable(&[5, 7]), 3);
        let r = Retained::new(2, false);
        assert_eq!(r.durable(&[5, 7]), 5);
        assert_eq!(Retained::new(0, false).durable(&[]), 0);
    }

    #[test]
    fn keeps_until_covered_and_resends_exactly_what_a_restored_shard_lacks() {
        let mut r = Retained::new(2, true);
        for c in 0..10 {
            r.keep(c, &[batch(c), batch(c)]);
        }
        assert_eq!(r.len(), 20);
        r.covered(0, 6);
        r.covered(0, 4); // never goes back
        assert_eq!(r.len(), 14);
        let again = r.resend(0, 7).unwrap();
        assert_eq!(
            again.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(r.resend(1, 0).unwrap().len(), 10);
        assert!(r.resend(0, 10).unwrap().is_empty(), "holds everything");
        let lost = r.resend(0, 3).unwrap_err();
        assert!(lost.contains("would be lost"), "{lost}");
        assert!(Retained::new(1, false).resend(0, 0).is_ok());
        let mut off = Retained::new(1, false);
        off.keep(0, &[batch(0)]);
        assert_eq!(off.len(), 0);
        assert!(
            off.resend(0, 0).is_err(),
            "kept nothing: a restart would lose clock 0"
        );
    }

    #[test]
    fn listed_frames_spell_out_cached_keys() {
        let keys: Vec<u64> = vec![3, 9, 12];
        let mut f = FrameBuilder::push(1, 0, 4, 1, &keys, &[1.0, 2.0, 3.0]);
        f.set_key_form(KeyForm::Cached { id: 2, hash: 7 });
        let l = listed(&[f]);
        assert_eq!(l[0].key_form, KeyForm::List);
        assert_eq!(l[0].keys, keys);
        assert_eq!(l[0].header.key_section_len(), 8 * 3);
    }
}
