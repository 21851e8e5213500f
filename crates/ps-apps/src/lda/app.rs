//! LDA by collapsed Gibbs sampling as a parameter-server job: documents split round robin across
//! workers, token assignments and document-topic counts local to their worker, word-topic counts
//! in table [`WORD_TOPIC`] (`V` rows x `K`) and topic totals in table [`TOTALS`] (1 row x `K`),
//! both `add` tables of exact integer counts. Clock 0 pushes every worker's random initial
//! counts; each later clock reads its words' rows and the totals, sweeps once, and pushes the
//! count changes of the words that changed.

use super::args::LdaArgs;
use super::files::{detect_format, sibling_vocab, top_words, CorpusFormat};
use super::heldout::document_completion;
use super::{
    load_ldac, load_uci, loglik, split_docs, synthetic_lda, topic_recovery, worker_doc_ids, Corpus,
    LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, SweepKey, SyntheticLdaSpec, DEFAULT_CLOCKS,
};
use crate::app::flags::{self, num, ratio};
use crate::app::{
    App, DeltaSink, Inbox, JobCommon, JobView, Outcome, Plan, Session, TableRows, Target,
    WorkerContext,
};
use crate::error::AppError;
use ps_proto::{Init, UpdateRule};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

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
}

/// Per-clock figures: the log-likelihood of the model the clock sweeps against, before the
/// sweep (none at clock 0, which pushes the initial counts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LdaClock {
    pub clock_loglik: f64,
    pub clock_tokens: f64,
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LdaFacts {
    /// Mean over true topics of the best cosine with a learned one (built-in data, worker 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_recovery: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_topic_hash: Option<String>,
}

/// The corpus and, for built-in data, the true topics (`K x V`) and their count.
struct Loaded {
    corpus: Corpus,
    truth: Option<(Vec<f32>, usize)>,
    /// Held-out documents.
    test: Option<Corpus>,
}

