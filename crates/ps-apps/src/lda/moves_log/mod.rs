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
//! The log does not grow without end: once every shard holds a clock's push for good
//! ([`MovesLog::durable`]: its checkpoints cover it, or without checkpoints it applied it),
//! a replay need not push it again, only reach the state after it. So the assignments after
//! such a clock are written as a snapshot beside the log ([`snapshot`]) and the records up to
//! it are dropped, whenever they take more room than the snapshot. A returning worker starts
//! from the snapshot, pushes nothing new for the clocks it covers ([`Logged::Durable`]: the
//! shards drop those clocks anyway) and replays the records after it.
//!
//! The file (little-endian): `PSLDAMV2`, a `u64` fingerprint of the worker's job (seed,
//! worker, topics, documents, tokens), then one record per clock from 1 on: `u64` clock,
//! `u64` moves, `u64` bytes of the body, a `u64` check of those three, the body (the moves' tokens as gaps or a bitmap, then
//! their topics in 1, 2 or 4 bytes: [`body`]), and a `u64` check of the clock and moves. A record
//! cut short (the process died while writing it) or failing its check ends the log; the file is
//! cut back to the records before it. Records go to the kernel with one `write` before the
//! push, so they survive the process's death; a machine that loses power may lose the last
//! ones (and the replay is then inexact for those clocks).

use super::{LdaHyper, LdaWorkerState};
use crate::error::AppError;
use crate::seed::mix_all;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod body;
mod replay;
mod snapshot;

pub use replay::{moves_between, replay, set_assignments};

const MAGIC: &[u8; 8] = b"PSLDAMV2";
const HEADER: u64 = 16;
/// A record's clock, count, body length and their check, before its body.
const HEAD: u64 = 32;
/// A record's bytes besides its body: its head and check.
const FRAME: u64 = HEAD + 8;

/// One move: a token and its new topic.
pub type Move = (u32, u32);

/// What a log holds for a clock a returning worker replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// The clock's moves.
    Moves(Vec<Move>),
    /// The clock is covered by the snapshot the worker started from: every shard holds its
    /// push, and the state after it is the snapshot's (or a later clock's).
    Durable,
}

/// The log of one worker (see the module docs).
pub struct MovesLog {
    file: File,
    path: PathBuf,
    fingerprint: u64,
    /// Where each record in the file starts, by clock, and where the file ends.
    starts: BTreeMap<u64, u64>,
    end: u64,
    /// The clock of the snapshot on disk (0: none).
    snapshot: u64,
    /// The snapshot's assignments as found when opened, until [`MovesLog::take_snapshot`].
    found: Option<Vec<u32>>,
    /// The assignments after a clock not yet known to be held for good, kept to become the
    /// next snapshot when it is ([`MovesLog::durable`]).
    pending: Option<(u64, Vec<u32>)>,
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
    mix_all(seed ^ 0x4c44_415f_4d4f_5645, words)
}

/// The check of a record.
fn check(clock: u64, moves: &[Move]) -> u64 {
    let words = moves
        .iter()
        .map(|&(t, k)| u64::from(t) << 32 | u64::from(k));
    mix_all(clock ^ 0x6d6f_7665_7320_6c67, words)
}

/// The check of a record's head.
fn head_check(clock: u64, moves: u64, bytes: u64) -> u64 {
    mix_all(clock ^ 0x6865_6164, [moves, bytes])
}

fn bad(path: &Path, what: String) -> AppError {
    AppError::Settings(format!("LDA moves log {}: {what}", path.display()))
}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

