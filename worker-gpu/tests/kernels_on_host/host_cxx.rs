//! Device code compiled and run on the CPU: CUDA's qualifiers, the intrinsics the kernels use
//! and the thread coordinates (set by a test's loops over an emulated grid, or by `run_warp`) as
//! shims for the host's C++ compiler, shared by this binary's modules. Without a compiler
//! (`CXX`, else `c++`) a check skips visibly, unless `PS_REQUIRE_CXX` is set (CI sets it: there
//! the check must not vanish quietly).

use std::path::Path;
use std::process::Command;

/// The shims every header gets: qualifiers, intrinsics, rounding-exact arithmetic and atomics
/// (the host's: threads of an emulated block may update a cell at once). Each thread has its
/// own `threadIdx`.
pub const SHIMS: &str = r#"
#include <atomic>
#include <cstdio>
#define __device__
#define __forceinline__ static inline
#define __restrict__
static inline int __clz(unsigned int x) { return x == 0u ? 32 : __builtin_clz(x); }
static inline int __ffs(unsigned int x) { return __builtin_ffs((int)x); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline float __uint_as_float(unsigned int x) { float f; __builtin_memcpy(&f, &x, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int x; __builtin_memcpy(&x, &f, 4); return x; }
struct dim { unsigned int x, y, z; };
static dim blockIdx, blockDim, gridDim;
static thread_local dim threadIdx;
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
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline float __double2float_rn(double a) { return (float)a; }
static inline float atomicAdd(float* p, float x) { return std::atomic_ref<float>(*p).fetch_add(x); }
static inline int atomicAdd(int* p, int x) { return std::atomic_ref<int>(*p).fetch_add(x); }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int x) { return std::atomic_ref<unsigned int>(*p).fetch_add(x); }
static inline double atomicAdd(double* p, double x) { return std::atomic_ref<double>(*p).fetch_add(x); }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long x) { return std::atomic_ref<unsigned long long>(*p).fetch_add(x); }
template <typename T> static inline T lw_atomic_max(T* p, T x) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < x && !a.compare_exchange_weak(old, x)) {}
    return old;
}
static inline unsigned int atomicMax(unsigned int* p, unsigned int x) { return lw_atomic_max(p, x); }
static inline unsigned long long atomicMax(unsigned long long* p, unsigned long long x) { return lw_atomic_max(p, x); }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline int atomicSub(int* p, int x) { return std::atomic_ref<int>(*p).fetch_sub(x); }
static inline unsigned int atomicOr(unsigned int* p, unsigned int x) { return std::atomic_ref<unsigned int>(*p).fetch_or(x); }
"#;

/// One thread runs a block: its barrier is a no-op.
pub const ONE_THREAD: &str = "static inline void __syncthreads() {}\n";

/// Warps and blocks of host threads, the text both of the shims below start with. Warps are
/// groups of 32 consecutive threads whose shuffles and votes exchange values through their
/// warp's slots between two of its barriers, so the lanes run in lockstep at every warp
/// operation as a warp does; `__syncthreads` is the block's barrier; a thread that returns
/// leaves both barriers, as an exited thread does on the device. `run_grid(grid, block, f)`
/// runs `f()` on every thread of a grid: the blocks one after another, each block's threads at
/// once. Code whose lanes (or a block's threads) do not all reach the same warp operations (or
/// barriers), which the device does not allow, hangs here (the run's time limit then fails the
/// test).
macro_rules! warps_and_blocks {
    () => {
        r#"
#include <barrier>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
struct lw_warp_t { std::barrier<> bar{32}; unsigned long long slot[32]; };
static thread_local lw_warp_t* lw_warp;
static thread_local unsigned int lw_lane;
static std::barrier<>* lw_block;
static inline void lw_sync() { lw_warp->bar.arrive_and_wait(); }
template <typename T> static inline T lw_exchange(T v, unsigned int src) {
    std::memcpy(&lw_warp->slot[lw_lane], &v, sizeof(T));
    lw_sync();
    T r;
    std::memcpy(&r, &lw_warp->slot[src & 31u], sizeof(T));
    lw_sync();
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned int, T v, int src) {
    return lw_exchange(v, (unsigned int)src);
}
template <typename T> static inline T __shfl_xor_sync(unsigned int, T v, int mask) {
    return lw_exchange(v, lw_lane ^ (unsigned int)mask);
}
template <typename T> static inline T __shfl_up_sync(unsigned int, T v, unsigned int d) {
    return lw_exchange(v, lw_lane >= d ? lw_lane - d : lw_lane);
}
static inline unsigned int __ballot_sync(unsigned int, bool p) {
    lw_warp->slot[lw_lane] = p ? 1u : 0u;
    lw_sync();
    unsigned int m = 0;
    for (unsigned int i = 0; i < 32; ++i) m |= lw_warp->slot[i] ? 1u << i : 0u;
    lw_sync();
    return m;
}
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline void __syncthreads() { lw_block->arrive_and_wait(); }
static inline void __syncwarp() { lw_sync(); }
template <typename F> static void run_grid(unsigned int grid, unsigned int block, F f) {
    if (block % 32u != 0u) { printf("run_grid: a block of %u threads is not whole warps\n", block); exit(1); }
    gridDim.x = grid; blockDim.x = block;
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx.x = b;
        std::barrier<> block_bar(block);
        lw_block = &block_bar;
        std::vector<std::unique_ptr<lw_warp_t>> warps;
        for (unsigned int w = 0; w < block / 32u; ++w) warps.push_back(std::make_unique<lw_warp_t>());
        std::vector<std::thread> threads;
        for (unsigned int t = 0; t < block; ++t) {
            threads.emplace_back([&, t] {
                threadIdx.x = t; lw_lane = t % 32u; lw_warp = warps[t / 32u].get();
                f();
                lw_warp->bar.arrive_and_drop();
                lw_block->arrive_and_drop();
            });
        }
        for (auto& th : threads) th.join();
    }
}
"#
    };
}

