//! The index part of a top-k made on the device (`kernels/codec_index.cu` over
//! `kernels/sparse_index.cuh`), never run on a GPU, on the CPU as whole kernels
//! (`host_cxx::BLOCKS_OF_WARPS`): `codec_index_plan`'s measure of the chosen indices is
//! `ps_proto::codec::index_sizes`, and `codec_index_write`'s codes in the layout the host picks
//! from it (`index_layout`) are the bytes `encode_selection_indices` writes after the layout's
//! opening, in every layout but dense (list, Rice, runs: each wins somewhere below; gaps past
//! 2^31 too), on a launch of more than one warp and block (only the first warp works), writing
//! nothing past the words it is given; and the measure's flag for indices out of order or
//! range.

use std::fmt::Write as _;

use crate::host_cxx::{self, array};

use ps_proto::codec::{encode_selection_indices, index_layout, index_sizes, ValueFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/sparse_index.cuh"),
        include_str!("../../../kernels/codec_index.cu"),
    )
}

/// A selection of a block of `n`: scattered with a density, in runs, one entry, or a few far
/// apart in the largest block (gaps past 2^31: long Rice codes and varints).
fn selection(rng: &mut ChaCha8Rng, n: u32, shape: u32) -> Vec<u32> {
    let density = rng.gen_range(0.001..0.6);
    let sel: Vec<u32> = match shape {
        0 => (0..n).filter(|_| rng.gen_bool(density)).collect(),
        1 => {
            let on: Vec<bool> = (0..n / 37 + 1).map(|_| rng.gen_bool(density)).collect();
            (0..n).filter(|i| on[(i / 37) as usize]).collect()
        }
        2 => vec![rng.gen_range(0..n)],
        _ => {
            let mut far: Vec<u32> = (0..20).map(|_| rng.gen_range(0..u32::MAX)).collect();
            far.sort_unstable();
            far.dedup();
            far
        }
    };
    if sel.is_empty() {
        vec![n - 1]
    } else {
        sel
    }
}

#[test]
fn the_device_measures_and_codes_the_chosen_indices_as_the_library_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x1d3c);
    let (mut body, mut want) = (String::new(), String::new());
    let mut modes = [0usize; 4];
    for case in 0..24u32 {
        let shape = case % 4;
        let n = if shape == 3 {
            u32::MAX
        } else {
            [100u32, 3_000, 12_000][case as usize % 3]
        };
        let sel = selection(&mut rng, n, shape);
        let m = sel.len();
        let sizes = index_sizes(&sel);
        let layout = index_layout(&sizes, n as usize, ValueFormat::Sign);
        modes[layout.mode as usize] += 1;
        let mut part = Vec::new();
        encode_selection_indices(ValueFormat::Sign, n as usize, &sel, &mut part).unwrap();
        let codes = &part[layout.header.len()..];
        writeln!(
            want,
            "{case} plan {} {} {} {} {} {} {} {}",
            sizes.list_bytes,
            sizes.rice_bits,
            sizes.runs,
            sizes.gap_bits,
            sizes.len_bits,
            sizes.rice_k,
            sizes.gap_k,
            sizes.len_k
        )
        .unwrap();
        write!(want, "{case} codes ").unwrap();
        codes.iter().for_each(|b| write!(want, "{b:02x}").unwrap());
        want.push('\n');
        // The kernel is told the words the codes fill; the buffer has one more, which must stay
        // zero.
        let cap = codes.len().div_ceil(4);
        let words = cap + 1;
        write!(
            body,
            "{{\n{}static unsigned long long plan[8]; static unsigned int out[{words}];
            run_grid(2u, 64u, [&] {{ codec_index_plan(sel, {m}u, {n}ull, plan); }});
            printf(\"{case} plan\");
            for (int i = 0; i < 8; ++i) printf(\" %llu\", plan[i]);
            printf(\"\\n\");
            run_grid(2u, 64u, [&] {{ codec_index_write(sel, {m}u, {}u, {}u, {}u, {cap}ull, out); }});
            printf(\"{case} codes \");
            const unsigned char* b = (const unsigned char*)out;
            for (unsigned int i = 0; i < {}u; ++i) printf(\"%02x\", b[i]);
            printf(\"\\n\");
            for (unsigned int i = {}u; i < {}u; ++i) if (b[i] != 0u) printf(\"{case}: a byte past the codes\\n\");\n}}\n",
            array("unsigned int", "sel", &sel),
            layout.mode,
            layout.k,
            layout.kl,
            codes.len(),
            codes.len(),
            4 * words,
        )
        .unwrap();
    }
    // List, Rice and runs each won somewhere (sign has no dense layout).
    assert!(modes[0] > 0 && modes[2] > 0 && modes[3] > 0, "{modes:?}");
    // Faults the measure flags with an impossible Rice parameter: indices out of order, one
    // repeated, one not below the block's size.
    for (case, (list, n)) in [
        (&[3u32, 9, 7][..], 10u64),
        (&[3, 3, 8], 10),
        (&[1, 4, 10], 10),
    ]
    .into_iter()
    .enumerate()
    {
        writeln!(want, "fault {case} 4294967295").unwrap();
        write!(
            body,
            "{{
{}static unsigned long long plan[8];
            run_grid(1u, 32u, [&] {{ codec_index_plan(sel, 3u, {n}ull, plan); }});
            printf(\"fault {case} %llu\\n\", plan[5]);
}}
",
            array("unsigned int", "sel", list),
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}
