//! The checkpoint store on a real file system: naming, pruning, fallback past damaged files,
//! refusal of foreign ones, and failed writes (unusable directory, full disk, read-only file
//! system; the last two mount a small tmpfs and skip visibly where mounting is not permitted).

use super::*;
use ps_proto::{KeyRange, Layout};
use std::fs;
use std::path::PathBuf;

const FP: u64 = 42;

fn snap(clock: u64, cells: u64) -> ShardSnapshot {
    ShardSnapshot {
        version: FORMAT_VERSION,
        fingerprint: FP,
        shard: 0,
        num_shards: 1,
        num_workers: 2,
        deterministic: true,
        clock,
        completed: vec![clock; 2],
        live: vec![true; 2],
        tables: vec![TableSlice {
            id: 1,
            rows: cells,
            width: 1,
            state_per_cell: 0,
            layout: Layout::Dense,
            range: KeyRange {
                start: 0,
                end: cells,
            },
            values: (0..cells).map(|i| i as f32 + clock as f32).collect(),
            state: vec![],
            keys: vec![],
        }],
    }
}

fn facts(width: u32) -> ShardFacts {
    ShardFacts {
        shard: 0,
        num_shards: 1,
        num_workers: 2,
        deterministic: true,
        tables: vec![TableFacts {
            id: 1,
            name: "t".into(),
            rows: 16,
            width,
            state_per_cell: 0,
            layout: Layout::Dense,
            range: KeyRange { start: 0, end: 16 },
        }],
    }
}

fn clocks(store: &CheckpointStore) -> Vec<u64> {
    store.list().unwrap().into_iter().map(|(c, _)| c).collect()
}

fn load(store: &CheckpointStore) -> Result<Option<Loaded>, CheckpointError> {
    store.load_latest(FP, &facts(1))
}

#[test]
fn writes_are_named_by_clock_and_pruned_to_keep() {
    let root = tempfile::tempdir().unwrap();
    assert!(matches!(
        CheckpointStore::open(root.path(), 0, 0),
        Err(CheckpointError::BadKeep(0))
    ));
    let store = CheckpointStore::open(root.path(), 0, DEFAULT_KEEP).unwrap();
    assert_eq!(store.dir(), root.path().join("shard-0"));
    assert!(load(&store).unwrap().is_none(), "no checkpoint at all");
    let w1 = store.write(&snap(1, 16)).unwrap();
    assert_eq!(w1.path, store.dir().join("ckpt-000000000001.psck"));
    assert_eq!(w1.bytes, fs::metadata(&w1.path).unwrap().len());
    assert!(w1.removed.is_empty());
    store.write(&snap(2, 16)).unwrap();
    let w3 = store.write(&snap(3, 16)).unwrap();
    assert_eq!(w3.removed, vec![w1.path.clone()]);
    assert_eq!(clocks(&store), vec![2, 3]);
    let got = load(&store).unwrap().unwrap();
    assert_eq!((got.snapshot, got.path), (snap(3, 16), w3.path));
    assert!(got.skipped.is_empty());
    // A wrong shard's snapshot is not written into this store.
    let other = ShardSnapshot {
        shard: 1,
        num_shards: 2,
        ..snap(4, 16)
    };
    assert!(matches!(
        store.write(&other),
        Err(CheckpointError::Layout(_))
    ));

    // keep = 1; a clock past 10^12 still sorts by number, not by name.
    let one = CheckpointStore::open(root.path(), 0, 1).unwrap();
    one.write(&snap(9_999_999_999_999, 16)).unwrap();
    assert_eq!(clocks(&one), vec![9_999_999_999_999]);
    one.write(&snap(10_000_000_000_000, 16)).unwrap();
    assert_eq!(clocks(&one), vec![10_000_000_000_000]);
}

