//! Unit tests with deterministic schedules.

use super::*;

fn ids<B>(released: &[(u32, u64, B)]) -> Vec<(u32, u64)> {
    released.iter().map(|(w, c, _)| (*w, *c)).collect()
}

/// Observable state of a shard clock, to check that errors change nothing.
fn snapshot(sc: &ShardClock<&'static str>) -> (Vec<Option<u64>>, u64, usize, Vec<usize>) {
    let n = sc.num_workers();
    (
        (0..n).map(|w| sc.worker_clock(w)).collect(),
        sc.min_clock(),
        sc.pending(),
        (0..n).map(|w| sc.pending_for(w)).collect(),
    )
}

#[test]
fn staleness_parse_and_display() {
    assert_eq!(Staleness::parse("0"), Ok(Staleness::Bounded(0)));
    assert_eq!(Staleness::parse("3"), Ok(Staleness::Bounded(3)));
    assert_eq!(Staleness::parse(" 12 "), Ok(Staleness::Bounded(12)));
    for s in ["inf", "INF", "unbounded", "Unbounded", "async"] {
        assert_eq!(Staleness::parse(s), Ok(Staleness::Unbounded), "{s}");
    }
    for s in [
        "",
        "-1",
        "+1",
        "1.5",
        "abc",
        "infinity",
        "3 4",
        "99999999999999999999999",
    ] {
        assert_eq!(
            Staleness::parse(s),
            Err(SspError::BadStaleness(s.to_string())),
            "{s:?}"
        );
    }
    assert_eq!("2".parse::<Staleness>(), Ok(Staleness::Bounded(2)));
    assert!("x".parse::<Staleness>().is_err());
    assert_eq!(Staleness::Bounded(0).to_string(), "0");
    assert_eq!(Staleness::Bounded(3).to_string(), "3");
    assert_eq!(Staleness::Unbounded.to_string(), "inf");
    for s in [
        Staleness::Bounded(0),
        Staleness::Bounded(7),
        Staleness::Bounded(u64::MAX),
        Staleness::Unbounded,
    ] {
        assert_eq!(s.to_string().parse::<Staleness>(), Ok(s));
    }
    assert_eq!(Staleness::default(), Staleness::BSP);
    assert!(Staleness::Unbounded.is_unbounded());
    assert!(!Staleness::BSP.is_unbounded());
}

#[test]
fn required_min_clock_edges() {
    let s0 = Staleness::Bounded(0);
    let s2 = Staleness::Bounded(2);
    assert_eq!(s0.required_min_clock(0), 0);
    assert_eq!(s0.required_min_clock(5), 5);
    assert_eq!(s2.required_min_clock(0), 0);
    assert_eq!(s2.required_min_clock(1), 0);
    assert_eq!(s2.required_min_clock(2), 0);
    assert_eq!(s2.required_min_clock(3), 1);
    assert_eq!(s2.required_min_clock(u64::MAX), u64::MAX - 2);
    assert_eq!(Staleness::Bounded(u64::MAX).required_min_clock(u64::MAX), 0);
    assert_eq!(Staleness::Unbounded.required_min_clock(0), 0);
    assert_eq!(Staleness::Unbounded.required_min_clock(u64::MAX), 0);
}

#[test]
fn a_cached_row_serves_only_the_clocks_its_read_policy_allows() {
    let (s, fresh, late) = (Staleness::Bounded(4), Reads::Fresh, Reads::Overlapped);
    // Complete through more than the bound asks, pulled for the previous clock: only an
    // overlapped read takes it; two clocks back, neither does.
    assert!(!serves_read(9, 4, 5, s, fresh));
    assert!(serves_read(9, 4, 5, s, late));
    assert!(!serves_read(9, 3, 5, s, late));
    assert!(serves_read(9, 5, 5, s, fresh));
    // Pulled for this clock but not complete through the bound: the bound still decides.
    assert!(!serves_read(0, 9, 9, s, fresh));
    assert!(!serves_read(0, 9, 9, s, late));
    assert!(serves_read(5, 9, 9, s, fresh));
    assert!(serves_read(0, 7, 7, Staleness::Unbounded, fresh));
    assert!(!serves_read(0, 6, 7, Staleness::Unbounded, fresh));
    assert!(serves_read(0, 6, 7, Staleness::Unbounded, late));
    // Staleness 0: a row from the previous clock never meets the bound.
    assert!(!serves_read(6, 6, 7, Staleness::BSP, late));
    assert!(serves_read(7, 7, 7, Staleness::BSP, fresh));
    assert_eq!(Reads::default(), Reads::Fresh);
}

