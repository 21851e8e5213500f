//! What a user reads off a job: `--log-csv` rows, the progress bar on a terminal, and
//! held-out files given with `--test` (MF ratings, LDA documents) through whole local jobs.

mod common;

use common::{ps_cluster, summary};
use std::path::Path;
use std::process::Command;

#[test]
fn the_csv_log_has_a_row_per_clock_with_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("clocks.csv");
    let out = ps_cluster(&[
        "local",
        "--app",
        "mf",
        "--clocks",
        "6",
        "--device",
        "cpu",
        "--log-csv",
        csv.to_str().unwrap(),
    ]);
    let s = summary(&out);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = rows.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, s["clocks"].as_u64().unwrap());
    for want in ["clock", "elapsed_s", "compute_s", "blocked_s", "bytes_sent"] {
        assert!(header.contains(&want), "{want} missing: {header:?}");
    }
    for want in ["train_rmse", "test_rmse", "sum_train_se"] {
        assert!(header.contains(&want), "{want} missing: {header:?}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let workers = s["workers"].as_f64().unwrap();
    for (c, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[col("clock")], c.to_string());
        let rmse: f64 = row[col("train_rmse")].parse().unwrap();
        assert!(rmse.is_finite() && rmse > 0.0);
        // Where the compute went: parts of it, within it (the host figures are sums over
        // workers, compute_s their mean).
        let get = |name: &str| -> f64 { row[col(name)].parse().unwrap() };
        let (read, load, step, sink) = (
            get("sum_host_read_s"),
            get("sum_host_load_s"),
            get("sum_host_step_s"),
            get("sum_host_sink_s"),
        );
        let parts = read
            + step
            + get("sum_host_prefetch_s")
            + get("sum_host_seal_s")
            + get("sum_host_fold_s");
        assert!(
            load <= read && sink <= step && step > 0.0,
            "clock {c}: {row:?}"
        );
        assert!(
            parts <= get("compute_s") * workers + 1e-6,
            "clock {c}: {parts} s of parts, {} of compute",
            get("compute_s")
        );
    }
    // The summary gives them over the clocks, per worker, as it gives compute_s.
    let host = [
        "host_read_s",
        "host_step_s",
        "host_prefetch_s",
        "host_seal_s",
        "host_fold_s",
    ];
    let parts: f64 = host.iter().map(|k| s[*k].as_f64().unwrap()).sum();
    assert!(
        parts > 0.0 && parts <= s["compute_s"].as_f64().unwrap() + 1e-3,
        "{s}"
    );
    assert!(s["host_load_s"].as_f64().unwrap() <= s["host_read_s"].as_f64().unwrap());
    // The last clock's test RMSE is the one the job printed last.
    let last: f64 = rows.last().unwrap()[col("test_rmse")].parse().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let line = printed.lines().rfind(|l| l.starts_with("clock")).unwrap();
    assert!(
        line.contains(&format!("test_rmse {last:.4}")),
        "{line} vs {last}"
    );
}

