//! The sweep's fixed layouts: the documents' nonzero topics ([`DocLists`]) and the tokens in
//! buckets of (document group, word) ([`WordOrder`]), which the device's kernels take as they
//! are.

use std::ops::Range;

use super::DocList;
use crate::lda::compute::runs_by_tokens;
use crate::lda::LdaWorkerState;

/// The documents' nonzero topics, each document's list at its own token offset (a document
/// has at most as many nonzero topics as tokens): `topics[doc_offsets[d]..][..nnz[d]]`.
#[derive(Debug, Clone, Default)]
pub struct DocLists {
    pub topics: Vec<u32>,
    pub counts: Vec<u32>,
    pub nnz: Vec<u32>,
}

impl DocLists {
    /// The lists of `state`'s document-topic counts (a list is cut at the document's length).
    pub fn of(state: &LdaWorkerState) -> Self {
        let k = state.topics as usize;
        let n = state.tokens.len();
        let mut lists = DocLists {
            topics: vec![0; n],
            counts: vec![0; n],
            nnz: vec![0; state.num_docs()],
        };
        for (d, nnz) in lists.nnz.iter_mut().enumerate() {
            let (lo, hi) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
            let ndk = &state.doc_topic[d * k..(d + 1) * k];
            let (topics, counts) = (&mut lists.topics[lo..hi], &mut lists.counts[lo..hi]);
            *nnz = fill_list(ndk, topics, counts) as u32;
        }
        lists
    }

    /// Document `d`'s list alone (topics, counts), as [`DocLists::of`] forms it.
    pub fn list_of(state: &LdaWorkerState, d: usize) -> (Vec<u32>, Vec<u32>) {
        let k = state.topics as usize;
        let len = state.doc_offsets[d + 1] - state.doc_offsets[d];
        let (mut topics, mut counts) = (vec![0; len], vec![0; len]);
        let n = fill_list(
            &state.doc_topic[d * k..(d + 1) * k],
            &mut topics,
            &mut counts,
        );
        topics.truncate(n);
        counts.truncate(n);
        (topics, counts)
    }

    /// Document `d`'s list.
    pub fn doc(&self, state: &LdaWorkerState, d: usize) -> DocList<'_> {
        let lo = state.doc_offsets[d];
        let hi = lo + self.nnz[d] as usize;
        DocList {
            topics: &self.topics[lo..hi],
            counts: &self.counts[lo..hi],
        }
    }
}

/// Writes the nonzero topics of the document row `ndk` in topic order, and their counts, while
/// they fit `topics` (the document's length); returns how many were written.
fn fill_list(ndk: &[u32], topics: &mut [u32], counts: &mut [u32]) -> usize {
    let mut at = 0;
    for (t, &c) in ndk.iter().enumerate() {
        if c != 0 && at < topics.len() {
            topics[at] = t as u32;
            counts[at] = c;
            at += 1;
        }
    }
    at
}

/// The tokens in buckets of (document group, word). The documents are cut into groups of
/// consecutive documents, balanced by tokens ([`runs_by_tokens`]: fewer groups where there are
/// fewer documents, none empty); bucket `g * words + w` holds the positions (ascending) of group
/// `g`'s tokens of word row `w`: `order[offsets[b]..offsets[b + 1]]`. Groups are contiguous runs
/// of tokens, so group `g`'s buckets hold exactly the positions
/// `doc_offsets[doc_bounds[g]]..doc_offsets[doc_bounds[g + 1]]`, and `order` lists them in
/// place. `doc_of[i]` is token `i`'s document. With one group this is the plain order by word.
#[derive(Debug, Clone, Default)]
pub struct WordOrder {
    /// The groups' document bounds: group `g` is documents `doc_bounds[g]..doc_bounds[g + 1]`.
    pub doc_bounds: Vec<usize>,
    /// The distinct words (rows) of the state.
    pub words: usize,
    /// `groups * words + 1` ascending offsets into `order`.
    pub offsets: Vec<usize>,
    pub order: Vec<u32>,
    pub doc_of: Vec<u32>,
}

impl WordOrder {
    /// The order of `state`'s tokens by word, in one group.
    pub fn of(state: &LdaWorkerState) -> Self {
        Self::grouped(state, 1)
    }

