//! The word-major sweep on a device: its kernels (`kernels/lda_word.cu`) and its own buffers
//! over an engine's state buffers, shared by [`super::CudaWordLda`] and the resident engine
//! ([`super::super::lda_resident::CudaLdaResident`] with [`super::LdaSampler::WordMajor`]).

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::lda::word_major::{WordMajorPriors, WordOrder};
use ps_apps::lda::{LdaHyper, LdaWorkerState, SweepKey};

use super::super::buffers::{upload_once, DevBuf};
use super::super::lda::{narrow, StateDev};
use super::super::{Call, Gpu, GpuError};

/// Threads per block of the draws (8 warps share a word's table).
const BLOCK: u32 = 256;
/// Threads per block of the documents' lists and of the moves.
const DOC_BLOCK: u32 = 256;
/// Blocks per multiprocessor where the driver gives no occupancy figure.
const BLOCKS_PER_SM: u32 = 4;
/// The most tokens of one slot: a word with more is drawn by several blocks.
pub const SLOT_TOKENS: usize = 256;
/// The most topics: a word's table (`K + ceil(K / 32)` floats) must fit 48 KiB of shared
/// memory.
pub const MAX_TOPICS: u32 = 11_000;

/// The slots of runs of tokens (`offsets` as [`WordOrder::offsets`]: run `r` is
/// `offsets[r]..offsets[r + 1]`): each run cut into pieces of at most `per_slot`; returns each
/// slot's run and the slots' first positions, with the end last (`firsts.len() == runs.len() +
/// 1`). Empty runs have no slot.
pub fn slots(offsets: &[usize], per_slot: usize) -> (Vec<usize>, Vec<usize>) {
    let per_slot = per_slot.max(1);
    let (mut runs, mut firsts) = (Vec::new(), Vec::new());
    for (r, pair) in offsets.windows(2).enumerate() {
        let mut at = pair[0];
        while at < pair[1] {
            runs.push(r);
            firsts.push(at);
            at = (at + per_slot).min(pair[1]);
        }
    }
    firsts.push(offsets.last().copied().unwrap_or(0));
    (runs, firsts)
}

/// The slots of a grouped word order: [`slots`] over its buckets (a slot's word is its bucket's
/// word), and each document group's range of slots (`groups() + 1` ascending bounds; a group's
/// slots draw exactly its tokens). Returns `(slot_word, slot_first, group_slots)`.
pub fn group_slots(by_word: &WordOrder, per_slot: usize) -> (Vec<u32>, Vec<usize>, Vec<usize>) {
    let (buckets, firsts) = slots(&by_word.offsets, per_slot);
    let group_slots = by_word
        .group_buckets
        .iter()
        .map(|&first| buckets.partition_point(|&b| b < first))
        .collect();
    let words = buckets.iter().map(|&b| by_word.bucket_word[b]).collect();
    (words, firsts, group_slots)
}

/// One document group's launches: the draws on `slots` slots from `first_slot` (the kernel
/// gets `slot_word` and `slot_first` from there), then the moves on `docs` documents from
/// `first_doc` (the kernel gets the token offsets from `first_doc` and `doc_topic` from
/// `doc_topic_at`, the group's first row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLaunch {
    pub first_slot: usize,
    pub slots: u32,
    pub first_doc: usize,
    pub docs: u32,
    pub doc_topic_at: usize,
}

/// The launches of `by_word`'s groups, with `group_slots`' bounds ([`group_slots`]) and K
/// `topics`, in order; a group without tokens (only empty documents) has nothing to draw or
/// move, and no launch.
pub fn group_launches(
    by_word: &WordOrder,
    group_slots: &[usize],
    topics: u32,
) -> Result<Vec<GroupLaunch>, GpuError> {
    let mut launches = Vec::new();
    for g in 0..by_word.groups() {
        let (first_slot, end_slot) = (group_slots[g], group_slots[g + 1]);
        if first_slot == end_slot {
            continue;
        }
        let (first_doc, end_doc) = (by_word.doc_bounds[g], by_word.doc_bounds[g + 1]);
        launches.push(GroupLaunch {
            first_slot,
            slots: narrow(end_slot - first_slot, "number of slots")?,
            first_doc,
            docs: narrow(end_doc - first_doc, "number of documents")?,
            doc_topic_at: first_doc * topics as usize,
        });
    }
    Ok(launches)
}

