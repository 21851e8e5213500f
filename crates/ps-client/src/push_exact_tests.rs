//! An engine that encodes its own entries (a GPU worker, `Table::entries_blocks` then
//! `Table::push_encoded`) sends the same frames as the library's own entries path
//! (`Table::push_entries`), and keeps the same own log.

use crate::cache::TableCache;
use crate::entries::{Entries, Sent};
use crate::pending::EncodedBlock;
use crate::push::{encode_table, end_batches};
use ps_proto::codec::{encode_exact_selection, CodecChain};
use ps_proto::push_plan::{entries_per_frame, push_blocks};
use ps_proto::{Init, TableSpec, UpdateRule};

fn spec(width: u32) -> TableSpec {
    TableSpec {
        id: 5,
        name: "word_topic".into(),
        rows: 1000,
        width,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness: Some(0),
        layout: Default::default(),
        push_codec: CodecChain::raw(),
        pull_codec: Default::default(),
    }
}

/// LDA-like count changes: a few cells of most rows, one row full, one change too wide for i8.
fn entries(width: u64) -> Entries {
    let keys: Vec<u64> = (0..1000).filter(|k| k % 7 != 3).step_by(3).collect();
    let (mut at, mut values) = (Vec::new(), Vec::new());
    for (r, &k) in keys.iter().enumerate() {
        let r = r as u64;
        let mut cells: Vec<u64> = if r == 10 {
            (0..width).collect()
        } else {
            vec![k % width, (k * 13 + 5) % width]
        };
        cells.sort_unstable();
        cells.dedup();
        for c in cells {
            let v = if r == 40 { 300.0 } else { (k % 5) as f32 - 2.0 };
            // No zero changes: an engine's delta has none.
            if v != 0.0 {
                at.push(r * width + c);
                values.push(v);
            }
        }
    }
    Entries { keys, at, values }
}

#[test]
fn self_encoded_entries_make_the_library_s_frames_and_own_log() {
    let (width, nshards, max_body) = (50u32, 3usize, 2_000u64);
    let spec = spec(width);
    let e = entries(u64::from(width));
    e.check(width as usize).unwrap();

    let mut library = TableCache::new(width as usize, true);
    library.pending.entries.push(e.clone());
    let mut want = vec![Vec::new(); nshards];
    let logical = encode_table(&spec, &mut library, 1, 4, false, max_body, &mut want).unwrap();
    end_batches(1, 4, &mut want);

    let mut engine = TableCache::new(width as usize, true);
    let per_frame = entries_per_frame(width, max_body);
    let blocks = push_blocks(&e.keys, spec.rows, nshards as u32, per_frame);
    let mut ids = std::collections::BTreeSet::new();
    assert!(blocks.len() > 2 * nshards, "{} blocks", blocks.len());
    for b in &blocks {
        let span = e.span(b.rows.clone(), width as usize);
        let first = b.rows.start as u64 * u64::from(width);
        let sel: Vec<u32> = e.at[span.clone()]
            .iter()
            .map(|&p| (p - first) as u32)
            .collect();
        let n = b.rows.len() * width as usize;
        let mut payload = Vec::new();
        let wire_id = encode_exact_selection(n, &sel, &e.values[span], &mut payload).unwrap();
        let keys = &e.keys[b.rows.clone()];
        let block = EncodedBlock::new(keys, wire_id, payload, width as usize, true, true).unwrap();
        assert!(
            matches!(block.decoded, Some(Sent::Entries(_))),
            "kept sparse"
        );
        engine.pending.encoded.push(block);
        ids.insert(wire_id);
    }
    assert_eq!(ids.len(), 2, "i8 and i16 blocks");
    let mut got = vec![Vec::new(); nshards];
    assert_eq!(
        encode_table(&spec, &mut engine, 1, 4, false, max_body, &mut got).unwrap(),
        logical
    );
    end_batches(1, 4, &mut got);
    let bytes = |frames: &[Vec<ps_proto::Frame>]| -> Vec<Vec<Vec<u8>>> {
        frames
            .iter()
            .map(|s| s.iter().map(|f| f.encode()).collect())
            .collect()
    };
    assert!(bytes(&got) == bytes(&want), "the frames differ");
    // The own log holds the same entries, as one block (the frames' blocks joined).
    let sent = |c: &TableCache| c.own_log.values().flatten().count();
    assert_eq!((sent(&engine), sent(&library)), (1, 1));
    let logged = |c: &TableCache| -> Vec<(u64, u64, f32)> {
        let mut v = Vec::new();
        for sent in c.own_log.values().flatten() {
            let Sent::Entries(x) = sent else {
                panic!("a dense block in the own log")
            };
            for (&p, &val) in x.at.iter().zip(&x.values) {
                let k = x.keys[(p / u64::from(width)) as usize];
                v.push((k, p % u64::from(width), val));
            }
        }
        v
    };
    assert_eq!(logged(&engine), logged(&library));
}

#[test]
fn a_bad_self_encoded_block_is_refused() {
    // A payload that does not decode to the rows' size.
    let mut payload = Vec::new();
    let id = encode_exact_selection(100, &[3, 99], &[1.0, 2.0], &mut payload).unwrap();
    assert!(EncodedBlock::new(&[1, 2], id, payload.clone(), 50, true, true).is_ok());
    assert!(EncodedBlock::new(&[1], id, payload, 50, true, true).is_err());
}
