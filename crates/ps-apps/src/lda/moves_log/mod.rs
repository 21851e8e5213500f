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
//! The file (little-endian): `PSLDAMV2`, a `u64` fingerprint of the worker's job (seed,
//! worker, topics, documents, tokens), then one record per clock from 1 on: `u64` clock,
//! `u64` moves, `u64` bytes of the body, the body (the moves' tokens as gaps or a bitmap, then
//! their topics in 1, 2 or 4 bytes: [`body`]), and a `u64` check of the clock and moves. A record
//! cut short (the process died while writing it) or failing its check ends the log; the file is
//! cut back to the records before it. Records go to the kernel with one `write` before the
//! push, so they survive the process's death; a machine that loses power may lose the last
//! ones (and the replay is then inexact for those clocks).

use super::{LdaDelta, LdaHyper, LdaWorkerState};
use crate::error::AppError;
use crate::seed::mix64;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod body;

const MAGIC: &[u8; 8] = b"PSLDAMV2";
const HEADER: u64 = 16;
/// A record's clock, count and body length before its body.
const HEAD: u64 = 24;
/// A record's bytes besides its body: its head and check.
const FRAME: u64 = HEAD + 8;

/// One move: a token and its new topic.
pub type Move = (u32, u32);

/// The log of one worker (see the module docs).
pub struct MovesLog {
    file: File,
    path: PathBuf,
    /// Where the body of each record of an earlier life of this worker not replayed yet
    /// starts, its length and its moves, by clock: read again from the file when replayed, so
    /// a long log is never all in memory.
    logged: BTreeMap<u64, (u64, usize, usize)>,
    /// The clock the next record must be of.
    next: u64,
    /// The worker's tokens and topics (what the bodies are coded for).
    tokens: u32,
    topics: u32,
}

