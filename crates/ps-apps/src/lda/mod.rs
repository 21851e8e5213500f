//! Latent Dirichlet allocation trained with collapsed Gibbs sampling on a
//! parameter server.
//!
//! # Tables
//! Two parameter-server tables with `f32` values and the `add` rule (so
//! counts are exact integers up to 2^24):
//! * word-topic counts, `V` rows x `K` columns (row = global word id);
//! * topic totals, 1 row x `K` columns.
//!
//! # Schedule
//! Documents are split across `W` workers ([`split_docs`], round robin).
//! Each worker keeps its documents' token topic assignments and
//! document-topic counts locally in an [`LdaWorkerState`].
//!
//! * Clock 0: [`LdaWorkerState::init`] assigns every token a random topic
//!   (seeded by `(seed, worker)`) and returns the initial counts as an
//!   [`LdaDelta`], which the worker pushes.
//! * Clock `c >= 1`: the worker reads a (possibly stale) copy of the
//!   word-topic rows of its distinct words, `state.words` (sorted global
//!   ids; local row `i` is global row `words[i]`, see [`gather_rows`]) and
//!   the totals row; runs one Gibbs sweep ([`LdaCompute::sweep`], one
//!   uniform per token from the counter-based Philox generator keyed by
//!   [`SweepKey`] `(seed, worker, clock)` and the token's position, see
//!   [`SweepKey::uniform`]) over all its tokens, updating
//!   the local copy as it goes so that it stays consistent with its own
//!   moves; and pushes the returned sparse delta of its moves
//!   ([`LdaDelta::to_dense_rows`] gives the touched rows densely).
//!
//! Stale copies may hold counts that are negative or inconsistent with the
//! worker's own assignments; the samplers clamp every word-topic and total
//! count at 0 when computing probabilities and never panic or produce NaN.
//!
//! # Engines
//! [`CpuLda`] is the plain O(K)-per-token oracle; [`SparseLda`] is the
//! SparseLDA bucket sampler (Yao, Mimno & McCallum 2009), exact and much
//! faster for large `K`. Both are single-threaded; [`ParallelSparseLda`]
//! runs a worker's sweep on several threads (`--threads`) as that many
//! workers sharing one read would (AD-LDA within the worker). Every engine, the CUDA one in worker-gpu
//! included, draws one uniform per token from the counter-based Philox
//! generator, [`SweepKey::uniform`]`(token position)`, so the device can
//! draw the oracle's uniforms itself instead of receiving them.
//!
//! # Metrics
//! [`loglik_per_token`] (per-token predictive log-likelihood of the
//! training tokens) and [`topic_recovery`] (match of learned topics against
//! known ones, for synthetic data).

mod app;
mod args;
mod compute;
mod data;
mod delta_out;
mod files;
mod flat_delta;
pub mod heldout;
mod init;
mod metrics;
pub mod moves_log;
pub mod packed;
mod resident;
mod session;
mod sweep_key;
mod synth;
pub mod wire;

pub use app::{LdaApp, LdaClock, LdaFacts, LdaFinal, LdaSettings, TOTALS, WORD_TOPIC};
pub use args::{LdaArgs, MAX_TRUTH};
pub use files::{detect_format, sibling_vocab, top_words, CorpusFormat};
pub use resident::{
    check_rows, check_sparse_rows, check_state, documents_print, other_documents, pulled_run,
    HostLdaResident, LdaResident, PulledRun,
};
pub use session::LdaSession;

