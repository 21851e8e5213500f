// Matrix factorisation: one SGD pass over a batch of ratings (cuMF_SGD style), or over a worker's
// ratings in conflict-free waves (mf_sgd_waves, below), and the row and error helpers of the
// resident engine. The step of one rating is mf_step.cuh's; the windowed block of the waves,
// mf_window.cuh's (both headers are prepended to this file).
//
// Serves ps_apps::mf::MfCompute::sgd_epoch. For a rating r of user u and item i, with
// e = r - u.v computed before the update, and the old values on the right-hand side:
//
//     u <- u + lr * (e * v - reg * u)
//     v <- v + lr * (e * u - reg * v)
//
// Layout: users is (local user x width) and items (item x width), row-major f32, width = rank for
// the plain model; the ratings come as three parallel arrays (structure of arrays, so the host
// layout of `Rating` does not matter).
//
// Biased model (`biased` != 0, serves MfCompute::sgd_epoch_biased): width = rank + 1, element
// `rank` of a row is the user's or item's bias, the prediction is mean + b_u + b_i + u.v, and
// after the factor update lane 0 updates both biases, b <- b + lr * (e - reg * b). Every lane
// reads the biases before the warp sum, so none reads a bias lane 0 already wrote.
//
// Parallelism: one warp per rating, the 32 lanes striding over the rank; the dot product is a
// warp-shuffle reduction (every lane ends with the full sum). Warps walk the batch in a grid
// stride (warp w takes ratings w, w + W, ...) and update the factor rows without locks (Hogwild):
// two warps that touch the same user or item row at the same time may lose part of one update.
// Within a rating the update is exact: every lane reads u_k and v_k once, before writing either,
// so the right-hand side uses the old values as in the CPU oracle.
//
// Deviations from the CPU oracle (CpuMf): the dot product is summed in a different order (lane
// partial sums, then a butterfly), so results differ in the last bits; and with more than one
// warp the ratings are processed concurrently rather than in order. Launched with exactly one
// warp (grid 1, block 32) the kernel processes the ratings in the given order, like the oracle.
//
// Launch: any grid, blockDim.x a multiple of 32; no shared memory. `sse` (one double) receives
// the sum of squared errors measured before each update, added atomically (the caller zeroes it).
//
// Factor storage (the resident engine's kernels, `_f16` variants): the tables hold f16 bits
// (unsigned short) instead of f32, as cuMF_SGD does, halving the bytes every update moves. Each
// element is converted to f32 when loaded and rounded to nearest even when stored (cvt.rn, as
// half::f16::from_f32 does); the arithmetic is the f32 one above. The host oracle is
// ps_apps::mf::factors (each rating's step in f32, then both rows rounded to f16).

// The PTX below (f16 conversions, the window's copies, the clock) is left out where
// MF_HOST_SHIMS is defined: worker-gpu/tests/kernels_on_host/mf_waves_grid.rs runs this file's
// wave kernels on the CPU and gives its own. NVRTC never defines it.
#ifndef MF_HOST_SHIMS
// f16 factors (the `_f16` kernels): exact to f32 on load, rounded to nearest even on store (PTX
// cvt, so that mf_step.cuh stays plain C++ for its host test).
template <>
struct MfStore<unsigned short> {
    __device__ static float f32(unsigned short h) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    __device__ static unsigned short stored(float x) {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
        return h;
    }
};

#endif // MF_HOST_SHIMS

// The window's copies (mf_window.cuh): cp.async, sm_80 and later. Compiled for an older device
// (NVRTC compiles for the device's own architecture), the window never runs (MF_HAS_CP_ASYNC
// in mf_waves_body) and these are never called.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MF_HAS_CP_ASYNC 0
#else
#define MF_HAS_CP_ASYNC 1
#endif
#ifndef MF_HOST_SHIMS

