//! Tests of the push plan tiling, the chains a device runs, and the host oracle.

mod tiling {
    use super::super::*;

    fn b(table: u32, first_row: usize, rows: usize) -> DeltaBlock {
        DeltaBlock {
            table,
            first_row,
            rows,
            k: 1,
        }
    }

    #[test]
    fn a_cut_is_consecutive_and_whole() {
        assert_eq!(check_cut(&[0..2, 2..5], 5), Ok(()));
        assert_eq!(check_cut(&[], 0), Ok(()));
        assert!(check_cut(&[0..2, 3..5], 5).unwrap_err().contains("after 2"));
        assert!(check_cut(&[0..2, 2..6], 5).is_err());
        let short = std::slice::from_ref(&(0..2));
        assert!(check_cut(short, 5).unwrap_err().contains("cover 2 of 5"));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = [0..2, 2..1];
        assert!(check_cut(&backwards, 1).is_err());
    }

    #[test]
    fn a_plan_must_cover_every_row_once() {
        let rows = [5, 0, 3];
        assert_eq!(
            check_tiling(&[b(2, 0, 3), b(0, 2, 3), b(0, 0, 2)], &rows),
            Ok(())
        );
        assert_eq!(check_tiling(&[], &[0, 0]), Ok(()));
        let gap = check_tiling(&[b(0, 0, 2), b(0, 3, 2), b(2, 0, 3)], &rows).unwrap_err();
        assert!(gap.contains("gap at row 2 of table 0"), "{gap}");
        let overlap = check_tiling(&[b(0, 0, 3), b(0, 2, 3), b(2, 0, 3)], &rows).unwrap_err();
        assert!(overlap.contains("overlap at row 3 of table 0"), "{overlap}");
        let short = check_tiling(&[b(0, 0, 5), b(2, 0, 2)], &rows).unwrap_err();
        assert!(
            short.contains("rows 0..2 of table 2, which has 3"),
            "{short}"
        );
        let missing = check_tiling(&[b(0, 0, 5)], &rows).unwrap_err();
        assert!(missing.contains("table 2"), "{missing}");
        let extra = check_tiling(&[b(0, 0, 5), b(2, 0, 3), b(3, 0, 1)], &rows).unwrap_err();
        assert!(extra.contains("does not exist"), "{extra}");
    }
}

mod chains {
    use super::super::*;
    use rand::{Rng, SeedableRng};

    fn chain(s: &str) -> CodecChain {
        s.parse().unwrap()
    }

    #[test]
    fn a_device_runs_one_selection_in_any_format_or_a_lossy_dense_format() {
        use DeviceChain::{Dense, TopK};
        for (s, f) in [
            ("topk:0.1", ValueFormat::F32),
            ("topk:5,f16", ValueFormat::F16),
            ("topk:0.1,bf16", ValueFormat::Bf16),
            ("topk:0.1,q8", ValueFormat::Q8),
            ("topk:7,q4", ValueFormat::Q4),
            ("topk:0.1,q2", ValueFormat::Q2),
            ("topk:0.01,sign", ValueFormat::Sign),
        ] {
            assert_eq!(device_chain(&chain(s)), Some(TopK(f)), "{s}");
        }
        for (s, f) in [
            ("f16", ValueFormat::F16),
            ("bf16", ValueFormat::Bf16),
            ("q8", ValueFormat::Q8),
            ("q4", ValueFormat::Q4),
            ("q2", ValueFormat::Q2),
            ("sign", ValueFormat::Sign),
        ] {
            assert_eq!(device_chain(&chain(s)), Some(Dense(f)), "{s}");
        }
        for s in [
            // Lossless: the library sends the plain delta as it is.
            "raw",
            "filter:0.1,topk:0.1",
            "filter:0.1",
            "energy:0.5,topk:0.1",
            "rows:0.1",
            "topk:0.1,momentum:0.5,f16",
            "momentum:0.5,f16",
            // A warm-up is applied to the clock's chain before a device sees it.
            "topk:0.1,warmup:2,f16",
        ] {
            assert_eq!(device_chain(&chain(s)), None, "{s}");
        }
        for (s, f) in [
            ("energy:0.5", ValueFormat::F32),
            ("energy:0.4,sign", ValueFormat::Sign),
        ] {
            let c = device_chain(&chain(s)).expect(s);
            let e: f32 = s[7..10].parse().unwrap();
            assert_eq!(c, DeviceChain::Energy(Fraction::new(e), f), "{s}");
            assert!(c.selects());
            assert_eq!(c.keep(9), Keep::Energy(e), "{s}: counted on the device");
            assert_eq!(c.chain(9), chain(s), "{s}: the library's chain");
        }
        assert_eq!(TopK(ValueFormat::Q4).keep(9), Keep::Count(9));
        assert!(!Dense(ValueFormat::Q4).selects());
        let warm = chain("topk:0.1,warmup:2,f16").at_clock(0);
        assert_eq!(device_chain(&warm), Some(TopK(ValueFormat::F16)));
        assert_eq!(block_k(&chain("topk:0.1"), 25), 3);
        assert_eq!(block_k(&chain("topk:5"), 3), 3);
        assert_eq!(block_k(&chain("f16"), 7), 7);
    }

