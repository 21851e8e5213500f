//! Loader, generator, split, shard and CPU-oracle tests for the MF app.

use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;
use ps_apps::mf::{
    init_user_factors, load_ratings, split_train_test, squared_error, synthetic, worker_shard,
    CpuMf, MfCompute, Rating, RatingSet, SyntheticSpec,
};
use ps_apps::DataError;

fn write_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).expect("create temp file");
    f.write_all(content).expect("write temp file");
    path
}

fn r(user: u32, item: u32, value: f32) -> Rating {
    Rating { user, item, value }
}

/// The expected result for the small files below: file users {10, 3, 7},
/// items {500, 20}; dense ids are assigned in sorted order.
fn expected() -> Vec<Rating> {
    vec![r(2, 1, 4.0), r(0, 0, 3.5), r(1, 1, 1.0), r(2, 0, 5.0)]
}

fn check_set(set: &RatingSet) {
    assert_eq!(set.num_users, 3);
    assert_eq!(set.num_items, 2);
    assert_eq!(set.ratings, expected());
}

#[test]
fn loads_u_data_tab_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        &dir,
        "u.data",
        b"10\t500\t4\t881250949\n3\t20\t3.5\t891717742\n7\t500\t1\t878887116\n10\t20\t5\t880606923\n",
    );
    check_set(&load_ratings(&p).unwrap());
}

#[test]
fn loads_ratings_csv_with_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        &dir,
        "ratings.csv",
        b"userId,movieId,rating,timestamp\r\n10,500,4.0,964982703\r\n3,20,3.5,964981247\r\n7,500,1.0,964982224\r\n10,20,5.0,964983815\r\n",
    );
    check_set(&load_ratings(&p).unwrap());
}

#[test]
fn loads_ratings_dat_double_colon() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        &dir,
        "ratings.dat",
        b"10::500::4::978300760\n3::20::3.5::978302109\n7::500::1::978301968\n10::20::5::978300275\n",
    );
    check_set(&load_ratings(&p).unwrap());
}

#[test]
fn loads_plain_csv_with_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        &dir,
        "plain.txt",
        b"# user,item,rating\n\n10,500,4\n3,20,3.5\n\n7, 500, 1\n# trailing comment\n10,20,5\n\n",
    );
    check_set(&load_ratings(&p).unwrap());
}

fn expect_malformed(name: &str, content: &[u8], line: u64, reason_contains: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, name, content);
    let err = load_ratings(&p).expect_err("malformed file must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{name}:{line}")),
        "message {msg:?} should name {name}:{line}"
    );
    assert!(
        msg.contains(&p.display().to_string()),
        "message {msg:?} should name the full path"
    );
    match err {
        DataError::Malformed {
            line: l, reason, ..
        } => {
            assert_eq!(l, line);
            assert!(
                reason.contains(reason_contains),
                "reason {reason:?} should mention {reason_contains:?}"
            );
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn rejects_malformed_u_data() {
    expect_malformed("u.data", b"1\t2\t3\t4\n1\t2\t3\n", 2, "field count");
    expect_malformed("u.data", b"1\t2\t3\t4\nx\t2\t3\t4\n", 2, "user id");
    expect_malformed("u.data", b"1\t2\t3\t4\n1\t2\t3\tnope\n", 2, "timestamp");
}

#[test]
fn rejects_malformed_ratings_csv() {
    expect_malformed(
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,3.0,4\n1,abc,3.0,5\n",
        3,
        "item id",
    );
    expect_malformed(
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,3.0,4\n1,3,NaN,5\n",
        3,
        "non-finite",
    );
    expect_malformed(
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,3.0\n",
        2,
        "field count",
    );
}

#[test]
fn rejects_malformed_ratings_dat() {
    expect_malformed(
        "ratings.dat",
        b"1::2::3::4\n1::2::inf::4\n",
        2,
        "non-finite",
    );
    expect_malformed("ratings.dat", b"1::2::3::4\n\n1::2::3\n", 3, "field count");
    expect_malformed("ratings.dat", b"1::2::3::4\n-1::2::3::4\n", 2, "user id");
}

#[test]
fn rejects_malformed_plain() {
    expect_malformed("plain.csv", b"# c\n1,2,3\n1,2\n", 3, "field count");
    expect_malformed("plain.csv", b"1,2,3\n1,2,three\n", 2, "rating");
    expect_malformed("plain.csv", b"1,2,3\n1,2,3\xff\n", 2, "UTF-8");
    expect_malformed("plain.csv", b"just some words\n", 1, "detect");
}

#[test]
fn empty_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.csv", &b""[..]),
        ("blank.csv", &b"\n\n# only a comment\n"[..]),
        ("ratings.csv", &b"userId,movieId,rating,timestamp\n"[..]),
    ] {
        let p = write_file(&dir, name, content);
        match load_ratings(&p) {
            Err(DataError::Empty { path }) => assert!(path.ends_with(name)),
            other => panic!("{name}: expected Empty, got {other:?}"),
        }
    }
}

