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
/// fewer documents, no group without documents, though a group of empty documents has no
/// tokens). Only the (group, word) pairs that have tokens are buckets: bucket `b` holds the
/// positions (ascending) of its group's tokens of word row `bucket_word[b]`,
/// `order[offsets[b]..offsets[b + 1]]`, and group `g`'s buckets are
/// `group_buckets[g]..group_buckets[g + 1]`, in word order. Groups are contiguous runs of
/// tokens, so group `g`'s buckets hold exactly the positions
/// `doc_offsets[doc_bounds[g]]..doc_offsets[doc_bounds[g + 1]]`, and `order` lists them in
/// place. `doc_of[i]` is token `i`'s document. Memory and time are linear in the tokens, words
/// and groups. With one group this is the plain order by word.
#[derive(Debug, Clone, Default)]
pub struct WordOrder {
    /// The groups' document bounds: group `g` is documents `doc_bounds[g]..doc_bounds[g + 1]`.
    pub doc_bounds: Vec<usize>,
    /// The groups' bucket bounds (`groups() + 1` of them).
    pub group_buckets: Vec<usize>,
    /// Each bucket's word row.
    pub bucket_word: Vec<u32>,
    /// The buckets' `buckets + 1` ascending offsets into `order`.
    pub offsets: Vec<usize>,
    pub order: Vec<u32>,
    pub doc_of: Vec<u32>,
}

impl WordOrder {
    /// The order of `state`'s tokens by word, in one group.
    pub fn of(state: &LdaWorkerState) -> Self {
        Self::grouped(state, 1)
    }

    /// The order of `state`'s tokens in (at most) `groups` document groups, then by word: a
    /// counting sort by word, then a stable one by group.
    pub fn grouped(state: &LdaWorkerState, groups: usize) -> Self {
        let (n, docs) = (state.tokens.len(), state.num_docs());
        let doc_bounds = runs_by_tokens(&state.doc_offsets, groups.clamp(1, docs.max(1)));
        let g_count = doc_bounds.len() - 1;
        let mut doc_of = vec![0u32; n];
        let mut group_of_doc = vec![0u32; docs];
        for g in 0..g_count {
            group_of_doc[doc_bounds[g]..doc_bounds[g + 1]].fill(g as u32);
        }
        for d in 0..docs {
            doc_of[state.doc_offsets[d]..state.doc_offsets[d + 1]].fill(d as u32);
        }
        // By word (positions ascending within a word).
        let mut word_next = vec![0usize; state.words.len() + 1];
        for &w in &state.tokens {
            word_next[w as usize + 1] += 1;
        }
        for w in 0..state.words.len() {
            word_next[w + 1] += word_next[w];
        }
        let mut by_word = vec![0u32; n];
        for (i, &w) in state.tokens.iter().enumerate() {
            by_word[word_next[w as usize]] = i as u32;
            word_next[w as usize] += 1;
        }
        // Then by group, stably: each group's tokens land in its own span, in word order.
        let mut group_next: Vec<usize> = doc_bounds[..g_count]
            .iter()
            .map(|&d| state.doc_offsets.get(d).copied().unwrap_or(0))
            .collect();
        let mut order = vec![0u32; n];
        for &i in &by_word {
            let g = group_of_doc[doc_of[i as usize] as usize] as usize;
            order[group_next[g]] = i;
            group_next[g] += 1;
        }
        drop(by_word);
        // Buckets: runs of one word within a group.
        let (mut offsets, mut bucket_word, mut group_buckets) = (Vec::new(), Vec::new(), vec![0]);
        for g in 0..g_count {
            let lo = state.doc_offsets.get(doc_bounds[g]).copied().unwrap_or(0);
            let hi = state
                .doc_offsets
                .get(doc_bounds[g + 1])
                .copied()
                .unwrap_or(0);
            for j in lo..hi {
                let w = state.tokens[order[j] as usize];
                if j == lo || state.tokens[order[j - 1] as usize] != w {
                    offsets.push(j);
                    bucket_word.push(w);
                }
            }
            group_buckets.push(offsets.len());
        }
        offsets.push(n);
        WordOrder {
            doc_bounds,
            group_buckets,
            bucket_word,
            offsets,
            order,
            doc_of,
        }
    }

    /// How many document groups there are (1 for a state without documents).
    pub fn groups(&self) -> usize {
        self.doc_bounds.len() - 1
    }

