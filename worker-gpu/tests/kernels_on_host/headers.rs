//! The device halves of the host/device pure functions, run on the CPU: the shared kernel
//! headers `kernels/visit.cuh` (the visiting order, and `visit_fill`, the body of the kernels
//! that make it) and `kernels/philox.cuh` (the uniforms) are plain C++ apart from CUDA's
//! qualifiers, intrinsics and thread coordinates, so this test compiles them with the host's
//! C++ compiler behind a few shims (a grid is emulated by loops) and checks every output
//! against the Rust halves (`ps_apps::visit`, `ps_apps::philox`) bit for bit; and
//! `kernels/slots.cuh` (a batch's sorted local columns, in four barrier-free passes) against a
//! sort of the batch's columns; and `kernels/lda_rows.cuh` (a packed run of LDA rows written
//! into the device's copy) against `ps_apps::lda::packed::unpack_rows`; and `kernels/mf_window.cuh`
//! (a block of MF ratings with the rows of the next W copied ahead and handed from rating to
//! rating) against the same ratings stepped one after another by `kernels/mf_step.cuh`, with
//! one lane (`MF_WARP` 1) and copies that read global memory when issued and land in shared
//! memory only when waited for, so that a copy issued too early, or one landing over a row
//! handed over, shows as a wrong value. What it cannot catch is a difference
//! between NVRTC and the host compiler; the GPU conformance tests check that where there is a
//! GPU. Skips visibly without a C++ compiler (`CXX`, else `c++`), unless `PS_REQUIRE_CXX` is set
//! (CI sets it: there the check must not vanish quietly).

use crate::host_cxx;

use std::fmt::Write as _;

use ps_apps::philox;
use ps_apps::seed::ClockKey;
use ps_apps::visit::Visit;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::lr_resident::slot_checksum;

/// What `headers_on_host` compiles after the shared shims: the MF window's own shims (one lane,
/// and copies that land when the test says), then the headers it checks.
fn headers() -> String {
    format!(
        "{MF_SHIMS}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        host_cxx::MF_COPIES,
        include_str!("../../../kernels/visit.cuh"),
        include_str!("../../../kernels/philox.cuh"),
        include_str!("../../../kernels/slots.cuh"),
        include_str!("../../../kernels/lda_rows.cuh"),
        include_str!("../../../kernels/mf_step.cuh"),
        include_str!("../../../kernels/mf_window.cuh"),
    )
}

/// The MF window's shims for one lane (the copies are `host_cxx::MF_COPIES`).
const MF_SHIMS: &str = r#"
#define MF_WARP 1
#define MF_CACHE 8
template <typename T> static inline T __ldcg(const T* p) { return *p; }
static inline void __syncwarp() {}
static inline float __shfl_xor_sync(unsigned int, float x, int) { return x; }
"#;

/// Compiles and runs `body` after the headers and checks its output against `want`, line by
/// line (a visible skip without a compiler).
fn check_on_host(body: &str, want: &str) {
    host_cxx::check_on_host(&headers(), body, want);
}