#[test]
fn missing_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("does-not-exist.csv");
    let err = load_ratings(&p).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.csv"));
}

#[test]
fn synthetic_is_deterministic_and_covers_everything() {
    let spec = SyntheticSpec {
        users: 300,
        items: 120,
        ratings: 6_000,
        rank: 4,
        noise_sigma: 0.1,
        item_zipf: 0.0,
        seed: 42,
    };
    let a = synthetic(&spec);
    let b = synthetic(&spec);
    assert_eq!(a.ratings, b.ratings);
    assert_eq!(a.ratings.len(), 6_000);
    let c = synthetic(&SyntheticSpec { seed: 43, ..spec });
    assert_ne!(a.ratings, c.ratings);

    let mut user_seen = vec![false; 300];
    let mut item_seen = [false; 120];
    let mut pairs = std::collections::HashSet::new();
    let mut sum = 0.0f64;
    let mut sum2 = 0.0f64;
    for r in &a.ratings {
        assert!(r.user < a.num_users && r.item < a.num_items);
        assert!(r.value.is_finite());
        user_seen[r.user as usize] = true;
        item_seen[r.item as usize] = true;
        assert!(pairs.insert((r.user, r.item)), "duplicate pair {r:?}");
        sum += f64::from(r.value);
        sum2 += f64::from(r.value).powi(2);
    }
    assert!(user_seen.iter().all(|&s| s), "every user has ratings");
    assert!(item_seen.iter().all(|&s| s), "every item has ratings");
    let n = a.ratings.len() as f64;
    let var = sum2 / n - (sum / n).powi(2);
    assert!(
        (0.6..1.6).contains(&var),
        "rating variance {var} should be ~1"
    );
}

#[test]
fn builtin_spec_meets_size_targets() {
    let spec = SyntheticSpec::default_builtin(1);
    assert!(spec.users >= 2_000 && spec.items >= 1_000);
    assert!(spec.ratings >= 100_000 && spec.rank >= 8);
    assert_eq!(spec.noise_sigma, 0.1);
}

#[test]
fn synthetic_more_items_than_users_and_dense() {
    // Covering works when items > users, and the dense path is exact.
    let spec = SyntheticSpec {
        users: 5,
        items: 40,
        ratings: 190,
        rank: 2,
        noise_sigma: 0.0,
        item_zipf: 0.0,
        seed: 1,
    };
    let s = synthetic(&spec);
    assert_eq!(s.ratings.len(), 190);
    let items: std::collections::HashSet<u32> = s.ratings.iter().map(|r| r.item).collect();
    assert_eq!(items.len(), 40);
    // Requesting more than users*items clamps.
    let full = synthetic(&SyntheticSpec {
        ratings: 10_000,
        ..spec
    });
    assert_eq!(full.ratings.len(), 200);
}

#[test]
fn split_is_deterministic_and_near_fraction() {
    let set = synthetic(&SyntheticSpec {
        users: 200,
        items: 100,
        ratings: 10_000,
        rank: 4,
        noise_sigma: 0.1,
        item_zipf: 0.0,
        seed: 3,
    });
    let (tr1, te1) = split_train_test(&set, 0.1, 9);
    let (tr2, te2) = split_train_test(&set, 0.1, 9);
    assert_eq!(tr1, tr2);
    assert_eq!(te1, te2);
    assert_eq!(tr1.len() + te1.len(), set.ratings.len());
    let frac = te1.len() as f64 / set.ratings.len() as f64;
    assert!((0.08..0.12).contains(&frac), "test fraction {frac}");
    let (_, te3) = split_train_test(&set, 0.1, 10);
    assert_ne!(te1, te3, "different seed, different split");
    let (all, none) = split_train_test(&set, 0.0, 9);
    assert_eq!((all.len(), none.len()), (set.ratings.len(), 0));
}

#[test]
fn worker_shard_partitions_all_ratings_exactly_once() {
    let set = synthetic(&SyntheticSpec {
        users: 101,
        items: 50,
        ratings: 3_000,
        rank: 3,
        noise_sigma: 0.1,
        item_zipf: 0.0,
        seed: 5,
    });
    let (train, test) = split_train_test(&set, 0.2, 1);
    for workers in [1u32, 2, 3, 7] {
        let mut back_train = Vec::new();
        let mut back_test = Vec::new();
        let mut owners = vec![0u32; set.num_users as usize];
        for w in 0..workers {
            let s = worker_shard(&train, &test, workers, w);
            assert!(s.users.windows(2).all(|p| p[0] < p[1]), "ascending");
            for &u in &s.users {
                assert_eq!(u % workers, w);
                owners[u as usize] += 1;
            }
            for x in &s.train {
                back_train.push(Rating {
                    user: s.users[x.user as usize],
                    ..*x
                });
            }
            for x in &s.test {
                back_test.push(Rating {
                    user: s.users[x.user as usize],
                    ..*x
                });
            }
        }
        assert!(owners.iter().all(|&c| c == 1), "each user owned once");
        let key = |r: &Rating| (r.user, r.item);
        let mut a = train.clone();
        a.sort_by_key(key);
        back_train.sort_by_key(key);
        assert_eq!(a, back_train);
        let mut b = test.clone();
        b.sort_by_key(key);
        back_test.sort_by_key(key);
        assert_eq!(b, back_test);
    }
}

