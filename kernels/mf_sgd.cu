// Matrix factorisation: one SGD pass over a batch of ratings (cuMF_SGD style).
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

#define MF_WARP 32
// Rank elements each lane keeps in registers between the dot product and the update
// (rank <= 32 * MF_CACHE stays in registers; beyond that the rest is read again from memory).
#define MF_CACHE 4

__device__ __forceinline__ float mf_warp_sum(float x) {
#pragma unroll
    for (int off = MF_WARP / 2; off > 0; off >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, off);
    }
    return x;
}

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
        const float bu = biased ? u[rank] : 0.0f;
        const float bv = biased ? v[rank] : 0.0f;

        float uc[MF_CACHE];
        float vc[MF_CACHE];
        float part = 0.0f;
#pragma unroll
        for (int c = 0; c < MF_CACHE; ++c) {
            const unsigned int k = lane + MF_WARP * c;
            uc[c] = 0.0f;
            vc[c] = 0.0f;
            if (k < rank) {
                uc[c] = u[k];
                vc[c] = v[k];
                part = fmaf(uc[c], vc[c], part);
            }
        }
        for (unsigned int k = lane + MF_WARP * MF_CACHE; k < rank; k += MF_WARP) {
            part = fmaf(u[k], v[k], part);
        }
        const float dot = mf_warp_sum(part);
        const float e = rating_value[r] - (biased ? mean + bu + bv + dot : dot);
        warp_sse += (double)e * (double)e;

        // Every lane has finished reading its u_k, v_k above before it writes them below, and
        // no two lanes share an index k: the update uses the old values.
#pragma unroll
        for (int c = 0; c < MF_CACHE; ++c) {
            const unsigned int k = lane + MF_WARP * c;
            if (k < rank) {
                const float u0 = uc[c];
                const float v0 = vc[c];
                u[k] = u0 + lr * (e * v0 - reg * u0);
                v[k] = v0 + lr * (e * u0 - reg * v0);
            }
        }
        for (unsigned int k = lane + MF_WARP * MF_CACHE; k < rank; k += MF_WARP) {
            const float u0 = u[k];
            const float v0 = v[k];
            u[k] = u0 + lr * (e * v0 - reg * u0);
            v[k] = v0 + lr * (e * u0 - reg * v0);
        }
        if (biased) {
            // Every lane has read the biases (above, before the warp sum); order those reads
            // before lane 0's write in memory too, not only in the source.
            __syncwarp();
        }
        if (biased && lane == 0) {
            u[rank] = bu + lr * (e - reg * bu);
            v[rank] = bv + lr * (e - reg * bv);
        }
        // The next rating of this warp may share a row with this one: make this rating's
        // writes visible to the other lanes first.
        __syncwarp();
    }
    if (lane == 0 && warp_sse != 0.0) {
        atomicAdd(sse, warp_sse);
    }
}

// Sum of squared errors of a batch without updating anything (for RMSE on held-out ratings).
// Same layout and launch as mf_sgd.
extern "C" __global__ void mf_squared_error(const unsigned int* __restrict__ rating_user,
                                            const unsigned int* __restrict__ rating_item,
                                            const float* __restrict__ rating_value,
                                            unsigned int num_ratings,
                                            const float* __restrict__ users,
                                            const float* __restrict__ items,
                                            unsigned int rank,
                                            double* sse) {
    const unsigned int lane = threadIdx.x & (MF_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / MF_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / MF_WARP;
    double warp_sse = 0.0;
    for (unsigned long long r = warp; r < num_ratings; r += num_warps) {
        const float* u = users + (size_t)rating_user[r] * rank;
        const float* v = items + (size_t)rating_item[r] * rank;
        float part = 0.0f;
        for (unsigned int k = lane; k < rank; k += MF_WARP) {
            part = fmaf(u[k], v[k], part);
        }
        const double e = (double)rating_value[r] - (double)mf_warp_sum(part);
        warp_sse += e * e;
    }
    if (lane == 0 && warp_sse != 0.0) {
        atomicAdd(sse, warp_sse);
    }
}
