//! The libFuzzer entry point of the decoder fuzz targets (see `lib.rs` and README.md,
//! "Fuzzing"): one binary for every target, the target named by the environment variable
//! `PS_FUZZ_TARGET`. `fuzz/run.sh` builds it with stable rustc's sanitizer-coverage flags, so
//! libFuzzer is guided by edge coverage and comparison operands, and runs each target for a
//! fixed number of inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ps_fuzz::targets::{self, Target};
use std::sync::OnceLock;

static TARGET: OnceLock<Target> = OnceLock::new();

fn target() -> &'static Target {
    TARGET.get_or_init(|| {
        let name = std::env::var("PS_FUZZ_TARGET").unwrap_or_default();
        match targets::by_name(&name) {
            Some(t) => t,
            None => {
                let names: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
                eprintln!("set PS_FUZZ_TARGET to one of: {}", names.join(" "));
                std::process::exit(2)
            }
        }
    })
}

fuzz_target!(
    init: {
        target();
    },
    |data: &[u8]| {
        ps_fuzz::check(target(), data);
    }
);
