//! `kernels/lda_rows.cuh`'s `lda_rows_scatter_rice`, never run on a GPU, on an emulated grid (2
//! blocks of 64 threads, a thread per row, so the grid-stride loop turns) against the run it was
//! packed from (`ps_apps::lda::packed::rice::pack_rice_rows`), bit for bit: counts in 8 and 16
//! bits, chunks of f32 values (-0.0, NaN, fractions), empty rows, short last chunks, K from 1 to
//! 1,000; and, read with a K smaller than it was packed with, every topic past K skipped as the
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
    for case in 0..24usize {
        let k = [1usize, 7, 64, 1000][case % 4];
        let rows = [1usize, 31, 33, 100][(case / 4) % 4];
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
        let mut buf = SparseRowsBuf::default();
        buf.clear(k);
        dense.chunks_exact(k).for_each(|r| buf.push_dense(r));
        let mut image = Vec::new();
        let Some(shape) = pack_rice_rows(buf.view(), k, &mut image) else {
            continue;
        };
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
    host_cxx::check_on_host(&headers(), &body, &want);
}