#[test]
fn the_device_visit_order_and_uniforms_are_the_hosts() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4845_4144);
    let mut body = String::new();
    let mut want = String::new();
    // Visits: small and awkward sizes, the largest, and random ones.
    let mut sizes: Vec<u32> = vec![1, 2, 3, 4, 5, 15, 16, 17, 1000, 65_536, 65_537, u32::MAX];
    sizes.extend((0..20).map(|_| rng.gen_range(1..5_000_000)));
    for (c, &n) in sizes.iter().enumerate() {
        let key = ClockKey {
            seed: rng.gen(),
            worker: rng.gen_range(0..64),
            clock: c as u32,
        };
        let v = Visit::for_clock(key, n as usize, 0, 1);
        let [k0, k1, k2, k3] = v.keys;
        for _ in 0..8 {
            let j = rng.gen_range(0..n);
            writeln!(
                body,
                "printf(\"%u\\n\", visit_at({n}u, {k0}u, {k1}u, {k2}u, {k3}u, {j}u));"
            )
            .unwrap();
            writeln!(want, "{}", v.at(j)).unwrap();
        }
    }
    // A whole visit made by `visit_fill` on an emulated grid of 3 blocks of 4 threads (every
    // thread's grid-stride loop run in turn).
    {
        let key = ClockKey {
            seed: 9,
            worker: 3,
            clock: 1,
        };
        let v = Visit {
            from: 17,
            count: 40,
            ..Visit::for_clock(key, 100, 0, 1)
        };
        let [k0, k1, k2, k3] = v.keys;
        writeln!(
            body,
            "{{ unsigned int out[40]; {} for (int i = 0; i < 40; ++i) printf(\"%u\\n\", out[i]); }}",
            host_cxx::on_grid(
                3,
                4,
                &format!("visit_fill({k0}u, {k1}u, {k2}u, {k3}u, 100u, 17u, 40u, out)")
            )
        )
        .unwrap();
        for s in v.order() {
            writeln!(want, "{s}").unwrap();
        }
    }
    // Philox blocks and uniforms (as bits).
    for _ in 0..40 {
        let (seed, stream, index): (u64, u32, u64) = (rng.gen(), rng.gen(), rng.gen::<u64>() >> 8);
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        writeln!(
            body,
            "{{ philox_block b = philox_uniform_block({lo}u, {hi}u, {stream}u, {}ull); \
             printf(\"%u %u %u %u\\n\", b.w[0], b.w[1], b.w[2], b.w[3]); \
             float u = philox_uniform({lo}u, {hi}u, {stream}u, {index}ull); unsigned int bits; \
             __builtin_memcpy(&bits, &u, 4); printf(\"%u\\n\", bits); }}",
            index >> 2
        )
        .unwrap();
        let b = philox::block(seed, stream, index >> 2);
        writeln!(want, "{} {} {} {}", b[0], b[1], b[2], b[3]).unwrap();
        writeln!(want, "{}", philox::uniform(seed, stream, index).to_bits()).unwrap();
    }
    // A batch's sorted local columns made by the four passes of slots.cuh, each on an emulated
    // grid of 2 blocks of 3 threads: rows of a random CSR over 50 ids, chunks of 7.
    {
        let (f, chunk) = (50u32, 7u32);
        let chunks = f.div_ceil(chunk);
        let mut row_ptr = vec![0u32];
        let mut cols = Vec::new();
        for _ in 0..30 {
            for _ in 0..rng.gen_range(0..6) {
                cols.push(rng.gen_range(0..f));
            }
            row_ptr.push(cols.len() as u32);
        }
        let batch: Vec<u32> = (0..12).map(|_| rng.gen_range(0..30)).collect();
        let list = |v: &[u32]| {
            let s: Vec<String> = v.iter().map(|x| format!("{x}u")).collect();
            format!("{{{}}}", s.join(", "))
        };
        let grid = |call: &str| host_cxx::on_grid(2, 3, call);
        writeln!(
            body,
            "{{ unsigned int row_ptr[] = {}; unsigned int cols[] = {}; unsigned int batch[] = {}; \
             unsigned char flags[{f}] = {{0}}; unsigned int counts[{}]; unsigned long long sums[{}]; \
             unsigned int slots[{f}]; {} {} {} {} \
             printf(\"%u %llu\\n\", counts[{chunks}], sums[{chunks}]); \
             for (unsigned int i = 0; i < counts[{chunks}]; ++i) printf(\"%u\\n\", slots[i]); }}",
            list(&row_ptr),
            list(if cols.is_empty() { &[0] } else { &cols }),
            list(&batch),
            chunks + 1,
            chunks + 1,
            grid(&format!(
                "slots_mark(row_ptr, cols, batch, {}u, flags)",
                batch.len()
            )),
            grid(&format!(
                "slots_count(flags, {f}u, {chunk}u, {chunks}u, counts, sums)"
            )),
            grid(&format!("slots_scan(counts, sums, {chunks}u)")),
            grid(&format!(
                "slots_write(flags, {f}u, {chunk}u, {chunks}u, counts, slots)"
            )),
        )
        .unwrap();
        let mut touched: Vec<u32> = batch
            .iter()
            .flat_map(|&r| {
                cols[row_ptr[r as usize] as usize..row_ptr[r as usize + 1] as usize].to_vec()
            })
            .collect();
        touched.sort_unstable();
        touched.dedup();
        writeln!(want, "{} {}", touched.len(), slot_checksum(&touched)).unwrap();
        for s in touched {
            writeln!(want, "{s}").unwrap();
        }
    }
    check_on_host(&body, &want);
}