pub use compute::{
    check_dims, conditional, runs_by_tokens, word_major, CpuLda, LdaCompute, ParallelSparseLda,
    SparseLda, WordMajorLda,
};
pub use data::{
    load_ldac, load_uci, load_vocab, parse_ldac, parse_uci_docword, parse_vocab, split_docs,
    take_worker_docs, worker_doc_ids, Corpus, MAX_COUNT, MAX_DOCS, MAX_TOKENS, MAX_VOCAB,
};
pub use metrics::{count_check, loglik, loglik_on, loglik_per_token, topic_recovery, CountCheck};
pub use sweep_key::{SweepKey, SweepUniforms};
pub use synth::{
    synthetic_lda, synthetic_lda_threads, synthetic_lda_worker, SyntheticLda, SyntheticLdaSpec,
    BUILTIN_DOCS, BUILTIN_DOC_LEN, BUILTIN_TOPICS, BUILTIN_VOCAB, SEQUENTIAL_MAX_TOKENS,
};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Recommended number of clocks for the built-in synthetic corpus with 2
/// workers (clock 0 = initialisation, then one sweep per clock).
///
/// With [`LdaHyper::default`] and BSP, topic recovery first passes 0.9
/// after 10, 8 and 9 clocks for seeds 1, 42 and 1234 (emulated 2-worker
/// run, `builtin_full_clocks_to_recovery` in `tests/lda_conformance.rs`;
/// the 30 clocks take ~0.3 s in release mode); 30 leaves a wide margin.
pub const DEFAULT_CLOCKS: u32 = 30;

/// Largest number of tokens one worker may hold ([`LdaWorkerState::init`]
/// rejects more), so that local `i32` counts cannot overflow.
pub const MAX_WORKER_TOKENS: usize = 1 << 30;

/// LDA hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LdaHyper {
    /// Number of topics `K` (width of both tables).
    pub topics: u32,
    /// Symmetric Dirichlet prior of the document-topic mixtures.
    pub alpha: f64,
    /// Symmetric Dirichlet prior of the topic-word distributions.
    pub beta: f64,
}

impl Default for LdaHyper {
    /// `K = 10` (the built-in synthetic corpus), `alpha = 0.1`,
    /// `beta = 0.01`.
    ///
    /// `alpha = 0.1` rather than Griffiths & Steyvers' `50/K` (= 5 at
    /// `K = 10`): with ~100-token documents `50/K` smooths the document
    /// mixtures so much that topics blur; 0.1 also matches the generator.
    /// `beta = 0.01` is the usual choice for word distributions.
    fn default() -> Self {
        LdaHyper {
            topics: BUILTIN_TOPICS,
            alpha: 0.1,
            beta: 0.01,
        }
    }
}

impl LdaHyper {
    /// `Err(reason)` unless `topics >= 1` and `alpha`, `beta` are finite and
    /// positive. The samplers never fail: they replace an invalid `alpha` or
    /// `beta` by `1e-6` (see [`LdaHyper::effective`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.topics == 0 {
            return Err("topics must be >= 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("alpha must be finite and > 0, got {}", self.alpha));
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(format!("beta must be finite and > 0, got {}", self.beta));
        }
        Ok(())
    }

    /// `(alpha, beta)` as used by the samplers: each is replaced by `1e-6`
    /// when not finite and positive.
    pub fn effective(&self) -> (f64, f64) {
        let fix = |x: f64| if x.is_finite() && x > 0.0 { x } else { 1e-6 };
        (fix(self.alpha), fix(self.beta))
    }
}

/// The sparse count delta of one worker clock: what the worker pushes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LdaDelta {
    /// Number of topics `K`.
    pub topics: u32,
    /// `(global word id, topic, count change)`, sorted by `(word, topic)`,
    /// without zero changes.
    pub entries: Vec<(u32, u32, i32)>,
    /// Change of the topic totals (length `K`); equals the column sums of
    /// `entries`.
    pub totals: Vec<i32>,
}

impl LdaDelta {
    /// No change of `topics` topics.
    pub fn none(topics: u32) -> LdaDelta {
        LdaDelta {
            topics,
            entries: Vec::new(),
            totals: vec![0; topics as usize],
        }
    }

