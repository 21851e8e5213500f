//! Replays the fuzz corpus and every committed crasher of the checkpoint decoder
//! (`fuzz/corpus/checkpoint/`, `fuzz/regressions/checkpoint/`) through the same calls the fuzz
//! target makes (`fuzz/src/targets/server.rs`, included below): each must return without
//! panicking. See README.md, "Fuzzing".

#[allow(dead_code)]
mod targets {
    include!("../../fuzz/src/targets/server.rs");
}

mod replay {
    include!("../../fuzz/src/replay.rs");
}

#[test]
fn checkpoint_corpus_and_crashers_decode_without_panicking() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    replay::replay(&fuzz, targets::SERVER_TARGETS);
}
