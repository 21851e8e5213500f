//! Matrix factorisation on a real local cluster: 2 shards and 2 workers as separate processes,
//! QUIC with mutual TLS on loopback, built-in synthetic ratings with a known noise floor.
//!
//! `cargo run --release -p ps-examples --example mf_local [-- EXTRA FLAGS]`
//!
//! This binary is also what the cluster re-executes for its shard and worker roles, so it accepts
//! every `ps-cluster` command; with no command it runs `local --app mf`.

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let roles = [
        "local",
        "coordinator",
        "server",
        "worker",
        "certs",
        "help",
        "--help",
        "-h",
        "--version",
        "-V",
    ];
    if args.get(1).is_none_or(|a| !roles.contains(&a.as_str())) {
        args.splice(
            1..1,
            ["local".to_string(), "--app".to_string(), "mf".to_string()],
        );
    }
    ps_cluster::run(args)
}