/// `kernels/lda_rows.cuh` on an emulated grid (2 blocks of 64 threads: 4 warps for more rows,
/// so the grid-stride loop turns) against the host's `unpack_rows`, for counts and for f32
/// values, with empty rows, an odd entry count and a hand-made topic past K.
#[test]
fn the_device_lda_row_scatter_is_the_hosts() {
    use ps_apps::lda::packed::{pack_rows, unpack_rows, Packed, Values};
    let mut rng = ChaCha8Rng::seed_from_u64(0x4C44_4131);
    let mut body = String::new();
    let mut want = String::new();
    let k = 70usize;
    let mut cases: Vec<(Vec<u32>, Packed)> = Vec::new();
    for f32_run in [false, true] {
        let rows = 11;
        let mut v = vec![0f32; rows * k];
        for (i, x) in v.iter_mut().enumerate() {
            if i / k != 4 && rng.gen_bool(0.1) {
                *x = f32::from(rng.gen_range(1u16..=65_535));
            }
        }
        if f32_run {
            v[5] = -0.0;
            v[k + 3] = 0.375;
        }
        let mut image = Vec::new();
        let shape = pack_rows(&v, k, &mut image).expect("sparse enough");
        assert_eq!(shape.values == Values::F32, f32_run);
        cases.push((image, shape));
    }
    // Topic 200 >= K in the last entry of a 3-entry run (an odd count: a lone last half).
    cases.push((
        vec![1, 3, 2 | (9 << 16), 200, 7 | (8 << 16), 9],
        Packed {
            rows: 2,
            entries: 3,
            values: Values::U16,
        },
    ));
    for (c, (image, shape)) in cases.iter().enumerate() {
        let list: Vec<String> = image.iter().map(|x| format!("{x}u")).collect();
        let n = shape.rows * k;
        writeln!(
            body,
            "{{ unsigned int image{c}[] = {{{}}}; static float dst{c}[{n}]; {} \
             for (int i = 0; i < {n}; ++i) {{ unsigned int b; __builtin_memcpy(&b, &dst{c}[i], 4); \
             printf(\"%u\\n\", b); }} }}",
            list.join(", "),
            host_cxx::on_grid(
                2,
                64,
                &format!(
                    "lda_rows_scatter(image{c}, {}u, {}u, {}u, {k}u, dst{c})",
                    shape.rows,
                    shape.entries,
                    u32::from(shape.values == Values::F32),
                )
            ),
        )
        .unwrap();
        let mut dst = vec![0f32; n];
        unpack_rows(image, *shape, k, &mut dst);
        for x in dst {
            writeln!(want, "{}", x.to_bits()).unwrap();
        }
    }
    check_on_host(&body, &want);
}

/// `kernels/lda_rows.cuh`'s five delta passes on an emulated grid (2 blocks of 3 threads, so
/// each thread takes several rows; 600 rows, so three chunks, the last short) against the
/// host's `pack_delta`, word for word: small changes (i16), one wide change (i32), an odd and an
/// even entry count, and nothing moved.
#[test]
fn the_device_lda_delta_packing_is_the_hosts() {
    use ps_apps::lda::packed::{pack_delta, Values};
    let mut rng = ChaCha8Rng::seed_from_u64(0x4C44_4132);
    let (rows, k) = (600usize, 12usize);
    let mut cases: Vec<Vec<i32>> = Vec::new();
    for (p, wide) in [(0.1, false), (0.1, true), (0.0, false)] {
        let mut cells: Vec<i32> = (0..rows * k)
            .map(|_| {
                if rng.gen_bool(p) {
                    rng.gen_range(-5..=5)
                } else {
                    0
                }
            })
            .collect();
        cells[7] = -32_767;
        if wide {
            cells[3 * k + 1] = -32_768;
        }
        if p == 0.0 {
            cells[7] = 0;
        }
        cases.push(cells);
    }
    // Make the first case's entry count odd and the second's even.
    for (c, want_odd) in [(0usize, true), (1, false)] {
        let n = cases[c].iter().filter(|&&x| x != 0).count();
        if (n % 2 == 1) != want_odd {
            let free = (0..rows * k).rev().find(|&i| cases[c][i] == 0).unwrap();
            cases[c][free] = 2;
        }
    }
    let mut body = String::new();
    let mut want = String::new();
    let cap = rows * k;
    let words = rows + cap.div_ceil(2) + cap;
    let chunks = rows.div_ceil(256);
    for (c, cells) in cases.iter().enumerate() {
        let list: Vec<String> = cells.iter().map(|x| format!("{x}")).collect();
        let grid = |call: &str| host_cxx::on_grid(2, 3, call);
        writeln!(
            body,
            "{{ int cells{c}[] = {{{}}}; static unsigned int image{c}[{words}]; \
             unsigned int meta{c}[2 + {chunks}]; \
             for (int i = 0; i < {words}; ++i) image{c}[i] = 0xdeadbeefu; {} {} {} {} {} \
             unsigned int n = meta{c}[0], wide = meta{c}[1]; \
             unsigned int len = {rows}u + (n + 1u) / 2u + (wide ? n : (n + 1u) / 2u); \
             printf(\"%u %u\\n\", n, wide); \
             for (unsigned int i = 0; i < len; ++i) printf(\"%u\\n\", image{c}[i]); }}",
            list.join(", "),
            grid(&format!(
                "lda_delta_count_rows(cells{c}, {rows}u, {k}u, image{c})"
            )),
            grid(&format!("lda_delta_chunk_rows(image{c}, {rows}u, meta{c})")),
            grid(&format!(
                "lda_delta_scan_rows(image{c}, {rows}u, {cap}u, meta{c})"
            )),
            grid(&format!(
                "lda_delta_write_rows(cells{c}, {rows}u, {k}u, image{c}, meta{c}, {cap}u)"
            )),
            grid(&format!(
                "lda_delta_ends_rows(image{c}, {rows}u, meta{c}, {cap}u)"
            )),
        )
        .unwrap();
        let mut image = Vec::new();
        let shape = pack_delta(cells, k, &mut image);
        assert_eq!(shape.values == Values::I32, c == 1, "case {c}");
        writeln!(
            want,
            "{} {}",
            shape.entries,
            u32::from(shape.values == Values::I32)
        )
        .unwrap();
        for w in image {
            writeln!(want, "{w}").unwrap();
        }
    }
    check_on_host(&body, &want);
}