    /// True when no count changes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.totals.iter().all(|&t| t == 0)
    }

    /// Adds the delta to a dense global word-topic table (`V x K`, row =
    /// global word id) and totals row (length `K`) — what the server does.
    ///
    /// # Panics
    /// If a word id is out of range for `word_topic` or `totals.len() != K`.
    pub fn apply(&self, word_topic: &mut [f32], totals: &mut [f32]) {
        let k = self.topics as usize;
        assert_eq!(totals.len(), k, "LdaDelta::apply: totals length != K");
        for &(w, t, c) in &self.entries {
            word_topic[w as usize * k + t as usize] += c as f32;
        }
        for (x, &d) in totals.iter_mut().zip(&self.totals) {
            *x += d as f32;
        }
    }

    /// Adds the delta to a worker's dense LOCAL copy (`words.len() x K`,
    /// local row `i` = global word `words[i]`, `words` sorted as in
    /// [`LdaWorkerState::words`]) and totals row. Entries for words not in
    /// `words` are skipped.
    ///
    /// Use it for read-my-writes: when a stale read may miss the worker's
    /// own last pushes, add those pushed deltas that the read does not yet
    /// reflect before sweeping. Without this, under staleness >= 1 a
    /// worker that misses its own last sweep over-corrects it, and the
    /// emulated 2-worker run oscillates (see `tests/lda_conformance.rs`).
    ///
    /// # Panics
    /// If `local.len() != words.len() * K` or `totals.len() != K`.
    pub fn apply_local(&self, words: &[u32], local: &mut [f32], totals: &mut [f32]) {
        let k = self.topics as usize;
        assert_eq!(local.len(), words.len() * k, "apply_local: local size");
        assert_eq!(totals.len(), k, "apply_local: totals length != K");
        let mut row = 0usize;
        for &(w, t, c) in &self.entries {
            // Entries and words are both sorted: advance monotonically.
            while row < words.len() && words[row] < w {
                row += 1;
            }
            if row < words.len() && words[row] == w {
                local[row * k + t as usize] += c as f32;
            }
        }
        for (x, &d) in totals.iter_mut().zip(&self.totals) {
            *x += d as f32;
        }
    }

    /// The touched rows densely: `(sorted distinct word ids, rows)` with
    /// `rows.len() == words.len() * K` (row `i` is the change of word
    /// `words[i]`), for pushing whole rows with the `add` rule.
    pub fn to_dense_rows(&self) -> (Vec<u32>, Vec<f32>) {
        let k = self.topics as usize;
        let mut words: Vec<u32> = Vec::new();
        let mut rows: Vec<f32> = Vec::new();
        for &(w, t, c) in &self.entries {
            if words.last() != Some(&w) {
                words.push(w);
                rows.resize(rows.len() + k, 0.0);
            }
            let base = rows.len() - k;
            rows[base + t as usize] += c as f32;
        }
        (words, rows)
    }

    /// The totals change as `f32` (the totals table row).
    pub fn totals_f32(&self) -> Vec<f32> {
        self.totals.iter().map(|&t| t as f32).collect()
    }
}

/// The rows `words` of a dense global `V x K` table, as a dense local
/// `words.len() x K` copy (local row `i` = global row `words[i]`).
///
/// # Panics
/// If a word id is out of range for `global`.
pub fn gather_rows(global: &[f32], words: &[u32], topics: u32) -> Vec<f32> {
    let k = topics as usize;
    let mut out = Vec::with_capacity(words.len() * k);
    for &w in words {
        out.extend_from_slice(&global[w as usize * k..(w as usize + 1) * k]);
    }
    out
}

/// A worker's local LDA state: its documents' tokens, their topic
/// assignments and the document-topic counts.
///
/// Invariants (kept by every engine): `doc_topic[d * K + k]` is the number
/// of tokens of document `d` with `z == k`; every `z < K`; every token's
/// local row `< words.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdaWorkerState {
    /// Number of topics `K`.
    pub topics: u32,
    /// Vocabulary size `V` of the whole corpus (the `V * beta` of the
    /// sampling denominator).
    pub vocab_size: u32,
    /// Sorted distinct global word ids of this worker's tokens; local row
    /// `i` of the word-topic copy is global row `words[i]`.
    pub words: Vec<u32>,
    /// Document `d`'s tokens are `tokens[doc_offsets[d]..doc_offsets[d+1]]`.
    pub doc_offsets: Vec<usize>,
    /// Local word row (index into `words`) of every token.
    pub tokens: Vec<u32>,
    /// Topic assignment of every token.
    pub z: Vec<u32>,
    /// Document-topic counts, `docs x K` row-major.
    pub doc_topic: Vec<u32>,
}

