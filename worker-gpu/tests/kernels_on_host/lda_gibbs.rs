//! `kernels/lda_gibbs.cu` on the CPU, on a warp of 32 host threads (`host_cxx::WARP_OF_32`):
//! both draws, the scratch row's (`lda_gibbs_sample_token`, `lda_gibbs_sweep`) and the chunk
//! ends' (`..._ends`), which has never run on a GPU, against the CPU oracle `CpuLda`.
//!
//! - `sample_token`: random document rows, stale and hostile word rows and totals, K from 7 to
//!   1,000 and a grid of uniforms: each draw is the oracle's.
//! - One warp's sweep (grid 1, block 32: documents and tokens in the oracle's order, each
//!   token's uniform drawn from Philox in the kernel): the topics, the document counts, the
//!   copy and the totals after the sweep are the oracle's, bit for bit.
//!
//! The kernel sums the conditional in another order than the oracle (a scan per 32 topics), so
//! a uniform within rounding of a boundary may pick the neighbour; the seeds here meet none.

use crate::host_cxx::{self, array, bits};
use crate::lda_word;

use std::fmt::Write as _;

use ps_apps::lda::{CpuLda, LdaCompute, LdaHyper, LdaWorkerState, SweepKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the kernel file needs beyond the shared shims, then the file with its header.
fn headers() -> String {
    headers_on(host_cxx::WARP_OF_32)
}

/// [`headers`] on the emulation `threads` (`host_cxx::WARP_OF_32` or `BLOCKS_OF_WARPS`).
pub(crate) fn headers_on(threads: &str) -> String {
    format!(
        "{}\n#define __global__\n#define __launch_bounds__(a, b)\n\
         template <typename T> static inline T __ldcg(const T* p) {{ return *p; }}\n{}\n{}",
        threads,
        include_str!("../../../kernels/philox.cuh"),
        include_str!("../../../kernels/lda_gibbs.cu"),
    )
}

/// A one-token worker whose document row, word row and totals are random (the word row and
/// totals stale: negative, fractional and zero cells), its token of topic `old`.
fn token_case(rng: &mut ChaCha8Rng, k: usize) -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
    let old = rng.gen_range(0..k) as u32;
    let mut ndk: Vec<u32> = (0..k).map(|_| rng.gen_range(0..4)).collect();
    ndk[old as usize] += 1;
    let row: Vec<f32> = (0..k)
        .map(|_| match rng.gen_range(0..8) {
            0 => -2.0,
            1 => rng.gen_range(0..9) as f32 + 0.5,
            2 => 0.0,
            _ => rng.gen_range(0..40) as f32,
        })
        .collect();
    let totals: Vec<f32> = row
        .iter()
        .map(|&x| x + rng.gen_range(-3i32..200) as f32)
        .collect();
    let state = LdaWorkerState {
        topics: k as u32,
        vocab_size: 500,
        words: vec![0],
        doc_offsets: vec![0, 1],
        tokens: vec![0],
        z: vec![old],
        doc_topic: ndk,
    };
    let hyper = LdaHyper {
        topics: k as u32,
        alpha: rng.gen_range(0.01..1.0),
        beta: rng.gen_range(0.005..0.3),
    };
    (state, row, totals, hyper)
}

