//! `kernels/codec_dense.cu` (with `values.cuh`), never run on a GPU, on the CPU as whole kernels
//! (`host_cxx::BLOCKS_OF_WARPS`), launched as `DeviceDense` launches them: over several clocks
//! of deltas into one block of `rows x width`, each clock's payload must be the bytes
//! `ps_apps::app::device_codec::ResidualKeeper` (the library's error feedback) makes with the
//! same dense chain, and the residual it keeps, read through `codec_dense_add_to`, the keeper's,
//! bit for bit. Every lossy dense format (f16, bf16, q8, q4, q2, sign); blocks of one value, of
//! partial groups, of rows wider than a warp; values that saturate f16 and bf16, subnormals,
//! ties, -0.0, whole rows of zeros (rows that hold no residual), and ±inf and NaN (a group
//! holding one is sent with a NaN scale); grids of one to three blocks of one to three warps.

use crate::host_cxx::{self, array, bits};

use std::fmt::Write as _;

use ps_apps::app::device_codec::{DeltaBlock, DeviceChain, ResidualKeeper};
use ps_proto::codec::ValueFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "#define CODEC_HOST_SHIMS 1\n{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/values.cuh"),
        include_str!("../../../kernels/codec_dense.cu"),
    )
}

/// One value of a delta in `style`.
fn value(rng: &mut ChaCha8Rng, style: u32) -> f32 {
    match style {
        0 => rng.gen_range(-1.0f32..1.0),
        // Past f16's and near bf16's largest, tiny and subnormal, exact ties of f16.
        1 => {
            let m = [
                1e5f32,
                7e4,
                65504.0,
                3.3e38,
                1e-7,
                6e-8,
                1e-40,
                1.0 + 1.0 / 2048.0,
            ][rng.gen_range(0..8)];
            if rng.gen_bool(0.5) {
                -m
            } else {
                m
            }
        }
        // Small integers and zeros of either sign.
        2 => [0.0f32, -0.0, 1.0, -2.0, 3.0, 0.5][rng.gen_range(0..6)],
        3 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN][rng.gen_range(0..4)],
        // Values whose codes fall on ties (half a level) in a group whose largest is 1.
        _ => [1.0f32, -1.0, 0.5, -0.5, 0.25, 1.5 / 7.0][rng.gen_range(0..6)],
    }
}

/// A clock's delta: values of styles 0 to 2, some rows all zero, with a rare special value
/// (`specials`); or only ties (`ties`).
fn delta(rng: &mut ChaCha8Rng, rows: usize, width: usize, specials: bool, ties: bool) -> Vec<f32> {
    let mut d = Vec::with_capacity(rows * width);
    for _ in 0..rows {
        let zero_row = rng.gen_bool(0.2);
        for _ in 0..width {
            let style = if ties {
                4
            } else if specials && rng.gen_bool(0.01) {
                3
            } else {
                rng.gen_range(0..3)
            };
            d.push(if zero_row { 0.0 } else { value(rng, style) });
        }
    }
    d
}

