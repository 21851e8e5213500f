//! LDA by collapsed Gibbs sampling on the parameter server: documents split round robin across
//! workers, token assignments and document-topic counts local to their worker, word-topic counts
//! in table 0 (`V` rows x `K`) and topic totals in table 1 (1 row x `K`), both `add` tables of
//! exact integer counts. Clock 0 pushes every worker's random initial counts; each later clock
//! reads its words' rows and the totals, sweeps once, and pushes the sparse count changes.

use super::{hash_bits, Chaos, Plan};
use crate::cli::JobArgs;
use anyhow::{bail, Context, Result};
use ps_apps::lda::{
    self, loglik, split_docs, Corpus, LdaHyper, LdaWorkerState, SweepKey, SyntheticLdaSpec,
};
use ps_client::PsClient;
use ps_proto::{Assign, Done, Init, TableSpec, UpdateRule};
use ps_server::{ClockSummary, JobResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use worker_gpu::Device;

pub const WORD_TOPIC: u32 = 0;
pub const TOTALS: u32 = 1;

/// How a corpus file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorpusFormat {
    /// UCI bag of words: `D`, `W`, `NNZ` header lines, then `doc word count` lines.
    Uci,
    /// lda-c (Blei): one document per line, `N id:count id:count ...`.
    Ldac,
}

/// LDA settings carried from the coordinator to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LdaSettings {
    pub hyper: LdaHyper,
    pub seed: u64,
    pub data: Option<String>,
    pub vocab: Option<String>,
    pub format: CorpusFormat,
    pub threads: u32,
    #[serde(flatten)]
    pub chaos: Chaos,
}

/// The corpus and, for built-in data, the true topics (`K x V`) and their count.
struct Loaded {
    corpus: Corpus,
    truth: Option<(Vec<f32>, usize)>,
}

fn load(s: &LdaSettings) -> Result<Loaded> {
    match &s.data {
        Some(path) => {
            let path = Path::new(path);
            let vocab = s.vocab.as_deref().map(Path::new);
            let corpus = match s.format {
                CorpusFormat::Uci => lda::load_uci(path, vocab)?,
                CorpusFormat::Ldac => lda::load_ldac(path, vocab)?,
            };
            Ok(Loaded {
                corpus,
                truth: None,
            })
        }
        None => {
            let spec = SyntheticLdaSpec::default_builtin(s.seed);
            let syn = lda::synthetic_lda(&spec);
            Ok(Loaded {
                corpus: syn.corpus,
                truth: Some((syn.topics, syn.num_topics as usize)),
            })
        }
    }
}

/// UCI when the name says `docword` or the first line is a lone number (the `D` header);
/// lda-c otherwise (its lines are `N id:count ...`).
fn detect_format(path: &Path) -> Result<CorpusFormat> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if name.as_deref().is_some_and(|n| n.contains("docword")) {
        return Ok(CorpusFormat::Uci);
    }
    if name.as_deref().is_some_and(|n| n.ends_with(".gz")) {
        bail!(
            "{}: cannot tell a gzipped corpus's format from its name; name it docword.*.gz for UCI",
            path.display()
        );
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let first = text
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(if first.parse::<u64>().is_ok() {
        CorpusFormat::Uci
    } else {
        CorpusFormat::Ldac
    })
}

/// `vocab.NAME.txt` beside `docword.NAME.txt[.gz]`, if it exists.
fn sibling_vocab(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("docword.")?;
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    let candidate = path.with_file_name(format!("vocab.{rest}"));
    candidate.is_file().then_some(candidate)
}