/// The delta passes at the edge of their capacity (an odd entry count exactly at it: the same
/// image as the host's; one short of it: nothing written past the ends, and the count reported
/// so the host can refuse), and the row scatter at the widest K (topic 65,535).
#[test]
fn the_device_lda_packing_at_its_limits() {
    use ps_apps::lda::packed::{pack_delta, pack_rows, unpack_rows, Values};
    let (rows, k) = (5usize, 7usize);
    let mut cells = vec![0i32; rows * k];
    for (i, c) in [(0, 1), (3, -2), (9, 3), (20, 4), (34, -5)] {
        cells[i] = c;
    }
    let mut image = Vec::new();
    let shape = pack_delta(&cells, k, &mut image);
    assert_eq!((shape.entries, shape.values), (5, Values::I16));
    let words = rows + shape.entries.div_ceil(2) * 2;
    let list: Vec<String> = cells.iter().map(|x| format!("{x}")).collect();
    let mut body = String::new();
    let mut want = String::new();
    for cap in [shape.entries, shape.entries - 1] {
        let grid = |call: &str| host_cxx::on_grid(1, 2, call);
        writeln!(
            body,
            "{{ int cells[] = {{{}}}; unsigned int image[{words}]; unsigned int meta[3]; \
             for (int i = 0; i < {words}; ++i) image[i] = 0xdeadbeefu; {} {} {} {} {} \
             printf(\"%u %u\\n\", meta[0], meta[1]); \
             for (int i = {rows}; i < {words}; ++i) printf(\"%u\\n\", image[i]); }}",
            list.join(", "),
            grid(&format!(
                "lda_delta_count_rows(cells, {rows}u, {k}u, image)"
            )),
            grid(&format!("lda_delta_chunk_rows(image, {rows}u, meta)")),
            grid(&format!(
                "lda_delta_scan_rows(image, {rows}u, {cap}u, meta)"
            )),
            grid(&format!(
                "lda_delta_write_rows(cells, {rows}u, {k}u, image, meta, {cap}u)"
            )),
            grid(&format!(
                "lda_delta_ends_rows(image, {rows}u, meta, {cap}u)"
            )),
        )
        .unwrap();
        writeln!(want, "5 0").unwrap();
        for &w in &image[rows..words] {
            let expect = if cap == shape.entries { w } else { 0xdead_beef };
            writeln!(want, "{expect}").unwrap();
        }
    }
    // Rows at K 65,536: topic 65,535 (the largest u16) and topic 0, as counts.
    let k = 1usize << 16;
    let mut v = vec![0f32; 2 * k];
    v[k - 1] = 3.0;
    v[k] = 65_535.0;
    let shape = pack_rows(&v, k, &mut image).expect("sparse");
    assert_eq!((shape.entries, shape.values), (2, Values::U16));
    let list: Vec<String> = image.iter().map(|x| format!("{x}u")).collect();
    writeln!(
        body,
        "{{ unsigned int image[] = {{{}}}; static float dst[{}]; {} \
         for (int i = 0; i < {}; ++i) if (dst[i] != 0.0f) printf(\"%d %g\\n\", i, dst[i]); }}",
        list.join(", "),
        2 * k,
        host_cxx::on_grid(
            1,
            64,
            &format!("lda_rows_scatter(image, 2u, 2u, 0u, {k}u, dst)")
        ),
        2 * k,
    )
    .unwrap();
    let mut back = vec![0f32; 2 * k];
    unpack_rows(&image, shape, k, &mut back);
    for (i, x) in back.iter().enumerate().filter(|(_, x)| **x != 0.0) {
        writeln!(want, "{i} {x}").unwrap();
    }
    check_on_host(&body, &want);
}