#[test]
fn is_fresh_edges() {
    let s1 = Staleness::Bounded(1);
    // Read at clock 3 with s = 1 needs min completed >= 2.
    assert!(!is_fresh(1, 3, s1));
    assert!(is_fresh(2, 3, s1));
    assert!(is_fresh(9, 3, s1));
    // Early clocks saturate: anything is fresh.
    assert!(is_fresh(0, 0, s1));
    assert!(is_fresh(0, 1, s1));
    assert!(!is_fresh(0, 2, s1));
    // BSP: need everything up to the previous clock.
    assert!(is_fresh(4, 4, Staleness::BSP));
    assert!(!is_fresh(3, 4, Staleness::BSP));
    // Unbounded: always fresh.
    assert!(is_fresh(0, u64::MAX, Staleness::Unbounded));
}

#[test]
fn worker_clock_ticks() {
    let mut c = WorkerClock::new();
    assert_eq!(c.current(), 0);
    assert_eq!(c.tick(), 0);
    assert_eq!(c.tick(), 1);
    assert_eq!(c.current(), 2);
    assert_eq!(WorkerClock::starting_at(7).current(), 7);
}

#[test]
fn out_of_order_arrival_is_applied_in_clock_order() {
    let mut sc: ShardClock<&str> = ShardClock::new(2, false);
    assert_eq!(sc.num_workers(), 2);
    assert!(!sc.deterministic());
    // Worker 0 clocks 2 and 1 arrive before clock 0.
    assert!(sc.submit(0, 2, "a2").unwrap().is_empty());
    assert!(sc.submit(0, 1, "a1").unwrap().is_empty());
    assert_eq!(sc.pending(), 2);
    assert_eq!(sc.worker_clock(0), Some(0));
    let r = sc.submit(0, 0, "a0").unwrap();
    assert_eq!(
        r,
        vec![(0, 0, "a0"), (0, 1, "a1"), (0, 2, "a2")],
        "released in clock order"
    );
    assert_eq!(sc.worker_clock(0), Some(3));
    assert_eq!(sc.pending(), 0);
    // Worker 1 still at 0 holds the min back.
    assert_eq!(sc.min_clock(), 0);
    // Worker 1 is independent of worker 0 in non-deterministic mode.
    assert_eq!(ids(&sc.submit(1, 0, "b0").unwrap()), vec![(1, 0)]);
    assert_eq!(sc.min_clock(), 1);
    // A gap keeps later clocks held.
    assert!(sc.submit(1, 2, "b2").unwrap().is_empty());
    assert_eq!(sc.min_clock(), 1);
    assert_eq!(ids(&sc.submit(1, 1, "b1").unwrap()), vec![(1, 1), (1, 2)]);
    assert_eq!(sc.min_clock(), 3);
    assert_eq!(sc.worker_clock(2), None);
}

#[test]
fn deterministic_mode_releases_whole_clocks_in_worker_order() {
    let mut sc: ShardClock<&str> = ShardClock::new(3, true);
    assert!(sc.deterministic());
    // Arrivals: w2 c0, w1 c1, w0 c0, w2 c1, w0 c1 -- nothing can go until w1 c0.
    for (w, c, b) in [
        (2, 0, "c0"),
        (1, 1, "b1"),
        (0, 0, "a0"),
        (2, 1, "c1"),
        (0, 1, "a1"),
    ] {
        assert!(sc.submit(w, c, b).unwrap().is_empty(), "{w} {c}");
    }
    assert_eq!(sc.pending(), 5);
    assert_eq!(sc.min_clock(), 0);
    assert_eq!(
        sc.worker_clock(0),
        Some(0),
        "entries advance only on release"
    );
    let r = sc.submit(1, 0, "b0").unwrap();
    assert_eq!(
        r,
        vec![
            (0, 0, "a0"),
            (1, 0, "b0"),
            (2, 0, "c0"),
            (0, 1, "a1"),
            (1, 1, "b1"),
            (2, 1, "c1"),
        ]
    );
    assert_eq!(sc.min_clock(), 2);
    assert_eq!(sc.pending(), 0);
    for w in 0..3 {
        assert_eq!(sc.worker_clock(w), Some(2));
    }
    // A worker running ahead waits for the others.
    assert!(sc.submit(0, 2, "a2").unwrap().is_empty());
    assert!(sc.submit(0, 3, "a3").unwrap().is_empty());
    assert!(sc.submit(1, 2, "b2").unwrap().is_empty());
    assert_eq!(sc.worker_clock(0), Some(2));
    assert_eq!(
        ids(&sc.submit(2, 2, "c2").unwrap()),
        vec![(0, 2), (1, 2), (2, 2)]
    );
    assert_eq!(sc.pending(), 1);
    assert_eq!(sc.min_clock(), 3);
}

