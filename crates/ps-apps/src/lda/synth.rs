//! The synthetic LDA corpus: documents drawn from the LDA generative model with known,
//! well-separated topics, in parallel over documents for large corpora.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use super::{take_worker_docs, Corpus};
use crate::par;
use crate::seed::stream_rng;

/// Parameters of the synthetic LDA generator.
///
/// Topic `k` "owns" the block of words `[k*V/K, (k+1)*V/K)` (when `V < K`,
/// topic `k` owns word `k % V`). Its word distribution is
/// `phi_k = (1 - noise) * b_k + noise / V`, where `b_k` is a
/// `Dirichlet(beta)` draw over the words of its block (zero elsewhere).
/// Each document draws `theta_d ~ Dirichlet(alpha)` over the `K` topics and
/// then `doc_len` tokens `z ~ theta_d`, `w ~ phi_z` — the LDA generative
/// model with known, well-separated topics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticLdaSpec {
    /// Number of documents.
    pub docs: u32,
    /// Vocabulary size `V`.
    pub vocab: u32,
    /// Number of true topics `K`.
    pub topics: u32,
    /// Tokens per document.
    pub doc_len: u32,
    /// Symmetric Dirichlet concentration of the document-topic mixtures.
    pub alpha: f64,
    /// Symmetric Dirichlet concentration of the word weights inside a
    /// topic's block (1 = uniform-ish random weights).
    pub beta: f64,
    /// Probability mass of every topic spread uniformly over the whole
    /// vocabulary (background noise), in `[0, 1]`.
    pub noise: f64,
    /// RNG seed; the output is a pure function of the spec.
    pub seed: u64,
}

/// Documents of the built-in synthetic corpus.
pub const BUILTIN_DOCS: u32 = 2_000;
/// Vocabulary size of the built-in synthetic corpus.
pub const BUILTIN_VOCAB: u32 = 1_000;
/// Number of true topics of the built-in synthetic corpus.
pub const BUILTIN_TOPICS: u32 = 10;
/// Tokens per document of the built-in synthetic corpus.
pub const BUILTIN_DOC_LEN: u32 = 100;

impl SyntheticLdaSpec {
    /// The built-in corpus: 2,000 documents x 100 tokens (200k tokens),
    /// `V = 1,000`, `K = 10` blocks of 100 words, `alpha = 0.1`,
    /// `beta = 1`, `noise = 0.1`.
    ///
    /// Why: `alpha = 0.1` gives documents dominated by one or two topics
    /// (as in real short texts), which makes the topics identifiable from a
    /// few hundred tokens per word (~200 per word here); 10% background
    /// noise keeps the problem from being trivially separable. With
    /// [`super::LdaHyper::default`] and 2 workers, topic recovery passes 0.9
    /// after 8-14 clocks (seeds 1, 42, 1234); the whole 30-clock emulated run
    /// takes ~0.3 s in release mode (~1 s in the dev profile) on one slow
    /// core, so a cluster job is dominated by start-up and network time.
    pub fn default_builtin(seed: u64) -> Self {
        SyntheticLdaSpec {
            docs: BUILTIN_DOCS,
            vocab: BUILTIN_VOCAB,
            topics: BUILTIN_TOPICS,
            doc_len: BUILTIN_DOC_LEN,
            alpha: 0.1,
            beta: 1.0,
            noise: 0.1,
            seed,
        }
    }
}

/// A synthetic corpus together with the topics that generated it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticLda {
    /// The generated documents (`vocab` is `None`).
    pub corpus: Corpus,
    /// The true topic-word distributions, `K x V` row-major; each row sums
    /// to 1.
    pub topics: Vec<f32>,
    /// Number of true topics `K` (rows of `topics`).
    pub num_topics: u32,
}

/// `n` values of a symmetric `Dirichlet(conc)` draw. Falls back to uniform
/// when the gamma draws underflow (tiny `conc`) or `conc` is invalid.
fn dirichlet(rng: &mut ChaCha8Rng, n: usize, conc: f64) -> Vec<f64> {
    let mut v = vec![0.0f64; n];
    if let Ok(g) = Gamma::new(conc, 1.0) {
        for x in v.iter_mut() {
            *x = g.sample(rng);
        }
    }
    let sum: f64 = v.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        v.iter_mut().for_each(|x| *x /= sum);
    } else {
        v.iter_mut().for_each(|x| *x = 1.0 / n.max(1) as f64);
    }
    v
}

/// Index `i` with `cdf[i-1] <= u < cdf[i]` (clamped to the last index).
fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c <= u)
        .min(cdf.len().saturating_sub(1))
}

