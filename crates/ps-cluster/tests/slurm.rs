//! `ps-cluster slurm` without Slurm: every task of a job step started on this machine with the
//! variables srun sets (`SLURM_PROCID` 0..N-1, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_JOB_ID`,
//! `SLURM_JOB_NODELIST`), and the errors of a task whose environment is incomplete.
//! `deploy/slurm/single-node-test.sh` runs the same through a real Slurm.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ps-cluster");

/// The variables srun gives task `procid` of `ntasks` on one node.
fn slurm_env(procid: u32, ntasks: u32, job: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("SLURM_PROCID", procid.to_string()),
        ("SLURM_NTASKS", ntasks.to_string()),
        ("SLURM_LOCALID", procid.to_string()),
        ("SLURM_JOB_ID", job.to_string()),
        ("SLURM_JOB_NODELIST", "localhost".to_string()),
    ])
}

fn command(env: &HashMap<&'static str, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("slurm").args(args);
    // The test may itself run under Slurm: only the variables given here count.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLURM") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    cmd
}

/// Waits for every child, killing all of them past the deadline.
fn wait_all(mut children: Vec<std::process::Child>, limit: Duration) -> Vec<Output> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    children
        .into_iter()
        .map(|mut c| {
            let _ = c.kill();
            c.wait_with_output().unwrap()
        })
        .collect()
}

/// A free UDP port, with the next few likely free too (the coordinator's --port).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs every task of a step of `ntasks` on `nodelist` (all on this machine) and returns the
/// outputs in task order, with a report of them all for failures.
fn run_step(
    nodelist: &str,
    job: &str,
    ntasks: u32,
    dir: &std::path::Path,
) -> (Vec<Output>, String) {
    let port = free_port().to_string();
    let args = [
        "--dir",
        dir.to_str().unwrap(),
        "--port",
        &port,
        "--servers",
        "2",
        "--clocks",
        "3",
        "--device",
        "cpu",
    ];
    // Workers first and the coordinator last: the others must wait for its certificates.
    let children: Vec<_> = (0..ntasks)
        .rev()
        .map(|p| {
            let mut env = slurm_env(p, ntasks, job);
            env.insert("SLURM_JOB_NODELIST", nodelist.into());
            command(&env, &args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs = wait_all(children, Duration::from_secs(60));
    outputs.reverse();
    let report: String = outputs
        .iter()
        .enumerate()
        .map(|(p, o)| {
            format!(
                "task {p}: {}\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .collect();
    for o in &outputs {
        assert!(o.status.success(), "a task failed:\n{report}");
    }
    (outputs, report)
}

/// The coordinator's JSON summary (its last stdout line).
fn summary(outputs: &[Output], report: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&outputs[0].stdout);
    let last = stdout
        .lines()
        .last()
        .expect("the coordinator printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{report}"))
}

#[test]
fn a_job_step_of_five_tasks_trains_mf() {
    let dir = tempfile::tempdir().unwrap();
    let (outputs, report) = run_step("localhost", "9001", 5, dir.path());
    let summary = summary(&outputs, &report);
    assert_eq!(summary["app"], "mf");
    assert_eq!(summary["servers"], 2);
    assert_eq!(
        summary["workers"], 2,
        "workers are the tasks after the shards"
    );
    assert_eq!(summary["clocks"], 3);
    let stdout = String::from_utf8_lossy(&outputs[0].stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("clock")).count(), 3);
    for (p, role) in ["coordinator", "shard-0", "shard-1", "worker-0", "worker-1"]
        .iter()
        .enumerate()
    {
        let err = String::from_utf8_lossy(&outputs[p].stderr);
        assert!(
            err.contains(&format!("slurm task {p} of 5: {role} ")),
            "task {p} is not {role}:\n{report}"
        );
    }
    // Task 0 removed the job's certificates when the job ended.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left in --dir: {left:?}");
}

/// A job over "two hosts", `localhost` and this machine's network address: the coordinator's
/// host resolves to loopback, so the tasks dial it, and the shards advertise, on the network
/// address (what a task on the coordinator's host of a real multi-host job does).
#[test]
fn tasks_on_the_coordinators_host_use_the_network_address_in_a_job_over_two_hosts() {
    let Some(ip) = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    else {
        eprintln!("SKIP: this machine has no network address");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (outputs, report) = run_step(&format!("localhost,{ip}"), "9004", 4, dir.path());
    assert_eq!(summary(&outputs, &report)["workers"], 1);
    for p in [1, 2] {
        let err = String::from_utf8_lossy(&outputs[p].stderr);
        assert!(
            err.contains(&format!("advertises {ip}:")),
            "task {p}:\n{report}"
        );
        assert!(err.contains(&format!("dials {ip}:")), "task {p}:\n{report}");
    }
}

fn run(env: &HashMap<&'static str, String>, args: &[&str]) -> (i32, String) {
    let out = command(env, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_bad_variable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--dir", dir.path().to_str().unwrap(), "--wait", "1"];
    for var in [
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "SLURM_JOB_ID",
        "SLURM_JOB_NODELIST",
    ] {
        let mut env = slurm_env(1, 4, "9002");
        env.remove(var);
        let (code, err) = run(&env, &args);
        assert_eq!(code, 1, "{var}: {err}");
        assert!(
            err.contains(&format!("error: {var} is not set")),
            "{var} missing: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut env = slurm_env(1, 4, "9002");
    env.insert("SLURM_PROCID", "x".into());
    let (code, err) = run(&env, &args);
    assert_eq!(code, 1);
    assert!(
        err.contains("SLURM_PROCID=\"x\": not a non-negative integer"),
        "{err}"
    );
    env.insert("SLURM_PROCID", "1".into());
    env.insert("SLURM_JOB_NODELIST", "node[3-1]".into());
    let (_, err) = run(&env, &args);
    assert!(err.contains("SLURM_JOB_NODELIST: bad range"), "{err}");

    // Too few tasks, and a --workers that disagrees with SLURM_NTASKS.
    let env = slurm_env(1, 3, "9002");
    let (code, err) = run(&env, &args);
    assert_eq!(code, 1);
    assert!(err.contains("SLURM_NTASKS=3 is too few"), "{err}");
    let env = slurm_env(1, 5, "9002");
    let (_, err) = run(&env, &[&args[..], &["--workers", "3"]].concat());
    assert!(
        err.contains("--workers 3 does not match SLURM_NTASKS=5"),
        "{err}"
    );

    // A shard with no coordinator gives up after --wait, naming the directory.
    let (code, err) = run(&slurm_env(1, 4, "9002"), &args);
    assert_eq!(code, 1);
    assert!(err.contains("waited 1 s for task 0"), "{err}");
}

#[test]
fn tasks_waiting_for_a_failed_coordinator_stop_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let args = [
        "--dir",
        dir.path().to_str().unwrap(),
        "--port",
        &port,
        "--servers",
        "1",
        "--wait",
        "30",
    ];
    let shard = command(&slurm_env(1, 3, "9003"), &args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (code, err) = run(
        &slurm_env(0, 3, "9003"),
        &[&args[..], &["--clocks", "0"]].concat(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("--clocks must be at least 1"), "{err}");
    let out = wait_all(vec![shard], Duration::from_secs(30)).remove(0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the coordinator (task 0) failed: --clocks must be at least 1"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the shard waited out --wait"
    );
}
