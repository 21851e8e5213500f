// Replays the fuzz corpus and the committed crashers of a list of targets: the loop the
// regression tests of ps-proto, ps-apps and ps-server share (each `include!`s this file and
// its targets' file). Plain `//` comments only: this file is included inside a module.

use std::path::{Path, PathBuf};

/// Files under `fuzz/<kind>/<target>/`, sorted; none if the directory is absent.
fn files(fuzz: &Path, kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz.join(kind).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// A target: its name and the function that runs one input.
type Run = (&'static str, fn(&[u8]));

/// Runs every seed and crasher of `targets` (each target must have seeds); panics naming the
/// inputs that panicked.
pub fn replay(fuzz: &Path, targets: &[Run]) {
    let mut failed = Vec::new();
    for &(name, run) in targets {
        let corpus = files(fuzz, "corpus", name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        for file in corpus.iter().chain(&files(fuzz, "regressions", name)) {
            let data = std::fs::read(file).expect("read a fuzz input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panicked: {failed:#?}");
}
