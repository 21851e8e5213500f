//! The state a log's moves make: the moves between two assignments, their replay, and a
//! snapshot's assignments taken into a state. Pure; no I/O.

use super::Move;
use crate::lda::{LdaDelta, LdaWorkerState};
use std::collections::BTreeMap;

/// The moves from assignments `before` to `after` (as long): each token whose topic changed,
/// with its new topic.
pub fn moves_between(before: &[u32], after: &[u32]) -> Vec<Move> {
    (before.iter().zip(after).enumerate())
        .filter(|(_, (b, a))| b != a)
        .map(|(t, (_, &a))| (t as u32, a))
        .collect()
}

/// Applies logged `moves` to `state` (assignments and document-topic counts) and returns the
/// count delta they make, as a sweep that made them returns it. Moves must be of tokens and
/// topics of the state (the log checks them).
pub fn replay(state: &mut LdaWorkerState, moves: &[Move]) -> LdaDelta {
    let k = state.topics as usize;
    let mut changes: BTreeMap<(u32, u32), i32> = BTreeMap::new();
    let mut totals = vec![0i32; k];
    for &(t, new) in moves {
        let t = t as usize;
        let old = state.z[t];
        if old == new {
            continue;
        }
        // The document holding token t.
        let d = state.doc_offsets.partition_point(|&o| o <= t) - 1;
        state.doc_topic[d * k + old as usize] -= 1;
        state.doc_topic[d * k + new as usize] += 1;
        state.z[t] = new;
        let word = state.words[state.tokens[t] as usize];
        *changes.entry((word, old)).or_default() -= 1;
        *changes.entry((word, new)).or_default() += 1;
        totals[old as usize] -= 1;
        totals[new as usize] += 1;
    }
    LdaDelta {
        topics: state.topics,
        entries: (changes.into_iter())
            .filter(|&(_, c)| c != 0)
            .map(|((w, k), c)| (w, k, c))
            .collect(),
        totals,
    }
}

/// Takes assignments `z` (one a token, each below K) into `state`, and the document-topic
/// counts they make.
pub fn set_assignments(state: &mut LdaWorkerState, z: &[u32]) {
    let k = state.topics as usize;
    state.z.copy_from_slice(z);
    state.doc_topic.fill(0);
    for d in 0..state.num_docs() {
        let (a, b) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
        for &t in &z[a..b] {
            state.doc_topic[d * k + t as usize] += 1;
        }
    }
}
