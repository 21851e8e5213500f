//! Where a shard's checkpoints live: `DIR/shard-{id}/ckpt-{clock:012}.psck`, one file per
//! checkpoint, named by its boundary clock.
//!
//! A write is atomic: the bytes go to `ckpt-{clock:012}.psck.tmp` in the same directory, which
//! is synced, renamed to the final name, and the directory synced; a crash leaves either the old
//! set of files or the new one (plus perhaps a `.tmp`, removed the next time the store is
//! opened). Then only the newest `keep` checkpoints are kept.

use super::format::{decode, encode};
use super::{CheckpointError, ShardFacts, ShardSnapshot};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many checkpoints a store keeps unless told otherwise: the newest, and one to fall back to
/// if the newest turns out damaged.
pub const DEFAULT_KEEP: usize = 2;

const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".psck";
const TMP: &str = ".tmp";

/// One shard's checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    shard: u32,
    keep: usize,
}

/// What [`CheckpointStore::write`] did.
#[derive(Debug)]
pub struct Written {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Older checkpoints removed to keep `keep` (and newer ones from an abandoned history).
    pub removed: Vec<PathBuf>,
}

/// What [`CheckpointStore::load_latest`] found.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: ShardSnapshot,
    /// The file it came from.
    pub path: PathBuf,
    /// Newer files skipped as damaged (each also logged as a warning), newest first.
    pub skipped: Vec<Skipped>,
}

/// A damaged checkpoint file that was passed over.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    /// Why ([`CheckpointError::is_corrupt`] holds).
    pub reason: CheckpointError,
}

/// The boundary clock in a checkpoint file name, `None` for any other name.
fn clock_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl CheckpointStore {
    /// The store of shard `shard` under `root` (`root/shard-{shard}`), created if missing.
    /// Removes `.tmp` files a crashed write left. `keep` (>= 1) is how many checkpoints
    /// [`CheckpointStore::write`] keeps.
    pub fn open(
        root: impl AsRef<Path>,
        shard: u32,
        keep: usize,
    ) -> Result<CheckpointStore, CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::BadKeep(keep));
        }
        let dir = root.as_ref().join(format!("shard-{shard}"));
        fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        let store = CheckpointStore { dir, shard, keep };
        for entry in store.entries()? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.strip_suffix(TMP).and_then(clock_of).is_some() {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "removed an unfinished checkpoint write")
                    }
                    Err(e) => return Err(CheckpointError::io(path, e)),
                }
            }
        }
        Ok(store)
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The file of the checkpoint at boundary clock `clock`.
    pub fn path_for(&self, clock: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{clock:012}{SUFFIX}"))
    }

    fn entries(&self) -> Result<Vec<fs::DirEntry>, CheckpointError> {
        let io = |e| CheckpointError::io(&self.dir, e);
        fs::read_dir(&self.dir)
            .map_err(io)?
            .map(|e| e.map_err(io))
            .collect()
    }

    /// The checkpoint files present, as (boundary clock, path), oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let mut files: Vec<(u64, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|e| {
                let clock = clock_of(e.file_name().to_str()?)?;
                Some((clock, e.path()))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Writes `snapshot` atomically (see the module docs), then removes all but the newest
    /// `keep` checkpoints, and any checkpoint newer than this one (after a restore from an older
    /// file they describe a history the shard abandoned).
    ///
    /// On failure (unwritable directory, disk full) the error is [`CheckpointError::Io`] naming
    /// the path, the temporary file is removed and earlier checkpoints are untouched. A failure
    /// to remove an old file is only logged.
    pub fn write(&self, snapshot: &ShardSnapshot) -> Result<Written, CheckpointError> {
        if snapshot.shard != self.shard {
            return Err(CheckpointError::Layout(format!(
                "a snapshot of shard {} written to the store of shard {}",
                snapshot.shard, self.shard
            )));
        }
        let bytes = encode(snapshot);
        let path = self.path_for(snapshot.clock);
        let mut tmp = path.clone().into_os_string();
        tmp.push(TMP);
        let tmp = PathBuf::from(tmp);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .map_err(|e| CheckpointError::io(&tmp, e))
            .and_then(|()| fs::rename(&tmp, &path).map_err(|e| CheckpointError::io(&path, e)));
        if let Err(e) = written {
            if let Err(rm) = fs::remove_file(&tmp) {
                if rm.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %tmp.display(), error = %rm, "could not remove a failed checkpoint write");
                }
            }
            return Err(e);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CheckpointError::io(&self.dir, e))?;
        let removed = self.prune(snapshot.clock)?;
        Ok(Written {
            path,
            bytes: bytes.len() as u64,
            removed,
        })
    }

    /// Removes checkpoints newer than `clock` and all but the newest `keep` up to it.
    fn prune(&self, clock: u64) -> Result<Vec<PathBuf>, CheckpointError> {
        let files = self.list()?;
        let upto = files.partition_point(|(c, _)| *c <= clock);
        let old = upto.saturating_sub(self.keep);
        let mut removed = Vec::new();
        for (i, (_, path)) in files.into_iter().enumerate() {
            if i >= old && i < upto {
                continue;
            }
            if i >= upto {
                tracing::warn!(file = %path.display(), clock, "removing a checkpoint newer than the one just written");
            }
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove an old checkpoint")
                }
            }
        }
        Ok(removed)
    }

    /// The newest usable checkpoint for this job, or `Ok(None)` when there is no checkpoint
    /// file at all.
    ///
    /// Newest first: a damaged file ([`CheckpointError::is_corrupt`], or one whose name and
    /// boundary clock disagree) is logged with `tracing::warn!` naming it and the reason, listed
    /// in [`Loaded::skipped`], and the next older one is tried. An intact file of another job,
    /// another format version or another shard/table layout, or a file that cannot be read, is
    /// refused: [`CheckpointError::Refused`] naming the file, with the cause. If every file is
    /// damaged the answer is [`CheckpointError::NoUsable`], not `None`: starting from scratch
    /// would drop what they held.
    pub fn load_latest(
        &self,
        expected_fingerprint: u64,
        facts: &ShardFacts,
    ) -> Result<Option<Loaded>, CheckpointError> {
        let files = self.list()?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut skipped = Vec::new();
        for (clock, path) in files.iter().rev() {
            let refuse = |cause| CheckpointError::Refused {
                path: path.clone(),
                cause: Box::new(cause),
            };
            let bytes = fs::read(path).map_err(|e| refuse(CheckpointError::io(path, e)))?;
            let decoded = decode(&bytes).and_then(|s| {
                if s.clock == *clock {
                    Ok(s)
                } else {
                    Err(CheckpointError::Malformed(format!(
                        "the name says clock {clock}, the contents clock {}",
                        s.clock
                    )))
                }
            });
            match decoded {
                Ok(snapshot) => {
                    snapshot
                        .check(expected_fingerprint, facts)
                        .map_err(refuse)?;
                    return Ok(Some(Loaded {
                        snapshot,
                        path: path.clone(),
                        skipped,
                    }));
                }
                Err(e) if e.is_corrupt() => {
                    tracing::warn!(file = %path.display(), reason = %e, "skipping a damaged checkpoint");
                    skipped.push(Skipped {
                        path: path.clone(),
                        reason: e,
                    });
                }
                Err(e) => return Err(refuse(e)),
            }
        }
        Err(CheckpointError::NoUsable {
            dir: self.dir.clone(),
            files: skipped.len(),
        })
    }
}