pub fn plan(job: &JobArgs) -> Result<Plan> {
    let hyper = LdaHyper {
        topics: job.topics.unwrap_or(LdaHyper::default().topics),
        alpha: job.alpha.unwrap_or(LdaHyper::default().alpha),
        beta: job.beta.unwrap_or(LdaHyper::default().beta),
    };
    hyper
        .validate()
        .map_err(|e| anyhow::anyhow!("LDA: {e} (--topics, --alpha, --beta)"))?;
    if hyper.topics > 100_000 {
        bail!("--topics must be at most 100000");
    }
    let data = JobArgs::absolute(&job.data, "corpus file")?;
    let format = match &data {
        Some(p) => detect_format(Path::new(p))?,
        None => CorpusFormat::Uci,
    };
    let vocab = match (&job.vocab, &data) {
        (Some(_), _) => JobArgs::absolute(&job.vocab, "vocabulary file")?,
        (None, Some(p)) => sibling_vocab(Path::new(p)).map(|v| v.display().to_string()),
        (None, None) => None,
    };
    let settings = LdaSettings {
        hyper,
        seed: job.seed,
        data,
        vocab,
        format,
        threads: job.threads,
        chaos: Chaos::from_job(job),
    };
    let loaded = load(&settings)?;
    let corpus = &loaded.corpus;
    if corpus.num_tokens() == 0 {
        bail!("the corpus has no tokens");
    }
    let staleness = super::table_staleness(job);
    let table = |id: u32, name: &str, rows: u64| TableSpec {
        id,
        name: name.into(),
        rows,
        width: hyper.topics,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness,
        layout: Default::default(),
        push_codec: job.push_codec.clone(),
        pull_codec: job.pull_codec.clone(),
    };
    let tables = vec![
        table(WORD_TOPIC, "word_topic", corpus.vocab_size as u64),
        table(TOTALS, "topic_totals", 1),
    ];
    let mut facts = serde_json::Map::new();
    facts.insert("docs".into(), corpus.num_docs().into());
    facts.insert("vocab".into(), corpus.vocab_size.into());
    facts.insert("tokens".into(), corpus.num_tokens().into());
    facts.insert("topics".into(), hyper.topics.into());
    facts.insert("alpha".into(), hyper.alpha.into());
    facts.insert("beta".into(), hyper.beta.into());
    facts.insert("seed".into(), job.seed.into());
    facts.insert("data".into(), super::data_fact(&settings.data));
    if settings.data.is_some() {
        let f = match settings.format {
            CorpusFormat::Uci => "uci",
            CorpusFormat::Ldac => "lda-c",
        };
        facts.insert("format".into(), f.into());
    }
    Ok(Plan {
        tables,
        job: super::job_spec(
            "lda",
            job,
            job.clocks.unwrap_or(lda::DEFAULT_CLOCKS as u64),
            &settings,
        )?,
        facts,
    })
}

fn per_token(sums: &BTreeMap<String, f64>, what: &str) -> Option<f64> {
    super::ratio_of(sums, &format!("{what}_loglik"), &format!("{what}_tokens"))
}

pub fn clock_figures(s: &ClockSummary) -> String {
    match per_token(&s.sums, "clock") {
        Some(ll) => format!("loglik/token {ll:.4}"),
        None => "initial counts".to_string(),
    }
}

pub fn summary_fields(r: &JobResult, out: &mut serde_json::Map<String, serde_json::Value>) {
    use super::num;
    let initial = r.clocks.iter().find_map(|c| per_token(&c.sums, "clock"));
    out.insert("loglik_per_token_initial".into(), num(initial));
    out.insert("loglik_per_token".into(), num(per_token(&r.sums, "final")));
    super::copy_facts(r, &["topic_recovery", "word_topic_hash"], out);
    // All workers' swept tokens over the per-worker mean sweep time.
    let (tokens, sweep_s, workers) = (
        r.sums.get("tokens_swept").copied().unwrap_or(0.0),
        r.sums.get("sweep_s").copied().unwrap_or(0.0),
        r.sums.get("workers").copied().unwrap_or(0.0),
    );
    if sweep_s > 0.0 && workers > 0.0 {
        out.insert("tokens_per_s".into(), (tokens / (sweep_s / workers)).into());
    }
}

