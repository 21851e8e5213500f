//! How a worker's update of one table at one clock is cut into push frames, and the codec chain
//! each frame's block is encoded with. Pure; no I/O.
//!
//! The worker library's encoder follows this plan, and so does an engine that compresses its
//! delta itself (a GPU worker, before the bytes cross PCIe): the same blocks under the same
//! chain give the same bytes. A block is a run of consecutive keys (sorted) within one shard's
//! key range and of at most [`rows_per_frame`] rows; a top-k fraction is of one block.

use crate::codec::CodecChain;
use crate::{ShardMap, TableSpec};
use std::ops::Range;

/// Rows of `width` values that fit in a frame body of `max_body` bytes (at least one).
pub fn rows_per_frame(width: u32, max_body: u64) -> usize {
    (max_body / (8 + 4 * u64::from(width))).max(1) as usize
}

/// Rows a frame of exact sparse entries holds (`codec::encode_exact_selection`): one byte of
/// slack below [`rows_per_frame`], since such a payload may be one byte over the raw rows.
pub fn entries_per_frame(width: u32, max_body: u64) -> usize {
    rows_per_frame(width, max_body.saturating_sub(1))
}

/// One frame's block: `keys[rows]`, all on shard `shard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushBlock {
    pub shard: u32,
    pub rows: Range<usize>,
}

/// The blocks of `keys` (sorted, distinct, `< nrows`) over `nshards` shards with at most
/// `per_frame` rows each, in key order.
pub fn push_blocks(keys: &[u64], nrows: u64, nshards: u32, per_frame: usize) -> Vec<PushBlock> {
    let per_frame = per_frame.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let shard = ShardMap::shard_of(nrows, nshards, keys[start]);
        let end_row = ShardMap::range_of(nrows, nshards, shard).end;
        let mut end = start;
        while end < keys.len() && keys[end] < end_row && end - start < per_frame {
            end += 1;
        }
        out.push(PushBlock {
            shard,
            rows: start..end,
        });
        start = end;
    }
    out
}

/// The chain a table's push codec encodes with at `clock`: the warm-up applied, the row width
/// set, and with `flush` (the job's last clock) every selection stage left out, so whatever
/// is pending or held back goes in the chain's value format.
pub fn chain_at(codec: &CodecChain, clock: u64, width: u32, flush: bool) -> CodecChain {
    let mut chain = codec.at_clock(clock).for_rows(width);
    if flush {
        chain.selectors.clear();
    }
    chain
}

/// How one table's update of `keys` at a clock goes out: the chain and the frames' blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct PushPlan {
    pub chain: CodecChain,
    pub blocks: Vec<PushBlock>,
}

impl PushPlan {
    /// The plan of table `spec`'s update of `keys` (sorted, distinct) at `clock`.
    pub fn new(
        spec: &TableSpec,
        keys: &[u64],
        nshards: u32,
        clock: u64,
        flush: bool,
        max_body: u64,
    ) -> PushPlan {
        PushPlan {
            chain: chain_at(&spec.push_codec, clock, spec.width, flush),
            blocks: push_blocks(
                keys,
                spec.rows,
                nshards,
                rows_per_frame(spec.width, max_body),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_stop_at_shard_boundaries_and_at_the_frame_size() {
        // 10 rows over 2 shards: rows 0..5 and 5..10.
        let keys = [0, 1, 2, 3, 4, 5, 6, 9];
        let b = push_blocks(&keys, 10, 2, 3);
        let got: Vec<(u32, Range<usize>)> = b.into_iter().map(|b| (b.shard, b.rows)).collect();
        assert_eq!(got, vec![(0, 0..3), (0, 3..5), (1, 5..8)]);
        assert!(push_blocks(&[], 10, 2, 3).is_empty());
        // A zero frame size still makes progress, one row a block.
        assert_eq!(push_blocks(&[1, 2], 10, 1, 0).len(), 2);
    }

    #[test]
    fn the_last_clock_drops_selection_and_the_warm_up_relaxes_it() {
        let codec: CodecChain = "topk:0.01,warmup:2,rows:0.5,f16".parse().unwrap();
        let flush = chain_at(&codec, 5, 8, true);
        assert!(flush.selectors.is_empty());
        assert_eq!(flush.to_string(), "f16");
        let early = chain_at(&codec, 0, 8, false);
        assert_eq!(early, codec.at_clock(0).for_rows(8));
        assert_ne!(early.selectors, codec.selectors, "relaxed at clock 0");
        assert_eq!(rows_per_frame(1, 12), 1);
        assert_eq!(rows_per_frame(1, 120), 10);
        assert_eq!(rows_per_frame(1024, 0), 1);
    }
}
