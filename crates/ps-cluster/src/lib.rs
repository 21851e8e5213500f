//! `ps-cluster`: the launcher. One binary that runs a whole local cluster (`local`: coordinator,
//! shards and workers as separate OS processes over QUIC on loopback with mutual TLS) or any one
//! role on its own (`coordinator`, `server`, `worker`) for clusters over several hosts, plus
//! `certs` to make a cluster CA and node certificates.
//!
//! This crate is the only place that knows both the server side and the apps; it holds no model
//! math (that is `ps-apps`) and no protocol logic (that is `ps-proto`, `ps-client`, `ps-server`).

pub mod apps;
mod cli;
mod local;
mod roles;
mod summary;

pub use cli::{Cli, Command, JobArgs};

use clap::Parser;
use std::process::ExitCode;

/// Parses `args` (argv, program name first), runs the command, and returns the exit code.
pub fn run(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    match cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
