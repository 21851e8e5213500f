//! A worker's LDA state built from its documents: the vocabulary compacted to local rows, a
//! random initial topic for every token, the document-topic counts, and the initial word-topic
//! counts as the clock-0 delta ([`LdaWorkerState::init`]).
//!
//! The result is a pure function of the documents, the hyper-parameters, the seed and the
//! worker, whatever the number of threads: the initial topics come from one RNG stream in token
//! order, and the parallel parts (the token rows, the document-topic counts, the word-topic
//! counts by ranges of rows) each write their own part of the output. At the NYTimes shape
//! (99 M tokens, 100,000 words, K 1,000) the earlier one-thread construction (a sort of every
//! token's word, a binary search per token, a dense scatter and a scan of 10^8 cells) took
//! about 12 s on one core.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{LdaDelta, LdaHyper, LdaWorkerState, MAX_WORKER_TOKENS};
use crate::error::DataError;
use crate::par;
use crate::seed::mix64;

/// Tokens per part of the parallel passes over documents (small in tests, so that they cut
/// their documents into many parts).
#[cfg(not(test))]
const TOKENS_PER_PART: usize = 1 << 20;
#[cfg(test)]
const TOKENS_PER_PART: usize = 1000;

/// The vocabulary is compacted through a table indexed by word id when the table holds at most
/// this many entries per token (plus [`DENSE_SLACK`]); a corpus whose vocabulary is far larger
/// than its tokens (a file's header may claim any size) sorts its words instead.
const DENSE_PER_TOKEN: u64 = 4;
const DENSE_SLACK: u64 = 1 << 20;

pub(super) fn build(
    docs: &[Vec<u32>],
    vocab_size: u32,
    hyper: &LdaHyper,
    seed: u64,
    worker: u32,
    threads: usize,
) -> Result<(LdaWorkerState, LdaDelta), DataError> {
    let k = hyper.topics as usize;
    if k == 0 {
        return Err(DataError::Mismatch {
            what: "LDA needs at least one topic (hyper.topics == 0)".into(),
        });
    }
    let n: usize = docs.iter().map(Vec::len).sum();
    if n > MAX_WORKER_TOKENS {
        return Err(DataError::Mismatch {
            what: format!("worker {worker} holds {n} tokens, above {MAX_WORKER_TOKENS}"),
        });
    }
    if let Some(&w) = docs.iter().flatten().find(|&&w| w >= vocab_size) {
        return Err(DataError::Mismatch {
            what: format!("word id {w} out of range for vocabulary size {vocab_size}"),
        });
    }
    let dense = u64::from(vocab_size) <= DENSE_PER_TOKEN * n as u64 + DENSE_SLACK;
    Ok(checked(
        docs, vocab_size, hyper, seed, worker, threads, dense,
    ))
}

/// [`build`] of checked input, compacting the vocabulary through a table (`dense`) or by
/// sorting.
fn checked(
    docs: &[Vec<u32>],
    vocab_size: u32,
    hyper: &LdaHyper,
    seed: u64,
    worker: u32,
    threads: usize,
    dense: bool,
) -> (LdaWorkerState, LdaDelta) {
    let k = hyper.topics as usize;
    let (words, row_of) = vocabulary(docs, vocab_size, dense);
    let mut doc_offsets = Vec::with_capacity(docs.len() + 1);
    let mut n = 0;
    doc_offsets.push(n);
    for d in docs {
        n += d.len();
        doc_offsets.push(n);
    }
    let parts = doc_parts(&doc_offsets);
    let mut tokens = vec![0u32; n];
    let ends: Vec<usize> = parts.iter().map(|&(_, hi)| doc_offsets[hi]).collect();
    par::fill(&mut tokens, &ends, threads, |p, out| {
        let mine = docs[parts[p].0..parts[p].1].iter().flatten();
        for (t, &w) in out.iter_mut().zip(mine) {
            *t = row_of.row(&words, w);
        }
    });
    drop(row_of);
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(
        mix64(seed ^ 0x1DA0_5EED_1DA0_5EED) ^ u64::from(worker),
    ));
    let z: Vec<u32> = (0..n).map(|_| rng.gen_range(0..hyper.topics)).collect();
    let mut doc_topic = vec![0u32; docs.len() * k];
    let ends: Vec<usize> = parts.iter().map(|&(_, hi)| hi * k).collect();
    par::fill(&mut doc_topic, &ends, threads, |p, out| {
        let lo = parts[p].0;
        for (i, row) in out.chunks_exact_mut(k).enumerate() {
            for &t in &z[doc_offsets[lo + i]..doc_offsets[lo + i + 1]] {
                row[t as usize] += 1;
            }
        }
    });
    let state = LdaWorkerState {
        topics: hyper.topics,
        vocab_size,
        words,
        doc_offsets,
        tokens,
        z,
        doc_topic,
    };
    let delta = initial_counts(&state, threads);
    (state, delta)
}

