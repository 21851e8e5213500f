//! `kernels/mf_sgd.cu`'s wave kernels themselves on the CPU (`mf_sgd_waves`, `_w2`, `_w4`,
//! each with f32 and f16 tables), on one block of four warps of host threads
//! (`host_cxx::BLOCKS_OF_WARPS`), launched as the resident engine launches them: blocks of 128
//! threads, one warp per user band of a `ps_apps::mf::WaveSchedule` of up to 4 bands and the
//! epoch's waves from `epoch_waves`. The warps run at once and wait on each other through `done`
//! as on the device, and each must leave the tables bit for bit as the same blocks run one
//! after another on one warp (`mf_block_waves`, wave by wave) leave them; the windowed kernels
//! must also say that the window ran (`stalled[1]`) where the rows fit it, and no kernel may
//! report a stall. The window's copies are `host_cxx::MF_COPIES` (landing at once, at the wait,
//! or at random in between); f16 conversions are the host's `_Float16` (round to nearest
//! even, as the device's `cvt.rn`); the PTX itself is not run. Few items, so that rows are
//! handed from rating to rating inside a window. Skips visibly without a C++ compiler.

use crate::host_cxx::{self, array};

use std::fmt::Write as _;

use ps_apps::mf::{ClockKey, Rating, WaveSchedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What `mf_sgd.cu` leaves to its host (`MF_HOST_SHIMS`), and the device's memory operations.
const SHIMS: &str = r#"
#include <chrono>
#include <type_traits>
#define MF_HOST_SHIMS 1
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
static inline void __nanosleep(unsigned int) { std::this_thread::yield(); }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline unsigned int atomicExch(unsigned int* p, unsigned int x) {
    return std::atomic_ref<unsigned int>(*p).exchange(x);
}
template <typename T> static inline T __ldcg(const T* p) { return *p; }
static inline unsigned long long mf_now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now().time_since_epoch()).count();
}
"#;

