//! `kernels/lda_word.cu`'s kernels themselves on an emulated grid of several blocks of several
//! warps (`host_cxx::BLOCKS_OF_WARPS`: each block's threads at once, as host threads), launched
//! as `WordSweep::launch` launches them: the documents' lists, then each document group's draws
//! (its slots from `group_slots`, a slot's tokens shared among the block's warps, the word's
//! table built by the whole block in shared memory between its barriers) and moves (one thread
//! per document, the copy and the move counts updated with the host's atomics). What it prints
//! is checked bit for bit against the twin with 32 lanes, as `lda_word.rs` checks the header's
//! functions run by the test's own loops; here the kernels' grid-stride loops, their warp and
//! block indices and their barriers run too. Blocks run one after another, so a race between
//! blocks is not seen (the draws' blocks write only their own tokens' topics). The cases' cells
//! are whole or half counts, so the moves' ±1 sums are exact in any order.

use crate::host_cxx;
use crate::lda_word::{c_arrays, case, key_of, print_results, twin_lines, Shape};

use std::fmt::Write as _;

use ps_apps::lda::word_major::WordOrder;
use worker_gpu::cuda::lda_word::{group_launches, group_slots};

/// The header, the kernels and the grid's shims; the sample kernels' `extern __shared__` table
/// is the global `lw_shared`.
fn kernels() -> String {
    format!(
        "{}#define __shared__\nstatic float lw_shared[1 << 14];\n#define LW_LANES 32\n{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/philox.cuh"),
        include_str!("../../../kernels/lda_word.cuh"),
        include_str!("../../../kernels/lda_word.cu"),
    )
}

/// A launch shape: blocks, threads a block, document groups, tokens a slot at most.
struct Launch {
    grid: u32,
    block: u32,
    groups: usize,
    slot_tokens: usize,
}

/// The program sweeping `seeds`' cases with the kernels, and what it must print.
fn grid_sweeps(seeds: std::ops::Range<u64>, shape: &Shape, at: &Launch) -> (String, String) {
    let (mut body, mut want) = (String::new(), String::new());
    for seed in seeds {
        let case = case(seed, shape);
        let key = key_of(seed);
        want += &twin_lines(&case, key, 32, at.groups);
        let state = &case.0;
        let (k, docs) = (state.topics, state.num_docs());
        let by_word = WordOrder::grouped(state, at.groups);
        let (slot_word, slot_first, bounds) = group_slots(&by_word, at.slot_tokens);
        let launches = group_launches(&by_word, &bounds, k).unwrap();
        let mut c = c_arrays(&case, &by_word, (&slot_word, &slot_first));
        let (grid, block) = (at.grid, at.block);
        writeln!(
            c,
            "run_grid({grid}u, {block}u, [&] {{ lda_word_doc_lists(off, {docs}u, ndk, {k}u, nnz, dtop, dcnt); }});"
        )
        .unwrap();
        for l in &launches {
            write!(
                c,
                "run_grid({grid}u, {block}u, [&] {{ lda_word_sample(sword + {fs}u, sfirst + {fs}u, {slots}u,
                    order, tdoc, off, nnz, dtop, dcnt, z, znew, wt, tot, {}u, {}u, {}u, {}ull, {k}u,
                    a, b, vb); }});
                run_grid({grid}u, {block}u, [&] {{ lda_word_apply(off + {fd}u, {gd}u, tokens, z, znew,
                    ndk + {dt}u, wt, tot, wtd, totd, {k}u); }});\n",
                key.seed as u32,
                (key.seed >> 32) as u32,
                key.philox_stream(),
                key.philox_index(0),
                fs = l.first_slot,
                slots = l.slots,
                fd = l.first_doc,
                gd = l.docs,
                dt = l.doc_topic_at,
            )
            .unwrap();
        }
        c += &print_results(state, case.1.len());
        body += &c;
    }
    (body, want)
}

/// Two blocks of two warps over slots of 5 tokens (more tokens than warps: a warp draws
/// several), one group; three blocks of three warps in 3 groups over slots of 3; one block of 8
/// warps, the device's, over slots of 256 (a word's tokens in one slot); then many short
/// documents on two blocks of one warp. Topic counts of one chunk, several, and more than 32
/// chunks.
#[test]
fn the_word_major_kernels_on_a_grid_are_the_twins() {
    let shape = Shape {
        topics: &[5, 40, 100, 1100],
        docs: 5,
        tokens: 60,
    };
    let mut body = String::new();
    let mut want = String::new();
    let launches = [
        (
            300..303,
            Launch {
                grid: 2,
                block: 64,
                groups: 1,
                slot_tokens: 5,
            },
        ),
        (
            303..306,
            Launch {
                grid: 3,
                block: 96,
                groups: 3,
                slot_tokens: 3,
            },
        ),
        (
            306..308,
            Launch {
                grid: 1,
                block: 256,
                groups: 1,
                slot_tokens: 256,
            },
        ),
    ];
    for (seeds, at) in &launches {
        let (b, w) = grid_sweeps(seeds.clone(), &shape, at);
        body += &b;
        want += &w;
    }
    // More documents than the grid has threads (two blocks of one warp): the lists' and the
    // moves' grid-stride loops go round.
    let many = Shape {
        topics: &[3, 40],
        docs: 400,
        tokens: 6,
    };
    let at = Launch {
        grid: 2,
        block: 32,
        groups: 2,
        slot_tokens: 4,
    };
    let (b, w) = grid_sweeps(308..310, &many, &at);
    body += &b;
    want += &w;
    host_cxx::check_on_host(&kernels(), &body, &want);
}
