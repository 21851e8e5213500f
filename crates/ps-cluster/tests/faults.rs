//! Faults survived, nothing lost: a shard killed with SIGKILL from outside is restarted by the
//! launcher from its checkpoint and the workers resend what it lacks; a worker killed so is
//! evicted and the others finish; bad recovery flags are refused before anything starts.

mod common;

use common::{ps_cluster, summary};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The pid of the launcher's child running `role` with `--id id`.
fn child_pid(launcher: u32, role: &str, id: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields follow the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(launcher) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let id_arg = args
            .windows(2)
            .find(|w| w[0] == "--id")
            .map(|w| w[1].clone());
        if args.get(1).map(String::as_str) == Some(role) && id_arg == Some(id.to_string()) {
            return Some(pid);
        }
    }
    None
}

/// Runs `ps-cluster ARGS`, kills its `role` process `id` with SIGKILL once the job has printed
/// the line of clock `at`, and returns the whole output.
fn run_and_kill(args: &[&str], role: &str, id: u32, at: u64) -> std::process::Output {
    run_with(args, at, |launcher| {
        let pid = child_pid(launcher, role, id).expect("the process to kill");
        signal(pid, "-KILL");
    })
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status();
    assert!(ok.unwrap().success(), "kill {sig} {pid}");
}

/// Runs `ps-cluster ARGS`, calls `act` with the launcher's pid once the job has printed the line
/// of clock `at`, and returns the whole output.
fn run_with(args: &[&str], at: u64, act: impl FnOnce(u32)) -> std::process::Output {
    let mut act = Some(act);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ps-cluster"))
        .args(args)
        // What a rejoining LDA worker starts from (`lda_rejoin_is_exact`).
        .env("RUST_LOG", "warn,ps_apps::lda=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let launcher = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    while Instant::now() < deadline && !killed {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let clock = line
            .strip_prefix("clock")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|c| c.parse::<u64>().ok());
        if clock.is_some_and(|c| c >= at) {
            if let Some(act) = act.take() {
                act(launcher);
            }
            killed = true;
        }
    }
    assert!(killed, "the job never reached clock {at}");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines = reader.join().unwrap();
    let mut stdout = lines.join("\n").into_bytes();
    stdout.push(b'\n');
    std::process::Output {
        status,
        stdout,
        stderr: stderr.into_bytes(),
    }
}

const MF: &[&str] = &[
    "local",
    "--app",
    "mf",
    "--clocks",
    "30",
    "--seed",
    "7",
    "--checkpoint-every",
    "5",
    "--slow-worker",
    "0:60",
];

/// A shard killed with SIGKILL mid-run is restarted by the launcher, restores its last
/// checkpoint, and the workers resend every batch it lacks: the job ends with the model of an
/// undisturbed run, bit for bit in deterministic mode.
#[test]
fn a_killed_shard_restarts_from_its_checkpoint_and_nothing_is_lost() {
    let det: Vec<&str> = MF.iter().copied().chain(["--deterministic"]).collect();
    let calm = summary(&ps_cluster(&det));
    assert_eq!(calm["restarts"], 0);
    let out = run_and_kill(&det, "server", 0, 12);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hit = summary(&out);
    assert_eq!(hit["restarts"], 1, "{stderr}");
    assert!(stderr.contains("restarting it"), "{stderr}");
    assert_eq!(
        hit["item_table_hash"], calm["item_table_hash"],
        "the restarted run's model differs\n{stderr}"
    );
    assert_eq!(hit["test_rmse"], calm["test_rmse"]);

    // Without the fixed order, with staleness and a lossy codec (the resent batches are the
    // encoded bytes first sent): the same quality, within 1%.
    let free: Vec<&str> = MF
        .iter()
        .copied()
        .chain(["--staleness", "1", "--push-codec", "topk:0.5,f16"])
        .collect();
    let calm = summary(&ps_cluster(&free));
    let out = run_and_kill(&free, "server", 1, 17);
    let hit = summary(&out);
    assert_eq!(hit["restarts"], 1);
    let (a, b) = (
        calm["test_rmse"].as_f64().unwrap(),
        hit["test_rmse"].as_f64().unwrap(),
    );
    assert!((b - a).abs() <= 0.01 * a, "test RMSE {b} against {a}");
}

