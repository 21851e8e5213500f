//! Whole jobs through the `ps-cluster` binary: the README's job, determinism, a lone worker's
//! model at every staleness, staleness with a straggler, an emulated link, codecs, and the
//! roles started as separate commands.

use crate::common::{ps_cluster, summary};

/// The main job, as the README runs it, reaches the noise floor.
#[test]
fn local_mf_job_reaches_the_noise_floor() {
    let out = ps_cluster(&["local", "--app", "mf"]);
    let s = summary(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("clock")).count(),
        20,
        "{stdout}"
    );
    for key in [
        "app",
        "servers",
        "workers",
        "staleness",
        "clocks",
        "wall_s",
        "compute_s",
        "comm_s",
        "blocked_s",
        "bytes_sent",
        "bytes_received",
        "train_rmse",
        "test_rmse",
        "noise_sigma",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
    assert_eq!(
        (s["servers"].as_u64(), s["workers"].as_u64()),
        (Some(2), Some(2))
    );
    let (rmse, sigma) = (
        s["test_rmse"].as_f64().unwrap(),
        s["noise_sigma"].as_f64().unwrap(),
    );
    assert!(
        rmse <= 1.15 * sigma,
        "test_rmse {rmse} above 1.15 x sigma {sigma}"
    );
    assert!(s["bytes_sent"].as_u64().unwrap() > 0);
}

/// (b) --deterministic gives bit-identical item tables in two runs with one seed.
#[test]
fn deterministic_runs_are_bit_identical() {
    let args = [
        "local",
        "--app",
        "mf",
        "--deterministic",
        "--clocks",
        "6",
        "--seed",
        "7",
        "--workers",
        "3",
        "--slow-worker",
        "1:20",
    ];
    let a = summary(&ps_cluster(&args));
    let b = summary(&ps_cluster(&args));
    assert_eq!(a["item_table_hash"], b["item_table_hash"]);
    assert!(a["item_table_hash"].is_string());
    assert!(
        !ps_cluster(&["local", "--deterministic", "--staleness", "2"])
            .status
            .success()
    );
}

/// `--packet-protection none` reaches every shard and worker: workers' connections to the
/// shards run in the clear (each says so at info level), the summary records the setting, and
/// the model is the same bits as with AEAD.
#[test]
fn plaintext_packets_train_the_same_model() {
    let args = ["local", "--app", "mf", "--deterministic", "--clocks", "4"];
    let run = |extra: &[&str]| {
        let all: Vec<&str> = args.iter().chain(extra).copied().collect();
        std::process::Command::new(env!("CARGO_BIN_EXE_ps-cluster"))
            .args(&all)
            .env("RUST_LOG", "ps_transport=info")
            .output()
            .unwrap()
    };
    let sealed = run(&[]);
    let plain = run(&["--packet-protection", "none"]);
    let (a, b) = (summary(&sealed), summary(&plain));
    assert_eq!(a["item_table_hash"], b["item_table_hash"]);
    assert!(a.get("packet_protection").is_none());
    assert_eq!(b["packet_protection"], "none");
    let clear = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("packets travel in the clear"))
            .count()
    };
    assert_eq!(clear(&sealed), 0);
    // 2 workers each dial 2 shards (and the coordinator); 2 shards dial the coordinator.
    let n = clear(&plain);
    assert!(n >= 4, "only {n} connections ran in the clear");
    let bad = ps_cluster(&["local", "--packet-protection", "off"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected aead or none"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `--server-threads N` reaches every shard (each says at info level that its runtime has N
/// threads), the summary records it, and the model is the same bits as on one thread.
#[test]
fn shards_on_several_threads_train_the_same_model() {
    let run = |threads: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ps-cluster"))
            .args(["local", "--app", "mf", "--deterministic", "--clocks", "4"])
            .args(["--server-threads", threads])
            .env("RUST_LOG", "ps_cluster=info")
            .output()
            .unwrap()
    };
    let started = |out: &std::process::Output, n: &str| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains(&format!("shard runtime started on {n} threads")))
            .count()
    };
    let (one, three) = (run("1"), run("3"));
    let (a, b) = (summary(&one), summary(&three));
    assert_eq!(a["item_table_hash"], b["item_table_hash"]);
    assert!(a.get("server_threads").is_none());
    assert_eq!(b["server_threads"], 3);
    assert_eq!((started(&one, "1"), started(&three, "3")), (2, 2));
    for bad in ["0", "257", "many"] {
        let out = ps_cluster(&["local", "--server-threads", bad]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("expected a thread count from 1 to 256"),
            "{err}"
        );
    }
}

