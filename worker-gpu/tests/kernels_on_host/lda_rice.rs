//! `kernels/lda_rows.cuh`'s `lda_rows_scatter_rice`, never run on a GPU, on an emulated grid (2
//! blocks of 64 threads, a thread per row, so the grid-stride loop turns) against the run it was
//! packed from (`ps_apps::lda::packed::rice::pack_rice_rows`), bit for bit: counts in 8 and 16
//! bits, chunks of f32 values (-0.0, NaN, fractions), empty rows, short last chunks, K from 1 to
//! 65,536 (row lengths as u32), gaps coded as hundreds of one-bits; and, read with a K smaller than it was packed with, every topic past K skipped as the
//! host's `unpack_rice_rows` skips it.

use crate::host_cxx::{self, array, bits};

use std::fmt::Write as _;

use ps_apps::lda::packed::rice::{pack_rice_rows, unpack_rice_rows};
use ps_proto::SparseRowsBuf;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn headers() -> String {
    format!(
        "{}\n{}",
        host_cxx::ONE_THREAD,
        include_str!("../../../kernels/lda_rows.cuh")
    )
}

#[test]
fn the_device_rice_row_scatter_is_the_hosts() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x51CE_2025);
    let (mut body, mut want) = (String::new(), String::new());
    let odd = [-0.0f32, f32::NAN, 0.375, 1e30];
    let mut runs: Vec<(usize, usize, Vec<f32>)> = Vec::new();
    for case in 0..24usize {
        let k = [1usize, 7, 64, 1000][case % 4];
        // 300 rows: more than the grid's 128 threads, so its loop turns.
        let rows = [1usize, 31, 33, 300][(case / 4) % 4];
        let top = [255u32, 65_535, 255][case % 3];
        let mut dense = vec![0f32; rows * k];
        for (i, x) in dense.iter_mut().enumerate() {
            if (i / k) % 5 != 2 && rng.gen_bool(if k > 60 { 0.05 } else { 0.4 }) {
                *x = rng.gen_range(1..=top) as f32;
            }
        }
        if case % 6 == 5 {
            dense[rows * k / 2] = odd[case % odd.len()];
        }
        runs.push((k, rows, dense));
    }
    // Rows of topics 0..200 and K - 1: a Rice parameter of 0, so the last gap is a run of
    // hundreds of one-bits (more than a 32-bit read).
    let k = 1000;
    let mut long = vec![0f32; 3 * k];
    for r in 0..3 {
        long[r * k..r * k + 200].fill(3.0);
        long[r * k + k - 1] = 7.0;
    }
    runs.push((k, 3, long));
    // K 65,536 with every third topic: rows of 65,536 bits or more, lengths as u32.
    let k = ps_apps::lda::packed::MAX_PACKED_TOPICS;
    let mut wide = vec![0f32; 2 * k];
    (0..k).step_by(3).for_each(|t| wide[t] = 1.0);
    runs.push((k, 2, wide));
    let mut wide_seen = false;
    for (case, (k, rows, dense)) in runs.into_iter().enumerate() {
        let mut buf = SparseRowsBuf::default();
        buf.clear(k);
        dense.chunks_exact(k).for_each(|r| buf.push_dense(r));
        let mut image = Vec::new();
        let Some(shape) = pack_rice_rows(buf.view(), k, &mut image) else {
            continue;
        };
        wide_seen |= shape.wide_lengths;
        // Every eighth case read as K - 1 wide rows where it can: the last topic is past K.
        let read_k = if case % 8 == 7 && k > 1 { k - 1 } else { k };
        let mut back = vec![0f32; rows * read_k];
        unpack_rice_rows(&image, shape, read_k, &mut back).expect("the host reads it");
        if read_k == k {
            assert!(bits(&back) == bits(&dense), "case {case}: the host half");
        }
        body += "{\n";
        body += &array("unsigned int", "image", &image);
        write!(
            body,
            "static float dst[{n}]; {}
            for (int i = 0; i < {n}; ++i) {{ unsigned int b; __builtin_memcpy(&b, &dst[i], 4);
            printf(\"%u\\n\", b); }}
            }}\n",
            host_cxx::on_grid(
                2,
                64,
                &format!(
                    "lda_rows_scatter_rice(image, {rows}u, {}u, {}u, {read_k}u, dst)",
                    u32::from(shape.wide_lengths),
                    shape.stream_words,
                )
            ),
            n = rows * read_k,
        )
        .unwrap();
        for b in bits(&back) {
            writeln!(want, "{b}").unwrap();
        }
    }
    assert!(wide_seen, "no case had u32 lengths");
    host_cxx::check_on_host(&headers(), &body, &want);
}