#[test]
fn both_device_draws_are_the_oracles_on_a_warp() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6769_6262);
    let (mut body, mut want) = (String::new(), String::new());
    for (c, k) in [7usize, 33, 100, 300, 1000].into_iter().enumerate() {
        let (state, row, totals, hyper) = token_case(&mut rng, k);
        let (alpha, beta) = hyper.effective();
        let vbeta = beta * f64::from(state.vocab_size);
        let us: Vec<f64> = (0..24).map(|j| (j as f64 + 0.5) / 24.0).collect();
        let mut oracle = CpuLda::new();
        for &u in &us {
            let t = oracle
                .sample_token(&state, &row, &totals, &hyper, 0, 0, u)
                .unwrap();
            // Once per draw.
            writeln!(want, "{t}\n{t}").unwrap();
        }
        let mut p = String::from("{\n");
        p += &array("unsigned int", "ndk0", &state.doc_topic);
        p += &array("unsigned int", "row0", &bits(&row));
        p += &array("unsigned int", "tot0", &bits(&totals));
        p += &array("double", "us", &us);
        write!(
            p,
            "static unsigned int ndk[{k}]; static float row[{k}], tot[{k}];
            static double scratch[{k}]; static unsigned int out[2];
            gridDim.x = 1; blockDim.x = 32; blockIdx.x = 0;
            run_warp([&](unsigned int lane) {{
                for (int j = 0; j < {n}; ++j) {{
                    for (int ends = 0; ends < 2; ++ends) {{
                        if (lane == 0u) {{
                            memcpy(ndk, ndk0, sizeof ndk); memcpy(row, row0, sizeof row);
                            memcpy(tot, tot0, sizeof tot);
                        }}
                        __syncwarp();
                        if (ends) lda_gibbs_sample_token_ends(ndk, row, tot, {old}u, us[j], scratch, out + 1, {k}u, {alpha:?}, {beta:?}, {vbeta:?});
                        else lda_gibbs_sample_token(ndk, row, tot, {old}u, us[j], scratch, out, {k}u, {alpha:?}, {beta:?}, {vbeta:?});
                        __syncwarp();
                    }}
                    if (lane == 0u) printf(\"%u\\n%u\\n\", out[0], out[1]);
                    __syncwarp();
                }}
            }});
            }} // case {c}\n",
            n = us.len(),
            old = state.z[0],
        )
        .unwrap();
        body += &p;
    }
    host_cxx::check_on_host(&headers(), &body, &want);
}

#[test]
fn one_warps_sweeps_are_the_oracles_with_either_draw() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7377_6565);
    let (mut body, mut want) = (String::new(), String::new());
    for (c, k) in [9u32, 40, 70].into_iter().enumerate() {
        let case = sweep_case(&mut rng, k, 25, 5, 1..30, (2, 3));
        let SweepCase {
            state,
            wt,
            totals,
            hyper,
            key,
        } = &case;
        let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
        CpuLda::new()
            .sweep(&mut s, &mut w, &mut t, hyper, *key)
            .unwrap();
        let mut expect = String::new();
        for x in s.z.iter().chain(&s.doc_topic) {
            writeln!(expect, "{x}").unwrap();
        }
        for x in bits(&w).iter().chain(&bits(&t)) {
            writeln!(expect, "{x}").unwrap();
        }
        // The same for both draws.
        want += &expect;
        want += &expect;

        body += &sweep_program(&case, c, "run_warp([&](unsigned int)", 1, false);
    }
    host_cxx::check_on_host(&headers(), &body, &want);
}

/// A worker of `docs` documents of a drawn number of `tokens` each over `vocab` words, K = `k`,
/// its copy stale (each count plus 0 to 5) with the totals of that copy, and a sweep's key.
pub(crate) struct SweepCase {
    pub(crate) state: LdaWorkerState,
    pub(crate) wt: Vec<f32>,
    pub(crate) totals: Vec<f32>,
    pub(crate) hyper: LdaHyper,
    pub(crate) key: SweepKey,
}

/// A [`SweepCase`] drawn from `rng`, its key of `(worker, clock)`.
pub(crate) fn sweep_case(
    rng: &mut ChaCha8Rng,
    k: u32,
    vocab: u32,
    docs: usize,
    tokens: std::ops::Range<usize>,
    (worker, clock): (u32, u32),
) -> SweepCase {
    let docs: Vec<Vec<u32>> = (0..docs)
        .map(|_| {
            (0..rng.gen_range(tokens.clone()))
                .map(|_| rng.gen_range(0..vocab))
                .collect()
        })
        .collect();
    let hyper = LdaHyper {
        topics: k,
        alpha: rng.gen_range(0.05..1.0),
        beta: rng.gen_range(0.01..0.3),
    };
    let (state, _) = LdaWorkerState::init(&docs, vocab, &hyper, rng.gen(), 1).unwrap();
    let wt: Vec<f32> = state
        .local_word_topic()
        .iter()
        .map(|&x| x as f32 + rng.gen_range(0..6) as f32)
        .collect();
    let totals = lda_word::column_sums(&wt, k as usize);
    let key = SweepKey {
        seed: rng.gen(),
        worker,
        clock,
    };
    SweepCase {
        state,
        wt,
        totals,
        hyper,
        key,
    }
}

