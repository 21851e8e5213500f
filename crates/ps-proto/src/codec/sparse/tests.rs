use super::*;

/// A Rice value read one bit at a time from bit `at`: the definition the word-at-a-time
/// reader must match (value and bits used, or running out).
fn rice_bit_by_bit(bytes: &[u8], at: &mut usize, k: u32) -> Option<u64> {
    let mut bit = || {
        let b = bytes.get(*at / 8)? >> (*at % 8) & 1;
        *at += 1;
        Some(b == 1)
    };
    let mut q = 0u64;
    while bit()? {
        q += 1;
    }
    let mut low = 0u64;
    for i in 0..k {
        low |= u64::from(bit()?) << i;
    }
    Some((q << k) | low)
}

#[test]
fn the_word_reader_reads_what_one_bit_at_a_time_reads() {
    let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1du64);
    for case in 0..2000 {
        let len = (next() % 40) as usize;
        // Mostly ones in some streams, so unary runs cross words and reach the end.
        let ones = case % 3 == 0;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if ones {
                    !(next() as u8 & 0x11)
                } else {
                    next() as u8
                }
            })
            .collect();
        let k = (next() % 32) as u32;
        let (mut r, mut at) = (BitReader::new(&bytes), 0usize);
        loop {
            let want = rice_bit_by_bit(&bytes, &mut at, k);
            match (r.rice(k), want) {
                (Ok(got), Some(want)) => {
                    assert_eq!(got, want, "case {case}");
                    assert_eq!(r.at, at, "case {case}: bits used");
                }
                (Err(_), None) => break,
                (got, want) => panic!("case {case}: {got:?} against {want:?}"),
            }
        }
    }
}

/// Every parameter tried: what `best_k` must give.
fn best_k_by_trying_all(vals: &[u64]) -> (u32, u64) {
    (0..32)
        .map(|k| (k, rice_len(vals.iter().copied(), k)))
        .min_by_key(|&(k, bits)| (bits, k))
        .unwrap_or((0, 0))
}

#[test]
fn the_rice_parameter_is_the_one_trying_all_would_pick() {
    // xorshift64*: enough spread for this, and no dependency.
    let mut state = 0x0005_21CE_5EED_u64;
    let mut next = |below: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % below.max(1)
    };
    let mut cases: Vec<Vec<u64>> = vec![
        vec![],
        vec![0],
        vec![0; 9],
        vec![1, 1, 1],
        vec![u64::from(u32::MAX)],
        vec![u64::from(u32::MAX); 3],
        vec![0, u64::from(u32::MAX)],
        vec![3, 3, 4, 4],
    ];
    for _ in 0..3_000 {
        let n = 1 + next(60);
        let scale = 1u64 << next(33);
        let mix = next(10) < 3;
        let vals = (0..n)
            .map(|_| {
                if mix && next(10) == 0 {
                    next(1 << 32)
                } else {
                    next(scale)
                }
            })
            .collect();
        cases.push(vals);
    }
    for vals in &cases {
        assert_eq!(
            best_k(|| vals.iter().copied()),
            best_k_by_trying_all(vals),
            "{vals:?}"
        );
    }
}

fn round_trip(sel: &[u32], n: usize, format: ValueFormat) -> Layout {
    let layout = choose(sel, n, format);
    let mut out = Vec::new();
    write_indices(layout, sel, &mut out);
    if layout.mode != MODE_DENSE {
        out.resize(out.len() + format.encoded_len(sel.len()), 0);
        let (got, at) = read_indices(out[0], &out[1..], n, format).unwrap();
        assert_eq!(got, sel);
        assert_eq!(out.len() - 1 - at, format.encoded_len(sel.len()));
    }
    layout
}

