// LDA, resident path: the per-clock log-likelihood of a worker's device-resident state under the
// word-topic rows and totals it pulled, so that the document-topic counts never leave the device.
//
// Serves ps_apps::lda::LdaResident::loglik (worker-gpu/src/cuda/lda_resident.rs); the sweep and
// the delta compaction are lda_gibbs.cu's kernels on the same buffers. The value is
// ps_apps::lda::loglik:
//
//     sum over tokens i (word row w, document d of N_d tokens) of
//         log sum_t theta_dt * phi_tw,
//     theta_dt = (n_dt + alpha) / (N_d + K * alpha),
//     phi_tw   = (count(n_wt) + beta) / (count(n_t) + V * beta),
//
// where count(x) is x when finite and positive, else 0 (metrics::count: no rounding, unlike the
// sampler's lda_count), all in f64.
//
// Layout (row-major, K = topics): doc_offsets num_docs + 1 token offsets (u32); tokens the local
// word row of every token; doc_topic num_docs x K (u32); word_topic words x K (f32); totals K
// (f32); partial one double per warp of the launch (written by every warp, so not zeroed).
//
// lda_loglik: one warp per document (grid stride), the K topics spread over the lanes, a warp
// butterfly sum per token; lane 0 of each warp accumulates its documents' logs in order and writes
// partial[warp]. lda_sum_partials (grid 1, block LDA_SUM_BLOCK) adds the partials in a fixed tree,
// so a launch shape gives the same bits every time. Deviation from the host: the sum over topics
// and over tokens runs in another order (f64 rounding only).
//
// lda_scatter_rows: a pulled run of rows, packed (lda_rows.cuh, which documents the image; or
// Rice coded, lda_scatter_rice),
// written into the word-topic copy at the run's first row, which the caller has zeroed; so only
// the run's nonzero entries cross PCIe. The lda_delta_* kernels pack the sweep's move counts
// (lda_gibbs.cu's wt_delta) the same way for the trip out.
//
// Launch: lda_loglik any grid, blockDim.x a multiple of 32, partial holding
// gridDim.x * blockDim.x / 32 doubles; lda_sum_partials grid 1, block LDA_SUM_BLOCK;
// lda_scatter_rows any grid, blockDim.x a multiple of 32; the lda_delta_* kernels any grid
// (lda_delta_scan: one thread works), in the order lda_rows.cuh gives.

#define LDA_RES_WARP 32
#define LDA_RES_FULL 0xffffffffu
#define LDA_SUM_BLOCK 256

// metrics::count: a table count, negative or non-finite as 0.
__device__ __forceinline__ double lda_res_count(float x) {
    return isfinite(x) ? fmax((double)x, 0.0) : 0.0;
}

extern "C" __global__ void lda_loglik(const unsigned int* __restrict__ doc_offsets,
                                      unsigned int num_docs,
                                      const unsigned int* __restrict__ tokens,
                                      const unsigned int* __restrict__ doc_topic,
                                      const float* __restrict__ word_topic,
                                      const float* __restrict__ totals,
                                      unsigned int topics,
                                      double alpha,
                                      double beta,
                                      double vbeta,
                                      double* partial) {
    const unsigned int lane = threadIdx.x & (LDA_RES_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / LDA_RES_WARP;
    const unsigned long long num_warps =
        ((unsigned long long)gridDim.x * blockDim.x) / LDA_RES_WARP;
    const unsigned int k = topics;
    double acc = 0.0;
    if (k > 0u) {
        for (unsigned long long d = warp; d < num_docs; d += num_warps) {
            const unsigned int lo = doc_offsets[d];
            const unsigned int hi = doc_offsets[d + 1];
            const double norm = 1.0 / ((double)(hi - lo) + (double)k * alpha);
            const unsigned int* ndk = doc_topic + (size_t)d * k;
            for (unsigned int i = lo; i < hi; ++i) {
                const float* row = word_topic + (size_t)tokens[i] * k;
                double p = 0.0;
                for (unsigned int t = lane; t < k; t += LDA_RES_WARP) {
                    const double theta = ((double)ndk[t] + alpha) * norm *
                                         (1.0 / (lda_res_count(totals[t]) + vbeta));
                    p += theta * (lda_res_count(row[t]) + beta);
                }
                for (int off = LDA_RES_WARP / 2; off > 0; off >>= 1) {
                    p += __shfl_xor_sync(LDA_RES_FULL, p, off);
                }
                acc += log(p);
            }
        }
    }
    if (lane == 0) {
        partial[warp] = acc;
    }
}

extern "C" __global__ void lda_sum_partials(const double* __restrict__ partial,
                                            unsigned int n,
                                            double* out) {
    __shared__ double sums[LDA_SUM_BLOCK];
    const unsigned int tid = threadIdx.x;
    if (blockIdx.x != 0u || blockDim.x != LDA_SUM_BLOCK) {
        return;
    }
    double s = 0.0;
    for (unsigned int i = tid; i < n; i += LDA_SUM_BLOCK) {
        s += partial[i];
    }
    sums[tid] = s;
    __syncthreads();
    for (unsigned int half = LDA_SUM_BLOCK / 2; half > 0; half >>= 1) {
        if (tid < half) {
            sums[tid] += sums[tid + half];
        }
        __syncthreads();
    }
    if (tid == 0) {
        out[0] = sums[0];
    }
}

extern "C" __global__ void lda_scatter_rows(const unsigned int* __restrict__ image,
                                            unsigned int rows,
                                            unsigned int entries,
                                            unsigned int f32_values,
                                            unsigned int topics,
                                            float* __restrict__ dst) {
    lda_rows_scatter(image, rows, entries, f32_values, topics, dst);
}

extern "C" __global__ void lda_scatter_rice(const unsigned int* __restrict__ image,
                                            unsigned int rows,
                                            unsigned int wide_lengths,
                                            unsigned int stream_words,
                                            unsigned int topics,
                                            float* __restrict__ dst) {
    lda_rows_scatter_rice(image, rows, wide_lengths, stream_words, topics, dst);
}

extern "C" __global__ void lda_delta_count(const int* __restrict__ cells,
                                           unsigned int rows,
                                           unsigned int topics,
                                           unsigned int* __restrict__ image) {
    lda_delta_count_rows(cells, rows, topics, image);
}

extern "C" __global__ void lda_delta_chunks(unsigned int* __restrict__ image,
                                            unsigned int rows,
                                            unsigned int* __restrict__ meta) {
    lda_delta_chunk_rows(image, rows, meta);
}

extern "C" __global__ void lda_delta_scan(unsigned int* __restrict__ image,
                                          unsigned int rows,
                                          unsigned int capacity,
                                          unsigned int* __restrict__ meta) {
    lda_delta_scan_rows(image, rows, capacity, meta);
}

extern "C" __global__ void lda_delta_write(const int* __restrict__ cells,
                                           unsigned int rows,
                                           unsigned int topics,
                                           unsigned int* __restrict__ image,
                                           const unsigned int* __restrict__ meta,
                                           unsigned int capacity) {
    lda_delta_write_rows(cells, rows, topics, image, meta, capacity);
}

extern "C" __global__ void lda_delta_ends(unsigned int* __restrict__ image,
                                          unsigned int rows,
                                          const unsigned int* __restrict__ meta,
                                          unsigned int capacity) {
    lda_delta_ends_rows(image, rows, meta, capacity);
}