/// Read-my-writes made exact: a lone worker's reads are its own updates on the shards' start
/// whatever the staleness, so on tables that add what is pushed its model is the same, bit for
/// bit, at staleness 0 (each read waits for the last push), at staleness 1 (rows pulled while
/// the push travels, the worker's logged updates added) and with overlapped reads (the
/// previous clock's rows, the last two pushes added). LDA at K 100 keeps its word-topic rows
/// by their entries, so its reads merge the logged count changes into entries and its
/// acknowledged pushes fold into them. (LR's FTRL shards turn pushed gradients into changes
/// the worker cannot replay, so its reads show only what the shards applied.)
#[test]
fn one_workers_model_is_the_same_at_every_staleness() {
    let jobs: [(&str, &[&str], &str); 3] = [
        ("mf", &[], "item_table_hash"),
        (
            "lda",
            &[
                "--topics",
                "100",
                "--vocab-size",
                "3000",
                "--docs",
                "1000",
                "--clocks",
                "5",
            ],
            "word_topic_hash",
        ),
        ("mlp", &["--clocks", "4"], "model_hash"),
    ];
    for (app, flags, hash) in jobs {
        let hashes: Vec<(String, serde_json::Value)> = [
            &["0"][..],
            &["1"],
            &["2", "--reads", "overlapped"],
            &["inf", "--reads", "overlapped"],
        ]
        .iter()
        .map(|ssp| {
            let mut args = vec!["local", "--app", app, "--workers", "1", "--staleness"];
            args.extend_from_slice(ssp);
            args.extend_from_slice(flags);
            let out = ps_cluster(&args);
            let s = summary(&out);
            // Every clock is reported, though under staleness its reports may come out of order.
            let stdout = String::from_utf8_lossy(&out.stdout);
            let lines = stdout.lines().filter(|l| l.starts_with("clock")).count();
            assert_eq!(
                Some(lines as u64),
                s["clocks"].as_u64(),
                "{app} {ssp:?}: {stdout}"
            );
            (ssp.join(" "), s[hash].clone())
        })
        .collect();
        assert!(hashes[0].1.is_string(), "{app}: {hashes:?}");
        assert!(
            hashes.iter().all(|(_, h)| *h == hashes[0].1),
            "{app}: {hashes:?}"
        );
    }
}

/// SSP through the whole stack: bounded staleness with a straggler trains to near the noise
/// floor, and asynchronous mode still trains. Without a bound the outcome depends on how the
/// two workers are scheduled: on a loaded machine the fast worker may finish its clocks before
/// the slow one has pushed much, and its users then fit an item table the slow worker goes on
/// to move. That fully separated schedule, forced with `--slow-worker 1:100` (or `1:300`), ends
/// at 1.650 x sigma (`0:100`: 1.673 x); a CI run under a parallel build hit it with `1:20`;
/// unloaded `1:20` gives 1.06 x. So the asynchronous run is held to 2 x sigma, the bounded one
/// to 1.3 x.
#[test]
fn local_jobs_with_staleness_and_a_straggler() {
    for (staleness, bound) in [("2", 1.3), ("inf", 2.0)] {
        let s = summary(&ps_cluster(&[
            "local",
            "--staleness",
            staleness,
            "--slow-worker",
            "1:20",
        ]));
        assert_eq!(s["staleness"], staleness);
        let (rmse, sigma) = (
            s["test_rmse"].as_f64().unwrap(),
            s["noise_sigma"].as_f64().unwrap(),
        );
        assert!(
            rmse <= bound * sigma,
            "staleness {staleness}: test_rmse {rmse}"
        );
    }
}

/// An emulated link on every worker-shard path still trains, and the summary says which link.
#[test]
fn local_job_over_an_emulated_link() {
    let s = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--link",
        "200mbit,1ms,0.001",
    ]));
    assert_eq!(s["link"], "200mbit,1ms,0.001");
    assert!(s["test_rmse"].as_f64().unwrap() < 0.12, "{s}");
    assert!(!ps_cluster(&["local", "--link", "fast"]).status.success());
}

/// Codec flags reach the tables: the summary names them and counts what they saved (the last
/// clock's dense send of the residual included); a bad chain is refused before anything starts.
#[test]
fn local_job_with_codecs_reports_compression() {
    let s = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--push-codec",
        "topk:0.01,sign",
        "--pull-codec",
        "f16",
    ]));
    assert_eq!(s["push_codec"], "topk:0.01,sign");
    assert_eq!(s["pull_codec"], "f16");
    let ratio = s["push_compression_ratio"].as_f64().unwrap();
    assert!(ratio > 50.0, "{s}");
    let (push, logical) = (
        s["push_bytes"].as_u64().unwrap(),
        s["push_bytes_logical"].as_u64().unwrap(),
    );
    assert!(push > 0 && push * 50 < logical, "{s}");
    assert!(s["test_rmse"].as_f64().unwrap().is_finite());
    let raw = summary(&ps_cluster(&[
        "local",
        "--clocks",
        "10",
        "--pull-codec",
        "f16",
    ]));
    assert!(raw["test_rmse"].as_f64().unwrap() < 0.13, "{raw}");
    // f16 pull replies: half the value bytes of raw ones.
    let raw32 = summary(&ps_cluster(&["local", "--clocks", "10"]));
    assert!(
        raw["bytes_received"].as_u64().unwrap() * 10
            < raw32["bytes_received"].as_u64().unwrap() * 6,
        "{raw} {raw32}"
    );
    for bad in [["--push-codec", "topk:2.0"], ["--pull-codec", "topk:0.1"]] {
        let out = ps_cluster(&["local", bad[0], bad[1]]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad[1]));
    }
}