/// The C block of case `c` that sweeps it with each draw in turn (`lda_gibbs_sweep`, then
/// `lda_gibbs_sweep_ends`), from the same start, by `launch` (`run_warp([&](unsigned int)` or
/// `run_grid(G, B, [&]`, followed by the call's body) with `scratch_rows` warps' scratch rows,
/// and prints after each the topics, the document counts, the copy's and the totals' bits and,
/// with `moves`, the move counts.
pub(crate) fn sweep_program(
    case: &SweepCase,
    c: usize,
    launch: &str,
    scratch_rows: u32,
    moves: bool,
) -> String {
    let SweepCase {
        state,
        wt,
        totals,
        hyper,
        key,
    } = case;
    let k = state.topics;
    let (alpha, beta) = hyper.effective();
    let vbeta = beta * f64::from(state.vocab_size);
    let offsets: Vec<u32> = state.doc_offsets.iter().map(|&o| o as u32).collect();
    let (n, cells) = (state.tokens.len(), state.words.len() * k as usize);
    let mut p = String::from("{\n");
    p += &array("unsigned int", "off", &offsets);
    p += &array("unsigned int", "tokens", &state.tokens);
    p += &array("unsigned int", "z0", &state.z);
    p += &array("unsigned int", "ndk0", &state.doc_topic);
    p += &array("unsigned int", "wt0", &bits(wt));
    p += &array("unsigned int", "tot0", &bits(totals));
    let print_moves = if moves {
        format!(
            "for (unsigned int i = 0; i < {cells}u; ++i) printf(\"%d\\n\", wtd[i]);
            for (unsigned int i = 0; i < {k}u; ++i) printf(\"%d\\n\", totd[i]);"
        )
    } else {
        String::new()
    };
    write!(
        p,
        "static unsigned int z[{n1}], ndk[{dk}]; static float wt[{cells}], tot[{k}];
        static double scratch[{scratch_rows} * {k}]; static int wtd[{cells}], totd[{k}];
        for (int ends = 0; ends < 2; ++ends) {{
            memcpy(z, z0, sizeof z0); memcpy(ndk, ndk0, sizeof ndk0); memcpy(wt, wt0, sizeof wt);
            memcpy(tot, tot0, sizeof tot); memset(wtd, 0, sizeof wtd); memset(totd, 0, sizeof totd);
            {launch} {{
                if (ends) lda_gibbs_sweep_ends(off, {docs}u, tokens, z, ndk, wt, tot, {lo}u, {hi}u, {stream}u, {first}ull, scratch, wtd, totd, {k}u, {alpha:?}, {beta:?}, {vbeta:?});
                else lda_gibbs_sweep(off, {docs}u, tokens, z, ndk, wt, tot, {lo}u, {hi}u, {stream}u, {first}ull, scratch, wtd, totd, {k}u, {alpha:?}, {beta:?}, {vbeta:?});
            }});
            for (unsigned int i = 0; i < {n}u; ++i) printf(\"%u\\n\", z[i]);
            for (unsigned int i = 0; i < {dk}u; ++i) printf(\"%u\\n\", ndk[i]);
            for (unsigned int i = 0; i < {cells}u; ++i) {{ unsigned int x; memcpy(&x, &wt[i], 4); printf(\"%u\\n\", x); }}
            for (unsigned int i = 0; i < {k}u; ++i) {{ unsigned int x; memcpy(&x, &tot[i], 4); printf(\"%u\\n\", x); }}
            {print_moves}
        }}
        }} // case {c}\n",
        n1 = n.max(1),
        dk = state.doc_topic.len(),
        docs = state.num_docs(),
        lo = key.seed as u32,
        hi = (key.seed >> 32) as u32,
        stream = key.philox_stream(),
        first = key.philox_index(0),
    )
    .unwrap();
    p
}
