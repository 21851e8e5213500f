//! LDA by collapsed Gibbs sampling as a parameter-server job: documents split round robin across
//! workers, token assignments and document-topic counts local to their worker, word-topic counts
//! in table [`WORD_TOPIC`] (`V` rows x `K`) and topic totals in table [`TOTALS`] (1 row x `K`),
//! both `add` tables of exact integer counts. Clock 0 pushes every worker's random initial
//! counts; each later clock reads its words' rows and the totals, sweeps once, and pushes the
//! count changes of the words that changed.

use super::args::LdaArgs;
use super::files::{detect_format, sibling_vocab, CorpusFormat};
use super::session::LdaSession;
use super::{
    load_ldac, load_uci, synthetic_lda_worker, take_worker_docs, Corpus, LdaHyper,
    SyntheticLdaSpec, DEFAULT_CLOCKS,
};
use crate::app::flags::{self, num, ratio};
use crate::app::{App, DeviceFigures, JobCommon, JobView, Plan, Session, Target, WorkerContext};
use crate::error::AppError;
use crate::par;
use ps_proto::{Init, UpdateRule};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const WORD_TOPIC: u32 = 0;
pub const TOTALS: u32 = 1;

/// The LDA app.
#[derive(Debug, Clone, Copy, Default)]
pub struct LdaApp;

/// What every LDA worker is created from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LdaSettings {
    pub hyper: LdaHyper,
    pub seed: u64,
    pub data: Option<String>,
    pub vocab: Option<String>,
    pub format: CorpusFormat,
    /// Held-out documents, in `format`.
    #[serde(default)]
    pub test: Option<String>,
    pub threads: u32,
    /// The built-in corpus's spec (`None` with `--data`, and from an older coordinator: the
    /// built-in spec of the seed).
    #[serde(default)]
    pub synthetic: Option<SyntheticLdaSpec>,
    /// The training log-likelihood is measured at clocks 1, 1 + N, ... (`--eval-every`; 1 from
    /// an older coordinator).
    #[serde(default = "every_clock")]
    pub eval_every: u32,
    /// Whether pull replies carry the counts exactly (a lossless pull codec): the final
    /// model is then checked for being counts ([`super::count_check`]).
    #[serde(default = "exact")]
    pub exact_pulls: bool,
    /// Whether the push codec is lossless and keeps no state between clocks (no residual, no
    /// momentum): only then may a worker that can rejoin drop the log of clocks the shards
    /// hold for good ([`super::moves_log`]), since replaying them then needs no push to rebuild
    /// the codec's state. Off when an older coordinator does not say.
    #[serde(default)]
    pub exact_pushes: bool,
}

fn exact() -> bool {
    true
}

fn every_clock() -> u32 {
    1
}

/// Whether clock `clock` (1 or later) measures the log-likelihood of the model it reads, with
/// `--eval-every eval_every`: clocks 1, 1 + N, 1 + 2N, ...
pub fn measures_at(eval_every: u32, clock: u64) -> bool {
    clock
        .saturating_sub(1)
        .is_multiple_of(u64::from(eval_every.max(1)))
}