#[test]
fn errors_change_nothing() {
    for det in [false, true] {
        let mut sc: ShardClock<&'static str> = ShardClock::new(2, det);
        sc.submit(0, 0, "a0").unwrap();
        sc.submit(1, 0, "b0").unwrap();
        sc.submit(0, 2, "a2").unwrap();
        let before = snapshot(&sc);
        assert_eq!(before.0, vec![Some(1), Some(1)]);

        assert_eq!(
            sc.submit(2, 0, "x"),
            Err(SspError::UnknownWorker {
                worker: 2,
                num_workers: 2
            })
        );
        assert_eq!(
            sc.submit(0, 0, "x"),
            Err(SspError::StaleClock {
                worker: 0,
                clock: 0,
                completed: 1
            })
        );
        assert_eq!(
            sc.submit(0, 2, "x"),
            Err(SspError::DuplicateClock {
                worker: 0,
                clock: 2
            })
        );
        assert_eq!(
            sc.evict(5),
            Err(SspError::UnknownWorker {
                worker: 5,
                num_workers: 2
            })
        );
        assert_eq!(snapshot(&sc), before, "det={det}");

        // The held batch is the original one, not the rejected duplicate.
        let r = sc.submit(0, 1, "a1").unwrap();
        if det {
            assert!(r.is_empty());
            let r = sc.submit(1, 1, "b1").unwrap();
            assert_eq!(r, vec![(0, 1, "a1"), (1, 1, "b1")]);
            assert!(sc.submit(1, 2, "b2").unwrap().len() == 2);
        } else {
            assert_eq!(r, vec![(0, 1, "a1"), (0, 2, "a2")]);
        }
    }
}

#[test]
fn error_messages_are_clear() {
    let msg = SspError::StaleClock {
        worker: 3,
        clock: 1,
        completed: 4,
    }
    .to_string();
    assert!(msg.contains("worker 3") && msg.contains("clock 1"), "{msg}");
    let msg = SspError::BadStaleness("x".into()).to_string();
    assert!(msg.contains("\"x\""), "{msg}");
    let msg = SspError::UnknownWorker {
        worker: 9,
        num_workers: 2,
    }
    .to_string();
    assert!(msg.contains('9') && msg.contains('2'), "{msg}");
}

#[test]
fn parked_reads_release_at_the_right_min() {
    let mut p: ParkedReads<&str> = ParkedReads::new();
    assert!(p.is_empty());
    // Served immediately when already satisfied.
    assert_eq!(p.park(2, 2, "now"), Some("now"));
    assert_eq!(p.park(0, 0, "zero"), Some("zero"));
    assert!(p.is_empty());
    assert_eq!(p.park(3, 1, "r3"), None);
    assert_eq!(p.park(2, 1, "r2a"), None);
    assert_eq!(p.park(5, 1, "r5"), None);
    assert_eq!(p.park(2, 1, "r2b"), None);
    assert_eq!(p.len(), 4);
    assert_eq!(p.lowest_required(), Some(2));
    assert!(p.release(1).is_empty());
    assert_eq!(p.release(2), vec!["r2a", "r2b"]);
    assert_eq!(p.len(), 2);
    // Jumping past several requirements: lowest first.
    assert_eq!(p.release(7), vec!["r3", "r5"]);
    assert!(p.is_empty());
    assert_eq!(p.lowest_required(), None);

    assert_eq!(p.park(u64::MAX, 0, "max"), None);
    assert!(p.release(u64::MAX - 1).is_empty());
    assert_eq!(p.release(u64::MAX), vec!["max"]);
    assert_eq!(p.park(4, 0, "d"), None);
    assert_eq!(p.drain_all(), vec!["d"]);
    assert!(ParkedReads::<u8>::default().is_empty());
}