/// One worker's whole job.
pub fn run_worker(client: &mut PsClient, assign: &Assign, device: Device) -> Result<Done> {
    let settings: LdaSettings = super::settings_of(assign)?;
    let mut engine = worker_gpu::lda_engine(device, settings.threads)?;
    let hyper = settings.hyper;
    let Loaded { corpus, truth } = load(&settings)?;
    let (w, workers) = (assign.id, assign.num_workers);
    let docs = split_docs(&corpus, workers, w);
    let (mut state, initial) =
        LdaWorkerState::init(&docs, corpus.vocab_size, &hyper, settings.seed, w)?;
    drop(docs);
    let rows: Vec<u64> = state.words.iter().map(|&x| x as u64).collect();
    tracing::info!(
        worker = w,
        docs = state.num_docs(),
        tokens = state.num_tokens(),
        words = rows.len(),
        engine = engine.name(),
        "LDA worker ready"
    );

    let (mut swept, mut sweep_s) = (0u64, 0.0f64);
    for clock in 0..assign.job.clocks {
        settings.chaos.before_clock(w, clock);
        let mut sums = BTreeMap::new();
        if clock == 0 {
            push(client, &initial)?;
        } else {
            let mut local = client.table(WORD_TOPIC)?.read_rows(&rows)?;
            let mut totals = client.table(TOTALS)?.read_row(0)?;
            // The model every worker sweeps against this clock, before the sweep.
            let (ll, n) = loglik(&state, &local, &totals, &hyper);
            sums.insert("clock_loglik".to_string(), ll);
            sums.insert("clock_tokens".to_string(), n as f64);
            let key = SweepKey {
                seed: settings.seed,
                worker: w,
                clock: clock.min(u32::MAX as u64) as u32,
            };
            let started = Instant::now();
            let delta = engine.sweep(&mut state, &mut local, &mut totals, &hyper, key);
            sweep_s += started.elapsed().as_secs_f64();
            swept += state.num_tokens() as u64;
            push(client, &delta)?;
        }
        client.clock_with(sums)?;
    }
    client.flush()?;

    // The final model: every worker's every sweep applied.
    let local = client.table(WORD_TOPIC)?.read_rows_synced(&rows)?;
    let totals = client.table(TOTALS)?.read_rows_synced(&[0])?;
    let (ll, n) = loglik(&state, &local, &totals, &hyper);
    let mut done = Done {
        worker: w,
        ..Default::default()
    };
    done.sums = BTreeMap::from([
        ("final_loglik".to_string(), ll),
        ("final_tokens".to_string(), n as f64),
        ("tokens_swept".to_string(), swept as f64),
        ("sweep_s".to_string(), sweep_s),
        ("workers".to_string(), 1.0),
    ]);
    if w == 0 {
        let all: Vec<u64> = (0..corpus.vocab_size as u64).collect();
        let word_topic = client.table(WORD_TOPIC)?.read_rows_synced(&all)?;
        let k = hyper.topics as usize;
        if let Some((topics, true_k)) = &truth {
            let recovery = lda::topic_recovery(topics, *true_k, &word_topic, k, hyper.beta);
            done.facts
                .insert("topic_recovery".into(), serde_json::Value::from(recovery));
        }
        done.facts
            .insert("word_topic_hash".into(), hash_bits(&word_topic).into());
        if let Some(vocab) = &corpus.vocab {
            for line in top_words(&word_topic, k, vocab, 8) {
                eprintln!("{line}");
            }
        }
    }
    Ok(done)
}

/// Pushes a sweep's count changes: the touched word rows and the totals row.
fn push(client: &mut PsClient, delta: &lda::LdaDelta) -> Result<()> {
    let (words, rows) = delta.to_dense_rows();
    let k = delta.topics as usize;
    let mut t = client.table(WORD_TOPIC)?;
    for (word, row) in words.iter().zip(rows.chunks_exact(k)) {
        t.inc_row(*word as u64, row)?;
    }
    if delta.totals.iter().any(|&c| c != 0) {
        client.table(TOTALS)?.inc_row(0, &delta.totals_f32())?;
    }
    Ok(())
}

/// "topic K: word word ..." for each topic: its `n` most frequent words.
fn top_words(word_topic: &[f32], k: usize, vocab: &[String], n: usize) -> Vec<String> {
    (0..k)
        .map(|t| {
            let mut ids: Vec<usize> = (0..vocab.len()).collect();
            ids.sort_by(|&a, &b| word_topic[b * k + t].total_cmp(&word_topic[a * k + t]));
            let words: Vec<&str> = ids.iter().take(n).map(|&i| vocab[i].as_str()).collect();
            format!("topic {t:>3}: {}", words.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_format_from_name_or_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let uci = dir.path().join("corpus.txt");
        std::fs::write(&uci, "2\n3\n2\n1 1 2\n2 3 1\n").unwrap();
        assert_eq!(detect_format(&uci).unwrap(), CorpusFormat::Uci);
        let ldac = dir.path().join("corpus.dat");
        std::fs::write(&ldac, "2 0:1 2:3\n1 1:1\n").unwrap();
        assert_eq!(detect_format(&ldac).unwrap(), CorpusFormat::Ldac);
        let named = dir.path().join("docword.x.txt");
        std::fs::write(&named, "whatever").unwrap();
        assert_eq!(detect_format(&named).unwrap(), CorpusFormat::Uci);
        std::fs::write(dir.path().join("vocab.x.txt"), "a\n").unwrap();
        assert_eq!(
            sibling_vocab(&named).unwrap(),
            dir.path().join("vocab.x.txt")
        );
        assert!(sibling_vocab(&ldac).is_none());
    }

    #[test]
    fn top_words_orders_by_count() {
        let vocab: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // 3 words x 2 topics.
        let wt = [1.0, 9.0, 5.0, 0.0, 3.0, 4.0];
        let lines = top_words(&wt, 2, &vocab, 2);
        assert_eq!(lines[0], "topic   0: b c");
        assert_eq!(lines[1], "topic   1: a c");
    }
}