/// The dynamic shared memory of a table of `k` topics.
pub(crate) fn table_bytes(k: u32) -> u32 {
    (k + k.div_ceil(32)) * 4
}

/// The scalars of a worker's sweeps (each launch takes its key as well).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SweepScalars {
    pub docs: u32,
    pub topics: u32,
    pub priors: WordMajorPriors,
}

impl SweepScalars {
    /// The scalars of `state`'s sweeps (counts checked by the caller).
    pub fn of(state: &LdaWorkerState, hyper: &LdaHyper) -> Result<Self, GpuError> {
        Ok(SweepScalars {
            docs: narrow(state.num_docs(), "number of documents")?,
            topics: state.topics,
            priors: WordMajorPriors::of(hyper, state.vocab_size),
        })
    }
}

/// The word-major sweep's kernels and its own buffers (the word order, the slots, the documents'
/// lists, the new topics), over an engine's state buffers: the per-sweep engine and the resident
/// one share it.
pub(crate) struct WordSweep {
    lists_fn: CudaFunction,
    sample_fn: CudaFunction,
    apply_fn: CudaFunction,
    /// `(K, blocks of the draws resident per multiprocessor)` for the last K launched.
    sample_per_sm: (u32, u32),
    /// The document groups asked for (see `ps_apps::lda::word_major`).
    groups: u32,
    /// The groups' launches (set up).
    launches: Vec<GroupLaunch>,
    order: DevBuf<u32>,
    token_doc: DevBuf<u32>,
    slot_word: DevBuf<u32>,
    slot_first: DevBuf<u32>,
    doc_nnz: DevBuf<u32>,
    doc_topics: DevBuf<u32>,
    doc_counts: DevBuf<u32>,
    z_new: DevBuf<u32>,
}

impl WordSweep {
    /// The sweep in `groups` document groups (at least 1).
    pub fn new(gpu: &Gpu, groups: u32) -> Result<Self, GpuError> {
        Ok(WordSweep {
            lists_fn: gpu.function("lda_word", "lda_word_doc_lists")?,
            sample_fn: gpu.function("lda_word", "lda_word_sample")?,
            apply_fn: gpu.function("lda_word", "lda_word_apply")?,
            sample_per_sm: (0, 0),
            groups: groups.max(1),
            launches: Vec::new(),
            order: DevBuf::default(),
            token_doc: DevBuf::default(),
            slot_word: DevBuf::default(),
            slot_first: DevBuf::default(),
            doc_nnz: DevBuf::default(),
            doc_topics: DevBuf::default(),
            doc_counts: DevBuf::default(),
            z_new: DevBuf::default(),
        })
    }

    /// A typed error where a word's table of `topics` would not fit the shared memory.
    pub fn check_topics(topics: u32) -> Result<(), GpuError> {
        if topics > MAX_TOPICS {
            return Err(GpuError::Input(format!(
                "LDA: the word-major sampler holds a word's topics in shared memory, at most \
                 {MAX_TOPICS}, not {topics}"
            )));
        }
        Ok(())
    }

    /// The groups' launches of the last [`WordSweep::set_up`].
    pub fn launches(&self) -> &[GroupLaunch] {
        &self.launches
    }

    /// Asks for `groups` document groups from the next [`WordSweep::set_up`] on.
    pub fn set_groups(&mut self, groups: u32) {
        self.groups = groups.max(1);
    }

