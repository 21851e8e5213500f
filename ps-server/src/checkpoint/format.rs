//! The checkpoint file format: [`encode`] and [`decode`], pure bytes, no I/O.
//!
//! Everything little-endian. The frame is the same for every format version, so a reader can
//! check any file's checksum before it looks at the version:
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"\x89PSCKPT\n"
//! 8       4     format version (u32)
//! 12      8     body length B (u64)
//! 20      B     body
//! 20+B    4     CRC-32 (IEEE 802.3 / zlib polynomial, crc32fast) of bytes 0..20+B
//! ```
//! The file ends there; trailing bytes are malformed. Body of version 1:
//!
//! ```text
//! u64 fingerprint | u32 shard | u32 num_shards | u32 num_workers
//! u32 flags (bit 0: deterministic; other bits 0) | u64 boundary clock
//! num_workers x (u64 completed clock | u8 live: 0 or 1)
//! u32 table count, then per table, by ascending id:
//!   u32 id | u8 layout (0 dense, 1 sparse) | u32 width | u32 state floats per cell
//!   u64 rows | u64 range start | u64 range end
//!   u64 key count, keys (u64 each; 0 for dense)
//!   u64 value count, values (f32 bits each)
//!   u64 state count, state (f32 bits each)
//! ```
//! The decoder checks every count against the bytes left before it allocates, so hostile input
//! can make it allocate at most about the input's size; it then checks the snapshot's own
//! consistency ([`ShardSnapshot::validate`]).

use super::{CheckpointError, ShardSnapshot, TableSlice};
use ps_proto::{KeyRange, Layout};

/// The first 8 bytes of every checkpoint file (a high byte and a newline, as in PNG, catch text
/// mode transfers).
pub const MAGIC: [u8; 8] = *b"\x89PSCKPT\n";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes before the body: magic, version, body length.
const HEADER: usize = 20;
/// Bytes after the body: the checksum.
const TRAILER: usize = 4;

