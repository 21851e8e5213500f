//! `kernels/mf_window.cuh` (the MF wave kernel's window of 2, 3 or 4 ratings whose rows copy
//! into shared memory ahead of their turn, `mf_sgd_waves_w2`/`_w4`, never run on a GPU) on a
//! warp of 32 host threads (`host_cxx::WARP_OF_32`), against the same ratings stepped one after
//! another by `kernels/mf_step.cuh` on the same warp: the tables and the summed squared errors
//! bit for bit. Each lane copies its own 16-byte pieces and the others read them, so this checks
//! what one lane (`kernels_on_host/headers.rs`) cannot: that a wait and the warp's barrier come between
//! a lane's copy and another lane's read. The copies are `host_cxx::MF_COPIES`, each lane's own
//! groups, landing at once, at the wait, or at random in between. Ranks 4 to 128 (one piece a
//! lane at 128). Skips visibly without a C++ compiler, as `kernels_on_host/headers.rs` does.

use crate::host_cxx;

const CASES: &str = r#"
unsigned long long state = 0x4d465733ull;
auto next = [&](unsigned int n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned int)(state >> 33) % n;
};
static unsigned int ru[32], ri[32];
static float rv[32], users[6 * 128], items[6 * 128], su[6 * 128], si[6 * 128];
static float wu[6 * 128], wi[6 * 128], slab[4 * 2 * MF_SLOT_ROW];
static double seq, win;
static unsigned int left[32];
unsigned int blocks = 0, handed = 0;
const unsigned int ranks[] = {4, 8, 32, 64, 128};
gridDim.x = 1; blockDim.x = 32; blockIdx.x = 0;
for (int trial = 0; trial < 30; ++trial) {
    mf_landing = trial % 3;
    const unsigned int nu = 1 + next(6), ni = 1 + next(6), n = next(21), lo = next(3);
    const unsigned int rank = ranks[trial % 5], width = rank;
    for (unsigned int r = 0; r < lo + n; ++r) {
        ru[r] = next(nu);
        ri[r] = next(ni);
        rv[r] = (float)next(2001) / 1000.0f - 1.0f;
    }
    for (unsigned int k = 0; k < 6 * rank; ++k) {
        users[k] = (float)next(1001) / 1000.0f - 0.5f;
        items[k] = (float)next(1001) / 1000.0f - 0.5f;
    }
    for (unsigned int r = lo + 1; r < lo + n; ++r) {
        for (unsigned int o = (r >= lo + 3 ? r - 3 : lo); o < r; ++o) {
            if (ru[o] == ru[r] || ri[o] == ri[r]) { ++handed; break; }
        }
    }
    std::memcpy(su, users, sizeof su);
    std::memcpy(si, items, sizeof si);
    run_warp([&](unsigned int lane) {
        double s = 0.0;
        for (unsigned int r = lo; r < lo + n; ++r) {
            s += mf_step<true>(su + ru[r] * width, si + ri[r] * width, rv[r], lane, rank, 0, 0.0f,
                               0.05f, 0.02f);
        }
        if (lane == 0u) seq = s;
    });
    for (int w = 0; w < 3; ++w) {
        std::memcpy(wu, users, sizeof wu);
        std::memcpy(wi, items, sizeof wi);
        for (unsigned int k = 0; k < 4 * 2 * MF_SLOT_ROW; ++k) slab[k] = 1e30f;
        run_warp([&](unsigned int lane) {
            const double x =
                w == 0 ? mf_block_window<float, 2>(ru, ri, rv, lo, lo + n, wu, wi, slab, lane, rank,
                                                   width, 0.05f, 0.02f)
                : w == 1 ? mf_block_window<float, 3>(ru, ri, rv, lo, lo + n, wu, wi, slab, lane,
                                                     rank, width, 0.05f, 0.02f)
                         : mf_block_window<float, 4>(ru, ri, rv, lo, lo + n, wu, wi, slab, lane,
                                                     rank, width, 0.05f, 0.02f);
            if (lane == 0u) win = x;
            // Every copy issued was waited for (none left to land in the next block's slots).
            left[lane] = mf_pending_n;
        });
        unsigned int pending = 0;
        for (unsigned int l = 0; l < 32; ++l) pending += left[l];
        if (std::memcmp(wu, su, sizeof wu) != 0 || std::memcmp(wi, si, sizeof wi) != 0
            || win != seq || pending != 0) {
            printf("mismatch: trial %d, window %d, rank %u, %u ratings\n", trial, w + 2, rank, n);
        }
        ++blocks;
    }
}
printf("ok %u %u\n", blocks, handed);
"#;

#[test]
fn the_device_mf_window_on_a_warp_steps_the_ratings_in_order() {
    let headers = format!(
        "{}\n#define MF_WARP 32\n#define MF_CACHE 4\n\
         template <typename T> static inline T __ldcg(const T* p) {{ return *p; }}\n{}\n{}\n{}",
        host_cxx::WARP_OF_32,
        host_cxx::MF_COPIES,
        include_str!("../../../kernels/mf_step.cuh"),
        include_str!("../../../kernels/mf_window.cuh"),
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = host_cxx::run_on_host(dir.path(), &headers, CASES) else {
        return;
    };
    let counts = host_cxx::ok_counts(
        &got,
        "the window on a warp gave other tables than the ratings one after another",
    );
    assert_eq!(counts.len(), 2, "{got}");
    assert_eq!(counts[0], 90, "{got}");
    assert!(counts[1] > 100, "rows handed over: {}", counts[1]);
}
