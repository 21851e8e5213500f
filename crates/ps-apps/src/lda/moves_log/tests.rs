use super::*;
use crate::lda::{
    CpuLda, LdaCompute, LdaWorkerState, ParallelSparseLda, SparseLda, SweepKey, WordMajorLda,
};

const HYPER: LdaHyper = LdaHyper {
    topics: 8,
    alpha: 0.1,
    beta: 0.01,
};

fn print(job: u64, worker: u32) -> u64 {
    fingerprint(job, 7, worker, &HYPER, (3, 100))
}

fn open(path: &Path, fp: u64) -> MovesLog {
    MovesLog::open(path, fp, 100, 8).unwrap()
}

/// The moves logged for `clock` (a clock the snapshot covers fails the test).
fn take(log: &mut MovesLog, clock: u64) -> Option<Vec<Move>> {
    match log.take(clock).unwrap() {
        Some(Logged::Moves(m)) => Some(m),
        Some(Logged::Durable) => panic!("clock {clock} is covered by the snapshot"),
        None => None,
    }
}

#[test]
fn a_new_life_finds_what_the_last_one_logged_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let fp = print(1, 1);
    let mut log = open(&path, fp);
    assert_eq!(take(&mut log, 1), None);
    log.append(1, &[(3, 2), (99, 7)]).unwrap();
    log.append(2, &[]).unwrap();
    log.append(3, &[(0, 0)]).unwrap();
    // A clock out of turn is refused.
    assert!(log.append(5, &[]).is_err());
    drop(log);
    let mut again = open(&path, fp);
    assert_eq!(take(&mut again, 1), Some(vec![(3, 2), (99, 7)]));
    assert_eq!(take(&mut again, 2), Some(vec![]));
    assert_eq!(take(&mut again, 2), None, "taken once");
    // Replayed clocks are not written twice; the next new one follows them.
    again.append(1, &[(5, 5)]).unwrap();
    again.append(4, &[(1, 1)]).unwrap();
    drop(again);
    let mut third = open(&path, fp);
    assert_eq!(take(&mut third, 1), Some(vec![(3, 2), (99, 7)]));
    assert_eq!(take(&mut third, 3), Some(vec![(0, 0)]));
    assert_eq!(take(&mut third, 4), Some(vec![(1, 1)]));
    assert_eq!(take(&mut third, 5), None);
    // Every token moving: the bitmap layout.
    let many: Vec<Move> = (0..100u32).map(|t| (t, t % 8)).collect();
    third.append(5, &many).unwrap();
    drop(third);
    assert_eq!(take(&mut open(&path, fp), 5), Some(many));
}

#[test]
fn a_torn_last_record_is_cut_off_and_a_damaged_one_before_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let fp = print(1, 1);
    let mut log = open(&path, fp);
    log.append(1, &[(1, 1)]).unwrap();
    log.append(2, &[(2, 2), (3, 3)]).unwrap();
    drop(log);
    let whole = std::fs::read(&path).unwrap();
    // The first record's body length is in its head.
    let first_body = u64_at(&whole[(HEADER + 16) as usize..(HEADER + 24) as usize]);
    let first_end = (HEADER + FRAME + first_body) as usize;
    for cut in [whole.len() - 1, whole.len() - 9, first_end + 5] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let mut log = open(&path, fp);
        assert_eq!(take(&mut log, 1), Some(vec![(1, 1)]), "cut at {cut}");
        assert_eq!(take(&mut log, 2), None, "cut at {cut}");
        // Cut back, so the next record follows the last whole one.
        log.append(2, &[(4, 4)]).unwrap();
        drop(log);
        assert_eq!(take(&mut open(&path, fp), 2), Some(vec![(4, 4)]));
    }
    // The last record damaged (a flipped bit of a token, a topic past K): cut off like a
    // torn one.
    let mut flipped = whole.clone();
    flipped[first_end + HEAD as usize + 1] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert_eq!(take(&mut open(&path, fp), 2), None);
    let mut log = open(&path, fp);
    assert!(log.append(2, &[(5, 9)]).is_err(), "topic 9 of 8");
    assert!(log.append(2, &[(5, 1), (5, 2)]).is_err(), "a token twice");
    drop(log);
    let mut wider = MovesLog::open(&path, fp, 100, 10).unwrap();
    wider.append(2, &[(5, 9)]).unwrap();
    drop(wider);
    assert_eq!(take(&mut open(&path, fp), 2), None, "topic 9 of 8");
    // The first damaged with the second after it: an error, not a silent cut; so too a
    // damaged length, even one that would run past the end as a torn record's does.
    let mut flipped = whole.clone();
    flipped[(HEADER + FRAME) as usize] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
    assert!(err.contains("damaged and later ones follow"), "{err}");
    for bit in [0, 62] {
        let mut flipped = whole.clone();
        let at = (HEADER + 16) as usize + bit / 8;
        flipped[at] ^= 1 << (bit % 8);
        std::fs::write(&path, &flipped).unwrap();
        let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
        assert!(err.contains("damaged head"), "{err}");
    }
    // A header cut short is a new log.
    std::fs::write(&path, &whole[..10]).unwrap();
    assert_eq!(take(&mut open(&path, fp), 1), None);
}

