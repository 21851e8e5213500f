//! A sweep's delta as the bytes the worker library puts on the wire, made where the delta was
//! made: for a device engine, so that only those bytes cross PCIe ([`super::LdaResident::sweep_wire`]).
//! Pure; no I/O.
//!
//! The worker library sends a lossless table's entries as exact sparse payloads, one per frame
//! block (`ps_proto::push_plan`; a block is a run of the touched rows on one shard). An engine
//! that encodes its own delta asks the sink how the touched words are cut
//! ([`crate::app::DeltaSink::entries_blocks`]), encodes each block as
//! `ps_proto::codec::encode_exact_selection` would, and hands the payloads back
//! ([`crate::app::DeltaSink::encoded`]): the frames on the wire are the same bytes.
//!
//! A device engine learns which rows it touched from a bitmap (a bit a local row: less than a
//! wire key costs), and hands the device each block as four words ([`block_words`]).

use std::ops::Range;

use super::LdaDelta;
use ps_proto::codec::{encode_exact_selection, exact_wire_id, ValueFormat};

/// How a sweep's touched words are cut into frame blocks: given the touched words (global ids,
/// ascending), the runs of them that go out as one payload each, in order, covering them all.
pub type Cut<'a> = dyn FnMut(&[u64]) -> Result<Vec<Range<usize>>, String> + 'a;

/// One frame block of a [`WireDelta`]: `keys[rows]` as one exact sparse payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBlock {
    pub rows: Range<usize>,
    pub wire_id: u16,
    pub payload: Vec<u8>,
}

/// A sweep's delta, encoded: the touched words' rows as exact sparse payloads, and the totals'
/// change (one value a topic, sent as a raw row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireDelta {
    pub topics: u32,
    /// The touched words, ascending.
    pub keys: Vec<u64>,
    pub blocks: Vec<WireBlock>,
    pub totals: Vec<i32>,
}

/// The local rows whose bit is set in `bitmap` (bit `r % 32` of word `r / 32`), of `rows`.
pub fn touched_rows(bitmap: &[u32], rows: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for (w, &bits) in bitmap.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let r = w * 32 + b.trailing_zeros() as usize;
            if r < rows {
                out.push(r as u32);
            }
            b &= b - 1;
        }
    }
    out
}

/// Checks that `cut` covers `0..n` with non-empty runs in order.
pub fn check_cut(cut: &[Range<usize>], n: usize) -> Result<(), String> {
    let mut at = 0;
    for r in cut {
        if r.start != at || r.end <= r.start {
            return Err(format!(
                "the frame blocks {r:?} do not follow on from row {at} of the touched rows"
            ));
        }
        at = r.end;
    }
    if at != n {
        return Err(format!(
            "the frame blocks end at row {at} of the {n} touched rows"
        ));
    }
    Ok(())
}

/// The device's description of each block of `cut` over the touched local rows `touched`
/// (ascending): its first local row, the local row after its last, its first place among the
/// touched rows, and how many it has (`kernels/lda_wire.cu`'s `LDA_WIRE_BLOCK_WORDS`).
pub fn block_words(touched: &[u32], cut: &[Range<usize>]) -> Result<Vec<u32>, String> {
    check_cut(cut, touched.len())?;
    let mut out = Vec::with_capacity(4 * cut.len());
    for r in cut {
        let place = u32::try_from(r.start).map_err(|_| "too many touched rows".to_string())?;
        out.extend([
            touched[r.start],
            touched[r.end - 1] + 1,
            place,
            (r.end - r.start) as u32,
        ]);
    }
    Ok(out)
}

/// The wire id of a block whose values the device wrote in `bytes` bytes each (1: `i8`, 2:
/// `i16`, 4: `f32`).
pub fn wire_id_of(bytes: u32) -> Option<u16> {
    match bytes {
        1 => Some(exact_wire_id(ValueFormat::I8)),
        2 => Some(exact_wire_id(ValueFormat::I16)),
        4 => Some(exact_wire_id(ValueFormat::F32)),
        _ => None,
    }
}