#[test]
fn shard_and_parked_reads_together() {
    // Worker 0 reads at clock 2 with s = 1: needs min >= 1.
    let s = Staleness::Bounded(1);
    let mut sc: ShardClock<()> = ShardClock::new(2, false);
    let mut parked: ParkedReads<u32> = ParkedReads::new();
    sc.submit(0, 0, ()).unwrap();
    sc.submit(0, 1, ()).unwrap();
    assert_eq!(
        parked.park(s.required_min_clock(2), sc.min_clock(), 0),
        None
    );
    assert!(parked.release(sc.min_clock()).is_empty());
    sc.submit(1, 0, ()).unwrap();
    assert_eq!(parked.release(sc.min_clock()), vec![0]);
}

#[test]
fn evict_unblocks_deterministic_mode_and_the_min() {
    let mut sc: ShardClock<&str> = ShardClock::new(3, true);
    sc.submit(0, 0, "a0").unwrap();
    sc.submit(2, 0, "c0").unwrap();
    sc.submit(0, 1, "a1").unwrap();
    sc.submit(1, 1, "b1").unwrap(); // worker 1 is missing clock 0
    sc.submit(2, 1, "c1").unwrap();
    assert_eq!(sc.pending(), 5);
    let r = sc.evict(1).unwrap();
    assert_eq!(ids(&r), vec![(0, 0), (2, 0), (0, 1), (2, 1)]);
    assert_eq!(sc.pending(), 0, "evicted worker's batches are dropped");
    assert_eq!(sc.min_clock(), 2);
    assert_eq!(sc.worker_clock(1), Some(0), "evicted entry is frozen");
    assert_eq!(sc.is_live(1), Some(false));
    assert_eq!(sc.is_live(0), Some(true));
    assert_eq!(sc.is_live(3), None);
    assert_eq!(sc.live_workers(), 2);
    assert_eq!(
        sc.submit(1, 0, "late"),
        Err(SspError::EvictedWorker { worker: 1 })
    );
    // Evicting twice is a no-op.
    assert!(sc.evict(1).unwrap().is_empty());
    // The remaining workers continue in lock step.
    assert!(sc.submit(2, 2, "c2").unwrap().is_empty());
    assert_eq!(ids(&sc.submit(0, 2, "a2").unwrap()), vec![(0, 2), (2, 2)]);
    // Evicting everybody: nothing left to wait for, min never goes back.
    sc.submit(0, 3, "a3").unwrap();
    assert_eq!(sc.pending(), 1);
    // Worker 0 alone now: its held clock 3 no longer waits for worker 2.
    assert_eq!(ids(&sc.evict(2).unwrap()), vec![(0, 3)]);
    assert_eq!(sc.worker_clock(0), Some(4));
    sc.submit(0, 5, "a5").unwrap();
    assert_eq!(sc.pending(), 1);
    assert!(sc.evict(0).unwrap().is_empty());
    assert_eq!(sc.live_workers(), 0);
    assert_eq!(sc.pending(), 0);
    assert_eq!(sc.min_clock(), 4);
}

#[test]
fn evict_non_deterministic_raises_the_min() {
    let mut sc: ShardClock<u8> = ShardClock::new(2, false);
    sc.submit(0, 0, 0).unwrap();
    sc.submit(0, 1, 1).unwrap();
    sc.submit(1, 1, 1).unwrap();
    assert_eq!(sc.min_clock(), 0);
    assert!(sc.evict(1).unwrap().is_empty());
    assert_eq!(sc.min_clock(), 2);
    assert_eq!(sc.pending(), 0);
}

#[test]
fn zero_workers() {
    let mut sc: ShardClock<u8> = ShardClock::new(0, true);
    assert_eq!(sc.min_clock(), 0);
    assert!(matches!(
        sc.submit(0, 0, 1),
        Err(SspError::UnknownWorker { .. })
    ));
}

