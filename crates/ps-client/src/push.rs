//! Turns one table's updates of a clock into push frames, per shard, with the table's push codec.
//! Pure: no I/O.
//!
//! A lossless chain (`raw`) sends the pending rows as they are (a frame's rows that are mostly
//! zero as their nonzero entries, `codec::exact_sparse`). A lossy chain sends the pending
//! rows plus the rows' residual (what earlier clocks did not send) and keeps what it does not
//! send this time as the new residual: error feedback, so over any run of clocks
//! `sent + residual = sum of updates`. The rows of one frame are one codec block; a top-k
//! fraction is of that block.

use crate::cache::{RowMap, TableCache};
use crate::entries::{Entries, Sent};
use crate::par::par_map;
use crate::pending::Block;
use ps_proto::codec::{self, ErrorFeedback};
use ps_proto::push_plan::{chain_at, entries_per_frame, push_blocks, rows_per_frame};
use ps_proto::{Frame, FrameBuilder, ProtoError, PushBlock, ShardMap, TableSpec, HEADER_LEN};

/// Raw f32 size of a push frame of `rows` rows of `width` with listed keys.
pub fn raw_push_bytes(rows: usize, width: u32) -> u64 {
    HEADER_LEN as u64 + rows as u64 * (8 + 4 * width as u64)
}

/// Appends table `spec`'s frames for `clock` to `out[shard]`; returns their raw f32 size.
/// Takes the cache's pending updates and updates what it keeps (residual, own log). With
/// `flush`, a lossy chain's selection stages are left out: every pending and residual row goes,
/// in the chain's value format.
///
/// Dense updates of a lossless table go from the pending block into the frames' payloads with
/// one copy, and the block itself becomes the own-log entry. Blocks the caller encoded go out
/// as they are.
pub fn encode_table(
    spec: &TableSpec,
    cache: &mut TableCache,
    worker: u32,
    clock: u64,
    flush: bool,
    max_body: u64,
    out: &mut [Vec<Frame>],
) -> Result<u64, ProtoError> {
    let nshards = out.len() as u32;
    let (id, width, nrows) = (spec.id, spec.width, spec.rows);
    let w = width as usize;
    let chain = &chain_at(&spec.push_codec, clock, width, flush);
    // Whether there is a residual is the table's codec's to say: the last clock of `topk:K`
    // encodes with plain f32, which keeps none, but sends what the earlier clocks held back.
    let lossless = spec.push_codec.is_lossless();
    let per_frame = rows_per_frame(width, max_body);
    let mut logical = 0u64;
    let mut sent_log: Vec<Sent> = Vec::new();

    for e in std::mem::take(&mut cache.pending.encoded) {
        logical += raw_push_bytes(e.keys.len(), width);
        let s = ShardMap::shard_of(nrows, nshards, e.keys.first().copied().unwrap_or(0));
        let mut frame =
            FrameBuilder::push_encoded(id, worker, clock, width, &e.keys, e.wire_id, e.payload);
        frame.compact_keys();
        out[s as usize].push(frame);
        // A clock's exact blocks (an engine's entries, frame by frame) are logged as one, as
        // the library's own entries are: reads walk the log once per block.
        match (sent_log.last_mut(), e.decoded) {
            (Some(Sent::Entries(last)), Some(Sent::Entries(next))) => {
                if let Err(next) = last.append(next, w) {
                    sent_log.push(Sent::Entries(next));
                }
            }
            (_, decoded) => sent_log.extend(decoded),
        }
    }

    let per_entries_frame = entries_per_frame(width, max_body);
    for e in std::mem::take(&mut cache.pending.entries) {
        if lossless {
            logical += entries_frames(&e, spec, worker, clock, per_entries_frame, out)?;
            if cache.overlay {
                sent_log.push(Sent::Entries(e));
            }
        } else {
            // Only lossless tables take entries (`Table::push_entries`); a lossy chain
            // selects from the dense rows.
            cache.pending.blocks.push(e.to_block(w));
        }
    }

    if chain.momentum > 0.0 {
        momentum_step(cache, w, chain.momentum);
    }
    let extra = if lossless {
        &mut Default::default()
    } else {
        &mut cache.residual
    };
    let block = cache.pending.take_dense(w, extra);
    for PushBlock { shard: s, rows } in push_blocks(&block.keys, nrows, nshards, per_frame) {
        let keys = &block.keys[rows.clone()];
        let values = &block.values[rows.start * w..rows.end * w];
        logical += raw_push_bytes(keys.len(), width);
        let mut frame = if lossless {
            // Exact either way: mostly-zero rows (LDA's count deltas) go as their nonzero
            // entries, the rest as raw f32.
            match codec::exact_sparse(values) {
                Some((wire_id, p)) => {
                    FrameBuilder::push_encoded(id, worker, clock, width, keys, wire_id, p)
                }
                None => FrameBuilder::push(id, worker, clock, width, keys, values),
            }
        } else {
            let n = values.len();
            let current = chain.needs_current().then(|| {
                let mut cur = Vec::with_capacity(n);
                for k in keys {
                    cache.cached_or_zeros(*k, &mut cur);
                }
                cur
            });
            let mut ef = ErrorFeedback::new(n);
            let mut payload = Vec::new();
            ef.compress(chain, values, current.as_deref(), &mut payload)?;
            for (k, r) in keys.iter().zip(ef.residual().chunks_exact(w)) {
                if r.iter().any(|x| *x != 0.0) {
                    cache.residual.insert(*k, r.to_vec());
                }
            }
            if cache.overlay || chain.momentum > 0.0 {
                // What the shard will add, exactly: decode what goes on the wire.
                let sent = codec::decode(chain.wire_id(), &payload, n)?.into_dense(n)?;
                mask_velocity(&mut cache.velocity, keys, &sent, w);
                if cache.overlay {
                    sent_log.push(Sent::Rows(Block {
                        keys: keys.to_vec(),
                        values: sent,
                    }));
                }
            }
            FrameBuilder::push_encoded(id, worker, clock, width, keys, chain.wire_id(), payload)
        };
        frame.compact_keys();
        out[s as usize].push(frame);
    }
    if lossless && cache.overlay && !block.is_empty() {
        sent_log.push(Sent::Rows(block));
    }
    cache.log_sent(clock, sent_log);
    Ok(logical)
}