#[test]
fn writing_an_older_clock_drops_the_abandoned_newer_ones() {
    let root = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(root.path(), 0, 3).unwrap();
    for c in [5, 7] {
        store.write(&snap(c, 16)).unwrap();
    }
    let w = store.write(&snap(6, 16)).unwrap();
    assert_eq!(w.removed, vec![store.path_for(7)]);
    assert_eq!(clocks(&store), vec![5, 6]);
}

#[test]
fn unfinished_writes_are_removed_on_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shard-3");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("ckpt-000000000005.psck.tmp"), b"half a file").unwrap();
    fs::write(dir.join("notes.tmp"), b"not ours").unwrap();
    fs::write(dir.join("ckpt-x.psck"), b"not ours either").unwrap();
    let store = CheckpointStore::open(root.path(), 3, 2).unwrap();
    assert!(!dir.join("ckpt-000000000005.psck.tmp").exists());
    assert!(dir.join("notes.tmp").exists() && dir.join("ckpt-x.psck").exists());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_damaged_newest_file_falls_back_to_the_previous_and_is_named() {
    let root = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(root.path(), 0, 3).unwrap();
    for c in 1..=3 {
        store.write(&snap(c, 16)).unwrap();
    }
    // Newest: one flipped byte in the values; the next: torn in the middle.
    let p3 = store.path_for(3);
    let mut b = fs::read(&p3).unwrap();
    b[60] ^= 0x10;
    fs::write(&p3, &b).unwrap();
    let got = load(&store).unwrap().unwrap();
    assert_eq!(got.snapshot.clock, 2);
    assert_eq!(got.skipped.len(), 1);
    assert_eq!(got.skipped[0].path, p3);
    assert!(matches!(
        got.skipped[0].reason,
        CheckpointError::ChecksumMismatch { .. }
    ));
    let p2 = store.path_for(2);
    let b = fs::read(&p2).unwrap();
    fs::write(&p2, &b[..b.len() / 2]).unwrap();
    let got = load(&store).unwrap().unwrap();
    assert_eq!(
        (got.snapshot, got.path.clone()),
        (snap(1, 16), store.path_for(1))
    );
    let skipped: Vec<&PathBuf> = got.skipped.iter().map(|s| &s.path).collect();
    assert_eq!(skipped, vec![&p3, &p2]);
    assert!(matches!(
        got.skipped[1].reason,
        CheckpointError::Truncated { .. }
    ));
    // A file renamed to another clock is damaged too (its name lies).
    fs::copy(store.path_for(1), store.path_for(4)).unwrap();
    let got = load(&store).unwrap().unwrap();
    assert_eq!(got.snapshot.clock, 1);
    assert!(got.skipped[0]
        .reason
        .to_string()
        .contains("name says clock 4"));
    // All damaged: an error, not a fresh start.
    fs::write(store.path_for(1), b"garbage").unwrap();
    fs::remove_file(store.path_for(4)).unwrap();
    let e = load(&store).expect_err("no usable checkpoint");
    assert!(
        matches!(e, CheckpointError::NoUsable { files: 3, .. }),
        "{e}"
    );
}

