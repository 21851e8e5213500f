//! A worker's log of its sweeps' moves, so that it can die and rejoin the job
//! (`--on-worker-failure wait`) without corrupting the counts.
//!
//! A rejoining worker replays its clocks from the first while the shards drop the pushes they
//! already applied. For LDA a replay cannot sweep again: the word-topic table counts the
//! assignments the worker had, and a sweep against a later model draws others, so the worker's
//! next moves would take counts from topics that never held them. Instead, each clock's moves
//! (the tokens whose topic changed, and the new topic) are appended here *before* the clock's
//! push leaves, and a replay applies the logged moves: the same assignments, the same
//! document-topic counts, the same delta (which shards that lack it then apply). A clock with
//! no record was never pushed, so sweeping it afresh is right.
//!
//! The file (little-endian): `PSLDAMV1`, a `u64` fingerprint of the worker's job (seed,
//! worker, topics, documents, tokens), then one record per clock from 1 on: `u64` clock,
//! `u64` moves, that many `(u32 token, u32 topic)`, and a `u64` check of the record. A record
//! cut short (the process died while writing it) or failing its check ends the log; the file is
//! cut back to the records before it. Records go to the kernel with one `write` before the
//! push, so they survive the process's death; a machine that loses power may lose the last
//! ones (and the replay is then inexact for those clocks).

use super::{LdaDelta, LdaWorkerState};
use crate::error::AppError;
use crate::seed::mix64;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PSLDAMV1";
const HEADER: usize = 16;

/// One move: a token and its new topic.
pub type Move = (u32, u32);

/// The log of one worker (see the module docs).
pub struct MovesLog {
    file: File,
    path: PathBuf,
    /// Records of an earlier life of this worker not replayed yet, by clock.
    logged: BTreeMap<u64, Vec<Move>>,
    /// The clock the next record must be of.
    next: u64,
    tokens: u32,
    topics: u32,
}

/// The fingerprint of a worker's job, which its log must carry.
pub fn fingerprint(seed: u64, worker: u32, topics: u32, docs: usize, tokens: usize) -> u64 {
    [
        u64::from(worker),
        u64::from(topics),
        docs as u64,
        tokens as u64,
    ]
    .iter()
    .fold(mix64(seed ^ 0x4c44_415f_4d4f_5645), |h, &x| mix64(h ^ x))
}

/// The check of a record.
fn check(clock: u64, moves: &[Move]) -> u64 {
    let mut h = mix64(clock ^ 0x6d6f_7665_7320_6c67);
    for &(t, k) in moves {
        h = mix64(h ^ (u64::from(t) << 32 | u64::from(k)));
    }
    h
}

fn bad(path: &Path, what: String) -> AppError {
    AppError::Settings(format!("LDA moves log {}: {what}", path.display()))
}