/// C++ that runs random blocks of MF ratings both ways, `mf_block_window<float, W>` and
/// `mf_step` one rating after another, on copies of the same tables, and prints each way's
/// mismatches (tables and squared errors compared bit for bit), then `ok` with the count of
/// blocks and how many ratings took a row handed over rather than loaded.
const MF_WINDOW_CASES: &str = r#"
unsigned long long state = 0x4d465749ull;
auto next = [&](unsigned int n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned int)(state >> 33) % n;
};
unsigned int blocks = 0, handed = 0;
for (int trial = 0; trial < 3000; ++trial) {
    mf_landing = trial % 3;
    // Plain rows of whole 16-byte pieces, as the window takes them (mf_window_fits).
    const unsigned int nu = 1 + next(6), ni = 1 + next(6), n = next(41), lo = next(3);
    const unsigned int rank = 4 * (1 + next(2)), width = rank;
    unsigned int ru[48], ri[48];
    float rv[48], users[6 * 8], items[6 * 8];
    for (unsigned int r = 0; r < lo + n; ++r) {
        ru[r] = next(nu);
        ri[r] = next(ni);
        rv[r] = (float)next(2001) / 1000.0f - 1.0f;
    }
    for (unsigned int k = 0; k < 6 * 8; ++k) {
        users[k] = (float)next(1001) / 1000.0f - 0.5f;
        items[k] = (float)next(1001) / 1000.0f - 0.5f;
    }
    for (unsigned int r = lo + 1; r < lo + n; ++r) {
        for (unsigned int o = (r >= lo + 3 ? r - 3 : lo); o < r; ++o) {
            if (ru[o] == ru[r] || ri[o] == ri[r]) { ++handed; break; }
        }
    }
    float su[6 * 8], si[6 * 8];
    std::memcpy(su, users, sizeof su);
    std::memcpy(si, items, sizeof si);
    double seq = 0.0;
    for (unsigned int r = lo; r < lo + n; ++r) {
        seq += mf_step<true>(su + ru[r] * width, si + ri[r] * width, rv[r], 0, rank, 0, 0.0f,
                             0.05f, 0.02f);
    }
    for (int w = 0; w < 3; ++w) {
        float wu[6 * 8], wi[6 * 8], slab[4 * 2 * MF_SLOT_ROW];
        std::memcpy(wu, users, sizeof wu);
        std::memcpy(wi, items, sizeof wi);
        for (unsigned int k = 0; k < 4 * 2 * MF_SLOT_ROW; ++k) slab[k] = 1e30f;
        double win = w == 0 ? mf_block_window<float, 2>(ru, ri, rv, lo, lo + n, wu, wi, slab, 0,
                                                         rank, width, 0.05f, 0.02f)
                   : w == 1 ? mf_block_window<float, 3>(ru, ri, rv, lo, lo + n, wu, wi, slab, 0,
                                                         rank, width, 0.05f, 0.02f)
                            : mf_block_window<float, 4>(ru, ri, rv, lo, lo + n, wu, wi, slab, 0,
                                                         rank, width, 0.05f, 0.02f);
        // Every copy issued was waited for (none left to land in the next block's slots).
        if (std::memcmp(wu, su, sizeof wu) != 0 || std::memcmp(wi, si, sizeof wi) != 0
            || win != seq || mf_pending_n != 0) {
            printf("mismatch: trial %d, window %d, %u ratings\n", trial, w + 2, n);
        }
        ++blocks;
    }
}
printf("ok %u %u\n", blocks, handed);
"#;

#[test]
fn the_device_mf_window_steps_the_ratings_in_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = host_cxx::run_on_host(dir.path(), &headers(), MF_WINDOW_CASES) else {
        return;
    };
    let counts = host_cxx::ok_counts(
        &got,
        "the window gave other tables than the ratings one after another",
    );
    assert_eq!(counts.len(), 2, "{got}");
    // Blocks of up to 40 ratings on at most 6 users and 6 items: most ratings share a row with
    // one of the three before them; every window size ran every block.
    assert_eq!(counts[0], 9_000, "{got}");
    assert!(counts[1] > 10_000, "rows handed over: {}", counts[1]);
}