fn load(s: &LdaSettings) -> Result<Loaded, AppError> {
    let read = |path: &str, vocab: Option<&Path>| -> Result<Corpus, AppError> {
        let path = Path::new(path);
        Ok(match s.format {
            CorpusFormat::Uci => load_uci(path, vocab)?,
            CorpusFormat::Ldac => load_ldac(path, vocab)?,
        })
    };
    match &s.data {
        Some(path) => Ok(Loaded {
            corpus: read(path, s.vocab.as_deref().map(Path::new))?,
            truth: None,
            test: s.test.as_deref().map(|t| read(t, None)).transpose()?,
        }),
        None => {
            let spec = s
                .synthetic
                .unwrap_or_else(|| SyntheticLdaSpec::default_builtin(s.seed));
            let syn = synthetic_lda(&spec);
            Ok(Loaded {
                corpus: syn.corpus,
                truth: Some((syn.topics, syn.num_topics as usize)),
                test: None,
            })
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
        };
        let Loaded {
            corpus,
            test: held_out,
            ..
        } = load(&settings)?;
        if corpus.num_tokens() == 0 {
            return Err(AppError::Settings("the corpus has no tokens".into()));
        }
        let (k, add, zeros) = (hyper.topics, UpdateRule::Add, Init::Zeros);
        let tables = vec![
            job.table(
                WORD_TOPIC,
                "word_topic",
                (corpus.vocab_size.into(), k),
                add,
                zeros,
            ),
            job.table(TOTALS, "topic_totals", (1, k), add, zeros),
        ];
        let mut facts = serde_json::Map::new();
        facts.insert("docs".into(), corpus.num_docs().into());
        facts.insert("vocab".into(), corpus.vocab_size.into());
        facts.insert("tokens".into(), corpus.num_tokens().into());
        facts.insert("topics".into(), hyper.topics.into());
        facts.insert("alpha".into(), hyper.alpha.into());
        facts.insert("beta".into(), hyper.beta.into());
        facts.insert("seed".into(), job.seed.into());
        facts.insert("data".into(), flags::data_fact(&settings.data));
        if let Some(t) = &held_out {
            facts.insert("test".into(), flags::data_fact(&settings.test));
            facts.insert("test_docs".into(), t.num_docs().into());
            facts.insert("test_tokens".into(), t.num_tokens().into());
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
        out
    }
}

/// One LDA worker: its documents' assignments and counts, and its copy of its words' rows.
pub struct LdaSession {
    worker: u32,
    hyper: LdaHyper,
    seed: u64,
    engine: Box<dyn LdaCompute + Send>,
    state: LdaWorkerState,
    /// Clock 0's push: the counts of the random initial assignments.
    initial: Option<LdaDelta>,
    /// The worker's words as table rows (sorted).
    words: Vec<u64>,
    /// Their rows (`words.len() x K`) and the totals row, as read.
    local: Vec<f32>,
    totals: Vec<f32>,
    /// The final read's rows (worker 0: the whole word-topic table; the others: their words
    /// and their held-out documents' words), and their values.
    final_rows: Vec<u64>,
    all: Vec<f32>,
    /// This worker's held-out documents: (index in the file, tokens).
    held: Vec<(usize, Vec<u32>)>,
    corpus_vocab: Option<Vec<String>>,
    truth: Option<(Vec<f32>, usize)>,
    inbox: Inbox,
    swept: u64,
    sweep_s: f64,
}

impl LdaSession {
    pub fn new(s: LdaSettings, ctx: &WorkerContext<'_>) -> Result<LdaSession, AppError> {
        ctx.check()?;
        let engine = ctx.engines.lda(s.threads)?;
        let Loaded {
            corpus,
            truth,
            test,
        } = load(&s)?;
        let held = match &test {
            Some(t) => worker_doc_ids(t.num_docs(), ctx.workers, ctx.worker)
                .into_iter()
                .map(|d| (d, t.docs[d].clone()))
                .collect(),
            None => Vec::new(),
        };
        let docs = split_docs(&corpus, ctx.workers, ctx.worker);
        let (state, initial) =
            LdaWorkerState::init(&docs, corpus.vocab_size, &s.hyper, s.seed, ctx.worker)?;
        let words: Vec<u64> = state.words.iter().map(|&w| u64::from(w)).collect();
        let k = s.hyper.topics as usize;
        tracing::info!(
            worker = ctx.worker,
            docs = state.num_docs(),
            tokens = state.num_tokens(),
            words = words.len(),
            engine = engine.name(),
            "LDA worker ready"
        );
        let lead = ctx.worker == 0;
        Ok(LdaSession {
            worker: ctx.worker,
            hyper: s.hyper,
            seed: s.seed,
            engine,
            local: vec![0.0; words.len() * k],
            totals: vec![0.0; k],
            final_rows: Vec::new(),
            all: Vec::new(),
            held,
            words,
            state,
            initial: Some(initial),
            corpus_vocab: if lead { corpus.vocab } else { None },
            truth: if lead { truth } else { None },
            inbox: Inbox::default(),
            swept: 0,
            sweep_s: 0.0,
        })
    }

    fn k(&self) -> usize {
        self.hyper.topics as usize
    }

    /// A sweep's (or the initial) count changes: the changed words' rows and the totals row.
    fn write(&self, delta: &LdaDelta, out: &mut dyn DeltaSink) -> Result<(), AppError> {
        let k = self.k();
        let mut touched: Vec<u64> = delta.entries.iter().map(|e| u64::from(e.0)).collect();
        touched.sort_unstable();
        touched.dedup();
        if !touched.is_empty() {
            let rows = out.rows(WORD_TOPIC, &touched)?;
            for &(w, t, c) in &delta.entries {
                let i = touched.binary_search(&u64::from(w)).unwrap_or(0);
                rows[i * k + t as usize] += c as f32;
            }
        }
        if delta.totals.iter().any(|&c| c != 0) {
            let row = out.rows(TOTALS, &[0])?;
            row.iter_mut()
                .zip(&delta.totals)
                .for_each(|(r, &c)| *r = c as f32);
        }
        Ok(())
    }
}

impl Session<LdaApp> for LdaSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            let reads = if clock == 0 {
                Vec::new()
            } else {
                vec![
                    TableRows {
                        table: WORD_TOPIC,
                        rows: self.words.clone(),
                    },
                    TableRows {
                        table: TOTALS,
                        rows: vec![0],
                    },
                ]
            };
            self.inbox.expect_clock(clock, reads);
        }
        Ok(self.inbox.reads().to_vec())
    }

    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError> {
        let k = self.k();
        self.inbox.accept(table, first, keys, values, k)?;
        let dst = match table {
            TOTALS => &mut self.totals[..],
            _ if self.inbox.clock().is_none() => &mut self.all[..],
            _ => &mut self.local[..],
        };
        dst[first * k..(first + keys.len()) * k].copy_from_slice(values);
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<LdaClock, AppError> {
        self.inbox.ready(clock)?;
        if clock == 0 {
            let initial = self.initial.take().unwrap_or_default();
            self.write(&initial, out)?;
            return Ok(LdaClock::default());
        }
        // The model every worker sweeps against this clock, before the sweep.
        let (ll, n) = loglik(&self.state, &self.local, &self.totals, &self.hyper);
        let key = SweepKey {
            seed: self.seed,
            worker: self.worker,
            clock: clock.min(u64::from(u32::MAX)) as u32,
        };
        let started = Instant::now();
        let delta = self.engine.sweep(
            &mut self.state,
            &mut self.local,
            &mut self.totals,
            &self.hyper,
            key,
        )?;
        self.sweep_s += started.elapsed().as_secs_f64();
        self.swept += self.state.num_tokens() as u64;
        self.write(&delta, out)?;
        Ok(LdaClock {
            clock_loglik: ll,
            clock_tokens: n as f64,
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        let v = u64::from(self.state.vocab_size);
        let rows: Vec<u64> = if self.worker == 0 {
            (0..v).collect()
        } else {
            let held = self
                .held
                .iter()
                .flat_map(|(_, d)| d.iter().map(|&w| u64::from(w)));
            let mut r: Vec<u64> = self
                .words
                .iter()
                .copied()
                .chain(held)
                .filter(|&w| w < v)
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        self.all = vec![0.0; rows.len() * self.k()];
        self.final_rows = rows.clone();
        self.inbox.expect(vec![
            TableRows {
                table: WORD_TOPIC,
                rows,
            },
            TableRows {
                table: TOTALS,
                rows: vec![0],
            },
        ]);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<LdaFinal, LdaFacts>, AppError> {
        self.inbox.complete()?;
        let k = self.k();
        let mut facts = LdaFacts::default();
        for (i, w) in self.words.iter().enumerate() {
            let at = self.final_rows.binary_search(w).unwrap_or(0) * k;
            self.local[i * k..(i + 1) * k].copy_from_slice(&self.all[at..at + k]);
        }
        let (rows, all) = (&self.final_rows, &self.all);
        let row = |w: u32| {
            let at = rows.binary_search(&u64::from(w)).ok()? * k;
            all.get(at..at + k)
        };
        let held = document_completion(
            &self.held,
            row,
            &self.totals,
            self.state.vocab_size,
            &self.hyper,
            self.seed,
        );
        if self.worker == 0 {
            if let Some((topics, true_k)) = &self.truth {
                facts.topic_recovery = Some(topic_recovery(
                    topics,
                    *true_k,
                    &self.all,
                    k,
                    self.hyper.beta,
                ));
            }
            facts.word_topic_hash = Some(flags::hash_bits(&self.all));
            if let Some(vocab) = &self.corpus_vocab {
                for line in top_words(&self.all, k, vocab, 8) {
                    eprintln!("{line}");
                }
            }
        }
        let (ll, n) = loglik(&self.state, &self.local, &self.totals, &self.hyper);
        Ok(Outcome {
            sums: LdaFinal {
                final_loglik: ll,
                final_tokens: n as f64,
                tokens_swept: self.swept as f64,
                sweep_s: self.sweep_s,
                workers: 1.0,
                heldout_loglik: held.loglik,
                heldout_tokens: held.tokens as f64,
                heldout_unknown_tokens: held.unknown_tokens as f64,
                heldout_skipped_docs: held.skipped_docs as f64,
            },
            facts,
        })
    }
}