/// Appends the frames of entries `e` of table `spec` (exact sparse f32, at most `per_frame` rows
/// each, per shard) to `out[shard]`; returns their raw f32 size.
fn entries_frames(
    e: &Entries,
    spec: &TableSpec,
    worker: u32,
    clock: u64,
    per_frame: usize,
    out: &mut [Vec<Frame>],
) -> Result<u64, ProtoError> {
    let w = spec.width as usize;
    let blocks = push_blocks(&e.keys, spec.rows, out.len() as u32, per_frame);
    let encode = |b: &PushBlock| -> Result<Frame, ProtoError> {
        let keys = &e.keys[b.rows.clone()];
        let span = e.span(b.rows.clone(), w);
        let first = (b.rows.start * w) as u64;
        let sel: Vec<u32> = e.at[span.clone()]
            .iter()
            .map(|&p| (p - first) as u32)
            .collect();
        let mut payload = Vec::new();
        let wire_id =
            codec::encode_exact_selection(keys.len() * w, &sel, &e.values[span], &mut payload)?;
        let mut frame =
            FrameBuilder::push_encoded(spec.id, worker, clock, spec.width, keys, wire_id, payload);
        frame.compact_keys();
        Ok(frame)
    };
    // LDA's deltas run to millions of entries a clock: their frames are encoded on the
    // machine's threads (the same frames, in the same order).
    let frames = if e.values.len() >= PARALLEL_ENTRIES {
        par_map(&blocks, encode)
    } else {
        blocks.iter().map(encode).collect()
    };
    let mut logical = 0u64;
    for (b, frame) in blocks.iter().zip(frames) {
        logical += raw_push_bytes(b.rows.len(), spec.width);
        out[b.shard as usize].push(frame?);
    }
    Ok(logical)
}

/// Entries from which a table's push frames are encoded in parallel.
const PARALLEL_ENTRIES: usize = 1 << 16;