#[test]
fn picks_rice_for_moderate_density_and_reads_it_back() {
    let n = 4000;
    let sel: Vec<u32> = (0..n as u32)
        .filter(|i| i.wrapping_mul(2654435761) % 7 == 0)
        .collect();
    assert_eq!(round_trip(&sel, n, ValueFormat::Sign).mode, MODE_RICE);
    let sparse: Vec<u32> = vec![3, 200];
    assert_eq!(round_trip(&sparse, 300, ValueFormat::F32).mode, MODE_LIST);
    let all: Vec<u32> = (0..100).collect();
    assert_eq!(round_trip(&all, 100, ValueFormat::F32).mode, MODE_DENSE);
    let big = vec![0, u32::MAX - 1];
    round_trip(&big, 1 << 32, ValueFormat::Q4);
    round_trip(&[], 10, ValueFormat::Q4);
    // Whole rows of 8: runs.
    let rows: Vec<u32> = (0..500u32)
        .filter(|r| r % 3 == 0)
        .flat_map(|r| r * 8..r * 8 + 8)
        .collect();
    assert_eq!(round_trip(&rows, 4000, ValueFormat::Sign).mode, MODE_RUNS);
    let dense_runs: Vec<u32> = (0..4000u32).filter(|i| i % 100 != 7).collect();
    assert_eq!(
        round_trip(&dense_runs, 4000, ValueFormat::Sign).mode,
        MODE_RUNS
    );
    round_trip(&[0, 1, u32::MAX - 1], 1 << 32, ValueFormat::Sign);
}

#[test]
fn runs_refuse_bad_streams() {
    let sel: Vec<u32> = (0..50u32).flat_map(|r| r * 10..r * 10 + 4).collect();
    let layout = choose(&sel, 500, ValueFormat::Q8);
    assert_eq!(layout.mode, MODE_RUNS);
    let mut out = Vec::new();
    write_indices(layout, &sel, &mut out);
    out.resize(out.len() + ValueFormat::Q8.encoded_len(sel.len()), 0);
    let read = |p: &[u8], n| read_indices(p[0], &p[1..], n, ValueFormat::Q8);
    assert_eq!(read(&out, 500).unwrap().0, sel);
    assert!(read(&out, 494).is_ok());
    assert!(read(&out, 493).is_err(), "last run past the block");
    // m = 200 (2 varint bytes), runs = 50, then kg and kl.
    let mut more = out.clone();
    more[3] = 49; // one run too few: the runs hold 196 of 200 entries
    assert!(read(&more, 500).is_err());
    let mut k = out.clone();
    k[4] = 32;
    assert!(read(&k, 500).is_err());
    let mut zero = out.clone();
    zero[3] = 0; // no runs for 200 entries
    assert!(read(&zero, 500).is_err());
    for cut in 1..out.len() {
        assert!(read(&out[..cut], 500).is_err(), "prefix {cut}");
    }
}

#[test]
fn rice_refuses_bad_streams() {
    let sel: Vec<u32> = (0..500).step_by(3).collect();
    let layout = Layout {
        mode: MODE_RICE,
        k: 1,
        kl: 0,
    };
    let mut out = Vec::new();
    write_indices(layout, &sel, &mut out);
    let values = ValueFormat::Q8.encoded_len(sel.len());
    let with_values = |mut o: Vec<u8>| {
        o.resize(o.len() + values, 0);
        o
    };
    let ok = with_values(out.clone());
    assert!(read_indices(MODE_RICE, &ok[1..], 500, ValueFormat::Q8).is_ok());
    assert!(read_indices(MODE_RICE, &ok[1..], 498, ValueFormat::Q8).is_err());
    let mut extra = out.clone();
    extra.push(0);
    assert!(read_indices(MODE_RICE, &with_values(extra)[1..], 500, ValueFormat::Q8).is_err());
    let mut k = ok.clone();
    k[3] = 32;
    assert!(read_indices(MODE_RICE, &k[1..], 500, ValueFormat::Q8).is_err());
    // All ones: an endless unary run ends at the end of the stream.
    let mut ones = out.clone();
    for b in &mut ones[4..] {
        *b = 0xFF;
    }
    assert!(read_indices(MODE_RICE, &with_values(ones)[1..], 500, ValueFormat::Q8).is_err());
}
