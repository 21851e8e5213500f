//! The oracle's byte counts, timing and own push encoding.

use super::*;
use crate::mf::{CpuMf, WaveSchedule};
use crate::seed::ClockKey;

/// The oracle counts the bytes the CUDA engine copies for each call (worker-gpu's
/// conformance case checks them against the device's own counts) and times its passes.
#[test]
fn the_oracle_counts_a_devices_copies_and_times_its_passes() {
    let (users, items, w) = (6u32, 5usize, 3usize);
    let rating = |i: u32| Rating {
        user: i % users,
        item: (i * 7) % items as u32,
        value: (i % 5) as f32 * 0.5,
    };
    let mut train: Vec<Rating> = (0..60).map(rating).collect();
    let test: Vec<Rating> = (60..70).map(rating).collect();
    let schedule = WaveSchedule::new(&train, users, items as u32, 2);
    schedule.arrange(&mut train);
    let user_rows = vec![0.1f32; users as usize * w];
    for factors in [Factors::F32, Factors::F16] {
        let mut e = HostResident::new(Box::new(CpuMf), 4);
        e.setup(&ResidentSetup {
            layout: Layout::plain(w),
            train: &train,
            schedule: &schedule,
            test: &test,
            users: &user_rows,
            num_items: items,
            factors,
        })
        .unwrap();
        let setup = 12 * 70 + 4 * schedule.starts().len() + user_rows.len() * factors.bytes();
        assert_eq!(e.traffic().h2d_bytes, setup as u64);
        let keys: Vec<u64> = (0..items as u64).collect();
        // A key list crosses when it changes, not when it is the same again.
        e.expect_items(&keys).unwrap();
        e.expect_items(&keys).unwrap();
        // Plain f32 values cross as they are.
        let plain: Vec<f32> = (0..items * w).map(|i| 0.2 + i as f32 * 1e-3).collect();
        e.load_items(0, &plain).unwrap();
        let t = e.traffic();
        assert_eq!(t.h2d_bytes, (setup + 4 * items + 4 * items * w) as u64);
        // Rows of f16 values (an f16 pull codec's) cross as f16.
        let f16s: Vec<f32> = plain
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        e.load_items(0, &f16s).unwrap();
        let t = e.traffic().since(&t);
        assert_eq!(t.h2d_bytes, 2 * (items * w) as u64);
        // Rows of codes of one scale (a q8 pull codec's): their segment, the scale of their one
        // group, then the codes, here 4 bits each.
        let s = 0.1f32;
        let codes: Vec<f32> = (0..items * w).map(|i| (i % 15) as f32 * s - 0.7).collect();
        let codes: Vec<f32> = codes.iter().map(|&v| (v / s).round() * s).collect();
        let t = e.traffic();
        e.load_items(0, &codes).unwrap();
        let moved = e.traffic().since(&t).h2d_bytes;
        assert_eq!(moved, PulledRows::of(&codes).bytes(codes.len()));
        assert_eq!(moved, (8 + 4 + (items * w).div_ceil(2)) as u64, "{moved}");
        e.load_items(0, &plain).unwrap();
        let t = e.traffic();
        let waves = schedule.epoch_waves(ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        });
        assert!(e.run_waves(&waves, 0.01, 0.0).unwrap() > 0.0);
        // Nothing runs for no waves: nothing crosses.
        e.run_waves(&[], 0.01, 0.0).unwrap();
        let after = e.traffic().since(&t);
        assert_eq!(after.h2d_bytes, 4 * waves.len() as u64);
        assert_eq!(after.d2h_bytes, 12);
        assert!(after.compute_s > 0.0);
        let mut out = vec![0.0; 2 * w];
        e.item_rows(&[1, 3], &mut out).unwrap();
        e.item_rows(&[1, 3], &mut out).unwrap();
        e.user_rows(&[0, 2], &mut out).unwrap();
        e.item_rows(&[], &mut []).unwrap();
        let rows = e.traffic().since(&t).since(&after);
        assert_eq!(rows.h2d_bytes, 4 * 2 + 4 * 2);
        assert_eq!(rows.d2h_bytes, 3 * 4 * 2 * w as u64);
        let before = e.traffic();
        assert!(e.squared_error(Split::Test).unwrap() > 0.0);
        let error = e.traffic().since(&before);
        assert_eq!((error.h2d_bytes, error.d2h_bytes), (0, 8));
        assert!(error.compute_s > 0.0);
        assert_eq!((error.h2d_s, error.d2h_s), (0.0, 0.0));
    }
}