/// Momentum correction (Deep Gradient Compression): every row's velocity becomes
/// `momentum * u + delta` (this clock's pending rows being the delta), and the velocities
/// replace the pending rows, so they are what error feedback adds to the residual.
fn momentum_step(cache: &mut TableCache, w: usize, momentum: f32) {
    let delta = cache.pending.take_dense(w, &mut Default::default());
    for u in cache.velocity.values_mut() {
        u.iter_mut().for_each(|x| *x *= momentum);
    }
    for (k, row) in delta.keys.iter().zip(delta.values.chunks_exact(w)) {
        let u = cache.velocity.entry(*k).or_insert_with(|| vec![0.0; w]);
        u.iter_mut().zip(row).for_each(|(u, d)| *u += d);
    }
    let mut keys: Vec<u64> = cache.velocity.keys().copied().collect();
    keys.sort_unstable();
    let mut values = Vec::with_capacity(keys.len() * w);
    for k in &keys {
        values.extend_from_slice(&cache.velocity[k]);
    }
    cache.pending.blocks.push(Block { keys, values });
}

/// Momentum-factor masking: an entry that was sent starts its velocity again from zero. Rows
/// left all zero are dropped.
fn mask_velocity(velocity: &mut RowMap<Vec<f32>>, keys: &[u64], sent: &[f32], w: usize) {
    if velocity.is_empty() {
        return;
    }
    for (k, s) in keys.iter().zip(sent.chunks_exact(w)) {
        if let Some(u) = velocity.get_mut(k) {
            for (u, s) in u.iter_mut().zip(s) {
                if *s != 0.0 {
                    *u = 0.0;
                }
            }
            if u.iter().all(|x| *x == 0.0) {
                velocity.remove(k);
            }
        }
    }
}

