//! Lists `kernels/*.cu` and `kernels/*.cuh` at build time into `$OUT_DIR/kernel_files.rs`, so
//! the unit tests can check `KERNELS` and `HEADERS` against the directory without the source
//! tree at run time (the GPU machine runs the test binary from a bundle, with no `kernels/`).

use std::env;
use std::fs;
use std::io;
use std::path::PathBuf;

fn var(name: &str) -> io::Result<PathBuf> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("cargo did not set {name}")))
}

fn main() -> io::Result<()> {
    let dir = var("CARGO_MANIFEST_DIR")?.join("../kernels");
    println!("cargo:rerun-if-changed=../kernels");
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cu") || name.ends_with(".cuh") {
            files.push(name);
        }
    }
    files.sort();
    let code = format!(
        "/// `kernels/*.cu` and `kernels/*.cuh` when this crate was built, sorted.\n\
         pub(super) const FILES_AT_BUILD: &[&str] = &{files:?};\n"
    );
    fs::write(var("OUT_DIR")?.join("kernel_files.rs"), code)
}
