//! `kernels/lda_gibbs.cu`'s two sweeps (`lda_gibbs_sweep`, the default draw, and
//! `lda_gibbs_sweep_ends`) on several warps of several blocks (`host_cxx::BLOCKS_OF_WARPS`):
//! a block's warps sample their documents at once, against counts the others move, as on the
//! device, so the chain is not the oracle's; what must hold is what the GPU conformance's
//! parallel case checks. Every topic is below K; each document's counts are its tokens' topics;
//! the copy and the totals moved by exactly the move counts; the move counts are the tokens'
//! changes of topic, word by word; the totals' moves are the sum of the words'. Each warp has its
//! own scratch row (gridDim.x * blockDim.x / 32 of them), which the one-warp case never tests.

use crate::host_cxx;
use crate::lda_gibbs::{headers_on, sweep_case, sweep_program};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn sweeps_on_a_grid_of_warps_keep_the_counts_consistent() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6772_6964);
    let mut body = String::new();
    let mut cases = Vec::new();
    for (c, (k, grid, block)) in [(9u32, 2u32, 64u32), (40, 3, 96), (300, 2, 128)]
        .into_iter()
        .enumerate()
    {
        let docs = rng.gen_range(10..40);
        let case = sweep_case(&mut rng, k, 30, docs, 0..25, (1, 2));
        let launch = format!("run_grid({grid}u, {block}u, [&]");
        body += &sweep_program(&case, c, &launch, grid * block / 32, true);
        cases.push((case.state, case.wt, case.totals));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) =
        host_cxx::run_on_host(dir.path(), &headers_on(host_cxx::BLOCKS_OF_WARPS), &body)
    else {
        return;
    };
    let mut lines = got.lines();
    let mut next = || lines.next().expect("more output");
    for (c, (state, wt, totals)) in cases.iter().enumerate() {
        let k = state.topics as usize;
        let (n, words) = (state.tokens.len(), state.words.len());
        for draw in ["scratch", "ends"] {
            let at = format!("case {c}, {draw} draw");
            let z: Vec<u32> = (0..n).map(|_| next().parse().unwrap()).collect();
            let ndk: Vec<u32> = (0..state.doc_topic.len())
                .map(|_| next().parse().unwrap())
                .collect();
            let bits_of = |s: &str| f32::from_bits(s.parse().unwrap());
            let wt1: Vec<f32> = (0..words * k).map(|_| bits_of(next())).collect();
            let tot1: Vec<f32> = (0..k).map(|_| bits_of(next())).collect();
            let wtd: Vec<i32> = (0..words * k).map(|_| next().parse().unwrap()).collect();
            let totd: Vec<i32> = (0..k).map(|_| next().parse().unwrap()).collect();
            assert!(z.iter().all(|&t| t < state.topics), "{at}: a topic past K");
            // Each document's counts are its tokens' topics.
            let mut want_ndk = vec![0u32; ndk.len()];
            for d in 0..state.num_docs() {
                for &t in &z[state.doc_offsets[d]..state.doc_offsets[d + 1]] {
                    want_ndk[d * k + t as usize] += 1;
                }
            }
            assert_eq!(ndk, want_ndk, "{at}: document counts");
            // The move counts are the tokens' changes of topic, word by word.
            let mut moves = vec![0i32; words * k];
            for (i, &w) in state.tokens.iter().enumerate() {
                moves[w as usize * k + state.z[i] as usize] -= 1;
                moves[w as usize * k + z[i] as usize] += 1;
            }
            assert_eq!(wtd, moves, "{at}: move counts");
            let mut tot_moves = vec![0i32; k];
            for (cell, &m) in moves.iter().enumerate() {
                tot_moves[cell % k] += m;
            }
            assert_eq!(totd, tot_moves, "{at}: the totals' moves");
            // The copy and the totals moved by exactly the move counts.
            for (cell, (&after, &before)) in wt1.iter().zip(wt).enumerate() {
                assert_eq!(after, before + moves[cell] as f32, "{at}: copy cell {cell}");
            }
            for (t, (&after, &before)) in tot1.iter().zip(totals).enumerate() {
                assert_eq!(after, before + tot_moves[t] as f32, "{at}: total {t}");
            }
        }
    }
    assert!(lines.next().is_none(), "output past the cases");
}