impl LdaWorkerState {
    /// Builds the state for a worker's documents (global word ids `<
    /// vocab_size`) with every token assigned a uniformly random topic from
    /// a ChaCha8 RNG seeded by `(seed, worker)`, and returns the initial
    /// counts as the delta to push on clock 0.
    ///
    /// Errors ([`DataError::Mismatch`]): `hyper.topics == 0`, a word id `>=
    /// vocab_size`, or more than [`MAX_WORKER_TOKENS`] tokens.
    pub fn init(
        docs: &[Vec<u32>],
        vocab_size: u32,
        hyper: &LdaHyper,
        seed: u64,
        worker: u32,
    ) -> Result<(Self, LdaDelta), DataError> {
        init::build(docs, vocab_size, hyper, seed, worker, crate::par::threads())
    }

    /// Whether the document offsets start at 0, end at the last token and never fall: every
    /// token in exactly one document, in order.
    pub fn offsets_cover_tokens(&self) -> bool {
        let (o, n) = (&self.doc_offsets, self.tokens.len());
        !(o.first().is_some_and(|&f| f != 0)
            || o.last().is_some_and(|&l| l != n)
            || o.windows(2).any(|w| w[0] > w[1]))
    }

    /// The first index out of range, said in words: a token's word row past the word list or
    /// an assignment past the topics. `None` when every one is in range.
    pub fn index_out_of_range(&self) -> Option<String> {
        let (words, k) = (self.words.len(), self.topics);
        if let Some(w) = self.tokens.iter().find(|&&w| w as usize >= words) {
            return Some(format!("token row {w} outside the {words} words"));
        }
        let t = self.z.iter().find(|&&t| t >= k)?;
        Some(format!("topic {t} outside the {k} topics"))
    }

    /// Number of documents.
    pub fn num_docs(&self) -> usize {
        self.doc_offsets.len().saturating_sub(1)
    }

    /// Number of tokens.
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The word-topic counts implied by this worker's own assignments,
    /// dense `words.len() x K` (local rows).
    pub fn local_word_topic(&self) -> Vec<u32> {
        let k = self.topics as usize;
        let mut out = vec![0u32; self.words.len() * k];
        for (&w, &t) in self.tokens.iter().zip(&self.z) {
            out[w as usize * k + t as usize] += 1;
        }
        out
    }

    /// Checks the invariants listed on the type; `Err` describes the first
    /// violation.
    pub fn check(&self) -> Result<(), String> {
        let k = self.topics as usize;
        let d = self.num_docs();
        if self.doc_offsets.first() != Some(&0)
            || self.doc_offsets.last() != Some(&self.tokens.len())
            || self.doc_offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err("bad doc_offsets".into());
        }
        if self.z.len() != self.tokens.len() || self.doc_topic.len() != d * k {
            return Err("length mismatch".into());
        }
        if !self.words.windows(2).all(|w| w[0] < w[1]) {
            return Err("words not strictly sorted".into());
        }
        if self.tokens.iter().any(|&w| w as usize >= self.words.len()) {
            return Err("token row out of range".into());
        }
        let mut counts = vec![0u32; k];
        for doc in 0..d {
            counts.iter_mut().for_each(|c| *c = 0);
            for &t in &self.z[self.doc_offsets[doc]..self.doc_offsets[doc + 1]] {
                if t as usize >= k {
                    return Err(format!("topic {t} out of range in doc {doc}"));
                }
                counts[t as usize] += 1;
            }
            if counts[..] != self.doc_topic[doc * k..(doc + 1) * k] {
                return Err(format!("doc_topic of doc {doc} disagrees with z"));
            }
        }
        Ok(())
    }
}