/// A block of one warp of 32 lanes, each a host thread (`warps_and_blocks`): `run_warp(f)` runs
/// `f(lane)` on all 32 and joins them, in a grid of that one block.
pub const WARP_OF_32: &str = concat!(
    warps_and_blocks!(),
    r#"
static void run_warp(const std::function<void(unsigned int)>& f) {
    run_grid(1u, 32u, [&] { f(lw_lane); });
}
"#
);

/// Whole kernels on an emulated grid of blocks of warps: `WARP_OF_32` (so `run_warp` too), and
/// `__global__` meaning nothing, so that `run_grid(grid, block, f)` can run a kernel's call.
/// Blocks must not wait on each other. A test defines `__shared__` as its kernels need (one
/// block runs at a time).
pub const BLOCKS_OF_WARPS: &str = concat!(
    warps_and_blocks!(),
    r#"
static void run_warp(const std::function<void(unsigned int)>& f) {
    run_grid(1u, 32u, [&] { f(lw_lane); });
}
#define __global__
"#
);

/// The MF window's asynchronous copies (`kernels/mf_window.cuh` declares them; on a GPU they are
/// `cp.async`, whose groups are each thread's own, as here): each reads global memory when
/// issued (a copy issued before an earlier rating's write reads a stale row) and writes shared
/// memory when `mf_landing` says: 0, only when a wait lets its group complete (one that lands
/// after a row was handed over overwrites it); 1, at once (one that lands in a slot still being
/// read spoils it); 2, at a random copy or commit in between.
pub const MF_COPIES: &str = r#"
struct MfPending { void* dst; unsigned char bytes[16]; unsigned int group; };
static thread_local MfPending mf_pending[256];
static thread_local unsigned int mf_pending_n = 0, mf_groups = 0;
static unsigned int mf_landing = 0;
static thread_local unsigned long long mf_land_state = 1;
static inline void mf_land_where(bool (*now)(const MfPending&)) {
    unsigned int kept = 0;
    for (unsigned int i = 0; i < mf_pending_n; ++i) {
        if (now(mf_pending[i])) {
            memcpy(mf_pending[i].dst, mf_pending[i].bytes, 16);
        } else {
            mf_pending[kept++] = mf_pending[i];
        }
    }
    mf_pending_n = kept;
}
static inline bool mf_land_by_chance(const MfPending&) {
    mf_land_state = mf_land_state * 6364136223846793005ull + 1442695040888963407ull;
    return (mf_land_state >> 33) % 3 == 0;
}
static inline void mf_land_some() {
    if (mf_landing == 1) mf_land_where([](const MfPending&) { return true; });
    if (mf_landing == 2) mf_land_where(mf_land_by_chance);
}
static inline void mf_copy16(void* shared, const void* global) {
    MfPending& p = mf_pending[mf_pending_n++];
    p.dst = shared;
    memcpy(p.bytes, global, 16);
    p.group = mf_groups;
    mf_land_some();
}
static inline void mf_copy_commit() { mf_land_some(); ++mf_groups; }
static thread_local unsigned int mf_wait_keeps = 0;
template <int N> static inline void mf_copy_wait() {
    mf_wait_keeps = N;
    mf_land_where([](const MfPending& p) { return p.group + mf_wait_keeps < mf_groups; });
}
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
            "-std=c++20",
            "-pthread",
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
    Some(run_with_limit(&exe, RUN_LIMIT))
}

/// How long a compiled program may run: a warp whose lanes part ways hangs.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `exe` to its end and returns its stdout; fails the test past `limit` (killing it) or on
/// a failed exit.
fn run_with_limit(exe: &Path, limit: std::time::Duration) -> String {
    use std::io::Read;
    let mut child = Command::new(exe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the compiled headers");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the compiled headers") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the compiled headers ran past {limit:?} (a warp's lanes parted ways?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "the compiled headers exited with {status}"
    );
    reader.join().expect("reader").expect("ASCII output")
}

/// C statements that run `call` once for every thread of an emulated grid of `blocks` blocks of
/// `threads` threads, one thread after another (so only barrier-free bodies can be run).
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

/// A C array `name` of type `ty` holding `values`, as a static (one zero where empty).
pub fn array<T: std::fmt::Display>(ty: &str, name: &str, values: &[T]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
    let items = if items.is_empty() {
        "0".to_string()
    } else {
        items.join(", ")
    };
    format!("static {ty} {name}[] = {{{items}}};\n")
}

/// The bit patterns of `v`, as the programs print floats.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The counts of a program that prints only `ok A B ...` when every check passed (its output
/// otherwise, in the panic message named by `what`).
pub fn ok_counts(got: &str, what: &str) -> Vec<u32> {
    let last = got.lines().last().unwrap_or_default();
    let counts: Vec<u32> = last
        .strip_prefix("ok ")
        .map(|c| c.split(' ').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    assert!(
        got.lines().count() == 1 && !counts.is_empty(),
        "{what}:\n{got}"
    );
    counts
}