/// The oracle's own encoding is the worker library's: the delta of the pushed rows since
/// `keep_before`, encoded with the keeper's error feedback block by block, in a dense lossy
/// format or as a top-k (each block its own k); what it holds back shows in the rows it loads
/// next; the device's copies are counted (the key list once, each block's payload as whole
/// words, or a top-k's count, indices and values' bytes, one encoder for all blocks; the
/// residual table at the drop).
#[test]
fn the_oracle_encodes_its_pushes_as_the_library_would() {
    use crate::app::device_codec::{DeviceChain, KeyedBlock, ResidualKeeper, TopKCopies};
    use ps_proto::codec::ValueFormat;
    let (users, items, w) = (6u32, 5usize, 3usize);
    let rating = |i: u32| Rating {
        user: i % users,
        item: (i * 7) % items as u32,
        value: (i % 5) as f32 * 0.5,
    };
    let mut train: Vec<Rating> = (0..60).map(rating).collect();
    let schedule = WaveSchedule::new(&train, users, items as u32, 2);
    schedule.arrange(&mut train);
    for (chain, ks) in [
        (
            DeviceChain::Dense(ValueFormat::Q4),
            [2 * w, (items - 2) * w],
        ),
        (DeviceChain::TopK(ValueFormat::Sign), [2, 3]),
        (DeviceChain::TopK(ValueFormat::F16), [1, 4]),
    ] {
        let mut e = HostResident::new(Box::new(CpuMf), 4);
        e.setup(&ResidentSetup {
            layout: Layout::plain(w),
            train: &train,
            schedule: &schedule,
            test: &[],
            users: &vec![0.1f32; users as usize * w],
            num_items: items,
            factors: Factors::F32,
        })
        .unwrap();
        let keys: Vec<u64> = (0..items as u64).collect();
        let blocks = [
            KeyedBlock {
                rows: 0..2,
                k: ks[0],
            },
            KeyedBlock {
                rows: 2..items,
                k: ks[1],
            },
        ];
        assert!(e.encodes(chain));
        assert!(
            e.encodes(DeviceChain::TopK(ValueFormat::F32)),
            "its raw flush goes as plain rows"
        );
        let mut keeper = ResidualKeeper::new(&[(items, w)]);
        let mut copies = TopKCopies::new(0);
        let waves = schedule.epoch_waves(ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        });
        let pulled = vec![0.2f32; items * w];
        for clock in 0..3 {
            let what = format!("{chain:?} clock {clock}");
            e.expect_items(&keys).unwrap();
            e.load_items(0, &pulled).unwrap();
            // The rows read: the pulled ones plus what the engine holds back.
            let mut read = pulled.clone();
            keeper.add_keyed(0, &keys, &mut read).unwrap();
            let mut cached = vec![0.0; items * w];
            e.item_rows(&keys, &mut cached).unwrap();
            assert_eq!(cached, read, "{what}");
            let t = e.traffic();
            e.keep_before(&keys).unwrap();
            e.run_waves(&waves, 0.05, 0.0).unwrap();
            let mut after = vec![0.0; items * w];
            e.item_rows(&keys, &mut after).unwrap();
            let delta: Vec<f32> = after.iter().zip(&read).map(|(a, b)| a - b).collect();
            let (want, bytes) = keeper
                .encode_keyed_blocks(&mut copies, (0, &keys, w), chain, &blocks, &delta)
                .unwrap();
            let before = e.traffic();
            let mut got = Vec::new();
            e.delta_encoded(&keys, chain, &blocks, &mut got).unwrap();
            assert_eq!(got, want, "{what}");
            let moved = e.traffic().since(&before);
            assert_eq!((moved.h2d_bytes, moved.d2h_bytes), bytes, "{what}");
            if let DeviceChain::TopK(_) = chain {
                // Per block a count, the indices' measure, their codes and the values.
                assert!(bytes.1 > 2 * (4 + 64), "{what}");
            }
            // The pushed rows' key list crossed once, with the first clock's keep_before.
            let kept = before.since(&t).h2d_bytes;
            assert_eq!(
                kept,
                if clock == 0 { 4 * items as u64 } else { 0 } + 4 * waves.len() as u64
            );
            // The rows that hold something back: the keeper's, a bit each from the device.
            let before = e.traffic();
            let held = e.held_rows(&keys).unwrap();
            assert_eq!(held, keeper.held_keyed(0, &keys).unwrap(), "{what}");
            assert!(!held.is_empty(), "{what}");
            assert_eq!(e.traffic().since(&before).d2h_bytes, 4, "{what}: one word");
            assert!(e.held_rows(&keys[1..]).is_err(), "not the rows pushed");
        }
        let mut out = Vec::new();
        let moved = KeyedBlock { rows: 0..4, k: 4 };
        assert!(
            e.delta_encoded(&keys[1..], chain, std::slice::from_ref(&moved), &mut out)
                .is_err(),
            "other rows"
        );
        let gap = KeyedBlock { rows: 0..2, k: 2 };
        assert!(
            e.delta_encoded(&keys, chain, std::slice::from_ref(&gap), &mut out)
                .is_err(),
            "a gap"
        );
        if chain == DeviceChain::TopK(ValueFormat::F16) {
            // A flush of plain rows: the clock's delta plus everything held, which is then gone.
            e.expect_items(&keys).unwrap();
            e.load_items(0, &pulled).unwrap();
            let mut read = pulled.clone();
            keeper.add_keyed(0, &keys, &mut read).unwrap();
            e.keep_before(&keys).unwrap();
            e.run_waves(&waves, 0.05, 0.0).unwrap();
            let mut after = vec![0.0; items * w];
            e.item_rows(&keys, &mut after).unwrap();
            let mut want: Vec<f32> = after
                .iter()
                .zip(&read)
                .map(|(a, b)| 0.0 + (a - b))
                .collect();
            keeper.take_keyed(0, &keys, &mut want).unwrap();
            assert_eq!(keeper.l1(), 0.0);
            let mut got = vec![0.0; items * w];
            let before = e.traffic();
            e.delta_with_held(&keys, &mut got).unwrap();
            assert_eq!(got, want, "{chain:?}: the flushed rows");
            assert_eq!(e.traffic().since(&before).d2h_bytes, 4 * (items * w) as u64);
            assert!(
                e.delta_with_held(&keys[1..], &mut got[w..]).is_err(),
                "other rows"
            );
        }
        let before = e.traffic();
        assert_eq!(e.drop_unsent().unwrap(), keeper.l1());
        assert_eq!(e.traffic().since(&before).d2h_bytes, 4 * (items * w) as u64);
        assert_eq!(e.drop_unsent().unwrap(), 0.0);
        // Nothing held back now: the rows load as they are.
        e.load_items(0, &pulled).unwrap();
        let mut cached = vec![0.0; items * w];
        e.item_rows(&keys, &mut cached).unwrap();
        assert_eq!(cached, pulled);
    }
}