impl MovesLog {
    /// The log of worker `worker` of the job's run `run` (with `seed` and `hyper`) that may
    /// rejoin, in its state directory `dir`: one file a worker and run, so another run's is
    /// never found. Where an earlier life left a snapshot, `state` takes its assignments (and
    /// the document-topic counts they make). The replay runs on the host, on the session's
    /// copy of the state (a resident engine's assignments come back after each sweep to be
    /// logged, and the replayed state goes to the device before the next sweep).
    pub fn for_worker(
        (dir, run): (Option<&Path>, u64),
        (seed, hyper): (u64, &LdaHyper),
        worker: u32,
        state: &mut LdaWorkerState,
    ) -> Result<MovesLog, AppError> {
        let why = "a rejoining LDA worker replays the moves it logged, since sweeping again \
                   would not give back the assignments the word-topic counts count";
        let Some(dir) = dir else {
            return Err(AppError::Settings(format!(
                "--on-worker-failure wait needs the workers' --state-dir (local makes one): {why}"
            )));
        };
        let tokens = u32::try_from(state.num_tokens()).map_err(|_| {
            AppError::Settings(format!("{} tokens: too many to log", state.num_tokens()))
        })?;
        std::fs::create_dir_all(dir)
            .map_err(|e| AppError::Settings(format!("--state-dir {}: {e}", dir.display())))?;
        let shape = (state.num_docs(), state.num_tokens());
        let print = fingerprint(run, seed, worker, hyper, shape);
        let file = dir.join(format!("lda-worker-{worker}-{run:016x}.moves"));
        let mut log = MovesLog::open(&file, print, tokens, state.topics)?;
        // An earlier life's snapshot: the state after the clocks the shards hold for good.
        let from = log.take_snapshot().map(|(clock, z)| {
            set_assignments(state, &z);
            clock
        });
        if from.is_some() || log.logged_clocks() > 0 {
            tracing::info!(
                worker,
                snapshot_clock = from.unwrap_or(0),
                logged_clocks = log.logged_clocks(),
                "LDA worker rejoins: its assignments from the snapshot, then the logged clocks \
                 replayed"
            );
        }
        Ok(log)
    }

