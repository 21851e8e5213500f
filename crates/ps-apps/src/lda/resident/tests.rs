//! The host oracle of the resident engines: set-up refusals, restore, and loads by their entries.
use super::*;
use crate::lda::packed::pack_delta;
use crate::lda::{split_docs, synthetic_lda, CpuLda, SyntheticLdaSpec};

fn state(hyper: &LdaHyper) -> LdaWorkerState {
    let mut spec = SyntheticLdaSpec::default_builtin(5);
    (spec.docs, spec.vocab) = (30, 80);
    let syn = synthetic_lda(&spec);
    let docs = split_docs(&syn.corpus, 1, 0);
    LdaWorkerState::init(&docs, syn.corpus.vocab_size, hyper, 5, 0)
        .expect("init")
        .0
}

#[test]
fn a_bad_state_is_refused_before_setup() {
    let hyper = LdaHyper {
        topics: 6,
        ..LdaHyper::default()
    };
    let good = state(&hyper);
    assert!(check_state("t", &good, &hyper).is_ok());
    let mut e = HostLdaResident::new(Box::new(CpuLda::new()));
    assert!(e.setup(&good, &hyper).is_ok());
    let refused = |f: &dyn Fn(&mut LdaWorkerState)| {
        let mut s = good.clone();
        f(&mut s);
        check_state("t", &s, &hyper).is_err()
    };
    assert!(refused(&|s| s.words.swap(0, 1)), "unsorted words");
    assert!(refused(&|s| s.words[1] = s.words[0]), "a repeated word");
    assert!(refused(&|s| s.z[0] = 6), "a topic past K");
    assert!(
        refused(&|s| s.tokens[0] = s.words.len() as u32),
        "a row past the words"
    );
    assert!(
        refused(&|s| s.doc_topic.pop().map(|_| ()).unwrap_or(())),
        "counts"
    );
    let other = LdaHyper { topics: 7, ..hyper };
    assert!(check_state("t", &good, &other).is_err(), "another K");
}

