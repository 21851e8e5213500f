//! `--metrics-addr`: a local job's every process serves the Prometheus text format over HTTP;
//! two scrapes during the run parse strictly and show the counters moving; a metrics port in
//! use is a clear error naming the address, and nothing panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_ps-cluster");

/// A base port from which `n` consecutive loopback ports are free now: below Linux's ephemeral
/// range (from 32768), so connections' own ports do not take them, and different for each call
/// and each test process, so tests running at once do not pick the same ones.
fn free_ports(n: u16) -> u16 {
    held_ports(n).0
}

/// [`free_ports`], the ports still held by listeners on them.
fn held_ports(n: u16) -> (u16, Vec<TcpListener>) {
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let first = (std::process::id() as u16 % 97) * 7 + call * 131;
    for slot in first..first + 200 {
        let base = 20_000 + (slot % 750) * 16;
        let held: Vec<_> = (0..n)
            .map_while(|k| TcpListener::bind(("127.0.0.1", base + k)).ok())
            .collect();
        if held.len() == n as usize {
            return (base, held);
        }
    }
    panic!("no {n} consecutive free ports");
}

/// GET http://addr/metrics: the body of a 200 reply.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // HTTP/1.0: the reply is the whole body up to the close, never chunked.
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{addr}: no HTTP header end in {reply:?}"));
    let status = head.lines().next().unwrap_or_default();
    assert!(status.contains(" 200 "), "{addr}: {status}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{addr}: {head}"
    );
    body.to_string()
}

/// Labels of a sample: (name, value), sorted.
type Labels = Vec<(String, String)>;

/// One sample: metric name and its labels.
type Series = (String, Labels);

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`), returning the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest.split_once('=').ok_or("label without =")?;
        if !valid_name(name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = r.strip_prefix('"').ok_or("label value not quoted")?.chars();
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated label value")? {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '\n' => return Err("newline in label value".into()),
                c => value.push(c),
            }
        }
        labels.push((name.to_string(), value));
        rest = chars.as_str();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ,".into());
        }
    }
}

/// Parses the Prometheus text exposition format strictly: every line is blank, a `# HELP` or
/// `# TYPE` line (known type, given before the family's samples, once), another comment, or a
/// sample `name{labels} value [timestamp]` of a typed family. Checks the conventions we
/// promise: counters end in `_total`, histograms have cumulative `le` buckets ending in `+Inf`
/// equal to `_count`. Returns every sample.
fn parse_prometheus(text: &str) -> Result<BTreeMap<Series, f64>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let words: Vec<&str> = c.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !valid_name(name) {
                        return Err(err("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if *kind == "counter" && !name.ends_with("_total") {
                        return Err(err("a counter's name must end in _total".into()));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(err("second TYPE line".into()));
                    }
                    if samples
                        .keys()
                        .any(|(s, _): &Series| family(s, &types) == *name)
                    {
                        return Err(err("TYPE after the family's samples".into()));
                    }
                }
                ["HELP", name, ..] if !valid_name(name) => {
                    return Err(err("bad metric name".into()))
                }
                _ => {}
            }
            continue;
        }
        let end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..end];
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (mut labels, rest) = if line[end..].starts_with('{') {
            parse_labels(&line[end..]).map_err(err)?
        } else {
            (Vec::new(), &line[end..])
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let value = match fields.as_slice() {
            [v] | [v, _] => parse_value(v).ok_or_else(|| err("bad value".into()))?,
            _ => return Err(err("expected a value and an optional timestamp".into())),
        };
        if let [_, ts] = fields.as_slice() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        let fam = family(name, &types);
        if !types.contains_key(&fam) {
            return Err(err(format!("sample of {fam} without a TYPE line")));
        }
        labels.sort();
        if samples.insert((name.to_string(), labels), value).is_some() {
            return Err(err("duplicate series".into()));
        }
    }
    check_histograms(&samples, &types)?;
    Ok(samples)
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` are its own.
fn family(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn check_histograms(
    samples: &BTreeMap<Series, f64>,
    types: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        // Buckets per series (labels without `le`), in order of `le`.
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for ((n, labels), v) in samples {
            if *n != format!("{name}_bucket") {
                continue;
            }
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .and_then(|(_, v)| parse_value(v))
                .ok_or(format!("{name}: bucket without a numeric le"))?;
            let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            series.entry(rest).or_default().push((le, *v));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{name}{labels:?}: buckets not cumulative"));
            }
            let last = buckets.last().copied().unwrap_or((0.0, 0.0));
            let count = samples.get(&(format!("{name}_count"), labels.clone()));
            if last.0 != f64::INFINITY || count != Some(&last.1) {
                return Err(format!("{name}{labels:?}: +Inf bucket must equal _count"));
            }
            if !samples.contains_key(&(format!("{name}_sum"), labels.clone())) {
                return Err(format!("{name}{labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

/// The sum of a metric over all its series.
fn total(samples: &BTreeMap<Series, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let s = parse_prometheus(good).unwrap();
    assert_eq!(total(&s, "a_total"), 3.0);
    for bad in [
        "a_total 3\n",                              // no TYPE
        "# TYPE a counter\na 1\n",                  // counter without _total
        "# TYPE a_total counter\na_total{x=1} 1\n", // unquoted label
        "# TYPE a_total counter\na_total one\n",    // bad value
        "# TYPE g gauge\ng 1\ng 2\n",               // duplicate series
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

/// The output of a running job, line by line from both streams.
struct Output {
    rx: mpsc::Receiver<(bool, String)>,
    clocks: usize,
    /// From the launcher's `metrics: NAME http://HOST:PORT/metrics` lines.
    endpoints: Vec<(String, SocketAddr)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Output {
    fn take(&mut self, is_out: bool, line: String) {
        if is_out {
            if line.starts_with("clock ") {
                self.clocks += 1;
            }
            self.stdout.push(line);
            return;
        }
        if let Some(rest) = line.strip_prefix("metrics: ") {
            let (name, url) = rest.split_once(' ').expect("metrics line: NAME URL");
            let addr = url
                .strip_prefix("http://")
                .and_then(|u| u.strip_suffix("/metrics"))
                .expect("a /metrics URL")
                .parse()
                .expect("a socket address");
            self.endpoints.push((name.to_string(), addr));
        }
        self.stderr.push(line);
    }

    /// Reads lines until `n` clock lines were seen; false if the output ended first.
    fn wait_clocks(&mut self, n: usize) -> bool {
        while self.clocks < n {
            match self.rx.recv_timeout(Duration::from_secs(60)) {
                Ok((is_out, line)) => self.take(is_out, line),
                Err(_) => return false,
            }
        }
        true
    }
}

