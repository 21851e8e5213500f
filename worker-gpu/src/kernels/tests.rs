use super::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn kernels_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels")
}

/// Names of the `__global__` functions of a source, checking that each is `extern "C"`.
fn global_functions(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("__global__") {
        let before = rest[..at].trim_end();
        assert!(
            before.ends_with("extern \"C\""),
            "a __global__ function is not extern \"C\": {:?}",
            &rest[at..(at + 80).min(rest.len())]
        );
        let mut s = rest[at + "__global__".len()..].trim_start();
        s = s
            .strip_prefix("void")
            .expect("__global__ void")
            .trim_start();
        if let Some(after) = s.strip_prefix("__launch_bounds__") {
            let close = after.find(')').expect("__launch_bounds__(...)");
            s = after[close + 1..].trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            s[name.len()..].trim_start().starts_with('('),
            "cannot parse the declaration of {name}"
        );
        out.push(name);
        rest = &rest[at + "__global__".len()..];
    }
    out
}

// `FILES_AT_BUILD`: the directory's `.cu` and `.cuh` files, listed by build.rs.
include!(concat!(env!("OUT_DIR"), "/kernel_files.rs"));

/// What the `kernel!` macro should have embedded for `k`, from the headers' and the file's texts.
fn assembled(k: &Kernel, header_text: impl Fn(&str) -> String, own: &str) -> String {
    let mut s: String = k.headers.iter().map(|h| header_text(h)).collect();
    if !k.headers.is_empty() {
        s.push_str(&format!("#line 1 \"{}\"\n", k.file));
    }
    s.push_str(own);
    s
}

fn header(file: &str) -> Option<&'static Header> {
    HEADERS.iter().find(|h| h.file == file)
}

/// Needs no source tree: compares the lists with the directory as it was at build time.
#[test]
fn every_kernel_file_is_listed() {
    let at_build: BTreeSet<String> = FILES_AT_BUILD.iter().map(|f| f.to_string()).collect();
    let listed: BTreeSet<String> = KERNELS
        .iter()
        .map(|k| k.file)
        .chain(HEADERS.iter().map(|h| h.file))
        .map(str::to_string)
        .collect();
    assert_eq!(
        at_build, listed,
        "kernels/*.cu, *.cuh and KERNELS, HEADERS differ"
    );
    for k in KERNELS {
        assert_eq!(k.file, format!("{}.cu", k.name));
        assert_eq!(kernel(k.name), Some(k));
        // The embedded text starts with the headers' embedded texts (and the #line directive).
        let embedded_header = |h: &str| {
            header(h)
                .unwrap_or_else(|| panic!("{}: header {h} is not in HEADERS", k.file))
                .source
                .to_string()
        };
        let prefix = assembled(k, embedded_header, "");
        assert!(k.source.starts_with(&prefix), "{}: headers", k.file);
        assert!(k.source.len() > prefix.len(), "{}: empty", k.file);
    }
    for h in HEADERS {
        assert!(h.file.ends_with(".cuh"), "{}", h.file);
        assert!(
            !h.source.contains("__global__"),
            "{}: a header holds device functions, not entry points",
            h.file
        );
        assert!(!h.source.contains("#include"), "{}: no #include", h.file);
        assert!(
            KERNELS.iter().any(|k| k.headers.contains(&h.file)),
            "{}: no kernel uses it",
            h.file
        );
    }
    assert_eq!(kernel("nope"), None);
}

/// The embedded sources against the files on disk; skips (visibly) where the source tree is
/// absent, as on the GPU machine, but runs wherever the crate is built from source (CI).
#[test]
fn embedded_sources_match_the_files() {
    let dir = kernels_dir();
    if !dir.is_dir() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP embedded_sources_match_the_files: no {} (a test binary run outside the source \
             tree); every_kernel_file_is_listed checked the build-time listing",
            dir.display()
        );
        return;
    }
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("kernels/{f}: {e}"))
    };
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("kernels/ directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    let at_build: BTreeSet<String> = FILES_AT_BUILD.iter().map(|f| f.to_string()).collect();
    assert_eq!(on_disk, at_build, "kernels/ changed since the build");
    for h in HEADERS {
        assert_eq!(
            read(h.file),
            h.source,
            "{} embedded source is stale",
            h.file
        );
    }
    for k in KERNELS {
        let expected = assembled(k, read, &read(k.file));
        assert_eq!(expected, k.source, "{} embedded source is stale", k.file);
    }
}