impl MovesLog {
    /// Opens (or creates) the log at `path` for a worker with `tokens` tokens and `topics`
    /// topics whose job has `fingerprint`: the records a earlier life of the worker left are
    /// kept for [`MovesLog::take`], a torn last record is cut off. A log of another job is an
    /// error.
    pub fn open(
        path: &Path,
        fingerprint: u64,
        tokens: u32,
        topics: u32,
    ) -> Result<MovesLog, AppError> {
        let io = |e: std::io::Error| bad(path, e.to_string());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut log = MovesLog {
            file,
            path: path.to_path_buf(),
            logged: BTreeMap::new(),
            next: 1,
            tokens,
            topics,
        };
        if bytes.len() < HEADER {
            // New, or torn before its header was whole.
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&fingerprint.to_le_bytes());
            log.file.set_len(0).map_err(io)?;
            log.file.seek(SeekFrom::Start(0)).map_err(io)?;
            log.file.write_all(&header).map_err(io)?;
            return Ok(log);
        }
        if &bytes[..8] != MAGIC || bytes[8..HEADER] != fingerprint.to_le_bytes() {
            return Err(bad(
                path,
                "it belongs to another job or worker; remove it or give another --state-dir".into(),
            ));
        }
        let good = log.read_records(&bytes[HEADER..]);
        log.file.set_len((HEADER + good) as u64).map_err(io)?;
        log.file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(log)
    }

    /// Reads whole, valid, consecutive records from `bytes` into `logged`; returns how many
    /// bytes they take.
    fn read_records(&mut self, bytes: &[u8]) -> usize {
        let word = |at: usize, n: usize| -> Option<u64> {
            let b = bytes.get(at..at + n)?;
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(b);
            Some(u64::from_le_bytes(w))
        };
        let mut at = 0;
        loop {
            let Some((clock, n)) = word(at, 8).zip(word(at + 8, 8)) else {
                return at;
            };
            let Some(end) = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(8))
                .and_then(|b| b.checked_add(at + 24))
            else {
                return at;
            };
            if clock != self.next || end > bytes.len() {
                return at;
            }
            let moves: Vec<Move> = bytes[at + 16..end - 8]
                .chunks_exact(8)
                .map(|c| {
                    let t = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    (t, u32::from_le_bytes([c[4], c[5], c[6], c[7]]))
                })
                .collect();
            let valid = moves
                .iter()
                .all(|&(t, k)| t < self.tokens && k < self.topics);
            if !valid || word(end - 8, 8) != Some(check(clock, &moves)) {
                return at;
            }
            self.logged.insert(clock, moves);
            self.next += 1;
            at = end;
        }
    }

    /// The moves an earlier life of the worker logged for `clock`, if it did.
    pub fn take(&mut self, clock: u64) -> Option<Vec<Move>> {
        self.logged.remove(&clock)
    }

    /// Appends `clock`'s moves, unless they are logged already (a replayed clock): one write.
    pub fn append(&mut self, clock: u64, moves: &[Move]) -> Result<(), AppError> {
        if clock < self.next {
            return Ok(());
        }
        if clock != self.next {
            return Err(bad(
                &self.path,
                format!("clock {clock} logged after clock {}", self.next - 1),
            ));
        }
        let mut record = Vec::with_capacity(24 + 8 * moves.len());
        record.extend_from_slice(&clock.to_le_bytes());
        record.extend_from_slice(&(moves.len() as u64).to_le_bytes());
        for &(t, k) in moves {
            record.extend_from_slice(&t.to_le_bytes());
            record.extend_from_slice(&k.to_le_bytes());
        }
        record.extend_from_slice(&check(clock, moves).to_le_bytes());
        (self.file.write_all(&record)).map_err(|e| bad(&self.path, e.to_string()))?;
        self.next += 1;
        Ok(())
    }
}

/// The moves from assignments `before` to `after` (as long): each token whose topic changed,
/// with its new topic.
pub fn moves_between(before: &[u32], after: &[u32]) -> Vec<Move> {
    (before.iter().zip(after).enumerate())
        .filter(|(_, (b, a))| b != a)
        .map(|(t, (_, &a))| (t as u32, a))
        .collect()
}