#[test]
fn a_csv_log_that_cannot_be_created_stops_the_job_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no-such-dir/clocks.csv");
    let out = ps_cluster(&[
        "local",
        "--app",
        "mf",
        "--clocks",
        "2",
        "--log-csv",
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--log-csv") && stderr.contains("clocks.csv"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("clock "));
}

#[test]
fn a_terminal_shows_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIP: util-linux `script` (a pseudo-terminal) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("typescript");
    let cmd = format!(
        "{} local --app mf --clocks 5 --device cpu > /dev/null",
        env!("CARGO_BIN_EXE_ps-cluster")
    );
    let status = Command::new("script")
        .args(["-qec", &cmd])
        .arg(&typescript)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let screen = std::fs::read_to_string(&typescript).unwrap();
    assert!(screen.contains("clock 5/5"), "no bar at the end: {screen}");
    assert!(
        screen.contains("train_rmse") && screen.contains("eta"),
        "{screen}"
    );
    // Not on a terminal, no bar: the plain lines only.
    let out = ps_cluster(&["local", "--app", "mf", "--clocks", "2", "--device", "cpu"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("clock 2/2"));
}

/// MovieLens-style ratings of an additive model; the held-out file has a user and an item the
/// training file lacks.
fn ratings(dir: &Path) -> (String, String) {
    let (mut train, mut test) = (String::new(), String::new());
    for u in 1..=80u32 {
        for i in 1..=60u32 {
            if !(u * 7 + i * 13).is_multiple_of(5) {
                continue;
            }
            let r = 3.0 + ((u % 5) as f32 - 2.0) * 0.4 + ((i % 4) as f32 - 1.5) * 0.3;
            let line = format!("{u}\t{i}\t{r}\t{}\n", u * 1000 + i);
            if (u + i).is_multiple_of(7) {
                test.push_str(&line);
            } else {
                train.push_str(&line);
            }
        }
    }
    test.push_str("500\t1\t4\t1\n1\t500\t2\t1\n");
    let (tr, te) = (dir.join("u1.base"), dir.join("u1.test"));
    std::fs::write(&tr, train).unwrap();
    std::fs::write(&te, test).unwrap();
    (tr.display().to_string(), te.display().to_string())
}

#[test]
fn mf_trains_on_one_file_and_tests_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = ratings(dir.path());
    let out = ps_cluster(&[
        "local", "--app", "mf", "--data", &train, "--test", &test, "--clocks", "15",
    ]);
    let s = summary(&out);
    assert_eq!(s["test_cold_ratings"], 2, "{s}");
    assert_eq!(s["bias"], true, "{s}");
    let rmse = s["test_rmse"].as_f64().unwrap();
    assert!(rmse.is_finite() && rmse < 0.5, "{s}");
    assert!(s["test_cold_rmse"].as_f64().is_some(), "{s}");

    let both = ps_cluster(&[
        "local",
        "--app",
        "mf",
        "--data",
        &train,
        "--test",
        &test,
        "--test-fraction",
        "0.2",
    ]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert_eq!(both.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn a_held_out_file_and_a_held_out_fraction_are_exclusive_for_lr_too() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.svm");
    std::fs::write(&f, "1 1:1\n-1 2:1\n").unwrap();
    let f = f.to_str().unwrap();
    let out = ps_cluster(&[
        "local",
        "--app",
        "lr",
        "--data",
        f,
        "--test",
        f,
        "--test-fraction",
        "0.3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn lda_reports_the_perplexity_of_held_out_documents() {
    let dir = tempfile::tempdir().unwrap();
    // Two themes over 40 words; ten documents of each to train on, two to hold out.
    let doc = |d: u32| -> Vec<(u32, u32)> {
        let base = if d.is_multiple_of(2) { 1 } else { 21 };
        (0..20).map(|w| (base + w, 1 + (d + w) % 3)).collect()
    };
    let write = |name: &str, docs: std::ops::Range<u32>| {
        let mut rows = Vec::new();
        for (n, d) in docs.clone().enumerate() {
            for (w, c) in doc(d) {
                rows.push(format!("{} {w} {c}", n + 1));
            }
        }
        let text = format!("{}\n40\n{}\n{}\n", docs.len(), rows.len(), rows.join("\n"));
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (train, test) = (
        write("docword.a.txt", 0..20),
        write("docword.b.txt", 20..22),
    );
    let out = ps_cluster(&[
        "local", "--app", "lda", "--data", &train, "--test", &test, "--topics", "2", "--clocks",
        "10",
    ]);
    let s = summary(&out);
    let p = s["held_out_perplexity"].as_f64().unwrap();
    assert!(p.is_finite() && p > 1.0 && p < 40.0, "{s}");
    assert_eq!(s["test_docs"], 2, "{s}");
    assert!(s["held_out_tokens"].as_f64().unwrap() > 0.0, "{s}");
}
