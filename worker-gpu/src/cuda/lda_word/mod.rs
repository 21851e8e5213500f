//! The CUDA word-major LDA engine: `kernels/lda_word.cu` behind [`LdaCompute`], the device half
//! of [`ps_apps::lda::WordMajorLda`] (whose module documents the sweep and the draw).
//!
//! A sweep runs in document groups ([`CudaWordLda::with_groups`]; one unless asked), and draws
//! every token of a group from the counts as they were when the group began, so its result
//! does not depend on the grid: it is `WordMajorLda`'s bit for bit (the conformance case checks
//! that). Each group's tokens are grouped by word into slots of at most [`SLOT_TOKENS`]; a
//! block forms its slot's word table (`K` values of `phi` and the chunks' sums) in shared
//! memory once, and its warps draw the slot's tokens against it, each token's document part
//! over the document's nonzero topics (formed by `lda_word_doc_lists` once, at the start of the
//! sweep). Then `lda_word_apply` moves the group's counts, and the next group draws
//! ([`GroupLaunch`]: a launch of each a group). After the last group `lda_compact_delta`
//! (`lda_gibbs.cu`) compacts the move counts.
//!
//! This engine uploads the worker's state every sweep and copies it back, as [`super::lda::CudaLda`]
//! does; the word order and the slots are formed on the host each sweep. It is the kernel's
//! first form: where it beats `lda_gibbs_sweep` on a GPU, the resident session is the next step.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use ps_apps::lda::word_major::{unit_f32, DocLists, WordMajorLda, WordMajorPriors};
use ps_apps::lda::{check_dims, LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use ps_apps::ComputeError;

use super::buffers::{upload_once, DevBuf};
use super::bus::Bus;
use super::lda::{narrow, token_at, CudaLda, StateDev};
use super::lda_compact::Compaction;
use super::{failed, Call, Gpu, GpuError};

mod sweep;

pub use sweep::{group_launches, group_slots, slots, GroupLaunch, MAX_TOPICS, SLOT_TOKENS};
use sweep::{narrowed, table_bytes};
pub(crate) use sweep::{SweepScalars, WordSweep};

/// Which sampler the LDA engines on a device run: `Gibbs`, one warp per document over counts
/// kept up to date (`kernels/lda_gibbs.cu`, the oracle's chain up to AD-LDA staleness), or
/// `WordMajor`, this module's sweep over fixed counts in `groups` document groups
/// ([`ps_apps::lda::WordMajorLda`]'s chain, on the CPU devices too). Jobs run `Gibbs` unless
/// the worker's environment names the other in `PS_LDA_SAMPLER` ([`LdaSampler::from_env`]:
/// `word-major` for one group, `word-major:G` for `G`), until a GPU run shows which reaches a
/// quality sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LdaSampler {
    #[default]
    Gibbs,
    WordMajor {
        groups: u32,
    },
}

impl LdaSampler {
    /// The environment variable that picks the sampler.
    pub const ENV: &'static str = "PS_LDA_SAMPLER";

    /// The most document groups `word-major:G` takes (each group is a launch of the draws).
    pub const MAX_GROUPS: u32 = 4096;

    /// The word-major sampler in one group.
    pub const WORD_MAJOR: LdaSampler = LdaSampler::WordMajor { groups: 1 };

    /// The sampler `PS_LDA_SAMPLER` names (`None` where it is unset or empty), or an error that
    /// says which names there are.
    pub fn from_env() -> Result<Option<Self>, String> {
        crate::cuda::choice_from_env(Self::ENV)
    }

    /// The CPU engine of this sampler on `threads` threads, where it is the word-major one.
    pub fn word_major_twin(self, threads: usize) -> Option<WordMajorLda> {
        match self {
            LdaSampler::Gibbs => None,
            LdaSampler::WordMajor { groups } => {
                Some(WordMajorLda::new(threads).with_groups(groups as usize))
            }
        }
    }
}

