//! Property tests over random interleavings.
//!
//! A small deterministic simulation of workers and shards is driven by proptest-generated
//! scheduling choices: which in-flight message is delivered next (update batches, pulls and pull
//! replies may be reordered arbitrarily) and which worker steps next (one worker may be slow).
//! The simulation checks the SSP read guarantee, the staleness bound, liveness (no deadlock) and,
//! in deterministic mode, that the application order does not depend on the interleaving.
//!
//! The simulation lives in `interleavings/sim.rs` (its end-of-read and end-of-run checks in
//! `interleavings/sim/checks.rs`); `interleavings/shard_clock.rs` drives `ShardClock` alone.

#[path = "interleavings/shard_clock.rs"]
mod shard_clock;
#[path = "interleavings/sim.rs"]
mod sim;

use proptest::prelude::*;
use ps_ssp::Staleness;

use sim::{Chooser, Config, Sim};

fn staleness_strategy() -> impl Strategy<Value = Staleness> {
    prop_oneof![
        Just(Staleness::Bounded(0)),
        Just(Staleness::Bounded(1)),
        Just(Staleness::Bounded(2)),
        Just(Staleness::Unbounded),
    ]
}

prop_compose! {
    fn config_strategy()(
        workers in 2u32..=4,
        shards in 1u32..=3,
        staleness in staleness_strategy(),
        deterministic in any::<bool>(),
        clocks in 2u64..=6,
        slow in proptest::option::of(0u32..4),
    ) -> Config {
        Config { workers, shards, staleness, deterministic, clocks, slow: slow.filter(|s| *s < workers) }
    }
}

fn choices_strategy() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random interleavings: read guarantee, staleness bound, per-worker clock order, liveness.
    #[test]
    fn ssp_guarantee_bound_and_liveness(
        cfg in config_strategy(),
        choices in choices_strategy(),
        seed in any::<u64>(),
    ) {
        let expected_reads = cfg.clocks * u64::from(cfg.workers);
        let out = Sim::new(cfg).run(&mut Chooser::new(choices, seed))?;
        prop_assert_eq!(out.reads_served, expected_reads);
    }

    /// Deterministic mode: two different delivery interleavings give the same application order
    /// per shard, and bit-identical tables.
    #[test]
    fn deterministic_mode_is_interleaving_independent(
        cfg in config_strategy(),
        choices_a in choices_strategy(),
        seed_a in any::<u64>(),
        choices_b in choices_strategy(),
        seed_b in any::<u64>(),
    ) {
        let cfg = Config { deterministic: true, ..cfg };
        let a = Sim::new(cfg.clone()).run(&mut Chooser::new(choices_a, seed_a))?;
        let b = Sim::new(cfg).run(&mut Chooser::new(choices_b, seed_b))?;
        prop_assert_eq!(a.applied, b.applied);
        prop_assert_eq!(a.tables, b.tables);
    }
}

/// Staleness 0 with a slow worker really blocks: fast workers must pull and wait.
#[test]
fn bsp_with_a_slow_worker_needs_pulls() {
    let cfg = Config {
        workers: 3,
        shards: 2,
        staleness: Staleness::Bounded(0),
        deterministic: false,
        clocks: 5,
        slow: Some(1),
    };
    let out = Sim::new(cfg)
        .run(&mut Chooser::new(Vec::new(), 7))
        .expect("simulation");
    assert_eq!(out.reads_served, 15);
    assert!(out.pulls > 0);
}
