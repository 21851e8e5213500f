//! Replays the fuzz corpus and every committed crasher of the data loaders
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the same calls the fuzz
//! targets make (`fuzz/src/targets/apps.rs`, included below): each must return, Ok or Err,
//! without panicking. See README.md, "Fuzzing".

#[allow(dead_code)]
mod targets {
    include!("../../../fuzz/src/targets/apps.rs");
}

mod replay {
    include!("../../../fuzz/src/replay.rs");
}

#[test]
fn corpus_and_crashers_load_without_panicking() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    replay::replay(&fuzz, targets::APP_TARGETS);
}
