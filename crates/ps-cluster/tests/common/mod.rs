//! What the job tests share: running the `ps-cluster` binary and reading its summary line.

/// Runs `ps-cluster ARGS` to the end.
pub fn ps_cluster(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ps-cluster"))
        .args(args)
        .output()
        .unwrap()
}

/// The JSON summary (the last stdout line) of a job that must have succeeded.
#[allow(dead_code)] // not every test file reads a summary
pub fn summary(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "job failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("no output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}