#[test]
fn another_jobs_version_or_layout_is_refused_not_skipped() {
    let root = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(root.path(), 0, 3).unwrap();
    store.write(&snap(1, 16)).unwrap();
    let refused = |store: &CheckpointStore, facts: ShardFacts| -> CheckpointError {
        match store.load_latest(FP, &facts) {
            Err(CheckpointError::Refused { path, cause }) => {
                assert_eq!(path, store.path_for(2));
                *cause
            }
            other => panic!("not refused: {other:?}"),
        }
    };
    let other_job = ShardSnapshot {
        fingerprint: FP + 1,
        ..snap(2, 16)
    };
    store.write(&other_job).unwrap();
    let e = refused(&store, facts(1));
    assert!(matches!(e, CheckpointError::OtherJob { found, expected: FP } if found == FP + 1));
    store
        .write(&ShardSnapshot {
            version: 2,
            ..snap(2, 16)
        })
        .unwrap();
    let e = refused(&store, facts(1));
    assert!(matches!(
        e,
        CheckpointError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    store.write(&snap(2, 16)).unwrap();
    let e = refused(&store, facts(2));
    assert_eq!(
        e.to_string(),
        "checkpoint does not fit this shard: table 1 (\"t\"): the width is 1 in the \
         checkpoint but 2 in the job"
    );
    let full = store.load_latest(FP, &facts(2)).unwrap_err();
    assert!(
        full.to_string().contains("ckpt-000000000002.psck refused"),
        "{full}"
    );
    assert!(matches!(full.cause(), CheckpointError::Layout(_)));
}

#[test]
fn an_unusable_directory_is_a_clear_error_and_old_files_survive() {
    let root = tempfile::tempdir().unwrap();
    // A directory under a regular file cannot be created, even by root.
    let file = root.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let e = CheckpointStore::open(&file, 0, 2).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Io { path, .. } if *path == file.join("shard-0")),
        "{e}"
    );
    assert!(e.to_string().contains("a-file/shard-0"), "{e}");

    // The final name taken by a non-empty directory: the rename fails; the temporary file
    // is removed, the error names the path, the earlier checkpoint is intact.
    let store = CheckpointStore::open(root.path(), 0, 2).unwrap();
    store.write(&snap(1, 16)).unwrap();
    fs::create_dir_all(store.path_for(2).join("x")).unwrap();
    let e = store.write(&snap(2, 16)).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Io { path, .. } if *path == store.path_for(2)),
        "{e}"
    );
    let names: Vec<_> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    fs::remove_dir_all(store.path_for(2)).unwrap();
    assert_eq!(load(&store).unwrap().unwrap().snapshot, snap(1, 16));

    // The directory gone and a file in its place: the write names the file it tried.
    fs::remove_dir_all(store.dir()).unwrap();
    fs::write(store.dir(), b"x").unwrap();
    let e = store.write(&snap(3, 16)).unwrap_err();
    assert!(e.to_string().contains("ckpt-000000000003.psck.tmp"), "{e}");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop; `None` (and a visible
/// note) where mounting is not permitted.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(opts: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                eprintln!("skipped: cannot mount a tmpfs ({opts}): {}", why.trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_previous_checkpoint() {
    let Some(fs64k) = Tmpfs::mount("size=64k") else {
        return;
    };
    let store = CheckpointStore::open(fs64k.0.path(), 0, 2).unwrap();
    let small = snap(1, 1000); // ~4 KB
    store.write(&small).unwrap();
    let e = store.write(&snap(2, 40_000)).unwrap_err(); // ~160 KB
    match &e {
        CheckpointError::Io { path, source } => {
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {e}");
            assert_eq!(*path, store.dir().join("ckpt-000000000002.psck.tmp"));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("ckpt-000000000002.psck.tmp"), "{e}");
    assert_eq!(clocks(&store), vec![1]);
    assert_eq!(
        fs::read_dir(store.dir()).unwrap().count(),
        1,
        "no .tmp left"
    );
    let bytes = fs::read(store.path_for(1)).unwrap();
    assert_eq!(decode(&bytes).unwrap(), small);
    // The space the failed write took is back: a small checkpoint fits again.
    store.write(&snap(3, 1000)).unwrap();
    assert_eq!(clocks(&store), vec![1, 3]);
}

#[test]
fn a_read_only_file_system_fails_cleanly() {
    let Some(ro) = Tmpfs::mount("size=64k") else {
        return;
    };
    let store = CheckpointStore::open(ro.0.path(), 0, 2).unwrap();
    store.write(&snap(1, 16)).unwrap();
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(ro.0.path())
        .status();
    if !matches!(remount, Ok(s) if s.success()) {
        eprintln!("skipped: cannot remount the tmpfs read-only");
        return;
    }
    let e = store.write(&snap(2, 16)).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::Io { source, .. } if source.raw_os_error() == Some(30)),
        "EROFS: {e}"
    );
    assert_eq!(load(&store).unwrap().unwrap().snapshot, snap(1, 16));
}
