//! GPU conformance: every CUDA engine against the CPU oracle of its compute trait, on fresh
//! random inputs (the seed is printed; `PS_TEST_SEED` replays one).
//!
//! Without a GPU each case prints `SKIP <test>: no GPU (<why>)` and passes; with
//! `PS_REQUIRE_GPU=1` a missing GPU fails the case instead (run so on the GPU machine, see
//! `benches/gpu/check.sh`). The cases that need no GPU (typed errors when there is none) always
//! run.

#[path = "conformance/codec.rs"]
mod codec;
#[path = "conformance/codec_dense.rs"]
mod codec_dense;
#[path = "conformance/common.rs"]
mod common;
#[path = "conformance/lda.rs"]
mod lda;
#[path = "conformance/lda_resident.rs"]
mod lda_resident;
#[path = "conformance/lda_wire.rs"]
mod lda_wire;
#[path = "conformance/lda_word.rs"]
mod lda_word;
#[path = "conformance/lr.rs"]
mod lr;
#[path = "conformance/mf.rs"]
mod mf;
#[path = "conformance/mf_waves.rs"]
mod mf_waves;
#[path = "conformance/mlp.rs"]
mod mlp;
#[path = "conformance/mlp_loads.rs"]
mod mlp_loads;
#[path = "conformance/mlp_resident.rs"]
mod mlp_resident;
#[path = "conformance/no_gpu.rs"]
mod no_gpu;
#[path = "conformance/rng.rs"]
mod rng;
#[path = "conformance/sessions.rs"]
mod sessions;
#[path = "conformance/widen.rs"]
mod widen;
