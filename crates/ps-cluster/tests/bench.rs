//! `ps-cluster bench`: a tiny sweep (two configurations, real local clusters) writes its files
//! and its table; bad sweeps are refused before anything starts.

mod common;

use common::ps_cluster;

#[test]
fn a_two_configuration_sweep_writes_its_files_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sweep");
    let out = ps_cluster(&[
        "bench",
        "--app",
        "mf",
        "--staleness",
        "0",
        "--staleness",
        "1",
        "--straggle",
        "0.3:3",
        "--clocks",
        "6",
        "--device",
        "cpu",
        "--target",
        "test_rmse<=0.95",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // The table: a line per configuration, then the fastest.
    assert!(stdout.contains("s=0") && stdout.contains("s=1"), "{stdout}");
    assert!(stdout.contains("to test_rmse<=0.95"), "{stdout}");
    assert!(
        stdout.contains("fastest to test_rmse<=0.95: s=") || stdout.contains("no configuration"),
        "{stdout}"
    );
    // Per-clock rows of both runs.
    let csv = std::fs::read_to_string(out_dir.join("clocks.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.ends_with(",test_rmse"), "{header}");
    assert_eq!(lines.count(), 2 * 6);
    // JSON: runs with their summaries (the straggler model's delay among them), configs.
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("runs.json")).unwrap()).unwrap();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[0]["summary"]["injected_delay_s"].as_f64().is_some());
    let configs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("configs.json")).unwrap())
            .unwrap();
    assert_eq!(configs["configs"].as_array().unwrap().len(), 2);
    assert!(out_dir.join("table.txt").exists());
    // PNGs need a TrueType font; without one the sweep says so and writes the SVGs only.
    let no_font = stderr.contains("no TrueType font found");
    if no_font {
        println!("SKIP the PNG checks: no TrueType font on this machine");
    }
    let exts: &[&str] = if no_font { &["svg"] } else { &["svg", "png"] };
    for f in ["quality_vs_wall", "time_split", "bytes_vs_quality"] {
        for ext in exts {
            let p = out_dir.join(format!("{f}.{ext}"));
            assert!(
                p.exists() && std::fs::metadata(&p).unwrap().len() > 0,
                "{} missing",
                p.display()
            );
        }
    }
}

#[test]
fn bad_sweeps_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("never");
    let o = out_dir.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--push-codec", "zip"], "codec zip"),
        (
            &["--reads", "stale"],
            "--reads stale: expected fresh or overlapped",
        ),
        (&["--link", "fast,1ms"], "--link fast,1ms"),
        (&["--repeats", "0"], "an empty sweep"),
        (
            &["--target", "accuracy>=0.9"],
            "has no per-clock figure \"accuracy\"",
        ),
        (&["--target", "test_rmse"], "--target"),
        (&["--straggle", "2:3"], "--straggle"),
        (
            &["--seed", "18446744073709551615", "--repeats", "2"],
            "overflows",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["bench", "--app", "mf", "--out", o];
        args.extend_from_slice(flags);
        let out = ps_cluster(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} ran");
        assert!(
            stderr.contains(needle),
            "{flags:?}: wanted {needle:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out_dir.exists(), "{flags:?} started the sweep");
    }
    // A flag for the runs that `local` would refuse is refused too.
    let out = ps_cluster(&["bench", "--app", "lda", "--out", o, "--", "--rank", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--rank"),
        "{stderr}"
    );
    assert!(!out_dir.exists());
    // Own data needs an own target.
    let out = ps_cluster(&["bench", "--app", "mf", "--out", o, "--", "--data", "x.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("with --data give --target"), "{stderr}");
    assert!(!out_dir.exists());
    // An app without a default target needs one.
    let out = ps_cluster(&["bench", "--app", "lr", "--out", o]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no default target"), "{stderr}");
}