/// The compression issue 13 asks for, kept from regressing: on MF at the default clocks, top-k
/// with the scaled sign format sends over 25x fewer push bytes than raw at about raw's test
/// RMSE; the final figures are of the shards' model (the last clock sent the residual, and what
/// was left is reported, not counted in).
#[test]
fn sign_and_top_k_keep_mf_quality_at_a_fraction_of_the_bytes() {
    let run = |codec: &str| {
        summary(&ps_cluster(&[
            "local",
            "--deterministic",
            "--push-codec",
            codec,
        ]))
    };
    let raw = run("raw");
    let lossy = run("topk:0.15,warmup:1,sign");
    let bytes = |s: &serde_json::Value| s["push_bytes"].as_u64().unwrap();
    let rmse = |s: &serde_json::Value| s["test_rmse"].as_f64().unwrap();
    assert!(bytes(&lossy) * 25 < bytes(&raw), "{lossy} {raw}");
    assert!(rmse(&lossy) < rmse(&raw) * 1.01, "{lossy} {raw}");
    assert!(
        lossy["unsent_residual_l1"].as_f64().unwrap() > 0.0,
        "{lossy}"
    );
    assert!(raw.get("unsent_residual_l1").is_none(), "{raw}");
    let q4 = run("q4");
    assert!(bytes(&q4) * 7 < bytes(&raw), "{q4}");
    assert!(rmse(&q4) < rmse(&raw) * 1.01, "{q4} {raw}");
    // Block-quantized pull replies through the shard service: a quarter of raw's bytes received.
    let q8_pulls = summary(&ps_cluster(&[
        "local",
        "--deterministic",
        "--pull-codec",
        "q8",
    ]));
    let received = |s: &serde_json::Value| s["bytes_received"].as_u64().unwrap();
    assert!(received(&q8_pulls) * 3 < received(&raw), "{q8_pulls} {raw}");
    assert!(rmse(&q8_pulls) < rmse(&raw) * 1.01, "{q8_pulls} {raw}");
}

/// The roles run as separate commands, as on several hosts: certificates from `ps-cluster certs`,
/// a coordinator, two shards and two workers started by hand.
#[test]
fn roles_run_as_separate_commands() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    let nodes = "coordinator,shard-0,shard-1,worker-0,worker-1";
    assert!(ps_cluster(&["certs", "--out", certs, "--nodes", nodes])
        .status
        .success());
    let tls = |name: &str| {
        vec![
            "--ca".to_string(),
            format!("{certs}/ca.pem"),
            "--cert".to_string(),
            format!("{certs}/{name}.pem"),
            "--key".to_string(),
            format!("{certs}/{name}.key"),
        ]
    };
    // A free UDP port for the coordinator.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coord_addr = format!("127.0.0.1:{port}");
    let exe = env!("CARGO_BIN_EXE_ps-cluster");
    let coordinator = std::process::Command::new(exe)
        .args(["coordinator", "--listen", &coord_addr, "--clocks", "8"])
        .args(tls("coordinator"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            std::process::Command::new(exe)
                .args([
                    "server",
                    "--coordinator",
                    &coord_addr,
                    "--listen",
                    "127.0.0.1:0",
                ])
                .args(tls(&format!("shard-{i}")))
                .spawn()
                .unwrap(),
        );
        nodes.push(
            std::process::Command::new(exe)
                .args(["worker", "--coordinator", &coord_addr])
                .args(tls(&format!("worker-{i}")))
                .spawn()
                .unwrap(),
        );
    }
    let out = coordinator.wait_with_output().unwrap();
    for mut n in nodes {
        assert!(n.wait().unwrap().success());
    }
    let s = summary(&out);
    assert_eq!(
        (
            s["servers"].as_u64(),
            s["workers"].as_u64(),
            s["clocks"].as_u64()
        ),
        (Some(2), Some(2), Some(8))
    );
    assert!(s["test_rmse"].as_f64().unwrap() < 0.2, "{s}");
}