/// Per-clock figures: the log-likelihood of the model the clock sweeps against, before the
/// sweep (none at clock 0, which pushes the initial counts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LdaClock {
    pub clock_loglik: f64,
    pub clock_tokens: f64,
    /// Workers that swept this clock without measuring the log-likelihood (`--eval-every`; or
    /// replayed it on a resident engine's path, [`super::moves_log`]).
    pub unmeasured: f64,
    /// Bytes a resident engine moved host to device and back, and its device compute seconds
    /// (zero on the host path).
    #[serde(flatten)]
    pub device: DeviceFigures,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LdaFinal {
    pub final_loglik: f64,
    pub final_tokens: f64,
    pub tokens_swept: f64,
    pub sweep_s: f64,
    pub workers: f64,
    /// Held-out documents (see [`super::heldout`]).
    pub heldout_loglik: f64,
    pub heldout_tokens: f64,
    pub heldout_unknown_tokens: f64,
    pub heldout_skipped_docs: f64,
    /// A resident engine's totals over the job, its set-up and the final rows loaded for the
    /// final log-likelihood included (see [`LdaClock`]).
    #[serde(flatten)]
    pub device: DeviceFigures,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LdaFacts {
    /// Mean over true topics of the best cosine with a learned one (built-in data, worker 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_recovery: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_topic_hash: Option<String>,
    /// Negative word-topic counts in the final model (worker 0, which reads it all; where
    /// pulls are exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_counts: Option<u64>,
    /// The largest gap between a final topic total and its column's sum (as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals_gap: Option<f64>,
}

/// A worker's corpus ([`load_corpus`]) and, for built-in data, the true topics (`K x V`) and
/// their count.
pub(super) struct Loaded {
    /// The worker's documents, with the whole corpus's vocabulary.
    pub corpus: Corpus,
    pub truth: Option<(Vec<f32>, usize)>,
    /// Held-out documents.
    pub test: Option<Corpus>,
}

/// The corpus of worker `worker` of `workers`: its documents ([`super::split_docs`]'s share; a
/// large built-in corpus draws only those), the whole held-out corpus and the true topics.
pub(super) fn load_corpus(s: &LdaSettings, workers: u32, worker: u32) -> Result<Loaded, AppError> {
    let read = |path: &str, vocab: Option<&Path>| -> Result<Corpus, AppError> {
        let path = Path::new(path);
        Ok(match s.format {
            CorpusFormat::Uci => load_uci(path, vocab)?,
            CorpusFormat::Ldac => load_ldac(path, vocab)?,
        })
    };
    match &s.data {
        Some(path) => {
            let mut corpus = read(path, s.vocab.as_deref().map(Path::new))?;
            corpus.docs = take_worker_docs(std::mem::take(&mut corpus.docs), workers, worker);
            Ok(Loaded {
                corpus,
                truth: None,
                test: s.test.as_deref().map(|t| read(t, None)).transpose()?,
            })
        }
        None => {
            let spec = s
                .synthetic
                .unwrap_or_else(|| SyntheticLdaSpec::default_builtin(s.seed));
            let syn = synthetic_lda_worker(&spec, workers, worker, par::threads());
            Ok(Loaded {
                corpus: syn.corpus,
                truth: Some((syn.topics, syn.num_topics as usize)),
                test: None,
            })
        }
    }
}

/// What the coordinator needs of a job's corpus: its sizes (the word-topic table's rows and the
/// facts).
#[derive(Debug, PartialEq)]
struct CorpusSize {
    docs: u64,
    vocab: u32,
    tokens: u64,
    /// Documents and tokens of the held-out corpus, if any.
    test: Option<(u64, u64)>,
}

impl CorpusSize {
    /// Of the files, read; of a synthetic corpus, from its spec without generating it (every
    /// document has `doc_len` tokens when there are topics and words): each worker generates
    /// its own documents, and the coordinator needs none of them.
    fn of(s: &LdaSettings) -> Result<CorpusSize, AppError> {
        if s.data.is_none() {
            let spec = s
                .synthetic
                .unwrap_or_else(|| SyntheticLdaSpec::default_builtin(s.seed));
            let any = spec.topics > 0 && spec.vocab > 0;
            return Ok(CorpusSize {
                docs: u64::from(spec.docs),
                vocab: spec.vocab,
                tokens: if any {
                    u64::from(spec.docs) * u64::from(spec.doc_len)
                } else {
                    0
                },
                test: None,
            });
        }
        let Loaded { corpus, test, .. } = load_corpus(s, 1, 0)?;
        Ok(CorpusSize::of_corpus(&corpus, test.as_ref()))
    }

    fn of_corpus(corpus: &Corpus, test: Option<&Corpus>) -> CorpusSize {
        CorpusSize {
            docs: corpus.num_docs() as u64,
            vocab: corpus.vocab_size,
            tokens: corpus.num_tokens(),
            test: test.map(|t| (t.num_docs() as u64, t.num_tokens())),
        }
    }
}

impl App for LdaApp {
    type Args = LdaArgs;
    type Settings = LdaSettings;
    type Clock = LdaClock;
    type Final = LdaFinal;
    type Facts = LdaFacts;

    fn name(&self) -> &'static str {
        "lda"
    }

    fn about(&self) -> &'static str {
        "topic model by collapsed Gibbs sampling"
    }

    fn plan(&self, a: &LdaArgs, job: &JobCommon) -> Result<Plan<LdaSettings>, AppError> {
        let hyper = LdaHyper {
            topics: a.topics,
            alpha: a.alpha,
            beta: a.beta,
        };
        hyper
            .validate()
            .map_err(|e| AppError::Settings(format!("LDA: {e} (--topics, --alpha, --beta)")))?;
        flags::in_range("--topics", hyper.topics, 1, 100_000)?;
        let data = flags::absolute(a.data.as_deref(), "corpus file")?;
        let format = match &data {
            Some(p) => detect_format(Path::new(p))?,
            None => CorpusFormat::Uci,
        };
        let vocab = match (&a.vocab, &data) {
            (Some(v), _) => flags::absolute(Some(v), "vocabulary file")?,
            (None, Some(p)) => sibling_vocab(Path::new(p)).map(|v| v.display().to_string()),
            (None, None) => None,
        };
        let test = flags::absolute(a.test.as_deref(), "held-out corpus file")?;
        let synthetic = if data.is_none() {
            Some(a.synthetic_spec(job.seed)?)
        } else {
            None
        };
        if let Some(t) = &test {
            let f = detect_format(Path::new(t))?;
            if f != format {
                return Err(AppError::Settings(format!(
                    "--test {t} is {f:?} but --data is {format:?}: give both in one format"
                )));
            }
        }
        let settings = LdaSettings {
            hyper,
            seed: job.seed,
            data,
            vocab,
            format,
            test,
            threads: job.threads,
            synthetic,
            eval_every: a.eval_every,
            exact_pulls: job.pull_codec.is_lossless(),
            exact_pushes: job.push_codec.is_lossless(),
        };
        let size = CorpusSize::of(&settings)?;
        if size.tokens == 0 {
            return Err(AppError::Settings("the corpus has no tokens".into()));
        }
        let (k, add, zeros) = (hyper.topics, UpdateRule::Add, Init::Zeros);
        let tables = vec![
            job.table(WORD_TOPIC, "word_topic", (size.vocab.into(), k), add, zeros),
            job.table(TOTALS, "topic_totals", (1, k), add, zeros),
        ];
        let mut facts = serde_json::Map::new();
        facts.insert("docs".into(), size.docs.into());
        facts.insert("vocab".into(), size.vocab.into());
        facts.insert("tokens".into(), size.tokens.into());
        facts.insert("topics".into(), hyper.topics.into());
        facts.insert("alpha".into(), hyper.alpha.into());
        facts.insert("beta".into(), hyper.beta.into());
        facts.insert("seed".into(), job.seed.into());
        facts.insert("data".into(), flags::data_fact(&settings.data));
        if let Some((docs, tokens)) = size.test {
            facts.insert("test".into(), flags::data_fact(&settings.test));
            facts.insert("test_docs".into(), docs.into());
            facts.insert("test_tokens".into(), tokens.into());
        }
        if settings.data.is_some() {
            let f = match settings.format {
                CorpusFormat::Uci => "uci",
                CorpusFormat::Ldac => "lda-c",
            };
            facts.insert("format".into(), f.into());
        }
        Ok(Plan {
            tables,
            clocks: u64::from(DEFAULT_CLOCKS),
            settings,
            facts,
        })
    }

    fn session(
        &self,
        s: LdaSettings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError> {
        Ok(Box::new(LdaSession::new(s, ctx)?))
    }

    fn clock_line(&self, c: &LdaClock) -> String {
        match ratio(c.clock_loglik, c.clock_tokens) {
            Some(ll) => format!("loglik/token {ll:.4}"),
            None if c.unmeasured > 0.0 => "loglik/token not measured (--eval-every)".to_string(),
            None => "initial counts".to_string(),
        }
    }

    fn clock_metrics(&self, c: &LdaClock) -> Vec<(&'static str, Option<f64>)> {
        vec![("loglik_per_token", ratio(c.clock_loglik, c.clock_tokens))]
    }

    /// The built-in corpus's bar: most of the way from the random start (-6.58) to the
    /// converged value (-5.48).
    fn target(&self) -> Option<Target> {
        Some(Target {
            metric: "loglik_per_token".into(),
            lower_is_better: false,
            value: -5.55,
        })
    }

    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let initial = job
            .clocks
            .iter()
            .find_map(|(_, c)| ratio(c.clock_loglik, c.clock_tokens));
        let f = &job.sums;
        out.insert("loglik_per_token_initial".into(), num(initial));
        out.insert(
            "loglik_per_token".into(),
            num(ratio(f.final_loglik, f.final_tokens)),
        );
        if let Some(r) = job.facts.topic_recovery {
            out.insert("topic_recovery".into(), r.into());
        }
        if let Some(h) = &job.facts.word_topic_hash {
            out.insert("word_topic_hash".into(), h.clone().into());
        }
        if let Some(n) = job.facts.negative_counts {
            out.insert("word_topic_negative_counts".into(), n.into());
        }
        if let Some(g) = job.facts.totals_gap {
            out.insert("topic_totals_gap".into(), g.into());
        }
        if f.heldout_tokens > 0.0 || f.heldout_skipped_docs > 0.0 {
            let per_token = ratio(f.heldout_loglik, f.heldout_tokens);
            out.insert("held_out_loglik_per_token".into(), num(per_token));
            out.insert(
                "held_out_perplexity".into(),
                num(per_token.map(|l| (-l).exp())),
            );
            out.insert("held_out_tokens".into(), f.heldout_tokens.into());
            out.insert(
                "held_out_unknown_tokens".into(),
                f.heldout_unknown_tokens.into(),
            );
            out.insert(
                "held_out_skipped_docs".into(),
                f.heldout_skipped_docs.into(),
            );
        }
        // All workers' swept tokens over the per-worker mean sweep time.
        if f.sweep_s > 0.0 && f.workers > 0.0 {
            out.insert(
                "tokens_per_s".into(),
                (f.tokens_swept / (f.sweep_s / f.workers)).into(),
            );
        }
        flags::device_figures(&mut out, &f.device, &job.totals.1.device, job.clock_count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda::synthetic_lda_threads;

    #[test]
    fn eval_every_measures_clocks_one_and_every_nth_after() {
        let at = |n: u32| (1..=9).filter(|&c| measures_at(n, c)).collect::<Vec<u64>>();
        assert_eq!(at(1), (1..=9).collect::<Vec<_>>());
        assert_eq!(at(3), [1, 4, 7]);
        assert_eq!(at(0), at(1), "0 is taken as 1");
        assert_eq!(at(100), [1]);
    }

    #[test]
    fn a_synthetic_corpus_is_sized_from_its_spec_as_generated() {
        let base = SyntheticLdaSpec::default_builtin(3);
        let specs = [
            base,
            // Large enough for the parallel generator.
            SyntheticLdaSpec {
                docs: 3_000,
                doc_len: 400,
                vocab: 5_000,
                topics: 20,
                ..base
            },
            SyntheticLdaSpec { topics: 0, ..base },
            SyntheticLdaSpec { vocab: 0, ..base },
            SyntheticLdaSpec { vocab: 3, ..base },
        ];
        for spec in specs {
            let settings = LdaSettings {
                hyper: LdaHyper {
                    topics: 10,
                    alpha: 0.1,
                    beta: 0.01,
                },
                seed: spec.seed,
                data: None,
                vocab: None,
                format: CorpusFormat::Uci,
                test: None,
                threads: 1,
                synthetic: Some(spec),
                eval_every: 1,
                exact_pulls: true,
                exact_pushes: true,
            };
            let generated = synthetic_lda_threads(&spec, 2).corpus;
            assert_eq!(
                CorpusSize::of(&settings).unwrap(),
                CorpusSize::of_corpus(&generated, None),
                "{spec:?}"
            );
        }
    }
}
