//! The assignments after a clock that every shard holds for good, written beside the log so
//! that the log's records up to that clock can go ([`super::MovesLog::durable`]).
//!
//! The file (little-endian): `PSLDASN1`, the log's fingerprint, `u64` clock, `u64` tokens,
//! one topic a token in as few bytes as the topic count needs (1, 2 or 4, as a record's
//! topics), and a `u64` check of the clock and topics. It is written whole to a temporary file,
//! synced, and renamed over the last one (the directory synced after), so a reader finds the
//! old snapshot or the new one, never a mix.

use super::body::topic_width;
use crate::seed::mix_all;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"PSLDASN1";
/// Magic, fingerprint, clock and tokens.
const HEAD: usize = 32;

/// The check of a snapshot of `z` after `clock`.
fn check(clock: u64, z: &[u32]) -> u64 {
    mix_all(
        clock ^ 0x736e_6170_7368_6f74,
        z.iter().map(|&t| u64::from(t)),
    )
}

/// Writes the snapshot of `z` (topics below `topics`) after `clock` to `path`, atomically.
pub fn write(
    path: &Path,
    fingerprint: u64,
    clock: u64,
    z: &[u32],
    topics: u32,
) -> std::io::Result<()> {
    let width = topic_width(topics);
    let mut bytes = Vec::with_capacity(HEAD + width * z.len() + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    bytes.extend_from_slice(&clock.to_le_bytes());
    bytes.extend_from_slice(&(z.len() as u64).to_le_bytes());
    for &t in z {
        bytes.extend_from_slice(&t.to_le_bytes()[..width]);
    }
    bytes.extend_from_slice(&check(clock, z).to_le_bytes());
    let tmp = path.with_extension("snapshot-tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so that a rename into it survives.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// The snapshot at `path` of a worker with `tokens` tokens and `topics` topics whose log has
/// `fingerprint`: `None` where there is none, else its clock and assignments; an error where
/// it is damaged or of another run, worker or shape.
pub fn read(
    path: &Path,
    fingerprint: u64,
    tokens: u32,
    topics: u32,
) -> Result<Option<(u64, Vec<u32>)>, String> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let width = topic_width(topics);
    let n = tokens as usize;
    if bytes.len() != HEAD + width * n + 8 || &bytes[..8] != MAGIC {
        return Err(format!(
            "{} bytes: not a snapshot of {tokens} assignments",
            bytes.len()
        ));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    if word(8) != fingerprint || word(24) != u64::from(tokens) {
        return Err("it belongs to another run of the job or another worker".into());
    }
    let clock = word(16);
    let z: Vec<u32> = bytes[HEAD..HEAD + width * n]
        .chunks_exact(width)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..width].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    if word(HEAD + width * n) != check(clock, &z) || z.iter().any(|&t| t >= topics) {
        return Err("damaged (its check fails or a topic is past K)".into());
    }
    Ok(Some((clock, z)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_comes_back_whole_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.snapshot");
        assert_eq!(read(&path, 1, 5, 300).unwrap(), None, "none yet");
        let z = vec![0, 299, 7, 256, 1];
        write(&path, 1, 4, &z, 300).unwrap();
        assert_eq!(read(&path, 1, 5, 300).unwrap(), Some((4, z.clone())));
        // A newer one replaces it whole.
        write(&path, 1, 9, &[1; 5], 300).unwrap();
        assert_eq!(read(&path, 1, 5, 300).unwrap(), Some((9, vec![1; 5])));
        assert!(read(&path, 2, 5, 300).is_err(), "another run");
        assert!(read(&path, 1, 6, 300).is_err(), "another shape");
        assert!(read(&path, 1, 5, 200).is_err(), "topics past K");
        let whole = std::fs::read(&path).unwrap();
        for at in [HEAD + 1, whole.len() - 1] {
            let mut bad = whole.clone();
            bad[at] ^= 4;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path, 1, 5, 300).is_err(), "a flipped bit at {at}");
        }
        std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
        assert!(read(&path, 1, 5, 300).is_err(), "cut short");
    }
}