/// The file bytes of a snapshot (version [`ShardSnapshot::version`]). The snapshot is written
/// as it is; [`decode`] refuses one that is not self-consistent.
pub fn encode(s: &ShardSnapshot) -> Vec<u8> {
    let data: usize = s
        .tables
        .iter()
        .map(|t| 61 + 8 * t.keys.len() + 4 * (t.values.len() + t.state.len()))
        .sum();
    let mut out = Vec::with_capacity(HEADER + 40 + 9 * s.completed.len() + data + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&s.version.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // body length, patched below
    out.extend_from_slice(&s.fingerprint.to_le_bytes());
    out.extend_from_slice(&s.shard.to_le_bytes());
    out.extend_from_slice(&s.num_shards.to_le_bytes());
    out.extend_from_slice(&s.num_workers.to_le_bytes());
    out.extend_from_slice(&u32::from(s.deterministic).to_le_bytes());
    out.extend_from_slice(&s.clock.to_le_bytes());
    for (c, l) in s.completed.iter().zip(&s.live) {
        out.extend_from_slice(&c.to_le_bytes());
        out.push(u8::from(*l));
    }
    out.extend_from_slice(&(s.tables.len() as u32).to_le_bytes());
    for t in &s.tables {
        out.extend_from_slice(&t.id.to_le_bytes());
        out.push(match t.layout {
            Layout::Dense => 0,
            Layout::Sparse => 1,
        });
        out.extend_from_slice(&t.width.to_le_bytes());
        out.extend_from_slice(&t.state_per_cell.to_le_bytes());
        for v in [t.rows, t.range.start, t.range.end, t.keys.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(t.keys.iter().flat_map(|k| k.to_le_bytes()));
        for floats in [&t.values, &t.state] {
            out.extend_from_slice(&(floats.len() as u64).to_le_bytes());
            out.extend(floats.iter().flat_map(|v| v.to_bits().to_le_bytes()));
        }
    }
    let body = (out.len() - HEADER) as u64;
    out[12..HEADER].copy_from_slice(&body.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a snapshot from file bytes. Checks, in order: magic, length, checksum, version, body.
/// Never panics; the snapshot it returns is self-consistent ([`ShardSnapshot::validate`]) but
/// not yet checked against a job ([`ShardSnapshot::check`]).
pub fn decode(bytes: &[u8]) -> Result<ShardSnapshot, CheckpointError> {
    let have = bytes.len() as u64;
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(CheckpointError::BadMagic);
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::Truncated {
            needed: HEADER as u64,
            have,
        });
    }
    let mut head = Reader::new(&bytes[MAGIC.len()..HEADER]);
    let version = head.u32()?;
    let body_len = head.u64()?;
    let needed = body_len
        .checked_add((HEADER + TRAILER) as u64)
        .ok_or_else(|| CheckpointError::Malformed(format!("body length {body_len}")))?;
    if have < needed {
        return Err(CheckpointError::Truncated { needed, have });
    }
    if have > needed {
        return Err(CheckpointError::Malformed(format!(
            "{} bytes after the checksum",
            have - needed
        )));
    }
    // have == needed, so the body fits in usize.
    let end = bytes.len() - TRAILER;
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[end..]);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(&bytes[..end]);
    if stored != computed {
        return Err(CheckpointError::ChecksumMismatch { stored, computed });
    }
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let snapshot = decode_body(version, &mut Reader::new(&bytes[HEADER..end]))?;
    snapshot.validate().map_err(CheckpointError::Malformed)?;
    Ok(snapshot)
}

fn decode_body(version: u32, r: &mut Reader) -> Result<ShardSnapshot, CheckpointError> {
    let fingerprint = r.u64()?;
    let shard = r.u32()?;
    let num_shards = r.u32()?;
    let num_workers = r.u32()?;
    let flags = r.u32()?;
    if flags & !1 != 0 {
        return Err(malformed(format!("unknown flags {flags:#x}")));
    }
    let clock = r.u64()?;
    r.fits(u64::from(num_workers), 9, "worker clocks")?;
    let mut completed = Vec::with_capacity(num_workers as usize);
    let mut live = Vec::with_capacity(num_workers as usize);
    for w in 0..num_workers {
        completed.push(r.u64()?);
        live.push(match r.u8()? {
            0 => false,
            1 => true,
            b => return Err(malformed(format!("worker {w}: live flag {b}"))),
        });
    }
    let count = r.u32()?;
    // The fixed part of a table entry is 61 bytes.
    r.fits(u64::from(count), 61, "tables")?;
    let mut tables = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = r.u32()?;
        let layout = match r.u8()? {
            0 => Layout::Dense,
            1 => Layout::Sparse,
            b => return Err(malformed(format!("table {id}: layout {b}"))),
        };
        let width = r.u32()?;
        let state_per_cell = r.u32()?;
        let rows = r.u64()?;
        let range = KeyRange {
            start: r.u64()?,
            end: r.u64()?,
        };
        let n = r.u64()?;
        r.fits(n, 8, "keys")?;
        let keys = r.array(n as usize, u64::from_le_bytes)?;
        let n = r.u64()?;
        r.fits(n, 4, "values")?;
        let values = r.array(n as usize, |b| f32::from_bits(u32::from_le_bytes(b)))?;
        let n = r.u64()?;
        r.fits(n, 4, "state floats")?;
        let state = r.array(n as usize, |b| f32::from_bits(u32::from_le_bytes(b)))?;
        tables.push(TableSlice {
            id,
            rows,
            width,
            state_per_cell,
            layout,
            range,
            values,
            state,
            keys,
        });
    }
    if r.left() != 0 {
        return Err(malformed(format!(
            "{} bytes left after the last table",
            r.left()
        )));
    }
    Ok(ShardSnapshot {
        version,
        fingerprint,
        shard,
        num_shards,
        num_workers,
        deterministic: flags & 1 == 1,
        clock,
        completed,
        live,
        tables,
    })
}