impl std::fmt::Display for LdaSampler {
    /// The name `PS_LDA_SAMPLER` takes: `gibbs`, `word-major` or `word-major:G`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LdaSampler::Gibbs => f.write_str("gibbs"),
            LdaSampler::WordMajor { groups: 1 } => f.write_str("word-major"),
            LdaSampler::WordMajor { groups } => write!(f, "word-major:{groups}"),
        }
    }
}

impl std::str::FromStr for LdaSampler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected gibbs, word-major or word-major:G (G document groups, 1 to 4096)";
        match s.trim().split_once(':').map(|(a, b)| (a.trim(), b.trim())) {
            None if s.trim() == "gibbs" => Ok(LdaSampler::Gibbs),
            None if s.trim() == "word-major" => Ok(LdaSampler::WORD_MAJOR),
            Some(("word-major", g)) => match g.parse::<u32>() {
                Ok(groups) if (1..=Self::MAX_GROUPS).contains(&groups) => {
                    Ok(LdaSampler::WordMajor { groups })
                }
                _ => Err(format!(
                    "no LDA sampler {s:?}: {g:?} is not a number of groups; {expected}"
                )),
            },
            _ => Err(format!("no LDA sampler {s:?}; {expected}")),
        }
    }
}

/// Word-major collapsed Gibbs over fixed counts on a CUDA device.
pub struct CudaWordLda {
    gpu: Arc<Gpu>,
    sweep: WordSweep,
    token_fn: CudaFunction,
    compaction: Compaction,
    bus: Bus,
    loaded: Option<(SweepScalars, SweepKey, u32, usize)>,
    dev: StateDev,
    d_words: DevBuf<u32>,
    d_list_topics: DevBuf<u32>,
    d_list_counts: DevBuf<u32>,
    d_out: DevBuf<u32>,
}

/// Copies the first `dst.len()` elements of `src` into `dst` and waits.
fn download<T: DeviceRepr + ValidAsZeroBits>(
    gpu: &Gpu,
    src: &DevBuf<T>,
    dst: &mut [T],
) -> Result<(), GpuError> {
    if dst.is_empty() {
        return Ok(());
    }
    gpu.compute
        .memcpy_dtoh(&src.view(dst.len()), dst)
        .call("cuMemcpyDtoHAsync")?;
    gpu.compute.synchronize().call("cuStreamSynchronize")
}