#[test]
fn a_log_of_another_run_or_worker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    open(&path, print(1, 1)).append(1, &[]).unwrap();
    let other_alpha = LdaHyper {
        alpha: 0.2,
        ..HYPER
    };
    for fp in [
        print(2, 1),
        print(1, 2),
        fingerprint(1, 7, 1, &other_alpha, (3, 100)),
    ] {
        let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
        assert!(
            err.contains("another run of the job or another worker"),
            "{err}"
        );
    }
    std::fs::write(&path, b"not a log at all, but long").unwrap();
    assert!(MovesLog::open(&path, print(1, 1), 100, 8).is_err());
}

/// A replay of a sweep's moves leaves the state the sweep left and returns its delta, for
/// every host engine.
#[test]
fn replayed_moves_are_the_sweep_again() {
    let hyper = LdaHyper { topics: 6, ..HYPER };
    let docs: Vec<Vec<u32>> = (0..40u32)
        .map(|d| (0..(d % 9)).map(|i| (d * 7 + i * 3) % 40).collect())
        .collect();
    let engines: Vec<Box<dyn LdaCompute>> = vec![
        Box::new(CpuLda::new()),
        Box::new(SparseLda::new()),
        Box::new(ParallelSparseLda::new(3)),
        Box::new(WordMajorLda::new(2)),
    ];
    for mut engine in engines {
        let (mut state, initial) = LdaWorkerState::init(&docs, 40, &hyper, 3, 1).unwrap();
        // The initial counts, as clock 0 pushes them, for a lone worker.
        let k = 6;
        let mut rows = vec![0.0f32; state.words.len() * k];
        let mut totals = vec![0.0f32; k];
        for &(w, t, c) in &initial.entries {
            let r = state.words.binary_search(&w).unwrap();
            rows[r * k + t as usize] += c as f32;
            totals[t as usize] += c as f32;
        }
        for clock in 1..4 {
            let before = state.clone();
            let key = SweepKey {
                seed: 3,
                worker: 1,
                clock,
            };
            let swept = engine
                .sweep(&mut state, &mut rows, &mut totals, &hyper, key)
                .unwrap();
            let moves = moves_between(&before.z, &state.z);
            assert!(!moves.is_empty());
            let mut again = before;
            let replayed = replay(&mut again, &moves);
            assert_eq!(replayed, swept, "{} clock {clock}", engine.name());
            assert_eq!(again.z, state.z);
            assert_eq!(again.doc_topic, state.doc_topic);
        }
    }
}

/// Clocks 1..=8 of a worker of 100 tokens: each moves the tokens `t % clock == 0` to topic
/// `clock % 8`; returns the moves of each clock and the assignments after it (`z[0]` the
/// start).
fn history() -> (Vec<Vec<Move>>, Vec<Vec<u32>>) {
    let mut z = vec![vec![0u32; 100]];
    let mut moves = vec![Vec::new()];
    for c in 1..=8u32 {
        let mut next = z[c as usize - 1].clone();
        for (t, topic) in next.iter_mut().enumerate() {
            if (t as u32).is_multiple_of(c) {
                *topic = c % 8;
            }
        }
        moves.push(moves_between(&z[c as usize - 1], &next));
        z.push(next);
    }
    (moves, z)
}

/// Logs clocks 1..=8, the shards holding each clock one clock later; returns the clock of
/// the last snapshot written.
fn log_with_lagging_acks(log: &mut MovesLog, moves: &[Vec<Move>], z: &[Vec<u32>]) -> u64 {
    for c in 1..=8u64 {
        log.append(c, &moves[c as usize]).unwrap();
        log.durable(c - 1, c, &z[c as usize]).unwrap();
    }
    log.snapshot
}

