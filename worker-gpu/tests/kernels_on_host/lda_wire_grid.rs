//! `kernels/lda_wire.cu`, never run on a GPU, on the CPU as whole kernels
//! (`host_cxx::BLOCKS_OF_WARPS`), launched as `CudaLdaResident`'s wire path launches them: the
//! packed delta of random sweeps (the image `ps_apps::lda::packed::pack_delta_entries` makes, as
//! the device's `lda_delta_*` passes do) becomes, block by block, the bytes
//! `ps_proto::codec::encode_exact_selection` makes of the same entries. Checked byte for byte,
//! over K from 1 to 1,000, densities that make every index layout win somewhere (list, dense,
//! Rice, runs), changes that need i8, i16 and f32, empty rows between touched ones, and several
//! grid shapes (grid-stride loops, several warps a block).

use crate::host_cxx::{self, array};

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use ps_apps::lda::packed::pack_delta_entries;
use ps_apps::lda::wire::{block_words, encode_on_host};
use ps_proto::push_plan::push_blocks;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn kernels() -> String {
    format!(
        "{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/sparse_index.cuh"),
        include_str!("../../../kernels/lda_wire.cu"),
    )
}

/// A random sweep's delta over `rows` local rows (global word `3 r + 1`) of K `k`.
fn delta(rng: &mut ChaCha8Rng, rows: u32, k: u32) -> Vec<(u32, u32, i32)> {
    let pattern = rng.gen_range(0..7);
    // Patterns 0-5 draw each cell with a density; 6 touches a run of topics a row.
    let density = [0.0, 0.001, 0.02, 0.3, 0.9, 1.0, 0.0][pattern];
    let big = [1, 3, 100, 300, 40_000][rng.gen_range(0..5)];
    let mut out = Vec::new();
    for r in 0..rows {
        // Some rows untouched, whatever the density.
        if rng.gen_bool(0.2) {
            continue;
        }
        let (lo, hi) = if pattern == 6 {
            let lo = rng.gen_range(0..k);
            (lo, rng.gen_range(lo..k) + 1)
        } else {
            (k, k)
        };
        for t in 0..k {
            let run = (lo..hi).contains(&t);
            if run || rng.gen_bool(density) || (t == k - 1 && rng.gen_bool(0.1)) {
                let mut c = rng.gen_range(1..=big);
                if rng.gen_bool(0.5) {
                    c = -c;
                }
                out.push((3 * r + 1, t, c));
            }
        }
    }
    out
}

#[test]
fn the_device_encodes_a_delta_as_the_worker_library_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x11da_771e);
    let grids = [(1u32, 32u32), (2, 64), (3, 96), (1, 128)];
    let (mut body, mut want) = (String::new(), String::new());
    let mut modes = BTreeSet::new();
    let mut formats = BTreeSet::new();
    for case in 0..48u32 {
        let k = [1u32, 3, 17, 64, 1000][case as usize % 5];
        // Many rows at small K: more bitmap words than a warp has lanes (the rank's stretches).
        let rows = if case == 5 || case == 16 {
            1500
        } else {
            [1u32, 6, 40, 150][rng.gen_range(0..4)]
        };
        let entries = delta(&mut rng, rows, k);
        if entries.is_empty() {
            continue;
        }
        let words: Vec<u32> = (0..rows).map(|r| 3 * r + 1).collect();
        let mut image = Vec::new();
        let shape = pack_delta_entries(&entries, &words, k as usize, &mut image).unwrap();
        // Frame blocks as the library cuts them: shards of the word range, a few rows a frame.
        let (nshards, per_frame) = (rng.gen_range(1..4u32), rng.gen_range(1..30usize));
        let nrows = u64::from(3 * rows + 1);
        let mut cut = |keys: &[u64]| -> Result<Vec<Range<usize>>, String> {
            Ok(push_blocks(keys, nrows, nshards, per_frame)
                .into_iter()
                .map(|b| b.rows)
                .collect())
        };
        let (keys, blocks) = encode_on_host(&entries, k, &mut cut).unwrap();
        let touched: Vec<u32> = keys.iter().map(|&w| (w as u32 - 1) / 3).collect();
        let ranges: Vec<Range<usize>> = blocks.iter().map(|b| b.rows.clone()).collect();
        let bw = block_words(&touched, &ranges).unwrap();
        for b in &blocks {
            modes.insert(b.payload[0]);
            formats.insert(b.wire_id);
            writeln!(
                want,
                "{case} {} {}",
                b.payload.len(),
                b.payload
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
            )
            .unwrap();
        }
        let (grid, block) = grids[case as usize % grids.len()];
        let nb = blocks.len();
        let words32 = (rows as usize).div_ceil(32);
        let wide = u32::from(shape.values == ps_apps::lda::packed::Values::I32);
        body += "{\n";
        body += &array("unsigned int", "image", &image);
        body += &array("unsigned int", "blocks", &bw);
        write!(
            body,
            "static unsigned int bitmap[{words32}], counts[{words32}], rank[{e}], plan[{p}];
            static unsigned long long at[{nb1}];
            run_grid({grid}u, {block}u, [&] {{ lda_wire_touched(image, {rows}u, bitmap, counts); }});
            run_grid(1u, 32u, [&] {{ lda_wire_rank(counts, {words32}u); }});
            run_grid({grid}u, {block}u, [&] {{ lda_wire_index(image, {rows}u, bitmap, counts, rank); }});
            run_grid({grid}u, {block}u, [&] {{
                lda_wire_plan(image, {rows}u, {e}u, {wide}u, {k}u, rank, blocks, {nb}u, plan); }});
            run_grid(1u, 32u, [&] {{ lda_wire_offsets(plan, {nb}u, at); }});
            std::vector<unsigned int> out((at[{nb}] + 3) / 4 + 1, 0u);
            run_grid({grid}u, {block}u, [&] {{
                lda_wire_write(image, {rows}u, {e}u, {wide}u, {k}u, rank, blocks, {nb}u, plan, at,
                               4ull * out.size(), out.data()); }});
            const unsigned char* bytes = (const unsigned char*)out.data();
            for (unsigned int b = 0; b < {nb}u; ++b) {{
                printf(\"{case} %u \", plan[b * 8]);
                for (unsigned int i = 0; i < plan[b * 8]; ++i) printf(\"%02x\", bytes[at[b] + i]);
                printf(\"\\n\");
            }}
            }}\n",
            e = shape.entries.max(1),
            p = 8 * nb,
            nb1 = nb + 1,
        )
        .unwrap();
    }
    // Every layout and every value format was chosen somewhere.
    assert_eq!(modes.len(), 4, "modes seen: {modes:?}");
    assert_eq!(formats.len(), 3, "formats seen: {formats:?}");
    host_cxx::check_on_host(&kernels(), &body, &want);
}
