//! The device's energy count (`kernels/codec_energy.cu`), never run on a GPU, on the CPU as
//! whole kernels (`host_cxx::BLOCKS_OF_WARPS`) in the order `DeviceTopK` launches them:
//! `codec_energy_max`, four passes of `codec_energy_hist` and `codec_energy_pick`, then
//! `codec_select_count`, `codec_select_scan` and `codec_select_write` with the state the pick
//! left. The count and the chosen entries are the library's (`k_of_energy`, then `top_k` of
//! that many, in index order): magnitudes over many binades (some too small to count), ties,
//! one value everywhere, a block of zeros (nothing goes), subnormals only, a non-finite entry
//! (every entry goes), fractions from 0.05 to 1, and grids and blocks of several sizes.

use std::fmt::Write as _;

use crate::host_cxx::{self, array, bits};

use ps_proto::codec::{k_of_energy, top_k};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "{}\n#define __shared__ static\n#define __launch_bounds__(x)\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/codec_select.cu"),
        include_str!("../../../kernels/codec_energy.cu"),
    )
}

/// How a case's values are drawn.
#[derive(Clone, Copy)]
enum Values {
    /// Magnitudes over 40 binades, both signs: the smallest count for nothing.
    Wide,
    /// Seven levels: most entries tie with others.
    Levels,
    /// One value everywhere.
    Same,
    /// `+0.0` and `-0.0` only.
    Zeros,
    /// Subnormals only, some too small to count.
    Tiny,
    /// Wide, with one NaN or infinity.
    Special,
}

fn values(rng: &mut ChaCha8Rng, n: usize, kind: Values) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n)
        .map(|_| match kind {
            Values::Wide | Values::Special => {
                rng.gen_range(-1.0f32..1.0) * 2f32.powi(rng.gen_range(-30..10))
            }
            Values::Levels => rng.gen_range(-3i32..=3) as f32 * 0.25,
            Values::Same => -0.75,
            Values::Zeros => {
                if rng.gen_bool(0.5) {
                    0.0
                } else {
                    -0.0
                }
            }
            Values::Tiny => f32::from_bits(rng.gen_range(0..1u32 << 12)),
        })
        .collect();
    if let Values::Special = kind {
        let v = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][rng.gen_range(0..3)];
        x[rng.gen_range(0..n)] = v;
    }
    x
}

#[test]
fn the_device_keeps_the_librarys_energy_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xe4e7);
    // (n, E, values, (max and hist grid, block), (tile grid, block), scan block)
    let cases = [
        (20 * 4096 + 77, 0.4f32, Values::Wide, (3, 64), (3, 64), 32),
        (50_000, 0.45, Values::Levels, (2, 96), (2, 128), 64),
        (9_000, 1.0, Values::Wide, (1, 32), (4, 32), 1024),
        (12_289, 0.3, Values::Same, (2, 64), (2, 96), 32),
        (5_000, 0.5, Values::Zeros, (2, 64), (1, 64), 32),
        (3_000, 0.9, Values::Tiny, (1, 64), (1, 64), 32),
        (6_000, 0.1, Values::Special, (2, 32), (2, 64), 64),
        (4_096, 0.05, Values::Wide, (1, 64), (1, 1024), 32),
        (1, 0.5, Values::Wide, (1, 32), (1, 32), 32),
    ];
    let (mut body, mut want) = (String::new(), String::new());
    for (case, &(n, e, kind, (hg, hb), (tg, tb), sb)) in cases.iter().enumerate() {
        let x = values(&mut rng, n, kind);
        let k = k_of_energy(&x, None, e);
        let chosen = top_k(&x, k);
        write!(want, "{case} k {k}").unwrap();
        for &i in &chosen {
            write!(want, " {i}:{:08x}", x[i as usize].to_bits()).unwrap();
        }
        want.push('\n');
        let tiles = n.div_ceil(4096);
        write!(
            body,
            "{{\n{}static unsigned int count[256]; static unsigned long long energy[256];
            static unsigned int state[3]; static unsigned long long est[5];
            static unsigned long long tiles[{tiles}];
            static unsigned int sel_idx[{n} + 8]; static float sel_val[{n}];
            for (unsigned int j = 0; j < {n}u + 8u; ++j) sel_idx[j] = 0xffffffffu;
            const float* x = (const float*)x_bits;
            run_grid({hg}u, {hb}u, [&] {{ codec_energy_max(x, {n}ull, est); }});
            for (unsigned int shift = 24u;; shift -= 8u) {{
                run_grid({hg}u, {hb}u, [&] {{ codec_energy_hist(x, {n}ull, state, est, shift, count, energy); }});
                run_grid(1u, 32u, [&] {{ codec_energy_pick(count, energy, state, est, shift, {e:?}f, {n}u); }});
                if (shift == 0u) break;
            }}
            for (unsigned int d = 0; d < 256u; ++d) if (count[d] != 0u || energy[d] != 0ull) printf(\"{case}: histogram left at %u\\n\", d);
            if (est[4] == 2ull) printf(\"{case}: fault\\n\");
            const unsigned int k = (unsigned int)est[3];
            if (k != 0u) {{
                run_grid({tg}u, {tb}u, [&] {{ codec_select_count(x, {n}ull, state, tiles); }});
                run_grid(1u, {sb}u, [&] {{ codec_select_scan(tiles, {tiles}ull); }});
                run_grid({tg}u, {tb}u, [&] {{ codec_select_write(x, {n}ull, state, tiles, k, sel_idx, sel_val); }});
            }}
            for (unsigned int j = k; j < {n}u + 8u; ++j) if (sel_idx[j] != 0xffffffffu) {{ printf(\"{case}: written past k\\n\"); break; }}
            printf(\"{case} k %u\", k);
            for (unsigned int j = 0; j < k; ++j) {{
                unsigned int b; memcpy(&b, &sel_val[j], 4); printf(\" %u:%08x\", sel_idx[j], b);
            }}
            printf(\"\\n\");\n}}\n",
            array("unsigned int", "x_bits", &bits(&x)),
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}
