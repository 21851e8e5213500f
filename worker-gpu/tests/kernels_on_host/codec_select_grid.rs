//! The device's exact top-k of any size (`kernels/codec_select.cu`), never run on a GPU, on the
//! CPU as whole kernels (`host_cxx::BLOCKS_OF_WARPS`) in the order `DeviceTopK` launches them:
//! the radix select over a set of candidates (every entry at or above some threshold at most the
//! k-th magnitude, in no order), four passes of `codec_select_hist` and `codec_select_pick`,
//! then `codec_select_count`, `codec_select_scan` and `codec_select_write` over the whole block.
//! The chosen indices and values are the library's `top_k`, in index order: many tiles (more
//! than the scan's threads, so each thread scans a run of them), a block smaller than a tile,
//! every entry chosen, every value tied, mostly zeros with `-0.0` among them (a zero chosen, the
//! lowest indices first), ±inf and NaN, and grids and blocks of several sizes.

use std::fmt::Write as _;

use crate::host_cxx::{self, array, bits};

use ps_proto::codec::top_k;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "{}\n#define __shared__ static\n#define __launch_bounds__(x)\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/codec_select.cu"),
    )
}

/// How a case's values are drawn.
#[derive(Clone, Copy)]
enum Values {
    /// Magnitudes over several binades, both signs.
    Wide,
    /// Seven levels: most entries tie with others.
    Levels,
    /// One value everywhere.
    Same,
    /// Mostly `+0.0` and `-0.0`, a few nonzeros (fewer than k).
    Zeros,
    /// Wide, with ±inf and NaNs.
    Specials,
}

fn values(rng: &mut ChaCha8Rng, n: usize, kind: Values) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n)
        .map(|_| match kind {
            Values::Wide | Values::Specials => {
                rng.gen_range(-1.0f32..1.0) * 2f32.powi(rng.gen_range(-20..8))
            }
            Values::Levels => rng.gen_range(-3i32..=3) as f32 * 0.5,
            Values::Same => -1.25,
            Values::Zeros => match rng.gen_range(0..40) {
                0 => rng.gen_range(-2.0f32..2.0),
                1..=19 => -0.0,
                _ => 0.0,
            },
        })
        .collect();
    if let Values::Specials = kind {
        for v in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN] {
            for _ in 0..3 {
                x[rng.gen_range(0..n)] = v;
            }
        }
    }
    x
}

#[test]
fn the_device_selects_the_librarys_top_k_of_any_size() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5e1ec7);
    // (n, k, values, (hist grid, block), (tile grid, block), scan block)
    let cases = [
        (40 * 4096 + 77, 20_000, Values::Wide, (3, 64), (3, 64), 32),
        (50_000, 7_000, Values::Levels, (2, 96), (2, 128), 64),
        (9_000, 9_000, Values::Wide, (1, 32), (4, 32), 1024),
        (5_000, 4_097, Values::Specials, (2, 64), (1, 64), 64),
        (4_096, 1, Values::Wide, (1, 64), (1, 64), 32),
        (12_289, 6_000, Values::Same, (2, 64), (2, 96), 32),
        (30_000, 5_000, Values::Zeros, (2, 64), (3, 64), 32),
        (3_000, 2_999, Values::Levels, (1, 32), (1, 1024), 32),
    ];
    let (mut body, mut want) = (String::new(), String::new());
    for (case, &(n, k, kind, (hg, hb), (tg, tb), sb)) in cases.iter().enumerate() {
        let x = values(&mut rng, n, kind);
        let chosen = top_k(&x, k);
        assert_eq!(chosen.len(), k);
        write!(want, "{case}").unwrap();
        for &i in &chosen {
            write!(want, " {i}:{:08x}", x[i as usize].to_bits()).unwrap();
        }
        want.push('\n');
        // Candidates: every entry at or above a threshold at most the k-th magnitude, shuffled.
        let mag = |v: f32| v.to_bits() & 0x7fff_ffff;
        let kth = chosen.iter().map(|&i| mag(x[i as usize])).min().unwrap();
        let t = if rng.gen_bool(0.5) {
            kth
        } else {
            (f64::from(kth) * rng.gen_range(0.9..1.0)) as u32
        };
        let mut cand: Vec<u32> = x
            .iter()
            .map(|&v| v.to_bits())
            .filter(|&b| b & 0x7fff_ffff >= t)
            .collect();
        for i in (1..cand.len()).rev() {
            cand.swap(i, rng.gen_range(0..=i));
        }
        let tiles = n.div_ceil(4096);
        write!(
            body,
            "{{\n{}{}static unsigned int hist[256]; static unsigned int state[3];
            static unsigned long long tiles[{tiles}];
            static unsigned int sel_idx[{k} + 8]; static float sel_val[{k}];
            for (unsigned int j = {k}u; j < {k}u + 8u; ++j) sel_idx[j] = 0xffffffffu;
            for (unsigned int shift = 24u;; shift -= 8u) {{
                run_grid({hg}u, {hb}u, [&] {{ codec_select_hist((const float*)cand_bits, {count}u, state, shift, hist); }});
                run_grid(1u, 32u, [&] {{ codec_select_pick(hist, state, shift, {k}u); }});
                if (shift == 0u) break;
            }}
            for (unsigned int d = 0; d < 256u; ++d) if (hist[d] != 0u) printf(\"{case}: histogram left at %u\\n\", d);
            run_grid({tg}u, {tb}u, [&] {{ codec_select_count((const float*)x_bits, {n}ull, state, tiles); }});
            run_grid(1u, {sb}u, [&] {{ codec_select_scan(tiles, {tiles}ull); }});
            run_grid({tg}u, {tb}u, [&] {{ codec_select_write((const float*)x_bits, {n}ull, state, tiles, {k}u, sel_idx, sel_val); }});
            for (unsigned int j = {k}u; j < {k}u + 8u; ++j) if (sel_idx[j] != 0xffffffffu) printf(\"{case}: written past k\\n\");
            printf(\"{case}\");
            for (unsigned int j = 0; j < {k}u; ++j) {{
                unsigned int b; memcpy(&b, &sel_val[j], 4); printf(\" %u:%08x\", sel_idx[j], b);
            }}
            printf(\"\\n\");\n}}\n",
            array("unsigned int", "x_bits", &bits(&x)),
            array("unsigned int", "cand_bits", &cand),
            count = cand.len(),
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}
