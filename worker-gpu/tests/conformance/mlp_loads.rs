//! How the read model crosses to the resident CUDA MLP engine: a model of f16 or bf16 values (an
//! `f16` or `bf16` pull codec's rows) in 16 bits, a model of codes (a `q8`, `q4`, `q2` or `sign`
//! pull codec's) as codes, each widened exactly on the device, and the clocks run on it the
//! same as on the model crossed as f32 (bit for bit against a second engine, or against the
//! CPU oracle, which counts the same bytes); the seeded initial model, made on the device, does
//! not cross.

use ps_apps::app::device_codec::{level_image, DeviceChain};
use ps_apps::mlp::{Arch, CpuMlp, HostMlpResident, MlpResident};
use ps_proto::codec::ValueFormat;
use std::sync::Arc;

use worker_gpu::cuda::mlp_resident::CudaMlpResident;

use crate::common::{rel_err, seed};
use crate::mlp_resident::{data, load, order, two_shard_blocks};

/// A model loaded whole in f16 values (an `f16` pull codec's rows) crosses as f16, 2 bytes a
/// value, and widens exactly (`codec_f16_to_f32`): over several uses, against an engine whose
/// same model always crosses as f32 (one value loaded first as f32 each time), the clocks and
/// deltas are bit for bit the same: whole f16 loads (with -0.0 and an f16 subnormal), a partial
/// load (f32 then), whole f16 loads again, with the engine's own top-k residual added on top
/// of an f16 model, and a whole load of bf16 values (`codec_bf16_to_f32`).
#[test]
fn a_model_of_f16_values_crosses_as_f16_and_trains_the_same() {
    let Some(gpu) =
        worker_gpu::gpu_or_skip("a_model_of_f16_values_crosses_as_f16_and_trains_the_same")
    else {
        return;
    };
    let (train, test) = data(seed("resident f16 loads"));
    let arch = Arch::new(train.d, &[64], train.classes);
    let params = arch.num_params() as u64;
    let f16_model = |seed: u64| -> Vec<Vec<f32>> {
        let mut m: Vec<Vec<f32>> = arch
            .init_params(seed)
            .into_iter()
            .map(|l| l.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect())
            .collect();
        m[0][1] = -0.0;
        m[0][2] = 2f32.powi(-20);
        m
    };
    // bf16 values (the high halves), one past f16's range: they cross as bf16.
    let bf16_model = |seed: u64| -> Vec<Vec<f32>> {
        let mut m: Vec<Vec<f32>> = arch
            .init_params(seed)
            .into_iter()
            .map(|l| {
                l.iter()
                    .map(|&v| f32::from_bits(v.to_bits() & 0xffff_0000))
                    .collect()
            })
            .collect();
        m[0][3] = 65536.0;
        m
    };
    let mut halves = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
    let mut whole = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
    halves.setup(&arch, &train, &test).expect("setup");
    whole.setup(&arch, &train, &test).expect("setup");
    let w = arch.layer(0).width();
    let bits = |m: &[Vec<f32>]| -> Vec<u32> { m.iter().flatten().map(|v| v.to_bits()).collect() };
    let blocks = two_shard_blocks(&arch, 0.05);
    // (model, whole load or layer 0 only, bytes a value the f16 engine copies)
    let rounds = [
        (f16_model(7), true, 2),
        (f16_model(8), false, 4),
        (f16_model(9), true, 2),
        (f16_model(10), true, 2),
        (bf16_model(11), true, 2),
    ];
    for (r, (model, all, per_value)) in rounds.iter().enumerate() {
        if *all {
            load(&mut halves, &arch, model);
            let mut odd = model[0][..w].to_vec();
            odd[0] = 0.1;
            whole.load(0, 0, &odd).expect("load");
            load(&mut whole, &arch, model);
        } else {
            halves.load(0, 0, &model[0]).expect("load");
            whole.load(0, 0, &model[0]).expect("load");
        }
        let (h0, w0) = (halves.traffic(), whole.traffic());
        let o = order(train.n, r as u32);
        let a = halves.run_clock(&o, 32, 0.1).expect("run_clock");
        let b = whole.run_clock(&o, 32, 0.1).expect("run_clock");
        let order_bytes = 4 * o.len() as u64;
        assert_eq!(
            halves.traffic().h2d_bytes - h0.h2d_bytes,
            per_value * params + order_bytes,
            "round {r}: the f16 engine's bytes in"
        );
        assert_eq!(
            whole.traffic().h2d_bytes - w0.h2d_bytes,
            4 * params + order_bytes,
            "round {r}: the f32 engine's bytes in"
        );
        assert_eq!(
            a.loss_sum.to_bits(),
            b.loss_sum.to_bits(),
            "round {r}: loss"
        );
        if r == 2 {
            // Each keeps a top-k residual, added to the next (f16) model on the device.
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            let chain = DeviceChain::TopK(ValueFormat::Sign);
            halves
                .delta_encoded(1.0, chain, &blocks, &mut pa)
                .expect("encoded");
            whole
                .delta_encoded(1.0, chain, &blocks, &mut pb)
                .expect("encoded");
            assert!(pa == pb, "round {r}: payloads");
        } else {
            let (mut da, mut db) = (arch.zeros(), arch.zeros());
            halves.delta(1.0, &mut da).expect("delta");
            whole.delta(1.0, &mut db).expect("delta");
            assert_eq!(bits(&da), bits(&db), "round {r}: deltas");
        }
    }
}