/// How a global word id finds its local row.
enum RowOf {
    /// `table[w]` is word `w`'s row.
    Table(Vec<u32>),
    /// A binary search of the sorted words.
    Search,
}

impl RowOf {
    fn row(&self, words: &[u32], w: u32) -> u32 {
        match self {
            RowOf::Table(t) => t[w as usize],
            // Present by construction.
            RowOf::Search => words.binary_search(&w).unwrap_or(0) as u32,
        }
    }
}

/// The sorted distinct words of `docs` (every id `< vocab_size`), and how to find their rows.
fn vocabulary(docs: &[Vec<u32>], vocab_size: u32, dense: bool) -> (Vec<u32>, RowOf) {
    if !dense {
        let mut words: Vec<u32> = docs.iter().flatten().copied().collect();
        words.sort_unstable();
        words.dedup();
        return (words, RowOf::Search);
    }
    let mut table = vec![u32::MAX; vocab_size as usize];
    for &w in docs.iter().flatten() {
        table[w as usize] = 0;
    }
    let mut words = Vec::new();
    for (w, slot) in table.iter_mut().enumerate() {
        if *slot == 0 {
            *slot = words.len() as u32;
            words.push(w as u32);
        }
    }
    (words, RowOf::Table(table))
}

/// Ranges of documents `(lo, hi)` of about [`TOKENS_PER_PART`] tokens each, covering them all.
fn doc_parts(doc_offsets: &[usize]) -> Vec<(usize, usize)> {
    let docs = doc_offsets.len() - 1;
    let mut parts = Vec::new();
    let mut lo = 0;
    for d in 1..=docs {
        if doc_offsets[d] - doc_offsets[lo] >= TOKENS_PER_PART || d == docs {
            parts.push((lo, d));
            lo = d;
        }
    }
    if parts.is_empty() {
        parts.push((0, 0));
    }
    parts
}