    /// Over several clocks the keeper's payloads are those of one `ErrorFeedback` per block
    /// kept across clocks (the library's encoder), and what was sent plus what is kept is the
    /// sum of the deltas.
    #[test]
    fn the_keeper_encodes_as_error_feedback_and_loses_nothing() {
        use DeviceChain::{Dense, TopK};
        for dc in [
            TopK(ValueFormat::F16),
            TopK(ValueFormat::F32),
            TopK(ValueFormat::Sign),
            TopK(ValueFormat::Q4),
            Dense(ValueFormat::F16),
            Dense(ValueFormat::Bf16),
            Dense(ValueFormat::Q8),
            Dense(ValueFormat::Q4),
            Dense(ValueFormat::Q2),
            Dense(ValueFormat::Sign),
        ] {
            keeper_over_clocks(dc);
        }
    }

    fn keeper_over_clocks(dc: DeviceChain) {
        let (rows, w) = (30usize, 4usize);
        let blocks = [
            DeltaBlock {
                table: 1,
                first_row: 0,
                rows: 12,
                k: 5,
            },
            DeltaBlock {
                table: 1,
                first_row: 12,
                rows: 18,
                k: 9,
            },
        ];
        let mut keeper = ResidualKeeper::new(&[(2, 3), (rows, w)]);
        let mut reference: Vec<ErrorFeedback> = blocks
            .iter()
            .map(|b| ErrorFeedback::new(b.rows * w))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut total = vec![0f64; rows * w];
        let mut sent = vec![0f64; rows * w];
        for clock in 0..6 {
            let delta: Vec<f32> = (0..rows * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            total
                .iter_mut()
                .zip(&delta)
                .for_each(|(t, d)| *t += f64::from(*d));
            let parts: Vec<&[f32]> = blocks
                .iter()
                .map(|b| &delta[b.first_row * w..(b.first_row + b.rows) * w])
                .collect();
            let got = keeper.encode_blocks(&blocks, dc, &parts).unwrap();
            for (i, b) in blocks.iter().enumerate() {
                let c = dc.chain(b.k);
                let mut want = Vec::new();
                reference[i]
                    .compress(&c, parts[i], None, &mut want)
                    .unwrap();
                assert_eq!(got[i], want, "{dc:?} clock {clock} block {i}");
                let n = b.rows * w;
                let d = codec::decode(c.wire_id(), &got[i], n)
                    .unwrap()
                    .into_dense(n)
                    .unwrap();
                for (s, v) in sent[b.first_row * w..].iter_mut().zip(d) {
                    *s += f64::from(v);
                }
            }
        }
        // What is kept shows in reads, and comes back whole from take_into.
        let mut read = vec![0f32; rows * w];
        keeper.add_to(1, 0, &mut read).unwrap();
        let mut back = vec![0f32; rows * w];
        keeper.take_into(1, &mut back).unwrap();
        assert_eq!(read, back);
        for i in 0..rows * w {
            let err = (sent[i] + f64::from(back[i]) - total[i]).abs();
            assert!(
                err < 1e-4,
                "{dc:?} entry {i}: sent + kept differs from the sum by {err}"
            );
        }
        assert_eq!(keeper.l1(), 0.0, "taken");
    }

    /// A device's top-k flow, emulated: it selects the top k of its residual, the host encodes
    /// the selected values with [`selection_payload`], and the device subtracts what that
    /// returns as `codec_ef_subtract` does (a non-finite residual entry becomes 0). Over clocks,
    /// in every format and with non-finite values, the payloads and the residual (bit for bit)
    /// are those of the library's `ErrorFeedback`.
    #[test]
    fn a_device_selection_encoded_on_the_host_keeps_the_librarys_residual() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for format in ValueFormat::ALL
            .into_iter()
            .filter(|f| !matches!(f, ValueFormat::I8 | ValueFormat::I16))
        {
            for case in 0..12 {
                let n = rng.gen_range(1..700);
                let mut device = vec![0f32; n];
                let mut library = ErrorFeedback::new(n);
                for clock in 0..5 {
                    let mut delta: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
                    if case % 4 == 3 && clock == 2 {
                        delta[rng.gen_range(0..n)] = f32::INFINITY;
                        delta[rng.gen_range(0..n)] = f32::NAN;
                    }
                    // Fractions up to all: some selections take the dense layout.
                    let k = match case % 3 {
                        0 => rng.gen_range(0..=n.min(5)),
                        1 => n / 10,
                        _ => rng.gen_range(n / 2..=n),
                    };
                    let c = DeviceChain::TopK(format).chain(k);
                    let mut want = Vec::new();
                    library.compress(&c, &delta, None, &mut want).unwrap();
                    device.iter_mut().zip(&delta).for_each(|(r, d)| *r += d);
                    let sel = codec::top_k(&device, k);
                    let picked: Vec<f32> = sel.iter().map(|&i| device[i as usize]).collect();
                    let (got, subtract) = selection_payload(format, n, &sel, &picked).unwrap();
                    for (&i, q) in sel.iter().zip(subtract) {
                        let r = &mut device[i as usize];
                        *r = if r.is_finite() { *r - q } else { 0.0 };
                    }
                    let what = format!("{format:?} case {case} clock {clock} n {n} k {k}");
                    assert_eq!(got, want, "{what}");
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&device), bits(library.residual()), "{what}");
                }
            }
        }
    }

    /// Rows named by key are the rows of a contiguous block: the same payloads, the same
    /// residual, the same reads; bad keys and lengths are refused.
    #[test]
    fn keyed_rows_encode_as_a_block_of_the_same_rows() {
        let (rows, w) = (9usize, 3usize);
        let keys = [1u64, 2, 3, 4];
        let block = DeltaBlock {
            table: 0,
            first_row: 1,
            rows: 4,
            k: 5,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for dc in [
            DeviceChain::TopK(ValueFormat::F32),
            DeviceChain::Dense(ValueFormat::Q4),
        ] {
            let (mut a, mut b) = (
                ResidualKeeper::new(&[(rows, w)]),
                ResidualKeeper::new(&[(rows, w)]),
            );
            for _ in 0..3 {
                let d: Vec<f32> = (0..4 * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x = a.encode_blocks(&[block], dc, &[&d]).unwrap();
                let y = b.encode_keyed(0, &keys, dc, block.k, &d).unwrap();
                assert_eq!(x[0], y, "{dc:?}");
                let (mut ra, mut rb) = (vec![-0.0f32; 4 * w], vec![-0.0f32; 4 * w]);
                a.add_to(0, 1, &mut ra).unwrap();
                b.add_keyed(0, &keys, &mut rb).unwrap();
                assert_eq!(bits(&ra), bits(&rb), "{dc:?}");
            }
            assert_eq!(a.l1(), b.l1());
        }
        let mut k = ResidualKeeper::new(&[(rows, w)]);
        let dc = DeviceChain::Dense(ValueFormat::F16);
        assert!(
            k.encode_keyed(0, &[9], dc, 1, &[0.0; 3]).is_err(),
            "row 9 of 9"
        );
        assert!(
            k.encode_keyed(1, &[0], dc, 1, &[0.0; 3]).is_err(),
            "table 1"
        );
        assert!(
            k.encode_keyed(0, &[0], dc, 1, &[0.0; 2]).is_err(),
            "a partial row"
        );
        assert!(
            k.add_keyed(0, &[0, 1], &mut [0.0; 3]).is_err(),
            "one row for two"
        );
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_device_copies_back_whole_words_of_a_block_format() {
        assert_eq!(dense_device_bytes(ValueFormat::F16, 7), Some(14));
        assert_eq!(dense_device_bytes(ValueFormat::Bf16, 0), Some(0));
        // 129 values of q4: 2 scales, 65 bytes of codes in 17 words.
        assert_eq!(dense_device_bytes(ValueFormat::Q4, 129), Some(4 * (2 + 17)));
        assert_eq!(ValueFormat::Q4.encoded_len(129), 8 + 65);
        assert_eq!(dense_device_bytes(ValueFormat::Sign, 9), Some(8));
        assert_eq!(dense_device_bytes(ValueFormat::F32, 9), None);
        for (format, n) in [
            (ValueFormat::Q8, 1000),
            (ValueFormat::Q2, 77),
            (ValueFormat::Sign, 4),
        ] {
            let dev = dense_device_bytes(format, n).unwrap();
            let wire = format.encoded_len(n) as u64;
            assert!((wire..=wire + 3).contains(&dev), "{format:?} {n}");
        }
    }

    #[test]
    fn once_the_library_holds_a_residual_it_encodes_to_the_end() {
        let mut e = PushEncoder {
            library_holds: false,
        };
        assert!(e.engine_encodes(true, true));
        assert!(!e.engine_encodes(false, false), "a chain it does not run");
        assert!(
            e.engine_encodes(true, true),
            "a lossless clock left nothing behind"
        );
        assert!(!e.engine_encodes(false, true));
        assert!(
            !e.engine_encodes(true, true),
            "the library holds a residual now"
        );
    }

    #[test]
    fn the_switch_takes_auto_or_off() {
        assert_eq!(encode_choice(None), Ok(true));
        assert_eq!(encode_choice(Some(" auto ")), Ok(true));
        assert_eq!(encode_choice(Some("")), Ok(true));
        assert_eq!(encode_choice(Some("off")), Ok(false));
        let e = encode_choice(Some("no")).unwrap_err();
        assert!(
            e.contains("PS_DEVICE_CODEC") && e.contains("auto or off"),
            "{e}"
        );
    }

    #[test]
    fn only_rows_holding_a_residual_are_added_and_bad_blocks_are_refused() {
        let mut keeper = ResidualKeeper::new(&[(3, 2)]);
        let block = DeltaBlock {
            table: 0,
            first_row: 0,
            rows: 3,
            k: 1,
        };
        // Row 2 holds the largest value, rows 0 and 1 stay behind.
        let delta = [0.5, 0.0, 0.0, -0.25, 0.0, 9.0];
        keeper
            .encode_blocks(&[block], DeviceChain::TopK(ValueFormat::F32), &[&delta])
            .unwrap();
        let mut read = [-0.0f32; 6];
        keeper.add_to(0, 0, &mut read).unwrap();
        assert_eq!(read[..4], [0.5, 0.0, 0.0, -0.25]);
        assert!(
            read[4].is_sign_negative() && read[5].is_sign_negative(),
            "row 2 untouched"
        );
        let short = DeltaBlock { rows: 2, ..block };
        assert!(keeper
            .encode_blocks(&[short], DeviceChain::TopK(ValueFormat::F32), &[&delta])
            .is_err());
        let outside = DeltaBlock {
            first_row: 2,
            ..block
        };
        assert!(keeper
            .encode_blocks(&[outside], DeviceChain::TopK(ValueFormat::F32), &[&delta])
            .is_err());
        let other = DeltaBlock { table: 4, ..block };
        assert!(keeper
            .encode_blocks(&[other], DeviceChain::TopK(ValueFormat::F32), &[&delta])
            .is_err());
        assert!(keeper.add_to(0, 2, &mut [0.0; 4]).is_err());
        // The rows holding something: rows 0 and 1, in the order asked; not row 2 (sent whole).
        assert_eq!(keeper.held_keyed(0, &[2, 1, 0]).unwrap(), [1, 0]);
        assert!(keeper.held_keyed(0, &[3]).is_err(), "row 3 of 3");
        // -0.0 is nothing (as the worker library keeps a row).
        let mut odd = ResidualKeeper::new(&[(2, 1)]);
        let dense = DeltaBlock {
            table: 0,
            first_row: 0,
            rows: 2,
            k: 2,
        };
        odd.encode_blocks(
            &[dense],
            DeviceChain::TopK(ValueFormat::F32),
            &[&[-0.0, 1.0]],
        )
        .unwrap();
        assert_eq!(odd.held_keyed(0, &[0, 1]).unwrap(), Vec::<u64>::new());
    }
}