/// The blocks of a delta's entries (`(word, topic, change)`, sorted, no zero change, topics
/// `< k`) encoded on the host, as the worker library would; `cut` says the blocks. What a
/// device engine's payloads must equal byte for byte.
pub fn encode_on_host(
    entries: &[(u32, u32, i32)],
    k: u32,
    cut: &mut Cut<'_>,
) -> Result<(Vec<u64>, Vec<WireBlock>), String> {
    let mut keys: Vec<u64> = Vec::new();
    // Each entry's place among the touched words.
    let mut place = Vec::with_capacity(entries.len());
    for &(w, t, _) in entries {
        if t >= k {
            return Err(format!("topic {t} of word {w} is outside the {k} topics"));
        }
        if keys.last() != Some(&u64::from(w)) {
            if keys.last().is_some_and(|&l| l > u64::from(w)) {
                return Err("the delta's words are out of order".into());
            }
            keys.push(u64::from(w));
        }
        place.push(keys.len() - 1);
    }
    let ranges = cut(&keys)?;
    check_cut(&ranges, keys.len())?;
    let mut blocks = Vec::with_capacity(ranges.len());
    let mut e = 0;
    for rows in ranges {
        let first = e;
        while e < entries.len() && place[e] < rows.end {
            e += 1;
        }
        let sel: Vec<u32> = (first..e)
            .map(|j| {
                ((place[j] - rows.start) as u64 * u64::from(k) + u64::from(entries[j].1)) as u32
            })
            .collect();
        let values: Vec<f32> = entries[first..e].iter().map(|x| x.2 as f32).collect();
        let n = (rows.end - rows.start) * k as usize;
        let mut payload = Vec::new();
        let wire_id = encode_exact_selection(n, &sel, &values, &mut payload)
            .map_err(|err| err.to_string())?;
        blocks.push(WireBlock {
            rows,
            wire_id,
            payload,
        });
    }
    Ok((keys, blocks))
}

/// A sweep's delta encoded on the host ([`encode_on_host`]), with its totals' change.
pub fn wire_delta(delta: LdaDelta, cut: &mut Cut<'_>) -> Result<WireDelta, String> {
    let (keys, blocks) = encode_on_host(&delta.entries, delta.topics, cut)?;
    Ok(WireDelta {
        topics: delta.topics,
        keys,
        blocks,
        totals: delta.totals,
    })
}

/// Bytes a block's description takes to the device (`LDA_WIRE_BLOCK_WORDS` words).
pub const BLOCK_BYTES: u64 = 16;
/// Bytes a block's plan takes back (`LDA_WIRE_PLAN_WORDS` words).
pub const PLAN_BYTES: u64 = 32;

/// The bytes a device engine's wire path copies for `wire` over `rows` local rows, (in, out):
/// in, the blocks' descriptions; out, the delta's two sizes, the touched rows' bitmap, each
/// block's plan and its payload (each starting at a 4-byte boundary), and the totals' change.
pub fn device_bytes(wire: &WireDelta, rows: usize) -> (u64, u64) {
    let blocks = wire.blocks.len() as u64;
    let payloads: u64 = wire
        .blocks
        .iter()
        .map(|b| (b.payload.len() as u64).next_multiple_of(4))
        .sum();
    let out = 8 + 4 * rows.div_ceil(32) as u64 + PLAN_BYTES * blocks + payloads;
    (BLOCK_BYTES * blocks, out + 4 * wire.totals.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::codec::decode;

    #[test]
    fn bitmaps_cuts_and_block_words() {
        // Rows 0, 3, 31, 32 and 40 of 41 (a bit past the rows is ignored).
        let bitmap = [1 | 1 << 3 | 1 << 31, 1 | 1 << 8 | 1 << 9];
        let touched = touched_rows(&bitmap, 41);
        assert_eq!(touched, vec![0, 3, 31, 32, 40]);
        let cut = [0..2, 2..5];
        assert_eq!(
            block_words(&touched, &cut).unwrap(),
            vec![0, 4, 0, 2, 31, 41, 2, 3]
        );
        assert!(block_words(&touched, &[0..2, 3..5]).is_err(), "a hole");
        let short: Vec<Range<usize>> = std::iter::once(0..2).collect();
        assert!(block_words(&touched, &short).is_err(), "short");
        assert!(block_words(&touched, &[0..0, 0..5]).is_err(), "empty block");
        assert!(block_words(&[], &[]).unwrap().is_empty());
        assert_eq!(wire_id_of(3), None);
    }

    #[test]
    fn host_encoding_decodes_to_the_entries_by_block() {
        let k = 10u32;
        let entries = [(2, 0, 1), (2, 9, -3), (5, 4, 200), (9, 1, 1), (9, 2, 1)];
        let mut cut = |keys: &[u64]| {
            assert_eq!(keys, [2, 5, 9]);
            Ok(vec![0..2, 2..3])
        };
        let (keys, blocks) = encode_on_host(&entries, k, &mut cut).unwrap();
        assert_eq!(keys, vec![2, 5, 9]);
        let first = decode(blocks[0].wire_id, &blocks[0].payload, 20)
            .unwrap()
            .into_dense(20)
            .unwrap();
        let mut want = vec![0f32; 20];
        want[0] = 1.0;
        want[9] = -3.0;
        want[14] = 200.0;
        assert_eq!(first, want);
        assert_eq!(blocks[0].wire_id, exact_wire_id(ValueFormat::I16));
        assert_eq!(blocks[1].wire_id, exact_wire_id(ValueFormat::I8));
        let mut bad = |_: &[u64]| Ok(std::iter::once(0..1).collect());
        assert!(encode_on_host(&entries, k, &mut bad).is_err());
        assert!(encode_on_host(&[(1, 10, 1)], k, &mut cut).is_err());
    }
}
