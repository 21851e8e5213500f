//! A top-k encoded on the device (`DeviceTopK::push_encoded_view`), never run on a GPU, on the
//! CPU as whole kernels (`host_cxx::BLOCKS_OF_WARPS`), in the order it launches them: the
//! sample positions are made (`codec_topk_samples`, the host's `sample_positions` exactly), the
//! residual accumulates the delta (`codecs.cu`), the sampled threshold and the candidate pass
//! run until at least `k` entries are candidates (lowered as `DeviceTopK::candidates` lowers
//! it), `codec_topk_trim` picks the `k` (`kernels/codec_topk.cu`; past 4,096 candidates,
//! `kernels/codec_select.cu`'s radix select and scan), `codec_dense.cu` encodes
//! their values in index order (or, for f32, they go as they are and `codec_ef_subtract` zeroes
//! them) and `codec_topk_scatter` puts what error feedback keeps back. Over clocks, in every
//! format, the chosen indices, the values' bytes (the payload after the index part the host
//! writes) and the residual are the library's `ErrorFeedback` with `topk:k,format`, bit for
//! bit (two clocks each, so that a residual carries over): small and large blocks (2,000
//! chosen of 40,000, about 2,300 candidates; 4,500 of 30,000, past the one-block trim), many
//! tied magnitudes (ties go to the lower index), and ±inf and NaN in the second clock.

use crate::host_cxx::{self, array, bits};

use std::fmt::Write as _;

use ps_proto::codec::{
    encode_selection_indices, initial_above, sample_positions, top_k, CodecChain, ErrorFeedback,
    Selector, ValueFormat,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "#define CODEC_HOST_SHIMS 1\n{}\n#define __shared__ static\n#define __launch_bounds__(x)\n{}\n{}\n{}\n{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/values.cuh"),
        include_str!("../../../kernels/bitonic.cuh"),
        include_str!("../../../kernels/codecs.cu"),
        include_str!("../../../kernels/codec_dense.cu"),
        include_str!("../../../kernels/codec_topk.cu"),
        include_str!("../../../kernels/codec_select.cu"),
    )
}

/// A clock's delta of `n`: normals, or small integers (ties), with ±inf and NaN when `specials`.
fn delta(rng: &mut ChaCha8Rng, n: usize, ties: bool, specials: bool) -> Vec<f32> {
    let mut d: Vec<f32> = (0..n)
        .map(|_| {
            if ties {
                rng.gen_range(-3i32..=3) as f32 * 0.5
            } else {
                rng.gen_range(-1.0f32..1.0) * rng.gen_range(0.0f32..4.0)
            }
        })
        .collect();
    if specials && n > 2 {
        d[rng.gen_range(0..n)] = f32::INFINITY;
        d[rng.gen_range(0..n)] = f32::NEG_INFINITY;
        d[rng.gen_range(0..n)] = f32::NAN;
    }
    d
}

