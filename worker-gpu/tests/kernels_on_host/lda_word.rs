//! `kernels/lda_word.cuh` on the CPU: the word-major sweep's device functions (the documents'
//! lists, a word's table, a token's draw, the moves), compiled by the host's C++ compiler with
//! one lane (`LW_LANES` 1) and one thread, run as `lda_word.cu`'s kernels run them (in document
//! groups, each launch's arguments as `group_launches` gives them), and checked bit for bit
//! against their twin,
//! `ps_apps::lda::WordMajorLda::with_lanes(1)`: every drawn topic, then the state, the copy,
//! the totals and the move counts after the moves. Stale and
//! hostile copies (negative, fractional, NaN and infinite cells) are among the cases. With 32
//! lanes only the sums' order changes; the GPU conformance case checks that against
//! `WordMajorLda` where there is a GPU. Skips visibly without a C++ compiler, as
//! `kernels_on_host/headers.rs` does.

use crate::host_cxx::{self, array, bits};

use std::fmt::Write as _;

use ps_apps::lda::word_major::{WordMajorPriors, WordOrder};
use ps_apps::lda::{LdaCompute, LdaHyper, LdaWorkerState, SweepKey, WordMajorLda};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::lda_word::{group_launches, group_slots};

/// The sizes of a random case: topics to choose from, and the most documents and tokens.
pub(crate) struct Shape {
    pub(crate) topics: &'static [u32],
    pub(crate) docs: usize,
    pub(crate) tokens: usize,
}

/// A random worker (documents over a small vocabulary) and a stale copy of its rows.
pub(crate) fn case(seed: u64, shape: &Shape) -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocab = rng.gen_range(1..30u32);
    let topics = shape.topics[rng.gen_range(0..shape.topics.len())];
    let docs: Vec<Vec<u32>> = (0..rng.gen_range(1..shape.docs))
        .map(|_| {
            (0..rng.gen_range(0..shape.tokens))
                .map(|_| rng.gen_range(0..vocab))
                .collect()
        })
        .collect();
    let hyper = LdaHyper {
        topics,
        alpha: rng.gen_range(0.01..2.0),
        beta: rng.gen_range(0.001..0.5),
    };
    let (state, _) = LdaWorkerState::init(&docs, vocab, &hyper, seed, 2).unwrap();
    let mut wt: Vec<f32> = state
        .local_word_topic()
        .iter()
        .map(|&c| c as f32 + rng.gen_range(0..5) as f32)
        .collect();
    let mut totals = column_sums(&wt, topics as usize);
    // Staleness and hostility.
    for x in wt.iter_mut() {
        match rng.gen_range(0..40) {
            0 => *x = -3.0,
            1 => *x = 2.5,
            2 => *x = f32::NAN,
            3 => *x = f32::INFINITY,
            4 => *x = 0.0,
            _ => {}
        }
    }
    totals[0] -= 2.0;
    if let Some(t) = totals.last_mut() {
        *t += 5.5;
    }
    (state, wt, totals, hyper)
}

/// A case's Philox key.
pub(crate) fn key_of(seed: u64) -> SweepKey {
    SweepKey {
        seed: 0x5EED_0000 + seed,
        worker: 3,
        clock: 7,
    }
}

/// What a program must print after a sweep of the case, as the twin with `lanes` lanes in
/// `groups` document groups does it: every drawn topic (each token's topic after the sweep),
/// the state's topics and counts, the copy and totals (bits), the move counts.
pub(crate) fn twin_lines(
    (state, wt, totals, hyper): &(LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper),
    key: SweepKey,
    lanes: usize,
    groups: usize,
) -> String {
    let k = state.topics as usize;
    let twin = WordMajorLda::new(1).with_lanes(lanes).with_groups(groups);
    let (mut after, mut wt_after, mut tot_after) = (state.clone(), wt.clone(), totals.clone());
    let delta = twin
        .clone()
        .sweep(&mut after, &mut wt_after, &mut tot_after, hyper, key)
        .unwrap();
    let mut wt_delta = vec![0i32; wt.len()];
    for &(word, t, c) in &delta.entries {
        let row = state.words.binary_search(&word).unwrap();
        wt_delta[row * k + t as usize] = c;
    }
    let mut want = String::new();
    for x in after.z.iter().chain(&after.z).chain(&after.doc_topic) {
        writeln!(want, "{x}").unwrap();
    }
    for x in wt_after.iter().chain(&tot_after) {
        writeln!(want, "{}", x.to_bits()).unwrap();
    }
    for x in wt_delta.iter().chain(&delta.totals) {
        writeln!(want, "{x}").unwrap();
    }
    want
}

