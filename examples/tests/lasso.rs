//! The Lasso example, run small as a user runs it: a real local cluster (2 shards, 2 workers as
//! processes over QUIC) on the built-in problem and on a libsvm file, against the example's own
//! single-process reference.

use std::path::PathBuf;
use std::process::Output;

/// The example binary, built by `cargo test` beside this test's.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join("examples").join("lasso");
    assert!(
        path.exists(),
        "{} missing: cargo test builds the examples first",
        path.display()
    );
    path
}

fn lasso(args: &[&str]) -> Output {
    std::process::Command::new(example())
        .args(args)
        .output()
        .unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lasso failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn f(s: &serde_json::Value, k: &str) -> f64 {
    s[k].as_f64().unwrap_or_else(|| panic!("no {k} in {s}"))
}

#[test]
fn lasso_recovers_the_support_and_reaches_the_reference_objective() {
    let out = lasso(&["--samples", "500", "--features", "5000", "--nonzeros", "20"]);
    let s = summary(&out);
    assert_eq!(
        (s["app"].as_str(), s["workers"].as_u64()),
        (Some("lasso"), Some(2))
    );
    assert!(f(&s, "support_precision") >= 0.9, "{s}");
    assert!(f(&s, "support_recall") >= 0.9, "{s}");
    let (obj, reference) = (f(&s, "objective"), f(&s, "reference_objective"));
    assert!(
        (obj - reference).abs() <= 0.01 * reference,
        "{obj} vs {reference}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reference objective"), "{stderr}");
    // One line per clock with the objective, falling.
    let objectives: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("objective ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(objectives.len() as u64, s["clocks"].as_u64().unwrap());
    assert!(objectives[1] > *objectives.last().unwrap());
}

#[test]
fn lasso_on_a_libsvm_file_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.libsvm");
    let mut text = String::new();
    for i in 0..400u32 {
        let (a, b, c) = (i % 7, i % 11, i % 5);
        let y = f64::from(a) * 0.5 - f64::from(c) * 0.3 + f64::from(i % 3) * 0.01;
        text.push_str(&format!("{y} 1:{a} 2:{b} 4:{c} 9:{}\n", i % 2));
    }
    std::fs::write(&path, text).unwrap();
    let s = summary(&lasso(&[
        "--data",
        path.to_str().unwrap(),
        "--clocks",
        "80",
    ]));
    assert_eq!(s["samples"].as_u64(), Some(400));
    let (obj, reference) = (f(&s, "objective"), f(&s, "reference_objective"));
    assert!(
        (obj - reference).abs() <= 0.01 * reference,
        "{obj} vs {reference}"
    );
    for bad in [["--lambda-ratio", "2"], ["--rank", "4"]] {
        let out = lasso(&bad);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(bad[0]) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