    /// Opens (or creates) the log at `path` for a worker with `tokens` tokens and `topics`
    /// topics whose run of the job has `fingerprint`, with its snapshot if it has one (beside
    /// it: [`MovesLog::take_snapshot`]): the records an earlier life of the worker left after
    /// the snapshot are indexed for [`MovesLog::take`] (checked as they are read, one at a
    /// time), and a torn last record is cut off. A log or snapshot of another run, a damaged
    /// snapshot, a log that starts past the snapshot, or a damaged record with others after it
    /// (clocks that may have been pushed), is an error.
    pub fn open(
        path: &Path,
        fingerprint: u64,
        tokens: u32,
        topics: u32,
    ) -> Result<MovesLog, AppError> {
        let io = |e: std::io::Error| bad(path, e.to_string());
        let snap = snapshot::read(&snapshot_path(path), fingerprint, tokens, topics)
            .map_err(|e| bad(path, format!("its snapshot: {e}")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (snapshot, found) = match snap {
            Some((clock, z)) => (clock, Some(z)),
            None => (0, None),
        };
        let mut log = MovesLog {
            file,
            path: path.to_path_buf(),
            fingerprint,
            starts: BTreeMap::new(),
            end: HEADER,
            snapshot,
            found,
            pending: None,
            logged: BTreeMap::new(),
            next: snapshot + 1,
            tokens,
            topics,
        };
        if len < HEADER {
            // New, or torn before its header was whole.
            log.file.set_len(0).map_err(io)?;
            log.file.seek(SeekFrom::Start(0)).map_err(io)?;
            log.file.write_all(&header(fingerprint)).map_err(io)?;
            log.file.sync_data().map_err(io)?;
            return Ok(log);
        }
        // A second handle on the file (sharing its offset, set to the end afterwards).
        let mut r = BufReader::new(log.file.try_clone().map_err(io)?);
        let mut head = [0u8; HEADER as usize];
        r.read_exact(&mut head).map_err(io)?;
        if head != header(fingerprint) {
            return Err(bad(
                path,
                "it belongs to another run of the job or another worker".into(),
            ));
        }
        let good = log.index(&mut r, len)?;
        drop(r);
        log.file.set_len(good).map_err(io)?;
        log.file.seek(SeekFrom::End(0)).map_err(io)?;
        log.end = good;
        Ok(log)
    }

    /// Indexes the whole, valid, consecutive records after the header (`r` there, the file
    /// `len` long); returns where they end. Those the snapshot covers are checked, not kept.
    fn index(&mut self, r: &mut impl Read, len: u64) -> Result<u64, AppError> {
        let mut at = HEADER;
        let mut expect: Option<u64> = None;
        let (mut bytes, mut moves) = (Vec::new(), Vec::new());
        loop {
            let mut head = [0u8; HEAD as usize];
            if len - at < FRAME || r.read_exact(&mut head).is_err() {
                return Ok(at);
            }
            let (clock, n, b) = (
                u64_at(&head[..8]),
                u64_at(&head[8..16]),
                u64_at(&head[16..24]),
            );
            if u64_at(&head[24..]) != head_check(clock, n, b) {
                // A whole head that is wrong is damage, not a death while writing (which
                // leaves the file ending within the record): its length cannot be trusted to
                // say whether others follow.
                return Err(bad(
                    &self.path,
                    format!("the record at byte {at} has a damaged head"),
                ));
            }
            let end = (b.checked_add(at + FRAME)).filter(|&end| end <= len);
            let Some(end) = end else {
                // Cut short: the last record, torn as its life ended.
                return Ok(at);
            };
            bytes.resize(b as usize + 8, 0);
            // The first record is of clock 1, or of one the snapshot covers or follows.
            let in_turn = match expect {
                Some(c) => clock == c,
                None => clock >= 1 && clock <= self.snapshot + 1,
            };
            let intact = r.read_exact(&mut bytes).is_ok()
                && usize::try_from(n)
                    .is_ok_and(|n| self.decode(&bytes[..b as usize], n, &mut moves).is_ok())
                && u64_at(&bytes[b as usize..]) == check(clock, &moves);
            if intact && !in_turn {
                return Err(bad(
                    &self.path,
                    format!(
                        "its record at byte {at} is of clock {clock}, out of turn after {} \
                         (a snapshot of clock {} at most; clocks that may have been pushed \
                         cannot be replayed)",
                        expect.map_or(self.snapshot, |c| c - 1),
                        self.snapshot
                    ),
                ));
            }
            if !intact {
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
            self.starts.insert(clock, at);
            if clock > self.snapshot {
                self.logged
                    .insert(clock, (at + HEAD, b as usize, n as usize));
            }
            self.next = self.next.max(clock + 1);
            expect = Some(clock + 1);
            at = end;
        }
    }

    fn decode(&self, body: &[u8], n: usize, moves: &mut Vec<Move>) -> Result<(), String> {
        body::decode(body, n, self.tokens, self.topics, moves)
    }

    /// The snapshot an earlier life of the worker left, once: its clock and the assignments
    /// after it, which the worker starts from instead of its initial ones.
    pub fn take_snapshot(&mut self) -> Option<(u64, Vec<u32>)> {
        self.found.take().map(|z| (self.snapshot, z))
    }

    /// The clocks an earlier life logged after the snapshot, not replayed yet.
    pub fn logged_clocks(&self) -> usize {
        self.logged.len()
    }

    /// What an earlier life of the worker left for `clock` (from 1 on), if anything: covered
    /// by its snapshot, or its moves.
    pub fn take(&mut self, clock: u64) -> Result<Option<Logged>, AppError> {
        if clock >= 1 && clock <= self.snapshot {
            return Ok(Some(Logged::Durable));
        }
        let Some((at, b, n)) = self.logged.remove(&clock) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; b];
        (self.file.read_exact_at(&mut bytes, at)).map_err(|e| bad(&self.path, e.to_string()))?;
        let mut moves = Vec::new();
        let bad_body = |e: String| bad(&self.path, format!("clock {clock}: {e}"));
        self.decode(&bytes, n, &mut moves).map_err(bad_body)?;
        Ok(Some(Logged::Moves(moves)))
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
        let head = head_check(clock, moves.len() as u64, body.len() as u64);
        record.extend_from_slice(&head.to_le_bytes());
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
        self.starts.insert(clock, self.end);
        self.end += record.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Every shard holds the worker's first `below` clocks for good; `z` are the worker's
    /// assignments after clock `clock`. Where the assignments kept after an earlier clock are
    /// now held for good, they become the snapshot and the records up to that clock go, if
    /// those take more room than the snapshot; then the assignments after `clock` are kept
    /// for the next time.
    pub fn durable(&mut self, below: u64, clock: u64, z: &[u32]) -> Result<(), AppError> {
        if let Some((kept, _)) = &self.pending {
            if *kept < below {
                let (kept, zk) = self.pending.take().unwrap_or_default();
                let snapshot_bytes = (body::topic_width(self.topics) * zk.len()) as u64;
                if self.bytes_through(kept) >= snapshot_bytes {
                    self.compact(kept, &zk);
                }
            }
        }
        if self.pending.is_none() && clock > self.snapshot && clock < self.next {
            self.pending = Some((clock, z.to_vec()));
        }
        Ok(())
    }

    /// Bytes of the records up to clock `clock`.
    fn bytes_through(&self, clock: u64) -> u64 {
        let after = self.starts.range(clock + 1..).next().map(|(_, &a)| a);
        after.unwrap_or(self.end) - HEADER
    }

    /// Writes the snapshot of `z` after `clock`, then the log again without the records up to
    /// it (a new file renamed over the old one: a death in between leaves the old log beside
    /// the new snapshot, whose clock the old records then reach past). Dropping records only
    /// saves room, so a failure before the new log takes the old one's place is a warning and
    /// the old log stays in use; nothing after that can fail.
    fn compact(&mut self, clock: u64, z: &[u32]) {
        let from = self.starts.range(clock + 1..).next().map(|(_, &a)| a);
        let from = from.unwrap_or(self.end);
        let tmp = self.path.with_extension("moves-tmp");
        let renamed = self.write_compacted(clock, z, from, &tmp).and_then(|file| {
            std::fs::rename(&tmp, &self.path)?;
            Ok(file)
        });
        let file = match renamed {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    log = %self.path.display(),
                    clock,
                    error = %e,
                    "the LDA moves log was not compacted; it goes on as it is"
                );
                let _ = std::fs::remove_file(&tmp);
                return;
            }
        };
        if let Err(e) = snapshot::sync_dir(&self.path) {
            tracing::warn!(log = %self.path.display(), error = %e, "syncing the log's directory");
        }
        // The new file, the same one the path names now, written to its end.
        self.file = file;
        // Everything after `from` moved back to just after the header.
        let shift = from - HEADER;
        self.starts = (self.starts.split_off(&(clock + 1)).into_iter())
            .map(|(c, a)| (c, a - shift))
            .collect();
        self.logged.retain(|&c, _| c > clock);
        for (at, _, _) in self.logged.values_mut() {
            *at -= shift;
        }
        self.end -= shift;
        self.snapshot = clock;
        tracing::debug!(clock, dropped_bytes = shift, "LDA moves log compacted");
    }

    /// The snapshot of `z` after `clock`, then at `tmp` the log's header and its records from
    /// byte `from` on, synced; returns that file, open to append.
    fn write_compacted(
        &self,
        clock: u64,
        z: &[u32],
        from: u64,
        tmp: &Path,
    ) -> std::io::Result<File> {
        let snap = snapshot_path(&self.path);
        snapshot::write(&snap, self.fingerprint, clock, z, self.topics)?;
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        out.write_all(&header(self.fingerprint))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = from;
        while at < self.end {
            let n = buf.len().min((self.end - at) as usize);
            self.file.read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        out.sync_all()?;
        Ok(out)
    }
}

/// A log's header: the magic and its fingerprint.
fn header(fingerprint: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&fingerprint.to_le_bytes());
    h
}

/// Where the snapshot of the log at `path` lies.
fn snapshot_path(path: &Path) -> PathBuf {
    path.with_extension("snapshot")
}

#[cfg(test)]
mod tests;
