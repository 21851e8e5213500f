//! The LDA session's resident path (the one a GPU engine takes), run here with its CPU oracle
//! `HostLdaResident` wrapping the same engine as the host path: over several clocks of the
//! built-in job every clock's pushed delta and log-likelihood, and the final figures and table,
//! are bit for bit those of the host path, whatever order the pulled runs arrive in; and the
//! oracle refuses bad states and loads with typed errors.

use ps_apps::app::testing::{run_bsp, BspRun, FakePs, Updates};
use ps_apps::app::{App, CpuEngines, Engines, JobCommon, OracleEngines, Session, WorkerContext};
use ps_apps::lda::{
    synthetic_lda, CpuLda, HostLdaResident, LdaApp, LdaArgs, LdaClock, LdaCompute, LdaHyper,
    LdaResident, LdaWorkerState, SparseLda, SweepKey, SyntheticLdaSpec,
};
use ps_apps::lr::LrCompute;
use ps_apps::mf::MfCompute;
use ps_apps::mlp::MlpCompute;
use ps_apps::AppError;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The host engines of `base`, with the resident LDA oracle on the same LDA engine.
struct Resident<E: Engines> {
    base: E,
}

impl<E: Engines> Engines for Resident<E> {
    fn device(&self) -> String {
        "cpu-resident".into()
    }
    fn mf(&self, t: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        self.base.mf(t)
    }
    fn lda(&self, _t: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        Err(AppError::Settings(
            "the resident path must not ask for a host engine".into(),
        ))
    }
    fn mlp(&self, t: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        self.base.mlp(t)
    }
    fn lr(&self, t: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        self.base.lr(t)
    }
    fn lda_resident(&self) -> Result<Option<Box<dyn LdaResident>>, AppError> {
        Ok(Some(Box::new(HostLdaResident::new(self.base.lda(1)?))))
    }
}

const WORKERS: u32 = 2;

