//! Device headers (`kernels/*.cuh`) compiled and run on the CPU: CUDA's qualifiers, the
//! intrinsics the headers use and the thread coordinates (set by a test's loops over an emulated
//! grid) as shims for the host's C++ compiler. Shared by `headers_on_host.rs` and
//! `lda_word_on_host.rs`. Without a compiler (`CXX`, else `c++`) a check skips visibly, unless
//! `PS_REQUIRE_CXX` is set (CI sets it: there the check must not vanish quietly).

use std::path::Path;
use std::process::Command;

/// The shims every header gets: qualifiers, intrinsics (one lane: a warp's shuffles and votes
/// are the lane's own), rounding-exact arithmetic, barriers (one thread runs at a time) and
/// atomics (plain updates, for the same reason).
pub const SHIMS: &str = r#"
#include <cstdio>
#define __device__
#define __forceinline__ static inline
#define __restrict__
static inline int __clz(unsigned int x) { return x == 0u ? 32 : __builtin_clz(x); }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline float __uint_as_float(unsigned int x) { float f; __builtin_memcpy(&f, &x, 4); return f; }
struct dim { unsigned int x, y, z; };
static dim blockIdx, blockDim, gridDim, threadIdx;
#include <cmath>
#include <cstring>
#include <cstddef>
using std::isfinite;
using std::isnan;
static inline int max(int a, int b) { return a > b ? a : b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline void __syncthreads() {}
static inline float atomicAdd(float* p, float x) { float o = *p; *p = o + x; return o; }
static inline int atomicAdd(int* p, int x) { int o = *p; *p = o + x; return o; }
static inline int atomicSub(int* p, int x) { int o = *p; *p = o - x; return o; }
"#;

/// Compiles `SHIMS`, then `headers` (device sources, with any shims of their own), then a
/// `main` of `main_body`, runs it, and returns its stdout; `None` (printed as a skip) when there
/// is no compiler.
pub fn run_on_host(dir: &Path, headers: &str, main_body: &str) -> Option<String> {
    let src = format!("{SHIMS}\n{headers}\nint main() {{\n{main_body}\nreturn 0;\n}}\n");
    let (cpp, exe) = (dir.join("headers.cpp"), dir.join("headers"));
    std::fs::write(&cpp, src).expect("write the C++ source");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(&cxx)
        .args([
            "-O1",
            "-std=c++14",
            "-fno-strict-aliasing",
            "-ffp-contract=off",
            "-o",
        ])
        .arg(&exe)
        .arg(&cpp)
        .output();
    let built = match built {
        Ok(o) => o,
        Err(e) if std::env::var_os("PS_REQUIRE_CXX").is_some() => {
            panic!("PS_REQUIRE_CXX is set but {cxx} does not run: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: no C++ compiler to run the device headers on the host ({cxx}: {e})");
            return None;
        }
    };
    assert!(
        built.status.success(),
        "the headers do not compile on the host:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(&exe)
        .output()
        .expect("run the compiled headers");
    assert!(out.status.success());
    Some(String::from_utf8(out.stdout).expect("ASCII output"))
}

/// C statements that run `call` once for every thread of an emulated grid of `blocks` blocks of
/// `threads` threads, one thread after another (so only barrier-free bodies can be run).
#[allow(dead_code)] // not every test file emulates a grid
pub fn on_grid(blocks: u32, threads: u32, call: &str) -> String {
    format!(
        "gridDim.x = {blocks}; blockDim.x = {threads}; \
         for (blockIdx.x = 0; blockIdx.x < {blocks}; ++blockIdx.x) \
         for (threadIdx.x = 0; threadIdx.x < {threads}; ++threadIdx.x) {{ {call}; }}"
    )
}

/// Compiles and runs `body` after `headers` and checks its output against `want`, line by line
/// (a visible skip without a compiler).
pub fn check_on_host(headers: &str, body: &str, want: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = run_on_host(dir.path(), headers, body) else {
        return;
    };
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {i}");
    }
    assert_eq!(got.lines().count(), want.lines().count(), "{got}");
}