/// What a rejoining worker relies on: the assignments alone come back as the whole state
/// does, and a state handed back takes the place of the engine's, its rows kept, so the
/// next sweep is that of an engine that never stopped.
#[test]
fn a_restored_state_sweeps_as_if_never_stopped() {
    let hyper = LdaHyper {
        topics: 6,
        ..LdaHyper::default()
    };
    let start = state(&hyper);
    let k = 6;
    let rows: Vec<f32> = (0..start.words.len() * k).map(|i| (i % 4) as f32).collect();
    let totals = vec![50f32; k];
    let key = |clock| SweepKey {
        seed: 3,
        worker: 0,
        clock,
    };
    let engine = || HostLdaResident::new(Box::new(CpuLda::new()));
    let (mut ran, mut back) = (engine(), engine());
    for e in [&mut ran, &mut back] {
        e.setup(&start, &hyper).unwrap();
        e.load_rows(0, &rows).unwrap();
        e.load_totals(&totals).unwrap();
    }
    ran.sweep(key(1)).unwrap();
    let mut swept = start.clone();
    ran.download_state(&mut swept).unwrap();
    let mut z = vec![0; start.z.len()];
    let before = ran.traffic().d2h_bytes;
    ran.download_assignments(&mut z).unwrap();
    assert_eq!(z, swept.z);
    assert_ne!(z, start.z, "nothing moved");
    assert_eq!(ran.traffic().d2h_bytes - before, 4 * z.len() as u64);

    // `back` never swept: its rows stay loaded through the restore.
    let ll = back.loglik().unwrap();
    back.restore_state(&start).unwrap();
    assert_eq!(back.loglik().unwrap(), ll, "the rows are kept");
    back.restore_state(&swept).unwrap();
    // The next clock's rows (the sweep moved `ran`'s copy).
    for e in [&mut ran, &mut back] {
        e.load_rows(0, &rows).unwrap();
        e.load_totals(&totals).unwrap();
    }
    assert_eq!(back.loglik().unwrap(), ran.loglik().unwrap());
    assert_eq!(back.sweep(key(2)).unwrap(), ran.sweep(key(2)).unwrap());
    let (mut a, mut b) = (start.clone(), start.clone());
    ran.download_state(&mut a).unwrap();
    back.download_state(&mut b).unwrap();
    assert_eq!(a, b);

    assert!(back.download_assignments(&mut [0; 3]).is_err(), "a length");
    let mut other = swept.clone();
    other.tokens.swap(0, 1);
    assert!(back.restore_state(&other).is_err(), "other documents");
    let mut bad = swept.clone();
    bad.z[0] = 6;
    assert!(back.restore_state(&bad).is_err(), "a topic past K");
    // Nothing was taken from the refused states.
    back.download_state(&mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rows_by_their_entries_load_as_the_dense_rows_do() {
    let hyper = LdaHyper {
        topics: 40,
        ..LdaHyper::default()
    };
    let st = state(&hyper);
    let (k, n) = (40, st.words.len());
    // Sparse counts, a fractional value, a -0.0 and one dense row.
    let mut rows = vec![0f32; n * k];
    for (i, x) in rows.iter_mut().enumerate() {
        *x = match i % 37 {
            0 => (i % 5 + 1) as f32,
            1 if i % 3 == 0 => -0.0,
            _ => 0.0,
        };
    }
    rows[3 * k + 7] = 0.5;
    rows[5 * k..6 * k].fill(2.0);
    let totals = vec![100f32; k];
    let (mut dense, mut sparse) = (
        HostLdaResident::new(Box::new(CpuLda::new())),
        HostLdaResident::new(Box::new(CpuLda::new())),
    );
    let mut entries = ps_proto::SparseRowsBuf::default();
    for e in [&mut dense, &mut sparse] {
        e.setup(&st, &hyper).unwrap();
        e.load_totals(&totals).unwrap();
    }
    let half = n / 2;
    for (first, run) in [(half, &rows[half * k..]), (0, &rows[..half * k])] {
        dense.load_rows(first, run).unwrap();
        entries.clear(k);
        run.chunks_exact(k).for_each(|r| entries.push_dense(r));
        sparse.load_sparse_rows(first, entries.view()).unwrap();
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&sparse.word_topic), bits(&rows));
    assert_eq!(bits(&dense.word_topic), bits(&rows));
    assert_eq!(sparse.loglik().unwrap(), dense.loglik().unwrap());
    // The bytes a device would copy: the set-up, the totals, each run packed (dense runs as
    // the 16-bit image, rows 5 and 3 making the first half's f32; runs by their entries Rice
    // coded, smaller), the loglik's sum.
    let (t, u) = (dense.traffic(), sparse.traffic());
    assert_eq!((t.d2h_bytes, u.d2h_bytes), (8, 8));
    let mut image = Vec::new();
    let (mut runs, mut rice) = (0, 0);
    for r in [&rows[half * k..], &rows[..half * k]] {
        runs += pack_rows(r, k, &mut image).expect("packs").bytes();
        entries.clear(k);
        r.chunks_exact(k).for_each(|row| entries.push_dense(row));
        rice += pack_rice_rows(entries.view(), k, &mut image)
            .expect("packs")
            .bytes();
    }
    assert!(rice < runs, "Rice {rice} B, 16-bit {runs} B");
    let (n_tok, d) = (st.tokens.len(), st.num_docs());
    let setup = 4 * (d + 1 + 2 * n_tok + d * k + n) as u64;
    assert_eq!(t.h2d_bytes, setup + 4 * k as u64 + runs);
    assert_eq!(u.h2d_bytes, setup + 4 * k as u64 + rice);
    let key = SweepKey {
        seed: 1,
        worker: 0,
        clock: 1,
    };
    let delta = sparse.sweep(key).unwrap();
    let mut cells = vec![0i32; n * k];
    for &(w, topic, c) in &delta.entries {
        let row = st.words.binary_search(&w).unwrap();
        cells[row * k + topic as usize] = c;
    }
    let image_bytes = pack_delta(&cells, k, &mut image).bytes();
    let out = sparse.traffic().since(&u);
    assert_eq!(out.d2h_bytes, 8 + image_bytes + 4 * k as u64);
    assert!(out.compute_s > 0.0);
    // Refused: another width, past the rows, a malformed run.
    entries.clear(k + 1);
    entries.push_entries(&[1], &[1.0]);
    assert!(sparse.load_sparse_rows(0, entries.view()).is_err());
    entries.clear(k);
    entries.push_entries(&[1], &[1.0]);
    assert!(sparse.load_sparse_rows(n, entries.view()).is_err());
    entries.clear(k);
    entries.push_entries(&[2, 1], &[1.0, 1.0]);
    assert!(sparse.load_sparse_rows(0, entries.view()).is_err());
}

/// How a dense run crosses ([`pulled_run`]): sparse whole counts as the 16-bit packed image,
/// as before; a `q8` pull codec's rows (code times scale, not whole counts) as their codes,
/// the wire's bytes and 8 more, where that is fewer than the f32 packed image of their
/// entries (which sparse rows keep) and the dense run; dense rows of
/// small whole counts as codes of scale 1; plain f32 values as they are. The oracle loads the
/// codes' rows bit for bit and counts the image's bytes.
#[test]
fn lossy_pulled_rows_cross_as_codes() {
    use crate::app::device_codec::level_image;
    use ps_proto::codec::ValueFormat;
    let hyper = LdaHyper {
        topics: 40,
        ..LdaHyper::default()
    };
    let st = state(&hyper);
    let (k, n) = (40, st.words.len());
    let mut image = Vec::new();
    let counts_every = |step: usize| -> Vec<f32> {
        (0..n * k)
            .map(|i| {
                if i % step == 0 {
                    (i % 300 + 1) as f32
                } else {
                    0.0
                }
            })
            .collect()
    };
    let (counts, sparse) = (counts_every(2), counts_every(7));
    let q8 = ValueFormat::Q8.round_trip(&counts);
    // Few entries: their f32 packed image is smaller than the codes of every value.
    assert!(matches!(
        pulled_run(&ValueFormat::Q8.round_trip(&sparse), k, &mut image),
        PulledRun::Packed(Packed {
            values: Values::F32,
            ..
        })
    ));
    assert!(
        q8.iter().any(|v| v.fract() != 0.0),
        "the case rounds counts"
    );
    let dense_small: Vec<f32> = (0..n * k).map(|i| (i % 100) as f32).collect();
    let plain: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin() + 2.0).collect();
    assert!(matches!(
        pulled_run(&counts, k, &mut image),
        PulledRun::Packed(Packed {
            values: Values::U16,
            ..
        })
    ));
    let codes = pulled_run(&q8, k, &mut image);
    let level = level_image(&q8).expect("an image");
    let want = level.bytes() as u64;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&level.widen()), bits(&q8), "the codes are the rows");
    assert!(matches!(codes, PulledRun::Codes(_)), "{codes:?}");
    assert_eq!(codes.bytes(q8.len()), want);
    let packed_f32 = pack_rows(&q8, k, &mut image).map_or(u64::MAX, |s| s.bytes());
    assert!(want < packed_f32.min(4 * q8.len() as u64));
    assert!(matches!(
        pulled_run(&dense_small, k, &mut image),
        PulledRun::Codes(_)
    ));
    assert!(matches!(
        pulled_run(&plain, k, &mut image),
        PulledRun::Dense
    ));

    let mut e = HostLdaResident::new(Box::new(CpuLda::new()));
    e.setup(&st, &hyper).unwrap();
    let before = e.traffic().h2d_bytes;
    e.load_rows(0, &q8).unwrap();
    assert_eq!(e.traffic().h2d_bytes - before, want);
    assert_eq!(bits(&e.word_topic), bits(&q8));
}
