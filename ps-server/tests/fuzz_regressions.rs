//! Replays the fuzz corpus and every committed crasher of the checkpoint decoder
//! (`fuzz/corpus/checkpoint/`, `fuzz/regressions/checkpoint/`) through the same calls the fuzz
//! target makes (`fuzz/src/targets/server.rs`, included below): each must return without
//! panicking. See README.md, "Fuzzing".

use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod targets {
    include!("../../fuzz/src/targets/server.rs");
}

/// Files under `fuzz/<kind>/<target>/`, sorted; none if the directory is absent.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn checkpoint_corpus_and_crashers_decode_without_panicking() {
    let mut failed = Vec::new();
    for &(name, run) in targets::SERVER_TARGETS {
        let corpus = files("corpus", name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        for file in corpus.iter().chain(&files("regressions", name)) {
            let data = std::fs::read(file).expect("read a fuzz input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panicked: {failed:#?}");
}
