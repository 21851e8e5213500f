//! `kernels/lda_resident.cu`'s log-likelihood (`lda_loglik`, one warp per document, then
//! `lda_sum_partials`, a block's tree sum in shared memory), never run on a GPU, on the CPU as
//! whole kernels (`host_cxx::BLOCKS_OF_WARPS`), launched as `CudaLdaResident::loglik` launches
//! them, against `ps_apps::lda::loglik` on the same state and stale, hostile copy (negative,
//! fractional, NaN and infinite cells). The device sums in another order, so the values agree
//! to f64 rounding, not bit for bit. Grids of one warp to 320 warps (more partial sums than the
//! sum's block has threads), with empty documents among the cases.

use crate::host_cxx::{self, array, bits};
use crate::lda_word::{case, Shape};

use std::fmt::Write as _;

use ps_apps::lda::loglik;

/// The kernels and what they need.
fn kernels() -> String {
    format!(
        "{}#define __shared__ static\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/lda_rows.cuh"),
        include_str!("../../../kernels/lda_resident.cu"),
    )
}

#[test]
fn the_device_log_likelihood_is_the_hosts() {
    let shape = Shape {
        topics: &[1, 7, 40, 100],
        docs: 30,
        tokens: 25,
    };
    let grids = [(1u32, 32u32), (2, 64), (3, 256), (40, 256)];
    let mut body = String::new();
    let mut want = Vec::new();
    // Many short documents: more warps with documents than the sum's block has threads.
    let many = Shape {
        topics: &[3, 20],
        docs: 700,
        tokens: 4,
    };
    for seed in 0..12u64 {
        let shape = if seed % grids.len() as u64 == 3 {
            &many
        } else {
            &shape
        };
        let (state, wt, totals, hyper) = case(400 + seed, shape);
        want.push(loglik(&state, &wt, &totals, &hyper).0);
        let (alpha, beta) = hyper.effective();
        let vbeta = beta * f64::from(state.vocab_size.max(1));
        let (grid, block) = grids[seed as usize % grids.len()];
        let warps = grid * block / 32;
        let u32s: Vec<u32> = state.doc_offsets.iter().map(|&o| o as u32).collect();
        body += "{\n";
        body += &array("unsigned int", "off", &u32s);
        body += &array("unsigned int", "tokens", &state.tokens);
        body += &array("unsigned int", "ndk", &state.doc_topic);
        body += &array("unsigned int", "wt_bits", &bits(&wt));
        body += &array("unsigned int", "tot_bits", &bits(&totals));
        write!(
            body,
            "static float wt[{}], tot[{}]; static double partial[{warps}], out;
            memcpy(wt, wt_bits, sizeof wt); memcpy(tot, tot_bits, sizeof tot);
            for (unsigned int i = 0; i < {warps}u; ++i) partial[i] = 1e300;
            run_grid({grid}u, {block}u, [&] {{
                lda_loglik(off, {}u, tokens, ndk, wt, tot, {}u, {alpha:e}, {beta:e}, {vbeta:e},
                           partial);
            }});
            run_grid(1u, 256u, [&] {{ lda_sum_partials(partial, {warps}u, &out); }});
            printf(\"%.17g\\n\", out);
            }}\n",
            wt.len(),
            totals.len(),
            state.num_docs(),
            state.topics,
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = host_cxx::run_on_host(dir.path(), &kernels(), &body) else {
        return;
    };
    let got: Vec<f64> = got.lines().map(|l| l.parse().expect("a number")).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "case {i}: the device's {g}, the host's {w}"
        );
    }
}