#[test]
fn the_device_encodes_dense_chains_as_the_library_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xde75e);
    let formats = [
        ValueFormat::F16,
        ValueFormat::Bf16,
        ValueFormat::Q8,
        ValueFormat::Q4,
        ValueFormat::Q2,
        ValueFormat::Sign,
    ];
    let shapes = [
        (1usize, 1usize),
        (3, 50),
        (7, 128),
        (2, 300),
        (40, 33),
        (1, 129),
        (4, 64),
    ];
    let grids = [(1u32, 32u32), (2, 64), (3, 96)];
    let (mut body, mut want) = (String::new(), String::new());
    let mut case = 0;
    for format in formats {
        for (si, &(rows, width)) in shapes.iter().enumerate() {
            let n = rows * width;
            let (specials, ties) = (si % 2 == 1, si == 6);
            let (grid, block) = grids[case % grids.len()];
            let chain = DeviceChain::Dense(format);
            let whole = DeltaBlock {
                table: 0,
                first_row: 0,
                rows,
                k: n,
            };
            let mut keeper = ResidualKeeper::new(&[(rows, width)]);
            let halves = matches!(format, ValueFormat::F16 | ValueFormat::Bf16);
            let bits_per = match format {
                ValueFormat::Q8 => 8u32,
                ValueFormat::Q4 => 4,
                ValueFormat::Q2 => 2,
                _ => 1,
            };
            let words = n.div_ceil(128) + (n * bits_per as usize).div_ceil(32);
            let bytes = format.encoded_len(n);
            write!(
                body,
                "{{\nstatic float residual[{n}]; static float dst[{n}];
                static unsigned short halves[{n}]; static unsigned int words[{words}];\n"
            )
            .unwrap();
            for clock in 0..3 {
                let d = delta(&mut rng, rows, width, specials, ties);
                let payload = keeper.encode_blocks(&[whole], chain, &[&d]).unwrap();
                let mut read = vec![-0.0f32; n];
                keeper.add_to(0, 0, &mut read).unwrap();
                writeln!(
                    want,
                    "{case} {clock} {}",
                    payload[0]
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                )
                .unwrap();
                for b in bits(&read) {
                    writeln!(want, "{b:08x}").unwrap();
                }
                body += "{\n";
                body += &array("unsigned int", "delta_bits", &bits(&d));
                let encode = if halves {
                    format!(
                        "codec_dense_halves(residual, halves, {}, {n}ull)",
                        i32::from(format == ValueFormat::Bf16)
                    )
                } else {
                    format!(
                        "codec_dense_groups(residual, words, {bits_per}u, {}, {n}ull)",
                        i32::from(format == ValueFormat::Sign)
                    )
                };
                let payload_bytes = if halves {
                    "(const unsigned char*)halves"
                } else {
                    "(const unsigned char*)words"
                };
                write!(
                    body,
                    "const float* delta = (const float*)delta_bits;
                    run_grid({grid}u, {block}u, [&] {{ codec_dense_accumulate(residual, delta, {n}ull); }});
                    run_grid({grid}u, {block}u, [&] {{ {encode}; }});
                    const unsigned char* p = {payload_bytes};
                    printf(\"{case} {clock} \");
                    for (unsigned int i = 0; i < {bytes}u; ++i) printf(\"%02x\", p[i]);
                    printf(\"\\n\");
                    for (unsigned int i = 0; i < {n}u; ++i) dst[i] = -0.0f;
                    run_grid({grid}u, {block}u, [&] {{ codec_dense_add_to(dst, residual, {width}u, {rows}ull); }});
                    for (unsigned int i = 0; i < {n}u; ++i) {{
                        unsigned int b; memcpy(&b, &dst[i], 4); printf(\"%08x\\n\", b);
                    }}
                    }}\n"
                )
                .unwrap();
            }
            body += "}\n";
            case += 1;
        }
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}

/// `codec_dense_subtract` (a delta: the rows after less the rows before) is the host's f32
/// subtraction, bit for bit, over a grid-stride loop.
#[test]
fn the_device_subtracts_as_the_host_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n = 1000;
    let mut draw = |_| {
        let style = rng.gen_range(0..3);
        value(&mut rng, style)
    };
    let a: Vec<f32> = (0..n).map(&mut draw).collect();
    let b: Vec<f32> = (0..n).map(&mut draw).collect();
    let want: String = a
        .iter()
        .zip(&b)
        .map(|(x, y)| format!("{:08x}\n", (x - y).to_bits()))
        .collect();
    let body = format!(
        "{}{}float* a = (float*)a_bits; const float* b = (const float*)b_bits;
        run_grid(2u, 64u, [&] {{ codec_dense_subtract(a, b, {n}ull); }});
        for (unsigned int i = 0; i < {n}u; ++i) {{
            unsigned int x; memcpy(&x, &a[i], 4); printf(\"%08x\\n\", x);
        }}\n",
        array("unsigned int", "a_bits", &bits(&a)),
        array("unsigned int", "b_bits", &bits(&b)),
    );
    host_cxx::check_on_host(&kernels(), &body, &want);
}