/// The C statements of one clock, and the lines it must print.
fn clock(
    rng: &mut ChaCha8Rng,
    ef: &mut ErrorFeedback,
    (n, k, format): (usize, usize, ValueFormat),
    (ties, specials): (bool, bool),
    tag: &str,
) -> (String, String) {
    let d = delta(rng, n, ties, specials);
    let chain = CodecChain {
        selectors: vec![Selector::TopKCount(k as u32)],
        format,
        ..CodecChain::raw()
    };
    let acc: Vec<f32> = ef.residual().iter().zip(&d).map(|(r, d)| r + d).collect();
    let sel = top_k(&acc, k);
    let mut payload = Vec::new();
    ef.compress(&chain, &d, None, &mut payload).unwrap();
    let mut index_part = Vec::new();
    let dense = encode_selection_indices(format, n, &sel, &mut index_part).unwrap();
    assert!(
        !dense,
        "{tag}: a case must take a sparse layout (the device's)"
    );
    let values = &payload[index_part.len()..];
    let mut want = format!("{tag} sel");
    sel.iter().for_each(|i| write!(want, " {i}").unwrap());
    write!(want, "\n{tag} values ").unwrap();
    values.iter().for_each(|b| write!(want, "{b:02x}").unwrap());
    want.push('\n');
    for b in bits(ef.residual()) {
        writeln!(want, "{b:08x}").unwrap();
    }

    let first_above = if k > 0 && k < n {
        initial_above(n, k)
    } else {
        0
    };
    let encode = match format {
        ValueFormat::F32 => format!(
            "p = (const unsigned char*)sel_val; bytes = 4u * {k}u;
            print_values();
            run_grid(1u, 64u, [&] {{ codec_ef_subtract(residual, sel_idx, sel_val, 0, {k}ull); }});"
        ),
        ValueFormat::F16 | ValueFormat::Bf16 => format!(
            "run_grid(2u, 64u, [&] {{ codec_dense_halves(sel_val, halves, {}, {k}ull); }});
            p = (const unsigned char*)halves; bytes = {};
            print_values();
            run_grid(1u, 64u, [&] {{ codec_topk_scatter(residual, sel_idx, sel_val, {k}ull); }});",
            i32::from(format == ValueFormat::Bf16),
            values.len()
        ),
        _ => {
            let bits = match format {
                ValueFormat::Q8 => 8,
                ValueFormat::Q4 => 4,
                ValueFormat::Q2 => 2,
                _ => 1,
            };
            format!(
                "run_grid(2u, 64u, [&] {{ codec_dense_groups(sel_val, words, {bits}u, {}, {k}ull); }});
                p = (const unsigned char*)words; bytes = {};
                print_values();
                run_grid(1u, 64u, [&] {{ codec_topk_scatter(residual, sel_idx, sel_val, {k}ull); }});",
                i32::from(format == ValueFormat::Sign),
                values.len()
            )
        }
    };
    let body = format!(
        "{{\n{}const float* delta = (const float*)delta_bits;
        run_grid(2u, 64u, [&] {{ codec_ef_accumulate(residual, delta, {n}ull); }});
        unsigned long long above = {first_above}ull;
        for (;;) {{
            if (above > 0) {{
                unsigned int a = above > 0xffffffffull ? 0xffffffffu : (unsigned int)above;
                run_grid(1u, 64u, [&] {{ codec_topk_threshold(residual, samples, {samples}u, a, &threshold); }});
            }} else {{
                threshold = 0u;
            }}
            count = 0u;
            run_grid(2u, 64u, [&] {{ codec_topk_compact(residual, {n}ull, &threshold, cand_idx, cand_val, &count, {n}u); }});
            if (count >= {k}u || above == 0 || threshold == 0u) break;
            above *= 4;
        }}
        if (count > 4096u) {{
            for (unsigned int shift = 24u;; shift -= 8u) {{
                run_grid(2u, 64u, [&] {{ codec_select_hist(cand_val, count, state, shift, hist); }});
                run_grid(1u, 32u, [&] {{ codec_select_pick(hist, state, shift, {k}u); }});
                if (shift == 0u) break;
            }}
            run_grid(2u, 64u, [&] {{ codec_select_count(residual, {n}ull, state, tiles); }});
            run_grid(1u, 64u, [&] {{ codec_select_scan(tiles, {tiles}ull); }});
            run_grid(2u, 64u, [&] {{ codec_select_write(residual, {n}ull, state, tiles, {k}u, sel_idx, sel_val); }});
            ++large;
        }} else {{
            run_grid(1u, 64u, [&] {{ codec_topk_trim(residual, cand_idx, cand_val, count, {k}u, sel_idx, sel_val); }});
        }}
        printf(\"{tag} sel\");
        for (unsigned int j = 0; j < {k}u; ++j) printf(\" %u\", sel_idx[j]);
        printf(\"\\n\");
        {encode}
        for (unsigned int i = 0; i < {n}u; ++i) {{
            unsigned int b; memcpy(&b, &residual[i], 4); printf(\"%08x\\n\", b);
        }}
        }}\n",
        array("unsigned int", "delta_bits", &bits(&d)),
        samples = ps_proto::codec::TOPK_SAMPLE,
        tiles = n.div_ceil(4096),
    );
    (body, want)
}

#[test]
fn the_device_chooses_and_encodes_a_top_k_as_the_library_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x70bc);
    let formats = [
        ValueFormat::Sign,
        ValueFormat::Q4,
        ValueFormat::Q8,
        ValueFormat::Q2,
        ValueFormat::Bf16,
        ValueFormat::F16,
        ValueFormat::F32,
    ];
    // (n, k, ties, specials)
    let shapes = [
        (40usize, 1usize, false, false),
        (300, 7, true, false),
        (2000, 130, false, true),
        (5000, 50, true, true),
    ];
    let (mut body, mut want) = (String::new(), String::new());
    let mut case = 0;
    for format in formats {
        for &(n, k, ties, specials) in &shapes {
            cases(
                &mut rng,
                (n, k, format),
                (ties, specials),
                case,
                &mut body,
                &mut want,
            );
            case += 1;
        }
    }
    // A block of one value, chosen whole (sign lists its indices whatever their number), one
    // large block (about 2,300 candidates for the trim) and larger ones (k = 4,500, so more
    // candidates than the trim takes: the radix select's; with ties, and with ±inf and NaN in
    // the second clock).
    for (shape, ties, specials) in [
        ((1, 1, ValueFormat::Sign), false, false),
        ((40_000, 2_000, ValueFormat::Sign), false, false),
        ((30_000, 4_500, ValueFormat::Q4), false, true),
        ((30_000, 4_500, ValueFormat::F32), true, false),
    ] {
        cases(
            &mut rng,
            shape,
            (ties, specials),
            case,
            &mut body,
            &mut want,
        );
        case += 1;
    }
    body.push_str("printf(\"large %u\\n\", large);\n");
    want.push_str("large 4\n");
    // How many selections went past the one-block trim: each large block's two clocks.
    let body = format!("static unsigned int large = 0;\n{body}");
    host_cxx::check_on_host(&kernels(), &body, &want);
}