fn malformed(why: String) -> CheckpointError {
    CheckpointError::Malformed(why)
}

/// A bounds-checked little-endian cursor over a checksummed body: running out of bytes there
/// means the counts inside are wrong, so it is [`CheckpointError::Malformed`].
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// Checks that `count` items of `size` bytes fit in what is left, before allocating them.
    fn fits(&self, count: u64, size: u64, what: &str) -> Result<(), CheckpointError> {
        match count.checked_mul(size) {
            Some(n) if n <= self.left() as u64 => Ok(()),
            _ => Err(malformed(format!(
                "{count} {what} at offset {} need more than the {} bytes left",
                HEADER + self.at,
                self.left()
            ))),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut out = [0u8; N];
        let src = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| malformed(format!("body ends at offset {}", HEADER + self.at)))?;
        out.copy_from_slice(src);
        self.at += N;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        self.take().map(u64::from_le_bytes)
    }

    /// `n` items of `N` bytes (the caller checked that they fit with [`Reader::fits`]).
    fn array<const N: usize, T>(
        &mut self,
        n: usize,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, CheckpointError> {
        let len = n
            .checked_mul(N)
            .filter(|len| *len <= self.left())
            .ok_or_else(|| malformed(format!("{n} items overrun the body")))?;
        let src = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(src
            .chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShardSnapshot {
        ShardSnapshot {
            version: FORMAT_VERSION,
            fingerprint: 0x0123_4567_89ab_cdef,
            shard: 1,
            num_shards: 2,
            num_workers: 3,
            deterministic: false,
            clock: 4,
            completed: vec![4, 6, 9],
            live: vec![true, true, false],
            tables: vec![
                TableSlice {
                    id: 2,
                    rows: 6,
                    width: 2,
                    state_per_cell: 1,
                    layout: Layout::Dense,
                    range: KeyRange { start: 3, end: 6 },
                    values: vec![1.0, -2.5, f32::MIN_POSITIVE, 0.0, -0.0, 7.0],
                    state: vec![0.25; 6],
                    keys: vec![],
                },
                TableSlice {
                    id: 9,
                    rows: u64::MAX,
                    width: 1,
                    state_per_cell: 2,
                    layout: Layout::Sparse,
                    range: KeyRange {
                        start: u64::MAX / 2,
                        end: u64::MAX,
                    },
                    values: vec![0.5, -0.125],
                    state: vec![1.0, 2.0, 3.0, 4.0],
                    keys: vec![u64::MAX - 1, u64::MAX / 2],
                },
            ],
        }
    }

    #[test]
    fn round_trip_keeps_every_bit() {
        let s = sample();
        let bytes = encode(&s);
        assert_eq!(&bytes[..8], &MAGIC);
        assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
        let body = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        assert_eq!(body as usize + 24, bytes.len());
        let back = decode(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.tables[0].values[4].to_bits(), (-0.0f32).to_bits());
        assert_eq!(encode(&back), bytes, "encoding is deterministic");
        let empty = ShardSnapshot {
            num_workers: 0,
            completed: vec![],
            live: vec![],
            tables: vec![],
            clock: 0,
            ..s
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    /// Flips one bit at many positions (every byte of a small file): each is caught, and a
    /// flip is always "corrupt" (skippable), never a refusal.
    #[test]
    fn a_flipped_bit_anywhere_is_detected() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for bit in [0u8, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                match decode(&b) {
                    Err(e) => assert!(e.is_corrupt(), "byte {i} bit {bit}: {e}"),
                    Ok(_) => panic!("byte {i} bit {bit}: flip not detected"),
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            let e = decode(&bytes[..n]).expect_err("truncated");
            assert!(
                matches!(e, CheckpointError::Truncated { have, .. } if have == n as u64),
                "{n}: {e}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode(&long), Err(CheckpointError::Malformed(_))));
        assert!(matches!(
            decode(b"PK\x03\x04 a zip file"),
            Err(CheckpointError::BadMagic)
        ));
    }

    /// Re-seals bytes after an edit: a file that is intact but says something else.
    fn reseal(mut b: Vec<u8>) -> Vec<u8> {
        let end = b.len() - 4;
        let crc = crc32fast::hash(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn an_intact_file_of_another_version_is_refused_not_skipped() {
        let s = ShardSnapshot {
            version: 2,
            ..sample()
        };
        let e = decode(&encode(&s)).unwrap_err();
        assert!(
            matches!(
                e,
                CheckpointError::UnsupportedVersion {
                    found: 2,
                    supported: 1
                }
            ),
            "{e}"
        );
        assert!(!e.is_corrupt());
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        let bytes = encode(&sample());
        // The worker count (body offset 16) set to u32::MAX, the first key count and value
        // count to huge values: each would need far more bytes than the file has.
        let first_table = HEADER + 32 + 9 * 3 + 4;
        let values_count = first_table + 45;
        for (at, huge) in [
            (HEADER + 16, u32::MAX.to_le_bytes().to_vec()),
            (first_table + 37, u64::MAX.to_le_bytes().to_vec()),
            (values_count, (u64::MAX / 4 + 1).to_le_bytes().to_vec()),
            (values_count, (1u64 << 40).to_le_bytes().to_vec()),
        ] {
            let mut b = bytes.clone();
            b[at..at + huge.len()].copy_from_slice(&huge);
            let e = decode(&reseal(b)).unwrap_err();
            assert!(matches!(e, CheckpointError::Malformed(_)), "{at}: {e}");
        }
        // A body length near u64::MAX is truncation or nonsense, never an allocation.
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(decode(&b).unwrap_err().is_corrupt());
    }

    proptest::proptest! {
        /// Random edits of a valid file, re-sealed so that the checksum holds and the body
        /// parser sees them: decode never panics, and what it accepts encodes back the same.
        #[test]
        fn resealed_edits_never_panic(
            edits in proptest::collection::vec((0usize..1000, proptest::num::u8::ANY), 1..6),
            cut in 0usize..40,
        ) {
            let mut b = encode(&sample());
            for (at, byte) in edits {
                let i = HEADER + at % (b.len() - HEADER - TRAILER);
                b[i] = byte;
            }
            let b = reseal(b);
            if let Ok(s) = decode(&b) {
                proptest::prop_assert_eq!(encode(&s), b.clone());
            }
            // The same with the body cut short and the length patched to match.
            let n = b.len() - TRAILER - cut.min(b.len() - HEADER - TRAILER);
            let mut short = b[..n].to_vec();
            let body = (n - HEADER) as u64;
            short[12..HEADER].copy_from_slice(&body.to_le_bytes());
            short.extend_from_slice(&[0; 4]);
            let _ = decode(&reseal(short));
        }

        /// Arbitrary bytes after a valid magic: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&tail);
            let _ = decode(&b);
            if b.len() >= HEADER + TRAILER {
                let _ = decode(&reseal(b));
            }
        }
    }

    #[test]
    fn inconsistent_snapshots_are_malformed() {
        let mut s = sample();
        s.tables[0].values.pop();
        let e = decode(&encode(&s)).unwrap_err();
        assert!(
            e.to_string().contains("5 values for 3 rows of width 2"),
            "{e}"
        );
        let mut s = sample();
        s.tables[1].keys[0] = 3;
        assert!(decode(&encode(&s))
            .unwrap_err()
            .to_string()
            .contains("key 3 outside"));
        let mut s = sample();
        s.clock = 5;
        assert!(decode(&encode(&s))
            .unwrap_err()
            .to_string()
            .contains("min clock is 4"));
        let mut s = sample();
        s.deterministic = true;
        assert!(decode(&encode(&s))
            .unwrap_err()
            .to_string()
            .contains("deterministic"));
        let mut s = sample();
        s.tables[1].id = 2;
        assert!(decode(&encode(&s))
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
