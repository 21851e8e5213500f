//! Shard checkpoints: what a restarted shard resumes from.
//!
//! Three parts, no networking and no knowledge of the service:
//! * [`ShardSnapshot`]: a copy of one shard's state, taken with [`Shard::snapshot`] under the
//!   shard's lock (a memcpy of its vectors) and turned back into a shard with
//!   [`Shard::from_snapshot`], which refuses a snapshot that does not fit the job;
//! * [`encode`] / [`decode`] (module `format`): the file format, pure bytes in and out; decode
//!   never panics and never allocates more than the input can hold (a fuzz target calls it);
//! * [`CheckpointStore`]: one directory per shard, written atomically, pruned to the newest
//!   `keep` files, and read back newest first.
//!
//! # The cut
//! A snapshot is consistent at the shard's **per-worker clock vector**: worker `w`'s entry
//! `completed[w]` says the values and optimizer state contain exactly worker `w`'s updates of its
//! clocks `0..completed[w]` and nothing newer. In deterministic mode every live worker's entry
//! equals the boundary clock [`ShardSnapshot::clock`] (the shard's min clock); without it fast
//! workers may stand ahead of the boundary. Batches the shard held back (submitted but not yet
//! applied: a later clock waiting for an earlier one, or, in deterministic mode, for the other
//! workers) are **not** saved: after a restore the shard reports its clock vector and each
//! worker resends its batches from clock `completed[w]` on; a resend of an already covered clock
//! is refused by the clock vector ([`ps_ssp::SspError::StaleClock`]), so nothing is applied
//! twice and nothing is lost as long as workers keep their batches until the shard's checkpoint
//! covers them. (When the newest file is damaged and the store falls back to an older one, the
//! workers are asked for batches from that older cut: to lose nothing then as well, they keep
//! batches until the second newest checkpoint, the store's default `keep` of 2, covers them.)
//!
//! # Corrupt versus foreign files
//! A file that is torn or corrupt (bad magic, truncated, checksum mismatch, malformed body) is
//! skipped with a warning and the previous checkpoint is used. A file that is intact but belongs
//! to another job (fingerprint), another format version, or another shard/table layout is
//! **refused** with an error: starting from scratch, or from a file of another job, would
//! silently lose or corrupt updates, so an operator decides.
//!
//! [`Shard::snapshot`]: crate::Shard::snapshot
//! [`Shard::from_snapshot`]: crate::Shard::from_snapshot

mod format;
mod store;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

pub use format::{decode, encode, FORMAT_VERSION, MAGIC};
pub use store::{CheckpointStore, Loaded, Skipped, Written, DEFAULT_KEEP};

use ps_proto::{KeyRange, Layout, ShardMap, TableSpec};
use std::path::PathBuf;
use thiserror::Error;

/// Why a checkpoint could not be written, read or used. [`CheckpointError::is_corrupt`] tells a
/// damaged file (skip it, use an older one) from a foreign one (refuse it).
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A file system operation failed; `path` is the file or directory it was about.
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with [`MAGIC`]: not a checkpoint (or its first bytes are damaged).
    #[error("not a shard checkpoint (bad magic bytes)")]
    BadMagic,
    /// An intact checkpoint of a format version this build cannot read.
    #[error("checkpoint format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The file ends before its header or its declared body and checksum.
    #[error("truncated checkpoint: {needed} bytes needed, {have} present")]
    Truncated { needed: u64, have: u64 },
    /// The checksum over the file does not match the one stored in it.
    #[error("checkpoint checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The checksum matched but the contents are inconsistent (or trail extra bytes).
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// An intact checkpoint of another job.
    #[error("checkpoint of another job: fingerprint {found:#018x}, this job is {expected:#018x}")]
    OtherJob { found: u64, expected: u64 },
    /// An intact checkpoint of this job's fingerprint whose shard or table layout differs from
    /// the job's (the message names the difference).
    #[error("checkpoint does not fit this shard: {0}")]
    Layout(String),
    /// `keep` must be at least 1.
    #[error("a checkpoint store must keep at least one file (keep = {0})")]
    BadKeep(usize),
    /// [`CheckpointStore::load_latest`] refused this file (the cause says why): the shard must
    /// not start without an operator deciding.
    #[error("checkpoint {path} refused: {cause}")]
    Refused {
        path: PathBuf,
        #[source]
        cause: Box<CheckpointError>,
    },
    /// Checkpoint files exist but every one is damaged; starting from scratch would lose the
    /// updates they held, so this is an error, not "no checkpoint".
    #[error("no usable checkpoint in {dir}: all {files} files are damaged")]
    NoUsable { dir: PathBuf, files: usize },
}

