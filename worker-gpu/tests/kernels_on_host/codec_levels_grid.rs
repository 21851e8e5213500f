//! `codec_levels_to_f32` (`kernels/codecs.cu`), never run on a GPU, on the CPU over an emulated
//! grid: rows a `q8`, `q4`, `q2` or `sign` pull codec decoded, found again as codes by
//! `ps_apps::app::device_codec::level_image` and packed as they cross, widen back to the rows,
//! bit for bit, in one segment (a reply's rows in order) or several (replies side by side,
//! groups cut short): zero rows, -0.0 (a run of scale 0), one-bit codes, small and huge
//! scales, and grids of one to three blocks.

use crate::host_cxx::{self, array, bits};

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ps_apps::app::device_codec::level_image;
use ps_proto::codec::ValueFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "#define CODEC_HOST_SHIMS 1\n{}\n#define __shared__ static\n#define __launch_bounds__(x)\n{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/values.cuh"),
        include_str!("../../../kernels/bitonic.cuh"),
        include_str!("../../../kernels/codecs.cu"),
    )
}

/// `values` as a pull reply in `format` decodes them.
fn pulled(format: ValueFormat, values: &[f32]) -> Vec<f32> {
    format.round_trip(values)
}

/// A read of several replies' rows in `format`: each reply's values of one magnitude.
fn read(rng: &mut ChaCha8Rng, format: ValueFormat) -> Vec<f32> {
    let mut rows = Vec::new();
    for _ in 0..rng.gen_range(1..5) {
        let n = rng.gen_range(1..400);
        let magnitude = [1e-30f32, 1e-3, 1.0, 3e4, 1e30][rng.gen_range(0..5)];
        let values: Vec<f32> = (0..n)
            .map(|_| rng.gen_range(-1.0f32..1.0) * magnitude)
            .collect();
        rows.extend(pulled(format, &values));
        if rng.gen_bool(0.3) {
            rows.extend(vec![0.0; rng.gen_range(1..50)]);
        }
    }
    rows
}

#[test]
fn rows_that_crossed_as_codes_widen_back_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x1e7e15);
    let formats = [
        ValueFormat::Q8,
        ValueFormat::Q4,
        ValueFormat::Q2,
        ValueFormat::Sign,
    ];
    let grids = [(1u32, 32u32), (2, 64), (3, 96)];
    let (mut body, mut want) = (String::new(), String::new());
    let mut cases: Vec<Vec<f32>> = Vec::new();
    for format in formats {
        for _ in 0..3 {
            cases.push(read(&mut rng, format));
        }
    }
    cases.push(vec![0.0, -0.0, -0.0, 0.0, 0.0]);
    // A sign reply without zeros: one bit a code.
    cases.push(pulled(
        ValueFormat::Sign,
        &(0..300)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<_>>(),
    ));
    let (mut widths, mut layouts) = (BTreeSet::new(), BTreeSet::new());
    for (case, values) in cases.iter().enumerate() {
        let image = level_image(values).unwrap_or_else(|| panic!("case {case}: no image"));
        widths.insert(image.bits());
        layouts.insert(image.segments() > 1);
        let n = values.len();
        let (grid, block) = grids[case % grids.len()];
        for b in bits(values) {
            writeln!(want, "{b:08x}").unwrap();
        }
        write!(
            body,
            "{{\nalignas(4) {}static float out[{n}];
            run_grid({grid}u, {block}u, [&] {{ codec_levels_to_f32(image, {segments}u, {scales}u, {bits}u, {n}ull, out); }});
            for (unsigned int i = 0; i < {n}u; ++i) {{
                unsigned int b; memcpy(&b, &out[i], 4); printf(\"%08x\\n\", b);
            }}\n}}\n",
            array("unsigned char", "image", &image.packed()),
            segments = image.segments(),
            scales = image.scale_count(),
            bits = image.bits(),
        )
        .unwrap();
    }
    assert_eq!(
        widths.into_iter().collect::<Vec<_>>(),
        [1, 2, 4, 8],
        "every code width"
    );
    assert_eq!(layouts.len(), 2, "one segment and several");
    host_cxx::check_on_host(&kernels(), &body, &want);
}