/// Ends each shard's batch: the last push frame carries the end of the clock, or a bare clock
/// frame goes alone where the shard has no rows this clock. Returns the raw f32 equivalent of
/// what this adds (a separate clock frame per shard).
pub fn end_batches(worker: u32, clock: u64, out: &mut [Vec<Frame>]) -> u64 {
    for frames in out.iter_mut() {
        let count = frames.len() as u64;
        match frames.last_mut() {
            Some(last) => last.end_clock(count),
            None => frames.push(FrameBuilder::clock(worker, clock, 0)),
        }
    }
    out.len() as u64 * HEADER_LEN as u64
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use ps_proto::codec::CodecChain;
    use ps_proto::{Init, UpdateRule};
    use std::collections::HashMap;

    pub fn spec(codec: &str) -> TableSpec {
        TableSpec {
            id: 3,
            name: "t".into(),
            rows: 100,
            width: 4,
            rule: UpdateRule::Add,
            init: Init::Zeros,
            staleness: Some(0),
            layout: Default::default(),
            push_codec: codec.parse::<CodecChain>().unwrap(),
            pull_codec: Default::default(),
        }
    }

    /// Sum of every value in the own log (what was sent, as the shards decode it).
    pub fn logged_sum(cache: &TableCache) -> f32 {
        cache
            .own_log
            .values()
            .flatten()
            .flat_map(|b| b.values().iter())
            .sum()
    }

    /// Sum of what the frames of `out` carry, per row.
    pub fn sent(out: &[Vec<Frame>]) -> HashMap<u64, Vec<f32>> {
        let mut m: HashMap<u64, Vec<f32>> = HashMap::new();
        for f in out.iter().flatten() {
            if f.header.kind != ps_proto::Kind::Push {
                continue;
            }
            let v = f.values().unwrap();
            for (k, row) in f.keys.iter().zip(v.chunks_exact(f.header.width as usize)) {
                let e = m.entry(*k).or_insert_with(|| vec![0.0; row.len()]);
                for (a, b) in e.iter_mut().zip(row) {
                    *a += b;
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn raw_rows_go_to_their_shards_with_range_keys_and_one_end_of_clock() {
        let spec = spec("raw");
        let mut cache = TableCache::new(4, true);
        let keys = vec![1u64, 2, 3, 60, 99];
        let values = keys.iter().flat_map(|&r| [r as f32; 4]).collect();
        cache.pending.blocks.push(Block { keys, values });
        let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
        let logical = encode_table(&spec, &mut cache, 0, 7, false, 1 << 20, &mut out).unwrap();
        assert_eq!(logical, 3 * HEADER_LEN as u64 + 5 * (8 + 16));
        end_batches(0, 7, &mut out);
        // Rows 0..34 on shard 0, 34..67 on 1, 67..100 on 2.
        assert_eq!(out[0][0].keys, vec![1, 2, 3]);
        assert_eq!(out[0][0].key_form, ps_proto::KeyForm::Range);
        assert_eq!(out[0][0].header.key_section_len(), 8);
        for frames in &out {
            assert_eq!(frames.len(), 1);
            assert!(frames[0].header.flags & ps_proto::FLAG_END_CLOCK != 0);
            assert_eq!(frames[0].header.aux, 1);
        }
        assert_eq!(sent(&out)[&60], vec![60.0; 4]);
        assert_eq!(cache.own_log[&7][0].keys().len(), 5);
        assert!(cache.residual.is_empty());
    }

    #[test]
    fn mostly_zero_raw_rows_go_as_their_nonzero_entries_exactly() {
        let mut spec = spec("raw");
        spec.width = 1000;
        let mut cache = TableCache::new(1000, true);
        // LDA-like count deltas: a few cells of each row, one -0.0; and one dense row alone.
        let keys: Vec<u64> = (0..30).collect();
        let mut values = vec![0f32; 30 * 1000];
        for r in 0..30 {
            values[r * 1000 + (r * 37) % 1000] = r as f32 - 3.0;
            values[r * 1000 + 999] = 1.0;
        }
        values[5 * 1000 + 1] = -0.0;
        cache.pending.blocks.push(Block {
            keys: keys.clone(),
            values: values.clone(),
        });
        let mut out = vec![Vec::new()];
        encode_table(&spec, &mut cache, 0, 2, false, 1 << 20, &mut out).unwrap();
        let f = &out[0][0];
        assert_eq!(
            f.header.codec,
            ps_proto::Codec::Encoded(codec::EXACT_SPARSE_WIRE_ID)
        );
        assert!(f.payload.len() < 1000, "{} bytes", f.payload.len());
        let back = f.values().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&back) == bits(&values),
            "the rows must come back bit for bit"
        );
        // The own log keeps what the shards apply, the same rows.
        assert!(cache.own_log[&2][0].values() == values);

        let dense: Vec<f32> = (0..1000).map(|i| i as f32 + 0.5).collect();
        cache.pending.blocks.push(Block {
            keys: vec![40],
            values: dense.clone(),
        });
        let mut out = vec![Vec::new()];
        encode_table(&spec, &mut cache, 0, 3, false, 1 << 20, &mut out).unwrap();
        assert_eq!(out[0][0].header.codec, ps_proto::Codec::RawF32);
        assert_eq!(out[0][0].values().unwrap(), dense);
    }

    #[test]
    fn many_entries_are_encoded_in_parallel_into_the_same_frames_in_order() {
        let mut spec = spec("raw");
        (spec.rows, spec.width) = (300, 1000);
        // 300 entries in each of 300 rows: above PARALLEL_ENTRIES, many frames, three shards.
        let keys: Vec<u64> = (0..300).collect();
        let at: Vec<u64> = (0..300u64)
            .flat_map(|r| (0..300u64).map(move |j| r * 1000 + j * 3 + r % 3))
            .collect();
        let values: Vec<f32> = (0..at.len()).map(|i| (i % 7) as f32 - 3.0).collect();
        assert!(values.len() >= PARALLEL_ENTRIES);
        let e = Entries { keys, at, values };
        let encode = |e: Entries| {
            let mut cache = TableCache::new(1000, false);
            cache.pending.entries.push(e);
            let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
            encode_table(&spec, &mut cache, 0, 5, false, 64 << 10, &mut out).unwrap();
            out
        };
        let out = encode(e.clone());
        assert!(out.iter().all(|f| f.len() > 3), "several frames a shard");
        // Every frame's rows in order, and the rows' values as the entries give them.
        let rows: Vec<u64> = out.iter().flatten().flat_map(|f| f.keys.clone()).collect();
        assert_eq!(rows, e.keys);
        let got = sent(&out);
        let want = e.to_block(1000);
        for (i, k) in e.keys.iter().enumerate() {
            assert_eq!(got[k], want.values[i * 1000..(i + 1) * 1000], "row {k}");
        }
        // Each frame as its rows alone encode (under the threshold, on this thread).
        let per = rows_per_frame(1000, (64 << 10) - 1);
        let blocks = push_blocks(&e.keys, 300, 3, per);
        let frames: Vec<&Frame> = out.iter().flatten().collect();
        assert_eq!(frames.len(), blocks.len());
        let mut at_shard = [0usize; 3];
        for b in &blocks {
            let span = e.span(b.rows.clone(), 1000);
            let first = (b.rows.start * 1000) as u64;
            let piece = Entries {
                keys: e.keys[b.rows.clone()].to_vec(),
                at: e.at[span.clone()].iter().map(|p| p - first).collect(),
                values: e.values[span].to_vec(),
            };
            assert!(piece.values.len() < PARALLEL_ENTRIES);
            let alone = encode(piece);
            let s = b.shard as usize;
            let (got, want) = (&out[s][at_shard[s]], &alone[s][0]);
            assert!(
                got.keys == want.keys && got.payload == want.payload,
                "rows {:?}: another frame",
                b.rows
            );
            at_shard[s] += 1;
        }
    }

    #[test]
    fn a_shard_without_rows_gets_a_bare_clock_frame() {
        let mut out = vec![Vec::new(), Vec::new()];
        end_batches(1, 4, &mut out);
        assert_eq!(out[1][0].header.kind, ps_proto::Kind::Clock);
        assert_eq!(out[1][0].header.clock, 4);
    }

    #[test]
    fn error_feedback_conserves_every_update_across_clocks() {
        let spec = spec("topk:0.1,f16");
        let mut cache = TableCache::new(4, true);
        let mut total: HashMap<u64, Vec<f32>> = HashMap::new();
        let mut got: HashMap<u64, Vec<f32>> = HashMap::new();
        for clock in 0..6u64 {
            for r in 0..40u64 {
                let row: Vec<f32> = (0..4)
                    .map(|c| ((r * 7 + c * 3 + clock * 11) % 13) as f32 / 13.0 - 0.4)
                    .collect();
                let t = total.entry(r).or_insert_with(|| vec![0.0; 4]);
                for (a, b) in t.iter_mut().zip(&row) {
                    *a += b;
                }
                cache.pending.singles.insert(r, row);
            }
            let mut out = vec![Vec::new(), Vec::new()];
            encode_table(&spec, &mut cache, 0, clock, false, 1 << 20, &mut out).unwrap();
            for (k, v) in sent(&out) {
                let e = got.entry(k).or_insert_with(|| vec![0.0; 4]);
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b;
                }
            }
        }
        for (k, t) in &total {
            let g = got.get(k).cloned().unwrap_or_else(|| vec![0.0; 4]);
            let r = cache
                .residual
                .get(k)
                .cloned()
                .unwrap_or_else(|| vec![0.0; 4]);
            for c in 0..4 {
                assert!(
                    (g[c] + r[c] - t[c]).abs() < 1e-3,
                    "row {k} col {c}: sent {} + residual {} != total {}",
                    g[c],
                    r[c],
                    t[c]
                );
            }
        }
        // The own log holds exactly what was sent (for read-my-writes).
        let logged = logged_sum(&cache);
        let sent_sum: f32 = got.values().flatten().sum();
        assert!((logged - sent_sum).abs() < 1e-3);
    }

    #[test]
    fn the_last_clock_sends_every_residual_row_in_the_format() {
        for codec in ["topk:0.05,q8", "topk:0.05"] {
            last_clock_sends_every_residual_row(codec);
        }
    }

    fn last_clock_sends_every_residual_row(codec: &str) {
        let spec = spec(codec);
        let mut cache = TableCache::new(4, true);
        let mut total = 0f32;
        for clock in 0..3u64 {
            for r in 0..40u64 {
                let row: Vec<f32> = (0..4).map(|c| ((r + c + clock) % 5) as f32 - 2.0).collect();
                total += row.iter().sum::<f32>();
                cache.pending.singles.insert(r, row);
            }
            let mut out = vec![Vec::new(), Vec::new()];
            encode_table(&spec, &mut cache, 0, clock, false, 1 << 20, &mut out).unwrap();
        }
        assert!(
            cache.residual.len() > 30,
            "{codec}: top-k held most rows back"
        );
        // Nothing new on the last clock: the flush sends what is left.
        let mut out = vec![Vec::new(), Vec::new()];
        encode_table(&spec, &mut cache, 0, 3, true, 1 << 20, &mut out).unwrap();
        let sent_rows = sent(&out).len();
        assert_eq!(sent_rows, 40, "{codec}: every row with a residual goes");
        let logged = logged_sum(&cache);
        let left: f32 = cache.residual.values().flatten().sum();
        assert!(
            (logged + left - total).abs() < 1e-3,
            "{codec}: sent + residual = total"
        );
        // q8 leaves at most half a step (max / 127 / 2) a value.
        let worst = cache
            .residual
            .values()
            .flatten()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(worst < 0.1, "{codec}: {worst}");
    }

    #[test]
    fn momentum_correction_feeds_the_velocity_and_masks_what_was_sent() {
        let spec = spec("topk:0.25,momentum:0.5");
        let mut cache = TableCache::new(4, true);
        let mut step = |clock, delta: [f32; 4]| {
            cache.pending.singles.insert(7, delta.to_vec());
            let mut out = vec![Vec::new()];
            encode_table(&spec, &mut cache, 0, clock, false, 1 << 20, &mut out).unwrap();
            let sent = sent(&out).remove(&7).unwrap_or_default();
            let residual = cache.residual.get(&7).cloned().unwrap_or_default();
            let velocity = cache.velocity.get(&7).cloned().unwrap_or_default();
            (sent, residual, velocity)
        };
        // u = [4, 1, 1, 1]; the largest goes, its velocity is masked.
        let (s, r, u) = step(0, [4.0, 1.0, 1.0, 1.0]);
        assert_eq!(s, vec![4.0, 0.0, 0.0, 0.0]);
        assert_eq!(r, vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(u, vec![0.0, 1.0, 1.0, 1.0]);
        // u = 0.5 [0, 1, 1, 1] + [0, 0, 0, 2]; residual + u = [0, 1.5, 1.5, 3.5].
        let (s, r, u) = step(1, [0.0, 0.0, 0.0, 2.0]);
        assert_eq!(s, vec![0.0, 0.0, 0.0, 3.5]);
        assert_eq!(r, vec![0.0, 1.5, 1.5, 0.0]);
        assert_eq!(u, vec![0.0, 0.5, 0.5, 0.0]);
        // No new delta: the velocity alone still moves the residual.
        let (s, r, u) = step(2, [0.0; 4]);
        assert_eq!(s, vec![0.0, 1.75, 0.0, 0.0]);
        assert_eq!(r, vec![0.0, 0.0, 1.75, 0.0]);
        assert_eq!(u, vec![0.0, 0.0, 0.25, 0.0]);
    }

    #[test]
    fn the_warm_up_sends_more_on_early_clocks() {
        let spec = spec("topk:0.01,warmup:3,f16");
        let mut counts = Vec::new();
        for clock in [0u64, 1, 2, 3, 9] {
            let mut cache = TableCache::new(4, false);
            for r in 0..100u64 {
                cache.pending.singles.insert(r, vec![r as f32 + 1.0; 4]);
            }
            let mut out = vec![Vec::new()];
            encode_table(&spec, &mut cache, 0, clock, false, 1 << 20, &mut out).unwrap();
            let nonzero = sent(&out).values().flatten().filter(|v| **v != 0.0).count();
            counts.push(nonzero);
        }
        // 400 values: 0.01^(1/4) = 32%, then 10% (f32 0.1 is a hair over, so 41), 3.2%, then
        // 1% (4) for good.
        assert_eq!(counts, vec![127, 41, 13, 4, 4]);
    }
}
