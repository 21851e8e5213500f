//! The list of fuzz targets. A target is a name, the function that runs one input through a
//! decoder (in `proto.rs` or `apps.rs`, shared with the regression tests), its seed inputs
//! (made with the project's own encoders, `crate::seeds`), the longest input the fuzzer tries,
//! and how much heap an input may justify beyond the fixed cap.
//!
//! To add a decoder: write `pub fn my_decoder(data: &[u8])` in the shared file of its crate
//! (or a new one included the same way), add it to that file's list, and add a [`Target`] row
//! below with a seed function; `ps-fuzz-tool --write-corpus` then writes its corpus.

#[path = "apps.rs"]
pub mod apps;
#[path = "proto.rs"]
pub mod proto;
#[path = "server.rs"]
pub mod server;

use crate::seeds;

/// One fuzz target.
pub struct Target {
    /// Directory name under `corpus/`, `regressions/` and `artifacts/`.
    pub name: &'static str,
    /// Runs one input; panics on a broken promise (the harness reports it as a crash).
    pub run: fn(&[u8]),
    /// Seed inputs: (file name, bytes).
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
    /// Longest input the fuzzer generates (libFuzzer `-max_len`).
    pub max_len: usize,
    /// Heap bytes an input justifies beyond [`ALLOC_CAP`] (0 for most decoders).
    pub justify: fn(&[u8]) -> usize,
}

/// The heap one input may hold at its peak, beyond what [`Target::justify`] grants.
pub const ALLOC_CAP: usize = 256 << 20;
/// Allocations that would take one input past this fail at once (the process aborts).
pub const ALLOC_HARD: usize = 3 << 30;
/// One input taking more CPU time than this (user and system, seconds) is a hang. Inputs that
/// never return are caught by libFuzzer's wall-clock watchdog (`run.sh`: 30 s).
pub const TIME_LIMIT_S: u64 = 1;

fn nothing(_: &[u8]) -> usize {
    0
}

/// The bag-of-words formats are run-length encodings: a count `c` stands for `c` tokens (a
/// `u32` each, in vectors that grow by doubling) and the header's `D` for `D` documents (a
/// 24-byte `Vec` each), within the loader's documented limits. So every decimal number `x` in
/// the input justifies `24 * min(x, 2^24)` bytes.
pub fn bag_of_words(data: &[u8]) -> usize {
    let mut total = 0usize;
    let mut x = 0u64;
    for &b in data.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_digit() {
            x = (x * 10 + u64::from(b - b'0')).min(1 << 24);
        } else {
            total = total.saturating_add(24 * x as usize);
            x = 0;
        }
    }
    total
}

fn find(list: &[proto::Entry], name: &str) -> fn(&[u8]) {
    match list.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => *f,
        None => panic!("no function for target {name}"),
    }
}

/// Every target, in the order the runner runs them.
pub fn all() -> Vec<Target> {
    let p = |name: &'static str, seeds: fn() -> Vec<(String, Vec<u8>)>, max_len: usize| Target {
        name,
        run: find(proto::PROTO_TARGETS, name),
        seeds,
        max_len,
        justify: nothing,
    };
    let a = |name: &'static str,
             seeds: fn() -> Vec<(String, Vec<u8>)>,
             max_len: usize,
             justify: fn(&[u8]) -> usize| Target {
        name,
        run: find(apps::APP_TARGETS, name),
        seeds,
        max_len,
        justify,
    };
    vec![
        p("header", seeds::headers, 80),
        p("frame", seeds::frames, 4096),
        p("frame_stream", seeds::frame_streams, 4096),
        p("control", seeds::controls, 4096),
        p("codec", seeds::codecs, 4096),
        p("codec_chain", seeds::codec_chains, 64),
        p("varint", seeds::varints, 256),
        p("key_cache", seeds::key_caches, 1024),
        a("mf_ratings", seeds::mf_ratings, 4096, nothing),
        a("lda_uci", seeds::lda_uci, 1024, bag_of_words),
        a("lda_ldac", seeds::lda_ldac, 1024, bag_of_words),
        a("lda_vocab", seeds::lda_vocab, 4096, nothing),
        a("lr_libsvm", seeds::lr_libsvm, 4096, nothing),
        a("mlp_idx_images", seeds::mlp_idx_images, 4096, nothing),
        a("mlp_idx_labels", seeds::mlp_idx_labels, 4096, nothing),
        Target {
            name: "checkpoint",
            run: server::checkpoint,
            seeds: seeds::checkpoints,
            max_len: 8192,
            justify: nothing,
        },
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}