/// A model whose layers came as `q8` (or `sign`) pull replies crosses as its codes
/// (`level_image`: its bytes, not 4 a value) and widens exactly (`codec_levels_to_f32`): the
/// device's held-out figures, a clock's totals and its delta agree with the CPU oracle's as the
/// f32 comparisons do, and the oracle counts the same bytes in.
#[test]
fn a_model_of_codes_crosses_as_codes_and_matches_the_oracle() {
    let Some(gpu) =
        worker_gpu::gpu_or_skip("a_model_of_codes_crosses_as_codes_and_matches_the_oracle")
    else {
        return;
    };
    let (train, test) = data(seed("resident code loads"));
    let arch = Arch::new(train.d, &[], train.classes);
    let params = arch.num_params();
    for format in [ValueFormat::Q8, ValueFormat::Sign] {
        let model: Vec<Vec<f32>> = arch
            .init_params(5)
            .iter()
            .map(|l| format.round_trip(l))
            .collect();
        let image = level_image(&model.concat()).expect("an image");
        // Fewer bytes than 16-bit values would take.
        assert!(
            image.bytes() < 2 * params,
            "{format:?}: {} bytes",
            image.bytes()
        );
        let mut dev = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
        let mut host = HostMlpResident::new(Box::new(CpuMlp));
        dev.setup(&arch, &train, &test).expect("setup");
        host.setup(&arch, &train, &test).expect("setup");
        let (d0, h0) = (dev.traffic(), host.traffic());
        load(&mut dev, &arch, &model);
        load(&mut host, &arch, &model);
        let (ed, eh) = (
            dev.evaluate().expect("eval"),
            host.evaluate().expect("eval"),
        );
        assert_eq!(
            dev.traffic().since(&d0).h2d_bytes,
            image.bytes() as u64,
            "{format:?}: the model crosses as its codes"
        );
        assert_eq!(
            host.traffic().since(&h0).h2d_bytes,
            image.bytes() as u64,
            "{format:?}: the oracle counts them"
        );
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        assert!(
            rel(ed.loss_sum, eh.loss_sum) < 1e-4,
            "{format:?}: held-out loss"
        );
        let o = order(train.n, 0);
        let (td, th) = (
            dev.run_clock(&o, 32, 0.1).expect("clock"),
            host.run_clock(&o, 32, 0.1).expect("clock"),
        );
        assert!(
            rel(td.loss_sum, th.loss_sum) < 1e-4,
            "{format:?}: train loss"
        );
        let (mut dd, mut dh) = (arch.zeros(), arch.zeros());
        dev.delta(1.0, &mut dd).expect("delta");
        host.delta(1.0, &mut dh).expect("delta");
        let e = rel_err(&dd.concat(), &dh.concat());
        assert!(e < 1e-4, "{format:?}: delta rel_err {e:.2e}");
    }
}

/// The seeded initial model is made on the device (`mlp_init_glorot`) and does not cross: a
/// clock from it gives bit for bit the totals and delta of a second engine that loaded
/// `init_params(seed)` as f32 rows (so every value the kernel made is the host's), and the CPU
/// oracle counts the same bytes in as the device copies (none for the model).
#[test]
fn the_initial_model_is_made_on_the_device_bit_for_bit() {
    let Some(gpu) = worker_gpu::gpu_or_skip("the_initial_model_is_made_on_the_device_bit_for_bit")
    else {
        return;
    };
    let (train, test) = data(seed("resident initial model"));
    let arch = Arch::new(train.d, &[64, 32], train.classes);
    let mut made = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
    let mut loaded = CudaMlpResident::new(Arc::clone(&gpu)).expect("engine");
    let mut host = HostMlpResident::new(Box::new(CpuMlp));
    made.setup(&arch, &train, &test).expect("setup");
    loaded.setup(&arch, &train, &test).expect("setup");
    host.setup(&arch, &train, &test).expect("setup");
    let bits = |m: &[Vec<f32>]| -> Vec<u32> { m.iter().flatten().map(|v| v.to_bits()).collect() };
    for (round, seed) in [3u64, 0x004D_4C50].into_iter().enumerate() {
        let (m0, h0) = (made.traffic(), host.traffic());
        made.load_initial(seed).expect("initial");
        host.load_initial(seed).expect("initial");
        load(&mut loaded, &arch, &arch.init_params(seed));
        let o = order(train.n, round as u32);
        let (a, b) = (
            made.run_clock(&o, 32, 0.1).expect("clock"),
            loaded.run_clock(&o, 32, 0.1).expect("clock"),
        );
        host.run_clock(&o, 32, 0.1).expect("clock");
        assert_eq!(
            made.traffic().since(&m0).h2d_bytes,
            host.traffic().since(&h0).h2d_bytes,
            "round {round}: the oracle counts the device's bytes in"
        );
        assert_eq!(
            made.traffic().since(&m0).h2d_bytes,
            4 * o.len() as u64,
            "round {round}: only the order crosses"
        );
        assert_eq!(a.loss_sum.to_bits(), b.loss_sum.to_bits(), "round {round}");
        let (mut da, mut db) = (arch.zeros(), arch.zeros());
        made.delta(1.0, &mut da).expect("delta");
        loaded.delta(1.0, &mut db).expect("delta");
        assert_eq!(bits(&da), bits(&db), "round {round}: deltas");
    }
}