/// Applies logged `moves` to `state` (assignments and document-topic counts) and returns the
/// count delta they make, as a sweep that made them returns it. Moves must be of tokens and
/// topics of the state (the log checks them).
pub fn replay(state: &mut LdaWorkerState, moves: &[Move]) -> LdaDelta {
    let k = state.topics as usize;
    let mut changes: BTreeMap<(u32, u32), i32> = BTreeMap::new();
    let mut totals = vec![0i32; k];
    for &(t, new) in moves {
        let t = t as usize;
        let old = state.z[t];
        if old == new {
            continue;
        }
        // The document holding token t.
        let d = state.doc_offsets.partition_point(|&o| o <= t) - 1;
        state.doc_topic[d * k + old as usize] -= 1;
        state.doc_topic[d * k + new as usize] += 1;
        state.z[t] = new;
        let word = state.words[state.tokens[t] as usize];
        *changes.entry((word, old)).or_default() -= 1;
        *changes.entry((word, new)).or_default() += 1;
        totals[old as usize] -= 1;
        totals[new as usize] += 1;
    }
    LdaDelta {
        topics: state.topics,
        entries: (changes.into_iter())
            .filter(|&(_, c)| c != 0)
            .map(|((w, k), c)| (w, k, c))
            .collect(),
        totals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path, fp: u64) -> MovesLog {
        MovesLog::open(path, fp, 100, 8).unwrap()
    }

    #[test]
    fn a_new_life_finds_what_the_last_one_logged_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        let fp = fingerprint(7, 1, 8, 3, 100);
        let mut log = open(&path, fp);
        assert_eq!(log.take(1), None);
        log.append(1, &[(3, 2), (99, 7)]).unwrap();
        log.append(2, &[]).unwrap();
        log.append(3, &[(0, 0)]).unwrap();
        // A clock out of turn is refused.
        assert!(log.append(5, &[]).is_err());
        drop(log);
        let mut again = open(&path, fp);
        assert_eq!(again.take(1), Some(vec![(3, 2), (99, 7)]));
        assert_eq!(again.take(2), Some(vec![]));
        // Replayed clocks are not written twice; the next new one follows them.
        again.append(1, &[(5, 5)]).unwrap();
        again.append(4, &[(1, 1)]).unwrap();
        drop(again);
        let mut third = open(&path, fp);
        assert_eq!(third.take(1), Some(vec![(3, 2), (99, 7)]));
        assert_eq!(third.take(3), Some(vec![(0, 0)]));
        assert_eq!(third.take(4), Some(vec![(1, 1)]));
        assert_eq!(third.take(5), None);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_log_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        let fp = fingerprint(7, 1, 8, 3, 100);
        let mut log = open(&path, fp);
        log.append(1, &[(1, 1)]).unwrap();
        log.append(2, &[(2, 2), (3, 3)]).unwrap();
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        let first_end = HEADER + 24 + 8;
        for cut in [whole.len() - 1, whole.len() - 9, first_end + 5] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut log = open(&path, fp);
            assert_eq!(log.take(1), Some(vec![(1, 1)]), "cut at {cut}");
            assert_eq!(log.take(2), None, "cut at {cut}");
            // Cut back, so the next record follows the last whole one.
            log.append(2, &[(4, 4)]).unwrap();
            drop(log);
            assert_eq!(open(&path, fp).take(2), Some(vec![(4, 4)]));
        }
        // A flipped bit in a record's moves, or a topic past K.
        let mut flipped = whole.clone();
        flipped[first_end + 16] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(open(&path, fp).take(2), None);
        let mut log = MovesLog::open(&path, fp, 100, 8).unwrap();
        log.append(2, &[(5, 9)]).unwrap();
        drop(log);
        assert_eq!(open(&path, fp).take(2), None, "topic 9 of 8");
        // A header cut short is a new log.
        std::fs::write(&path, &whole[..10]).unwrap();
        assert_eq!(open(&path, fp).take(1), None);
    }

    #[test]
    fn a_log_of_another_job_or_worker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        open(&path, fingerprint(7, 1, 8, 3, 100))
            .append(1, &[])
            .unwrap();
        for fp in [fingerprint(8, 1, 8, 3, 100), fingerprint(7, 2, 8, 3, 100)] {
            let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
            assert!(err.contains("another job or worker"), "{err}");
        }
        std::fs::write(&path, b"not a log at all, but long").unwrap();
        let err = MovesLog::open(&path, fingerprint(7, 1, 8, 3, 100), 100, 8);
        assert!(err.is_err());
    }

    /// A replay of a sweep's moves leaves the state the sweep left and returns its delta.
    #[test]
    fn replayed_moves_are_the_sweep_again() {
        use crate::lda::{CpuLda, LdaCompute, LdaHyper, SweepKey};
        let hyper = LdaHyper {
            topics: 6,
            alpha: 0.1,
            beta: 0.01,
        };
        let docs: Vec<Vec<u32>> = (0..12u32)
            .map(|d| (0..5 + d % 7).map(|i| (d * 7 + i * 3) % 40).collect())
            .collect();
        let (mut state, initial) = LdaWorkerState::init(&docs, 40, &hyper, 3, 1).unwrap();
        // The initial counts, as every worker's clock 0 pushes them, for a lone worker.
        let k = 6;
        let mut rows = vec![0.0f32; state.words.len() * k];
        let mut totals = vec![0.0f32; k];
        for &(w, t, c) in &initial.entries {
            let r = state.words.binary_search(&w).unwrap();
            rows[r * k + t as usize] += c as f32;
            totals[t as usize] += c as f32;
        }
        let mut engine = CpuLda::new();
        for clock in 1..4 {
            let before = state.clone();
            let key = SweepKey {
                seed: 3,
                worker: 1,
                clock,
            };
            let swept = engine
                .sweep(&mut state, &mut rows, &mut totals, &hyper, key)
                .unwrap();
            let moves = moves_between(&before.z, &state.z);
            assert!(!moves.is_empty());
            let mut again = before;
            let replayed = replay(&mut again, &moves);
            assert_eq!(replayed, swept, "clock {clock}");
            assert_eq!(
                (again.z, again.doc_topic),
                (state.z.clone(), state.doc_topic.clone())
            );
        }
    }
}