fn job() -> JobCommon {
    JobCommon {
        workers: WORKERS,
        seed: 42,
        threads: 1,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

fn run(clocks: u64, engines: &dyn Engines) -> BspRun<LdaApp> {
    let plan = LdaApp.plan(&LdaArgs::default(), &job()).unwrap();
    run_bsp(&LdaApp, &plan, WORKERS, clocks, engines).unwrap()
}

/// Per clock, per worker: figures and update, as [`BspRun::clocks`].
type Clocks = Vec<Vec<(LdaClock, Updates)>>;

fn assert_same_clocks(host: &Clocks, res: &Clocks) {
    assert_eq!(host.len(), res.len());
    for (c, (h, r)) in host.iter().zip(res).enumerate() {
        for (w, ((hc, hu), (rc, ru))) in h.iter().zip(r).enumerate() {
            assert_eq!(hc.clock_loglik, rc.clock_loglik, "clock {c} worker {w}");
            assert_eq!(hc.clock_tokens, rc.clock_tokens, "clock {c} worker {w}");
            assert!(c == 0 || rc.clock_tokens > 0.0);
            assert!(
                hu.same_as(ru),
                "clock {c} worker {w}: the pushed deltas differ"
            );
            // The resident engine's sweeps come encoded for the wire, a payload a frame block.
            assert_eq!(c > 0, ru.encoded > 0, "clock {c} worker {w}");
            assert_eq!(hu.encoded, 0);
            assert!(c == 0 || !ru.blocks.is_empty(), "clock {c}: nothing moved");
            // The oracle counts what a device engine would copy (clock 0 reads nothing) and
            // times its compute as the device's; it has no copy time. The host path, nothing.
            let d = rc.device;
            assert_eq!(hc.device, Default::default());
            assert_eq!((d.pcie_h2d_s, d.pcie_d2h_s), (0.0, 0.0));
            assert_eq!(c == 0, d.pcie_h2d == 0.0, "clock {c} worker {w}: {d:?}");
            assert_eq!(c == 0, d.pcie_d2h == 0.0, "clock {c} worker {w}: {d:?}");
        }
    }
}

/// Every clock's figures and pushes, and the finals, are identical on both paths.
fn assert_same(host: &BspRun<LdaApp>, res: &BspRun<LdaApp>) {
    assert_same_clocks(&host.clocks, &res.clocks);
    for (w, (h, r)) in host.finals.iter().zip(&res.finals).enumerate() {
        assert_eq!(h.sums.final_loglik, r.sums.final_loglik, "worker {w}");
        assert_eq!(h.sums.final_tokens, r.sums.final_tokens, "worker {w}");
        assert_eq!(h.sums.tokens_swept, r.sums.tokens_swept, "worker {w}");
        assert_eq!(h.sums.device, Default::default());
        let d = r.sums.device;
        assert!(d.pcie_h2d > 0.0 && d.pcie_d2h > 0.0, "worker {w}: {d:?}");
        assert_eq!((d.pcie_h2d_s, d.pcie_d2h_s), (0.0, 0.0));
        assert_eq!(h.facts.topic_recovery, r.facts.topic_recovery, "worker {w}");
        assert_eq!(
            h.facts.word_topic_hash, r.facts.word_topic_hash,
            "worker {w}"
        );
    }
    assert!(host.finals[0].facts.word_topic_hash.is_some());
}

#[test]
fn resident_path_matches_the_host_path_on_the_builtin_job() {
    // SparseLDA on both paths, 6 clocks (the initial push and five sweeps).
    let host = run(6, &CpuEngines);
    let res = run(6, &Resident { base: CpuEngines });
    assert_same(&host, &res);
    let ll = |r: &BspRun<LdaApp>, c: usize| {
        let (l, n) = r.clocks[c].iter().fold((0.0, 0.0), |a, (f, _)| {
            (a.0 + f.clock_loglik, a.1 + f.clock_tokens)
        });
        l / n
    };
    eprintln!(
        "built-in, resident path: loglik/token {:.4} at clock 1, {:.4} at clock 5",
        ll(&res, 1),
        ll(&res, 5)
    );
    assert!(ll(&res, 5) > ll(&res, 1), "it learns");
}

#[test]
fn resident_path_matches_the_host_path_on_the_oracle() {
    let host = run(4, &OracleEngines);
    let res = run(
        4,
        &Resident {
            base: OracleEngines,
        },
    );
    assert_same(&host, &res);
}

/// A lockstep run like [`run_bsp`]'s clocks, but each read's rows arrive in runs of random
/// lengths in a random order (tables interleaved).
fn shuffled(clocks: u64, engines: &dyn Engines, seed: u64) -> Clocks {
    let plan = LdaApp.plan(&LdaArgs::default(), &job()).unwrap();
    let mut ps = FakePs::new(&plan.tables).unwrap();
    let mut sessions: Vec<Box<dyn Session<LdaApp>>> = (0..WORKERS)
        .map(|worker| {
            let ctx = WorkerContext {
                worker,
                workers: WORKERS,
                engines,
                rejoin: Default::default(),
            };
            LdaApp.session(plan.settings.clone(), &ctx).unwrap()
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for clock in 0..clocks {
        let mut this = Vec::new();
        for s in sessions.iter_mut() {
            let mut runs = Vec::new();
            for r in s.reads(clock).unwrap() {
                let mut at = 0;
                while at < r.rows.len() {
                    let n = rng.gen_range(1..=(r.rows.len() - at).min(64));
                    runs.push((r.table, at, r.rows[at..at + n].to_vec()));
                    at += n;
                }
            }
            runs.shuffle(&mut rng);
            for (table, first, keys) in &runs {
                s.load(*table, *first, keys, &ps.read(*table, keys))
                    .unwrap();
            }
            this.push(ps.run_clock(s.as_mut(), clock).unwrap());
        }
        for (_, u) in &this {
            ps.apply(u);
        }
        out.push(this);
    }
    out
}

#[test]
fn runs_arriving_in_any_order_give_the_same_pushes() {
    let host = run(4, &CpuEngines);
    for seed in [1, 2] {
        let res = shuffled(4, &Resident { base: CpuEngines }, seed);
        assert_same_clocks(&host.clocks, &res);
    }
}

fn small_state() -> (LdaWorkerState, LdaHyper) {
    let mut spec = SyntheticLdaSpec::default_builtin(3);
    spec.docs = 20;
    let syn = synthetic_lda(&spec);
    let hyper = LdaHyper::default();
    let (state, _) =
        LdaWorkerState::init(&syn.corpus.docs, syn.corpus.vocab_size, &hyper, 3, 0).unwrap();
    (state, hyper)
}

#[test]
fn the_oracle_sweeps_like_its_engine() {
    let (mut state, hyper) = small_state();
    let k = hyper.topics as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut wt: Vec<f32> = (0..state.words.len() * k)
        .map(|_| rng.gen_range(0..5) as f32)
        .collect();
    let mut totals: Vec<f32> = (0..k).map(|_| rng.gen_range(50..90) as f32).collect();
    let mut e = HostLdaResident::new(Box::new(SparseLda::new()));
    e.setup(&state, &hyper).unwrap();
    // Rows in three runs, the last first.
    let n = state.words.len();
    for (lo, hi) in [(2 * n / 3, n), (0, n / 3), (n / 3, 2 * n / 3)] {
        e.load_rows(lo, &wt[lo * k..hi * k]).unwrap();
    }
    e.load_totals(&totals).unwrap();
    let key = SweepKey {
        seed: 3,
        worker: 0,
        clock: 1,
    };
    let ll = ps_apps::lda::loglik(&state, &wt, &totals, &hyper);
    assert_eq!(e.loglik().unwrap(), ll);
    let got = e.sweep(key).unwrap();
    let want = SparseLda::new()
        .sweep(&mut state, &mut wt, &mut totals, &hyper, key)
        .unwrap();
    assert_eq!(got, want);
    let mut back = state.clone();
    back.z.iter_mut().for_each(|z| *z = 0);
    e.download_state(&mut back).unwrap();
    assert_eq!(back, state);
}

#[test]
fn the_oracle_refuses_bad_states_and_loads() {
    let (state, hyper) = small_state();
    let k = hyper.topics as usize;
    let mut e = HostLdaResident::new(Box::new(CpuLda::new()));
    assert!(e.load_totals(&vec![0.0; k]).is_err(), "before setup");
    assert!(e.loglik().is_err(), "before setup");
    let wrong = LdaHyper {
        topics: hyper.topics + 1,
        ..hyper
    };
    assert!(e.setup(&state, &wrong).is_err(), "topic count");
    let mut bad = state.clone();
    bad.z[0] = hyper.topics;
    assert!(e.setup(&bad, &hyper).is_err(), "topic out of range");
    let mut bad = state.clone();
    bad.tokens[0] = state.words.len() as u32;
    assert!(e.setup(&bad, &hyper).is_err(), "word row out of range");
    let mut bad = state.clone();
    bad.doc_topic.pop();
    assert!(e.setup(&bad, &hyper).is_err(), "doc-topic shape");
    e.setup(&state, &hyper).unwrap();
    let n = state.words.len();
    assert!(e.load_rows(n, &vec![0.0; k]).is_err(), "past the last row");
    assert!(e.load_rows(0, &vec![0.0; k - 1]).is_err(), "a partial row");
    assert!(e.load_totals(&vec![0.0; k + 1]).is_err(), "totals width");
    e.load_rows(n - 1, &vec![1.0; k]).unwrap();
    let mut other = state.clone();
    other.z.push(0);
    assert!(e.download_state(&mut other).is_err(), "another state");
}

/// A worker that may rejoin (`--on-worker-failure wait`) on the resident path, dying after its
/// last push: its next life starts from the log's snapshot (the shards held the first clocks
/// for good, two clocks behind), sends nothing new for the clocks the snapshot covers, pushes
/// the logged clocks after it exactly as its first life did, and hands the replayed state to
/// the engine before its final log-likelihood, which is then its first life's.
#[test]
fn a_rejoined_resident_worker_replays_its_log_and_ends_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let engines = Resident { base: CpuEngines };
    let mut job = job();
    job.workers = 1;
    let plan = LdaApp.plan(&LdaArgs::default(), &job).unwrap();
    let ctx = WorkerContext {
        worker: 0,
        workers: 1,
        engines: &engines,
        rejoin: ps_apps::app::Rejoin::Replay {
            state_dir: Some(dir.path()),
            run: 7,
        },
    };
    let clocks = 12u64;
    let mut ps = FakePs::new(&plan.tables).unwrap();
    let mut first = LdaApp.session(plan.settings.clone(), &ctx).unwrap();
    let mut pushed = Vec::new();
    for clock in 0..clocks {
        let reads = first.reads(clock).unwrap();
        ps.feed_session(&reads, first.as_mut()).unwrap();
        let (_, u) = ps.run_clock(first.as_mut(), clock).unwrap();
        ps.apply(&u);
        pushed.push(u);
        first.durable(clock.saturating_sub(1)).unwrap();
    }
    let reads = first.final_reads().unwrap();
    ps.feed_session(&reads, first.as_mut()).unwrap();
    let ended = first.evaluate().unwrap();
    drop(first);

    // The next life reads the shards' model as it now is; the shards drop what it pushes.
    let mut again = LdaApp.session(plan.settings.clone(), &ctx).unwrap();
    let (mut covered, mut replayed) = (0, 0);
    for clock in 0..clocks {
        let reads = again.reads(clock).unwrap();
        ps.feed_session(&reads, again.as_mut()).unwrap();
        let (figures, u) = ps.run_clock(again.as_mut(), clock).unwrap();
        if u.same_as(&pushed[clock as usize]) {
            replayed += 1;
        } else {
            assert!(clock > 0, "clock 0 pushes the initial counts again");
            let nothing = u.blocks.iter().all(|(_, _, v)| v.iter().all(|&x| x == 0.0));
            assert!(
                nothing,
                "clock {clock}: a push that is neither the first life's nor empty"
            );
            assert_eq!(figures.unmeasured, 1.0, "clock {clock}");
            covered += 1;
        }
    }
    assert!(
        covered > 0 && replayed > 1,
        "covered {covered}, replayed {replayed}"
    );
    let reads = again.final_reads().unwrap();
    ps.feed_session(&reads, again.as_mut()).unwrap();
    let back = again.evaluate().unwrap();
    assert_eq!(back.sums.final_loglik, ended.sums.final_loglik);
    assert_eq!(back.sums.final_tokens, ended.sums.final_tokens);
    assert_eq!(back.facts.word_topic_hash, ended.facts.word_topic_hash);
}