impl CheckpointError {
    /// True for a damaged file (bad magic, truncated, checksum mismatch, malformed): a reader
    /// skips it and falls back to an older checkpoint.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            CheckpointError::BadMagic
                | CheckpointError::Truncated { .. }
                | CheckpointError::ChecksumMismatch { .. }
                | CheckpointError::Malformed(_)
        )
    }

    /// The underlying error, looking through [`CheckpointError::Refused`].
    pub fn cause(&self) -> &CheckpointError {
        match self {
            CheckpointError::Refused { cause, .. } => cause.cause(),
            e => e,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }
}

/// One shard's state at a clock boundary (see the module docs for the cut).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSnapshot {
    /// The file format version ([`FORMAT_VERSION`] for snapshots taken by this build);
    /// [`encode`] writes it as it is.
    pub version: u32,
    /// Identifies the job (see [`job_fingerprint`]); a checkpoint of another job is refused.
    pub fingerprint: u64,
    pub shard: u32,
    pub num_shards: u32,
    pub num_workers: u32,
    pub deterministic: bool,
    /// The boundary clock: the shard's min clock when the snapshot was taken.
    pub clock: u64,
    /// Per worker: clocks `0..completed[w]` are in the values.
    pub completed: Vec<u64>,
    /// Per worker: false once evicted.
    pub live: Vec<bool>,
    /// Every table slice of the shard, by ascending table id.
    pub tables: Vec<TableSlice>,
}

/// One table's slice in a snapshot: the layout facts a restore checks, and its contents.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSlice {
    pub id: u32,
    /// Rows of the whole table (the key space of a sparse table).
    pub rows: u64,
    pub width: u32,
    /// Optimizer state floats per cell (`UpdateRule::state_per_cell`).
    pub state_per_cell: u32,
    pub layout: Layout,
    /// The shard's key range of the table.
    pub range: KeyRange,
    /// Row-major values: the whole range (dense) or the rows of `keys` (sparse).
    pub values: Vec<f32>,
    /// `state_per_cell` floats per cell, interleaved per cell, cells in the order of `values`.
    pub state: Vec<f32>,
    /// Sparse tables: the key of each stored row, in storage order. Empty for dense tables.
    pub keys: Vec<u64>,
}

/// What a job expects of one shard: compared with a snapshot before it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardFacts {
    pub shard: u32,
    pub num_shards: u32,
    pub num_workers: u32,
    pub deterministic: bool,
    pub tables: Vec<TableFacts>,
}

/// The layout of one table slice a job expects.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFacts {
    pub id: u32,
    /// For messages only.
    pub name: String,
    pub rows: u64,
    pub width: u32,
    pub state_per_cell: u32,
    pub layout: Layout,
    pub range: KeyRange,
}

impl ShardFacts {
    /// The facts of shard `shard` of `num_shards` holding `tables`, as [`crate::Shard::new`] with
    /// the same arguments lays it out.
    pub fn new(
        shard: u32,
        num_shards: u32,
        tables: &[TableSpec],
        num_workers: u32,
        deterministic: bool,
    ) -> ShardFacts {
        let mut tables: Vec<TableFacts> = tables
            .iter()
            .map(|t| TableFacts {
                id: t.id,
                name: t.name.clone(),
                rows: t.rows,
                width: t.width,
                state_per_cell: t.rule.state_per_cell() as u32,
                layout: t.layout,
                range: ShardMap::range_of(t.rows, num_shards, shard),
            })
            .collect();
        tables.sort_by_key(|t| t.id);
        ShardFacts {
            shard,
            num_shards,
            num_workers,
            deterministic,
            tables,
        }
    }
}

fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Dense => "dense",
        Layout::Sparse => "sparse",
    }
}

impl ShardSnapshot {
    /// Checks that this snapshot belongs to the job (`expected_fingerprint`, else
    /// [`CheckpointError::OtherJob`]) and fits its shard (`facts`, else
    /// [`CheckpointError::Layout`] naming the first difference).
    pub fn check(
        &self,
        expected_fingerprint: u64,
        facts: &ShardFacts,
    ) -> Result<(), CheckpointError> {
        if self.fingerprint != expected_fingerprint {
            return Err(CheckpointError::OtherJob {
                found: self.fingerprint,
                expected: expected_fingerprint,
            });
        }
        self.check_layout(facts)
    }

    /// Checks the shard and table layout against `facts` (not the fingerprint).
    pub fn check_layout(&self, facts: &ShardFacts) -> Result<(), CheckpointError> {
        let differ = |what: &str, ours: String, theirs: String| {
            Err(CheckpointError::Layout(format!(
                "{what} is {ours} in the checkpoint but {theirs} in the job"
            )))
        };
        if self.shard != facts.shard {
            return differ(
                "the shard id",
                self.shard.to_string(),
                facts.shard.to_string(),
            );
        }
        if self.num_shards != facts.num_shards {
            return differ(
                "the number of shards",
                self.num_shards.to_string(),
                facts.num_shards.to_string(),
            );
        }
        if self.num_workers != facts.num_workers {
            return differ(
                "the number of workers",
                self.num_workers.to_string(),
                facts.num_workers.to_string(),
            );
        }
        if self.deterministic != facts.deterministic {
            return differ(
                "deterministic mode",
                self.deterministic.to_string(),
                facts.deterministic.to_string(),
            );
        }
        for f in &facts.tables {
            if !self.tables.iter().any(|t| t.id == f.id) {
                return Err(CheckpointError::Layout(format!(
                    "table {} ({:?}) of the job is missing from the checkpoint",
                    f.id, f.name
                )));
            }
        }
        for t in &self.tables {
            let Some(f) = facts.tables.iter().find(|f| f.id == t.id) else {
                return Err(CheckpointError::Layout(format!(
                    "the checkpoint holds table {}, which the job does not have",
                    t.id
                )));
            };
            let table = |what: &str| format!("table {} ({:?}): {what}", f.id, f.name);
            if t.layout != f.layout {
                let (a, b) = (layout_name(t.layout), layout_name(f.layout));
                return differ(&table("the layout"), a.into(), b.into());
            }
            if t.rows != f.rows {
                return differ(&table("rows"), t.rows.to_string(), f.rows.to_string());
            }
            if t.width != f.width {
                return differ(
                    &table("the width"),
                    t.width.to_string(),
                    f.width.to_string(),
                );
            }
            if t.state_per_cell != f.state_per_cell {
                return differ(
                    &table("the rule's state floats per cell"),
                    t.state_per_cell.to_string(),
                    f.state_per_cell.to_string(),
                );
            }
            if t.range != f.range {
                let r = |r: KeyRange| format!("{}..{}", r.start, r.end);
                return differ(&table("the key range"), r(t.range), r(f.range));
            }
        }
        Ok(())
    }