/// Corpora up to this many tokens are drawn by the original one-thread generator (one RNG
/// stream), so the built-in corpus and every small one are the data they always were; larger
/// ones are drawn in parallel over documents.
pub const SEQUENTIAL_MAX_TOKENS: u64 = 1_000_000;
/// Documents per task of the parallel generator (each document has its own RNG).
const DOCS_PER_CHUNK: usize = 512;

/// Generates a corpus from [`SyntheticLdaSpec`]: a pure function of the spec, whatever the
/// machine's thread count. A degenerate spec (`docs`, `vocab` or `topics` equal to 0) yields
/// empty documents and no topics as appropriate; it never panics.
///
/// Up to [`SEQUENTIAL_MAX_TOKENS`] tokens, one RNG stream draws the topics, then each
/// document's `theta_d` and its tokens by inversion of the mixtures' distribution functions.
/// Larger corpora draw each topic from its own RNG and each document from its own (seeded by
/// the seed and the document's index, so that a worker can draw only its own documents, see
/// [`synthetic_lda_worker`]), with the same model by cheaper means: a
/// document's topics by the Polya urn of `Dirichlet(alpha)` (token `i` takes a uniform topic
/// with probability `K alpha / (K alpha + i)`, else the topic of a uniform earlier token, the
/// same law as drawing `theta_d` first), and a word of topic `z` uniform over the vocabulary
/// with probability `noise`, else from `z`'s block.
pub fn synthetic_lda(spec: &SyntheticLdaSpec) -> SyntheticLda {
    synthetic_lda_threads(spec, par::threads())
}

/// [`synthetic_lda`] on `threads` threads (the output does not depend on them).
pub fn synthetic_lda_threads(spec: &SyntheticLdaSpec, threads: usize) -> SyntheticLda {
    synthetic_lda_worker(spec, 1, 0, threads)
}

/// The documents worker `worker` of `workers` holds of [`synthetic_lda`]'s corpus (those
/// [`super::split_docs`] gives it, in that order) and all the true topics, on `threads`
/// threads. A corpus above [`SEQUENTIAL_MAX_TOKENS`] tokens draws only those documents; a
/// smaller one is drawn whole (one RNG stream) and split.
///
/// # Panics
/// If `workers == 0` or `worker >= workers` (caller bug), as [`super::split_docs`].
pub fn synthetic_lda_worker(
    spec: &SyntheticLdaSpec,
    workers: u32,
    worker: u32,
    threads: usize,
) -> SyntheticLda {
    assert!(
        worker < workers,
        "synthetic_lda_worker: worker ({worker}) must be < workers ({workers})"
    );
    if u64::from(spec.docs) * u64::from(spec.doc_len) <= SEQUENTIAL_MAX_TOKENS {
        let mut all = sequential(spec);
        all.corpus.docs = take_worker_docs(std::mem::take(&mut all.corpus.docs), workers, worker);
        all
    } else {
        by_docs(spec, threads, workers as usize, worker as usize)
    }
}