/// Two clocks of one block: the C statements into `body`, the lines into `want`.
fn cases(
    rng: &mut ChaCha8Rng,
    (n, k, format): (usize, usize, ValueFormat),
    (ties, specials): (bool, bool),
    case: usize,
    body: &mut String,
    want: &mut String,
) {
    let mut ef = ErrorFeedback::new(n);
    let words = k.div_ceil(128) + k.div_ceil(4) + 1;
    write!(
        body,
        "{{\nstatic float residual[{n}]; static unsigned int cand_idx[{n}]; static float cand_val[{n}];
        static unsigned int sel_idx[{k}]; static float sel_val[{k}]; static unsigned short halves[{k}];
        static unsigned int words[{words}];
        static unsigned int samples[{sample}];
        run_grid(2u, 64u, [&] {{ codec_topk_samples({n}ull, samples, {sample}u); }});
        static unsigned int threshold, count;
        static unsigned int hist[256], state[3]; static unsigned long long tiles[{tiles}];
        const unsigned char* p = 0; unsigned int bytes = 0;
        auto print_values = [&] {{
            printf(\"{case} {format:?} values \");
            for (unsigned int i = 0; i < bytes; ++i) printf(\"%02x\", p[i]);
            printf(\"\\n\");
        }};\n",
        sample = ps_proto::codec::TOPK_SAMPLE,
        tiles = n.div_ceil(4096),
    )
    .unwrap();
    for c in 0..2 {
        // The specials in the second clock only (the first leaves a residual).
        let tag = format!("{case} {format:?}");
        let (b, w) = clock(
            rng,
            &mut ef,
            (n, k, format),
            (ties, specials && c == 1),
            &tag,
        );
        body.push_str(&b);
        want.push_str(&w);
    }
    body.push_str("}\n");
}

/// `codec_topk_samples` makes `ps_proto::codec::sample_positions(n)` for blocks of every size
/// up to the largest (indices 32-bit), over a grid of several blocks.
#[test]
fn the_device_makes_the_hosts_sample_positions() {
    let sample = ps_proto::codec::TOPK_SAMPLE;
    let (mut body, mut want) = (String::new(), String::new());
    for n in [
        1u64,
        2,
        7,
        1000,
        40_000,
        1 << 20,
        3_000_000_017 / 2,
        u32::MAX as u64,
    ] {
        for p in sample_positions(n as usize) {
            writeln!(want, "{p}").unwrap();
        }
        write!(
            body,
            "{{ static unsigned int out[{sample}];
            run_grid(3u, 64u, [&] {{ codec_topk_samples({n}ull, out, {sample}u); }});
            for (unsigned int i = 0; i < {sample}u; ++i) printf(\"%u\\n\", out[i]); }}\n"
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}

/// `codec_topk_trim` at its edges, on the block it is launched with (1,024 threads) and on one
/// warp: a full 4,096 candidates (k of all, one, half, all but one), a single candidate, counts
/// just past a power of two; many tied magnitudes (ties to the lower index). The chosen indices
/// ascend and their values are read from the block: the k largest rank keys of the candidates.
#[test]
fn the_trim_picks_the_k_at_its_edges() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7417);
    let (mut body, mut want) = (String::new(), String::new());
    let cases = [
        (4096usize, 4096usize, 1024u32),
        (4096, 1, 1024),
        (4096, 2048, 1024),
        (4096, 4095, 32),
        (1, 1, 1024),
        (2, 1, 32),
        (3, 3, 1024),
        (1025, 17, 1024),
        (4095, 1234, 64),
    ];
    for (case, &(count, k, threads)) in cases.iter().enumerate() {
        let n = 3 * count + 5;
        let x: Vec<f32> = (0..n)
            .map(|_| {
                if rng.gen_bool(0.3) {
                    rng.gen_range(-3i32..=3) as f32 * 0.5
                } else {
                    rng.gen_range(-2.0f32..2.0)
                }
            })
            .collect();
        // The candidates: `count` distinct positions in no order.
        let mut idx: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            idx.swap(i, rng.gen_range(0..=i));
        }
        idx.truncate(count);
        let key = |i: u32| (u64::from(x[i as usize].to_bits() & 0x7fff_ffff) << 32) | u64::from(!i);
        let mut ranked = idx.clone();
        ranked.sort_unstable_by_key(|&i| std::cmp::Reverse(key(i)));
        let mut chosen = ranked[..k].to_vec();
        chosen.sort_unstable();
        write!(want, "{case}").unwrap();
        for i in &chosen {
            write!(want, " {i}:{:08x}", x[*i as usize].to_bits()).unwrap();
        }
        want.push('\n');
        write!(
            body,
            "{{\n{}{}{}static unsigned int sel_idx[{k}]; static float sel_val[{k}];
            run_grid(1u, {threads}u, [&] {{ codec_topk_trim((const float*)x_bits, cand_idx,
                (const float*)cand_bits, {count}u, {k}u, sel_idx, sel_val); }});
            printf(\"{case}\");
            for (unsigned int j = 0; j < {k}u; ++j) {{
                unsigned int b; memcpy(&b, &sel_val[j], 4); printf(\" %u:%08x\", sel_idx[j], b);
            }}
            printf(\"\\n\");\n}}\n",
            array("unsigned int", "x_bits", &bits(&x)),
            array("unsigned int", "cand_idx", &idx),
            array(
                "unsigned int",
                "cand_bits",
                &idx.iter()
                    .map(|&i| x[i as usize].to_bits())
                    .collect::<Vec<_>>()
            ),
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}