    /// Checks that the snapshot is self-consistent, whatever job it is for: one clock entry per
    /// worker, the boundary clock is the min over live workers (and, in deterministic mode,
    /// every live worker's clock), distinct table ids, and every slice's lengths, range and keys
    /// agree. [`decode`] reports a failure as [`CheckpointError::Malformed`]. Sparse keys are
    /// checked for duplicates when the table is rebuilt.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.num_workers as usize;
        if self.completed.len() != n || self.live.len() != n {
            return Err(format!(
                "{} workers but {} clocks and {} liveness flags",
                n,
                self.completed.len(),
                self.live.len()
            ));
        }
        if self.shard >= self.num_shards {
            return Err(format!(
                "shard {} of {} shards",
                self.shard, self.num_shards
            ));
        }
        let live = || self.completed.iter().zip(&self.live).filter(|(_, l)| **l);
        let min = live()
            .map(|(c, _)| *c)
            .min()
            .unwrap_or_else(|| self.completed.iter().copied().max().unwrap_or(0));
        if self.clock != min {
            return Err(format!(
                "boundary clock {} but the workers' min clock is {min}",
                self.clock
            ));
        }
        if self.deterministic && live().any(|(c, _)| *c != self.clock) {
            return Err(format!(
                "deterministic mode but live workers stand at different clocks (boundary {})",
                self.clock
            ));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if self.tables[..i].iter().any(|u| u.id == t.id) {
                return Err(format!("table {} appears twice", t.id));
            }
            t.validate().map_err(|e| format!("table {}: {e}", t.id))?;
        }
        Ok(())
    }
}

impl TableSlice {
    /// Lengths, range and key bounds (see [`ShardSnapshot::validate`]).
    fn validate(&self) -> Result<(), String> {
        let r = self.range;
        if r.start > r.end || r.end > self.rows {
            return Err(format!(
                "key range {}..{} does not fit {} rows",
                r.start, r.end, self.rows
            ));
        }
        if self.width == 0 {
            return Err("width 0".into());
        }
        let stored_rows = match self.layout {
            Layout::Dense => {
                if !self.keys.is_empty() {
                    return Err(format!("a dense slice with {} keys", self.keys.len()));
                }
                r.len()
            }
            Layout::Sparse => {
                if let Some(k) = self.keys.iter().find(|k| !r.contains(**k)) {
                    return Err(format!("key {k} outside the range {}..{}", r.start, r.end));
                }
                self.keys.len() as u64
            }
        };
        let cells = stored_rows.checked_mul(u64::from(self.width));
        if cells != Some(self.values.len() as u64) {
            return Err(format!(
                "{} values for {stored_rows} rows of width {}",
                self.values.len(),
                self.width
            ));
        }
        let state = (self.values.len() as u64).checked_mul(u64::from(self.state_per_cell));
        if state != Some(self.state.len() as u64) {
            return Err(format!(
                "{} state floats for {} cells at {} per cell",
                self.state.len(),
                self.values.len(),
                self.state_per_cell
            ));
        }
        Ok(())
    }
}

/// A stable 64-bit fingerprint of a job, from the parts the caller chooses (serialized table
/// specs, worker and shard counts, the job spec), in order.
///
/// The hash is FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over, for
/// each part, its length as 8 little-endian bytes followed by its bytes; the length prefix keeps
/// `["ab", "c"]` and `["a", "bc"]` apart. It never changes between builds or platforms (unlike
/// `DefaultHasher`). It detects mistakes, not adversaries.
pub fn job_fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv1a64::new();
    for p in parts {
        h.write(&(p.len() as u64).to_le_bytes());
        h.write(p);
    }
    h.0
}

struct Fnv1a64(u64);

impl Fnv1a64 {
    fn new() -> Fnv1a64 {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn fnv1a_known_vectors_and_part_boundaries() {
        let fnv = |b: &[u8]| {
            let mut h = Fnv1a64::new();
            h.write(b);
            h.0
        };
        // Reference values of FNV-1a 64.
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(job_fingerprint(&[]), 0xcbf2_9ce4_8422_2325);
        let ab_c = job_fingerprint(&[b"ab", b"c"]);
        assert_ne!(ab_c, job_fingerprint(&[b"a", b"bc"]));
        assert_ne!(ab_c, job_fingerprint(&[b"abc"]));
        assert_eq!(ab_c, job_fingerprint(&[b"ab", b"c"]));
        // Pinned (computed independently): a change of the hash would orphan every checkpoint
        // written before it.
        assert_eq!(ab_c, 0x7e60_470b_f599_cad6);
    }
}
