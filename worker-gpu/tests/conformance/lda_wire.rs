//! The resident CUDA LDA engine's delta encoded on the device (`LdaResident::sweep_wire`,
//! `kernels/lda_wire.cu`) against its oracle `HostLdaResident`, which encodes the same sweep's
//! entries with `ps_proto`: the same touched words, the same payloads byte for byte, block by
//! block, the same totals, and the same bytes counted each way. At K 40 (dense-ish rows) and
//! K 1,000 (a few entries a row), over two clocks, with frames cut as a two-shard library cuts
//! them. A cut that does not cover the touched words is a typed error.

use std::ops::Range;

use ps_apps::lda::wire::Cut;
use ps_apps::lda::{CpuLda, HostLdaResident, LdaResident, LdaWorkerState};
use ps_proto::push_plan::push_blocks;
use worker_gpu::cuda::lda_resident::CudaLdaResident;

use crate::common::{draws_agree, seed};
use crate::lda_resident::{job, key, load};

#[test]
fn the_device_s_wire_delta_is_the_oracle_s() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_wire") else {
        return;
    };
    let s = seed("lda_wire");
    for topics in [40u32, 1000] {
        let (states, mut table, mut totals, hyper) = job(s, topics, 200, 300);
        let state = &states[0];
        let mut dev = CudaLdaResident::sequential(gpu.clone()).expect("engine");
        let mut host = HostLdaResident::new(Box::new(CpuLda::new()));
        dev.setup(state, &hyper).expect("setup");
        host.setup(state, &hyper).expect("setup");
        let vocab = table.len() as u64 / u64::from(topics);
        let mut cut = |keys: &[u64]| -> Result<Vec<Range<usize>>, String> {
            Ok(push_blocks(keys, vocab, 2, 13)
                .into_iter()
                .map(|b| b.rows)
                .collect())
        };
        for clock in 1..=2 {
            let ctx = format!("K {topics} clock {clock}");
            load(&mut dev, state, &table, &totals);
            load(&mut host, state, &table, &totals);
            let got = dev
                .sweep_wire(key(s, 0, clock), &mut cut)
                .expect("sweep_wire");
            let want = host
                .sweep_wire(key(s, 0, clock), &mut cut)
                .expect("sweep_wire");
            let (mut sg, mut sc): (LdaWorkerState, LdaWorkerState) = (state.clone(), state.clone());
            dev.download_state(&mut sg).expect("download");
            host.download_state(&mut sc).expect("download");
            if !draws_agree(&ctx, &sg.z, &sc.z) {
                eprintln!("{ctx}: a CDF-rounding tie: the chains diverge, stopping");
                break;
            }
            assert!(got.blocks.len() > 2, "{ctx}: {} blocks", got.blocks.len());
            assert_eq!(got, want, "{ctx}: the wire delta");
            let (tg, th) = (dev.traffic(), host.traffic());
            assert_eq!(
                (tg.h2d_bytes, tg.d2h_bytes),
                (th.h2d_bytes, th.d2h_bytes),
                "{ctx}: the oracle counts the device's bytes"
            );
            // The server adds what was sent.
            for b in &want.blocks {
                let n = b.rows.len() * topics as usize;
                let rows = ps_proto::codec::decode(b.wire_id, &b.payload, n)
                    .and_then(|d| d.into_dense(n))
                    .expect("decodes");
                for (i, &w) in want.keys[b.rows.clone()].iter().enumerate() {
                    let k = topics as usize;
                    let dst = &mut table[w as usize * k..(w as usize + 1) * k];
                    dst.iter_mut()
                        .zip(&rows[i * k..(i + 1) * k])
                        .for_each(|(d, v)| *d += v);
                }
            }
            totals
                .iter_mut()
                .zip(&want.totals)
                .for_each(|(t, &c)| *t += c as f32);
        }
        // A cut that leaves touched words out: a typed error, not a panic.
        load(&mut dev, state, &table, &totals);
        let mut short: Box<Cut<'_>> =
            Box::new(|keys: &[u64]| Ok(std::iter::once(0..keys.len() / 2).collect()));
        assert!(dev.sweep_wire(key(s, 0, 9), &mut short).is_err());
    }
}