    /// The order of `state`'s tokens in (at most) `groups` document groups, then by word (a
    /// counting sort by bucket).
    pub fn grouped(state: &LdaWorkerState, groups: usize) -> Self {
        let words = state.words.len();
        let doc_bounds = runs_by_tokens(&state.doc_offsets, groups.max(1));
        let g_count = doc_bounds.len() - 1;
        let mut doc_of = vec![0u32; state.tokens.len()];
        let mut bucket_of = vec![0usize; state.tokens.len()];
        for g in 0..g_count {
            for d in doc_bounds[g]..doc_bounds[g + 1] {
                let span = state.doc_offsets[d]..state.doc_offsets[d + 1];
                doc_of[span.clone()].fill(d as u32);
                for i in span {
                    bucket_of[i] = g * words + state.tokens[i] as usize;
                }
            }
        }
        let buckets = g_count * words;
        let mut offsets = vec![0usize; buckets + 1];
        for &b in &bucket_of {
            offsets[b + 1] += 1;
        }
        for b in 0..buckets {
            offsets[b + 1] += offsets[b];
        }
        let mut next = offsets.clone();
        let mut order = vec![0u32; state.tokens.len()];
        for (i, &b) in bucket_of.iter().enumerate() {
            order[next[b]] = i as u32;
            next[b] += 1;
        }
        WordOrder {
            doc_bounds,
            words,
            offsets,
            order,
            doc_of,
        }
    }

    /// How many document groups there are (1 for a state without documents).
    pub fn groups(&self) -> usize {
        self.doc_bounds.len() - 1
    }

    /// Group `g`'s buckets: `g * words..(g + 1) * words`.
    pub fn buckets(&self, g: usize) -> Range<usize> {
        g * self.words..(g + 1) * self.words
    }

    /// The word row of bucket `b`.
    pub fn word_of(&self, b: usize) -> usize {
        b % self.words.max(1)
    }

    /// Bucket `b`'s token positions.
    pub fn tokens(&self, b: usize) -> &[u32] {
        &self.order[self.offsets[b]..self.offsets[b + 1]]
    }

    /// Group `g`'s positions in `order` (and its tokens' positions in the state: the same).
    pub fn span(&self, g: usize) -> Range<usize> {
        let b = self.buckets(g);
        self.offsets[b.start]..self.offsets[b.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda::{synthetic_lda, LdaHyper, SyntheticLdaSpec};

    fn state(docs: usize) -> LdaWorkerState {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(3));
        let hyper = LdaHyper {
            topics: 8,
            ..LdaHyper::default()
        };
        LdaWorkerState::init(
            &syn.corpus.docs[..docs],
            syn.corpus.vocab_size,
            &hyper,
            3,
            0,
        )
        .unwrap()
        .0
    }

    #[test]
    fn each_groups_buckets_hold_its_tokens_by_word_in_place() {
        let s = state(57);
        for groups in [1, 2, 4, 7, 57, 200] {
            let o = WordOrder::grouped(&s, groups);
            assert!(o.groups() <= groups.min(57), "groups {groups}");
            if groups <= 7 {
                assert_eq!(o.groups(), groups);
            }
            assert_eq!(o.doc_bounds[0], 0);
            assert_eq!(*o.doc_bounds.last().unwrap(), 57);
            assert_eq!(o.offsets.len(), o.groups() * o.words + 1);
            assert_eq!(*o.offsets.last().unwrap(), s.tokens.len());
            let mut seen = vec![0u32; s.tokens.len()];
            for g in 0..o.groups() {
                let (lo, hi) = (o.doc_bounds[g], o.doc_bounds[g + 1]);
                assert!(lo < hi, "group {g} is not empty");
                let span = s.doc_offsets[lo]..s.doc_offsets[hi];
                assert_eq!(o.span(g), span, "group {g} lists its tokens in place");
                for b in o.buckets(g) {
                    let tokens = o.tokens(b);
                    assert!(tokens.windows(2).all(|p| p[0] < p[1]), "ascending");
                    for &i in tokens {
                        let i = i as usize;
                        assert!(span.contains(&i), "token {i} in group {g}");
                        assert_eq!(s.tokens[i] as usize, o.word_of(b));
                        let doc = s.doc_offsets.partition_point(|&x| x <= i) - 1;
                        assert_eq!(o.doc_of[i] as usize, doc);
                        seen[i] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "every token once");
        }
    }

    #[test]
    fn groups_are_balanced_by_tokens() {
        let s = state(400);
        let o = WordOrder::grouped(&s, 4);
        let n = s.tokens.len();
        for g in 0..4 {
            let len = o.span(g).len();
            assert!(len * 5 > n && len * 3 < n, "group {g}: {len} of {n}");
        }
    }

    #[test]
    fn one_group_is_the_order_by_word() {
        let s = state(30);
        let o = WordOrder::of(&s);
        assert_eq!(o.groups(), 1);
        for w in 0..o.words {
            let want: Vec<u32> = (0..s.tokens.len() as u32)
                .filter(|&i| s.tokens[i as usize] as usize == w)
                .collect();
            assert_eq!(o.tokens(w), &want[..]);
        }
    }
}
