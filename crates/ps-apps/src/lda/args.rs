//! LDA's flags: the model's, the corpus files', and the built-in synthetic corpus's size.

use super::{
    LdaHyper, SyntheticLdaSpec, BUILTIN_DOCS, BUILTIN_DOC_LEN, BUILTIN_TOPICS, BUILTIN_VOCAB,
    MAX_DOCS, MAX_TOKENS, MAX_VOCAB,
};
use crate::app::flags;
use crate::error::AppError;
use std::path::PathBuf;

/// Largest `--true-topics x --vocab-size`: the true topics are kept as a dense table of that
/// many `f32` (4 GiB).
pub const MAX_TRUTH: u64 = 1 << 30;

/// LDA flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LdaArgs {
    /// Number of topics.
    #[arg(long, default_value_t = LdaHyper::default().topics)]
    pub topics: u32,
    /// Dirichlet prior of document-topic mixtures.
    #[arg(long, default_value_t = LdaHyper::default().alpha)]
    pub alpha: f64,
    /// Dirichlet prior of topic-word distributions.
    #[arg(long, default_value_t = LdaHyper::default().beta)]
    pub beta: f64,
    /// Measure the training log-likelihood every N clocks (clocks 1, 1 + N, ...; the final
    /// model's is always measured). On the CPU a measurement costs a quarter to a half of a
    /// sweep (K 200 to 1,000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_every: u32,
    /// Documents of the built-in synthetic corpus (with --doc-length, --vocab-size and
    /// --true-topics: a larger corpus to measure throughput on).
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_DOCS)]
    pub docs: u32,
    /// Tokens per document of the built-in synthetic corpus.
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_DOC_LEN)]
    pub doc_length: u32,
    /// Vocabulary size of the built-in synthetic corpus.
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_VOCAB)]
    pub vocab_size: u32,
    /// Topics the built-in synthetic corpus is drawn from (--topics is the model's).
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_TOPICS)]
    pub true_topics: u32,
    /// Corpus instead of the built-in synthetic one: a UCI docword file (see --vocab) or an
    /// lda-c file.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Vocabulary file, one word per line (default: vocab.NAME.txt beside a docword.NAME.txt,
    /// if there).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Held-out documents (same format and word ids as --data): the summary gives their
    /// perplexity by document completion (half of each document's tokens fold the document
    /// in, the other half are scored).
    #[arg(long, requires = "data")]
    pub test: Option<PathBuf>,
}

impl Default for LdaArgs {
    /// The flags' defaults, as `--app lda` with no LDA flag.
    fn default() -> Self {
        let hyper = LdaHyper::default();
        LdaArgs {
            topics: hyper.topics,
            alpha: hyper.alpha,
            beta: hyper.beta,
            eval_every: 1,
            docs: BUILTIN_DOCS,
            doc_length: BUILTIN_DOC_LEN,
            vocab_size: BUILTIN_VOCAB,
            true_topics: BUILTIN_TOPICS,
            data: None,
            vocab: None,
            test: None,
        }
    }
}

impl LdaArgs {
    /// The built-in corpus the flags ask for, checked.
    pub fn synthetic_spec(&self, seed: u64) -> Result<SyntheticLdaSpec, AppError> {
        flags::in_range("--docs", u64::from(self.docs), 1, MAX_DOCS)?;
        flags::in_range("--doc-length", self.doc_length, 1, 1_000_000)?;
        flags::in_range("--vocab-size", u64::from(self.vocab_size), 1, MAX_VOCAB)?;
        flags::in_range("--true-topics", self.true_topics, 1, 100_000)?;
        let tokens = u64::from(self.docs) * u64::from(self.doc_length);
        if tokens > MAX_TOKENS {
            return Err(AppError::Settings(format!(
                "--docs x --doc-length is {tokens} tokens, above the limit {MAX_TOKENS}"
            )));
        }
        let truth = u64::from(self.true_topics) * u64::from(self.vocab_size);
        if truth > MAX_TRUTH {
            return Err(AppError::Settings(format!(
                "--true-topics x --vocab-size is {truth}, above the limit {MAX_TRUTH} \
                 (the true topics are a dense table)"
            )));
        }
        Ok(SyntheticLdaSpec {
            docs: self.docs,
            doc_len: self.doc_length,
            vocab: self.vocab_size,
            topics: self.true_topics,
            ..SyntheticLdaSpec::default_builtin(seed)
        })
    }
}