    /// Uploads `state`'s grouped word order and slots and sizes the lists and new topics (once
    /// per state: the tokens do not change); waits for the copies. Returns the bytes copied.
    pub fn set_up(&mut self, gpu: &Gpu, state: &LdaWorkerState) -> Result<u64, GpuError> {
        Self::check_topics(state.topics)?;
        check_token_count(state.tokens.len())?;
        let by_word = WordOrder::grouped(state, self.groups as usize);
        let (slot_word, slot_first, group_slots) = group_slots(&by_word, SLOT_TOKENS);
        let s = &gpu.compute;
        let mut bytes = upload_once(s, &mut self.order, &by_word.order)?;
        bytes += upload_once(s, &mut self.token_doc, &by_word.doc_of)?;
        bytes += upload_once(s, &mut self.slot_word, &slot_word)?;
        bytes += upload_once(
            s,
            &mut self.slot_first,
            &narrowed(&slot_first, "slot offset")?,
        )?;
        let n = state.tokens.len();
        self.z_new.ensure(s, n)?;
        self.doc_nnz.ensure(s, state.num_docs())?;
        self.doc_topics.ensure(s, n)?;
        self.doc_counts.ensure(s, n)?;
        narrow(slot_word.len(), "number of slots")?;
        self.launches = group_launches(&by_word, &group_slots, state.topics)?;
        Ok(bytes)
    }

    /// The grid of the draws for `k` topics: blocks resident at once (the driver's occupancy
    /// figure for the table's shared memory), at most one per slot.
    fn sample_grid(&mut self, gpu: &Gpu, k: u32, slots: u32) -> Result<u32, GpuError> {
        if self.sample_per_sm.0 != k || self.sample_per_sm.1 == 0 {
            gpu.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
            let per_sm = self
                .sample_fn
                .occupancy_max_active_blocks_per_multiprocessor(
                    BLOCK,
                    table_bytes(k) as usize,
                    None,
                )
                .call("cuOccupancyMaxActiveBlocksPerMultiprocessor(lda word sample)")?;
            self.sample_per_sm = (k, if per_sm == 0 { BLOCKS_PER_SM } else { per_sm });
        }
        let work = u64::from(slots) * u64::from(BLOCK);
        Ok(gpu.grid_for(work, BLOCK, self.sample_per_sm.1))
    }

