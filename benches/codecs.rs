//! Delta-compression codecs: throughput of each stage on one core.
//! `cargo bench -p ps-benches --bench codecs [-- --seconds 1 --n 16777216]`
//!
//! Rates are of f32 *input* values (GB/s = input elements x 4 bytes / s). Sparse scatter-add is
//! in updates/s into a 64 MiB table at random indices, next to a dense f32 accumulate.

use ps_benches::{arg, record, run_for};
use ps_proto::codec::{
    self, apply_sparse_add, decode, decode_add, encode, read_varint, top_k, write_varint,
    CodecChain, ErrorFeedback,
};
use serde_json::json;
use std::hint::black_box;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal (sum of 4 uniforms), scale 1.
    fn normalish(&mut self) -> f32 {
        let x = self.next();
        let u = |s: u32| ((x >> s) & 0xFFFF) as f32 / 65536.0;
        (u(0) + u(16) + u(32) + u(48) - 2.0) * 1.7
    }
}

struct Row {
    op: String,
    elems: u64,
    secs: f64,
    bytes_out: Option<usize>,
    unit: &'static str,
}

fn main() {
    let secs: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n: usize = arg("--n").and_then(|s| s.parse().ok()).unwrap_or(1 << 24);
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let values: Vec<f32> = (0..n).map(|_| rng.normalish() * 1e-3).collect();
    let current: Vec<f32> = (0..n).map(|_| rng.normalish()).collect();
    println!(
        "codecs: {n} f32 values ({} MiB) per call, {secs} s per row, one thread",
        (n * 4) >> 20
    );
    let mut rows: Vec<Row> = Vec::new();
    let time = |rows: &mut Vec<Row>, op: &str, elems: u64, unit, bytes_out, f: &mut dyn FnMut()| {
        let (iters, el) = run_for(secs, 3, f);
        rows.push(Row {
            op: op.into(),
            elems: elems * iters,
            secs: el,
            bytes_out,
            unit,
        });
    };

    let mut acc = vec![0f32; n];
    // Dense formats: encode, decode, both.
    for s in ["raw", "f16", "bf16"] {
        let chain: CodecChain = s.parse().unwrap();
        let mut out = Vec::with_capacity(n * 4 + 16);
        encode(&chain, &values, None, &mut out).unwrap();
        let len = out.len();
        time(
            &mut rows,
            &format!("{s} encode"),
            n as u64,
            "elem",
            Some(len),
            &mut || {
                out.clear();
                encode(&chain, &values, None, &mut out).unwrap();
            },
        );
        time(
            &mut rows,
            &format!("{s} decode (new Vec)"),
            n as u64,
            "elem",
            None,
            &mut || {
                black_box(decode(chain.wire_id(), &out, n).unwrap());
            },
        );
        time(
            &mut rows,
            &format!("{s} decode_add"),
            n as u64,
            "elem",
            None,
            &mut || {
                decode_add(chain.wire_id(), &out, &mut acc).unwrap();
            },
        );
        time(
            &mut rows,
            &format!("{s} encode+decode_add"),
            n as u64,
            "elem",
            Some(len),
            &mut || {
                out.clear();
                encode(&chain, &values, None, &mut out).unwrap();
                decode_add(chain.wire_id(), &out, &mut acc).unwrap();
            },
        );
    }

    // Sampled top-k at 1%.
    let k = codec::k_of_fraction(0.01, n);
    let sel = top_k(&values, k);
    assert_eq!(sel.len(), k);
    time(
        &mut rows,
        "top-k 1% select",
        n as u64,
        "elem",
        None,
        &mut || {
            black_box(top_k(&values, k));
        },
    );
    for s in [
        "topk:0.01,f16",
        "topk:0.01",
        "filter:0.01",
        "filter:0.01,topk:0.01,f16",
    ] {
        let chain: CodecChain = s.parse().unwrap();
        let mut out = Vec::new();
        let sent = encode(&chain, &values, Some(&current), &mut out).unwrap();
        let len = out.len();
        time(
            &mut rows,
            &format!("{s} encode (sent {sent})"),
            n as u64,
            "elem",
            Some(len),
            &mut || {
                out.clear();
                encode(&chain, &values, Some(&current), &mut out).unwrap();
            },
        );
        time(
            &mut rows,
            &format!("{s} decode_add"),
            n as u64,
            "elem",
            None,
            &mut || {
                decode_add(chain.wire_id(), &out, &mut acc).unwrap();
            },
        );
    }
    black_box(&acc);
    let chain: CodecChain = "topk:0.01,f16".parse().unwrap();
    let mut ef = ErrorFeedback::new(n);
    let mut out = Vec::new();
    time(
        &mut rows,
        "error feedback topk:0.01,f16",
        n as u64,
        "elem",
        None,
        &mut || {
            out.clear();
            ef.compress(&chain, &values, None, &mut out).unwrap();
        },
    );

    // Varint index coding: the 1% selection's gaps.
    let mut buf = Vec::new();
    time(
        &mut rows,
        "varint encode (1% gaps)",
        k as u64,
        "index",
        None,
        &mut || {
            buf.clear();
            let mut prev = 0u32;
            for &i in &sel {
                write_varint((i - prev) as u64, &mut buf);
                prev = i;
            }
        },
    );
    let index_bytes = buf.len();
    let mut idx = vec![0u32; k];
    time(
        &mut rows,
        "varint decode (1% gaps)",
        k as u64,
        "index",
        Some(index_bytes),
        &mut || {
            let mut pos = 0;
            let mut prev = 0u64;
            for o in idx.iter_mut() {
                prev += read_varint(&buf, &mut pos).unwrap();
                *o = prev as u32;
            }
        },
    );
    assert_eq!(idx, sel);

    // Shard side: sparse scatter-add into a 64 MiB table vs dense accumulate.
    let table_len = 16 << 20;
    let mut table = vec![0f32; table_len];
    let updates = 1 << 20;
    let rand_idx: Vec<u32> = (0..updates)
        .map(|_| (rng.next() % table_len as u64) as u32)
        .collect();
    let upd: Vec<f32> = values[..updates].to_vec();
    time(
        &mut rows,
        "apply_sparse_add (random, 64 MiB)",
        updates as u64,
        "update",
        None,
        &mut || {
            apply_sparse_add(&mut table, &rand_idx, &upd).unwrap();
        },
    );
    let mut sorted_idx = rand_idx.clone();
    sorted_idx.sort_unstable();
    time(
        &mut rows,
        "apply_sparse_add (sorted, 64 MiB)",
        updates as u64,
        "update",
        None,
        &mut || {
            apply_sparse_add(&mut table, &sorted_idx, &upd).unwrap();
        },
    );
    let src: Vec<f32> = values[..table_len.min(n)].to_vec();
    time(
        &mut rows,
        "dense accumulate (64 MiB)",
        src.len() as u64,
        "param",
        None,
        &mut || {
            for (d, s) in table.iter_mut().zip(&src) {
                *d += *s;
            }
        },
    );
    black_box(&table);

    println!(
        "\n{:<44} {:>12} {:>10} {:>12}",
        "op", "G units/s", "GB/s in", "bytes out"
    );
    for r in &rows {
        let rate = r.elems as f64 / r.secs;
        let gbs = if r.unit == "elem" || r.unit == "param" {
            format!("{:.2}", rate * 4.0 / 1e9)
        } else {
            "-".into()
        };
        let out = r.bytes_out.map_or("-".into(), |b| b.to_string());
        let rate_s = if r.unit == "update" || r.unit == "index" {
            format!("{:.1} M {}/s", rate / 1e6, r.unit)
        } else {
            format!("{:.3}", rate / 1e9)
        };
        println!("{:<44} {:>12} {:>10} {:>12}", r.op, rate_s, gbs, out);
    }
    println!();
    for r in &rows {
        let rate = r.elems as f64 / r.secs;
        record(
            "codecs",
            json!({
                "bench": "codecs",
                "op": r.op,
                "unit": r.unit,
                "n": n,
                "per_s": rate,
                "gb_per_s_f32_in": if r.unit == "elem" || r.unit == "param" { Some(rate * 4.0 / 1e9) } else { None },
                "bytes_out": r.bytes_out,
            }),
        );
    }
}