/// The C arrays a sweep of the case reads and writes (slots from `group_slots`: `sword`,
/// `sfirst`), the copy and totals as `wt` and `tot`, and the priors as `a`, `b`, `vb`; opens a
/// C block that [`print_results`] closes.
pub(crate) fn c_arrays(
    (state, wt, totals, hyper): &(LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper),
    by_word: &WordOrder,
    (slot_word, slot_first): (&[u32], &[usize]),
) -> String {
    let k = state.topics as usize;
    let pr = WordMajorPriors::of(hyper, state.vocab_size);
    let u32s = |v: &[usize]| -> Vec<u32> { v.iter().map(|&o| o as u32).collect() };
    let n = state.tokens.len();
    let mut c = String::from("{\n");
    c += &array("unsigned int", "off", &u32s(&state.doc_offsets));
    c += &array("unsigned int", "sword", slot_word);
    c += &array("unsigned int", "sfirst", &u32s(slot_first));
    c += &array("unsigned int", "order", &by_word.order);
    c += &array("unsigned int", "tdoc", &by_word.doc_of);
    c += &array("unsigned int", "tokens", &state.tokens);
    c += &array("unsigned int", "z", &state.z);
    c += &array("unsigned int", "ndk", &state.doc_topic);
    c += &array("unsigned int", "wt_bits", &bits(wt));
    c += &array("unsigned int", "tot_bits", &bits(totals));
    c += &array("unsigned int", "dtop", &vec![0u32; n.max(1)]);
    c += &array("unsigned int", "dcnt", &vec![0u32; n.max(1)]);
    c += &array("unsigned int", "znew", &vec![0u32; n.max(1)]);
    c += &array("unsigned int", "nnz", &vec![0u32; state.num_docs().max(1)]);
    c += &array("int", "wtd", &vec![0i32; wt.len()]);
    c += &array("int", "totd", &vec![0i32; k]);
    c += &array("float", "phi", &vec![0f32; k]);
    c += &array("float", "qp", &vec![0f32; k]);
    write!(
        c,
        "static float wt[{}]; static float tot[{k}];
        memcpy(wt, wt_bits, sizeof wt); memcpy(tot, tot_bits, sizeof tot);
        const float a = __uint_as_float({}u), b = __uint_as_float({}u), vb = __uint_as_float({}u);\n",
        wt.len(),
        pr.alpha.to_bits(),
        pr.beta.to_bits(),
        pr.vbeta.to_bits(),
    )
    .unwrap();
    c
}