    /// Enqueues a sweep's kernels on the compute stream, over `b` (the state set up last,
    /// checked by the caller: token rows below the words, topics below K), the move counts
    /// zeroed by the caller: the documents' lists once, then for each document group its draws
    /// and its moves (the next group draws from the counts they leave).
    pub fn launch(
        &mut self,
        gpu: &Gpu,
        b: &mut StateDev,
        p: &SweepScalars,
        key: SweepKey,
    ) -> Result<(), GpuError> {
        let doc_grid = |threads: u64| gpu.grid_for(threads, DOC_BLOCK, BLOCKS_PER_SM);
        let lists_cfg = LaunchConfig {
            grid_dim: (doc_grid(u64::from(p.docs) * 32), 1, 1),
            block_dim: (DOC_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = &gpu.compute;
        let mut l = stream.launch_builder(&self.lists_fn);
        l.arg(b.offsets.get())
            .arg(&p.docs)
            .arg(b.doc_topic.get())
            .arg(&p.topics)
            .arg(self.doc_nnz.get_mut())
            .arg(self.doc_topics.get_mut())
            .arg(self.doc_counts.get_mut());
        // SAFETY: offsets holds docs + 1 ascending offsets <= the tokens, doc_topic docs x K;
        // doc_nnz holds docs entries, doc_topics and doc_counts one per token (set_up; a
        // document's list is cut at its length).
        unsafe { l.launch(lists_cfg) }.call("cuLaunchKernel(lda word doc lists)")?;
        for group in self.launches.clone() {
            self.launch_group(gpu, b, p, key, &group)?;
        }
        Ok(())
    }

    /// One document group's draws (its slots) and moves (its documents).
    fn launch_group(
        &mut self,
        gpu: &Gpu,
        b: &mut StateDev,
        p: &SweepScalars,
        key: SweepKey,
        group: &GroupLaunch,
    ) -> Result<(), GpuError> {
        // Token i's uniform: Philox at (seed, stream, first_index + i), SweepKey::uniform(i).
        let (seed_lo, seed_hi) = (key.seed as u32, (key.seed >> 32) as u32);
        let (stream_id, first_index) = (key.philox_stream(), key.philox_index(0));
        let count = group.slots;
        let sample_cfg = LaunchConfig {
            grid_dim: (self.sample_grid(gpu, p.topics, count)?, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: table_bytes(p.topics),
        };
        let group_docs = group.docs;
        let apply_cfg = LaunchConfig {
            grid_dim: (
                gpu.grid_for(u64::from(group_docs), DOC_BLOCK, BLOCKS_PER_SM),
                1,
                1,
            ),
            block_dim: (DOC_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = &gpu.compute;
        let slot_word = self.slot_word.get().slice(group.first_slot..);
        let slot_first = self.slot_first.get().slice(group.first_slot..);
        let pr = p.priors;
        let mut l = stream.launch_builder(&self.sample_fn);
        l.arg(&slot_word)
            .arg(&slot_first)
            .arg(&count)
            .arg(self.order.get())
            .arg(self.token_doc.get())
            .arg(b.offsets.get())
            .arg(self.doc_nnz.get())
            .arg(self.doc_topics.get())
            .arg(self.doc_counts.get())
            .arg(b.z.get())
            .arg(self.z_new.get_mut())
            .arg(b.word_topic.get())
            .arg(b.totals.get())
            .arg(&seed_lo)
            .arg(&seed_hi)
            .arg(&stream_id)
            .arg(&first_index)
            .arg(&p.topics)
            .arg(&pr.alpha)
            .arg(&pr.beta)
            .arg(&pr.vbeta);
        // SAFETY: the group's `count` slots each name a word row < words and a range of
        // `order` (their count + 1 ascending offsets, the last the next group's first or the
        // end: set_up); order and token_doc hold every token's position and document; z < K
        // (the caller's check); word_topic holds words x K, totals K; the shared memory holds
        // the table of K topics.
        unsafe { l.launch(sample_cfg) }.call("cuLaunchKernel(lda word sample)")?;

        let offsets = b.offsets.get().slice(group.first_doc..);
        let mut doc_topic = b.doc_topic.get_mut().slice_mut(group.doc_topic_at..);
        let mut l = stream.launch_builder(&self.apply_fn);
        l.arg(&offsets)
            .arg(&group_docs)
            .arg(b.tokens.get())
            .arg(b.z.get_mut())
            .arg(self.z_new.get())
            .arg(&mut doc_topic)
            .arg(b.word_topic.get_mut())
            .arg(b.totals.get_mut())
            .arg(b.wt_delta.get_mut())
            .arg(b.totals_delta.get_mut())
            .arg(&p.topics);
        // SAFETY: as above, from the group's first document: offsets holds its documents + 1
        // offsets, doc_topic their rows; z_new < K (drawn), every token row < words (the
        // caller's check), wt_delta holds words x K, totals_delta K.
        unsafe { l.launch(apply_cfg) }.call("cuLaunchKernel(lda word apply)")?;
        Ok(())
    }
}

/// The most tokens a state may have: the kernels' 32-bit loops step an index by up to a grid's
/// threads past its end (`j += warps`, `s += gridDim.x`), which must not wrap.
pub(super) const MAX_TOKENS: usize = (u32::MAX - (1 << 24)) as usize;

/// A typed error where `n` tokens are more than [`MAX_TOKENS`].
fn check_token_count(n: usize) -> Result<(), GpuError> {
    if n > MAX_TOKENS {
        return Err(GpuError::Input(format!(
            "LDA: the word-major sampler indexes tokens in 32 bits, at most {MAX_TOKENS}, not {n}"
        )));
    }
    Ok(())
}

/// `values` narrowed to the kernels' 32-bit indices.
pub(super) fn narrowed(values: &[usize], what: &str) -> Result<Vec<u32>, GpuError> {
    values.iter().map(|&x| narrow(x, what)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_apps::lda::{synthetic_lda, LdaHyper, SyntheticLdaSpec};

    #[test]
    fn token_counts_the_loops_could_wrap_on_are_refused() {
        assert!(check_token_count(MAX_TOKENS).is_ok());
        let e = check_token_count(MAX_TOKENS + 1).unwrap_err().to_string();
        assert!(e.contains("32 bits"), "{e}");
    }

    /// Workers over 80 built-in documents, and over them with a third and the last 20 emptied
    /// (groups of empty documents only, which have no slot and no launch).
    fn states() -> Vec<LdaWorkerState> {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(9));
        let hyper = LdaHyper {
            topics: 6,
            ..LdaHyper::default()
        };
        let docs = syn.corpus.docs[..80].to_vec();
        let mut emptied = docs.clone();
        for (d, doc) in emptied.iter_mut().enumerate() {
            if d % 3 == 0 || d >= 60 {
                doc.clear();
            }
        }
        [docs, emptied]
            .iter()
            .map(|docs| {
                let v = syn.corpus.vocab_size;
                LdaWorkerState::init(docs, v, &hyper, 9, 0).unwrap().0
            })
            .collect()
    }

    /// Each group's slots draw exactly its tokens, by their words, and end where the next
    /// group's begin, so the draws of a group launched on its slots alone see no other group;
    /// each launch covers its group's slots and documents, from the group's first row.
    #[test]
    fn each_groups_slots_draw_exactly_its_tokens() {
        let mut tokenless = 0;
        for state in states() {
            for groups in [1, 3, 16, 80, 500] {
                let by_word = WordOrder::grouped(&state, groups);
                // Slots of 4 tokens, so that many words take several.
                let (words, firsts, bounds) = group_slots(&by_word, 4);
                assert_eq!(bounds.len(), by_word.groups() + 1);
                assert_eq!((bounds[0], *bounds.last().unwrap()), (0, words.len()));
                assert_eq!(firsts.len(), words.len() + 1);
                let launches = group_launches(&by_word, &bounds, 6).unwrap();
                let mut launched = launches.iter();
                for g in 0..by_word.groups() {
                    let span = by_word.span(g);
                    let docs = by_word.doc_bounds[g]..by_word.doc_bounds[g + 1];
                    let (lo, hi) = (bounds[g], bounds[g + 1]);
                    assert_eq!(lo == hi, span.is_empty(), "group {g}: slots iff tokens");
                    tokenless += usize::from(span.is_empty());
                    if lo < hi {
                        assert_eq!(
                            launched.next(),
                            Some(&GroupLaunch {
                                first_slot: lo,
                                slots: (hi - lo) as u32,
                                first_doc: docs.start,
                                docs: docs.len() as u32,
                                doc_topic_at: docs.start * 6,
                            }),
                            "group {g}"
                        );
                        assert_eq!((firsts[lo], firsts[hi]), (span.start, span.end));
                    }
                    for slot in lo..hi {
                        assert!(firsts[slot + 1] - firsts[slot] <= 4);
                        for &i in &by_word.order[firsts[slot]..firsts[slot + 1]] {
                            let i = i as usize;
                            assert_eq!(state.tokens[i], words[slot], "slot {slot}'s word");
                            assert!(docs.contains(&(by_word.doc_of[i] as usize)));
                        }
                    }
                }
                assert_eq!(launched.next(), None);
            }
        }
        assert!(
            tokenless > 0,
            "a group of empty documents was among the cases"
        );
    }

    #[test]
    fn slots_cover_each_words_tokens_in_runs_of_at_most_the_limit() {
        // Words of 0, 1, 5, 256, 257 and 600 tokens.
        let counts = [0usize, 1, 5, 256, 257, 600];
        let mut offsets = vec![0];
        for c in counts {
            offsets.push(offsets.last().unwrap() + c);
        }
        let (words, firsts) = slots(&offsets, 256);
        assert_eq!(words, vec![1, 2, 3, 4, 4, 5, 5, 5]);
        assert_eq!(firsts.len(), words.len() + 1);
        assert_eq!(*firsts.last().unwrap(), offsets[counts.len()]);
        for (s, &w) in words.iter().enumerate() {
            let (lo, hi) = (firsts[s], firsts[s + 1]);
            assert!(lo < hi && hi - lo <= 256, "slot {s}: {lo}..{hi}");
            assert!(
                offsets[w] <= lo && hi <= offsets[w + 1],
                "slot {s} within word {w}"
            );
        }
        assert_eq!(slots(&[0], 256), (vec![], vec![0]));
        assert_eq!(slots(&[], 256), (vec![], vec![0]));
    }

    #[test]
    fn a_table_fits_the_shared_memory_up_to_the_limit() {
        assert!(table_bytes(MAX_TOPICS) <= 48 * 1024);
        assert_eq!(table_bytes(1000), (1000 + 32) * 4);
        assert_eq!(table_bytes(1), 8);
    }
}