proptest! {
    #[test]
    fn worker_shard_partition_prop(
        raw in proptest::collection::vec((0u32..40, 0u32..30, -5.0f32..5.0), 0..200),
        workers in 1u32..6,
    ) {
        let ratings: Vec<Rating> = raw.iter().map(|&(u, i, v)| r(u, i, v)).collect();
        let (train, test) = ratings.split_at(ratings.len() / 2);
        let mut n_train = 0;
        let mut n_test = 0;
        for w in 0..workers {
            let s = worker_shard(train, test, workers, w);
            for x in s.train.iter().chain(&s.test) {
                prop_assert!((x.user as usize) < s.users.len());
            }
            n_train += s.train.len();
            n_test += s.test.len();
        }
        prop_assert_eq!(n_train, train.len());
        prop_assert_eq!(n_test, test.len());
    }
}

#[test]
fn init_user_factors_depends_only_on_seed_and_global_id() {
    let a = init_user_factors(&[3, 8, 11], 4, 99);
    let b = init_user_factors(&[8], 4, 99);
    assert_eq!(&a[4..8], &b[..]);
    assert_eq!(a, init_user_factors(&[3, 8, 11], 4, 99));
    assert_ne!(a, init_user_factors(&[3, 8, 11], 4, 100));
    assert!(a.iter().all(|x| x.is_finite() && x.abs() < 1.0));
}

#[test]
fn squared_error_matches_hand_computation() {
    // rank 2: u0 = (1, 2), u1 = (0.5, -1); v0 = (3, 0), v1 = (1, 1)
    let users = [1.0, 2.0, 0.5, -1.0];
    let items = [3.0, 0.0, 1.0, 1.0];
    let ratings = [r(0, 0, 4.0), r(0, 1, 2.0), r(1, 1, 0.0)];
    // predictions: 3, 3, -0.5 -> errors 1, -1, 0.5 -> sse 2.25
    let (sse, n) = squared_error(&ratings, &users, &items, 2);
    assert_eq!(n, 3);
    assert!((sse - 2.25).abs() < 1e-9, "sse {sse}");
    assert_eq!(squared_error(&[], &users, &items, 2), (0.0, 0));
}

#[test]
fn cpu_sgd_single_step_matches_formula() {
    let mut users = vec![1.0f32, 2.0];
    let mut items = vec![3.0f32, 0.5];
    let lr = 0.1;
    let reg = 0.01;
    let sse = CpuMf
        .sgd_epoch(&[r(0, 0, 5.0)], &mut users, &mut items, 2, lr, reg)
        .unwrap();
    // pred = 3 + 1 = 4, e = 1
    assert!((sse - 1.0).abs() < 1e-9);
    let exp_u = [1.0 + lr * (3.0 - reg * 1.0), 2.0 + lr * (0.5 - reg * 2.0)];
    let exp_v = [3.0 + lr * (1.0 - reg * 3.0), 0.5 + lr * (2.0 - reg * 0.5)];
    for k in 0..2 {
        assert!((users[k] - exp_u[k]).abs() < 1e-6);
        assert!((items[k] - exp_v[k]).abs() < 1e-6);
    }
    assert_eq!(CpuMf.name(), "cpu");
}

#[test]
fn cpu_sgd_reduces_error_on_tiny_problem() {
    let set = synthetic(&SyntheticSpec {
        users: 30,
        items: 20,
        ratings: 400,
        rank: 2,
        noise_sigma: 0.0,
        item_zipf: 0.0,
        seed: 8,
    });
    let rank = 2usize;
    let all_users: Vec<u32> = (0..set.num_users).collect();
    let mut users = init_user_factors(&all_users, rank as u32, 1);
    let mut items = ps_apps::mf::init_item_factors(set.num_items, rank as u32, 0.1, 2);
    let (before, n) = squared_error(&set.ratings, &users, &items, rank);
    let mut cpu = CpuMf;
    let mut last_epoch_sse = f64::INFINITY;
    for _ in 0..200 {
        last_epoch_sse = cpu
            .sgd_epoch(&set.ratings, &mut users, &mut items, rank, 0.05, 0.0)
            .unwrap();
    }
    let (after, _) = squared_error(&set.ratings, &users, &items, rank);
    assert!(
        after < 0.05 * before,
        "sse before {before} after {after} over {n}"
    );
    assert!(last_epoch_sse < 0.1 * before);
}