#[test]
fn entry_points_match_the_sources() {
    let mut all = BTreeSet::new();
    for k in KERNELS {
        let found = global_functions(k.source);
        assert_eq!(found, k.entries, "{}: entry points", k.file);
        for e in k.entries {
            assert!(all.insert(*e), "entry point {e} defined twice");
        }
        assert!(
            !k.source.contains("#include"),
            "{}: kernels must compile with NVRTC alone (no #include)",
            k.file
        );
    }
}

#[test]
fn parses_declarations() {
    let src = "extern \"C\" __global__ void a(int x) {}\n\
               extern \"C\" __global__ void __launch_bounds__(256)\n    b (float* y) {}";
    assert_eq!(global_functions(src), ["a", "b"]);
}

#[test]
fn arch_names() {
    for ok in [
        "compute_90",
        "sm_90",
        "compute_90a",
        "sm_100",
        "compute_120",
    ] {
        assert_eq!(check_arch(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "90",
        "compute_",
        "sm_9",
        "compute_9x",
        "gfx90a",
        "sm_90 -G",
    ] {
        assert!(
            matches!(check_arch(bad), Err(KernelError::BadArch(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        compile_ptx(&KERNELS[0], "bogus"),
        Err(KernelError::BadArch(_))
    ));
    assert!(matches!(
        compile_ptx_named("nope", DEFAULT_ARCH),
        Err(KernelError::UnknownKernel(_))
    ));
}

#[test]
fn finds_ptx_entries() {
    let ptx = "//\n.visible .entry mf_sgd(\n\t.param .u64 a\n)\n.entry mf_sgd_x(\n";
    assert!(ptx_has_entry(ptx, "mf_sgd"));
    assert!(ptx_has_entry(ptx, "mf_sgd_x"));
    assert!(!ptx_has_entry(ptx, "mf"));
    assert!(!ptx_has_entry(ptx, "lr_gradient"));
}

#[test]
fn every_kernel_compiles_to_ptx_when_nvrtc_is_present() {
    if !nvrtc_available() {
        // Never a panic: a typed error.
        let err = compile_ptx(&KERNELS[0], DEFAULT_ARCH).unwrap_err();
        assert!(matches!(err, KernelError::NvrtcMissing { .. }), "{err}");
        assert!(nvrtc_version().is_err());
        println!(
            "SKIP: libnvrtc not loadable, kernels not compiled (.ci/check-kernels provides it)"
        );
        return;
    }
    let (major, minor) = nvrtc_version().unwrap();
    assert!(major >= 12, "NVRTC {major}.{minor}");
    for k in KERNELS {
        let ptx = compile_ptx(k, DEFAULT_ARCH).unwrap_or_else(|e| panic!("{e}"));
        assert!(ptx.contains(".target sm_90"), "{}: target", k.file);
        for e in k.entries {
            assert!(
                ptx_has_entry(&ptx, e),
                "{}: no entry {e} in the PTX",
                k.file
            );
        }
        // Cached: the same PTX object comes back.
        let again = compile_ptx(k, DEFAULT_ARCH).unwrap();
        assert!(Arc::ptr_eq(&ptx, &again), "{}: not cached", k.file);
    }
}

#[test]
fn compile_errors_carry_the_log_when_nvrtc_is_present() {
    if !nvrtc_available() {
        println!("SKIP: libnvrtc not loadable");
        return;
    }
    let err = compile_source(
        "broken.cu",
        "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        DEFAULT_ARCH,
    )
    .unwrap_err();
    match err {
        KernelError::Compile { file, log, .. } => {
            assert_eq!(file, "broken.cu");
            assert!(log.contains("undefined_name"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other}"),
    }
}