    /// Group `g`'s buckets.
    pub fn buckets(&self, g: usize) -> Range<usize> {
        self.group_buckets[g]..self.group_buckets[g + 1]
    }

    /// The word row of bucket `b`.
    pub fn word_of(&self, b: usize) -> usize {
        self.bucket_word[b] as usize
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

    fn hyper() -> LdaHyper {
        LdaHyper {
            topics: 8,
            ..LdaHyper::default()
        }
    }

    fn state(docs: usize) -> LdaWorkerState {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(3));
        let docs = &syn.corpus.docs[..docs];
        LdaWorkerState::init(docs, syn.corpus.vocab_size, &hyper(), 3, 0)
            .unwrap()
            .0
    }

    /// Documents, empty ones among them (leading, trailing, and a run of them).
    fn with_empty_docs(docs: &[&[u32]]) -> LdaWorkerState {
        let docs: Vec<Vec<u32>> = docs.iter().map(|d| d.to_vec()).collect();
        LdaWorkerState::init(&docs, 10, &hyper(), 3, 0).unwrap().0
    }

    /// Every token once, in its group's span, in a bucket of its word; a group's buckets in
    /// ascending word order, positions ascending in each; none empty.
    fn check(s: &LdaWorkerState, o: &WordOrder) {
        assert_eq!(o.doc_bounds[0], 0);
        assert_eq!(*o.doc_bounds.last().unwrap(), s.num_docs());
        assert_eq!(o.group_buckets.len(), o.groups() + 1);
        assert_eq!(o.offsets.len(), o.bucket_word.len() + 1);
        assert_eq!(*o.offsets.last().unwrap(), s.tokens.len());
        let mut seen = vec![0u32; s.tokens.len()];
        for g in 0..o.groups() {
            let (lo, hi) = (o.doc_bounds[g], o.doc_bounds[g + 1]);
            assert!(lo < hi || s.num_docs() == 0, "group {g} has documents");
            let span = s.doc_offsets[lo]..s.doc_offsets[hi];
            assert_eq!(o.span(g), span, "group {g} lists its tokens in place");
            let words: Vec<usize> = o.buckets(g).map(|b| o.word_of(b)).collect();
            assert!(
                words.windows(2).all(|p| p[0] < p[1]),
                "group {g}: {words:?}"
            );
            for b in o.buckets(g) {
                let tokens = o.tokens(b);
                assert!(!tokens.is_empty(), "bucket {b} is empty");
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

    #[test]
    fn each_groups_buckets_hold_its_tokens_by_word_in_place() {
        let s = state(57);
        for groups in [1, 2, 4, 7, 57, 200, usize::MAX] {
            let o = WordOrder::grouped(&s, groups);
            assert!(o.groups() <= groups.min(57), "groups {groups}");
            if groups <= 7 {
                assert_eq!(o.groups(), groups);
            }
            check(&s, &o);
        }
    }

    #[test]
    fn empty_documents_and_groups_without_tokens() {
        // A group of empty documents only: [5 tokens] then two empty documents, in 2 groups.
        let s = with_empty_docs(&[&[1, 2, 1, 3, 1], &[], &[]]);
        let o = WordOrder::grouped(&s, 2);
        assert_eq!(o.doc_bounds, vec![0, 1, 3]);
        assert!(o.buckets(1).is_empty() && o.span(1).is_empty());
        check(&s, &o);
        let s = with_empty_docs(&[&[], &[], &[4, 4], &[], &[5, 4, 6], &[], &[7], &[]]);
        for groups in [1, 2, 3, 5, 8, 100] {
            check(&s, &WordOrder::grouped(&s, groups));
        }
        let none = with_empty_docs(&[]);
        let o = WordOrder::grouped(&none, 4);
        assert_eq!((o.groups(), o.offsets.clone()), (1, vec![0]));
        check(&none, &o);
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
        let mut b = 0;
        for w in 0..s.words.len() {
            let want: Vec<u32> = (0..s.tokens.len() as u32)
                .filter(|&i| s.tokens[i as usize] as usize == w)
                .collect();
            if want.is_empty() {
                continue;
            }
            assert_eq!((o.word_of(b), o.tokens(b)), (w, &want[..]));
            b += 1;
        }
        assert_eq!(b, o.bucket_word.len());
    }
}