/// f16 tables as the host's `_Float16`, between the headers and the kernels.
const F16: &str = r#"
template <>
struct MfStore<unsigned short> {
    static float f32(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
    static unsigned short stored(float f) {
        const _Float16 x = (_Float16)f;
        unsigned short h;
        std::memcpy(&h, &x, 2);
        return h;
    }
};
"#;

/// Runs each kernel and the one-warp replay of a case; prints a line for each difference.
const RUN: &str = r#"
static unsigned int done[4], stalled[2];
static double sse;
auto check = [&](auto* users0, auto* items0, auto kernel, const char* name, bool window) {
    using T = std::remove_pointer_t<decltype(users0)>;
    const size_t nu = NU * WIDTH, ni = NI * WIDTH;
    std::vector<T> su(users0, users0 + nu), si(items0, items0 + ni);
    std::vector<T> ku(users0, users0 + nu), ki(items0, items0 + ni);
    static double ref;
    run_warp([&](unsigned int lane) {
        double s = 0.0;
        for (unsigned int t = 0; t < NW; ++t)
            for (unsigned int p = 0; p < BANDS; ++p) {
                const unsigned int b = p * BANDS + (p + shifts[t]) % BANDS;
                s += mf_block_waves<T>(ru, ri, rv, starts[b], starts[b + 1], su.data(),
                                       si.data(), lane, RANK, WIDTH, BIASED, MEAN, LR, REG);
            }
        if (lane == 0u) ref = s;
    });
    std::memset(done, 0, sizeof done);
    std::memset(stalled, 0, sizeof stalled);
    sse = 0.0;
    run_grid(1u, 128u, [&] {
        kernel(ru, ri, rv, starts, shifts, NW, BANDS, ku.data(), ki.data(), RANK, WIDTH, BIASED,
               MEAN, LR, REG, done, stalled, &sse);
    });
    if (std::memcmp(ku.data(), su.data(), nu * sizeof(T)) != 0 ||
        std::memcmp(ki.data(), si.data(), ni * sizeof(T)) != 0)
        printf("case %d %s: the tables differ from the blocks one after another\n", CASE, name);
    if (std::fabs(sse - ref) > 1e-9 * std::fabs(ref))
        printf("case %d %s: sse %.17g, one after another %.17g\n", CASE, name, sse, ref);
    if (stalled[0] != 0u) printf("case %d %s: a stall\n", CASE, name);
    if ((stalled[1] != 0u) != window)
        printf("case %d %s: the window ran: %u, expected %d\n", CASE, name, stalled[1], (int)window);
    for (unsigned int p = 0; p < BANDS; ++p)
        if (done[p] != NW) printf("case %d %s: warp %u finished %u waves\n", CASE, name, p, done[p]);
    windows += stalled[1] != 0u;
};
static unsigned short u16[NU * WIDTH], i16[NI * WIDTH];
for (unsigned int k = 0; k < NU * WIDTH; ++k) u16[k] = MfStore<unsigned short>::stored(users[k]);
for (unsigned int k = 0; k < NI * WIDTH; ++k) i16[k] = MfStore<unsigned short>::stored(items[k]);
const bool fits32 = !BIASED && RANK % 4 == 0, fits16 = !BIASED && RANK % 8 == 0;
check(users, items, mf_sgd_waves, "mf_sgd_waves", false);
check(users, items, mf_sgd_waves_w2, "mf_sgd_waves_w2", fits32);
check(users, items, mf_sgd_waves_w4, "mf_sgd_waves_w4", fits32);
check(u16, i16, mf_sgd_waves_f16, "mf_sgd_waves_f16", false);
check(u16, i16, mf_sgd_waves_w2_f16, "mf_sgd_waves_w2_f16", fits16);
check(u16, i16, mf_sgd_waves_w4_f16, "mf_sgd_waves_w4_f16", fits16);
"#;

/// One case's C block: its ratings arranged by a schedule of `bands` bands, its tables, the
/// epoch's waves, then `RUN`.
fn case_block(case: usize, rng: &mut ChaCha8Rng) -> String {
    let (users, items) = (rng.gen_range(4..24u32), rng.gen_range(2..9u32));
    let bands = rng
        .gen_range(1..=4usize)
        .min(users as usize)
        .min(items as usize);
    let rank = [4u32, 8, 12, 32, 64, 128][case % 6];
    let biased = case % 5 == 4;
    let width = rank + u32::from(biased);
    let mut ratings: Vec<Rating> = (0..rng.gen_range(1..120))
        .map(|_| Rating {
            user: rng.gen_range(0..users),
            item: rng.gen_range(0..items),
            value: rng.gen_range(-1.0f32..1.0),
        })
        .collect();
    let schedule = WaveSchedule::new(&ratings, users, items, bands);
    schedule.arrange(&mut ratings);
    let shifts = schedule.epoch_waves(ClockKey {
        seed: 77,
        worker: 1,
        clock: case as u32,
    });
    let starts: Vec<u32> = schedule.starts().iter().map(|&s| s as u32).collect();
    let table = |n: u32, rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..n * width)
            .map(|_| rng.gen_range(-0.5f32..0.5))
            .collect()
    };
    let (u, i) = (table(users, rng), table(items, rng));
    let mut c = format!(
        "{{\nconstexpr int CASE = {case};\nconstexpr unsigned int NU = {users}, NI = {items}, \
         BANDS = {bands}, NW = {}, RANK = {rank}, WIDTH = {width};\n\
         constexpr int BIASED = {};\nconstexpr float MEAN = 0.25f, LR = 0.05f, REG = 0.02f;\n\
         mf_landing = {};\n",
        shifts.len(),
        i32::from(biased),
        case % 3,
    );
    let column = |f: fn(&Rating) -> String| -> Vec<String> { ratings.iter().map(f).collect() };
    c += &array("unsigned int", "ru", &column(|r| r.user.to_string()));
    c += &array("unsigned int", "ri", &column(|r| r.item.to_string()));
    c += &array("float", "rv", &column(|r| format!("{:?}f", r.value)));
    c += &array("unsigned int", "starts", &starts);
    c += &array("unsigned int", "shifts", &shifts);
    let floats = |v: &[f32]| -> Vec<String> { v.iter().map(|x| format!("{x:?}f")).collect() };
    c += &array("float", "users", &floats(&u));
    c += &array("float", "items", &floats(&i));
    writeln!(c, "{RUN}}}").unwrap();
    c
}