/// The counts of `state`'s own assignments as a delta: every nonzero `(word, topic)` count, in
/// order, and the totals. Each of up to `threads` ranges of rows counts its rows' tokens in a
/// dense block of its own; then each range writes its entries into its own part of the list.
/// (About half the cells of a block are nonzero at K 1,000 and 1,000 tokens a word, so the
/// writing does not branch on the count.)
fn initial_counts(state: &LdaWorkerState, threads: usize) -> LdaDelta {
    let k = state.topics as usize;
    let rows = state.words.len();
    let ranges = threads.clamp(1, rows.max(1));
    let bounds: Vec<usize> = (0..=ranges).map(|r| r * rows / ranges).collect();
    let blocks = par::map(ranges, threads, |r| {
        let (lo, hi) = (bounds[r], bounds[r + 1]);
        let mut counts = vec![0u32; (hi - lo) * k];
        for (&w, &t) in state.tokens.iter().zip(&state.z) {
            let w = w as usize;
            if (lo..hi).contains(&w) {
                counts[(w - lo) * k + t as usize] += 1;
            }
        }
        let nonzero = counts.iter().filter(|&&c| c != 0).count();
        (counts, nonzero)
    });
    let mut ends = Vec::with_capacity(ranges);
    let mut total = 0;
    for (_, nonzero) in &blocks {
        total += nonzero;
        ends.push(total);
    }
    let mut entries = vec![(0u32, 0u32, 0i32); total];
    let totals = std::sync::Mutex::new(vec![0i32; k]);
    par::fill(&mut entries, &ends, threads, |r, out| {
        let mut sums = vec![0i32; k];
        let mut j = 0;
        for (i, row) in blocks[r].0.chunks_exact(k).enumerate() {
            let word = state.words[bounds[r] + i];
            for (t, &c) in row.iter().enumerate() {
                if j < out.len() {
                    out[j] = (word, t as u32, c as i32);
                }
                j += usize::from(c != 0);
                sums[t] += c as i32;
            }
        }
        let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
        for (x, y) in totals.iter_mut().zip(sums) {
            *x += y;
        }
    });
    LdaDelta {
        topics: state.topics,
        entries,
        totals: totals.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The construction as it was written first, one thread, as the oracle.
    fn reference(
        docs: &[Vec<u32>],
        vocab_size: u32,
        hyper: &LdaHyper,
        seed: u64,
        worker: u32,
    ) -> (LdaWorkerState, LdaDelta) {
        let k = hyper.topics as usize;
        let mut words: Vec<u32> = docs.iter().flatten().copied().collect();
        words.sort_unstable();
        words.dedup();
        let mut doc_offsets = vec![0];
        let mut tokens = Vec::new();
        for d in docs {
            tokens.extend(d.iter().map(|w| words.binary_search(w).unwrap() as u32));
            doc_offsets.push(tokens.len());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(
            mix64(seed ^ 0x1DA0_5EED_1DA0_5EED) ^ u64::from(worker),
        ));
        let z: Vec<u32> = (0..tokens.len())
            .map(|_| rng.gen_range(0..hyper.topics))
            .collect();
        let mut doc_topic = vec![0u32; docs.len() * k];
        for d in 0..docs.len() {
            for &t in &z[doc_offsets[d]..doc_offsets[d + 1]] {
                doc_topic[d * k + t as usize] += 1;
            }
        }
        let state = LdaWorkerState {
            topics: hyper.topics,
            vocab_size,
            words,
            doc_offsets,
            tokens,
            z,
            doc_topic,
        };
        let counts = state.local_word_topic();
        let mut totals = vec![0i32; k];
        let mut entries = Vec::new();
        for (i, &c) in counts.iter().enumerate() {
            if c != 0 {
                entries.push((state.words[i / k], (i % k) as u32, c as i32));
                totals[i % k] += c as i32;
            }
        }
        let delta = LdaDelta {
            topics: hyper.topics,
            entries,
            totals,
        };
        (state, delta)
    }

    fn docs(seed: u64, n_docs: usize, max_len: usize, vocab: u32) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n_docs)
            .map(|_| {
                let len = rng.gen_range(0..=max_len);
                // Skewed ids, so that some words are absent and some are frequent.
                (0..len)
                    .map(|_| {
                        let u: f64 = rng.gen();
                        ((u * u * u) * f64::from(vocab)) as u32 % vocab
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn equals_the_one_thread_construction_whatever_the_threads_and_the_vocabulary_path() {
        for (case, &(n_docs, max_len, vocab, topics)) in [
            (0usize, 5usize, 10u32, 3u32),
            (1, 0, 10, 3),
            (40, 30, 50, 7),
            (300, 80, 2_000, 20),
            (3_000, 700, 100_000, 5),
        ]
        .iter()
        .enumerate()
        {
            let docs = docs(case as u64, n_docs, max_len, vocab);
            let hyper = LdaHyper {
                topics,
                ..LdaHyper::default()
            };
            let want = reference(&docs, vocab, &hyper, 9, 2);
            for threads in [1, 2, 5] {
                let got = build(&docs, vocab, &hyper, 9, 2, threads).unwrap();
                assert_eq!(got, want, "case {case}, {threads} threads");
                got.0.check().unwrap();
                // Whichever way the vocabulary is compacted.
                for dense in [false, true] {
                    let got = checked(&docs, vocab, &hyper, 9, 2, threads, dense);
                    assert_eq!(got, want, "case {case}, {threads} threads, dense {dense}");
                }
            }
        }
    }

    #[test]
    fn a_huge_claimed_vocabulary_is_not_allocated() {
        // A file may claim any vocabulary size; a table of u32::MAX entries would be 16 GiB.
        let docs = vec![vec![5, u32::MAX - 1], vec![5]];
        let hyper = LdaHyper {
            topics: 2,
            ..LdaHyper::default()
        };
        let (state, delta) = build(&docs, u32::MAX, &hyper, 1, 0, 2).unwrap();
        assert_eq!(state.words, [5, u32::MAX - 1]);
        assert_eq!(state.tokens, [0, 1, 0]);
        assert_eq!(delta.totals.iter().sum::<i32>(), 3);
    }

    #[test]
    fn refuses_what_it_refused_before() {
        let hyper = LdaHyper {
            topics: 0,
            ..LdaHyper::default()
        };
        assert!(build(&[vec![1]], 5, &hyper, 1, 0, 2).is_err());
        let hyper = LdaHyper {
            topics: 3,
            ..LdaHyper::default()
        };
        let err = build(&[vec![1], vec![2, 7]], 5, &hyper, 1, 0, 2).unwrap_err();
        assert!(err.to_string().contains("word id 7"), "{err}");
    }
}