/// Prints what [`twin_lines`] gives, from [`c_arrays`]' arrays, and closes their block.
pub(crate) fn print_results(state: &LdaWorkerState, wt_len: usize) -> String {
    let (n, k) = (state.tokens.len(), state.topics);
    format!(
        "for (unsigned int i = 0; i < {n}u; ++i) printf(\"%u\\n\", znew[i]);
        for (unsigned int i = 0; i < {n}u; ++i) printf(\"%u\\n\", z[i]);
        for (unsigned int i = 0; i < {}u; ++i) printf(\"%u\\n\", ndk[i]);
        for (unsigned int i = 0; i < {wt_len}u; ++i) {{ unsigned int x; memcpy(&x, &wt[i], 4); printf(\"%u\\n\", x); }}
        for (unsigned int i = 0; i < {k}u; ++i) {{ unsigned int x; memcpy(&x, &tot[i], 4); printf(\"%u\\n\", x); }}
        for (unsigned int i = 0; i < {wt_len}u; ++i) printf(\"%d\\n\", wtd[i]);
        for (unsigned int i = 0; i < {k}u; ++i) printf(\"%d\\n\", totd[i]);
        }}\n",
        state.doc_topic.len(),
    )
}

/// The C++ statements that sweep `seeds`' cases as the kernels do (one lane and one thread, or
/// a warp of 32 lanes on host threads: `lanes`), in `groups` document groups laid out by the
/// device engine's host code (`group_slots`, in slots of at most 3 tokens so that words and
/// groups span several), and what they must print: the state, copy, totals and move counts
/// after the sweep, which the twin with as many lanes gives.
fn sweeps(
    seeds: std::ops::Range<u64>,
    shape: &Shape,
    lanes: usize,
    groups: usize,
) -> (String, String) {
    let mut body = String::new();
    let mut want = String::new();
    for seed in seeds {
        let case = case(seed, shape);
        let key = key_of(seed);
        want += &twin_lines(&case, key, lanes, groups);
        let state = &case.0;
        let k = state.topics as usize;
        let by_word = WordOrder::grouped(state, groups);
        let (slot_word, slot_first, group_bounds) = group_slots(&by_word, 3);
        let launches = group_launches(&by_word, &group_bounds, state.topics).unwrap();
        let mut c = c_arrays(&case, &by_word, (&slot_word, &slot_first));
        let docs = state.num_docs();
        let run = |f: &str| {
            if lanes == 1 {
                format!("{f}(0u);")
            } else {
                format!("run_warp({f});")
            }
        };
        write!(
            c,
            "gridDim.x = 1; blockDim.x = {lanes}u; blockIdx.x = 0; threadIdx.x = 0;
            // lda_word_sample's and lda_word_apply's arguments as a group's launch passes them.
            static const unsigned int *slot_word, *slot_first, *doc_offsets;
            static unsigned int slots, num_docs, *doc_topic;
            auto lists = [&](unsigned int lane) {{
            for (unsigned int d = 0; d < {docs}u; ++d) {{
                const unsigned int n = lw_doc_list(ndk + d * {k}u, {k}u, off[d + 1] - off[d], dtop + off[d], dcnt + off[d], lane);
                if (lane == 0u) nnz[d] = n;
            }}
            }};
            auto draws = [&](unsigned int lane) {{
            for (unsigned int s = 0; s < slots; ++s) {{
                const unsigned int w = slot_word[s];
                lw_word_table(wt + w * {k}u, tot, {k}u, a, b, vb, phi, qp);
                for (unsigned int j = slot_first[s]; j < slot_first[s + 1]; ++j) {{
                    const unsigned int i = order[j], d = tdoc[i];
                    const float u = philox_uniform({}u, {}u, {}u, {}ull + i);
                    const unsigned int t = lw_draw(phi, qp, {k}u, wt + w * {k}u, tot, dtop + off[d], dcnt + off[d],
                                                   nnz[d], z[i], u, a, b, vb, lane);
                    if (lane == 0u) znew[i] = t;
                }}
                __syncthreads();
            }}
            }};
            auto moves = [&]() {{
            for (unsigned int d = 0; d < num_docs; ++d)
                lw_apply_doc(doc_offsets[d], doc_offsets[d + 1], tokens, z, znew, doc_topic + d * {k}u, wt, tot, wtd, totd, {k}u);
            }};
            {}
            ",
            key.seed as u32,
            (key.seed >> 32) as u32,
            key.philox_stream(),
            key.philox_index(0),
            run("lists"),
        )
        .unwrap();
        for l in &launches {
            write!(
                c,
                "slot_word = sword + {}u; slot_first = sfirst + {}u; slots = {}u; {}
                doc_offsets = off + {}u; num_docs = {}u; doc_topic = ndk + {}u; moves();\n",
                l.first_slot,
                l.first_slot,
                l.slots,
                run("draws"),
                l.first_doc,
                l.docs,
                l.doc_topic_at,
            )
            .unwrap();
        }
        c += &print_results(state, case.1.len());
        body += &c;
    }
    (body, want)
}

/// The header with `lanes` lanes (1 or 32) and the shims that run them.
fn headers(lanes: usize) -> String {
    let threads = if lanes == 1 {
        host_cxx::ONE_THREAD
    } else {
        host_cxx::WARP_OF_32
    };
    format!(
        "{threads}#define LW_LANES {lanes}\n{}\n{}",
        include_str!("../../../kernels/philox.cuh"),
        include_str!("../../../kernels/lda_word.cuh")
    )
}

#[test]
fn the_device_word_major_sweep_is_its_twins() {
    let shape = Shape {
        topics: &[1, 2, 3, 9, 40, 70],
        docs: 12,
        tokens: 40,
    };
    let (body, want) = sweeps(0..24, &shape, 1, 1);
    host_cxx::check_on_host(&headers(1), &body, &want);
}

/// The same in document groups, launched as `CudaWordLda` and the resident engine launch them:
/// the lists once, then each group's slots (from `group_slots`) and its documents' moves. 1 to
/// 12 documents in 1, 3 and 8 groups (fewer where there are fewer documents).
#[test]
fn the_device_word_major_sweep_in_groups_is_its_twins() {
    let shape = Shape {
        topics: &[1, 3, 9, 40],
        docs: 13,
        tokens: 40,
    };
    let mut body = String::new();
    let mut want = String::new();
    for (seeds, groups) in [(200..210, 3), (210..220, 8), (220..224, 1)] {
        let (b, w) = sweeps(seeds, &shape, 1, groups);
        body += &b;
        want += &w;
    }
    host_cxx::check_on_host(&headers(1), &body, &want);
}

/// The same functions with a warp of 32 lanes (host threads in lockstep): the lanes' scans, the
/// chunk ends each lane keeps, the votes and the documents' lists as the device forms them,
/// against the twin with 32 lanes, bit for bit. Topic counts of one chunk, several, and more
/// than 32 (the chunk search loops); documents whose lists span several chunks. About 50 us a
/// warp operation here, so the cases are small.
#[test]
fn the_device_word_major_sweep_with_32_lanes_is_its_twins() {
    let shape = Shape {
        topics: &[5, 40, 100, 1100],
        docs: 4,
        tokens: 90,
    };
    let (mut body, mut want) = sweeps(100..106, &shape, 32, 1);
    let (b, w) = sweeps(106..108, &shape, 32, 3);
    body += &b;
    want += &w;
    host_cxx::check_on_host(&headers(32), &body, &want);
}

/// A draw whose uniform lands where a chunk's lane sums do not rise: document weights 1, 2^-24,
/// 2^-24, then zeros in the first chunk of 32 entries (lanes 2, 4, ..., 30 sum to 1 + 2^-23,
/// lane 31 to 1) and ones in the second, with x exactly 1. The twin takes the first entry whose
/// sum passes x, entry 2; a chunk search by the chunks' ends would skip the first chunk and take
/// entry 32. The word table is set directly, so that the total is 16 and x = u * 16 is exact.
#[test]
fn a_warps_draw_takes_the_first_entry_past_x_where_lane_sums_fall() {
    use ps_apps::lda::word_major::{draw, DocList, WordTable};
    let k = 64usize;
    let pr = WordMajorPriors {
        alpha: 0.5,
        beta: 0.01,
        vbeta: 10.0,
    };
    let (row, totals) = (vec![0f32; k], vec![0f32; k]);
    // The token's own topic is 63, outside the document's list, its phi equal to its phi': the
    // correction is 0 and the word part's total is qp's last, 7; the document's is 9.
    let old = 63u32;
    let mut phi = vec![0f32; k];
    phi[0] = 1.0;
    phi[1] = f32::powi(2.0, -24);
    phi[2] = phi[1];
    phi[32..40].fill(1.0);
    phi[63] = pr.phi(row[63], totals[63], 1);
    let table = WordTable {
        phi,
        qp: vec![3.0, 7.0],
    };
    let topics: Vec<u32> = (0..40).collect();
    let counts = vec![1u32; 40];
    let doc = DocList {
        topics: &topics,
        counts: &counts,
    };
    let u = 1.0f32 / 16.0;
    let want = draw(&table, &row, &totals, doc, old, u, &pr, 32, &mut Vec::new());
    assert_eq!(want, 2, "the twin's draw");
    let mut c = String::from("{\n");
    c += &array("unsigned int", "phi_bits", &bits(&table.phi));
    c += &array("unsigned int", "qp_bits", &bits(&table.qp));
    c += &array("float", "row", &row);
    c += &array("float", "tot", &totals);
    c += &array("unsigned int", "dtop", &topics);
    c += &array("unsigned int", "dcnt", &counts);
    write!(
        c,
        "static float phi[{k}], qp[2]; static unsigned int got;
        memcpy(phi, phi_bits, sizeof phi); memcpy(qp, qp_bits, sizeof qp);
        gridDim.x = 1; blockDim.x = 32u; blockIdx.x = 0; threadIdx.x = 0;
        auto one = [&](unsigned int lane) {{
            const unsigned int t = lw_draw(phi, qp, {k}u, row, tot, dtop, dcnt, 40u, {old}u,
                __uint_as_float({}u), __uint_as_float({}u), __uint_as_float({}u),
                __uint_as_float({}u), lane);
            if (lane == 0u) got = t;
        }};
        run_warp(one);
        printf(\"%u\\n\", got);
        }}\n",
        u.to_bits(),
        pr.alpha.to_bits(),
        pr.beta.to_bits(),
        pr.vbeta.to_bits(),
    )
    .unwrap();
    host_cxx::check_on_host(&headers(32), &c, &format!("{want}\n"));
}

/// The per-topic totals of a word-topic table of `topics` columns: its column sums.
pub(crate) fn column_sums(table: &[f32], topics: usize) -> Vec<f32> {
    let mut totals = vec![0f32; topics];
    for row in table.chunks(topics) {
        for (t, &x) in totals.iter_mut().zip(row) {
            *t += x;
        }
    }
    totals
}