#[test]
fn clocks_held_for_good_become_a_snapshot_and_a_new_life_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let fp = print(1, 1);
    let (moves, z) = history();
    let mut log = open(&path, fp);
    let snap = log_with_lagging_acks(&mut log, &moves, &z);
    // Compacted whenever the records held for good outgrew a snapshot (100 bytes here).
    assert!((3..8).contains(&snap), "snapshot of clock {snap}");
    let kept: u64 = (snap + 1..=8)
        .map(|c| FRAME + body::encode(&moves[c as usize], 100, 8).unwrap().len() as u64)
        .sum();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER + kept);
    drop(log);

    let mut again = open(&path, fp);
    assert_eq!(
        again.take_snapshot(),
        Some((snap, z[snap as usize].clone()))
    );
    assert_eq!(again.take_snapshot(), None, "taken once");
    assert_eq!(again.logged_clocks() as u64, 8 - snap);
    for c in 1..=snap {
        assert_eq!(again.take(c).unwrap(), Some(Logged::Durable), "clock {c}");
    }
    let mut state = LdaWorkerState {
        topics: 8,
        vocab_size: 1,
        words: vec![0],
        doc_offsets: vec![0, 60, 100],
        tokens: vec![0; 100],
        z: vec![0; 100],
        doc_topic: vec![0; 16],
    };
    set_assignments(&mut state, &z[snap as usize]);
    for c in snap + 1..=8 {
        let m = take(&mut again, c).expect("logged");
        assert_eq!(m, moves[c as usize]);
        replay(&mut state, &m);
    }
    assert_eq!(state.z, z[8]);
    let mut counts = vec![0u32; 16];
    for (t, &k) in z[8].iter().enumerate() {
        counts[usize::from(t >= 60) * 8 + k as usize] += 1;
    }
    assert_eq!(state.doc_topic, counts);
    // The next clock follows; compaction goes on from the snapshot found.
    again.append(9, &[(1, 1)]).unwrap();
    assert!(again.append(11, &[]).is_err());
}

#[test]
fn nothing_is_dropped_before_the_shards_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let (moves, z) = history();
    let mut log = open(&path, print(1, 1));
    for c in 1..=8u64 {
        log.append(c, &moves[c as usize]).unwrap();
        // Acks of clock 0 only (the initial counts).
        log.durable(1, c, &z[c as usize]).unwrap();
    }
    assert_eq!(log.snapshot, 0);
    drop(log);
    let mut again = open(&path, print(1, 1));
    assert_eq!(again.take_snapshot(), None);
    assert_eq!(take(&mut again, 1), Some(moves[1].clone()));
}

#[test]
fn a_death_while_compacting_leaves_a_log_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let fp = print(1, 1);
    let (moves, z) = history();
    let mut log = open(&path, fp);
    for c in 1..=8u64 {
        log.append(c, &moves[c as usize]).unwrap();
    }
    drop(log);
    // The snapshot of clock 5 written, the log not yet rewritten.
    snapshot::write(&snapshot_path(&path), fp, 5, &z[5], 8).unwrap();
    let mut again = open(&path, fp);
    assert_eq!(again.take_snapshot(), Some((5, z[5].clone())));
    assert_eq!(again.take(5).unwrap(), Some(Logged::Durable));
    assert_eq!(take(&mut again, 6), Some(moves[6].clone()));
    drop(again);

    // A log that starts past its snapshot (the snapshot lost) cannot be replayed.
    let mut log = open(&path, fp);
    log_with_lagging_acks(&mut log, &moves, &z);
    drop(log);
    std::fs::remove_file(snapshot_path(&path)).unwrap();
    let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
    assert!(err.contains("out of turn"), "{err}");
    // Nor one whose snapshot is damaged.
    snapshot::write(&snapshot_path(&path), fp, 5, &z[5], 8).unwrap();
    let mut bytes = std::fs::read(snapshot_path(&path)).unwrap();
    bytes[40] ^= 1;
    std::fs::write(snapshot_path(&path), bytes).unwrap();
    let err = MovesLog::open(&path, fp, 100, 8).err().unwrap().to_string();
    assert!(err.contains("snapshot"), "{err}");
}

#[test]
fn a_compaction_that_fails_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.moves");
    let (moves, z) = history();
    // The snapshot's temporary file cannot be made: a directory holds its name.
    std::fs::create_dir(path.with_extension("snapshot-tmp")).unwrap();
    let mut log = open(&path, print(1, 1));
    assert_eq!(
        log_with_lagging_acks(&mut log, &moves, &z),
        0,
        "nothing compacted"
    );
    drop(log);
    let mut again = open(&path, print(1, 1));
    assert_eq!(again.take_snapshot(), None);
    for c in 1..=8 {
        assert_eq!(take(&mut again, c), Some(moves[c as usize].clone()));
    }
}