/// The noise mass of a spec, in `[0, 1]` (0 when not a number).
fn noise_of(spec: &SyntheticLdaSpec) -> f64 {
    if spec.noise.is_finite() {
        spec.noise.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The words topic `t` of `k` owns over a vocabulary of `v`.
fn block(t: usize, k: usize, v: usize) -> (usize, usize) {
    if v >= k {
        (t * v / k, (t + 1) * v / k)
    } else {
        (t % v, t % v + 1)
    }
}

/// The original generator: one RNG stream for the topics and every document.
fn sequential(spec: &SyntheticLdaSpec) -> SyntheticLda {
    let v = spec.vocab as usize;
    let k = spec.topics as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let noise = noise_of(spec);
    let mut topics = vec![0.0f32; k * v];
    let mut cdfs = vec![0.0f64; k * v];
    if v > 0 {
        for t in 0..k {
            let (lo, hi) = block(t, k, v);
            let weights = dirichlet(&mut rng, hi - lo, spec.beta);
            let row = &mut topics[t * v..(t + 1) * v];
            let mut phi = vec![noise / v as f64; v];
            for (p, wgt) in phi[lo..hi].iter_mut().zip(&weights) {
                *p += (1.0 - noise) * wgt;
            }
            let mut acc = 0.0;
            for (w, p) in phi.iter().enumerate() {
                row[w] = *p as f32;
                acc += p;
                cdfs[t * v + w] = acc;
            }
        }
    }
    let mut docs = Vec::with_capacity(spec.docs as usize);
    for _ in 0..spec.docs {
        if k == 0 || v == 0 {
            docs.push(Vec::new());
            continue;
        }
        let theta = dirichlet(&mut rng, k, spec.alpha);
        let mut tcdf = Vec::with_capacity(k);
        let mut acc = 0.0;
        for p in &theta {
            acc += p;
            tcdf.push(acc);
        }
        let doc: Vec<u32> = (0..spec.doc_len)
            .map(|_| {
                let t = pick(&tcdf, rng.gen::<f64>() * acc);
                let cdf = &cdfs[t * v..(t + 1) * v];
                pick(cdf, rng.gen::<f64>() * cdf[v - 1]) as u32
            })
            .collect();
        docs.push(doc);
    }
    SyntheticLda {
        corpus: Corpus {
            docs,
            vocab_size: spec.vocab,
            vocab: None,
        },
        topics,
        num_topics: spec.topics,
    }
}

const TOPICS: u64 = 0x7091_C5ED;
const DOCS: u64 = 0xD0C5_C4A5;

/// A topic's block of words and the distribution function of its weights over the block.
struct Block {
    lo: u32,
    cdf: Vec<f64>,
}

/// The parallel generator (see [`synthetic_lda`]), for documents `worker, worker + workers, ...`.
fn by_docs(spec: &SyntheticLdaSpec, threads: usize, workers: usize, worker: usize) -> SyntheticLda {
    let (v, k) = (spec.vocab as usize, spec.topics as usize);
    let noise = noise_of(spec);
    if v == 0 || k == 0 {
        return SyntheticLda {
            corpus: Corpus {
                docs: vec![
                    Vec::new();
                    (spec.docs as usize)
                        .saturating_sub(worker)
                        .div_ceil(workers)
                ],
                vocab_size: spec.vocab,
                vocab: None,
            },
            topics: Vec::new(),
            num_topics: spec.topics,
        };
    }
    let weights = par::map(k, threads, |t| {
        let (lo, hi) = block(t, k, v);
        dirichlet(
            &mut stream_rng(spec.seed, TOPICS, t as u64),
            hi - lo,
            spec.beta,
        )
    });
    let mut topics = vec![(noise / v as f64) as f32; k * v];
    let mut blocks = Vec::with_capacity(k);
    for (t, w) in weights.iter().enumerate() {
        let (lo, _) = block(t, k, v);
        let row = &mut topics[t * v + lo..t * v + lo + w.len()];
        for (x, p) in row.iter_mut().zip(w) {
            *x = (noise / v as f64 + (1.0 - noise) * p) as f32;
        }
        let mut acc = 0.0;
        let cdf = w
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        blocks.push(Block { lo: lo as u32, cdf });
    }
    let urn = k as f64 * spec.alpha;
    let urn = (urn.is_finite() && urn > 0.0).then_some(urn);
    // This worker's documents are `worker + j * workers` for `j < mine`.
    let mine = (spec.docs as usize)
        .saturating_sub(worker)
        .div_ceil(workers);
    let docs = par::map(mine.div_ceil(DOCS_PER_CHUNK), threads, |c| {
        let lo = c * DOCS_PER_CHUNK;
        let mut z: Vec<u32> = Vec::with_capacity(spec.doc_len as usize);
        (lo..(lo + DOCS_PER_CHUNK).min(mine))
            .map(|j| {
                let mut rng = stream_rng(spec.seed, DOCS, (worker + j * workers) as u64);
                z.clear();
                for i in 0..spec.doc_len as usize {
                    // Without a valid alpha, theta is uniform (as in `dirichlet`).
                    let fresh = match urn {
                        Some(a) => i == 0 || rng.gen::<f64>() * (a + i as f64) < a,
                        None => true,
                    };
                    let t = if fresh {
                        rng.gen_range(0..k as u32)
                    } else {
                        z[rng.gen_range(0..i)]
                    };
                    z.push(t);
                }
                z.iter()
                    .map(|&t| {
                        let b = &blocks[t as usize];
                        if rng.gen::<f64>() < noise {
                            rng.gen_range(0..v as u32)
                        } else {
                            let last = b.cdf[b.cdf.len() - 1];
                            b.lo + pick(&b.cdf, rng.gen::<f64>() * last) as u32
                        }
                    })
                    .collect::<Vec<u32>>()
            })
            .collect::<Vec<_>>()
    });
    SyntheticLda {
        corpus: Corpus {
            docs: docs.into_iter().flatten().collect(),
            vocab_size: spec.vocab,
            vocab: None,
        },
        topics,
        num_topics: spec.topics,
    }
}
