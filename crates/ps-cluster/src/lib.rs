//! `ps-cluster`: the launcher, a generic driver over a list of applications. One binary that
//! runs a whole local cluster (`local`: coordinator, shards and workers as separate OS processes
//! over QUIC on loopback with mutual TLS) or any one role on its own (`coordinator`, `server`,
//! `worker`) for clusters over several hosts, `slurm` (a task of a Slurm job step, which takes its
//! role from Slurm's variables), plus `certs` to make a cluster CA and node certificates.
//!
//! It knows no application: each is a `ps_apps::app::App` (the built-in four, or any a program
//! adds with [`run_with`], as `examples/lasso.rs` does), and everything around it (dispatch,
//! flags, local launch, roles, fault injection, the per-clock lines, the summary) is written
//! once here. It holds no model math (that is `ps-apps`) and no protocol logic (that is
//! `ps-proto`, `ps-client`, `ps-server`).

mod bench;
mod cli;
mod driver;
mod host_time;
mod hostlist;
mod large_blocks;
mod local;
mod parse;
mod plots;
mod progress;
mod roles;
mod slurm;
mod slurm_run;
mod summary;
mod telemetry;

pub use cli::{Cli, Command, JobArgs};
pub use driver::{run_session, Chaos, Fault, FaultKind};
pub use large_blocks::{allocator_left_to_user, keep_large_blocks};
pub use ps_apps::app::{builtin, DynApp};

use std::process::ExitCode;

/// Parses `args` (argv, program name first), runs the command with the built-in apps, and
/// returns the exit code.
pub fn run(args: Vec<String>) -> ExitCode {
    run_with(args, builtin())
}

/// [`run`] with these apps; the first is the default `--app`. A program that adds an app runs
/// this from its `main`: the cluster re-executes the same binary for its shard and worker
/// roles, so they know the app too.
pub fn run_with(args: Vec<String>, apps: Vec<Box<dyn DynApp>>) -> ExitCode {
    large_blocks::keep_large_blocks();
    let parsed = match parse::parse(&args, &apps) {
        Ok(p) => p,
        Err(parse::NotRun::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(parse::NotRun::ForeignFlag(m)) => {
            eprintln!("error: {m}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match dispatch(parsed, &apps) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(p: parse::Parsed, apps: &[Box<dyn DynApp>]) -> anyhow::Result<()> {
    let app = |name: &str| {
        apps.iter()
            .find(|a| a.name() == name)
            .map(|a| a.as_ref())
            .ok_or_else(|| anyhow::anyhow!("unknown app {name:?}"))
    };
    match p.cli.command {
        Command::Local(a) => local::run_local(app(&a.job.app)?, &p.matches, a),
        Command::Coordinator(a) => roles::run_coordinator_cli(app(&a.job.app)?, &p.matches, a),
        Command::Server(a) => roles::run_server(a),
        Command::Worker(a) => roles::run_worker(a, apps),
        Command::Slurm(a) => slurm_run::run_slurm(app(&a.job.app)?, &p.matches, a, apps),
        Command::Bench(a) => bench::run_bench(a, apps),
        Command::Certs(a) => {
            ps_transport::generate_cluster_certs(&a.out, &a.nodes, &a.names)?;
            println!(
                "wrote ca.pem, ca.key and {} node certificates to {}",
                a.nodes.len(),
                a.out.display()
            );
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