#[test]
fn restored_deterministic_vector_releases_the_next_clock_in_worker_order() {
    // Three workers at clock 4, worker 1 evicted at clock 2 (before the checkpoint).
    let mut sc: ShardClock<&str> =
        ShardClock::restored(vec![4, 2, 4], vec![true, false, true], true).unwrap();
    assert!(sc.deterministic());
    assert_eq!(sc.num_workers(), 3);
    assert_eq!(sc.completed(), &[4, 2, 4]);
    assert_eq!(sc.live(), &[true, false, true]);
    assert_eq!((sc.min_clock(), sc.pending(), sc.live_workers()), (4, 0, 2));
    // A resent clock the checkpoint already holds is refused; the evicted worker stays out.
    assert_eq!(
        sc.submit(0, 3, "old"),
        Err(SspError::StaleClock {
            worker: 0,
            clock: 3,
            completed: 4
        })
    );
    assert_eq!(
        sc.submit(1, 4, "x"),
        Err(SspError::EvictedWorker { worker: 1 })
    );
    // Clock 4 goes as a whole, in worker order, once every live worker is in; 5 waits for both.
    assert!(sc.submit(2, 4, "c4").unwrap().is_empty());
    assert!(sc.submit(2, 5, "c5").unwrap().is_empty());
    assert_eq!(
        sc.submit(0, 4, "a4").unwrap(),
        vec![(0, 4, "a4"), (2, 4, "c4")]
    );
    assert_eq!(sc.min_clock(), 5);
    assert_eq!(
        sc.submit(0, 5, "a5").unwrap(),
        vec![(0, 5, "a5"), (2, 5, "c5")]
    );
    assert_eq!(sc.completed(), &[6, 2, 6]);

    // A fresh vector restored at 0 behaves like `new`.
    let mut zero: ShardClock<&str> = ShardClock::restored(vec![0, 0], vec![true; 2], true).unwrap();
    assert!(zero.submit(1, 0, "b0").unwrap().is_empty());
    assert_eq!(ids(&zero.submit(0, 0, "a0").unwrap()), vec![(0, 0), (1, 0)]);
}

#[test]
fn restored_free_running_vector_keeps_each_workers_own_clock() {
    // Non-deterministic mode: worker 0 ran ahead to 7, worker 1 is at 5.
    let mut sc: ShardClock<&str> =
        ShardClock::restored(vec![7, 5], vec![true, true], false).unwrap();
    assert!(!sc.deterministic());
    assert_eq!(
        (sc.min_clock(), sc.worker_clock(0), sc.worker_clock(1)),
        (5, Some(7), Some(5))
    );
    assert!(matches!(
        sc.submit(0, 6, "old"),
        Err(SspError::StaleClock { completed: 7, .. })
    ));
    // Worker 1's resent clocks 5 and 6 (6 first) release in clock order.
    assert!(sc.submit(1, 6, "b6").unwrap().is_empty());
    assert_eq!(ids(&sc.submit(1, 5, "b5").unwrap()), vec![(1, 5), (1, 6)]);
    assert_eq!(sc.min_clock(), 7);
    assert_eq!(ids(&sc.submit(0, 7, "a7").unwrap()), vec![(0, 7)]);
    assert_eq!(sc.completed(), &[8, 7]);
    // No live worker: the min is the highest clock, as for an evicted-out vector.
    let gone: ShardClock<()> = ShardClock::restored(vec![3, 9], vec![false; 2], false).unwrap();
    assert_eq!(gone.min_clock(), 9);
    let none: ShardClock<()> = ShardClock::restored(vec![], vec![], true).unwrap();
    assert_eq!((none.num_workers(), none.min_clock()), (0, 0));
}

#[test]
fn restoring_an_impossible_vector_is_refused() {
    let bad = |c: Vec<u64>, l: Vec<bool>, det: bool| match ShardClock::<()>::restored(c, l, det) {
        Err(SspError::BadRestore(why)) => why,
        other => panic!("accepted: {other:?}"),
    };
    assert!(bad(vec![1, 2], vec![true], false).contains("2 completed clocks but 1"));
    let why = bad(vec![3, 4], vec![true, true], true);
    assert!(why.contains("live worker 1 stands at clock 4"), "{why}");
    let why = bad(vec![3, 5], vec![true, false], true);
    assert!(why.contains("evicted worker 1"), "{why}");
    // The same vectors are fine where they can occur.
    assert!(ShardClock::<()>::restored(vec![3, 4], vec![true, true], false).is_ok());
    assert!(ShardClock::<()>::restored(vec![3, 1], vec![true, false], true).is_ok());
}