/// The fingerprint a worker's log must carry: its run of the job (`job`, the run's nonce, so
/// that no other run's log is ever replayed), seed, worker, hyper-parameters, documents and
/// tokens.
pub fn fingerprint(
    job: u64,
    seed: u64,
    worker: u32,
    hyper: &LdaHyper,
    shape: (usize, usize),
) -> u64 {
    let words = [
        job,
        u64::from(worker),
        u64::from(hyper.topics),
        hyper.alpha.to_bits(),
        hyper.beta.to_bits(),
        shape.0 as u64,
        shape.1 as u64,
    ];
    (words.iter()).fold(mix64(seed ^ 0x4c44_415f_4d4f_5645), |h, &x| mix64(h ^ x))
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

fn u64_at(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

impl MovesLog {
    /// Opens (or creates) the log at `path` for a worker with `tokens` tokens and `topics`
    /// topics whose run of the job has `fingerprint`: the records an earlier life of the worker
    /// left are indexed for [`MovesLog::take`] (checked as they are read, one at a time), and a
    /// torn last record is cut off. A log of another run, or a damaged record with others after
    /// it (clocks that may have been pushed), is an error.
    pub fn open(
        path: &Path,
        fingerprint: u64,
        tokens: u32,
        topics: u32,
    ) -> Result<MovesLog, AppError> {
        let io = |e: std::io::Error| bad(path, e.to_string());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut log = MovesLog {
            file,
            path: path.to_path_buf(),
            logged: BTreeMap::new(),
            next: 1,
            tokens,
            topics,
        };
        if len < HEADER {
            // New, or torn before its header was whole.
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&fingerprint.to_le_bytes());
            log.file.set_len(0).map_err(io)?;
            log.file.seek(SeekFrom::Start(0)).map_err(io)?;
            log.file.write_all(&header).map_err(io)?;
            log.file.sync_data().map_err(io)?;
            return Ok(log);
        }
        // A second handle on the file (sharing its offset, set to the end afterwards).
        let mut r = BufReader::new(log.file.try_clone().map_err(io)?);
        let mut header = [0u8; HEADER as usize];
        r.read_exact(&mut header).map_err(io)?;
        if &header[..8] != MAGIC || u64_at(&header[8..]) != fingerprint {
            return Err(bad(
                path,
                "it belongs to another run of the job or another worker".into(),
            ));
        }
        let good = log.index(&mut r, len)?;
        drop(r);
        log.file.set_len(good).map_err(io)?;
        log.file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(log)
    }

    /// Indexes the whole, valid, consecutive records after the header (`r` there, the file
    /// `len` long); returns where they end.
    fn index(&mut self, r: &mut impl Read, len: u64) -> Result<u64, AppError> {
        let mut at = HEADER;
        let (mut bytes, mut moves) = (Vec::new(), Vec::new());
        loop {
            let mut head = [0u8; HEAD as usize];
            if len - at < FRAME || r.read_exact(&mut head).is_err() {
                return Ok(at);
            }
            let (clock, n, b) = (
                u64_at(&head[..8]),
                u64_at(&head[8..16]),
                u64_at(&head[16..]),
            );
            let end = (b.checked_add(at + FRAME)).filter(|&end| end <= len);
            let Some(end) = end else {
                // Cut short: the last record, torn as its life ended.
                return Ok(at);
            };
            bytes.resize(b as usize + 8, 0);
            let valid = r.read_exact(&mut bytes).is_ok()
                && clock == self.next
                && usize::try_from(n)
                    .is_ok_and(|n| self.decode(&bytes[..b as usize], n, &mut moves).is_ok())
                && u64_at(&bytes[b as usize..]) == check(clock, &moves);
            if !valid {
                if end < len {
                    return Err(bad(
                        &self.path,
                        format!(
                            "the record at byte {at} is damaged and later ones follow it \
                             (clocks that may have been pushed cannot be replayed)"
                        ),
                    ));
                }
                return Ok(at);
            }
            self.logged
                .insert(clock, (at + HEAD, b as usize, n as usize));
            self.next += 1;
            at = end;
        }
    }

    fn decode(&self, body: &[u8], n: usize, moves: &mut Vec<Move>) -> Result<(), String> {
        body::decode(body, n, self.tokens, self.topics, moves)
    }

    /// The moves an earlier life of the worker logged for `clock`, if it did.
    pub fn take(&mut self, clock: u64) -> Result<Option<Vec<Move>>, AppError> {
        let Some((at, b, n)) = self.logged.remove(&clock) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; b];
        (self.file.read_exact_at(&mut bytes, at)).map_err(|e| bad(&self.path, e.to_string()))?;
        let mut moves = Vec::new();
        let bad_body = |e: String| bad(&self.path, format!("clock {clock}: {e}"));
        self.decode(&bytes, n, &mut moves).map_err(bad_body)?;
        Ok(Some(moves))
    }

    /// Appends `clock`'s moves, unless they are logged already (a replayed clock): one write,
    /// then synced to the disk.
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
        let body = body::encode(moves, self.tokens, self.topics)
            .map_err(|e| bad(&self.path, format!("clock {clock}: {e}")))?;
        let mut record = Vec::with_capacity(FRAME as usize + body.len());
        record.extend_from_slice(&clock.to_le_bytes());
        record.extend_from_slice(&(moves.len() as u64).to_le_bytes());
        record.extend_from_slice(&(body.len() as u64).to_le_bytes());
        record.extend_from_slice(&body);
        record.extend_from_slice(&check(clock, moves).to_le_bytes());
        let io = |e: std::io::Error| bad(&self.path, e.to_string());
        self.file.write_all(&record).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        tracing::debug!(
            clock,
            moves = moves.len(),
            bytes = record.len(),
            "LDA moves logged"
        );
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
    use crate::lda::{CpuLda, LdaCompute, ParallelSparseLda, SparseLda, SweepKey, WordMajorLda};

    const HYPER: LdaHyper = LdaHyper {
        topics: 8,
        alpha: 0.1,
        beta: 0.01,
    };

    fn print(job: u64, worker: u32) -> u64 {
        fingerprint(job, 7, worker, &HYPER, (3, 100))
    }

    fn open(path: &Path, fp: u64) -> MovesLog {
        MovesLog::open(path, fp, 100, 8).unwrap()
    }

    fn take(log: &mut MovesLog, clock: u64) -> Option<Vec<Move>> {
        log.take(clock).unwrap()
    }

    #[test]
    fn a_new_life_finds_what_the_last_one_logged_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        let fp = print(1, 1);
        let mut log = open(&path, fp);
        assert_eq!(take(&mut log, 1), None);
        log.append(1, &[(3, 2), (99, 7)]).unwrap();
        log.append(2, &[]).unwrap();
        log.append(3, &[(0, 0)]).unwrap();
        // A clock out of turn is refused.
        assert!(log.append(5, &[]).is_err());
        drop(log);
        let mut again = open(&path, fp);
        assert_eq!(take(&mut again, 1), Some(vec![(3, 2), (99, 7)]));
        assert_eq!(take(&mut again, 2), Some(vec![]));
        assert_eq!(take(&mut again, 2), None, "taken once");
        // Replayed clocks are not written twice; the next new one follows them.
        again.append(1, &[(5, 5)]).unwrap();
        again.append(4, &[(1, 1)]).unwrap();
        drop(again);
        let mut third = open(&path, fp);
        assert_eq!(take(&mut third, 1), Some(vec![(3, 2), (99, 7)]));
        assert_eq!(take(&mut third, 3), Some(vec![(0, 0)]));
        assert_eq!(take(&mut third, 4), Some(vec![(1, 1)]));
        assert_eq!(take(&mut third, 5), None);
        // Every token moving: the bitmap layout.
        let many: Vec<Move> = (0..100u32).map(|t| (t, t % 8)).collect();
        third.append(5, &many).unwrap();
        drop(third);
        assert_eq!(take(&mut open(&path, fp), 5), Some(many));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_a_damaged_one_before_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        let fp = print(1, 1);
        let mut log = open(&path, fp);
        log.append(1, &[(1, 1)]).unwrap();
        log.append(2, &[(2, 2), (3, 3)]).unwrap();
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        // The first record's body length is in its head.
        let first_body = u64_at(&whole[(HEADER + 16) as usize..(HEADER + HEAD) as usize]);
        let first_end = (HEADER + FRAME + first_body) as usize;
        for cut in [whole.len() - 1, whole.len() - 9, first_end + 5] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut log = open(&path, fp);
            assert_eq!(take(&mut log, 1), Some(vec![(1, 1)]), "cut at {cut}");
            assert_eq!(take(&mut log, 2), None, "cut at {cut}");
            // Cut back, so the next record follows the last whole one.
            log.append(2, &[(4, 4)]).unwrap();
            drop(log);
            assert_eq!(take(&mut open(&path, fp), 2), Some(vec![(4, 4)]));
        }
        // The last record damaged (a flipped bit of a token, a topic past K): cut off like a
        // torn one.
        let mut flipped = whole.clone();
        flipped[first_end + HEAD as usize + 1] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(take(&mut open(&path, fp), 2), None);
        let mut log = open(&path, fp);
        assert!(log.append(2, &[(5, 9)]).is_err(), "topic 9 of 8");
        assert!(log.append(2, &[(5, 1), (5, 2)]).is_err(), "a token twice");
        drop(log);
        let mut wider = MovesLog::open(&path, fp, 100, 10).unwrap();
        wider.append(2, &[(5, 9)]).unwrap();
        drop(wider);
        assert_eq!(take(&mut open(&path, fp), 2), None, "topic 9 of 8");
        // The first damaged with the second after it: an error, not a silent cut.
        let mut flipped = whole.clone();
        flipped[(HEADER + 16) as usize] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
        assert!(err.contains("damaged and later ones follow"), "{err}");
        // A header cut short is a new log.
        std::fs::write(&path, &whole[..10]).unwrap();
        assert_eq!(take(&mut open(&path, fp), 1), None);
    }

    #[test]
    fn a_log_of_another_run_or_worker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.moves");
        open(&path, print(1, 1)).append(1, &[]).unwrap();
        let other_alpha = LdaHyper {
            alpha: 0.2,
            ..HYPER
        };
        for fp in [
            print(2, 1),
            print(1, 2),
            fingerprint(1, 7, 1, &other_alpha, (3, 100)),
        ] {
            let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
            assert!(
                err.contains("another run of the job or another worker"),
                "{err}"
            );
        }
        std::fs::write(&path, b"not a log at all, but long").unwrap();
        assert!(MovesLog::open(&path, print(1, 1), 100, 8).is_err());
    }

    /// A replay of a sweep's moves leaves the state the sweep left and returns its delta, for
    /// every host engine.
    #[test]
    fn replayed_moves_are_the_sweep_again() {
        let hyper = LdaHyper { topics: 6, ..HYPER };
        let docs: Vec<Vec<u32>> = (0..40u32)
            .map(|d| (0..(d % 9)).map(|i| (d * 7 + i * 3) % 40).collect())
            .collect();
        let engines: Vec<Box<dyn LdaCompute>> = vec![
            Box::new(CpuLda::new()),
            Box::new(SparseLda::new()),
            Box::new(ParallelSparseLda::new(3)),
            Box::new(WordMajorLda::new(2)),
        ];
        for mut engine in engines {
            let (mut state, initial) = LdaWorkerState::init(&docs, 40, &hyper, 3, 1).unwrap();
            // The initial counts, as clock 0 pushes them, for a lone worker.
            let k = 6;
            let mut rows = vec![0.0f32; state.words.len() * k];
            let mut totals = vec![0.0f32; k];
            for &(w, t, c) in &initial.entries {
                let r = state.words.binary_search(&w).unwrap();
                rows[r * k + t as usize] += c as f32;
                totals[t as usize] += c as f32;
            }
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
                assert_eq!(replayed, swept, "{} clock {clock}", engine.name());
                assert_eq!(again.z, state.z);
                assert_eq!(again.doc_topic, state.doc_topic);
            }
        }
    }
}
