//! Failures named: a dead or hung worker fails the job naming it, and a bad data file is named
//! by file and line.

use crate::common::ps_cluster;

/// A worker that dies fails the job with a message naming it.
#[test]
fn a_dead_worker_fails_the_job_naming_it() {
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "50",
        "--fault",
        "1:3:crash",
        "--on-worker-failure",
        "fail",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job failed: worker-1 (pid"), "{stderr}");
}

/// A worker that hangs (alive but silent) is caught by the coordinator's heartbeat watch, which
/// fails the job naming it.
#[test]
fn a_hung_worker_fails_the_job_by_heartbeat() {
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "50",
        "--heartbeat-timeout",
        "1",
        "--fault",
        "0:2:hang",
        "--on-worker-failure",
        "fail",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job failed: worker 0 (pid") && stderr.contains("missed heartbeats"),
        "{stderr}"
    );
}

#[test]
fn bad_data_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ratings.csv");
    std::fs::write(
        &p,
        "userId,movieId,rating,timestamp\n1,2,3.5,100\n1,x,4,100\n",
    )
    .unwrap();
    let out = ps_cluster(&["local", "--data", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ratings.csv:3"), "{stderr}");
}