impl CudaWordLda {
    /// The engine on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Ok(CudaWordLda {
            sweep: WordSweep::new(&gpu, 1)?,
            token_fn: gpu.function("lda_word", "lda_word_sample_token")?,
            compaction: Compaction::new(&gpu)?,
            bus: Bus::new(&gpu.ctx),
            loaded: None,
            dev: StateDev::default(),
            d_words: DevBuf::default(),
            d_list_topics: DevBuf::default(),
            d_list_counts: DevBuf::default(),
            d_out: DevBuf::default(),
            gpu,
        })
    }

    /// The engine sweeping in `groups` document groups (see `ps_apps::lda::word_major`), as
    /// `WordMajorLda::with_groups` does.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.sweep
            .set_groups(u32::try_from(groups).unwrap_or(u32::MAX));
        self
    }

    /// Checks the state and uploads it, with its word order and slots; zeroes the move counts.
    /// Returns the sweep's scalars, the distinct words and the tokens visited.
    fn load(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
    ) -> Result<(SweepScalars, u32, usize), GpuError> {
        let visited = CudaLda::validate(state, word_topic, totals, hyper)?;
        WordSweep::check_topics(state.topics)?;
        check_offsets(state)?;
        if let Some(why) = state.index_out_of_range() {
            return Err(GpuError::Input(format!("LDA: {why}")));
        }
        let (k, nw) = (state.topics as usize, state.words.len());
        let s = &self.gpu.compute;
        upload_once(
            s,
            &mut self.dev.offsets,
            &narrowed(&state.doc_offsets, "token offset")?,
        )?;
        upload_once(s, &mut self.dev.tokens, &state.tokens)?;
        upload_once(s, &mut self.dev.z, &state.z)?;
        upload_once(s, &mut self.dev.doc_topic, &state.doc_topic)?;
        upload_once(s, &mut self.dev.word_topic, word_topic)?;
        upload_once(s, &mut self.dev.totals, totals)?;
        upload_once(s, &mut self.d_words, &state.words)?;
        self.sweep.set_up(&self.gpu, state)?;
        self.dev.wt_delta.zero(s, nw * k)?;
        self.dev.totals_delta.zero(s, k)?;
        let p = SweepScalars::of(state, hyper)?;
        Ok((p, narrow(nw, "number of distinct words")?, visited))
    }

    /// Enqueues the sweep on the uploaded state.
    fn launch(&mut self, p: &SweepScalars, key: SweepKey) -> Result<(), GpuError> {
        self.sweep.launch(&self.gpu, &mut self.dev, p, key)
    }

    fn try_sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, GpuError> {
        if CudaLda::validate(state, word_topic, totals, hyper)? == 0 {
            return Ok(LdaDelta {
                topics: state.topics,
                entries: Vec::new(),
                totals: vec![0; state.topics as usize],
            });
        }
        self.loaded = None;
        let (p, words, visited) = self.load(state, word_topic, totals, hyper)?;
        self.launch(&p, key)?;
        let entries = self.compaction.run(
            &self.gpu,
            &mut self.bus,
            None,
            &self.dev.wt_delta,
            (&self.d_words, words),
            p.topics,
            visited,
        )?;
        let mut moves = vec![0i32; p.topics as usize];
        download(&self.gpu, &self.dev.z, &mut state.z)?;
        download(&self.gpu, &self.dev.doc_topic, &mut state.doc_topic)?;
        download(&self.gpu, &self.dev.word_topic, word_topic)?;
        download(&self.gpu, &self.dev.totals, totals)?;
        download(&self.gpu, &self.dev.totals_delta, &mut moves)?;
        Ok(LdaDelta {
            topics: state.topics,
            entries,
            totals: moves,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn try_sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, GpuError> {
        check_dims(state, word_topic, totals, hyper);
        WordSweep::check_topics(state.topics)?;
        check_offsets(state)?;
        let (topics, k) = (state.topics, state.topics as usize);
        let (w, old) = token_at(state, doc, pos);
        self.loaded = None;
        let (list_topics, list_counts) = DocLists::list_of(state, doc);
        let s = &self.gpu.compute;
        upload_once(s, &mut self.dev.word_topic, &word_topic[w * k..(w + 1) * k])?;
        upload_once(s, &mut self.dev.totals, totals)?;
        upload_once(s, &mut self.d_list_topics, &list_topics)?;
        upload_once(s, &mut self.d_list_counts, &list_counts)?;
        self.d_out.ensure(s, 1)?;
        let pr = WordMajorPriors::of(hyper, state.vocab_size);
        let (nnz, u) = (narrow(list_topics.len(), "document list")?, unit_f32(u));
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: table_bytes(topics),
        };
        let mut b = s.launch_builder(&self.token_fn);
        b.arg(self.dev.word_topic.get())
            .arg(self.dev.totals.get())
            .arg(self.d_list_topics.get())
            .arg(self.d_list_counts.get())
            .arg(&nnz)
            .arg(&old)
            .arg(&u)
            .arg(self.d_out.get_mut())
            .arg(&topics)
            .arg(&pr.alpha)
            .arg(&pr.beta)
            .arg(&pr.vbeta);
        // SAFETY: the word row and totals hold K entries, the list nnz entries (at least one
        // allocated), old < K, out one entry, and the shared memory the table of K topics.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(lda word sample token)")?;
        let mut out = [0u32];
        download(&self.gpu, &self.d_out, &mut out)?;
        Ok(out[0])
    }

    /// For benchmarks: checks and uploads a sweep's inputs and keeps them on the device for
    /// [`CudaWordLda::bench_kernel_only`].
    pub fn bench_load(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<(), GpuError> {
        if CudaLda::validate(state, word_topic, totals, hyper)? == 0 {
            return Err(GpuError::Input(
                "CudaWordLda::bench_load: no token to sample".into(),
            ));
        }
        self.loaded = None;
        let (p, words, visited) = self.load(state, word_topic, totals, hyper)?;
        self.loaded = Some((p, key, words, visited));
        self.gpu.synchronize()
    }

    /// For benchmarks: the document groups' launches of the last [`CudaWordLda::bench_load`]
    /// (or sweep), as the kernels run them.
    pub fn launches(&self) -> &[GroupLaunch] {
        self.sweep.launches()
    }

    /// For benchmarks: enqueues one sweep's kernels (lists, draws, moves) on the buffers of the
    /// last [`CudaWordLda::bench_load`], with no copy; each call sweeps the device's state
    /// again with the same key (the counts stay consistent).
    pub fn bench_kernel_only(&mut self) -> Result<(), GpuError> {
        let (p, key, _, _) = self.loaded.ok_or_else(|| {
            GpuError::Input("CudaWordLda::bench_kernel_only needs bench_load first".into())
        })?;
        self.launch(&p, key)
    }
}

impl LdaCompute for CudaWordLda {
    fn sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, ComputeError> {
        let r = self.try_sweep(state, word_topic, totals, hyper, key);
        failed("cuda-word-major", r)
    }

    fn sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, ComputeError> {
        let r = self.try_sample_token(state, word_topic, totals, hyper, doc, pos, u);
        failed("cuda-word-major", r)
    }

    fn name(&self) -> &'static str {
        "cuda-word-major"
    }
}

/// The word order covers the tokens through the document offsets: they must start at 0, end at
/// the last token and never fall (other offsets would leave tokens undrawn, or index past the
/// order), an input error rather than a wrong sweep.
fn check_offsets(state: &LdaWorkerState) -> Result<(), GpuError> {
    if !state.offsets_cover_tokens() {
        return Err(GpuError::Input(format!(
            "document offsets do not cover the {} tokens in order",
            state.tokens.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_that_do_not_cover_the_tokens_in_order_are_input_errors() {
        let state = |doc_offsets: Vec<usize>| LdaWorkerState {
            topics: 2,
            vocab_size: 1,
            words: vec![0],
            doc_offsets,
            tokens: vec![0; 5],
            z: vec![0; 5],
            doc_topic: Vec::new(),
        };
        for good in [vec![0, 5], vec![0, 2, 2, 5]] {
            assert!(check_offsets(&state(good)).is_ok());
        }
        for bad in [vec![2, 5], vec![0, 3], vec![0, 4, 3, 5]] {
            let e = check_offsets(&state(bad.clone())).unwrap_err().to_string();
            assert!(e.contains("do not cover the 5 tokens"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sampler_names_parse_and_print_back() {
        for (name, want) in [
            ("gibbs", LdaSampler::Gibbs),
            ("word-major", LdaSampler::WORD_MAJOR),
            (" word-major:1 ", LdaSampler::WORD_MAJOR),
            ("word-major : 2", LdaSampler::WordMajor { groups: 2 }),
            ("word-major:16", LdaSampler::WordMajor { groups: 16 }),
            ("word-major:4096", LdaSampler::WordMajor { groups: 4096 }),
        ] {
            let got: LdaSampler = name.parse().unwrap();
            assert_eq!(got, want, "{name}");
            assert_eq!(got.to_string().parse::<LdaSampler>().unwrap(), want);
        }
        assert_eq!(
            LdaSampler::WordMajor { groups: 4 }.to_string(),
            "word-major:4"
        );
        for bad in [
            "",
            "gibbs:2",
            "word-major:",
            "word-major:0",
            "word-major:4097",
            "word-major:x",
            "word_major",
        ] {
            let e = bad.parse::<LdaSampler>().unwrap_err();
            assert!(e.contains("word-major:G"), "{bad}: {e}");
        }
        let twin = LdaSampler::WordMajor { groups: 8 }
            .word_major_twin(3)
            .unwrap();
        assert_eq!(twin.groups(), 8);
        assert!(LdaSampler::Gibbs.word_major_twin(3).is_none());
    }
}