__device__ __forceinline__ void mf_copy16(void* shared, const void* global) {
#if MF_HAS_CP_ASYNC
    const unsigned int s = (unsigned int)__cvta_generic_to_shared(shared);
    const size_t g = __cvta_generic_to_global(global);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(g) : "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ void mf_copy_commit() {
#if MF_HAS_CP_ASYNC
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void mf_copy_wait() {
#if MF_HAS_CP_ASYNC
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
#endif // MF_HOST_SHIMS

extern "C" __global__ void mf_sgd(const unsigned int* __restrict__ rating_user,
                                  const unsigned int* __restrict__ rating_item,
                                  const float* __restrict__ rating_value,
                                  unsigned int num_ratings,
                                  float* users,
                                  float* items,
                                  unsigned int rank,
                                  unsigned int width,
                                  int biased,
                                  float mean,
                                  float lr,
                                  float reg,
                                  double* sse) {
    const unsigned int lane = threadIdx.x & (MF_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / MF_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / MF_WARP;
    double warp_sse = 0.0;

    for (unsigned long long r = warp; r < num_ratings; r += num_warps) {
        float* u = users + (size_t)rating_user[r] * width;
        float* v = items + (size_t)rating_item[r] * width;
        warp_sse += mf_step<false>(u, v, rating_value[r], lane, rank, biased, mean, lr, reg);
    }
    if (lane == 0 && warp_sse != 0.0) {
        atomicAdd(sse, warp_sse);
    }
}

// One block's ratings [lo, hi) by one warp, in order, software-pipelined: while rating r is
// computed and written, the rows of rating r + 1 are already being loaded, unless r + 1 shares
// its user row or its item row with r (then they are loaded after r's writes), and the indices
// of rating r + 2. The arithmetic is mf_step's (mf_apply), so the result is the same; only the
// loads move earlier.
template <typename T>
__device__ double mf_block_waves(const unsigned int* __restrict__ rating_user,
                                 const unsigned int* __restrict__ rating_item,
                                 const float* __restrict__ rating_value,
                                 unsigned int lo,
                                 unsigned int hi,
                                 T* users,
                                 T* items,
                                 unsigned int lane,
                                 unsigned int rank,
                                 unsigned int width,
                                 int biased,
                                 float mean,
                                 float lr,
                                 float reg) {
    if (lo >= hi) {
        return 0.0;
    }
    double sse = 0.0;
    unsigned int cu = rating_user[lo];
    unsigned int ci = rating_item[lo];
    float value = rating_value[lo];
    // The next rating's indices are loaded one rating ahead of its rows.
    unsigned int nu = 0, ni = 0;
    float next_value = 0.0f;
    if (lo + 1 < hi) {
        nu = rating_user[lo + 1];
        ni = rating_item[lo + 1];
        next_value = rating_value[lo + 1];
    }
    float uc[MF_CACHE], vc[MF_CACHE], bu, bv;
    mf_load_row<false>(users + (size_t)cu * width, lane, rank, biased, uc, bu);
    mf_load_row<true>(items + (size_t)ci * width, lane, rank, biased, vc, bv);
    for (unsigned int r = lo; r < hi; ++r) {
        const bool more = r + 1 < hi;
        unsigned int nnu = 0, nni = 0;
        float nn_value = 0.0f;
        if (r + 2 < hi) {
            nnu = rating_user[r + 2];
            nni = rating_item[r + 2];
            nn_value = rating_value[r + 2];
        }
        const bool ahead = more && nu != cu && ni != ci;
        float nuc[MF_CACHE], nvc[MF_CACHE], nbu = 0.0f, nbv = 0.0f;
        if (ahead) {
            mf_load_row<false>(users + (size_t)nu * width, lane, rank, biased, nuc, nbu);
            mf_load_row<true>(items + (size_t)ni * width, lane, rank, biased, nvc, nbv);
        }
        T* u = users + (size_t)cu * width;
        T* v = items + (size_t)ci * width;
        T su[MF_CACHE], sv[MF_CACHE], sbu, sbv; // unused here
        const float e = mf_apply<true>(u, v, uc, vc, bu, bv, value, lane, rank, biased, mean, lr,
                                       reg, su, sv, sbu, sbv);
        sse += (double)e * (double)e;
        if (more) {
            if (ahead) {
#pragma unroll
                for (int j = 0; j < MF_CACHE; ++j) {
                    uc[j] = nuc[j];
                    vc[j] = nvc[j];
                }
                bu = nbu;
                bv = nbv;
            } else {
                mf_load_row<false>(users + (size_t)nu * width, lane, rank, biased, uc, bu);
                mf_load_row<true>(items + (size_t)ni * width, lane, rank, biased, vc, bv);
            }
            cu = nu;
            ci = ni;
            value = next_value;
            nu = nnu;
            ni = nni;
            next_value = nn_value;
        }
    }
    return sse;
}

// Conflict-free waves (serves ps_apps::mf::MfResident::run_waves; the schedule is
// ps_apps::mf::WaveSchedule). The ratings are arranged in `bands x bands` blocks, block
// (p, q) = ratings [block_start[p * bands + q], block_start[p * bands + q + 1]) whose users are in
// user band p and items in item band q. Warp p (one per user band, `bands` warps in all, which
// must all be resident at once: the host sizes `bands` by the occupancy) runs, for each wave t,
// block (p, (p + shifts[t]) mod bands), its ratings in order: with the next rating's rows loaded
// during the current one (mf_sgd_waves, mf_block_waves) or with a window of W ratings' rows
// copying into shared memory (mf_sgd_waves_w2, _w4: mf_block_window, for plain rows of whole
// 16-byte pieces up to rank 128 in blocks of MF_WAVE_WARPS warps; other shapes run
// mf_block_waves); all give the same tables.
//
// No two warps touch the same row at the same time: a wave's blocks share no user band and no
// item band, and warp p starts wave t only once the warp that held its item band in wave t - 1
// has finished that wave (`done[w]` counts the waves warp w has finished in this launch; the
// caller zeroes it). That warp waited in the same way, so each item band is worked on in wave
// order, one warp at a time, and the result equals running the waves' blocks one after another
// (up to the order of a dot product's sum): deterministic whatever the timing. Item rows are
// read through L2 (`__ldcg`) so a warp never sees a stale L1 copy of a row another SM wrote;
// the writer fences before it publishes `done`, the reader fences after it sees it.
//
// A warp that waits more than MF_STALL_NS for one neighbour (the warps were not all resident,
// or a neighbour faulted) sets `stalled[0]` and every warp stops: the host reports an error
// rather than hang. A warp that ran a block with the window sets `stalled[1]` (so that a test
// can tell the window ran, not the loop it falls back to); the caller zeroes both.
#define MF_STALL_NS 20000000000ull

// Warps per block the window kernels size their shared memory for (the engine launches
// blocks of 128 threads); with other blocks they run mf_block_waves.
#define MF_WAVE_WARPS 4

#ifndef MF_HOST_SHIMS
__device__ __forceinline__ unsigned long long mf_now_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif

template <typename T, int W>
__device__ __forceinline__ void mf_waves_body(const unsigned int* __restrict__ rating_user,
                                              const unsigned int* __restrict__ rating_item,
                                              const float* __restrict__ rating_value,
                                              const unsigned int* __restrict__ block_start,
                                              const unsigned int* __restrict__ shifts,
                                              unsigned int num_waves,
                                              unsigned int bands,
                                              T* users,
                                              T* items,
                                              unsigned int rank,
                                              unsigned int width,
                                              int biased,
                                              float mean,
                                              float lr,
                                              float reg,
                                              unsigned int* done,
                                              unsigned int* stalled,
                                              double* sse) {
    const unsigned int lane = threadIdx.x & (MF_WARP - 1);
    const unsigned int p = (blockIdx.x * blockDim.x + threadIdx.x) / MF_WARP;
    if (p >= bands) {
        return; // the whole warp: p is the same on every lane
    }
    double warp_sse = 0.0;
    for (unsigned int t = 0; t < num_waves; ++t) {
        const unsigned int q = (p + shifts[t]) % bands;
        int stop = 0;
        if (lane == 0) {
            if (t > 0) {
                const unsigned int prev = (q + bands - shifts[t - 1] % bands) % bands;
                if (prev != p) {
                    const unsigned long long start = mf_now_ns();
                    while (*(volatile unsigned int*)&done[prev] < t) {
                        if (*(volatile unsigned int*)stalled ||
                            mf_now_ns() - start > MF_STALL_NS) {
                            atomicExch(stalled, 1u);
                            stop = 1;
                            break;
                        }
                        __nanosleep(64);
                    }
                }
            }
            stop |= *(volatile unsigned int*)stalled != 0;
        }
        if (__shfl_sync(0xffffffffu, stop, 0)) {
            break;
        }
        __threadfence(); // acquire: the neighbour's row writes before this warp's reads
        // Lane 0 read `done`; the shuffle carries no memory order, the warp barrier does: every
        // lane's reads below come after lane 0's acquire.
        __syncwarp();
        const unsigned int b = p * bands + q;
        if (W > 1 && MF_HAS_CP_ASYNC && blockDim.x == MF_WARP * MF_WAVE_WARPS &&
            mf_window_fits<T>(rank, width, biased)) {
            // This block's warps' slots: W ratings' user and item rows each.
            __shared__ __align__(16) T slabs[MF_WAVE_WARPS][(W > 1 ? W : 1) * 2 * MF_SLOT_ROW];
            warp_sse += mf_block_window<T, (W > 1 ? W : 2)>(
                rating_user, rating_item, rating_value, block_start[b], block_start[b + 1], users,
                items, slabs[threadIdx.x / MF_WARP], lane, rank, width, lr, reg);
            if (lane == 0 && t == 0) {
                atomicExch(stalled + 1, 1u);
            }
        } else {
            warp_sse += mf_block_waves<T>(rating_user, rating_item, rating_value,
                                          block_start[b], block_start[b + 1], users, items, lane,
                                          rank, width, biased, mean, lr, reg);
        }
        __threadfence(); // release: this wave's row writes before `done` says so
        __syncwarp();
        if (lane == 0) {
            atomicExch(&done[p], t + 1);
        }
    }
    if (lane == 0 && warp_sse != 0.0) {
        atomicAdd(sse, warp_sse);
    }
}

#define MF_WAVES_PARAMS(T)                                                                       \
    const unsigned int *__restrict__ rating_user, const unsigned int *__restrict__ rating_item,   \
        const float *__restrict__ rating_value, const unsigned int *__restrict__ block_start,     \
        const unsigned int *__restrict__ shifts, unsigned int num_waves, unsigned int bands,      \
        T *users, T *items, unsigned int rank, unsigned int width, int biased, float mean,        \
        float lr, float reg, unsigned int *done, unsigned int *stalled, double *sse
#define MF_WAVES_ARGS                                                                            \
    rating_user, rating_item, rating_value, block_start, shifts, num_waves, bands, users, items,  \
        rank, width, biased, mean, lr, reg, done, stalled, sse

extern "C" __global__ void mf_sgd_waves(MF_WAVES_PARAMS(float)) {
    mf_waves_body<float, 1>(MF_WAVES_ARGS);
}

extern "C" __global__ void mf_sgd_waves_f16(MF_WAVES_PARAMS(unsigned short)) {
    mf_waves_body<unsigned short, 1>(MF_WAVES_ARGS);
}

// The same waves with windows of 2 and 4 ratings loaded ahead per warp (mf_block_window).
extern "C" __global__ void mf_sgd_waves_w2(MF_WAVES_PARAMS(float)) {
    mf_waves_body<float, 2>(MF_WAVES_ARGS);
}

extern "C" __global__ void mf_sgd_waves_w2_f16(MF_WAVES_PARAMS(unsigned short)) {
    mf_waves_body<unsigned short, 2>(MF_WAVES_ARGS);
}

extern "C" __global__ void mf_sgd_waves_w4(MF_WAVES_PARAMS(float)) {
    mf_waves_body<float, 4>(MF_WAVES_ARGS);
}

extern "C" __global__ void mf_sgd_waves_w4_f16(MF_WAVES_PARAMS(unsigned short)) {
    mf_waves_body<unsigned short, 4>(MF_WAVES_ARGS);
}

// Sum of squared errors of a batch without updating anything (held-out RMSE), for the plain
// model (width = rank, biased = 0) or the biased one (width = rank + 1, prediction
// mean + b_u + b_i + u.v). Same layout and launch as mf_sgd.
template <typename T>
__device__ __forceinline__ void mf_error_body(const unsigned int* __restrict__ rating_user,
                                              const unsigned int* __restrict__ rating_item,
                                              const float* __restrict__ rating_value,
                                              unsigned int num_ratings,
                                              const T* __restrict__ users,
                                              const T* __restrict__ items,
                                              unsigned int rank,
                                              unsigned int width,
                                              int biased,
                                              float mean,
                                              double* sse) {
    const unsigned int lane = threadIdx.x & (MF_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / MF_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / MF_WARP;
    double warp_sse = 0.0;
    for (unsigned long long r = warp; r < num_ratings; r += num_warps) {
        const T* u = users + (size_t)rating_user[r] * width;
        const T* v = items + (size_t)rating_item[r] * width;
        float part = 0.0f;
        for (unsigned int k = lane; k < rank; k += MF_WARP) {
            part = fmaf(mf_f32(u[k]), mf_f32(v[k]), part);
        }
        const float dot = mf_warp_sum(part);
        const float pred = biased ? mean + mf_f32(u[rank]) + mf_f32(v[rank]) + dot : dot;
        const double e = (double)rating_value[r] - (double)pred;
        warp_sse += e * e;
    }
    if (lane == 0 && warp_sse != 0.0) {
        atomicAdd(sse, warp_sse);
    }
}

#define MF_ERROR_PARAMS(T)                                                                       \
    const unsigned int *__restrict__ rating_user, const unsigned int *__restrict__ rating_item,   \
        const float *__restrict__ rating_value, unsigned int num_ratings,                         \
        const T *__restrict__ users, const T *__restrict__ items, unsigned int rank,              \
        unsigned int width, int biased, float mean, double *sse
#define MF_ERROR_ARGS                                                                            \
    rating_user, rating_item, rating_value, num_ratings, users, items, rank, width, biased, mean, sse

extern "C" __global__ void mf_squared_error(MF_ERROR_PARAMS(float)) {
    mf_error_body<float>(MF_ERROR_ARGS);
}

extern "C" __global__ void mf_squared_error_f16(MF_ERROR_PARAMS(unsigned short)) {
    mf_error_body<unsigned short>(MF_ERROR_ARGS);
}

// Rows in and out of a table of `width`-wide rows: scatter writes row r of `rows` (f32) to row
// keys[r] of `table`; gather copies row keys[r] of `table` to row r of `rows` (f32). One thread
// per element; the host checks every key against the table first. The `_f16` variants' tables
// hold f16 bits (scatter rounds to nearest even, gather is exact).
template <typename T>
__device__ __forceinline__ void mf_scatter_body(const unsigned int* __restrict__ keys,
                                                const float* __restrict__ rows,
                                                unsigned int n,
                                                unsigned int width,
                                                T* table) {
    const unsigned long long total = (unsigned long long)n * width;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long r = i / width;
        mf_put(&table[(size_t)keys[r] * width + (i - r * width)], rows[i]);
    }
}

template <typename T>
__device__ __forceinline__ void mf_gather_body(const unsigned int* __restrict__ keys,
                                               unsigned int n,
                                               unsigned int width,
                                               const T* __restrict__ table,
                                               float* rows) {
    const unsigned long long total = (unsigned long long)n * width;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long r = i / width;
        rows[i] = mf_f32(table[(size_t)keys[r] * width + (i - r * width)]);
    }
}

extern "C" __global__ void mf_scatter_rows(const unsigned int* __restrict__ keys,
                                           const float* __restrict__ rows,
                                           unsigned int n,
                                           unsigned int width,
                                           float* table) {
    mf_scatter_body<float>(keys, rows, n, width, table);
}

extern "C" __global__ void mf_scatter_rows_f16(const unsigned int* __restrict__ keys,
                                               const float* __restrict__ rows,
                                               unsigned int n,
                                               unsigned int width,
                                               unsigned short* table) {
    mf_scatter_body<unsigned short>(keys, rows, n, width, table);
}

extern "C" __global__ void mf_gather_rows(const unsigned int* __restrict__ keys,
                                          unsigned int n,
                                          unsigned int width,
                                          const float* __restrict__ table,
                                          float* rows) {
    mf_gather_body<float>(keys, n, width, table, rows);
}

extern "C" __global__ void mf_gather_rows_f16(const unsigned int* __restrict__ keys,
                                              unsigned int n,
                                              unsigned int width,
                                              const unsigned short* __restrict__ table,
                                              float* rows) {
    mf_gather_body<unsigned short>(keys, n, width, table, rows);
}

// words[t] bit j: whether row keys[32 t + j] of `table` (rows of `width` f32: the engine's
// residual) holds a value other than zero (-0.0 counts as zero, NaN does not), for n keys. These
// are the rows the worker library would keep a residual row for after a push, so an epoch split
// over clocks pushes them again with the next clock's rows. Any 1-D grid.
extern "C" __global__ void mf_held_rows(const unsigned int* __restrict__ keys,
                                        unsigned int n,
                                        unsigned int width,
                                        const float* __restrict__ table,
                                        unsigned int* words) {
    const unsigned int count = (n + 31u) / 32u;
    const unsigned int stride = gridDim.x * blockDim.x;
    for (unsigned int t = blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        unsigned int word = 0u;
        for (unsigned int j = 0; j < 32u && 32u * t + j < n; ++j) {
            const float* row = table + (size_t)keys[32u * t + j] * width;
            bool held = false;
            for (unsigned int c = 0; c < width && !held; ++c) {
                held = row[c] != 0.0f;
            }
            word |= held ? 1u << j : 0u;
        }
        words[t] = word;
    }
}