/// What must move between two scrapes of each kind of process.
fn moving(name: &str) -> &'static [&'static str] {
    if name == "coordinator" {
        &[
            "ps_coordinator_clocks_completed_total",
            "ps_coordinator_reports_total",
            "ps_coordinator_clock",
        ]
    } else if name.starts_with("shard-") {
        &[
            "ps_server_pulls_total",
            "ps_server_pulled_bytes_total",
            "ps_server_applied_values_total",
            "ps_server_clock_batches_total",
        ]
    } else {
        &[
            "ps_worker_clocks_completed_total",
            "ps_client_pushed_bytes_total",
            "ps_client_pulled_bytes_total",
            "ps_client_pull_latency_seconds_count",
            "ps_worker_blocked_seconds_count",
        ]
    }
}

#[test]
fn every_process_serves_prometheus_text_and_its_counters_move() {
    let (servers, workers) = (2u16, 2u16);
    let base = free_ports(1 + servers + workers);
    // A slow worker makes the job last a few seconds (staleness 0: the other waits for it).
    let mut child = Command::new(EXE)
        .args(["local", "--app", "mf", "--clocks", "30", "--device", "cpu"])
        .args(["--slow-worker", "0:150"])
        .args(["--metrics-addr", &format!("127.0.0.1:{base}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let out_tx = tx.clone();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let readers = [
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send((true, l));
            }
        }),
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send((false, l));
            }
        }),
    ];
    let mut job = Output {
        rx,
        clocks: 0,
        endpoints: Vec::new(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    assert!(job.wait_clocks(1), "no clock line: {:#?}", job.stderr);
    let endpoints = job.endpoints.clone();
    let names: Vec<&str> = endpoints.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["coordinator", "shard-0", "shard-1", "worker-0", "worker-1"]
    );
    for (k, (_, addr)) in endpoints.iter().enumerate() {
        assert_eq!(addr.port(), base + k as u16, "the documented port scheme");
    }
    let first: Vec<_> = endpoints
        .iter()
        .map(|(n, a)| parse_prometheus(&scrape(*a)).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    // Four more clocks: every worker has completed more clocks than at the first scrape.
    let more = job.wait_clocks(job.clocks + 4);
    assert!(more, "the job ended too soon: {:#?}", job.stderr);
    let second: Vec<_> = endpoints
        .iter()
        .map(|(n, a)| parse_prometheus(&scrape(*a)).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    for (((name, _), a), b) in endpoints.iter().zip(&first).zip(&second) {
        for metric in moving(name) {
            let (x, y) = (total(a, metric), total(b, metric));
            assert!(y > x, "{name}: {metric} went from {x} to {y}");
        }
    }
    // Gauges are there too: rows per table on each shard, parked reads.
    for (i, s) in second.iter().enumerate().skip(1).take(servers as usize) {
        assert!(total(s, "ps_server_rows") > 0.0, "shard-{}: no rows", i - 1);
        assert!(s.keys().any(|(n, _)| n == "ps_server_parked_reads"));
    }
    let status = child.wait().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    while let Ok((is_out, line)) = job.rx.try_recv() {
        job.take(is_out, line);
    }
    assert!(status.success(), "job failed: {:#?}", job.stderr);
    let summary: serde_json::Value =
        serde_json::from_str(job.stdout.last().unwrap()).expect("a JSON summary last");
    assert_eq!(summary["clocks"], 30);
}

#[test]
fn a_metrics_port_in_use_is_a_clear_error_and_the_job_does_not_start() {
    let (base, mut held) = held_ports(5);
    // worker-1's port (coordinator, 2 shards, worker-0, worker-1) stays taken.
    let taken = held.remove(4);
    drop(held);
    let out = Command::new(EXE)
        .args(["local", "--app", "mf", "--clocks", "3", "--device", "cpu"])
        .args(["--metrics-addr", &format!("127.0.0.1:{base}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let addr = format!("127.0.0.1:{}", base + 4);
    assert!(
        stderr.contains(&format!("worker-1 on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stdout.contains("clock "), "the job started: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

#[test]
fn a_node_whose_metrics_port_is_in_use_fails_cleanly_naming_it() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_str().unwrap();
    let made = Command::new(EXE)
        .args(["certs", "--out", dir, "--nodes", "shard-0"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(EXE)
        .args(["server", "--coordinator", "127.0.0.1:9"])
        .args(["--ca", &format!("{dir}/ca.pem")])
        .args(["--cert", &format!("{dir}/shard-0.pem")])
        .args(["--key", &format!("{dir}/shard-0.key")])
        .args(["--metrics-addr", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}