/// The newest checkpoint of a shard is damaged (a flipped byte) before the shard dies: the
/// replacement names it in the log, restores the one before, and the workers, who kept their
/// batches back to the oldest kept checkpoint, resend the rest: still bit for bit the model of
/// an undisturbed run. A later run refuses a directory holding this run's checkpoints.
#[test]
fn a_damaged_newest_checkpoint_is_named_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let mut args: Vec<&str> = MF.iter().copied().chain(["--deterministic"]).collect();
    let calm = summary(&ps_cluster(&args));
    args.extend(["--checkpoint-dir", &path]);
    let shard_dir = dir.path().join("shard-0");
    let out = run_with(&args, 17, |launcher| {
        let pid = child_pid(launcher, "server", 0).unwrap();
        // Frozen, the shard writes nothing more; its newest file is damaged, then it dies.
        signal(pid, "-STOP");
        let mut files: Vec<_> = std::fs::read_dir(&shard_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "psck"))
            .collect();
        files.sort();
        assert!(files.len() >= 2, "two checkpoints kept: {files:?}");
        let newest = files.last().unwrap();
        let mut bytes = std::fs::read(newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(newest, bytes).unwrap();
        signal(pid, "-KILL");
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hit = summary(&out);
    assert_eq!(hit["restarts"], 1, "{stderr}");
    assert!(stderr.contains("skipped a damaged checkpoint"), "{stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    assert_eq!(hit["item_table_hash"], calm["item_table_hash"], "{stderr}");

    let again = ps_cluster(&args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("checkpoints of an earlier run"), "{stderr}");
}

/// A worker killed with SIGKILL under `--on-worker-failure evict` leaves the clock vectors; the
/// others finish and the summary lists it.
#[test]
fn a_killed_worker_is_evicted_and_the_others_finish() {
    let args = [
        "local",
        "--app",
        "mf",
        "--clocks",
        "30",
        "--workers",
        "3",
        "--slow-worker",
        "0:40",
        "--on-worker-failure",
        "evict",
    ];
    let out = run_and_kill(&args, "worker", 2, 8);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert_eq!(s["evicted_workers"], 1, "{stderr}");
    assert_eq!(s["evicted_worker_ids"], serde_json::json!([2]));
    // Evicted on the launcher's word that its process exited, not once its heartbeats had
    // been missing for 10 s.
    assert!(stderr.contains("worker 2 failed (its process "), "{stderr}");
    assert!(stderr.contains("evicted"), "{stderr}");
    assert!(s["test_rmse"].as_f64().unwrap() < 0.2, "{s}");
}

/// Under `--on-worker-failure wait` a worker killed with SIGKILL is restarted by the launcher
/// and registers again; the others wait for it, it replays its clocks (shards drop what they
/// already have) and the job ends with the quality of an undisturbed run.
#[test]
fn a_killed_worker_rejoins_under_wait() {
    let args = [
        "local",
        "--app",
        "mf",
        "--clocks",
        "30",
        "--slow-worker",
        "0:40",
        "--on-worker-failure",
        "wait",
    ];
    let calm = summary(&ps_cluster(&args));
    let out = run_and_kill(&args, "worker", 1, 10);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert_eq!(
        (s["rejoins"].as_u64(), s["evicted_workers"].as_u64()),
        (Some(1), Some(0)),
        "{stderr}"
    );
    assert!(stderr.contains("replays its clocks"), "{stderr}");
    let (a, b) = (
        calm["test_rmse"].as_f64().unwrap(),
        s["test_rmse"].as_f64().unwrap(),
    );
    assert!(
        (b - a).abs() <= 0.02 * a,
        "test RMSE {b} against {a}\n{stderr}"
    );
}

/// An LDA worker killed with SIGKILL under `--on-worker-failure wait` rejoins and replays the
/// moves it logged instead of sweeping again, so the word-topic counts stay the counts of its
/// assignments: the model of an undisturbed run, bit for bit in deterministic mode. (Sweeping
/// again, as it once did, left tens of thousands of negative counts.)
#[test]
fn a_killed_lda_worker_rejoins_with_the_assignments_the_counts_count() {
    lda_rejoin_is_exact("cpu", &[]);
}

/// The same under a lossy push codec, whose residual a returning worker rebuilds by pushing
/// every clock again: the log then keeps every record (no snapshot), and the model is still
/// the undisturbed run's.
#[test]
fn a_killed_lda_worker_under_a_lossy_codec_rejoins_exactly() {
    lda_rejoin_is_exact("cpu", &["--push-codec", "topk:0.3"]);
}

/// The same with the resident path (`cpu-resident`, the CUDA engine's code path on the CPU
/// oracle): its assignments come back after each sweep to be logged, and the replayed state
/// goes to the engine before the rejoined worker sweeps again.
#[test]
fn a_killed_resident_lda_worker_rejoins_exactly() {
    lda_rejoin_is_exact("cpu-resident", &[]);
}

/// Kills worker 1 of an LDA job on `device` (with `extra` flags) at clock 12 and checks the
/// model against an undisturbed run; a raw push codec has the rejoin start from a snapshot,
/// any other from clock 1.
fn lda_rejoin_is_exact(device: &str, extra: &[&str]) {
    let mut args = vec![
        "local",
        "--app",
        "lda",
        "--clocks",
        "30",
        "--seed",
        "7",
        "--deterministic",
        "--slow-worker",
        "0:40",
        "--on-worker-failure",
        "wait",
        "--device",
        device,
    ];
    args.extend(extra);
    let calm = summary(&ps_cluster(&args));
    let out = run_and_kill(&args, "worker", 1, 12);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert_eq!(s["rejoins"].as_u64(), Some(1), "{stderr}");
    assert_eq!(
        s["word_topic_hash"], calm["word_topic_hash"],
        "the rejoined run's model differs\n{stderr}"
    );
    // The shards held the first clocks for good, so the log had made them a snapshot: the
    // rejoined worker started from it and replayed only the clocks after it.
    // Colour codes (`ESC [ ... m`) out.
    let plain: String = (stderr.split('\x1b').enumerate())
        .map(|(i, p)| match i {
            0 => p,
            _ => p.split_once('m').map_or(p, |(_, rest)| rest),
        })
        .collect();
    let snapshot_clock = plain
        .split("snapshot_clock=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|c| c.parse::<u64>().ok());
    if extra.is_empty() {
        assert!(
            snapshot_clock.is_some_and(|c| c > 0),
            "no snapshot at the rejoin: {snapshot_clock:?}\n{stderr}"
        );
    } else {
        assert_eq!(snapshot_clock, Some(0), "{stderr}");
    }
    assert_eq!(s["word_topic_negative_counts"].as_u64(), Some(0));
    assert_eq!(s["loglik_per_token"], calm["loglik_per_token"]);
}

/// Bad recovery settings are refused before anything starts, with a message naming them.
#[test]
fn bad_recovery_flags_are_refused() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_file = file.path().join("ckpt");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--keep".into(), "0".into()], "--keep"),
        (
            vec!["--restart-timeout".into(), "0".into()],
            "--restart-timeout",
        ),
        (
            vec!["--on-worker-failure".into(), "rejoin".into()],
            "fail, evict or wait",
        ),
        (
            vec!["--checkpoint-dir".into(), under_file.display().to_string()],
            "--checkpoint-dir",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["local", "--clocks", "3", "--checkpoint-every", "1"];
        args.extend(extra.iter().map(String::as_str));
        let out = ps_cluster(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

/// A worker that hangs (alive, silent) misses its heartbeats and is evicted; the launcher
/// stops it at the end and the job succeeds without it.
#[test]
fn a_hung_worker_is_evicted_by_heartbeat() {
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "20",
        "--workers",
        "3",
        "--heartbeat-timeout",
        "1",
        "--fault",
        "1:3:hang",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert_eq!(s["evicted_worker_ids"], serde_json::json!([1]), "{stderr}");
    assert!(stderr.contains("missed heartbeats"), "{stderr}");
}

/// A checkpoint directory that fills up mid-run: every failed write is logged, the shards keep
/// serving, and the job ends as usual (needs root to mount a tiny tmpfs; skipped otherwise).
#[test]
fn a_full_checkpoint_disk_is_logged_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48k", "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let path = dir.path().display().to_string();
    let out = ps_cluster(&[
        "local",
        "--clocks",
        "12",
        "--checkpoint-every",
        "2",
        "--checkpoint-dir",
        &path,
    ]);
    let _ = Command::new("umount").arg(dir.path()).status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert!(stderr.contains("checkpoint failed"), "{stderr}");
    assert!(stderr.contains("No space left"), "{stderr}");
    assert!(s["test_rmse"].as_f64().unwrap() < 0.2, "{s}");
}