/// `mf_sgd.cu` and what it needs, for the host's compiler.
fn kernels() -> String {
    format!(
        "{}{SHIMS}{}\n{}\n{}\n{F16}{}",
        host_cxx::BLOCKS_OF_WARPS,
        host_cxx::MF_COPIES,
        include_str!("../../../kernels/mf_step.cuh"),
        include_str!("../../../kernels/mf_window.cuh"),
        include_str!("../../../kernels/mf_sgd.cu"),
    )
}

#[test]
fn the_wave_kernels_on_a_block_of_warps_run_the_blocks_in_wave_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4D46_5741);
    let cases = 12;
    let mut body = String::from("unsigned int windows = 0;\n");
    for case in 0..cases {
        body += &case_block(case, &mut rng);
    }
    body += &format!("printf(\"ok {cases} %u\\n\", windows);\n");
    let headers = kernels();
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = host_cxx::run_on_host(dir.path(), &headers, &body) else {
        return;
    };
    let counts = host_cxx::ok_counts(&got, "the wave kernels on a block of warps");
    assert_eq!(counts, vec![cases as u32, counts[1]], "{got}");
    assert!(
        counts[1] >= 8,
        "the window ran in {} runs: {got}",
        counts[1]
    );
}

/// `mf_held_rows`: a bit a key, set where the key's residual row holds a value other than zero
/// (`-0.0` is zero, NaN is not), as the worker library keeps a residual row: rows of zeros, of
/// `-0.0`, one value set, a NaN, keys in any order and repeated, a count that is not a whole
/// word, and grids of one thread and of many.
#[test]
fn the_held_rows_are_the_rows_of_some_residual() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4E1D);
    let (rows, width) = (300usize, 5usize);
    let table: Vec<f32> = (0..rows * width)
        .map(|i| match (i / width) % 5 {
            0 => 0.0,
            1 => -0.0,
            2 if i % width == 3 => 1e-30,
            3 if i % width == 4 => f32::NAN,
            4 => rng.gen_range(-1.0f32..1.0),
            _ => 0.0,
        })
        .collect();
    let held = |k: u32| {
        table[k as usize * width..(k as usize + 1) * width]
            .iter()
            .any(|&x| x != 0.0)
    };
    let (mut body, mut want) = (String::new(), String::new());
    write!(
        body,
        "{}",
        array(
            "unsigned int",
            "table_bits",
            &table.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        )
    )
    .unwrap();
    for (case, (n, grid, block)) in [(77usize, 1u32, 32u32), (250, 2, 64), (32, 1, 32)]
        .into_iter()
        .enumerate()
    {
        let keys: Vec<u32> = (0..n).map(|_| rng.gen_range(0..rows as u32)).collect();
        let words = n.div_ceil(32);
        write!(want, "{case}").unwrap();
        for t in 0..words {
            let w: u32 = (0..32)
                .filter(|j| 32 * t + j < n && held(keys[32 * t + j]))
                .fold(0, |w, j| w | 1 << j);
            write!(want, " {w:08x}").unwrap();
        }
        want.push('\n');
        write!(
            body,
            "{{\n{}static unsigned int words[{words}];
            run_grid({grid}u, {block}u, [&] {{ mf_held_rows(keys, {n}u, {width}u, (const float*)table_bits, words); }});
            printf(\"{case}\");
            for (unsigned int t = 0; t < {words}u; ++t) printf(\" %08x\", words[t]);
            printf(\"\\n\");\n}}\n",
            array("unsigned int", "keys", &keys),
        )
        .unwrap();
    }
    host_cxx::check_on_host(&kernels(), &body, &want);
}
