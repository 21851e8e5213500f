// LDA, word-major sweep over fixed counts: the device half of ps_apps::lda::word_major (the
// module documents the draw; WordMajorLda is its CPU twin, and these functions compute the same
// f32 operations in the same order). Tokens are visited word by word; a block forms its word's
// table (phi for every topic, the chunks' running sums qp) in shared memory once and its warps
// draw the word's tokens against it, each token's document part over the document's nonzero
// topics. Counts are read as they were when the draws' launch began (word_topic, totals and the
// document lists are not written while drawing); the moves are applied afterwards by
// lda_word_apply_doc, so the sweep (one launch of each per document group) is the same
// whatever the grid.
//
// LW_LANES is the width of a warp's chunks: 32 on the device. The host test
// (worker-gpu/tests/kernels_on_host/lda_word.rs) compiles this header with LW_LANES 1 and one thread,
// runs a sweep, and compares it with WordMajorLda::with_lanes(1) bit for bit; the GPU
// conformance case compares the kernels with WordMajorLda (32 lanes) the same way.
//
// The f32 operations are the _rn intrinsics (never contracted into an FMA, as Rust's are not).
//
// A shared header, not a kernel (see philox.cuh): device functions only.

#ifndef LW_LANES
#define LW_LANES 32
#endif
#define LW_FULL 0xffffffffu
#define LW_COUNT_CLAMP 536870912.0f /* 2^29 */

// A count read from the f32 copy, as ps_apps' to_count (and lda_gibbs.cu's lda_count).
__device__ __forceinline__ int lw_count(float x) {
    if (isnan(x)) {
        return 0;
    }
    return (int)fminf(fmaxf(roundf(x), -LW_COUNT_CLAMP), LW_COUNT_CLAMP);
}

// WordMajorPriors::phi: (max(n_wt - own, 0) + beta) / (max(n_t - own, 0) + vbeta).
__device__ __forceinline__ float lw_phi(float word_cell, float total, int own, float beta,
                                        float vbeta) {
    const int nw = max(lw_count(word_cell) - own, 0);
    const int nt = max(lw_count(total) - own, 0);
    return __fdiv_rn(__fadd_rn((float)nw, beta), __fadd_rn((float)nt, vbeta));
}

// lane_scan: the inclusive scan of v over the chunk's lanes (steps 1, 2, 4, ...).
__device__ __forceinline__ float lw_scan(float v, unsigned int lane) {
#if LW_LANES > 1
#pragma unroll
    for (int off = 1; off < LW_LANES; off <<= 1) {
        const float y = __shfl_up_sync(LW_FULL, v, off);
        if (lane >= (unsigned int)off) {
            v = __fadd_rn(v, y);
        }
    }
#endif
    return v;
}

// Lane `src`'s v, in every lane.
__device__ __forceinline__ float lw_from(float v, unsigned int src) {
#if LW_LANES > 1
    return __shfl_sync(LW_FULL, v, src);
#else
    return v;
#endif
}

// The largest v over the lanes, in every lane (exact: a max rounds nothing).
__device__ __forceinline__ float lw_max(float v) {
#if LW_LANES > 1
#pragma unroll
    for (int off = LW_LANES / 2; off > 0; off >>= 1) {
        const float y = __shfl_xor_sync(LW_FULL, v, off);
        v = y > v ? y : v;
    }
#endif
    return v;
}

// The lowest lane where `p` holds, or -1.
__device__ __forceinline__ int lw_first(bool p) {
#if LW_LANES > 1
    return __ffs(__ballot_sync(LW_FULL, p)) - 1;
#else
    return p ? 0 : -1;
#endif
}

// The number of lanes below `lane` where `p` holds, and (in *all) of all lanes.
__device__ __forceinline__ unsigned int lw_rank(bool p, unsigned int lane, unsigned int* all) {
#if LW_LANES > 1
    const unsigned int mask = __ballot_sync(LW_FULL, p);
    *all = (unsigned int)__popc(mask);
    return (unsigned int)__popc(mask & ((1u << lane) - 1u));
#else
    *all = p ? 1u : 0u;
    return 0u;
#endif
}

// WordTable::fill in shared memory: phi[t] for the K topics of the word row `row`, then
// qp[c] = the running sum of the chunks' sums of alpha * phi. Called by the whole block
// (blockDim.x a multiple of LW_LANES); ends with a barrier.
__device__ __forceinline__ void lw_word_table(const float* row, const float* totals,
                                              unsigned int k, float alpha, float beta,
                                              float vbeta, float* phi, float* qp) {
    for (unsigned int t = threadIdx.x; t < k; t += blockDim.x) {
        phi[t] = lw_phi(row[t], totals[t], 0, beta, vbeta);
    }
    __syncthreads();
    const unsigned int lane = threadIdx.x % LW_LANES;
    const unsigned int warps = blockDim.x / LW_LANES;
    const unsigned int chunks = (k + LW_LANES - 1u) / LW_LANES;
    for (unsigned int c = threadIdx.x / LW_LANES; c < chunks; c += warps) {
        const unsigned int t = c * LW_LANES + lane;
        const float v = lw_scan(t < k ? __fmul_rn(alpha, phi[t]) : 0.0f, lane);
        if (lane == LW_LANES - 1u) {
            qp[c] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0u) {
        float acc = 0.0f;
        for (unsigned int c = 0; c < chunks; ++c) {
            acc = __fadd_rn(acc, qp[c]);
            qp[c] = acc;
        }
    }
    __syncthreads();
}

// A document entry's weight: count times phi, with the token's own count and phi' at `old`.
__device__ __forceinline__ float lw_doc_weight(unsigned int t, unsigned int c, unsigned int old,
                                               const float* phi, float phi_own) {
    if (t == old) {
        return __fmul_rn((float)(c > 0u ? c - 1u : 0u), phi_own);
    }
    return __fmul_rn((float)c, phi[t]);
}

// qp[c], less corr from the token's own chunk on.
__device__ __forceinline__ float lw_bound(const float* qp, unsigned int c, unsigned int own_chunk,
                                          float corr) {
    return c >= own_chunk ? __fsub_rn(qp[c], corr) : qp[c];
}

// word_major::draw: the new topic of a token of topic `old` (its word's table phi, qp in shared
// memory; its word row `row` and `totals` in global memory, for phi'), in a document whose
// nonzero topics are dtopics[0..nnz) with counts dcounts, at the uniform u. Called by the whole
// warp; returns the topic in every lane.
__device__ __forceinline__ unsigned int lw_draw(const float* phi, const float* qp, unsigned int k,
                                                const float* row, const float* totals,
                                                const unsigned int* dtopics,
                                                const unsigned int* dcounts, unsigned int nnz,
                                                unsigned int old, float u, float alpha, float beta,
                                                float vbeta, unsigned int lane) {
    const float phi_own = lw_phi(row[old], totals[old], 1, beta, vbeta);
    const float corr = __fsub_rn(__fmul_rn(alpha, phi[old]), __fmul_rn(alpha, phi_own));
    const unsigned int chunks = (k + LW_LANES - 1u) / LW_LANES;
    const float q = __fsub_rn(qp[chunks - 1u], corr);

    // The document part: the chunks' scans plus the carry. Lane c keeps the sum at the end of
    // chunk c and the largest sum of its entries (the first LW_LANES chunks), so that a draw
    // that falls there forms one chunk again instead of all of them: the same sums, so the same
    // topic. The largest, not the end, finds the chunk: each lane's sum adds in its own order,
    // so the sums within a chunk need not rise (weights 1, 2^-24, 2^-24, 0, ...: lane 2 sums to
    // 1 + 2^-23, lane 31 to 1), and the twin takes the first entry whose sum passes x.
    float carry = 0.0f;
    float end = 0.0f;
    float most = 0.0f;
    const unsigned int doc_chunks = (nnz + LW_LANES - 1u) / LW_LANES;
    for (unsigned int base = 0; base < nnz; base += LW_LANES) {
        const unsigned int j = base + lane;
        const float w = j < nnz ? lw_doc_weight(dtopics[j], dcounts[j], old, phi, phi_own) : 0.0f;
        const float v = __fadd_rn(lw_scan(w, lane), carry);
        const float top = lw_max(j < nnz ? v : -1.0f);
        carry = lw_from(v, LW_LANES - 1u);
        if (lane == base / LW_LANES) {
            end = carry;
            most = top;
        }
    }
    const float s = carry;
    const float total = __fadd_rn(s, q);
    if (!(total > 0.0f && isfinite(total))) {
        const double scaled = (double)u * (double)k;
        return min((unsigned int)scaled, k - 1u);
    }
    const float x = __fmul_rn(u, total);
    if (x < s && doc_chunks <= LW_LANES) {
        // The chunk: the first with an entry whose sum passes x (none: the last chunk's last
        // entry, as the twin).
        const int c = lw_first(lane < doc_chunks && x < most);
        const unsigned int base = (unsigned int)(c < 0 ? (int)doc_chunks - 1 : c) * LW_LANES;
        const float before = lw_from(end, base == 0u ? 0u : base / LW_LANES - 1u);
        const float start = base == 0u ? 0.0f : before;
        const unsigned int j = base + lane;
        const float w = j < nnz ? lw_doc_weight(dtopics[j], dcounts[j], old, phi, phi_own) : 0.0f;
        const float v = __fadd_rn(lw_scan(w, lane), start);
        const int hit = lw_first(j < nnz && x < v);
        return dtopics[hit >= 0 ? base + (unsigned int)hit : min(base + LW_LANES, nnz) - 1u];
    }
    if (x < s) {
        carry = 0.0f;
        for (unsigned int base = 0; base < nnz; base += LW_LANES) {
            const unsigned int j = base + lane;
            const float w =
                j < nnz ? lw_doc_weight(dtopics[j], dcounts[j], old, phi, phi_own) : 0.0f;
            const float v = __fadd_rn(lw_scan(w, lane), carry);
            const int hit = lw_first(j < nnz && x < v);
            if (hit >= 0) {
                return dtopics[base + (unsigned int)hit];
            }
            carry = lw_from(v, LW_LANES - 1u);
        }
        return dtopics[nnz - 1u];
    }

    // The word part: the chunk, then the topic within it.
    const float y = __fsub_rn(x, s);
    const unsigned int own_chunk = old / LW_LANES;
    int chunk = -1;
    for (unsigned int cb = 0; cb < chunks && chunk < 0; cb += LW_LANES) {
        const unsigned int c = cb + lane;
        const int hit = lw_first(c < chunks && y < lw_bound(qp, c, own_chunk, corr));
        if (hit >= 0) {
            chunk = (int)(cb + (unsigned int)hit);
        }
    }
    if (chunk < 0) {
        return k - 1u;
    }
    const unsigned int c = (unsigned int)chunk;
    const float start = c == 0u ? 0.0f : lw_bound(qp, c - 1u, own_chunk, corr);
    const unsigned int t = c * LW_LANES + lane;
    const float w = t >= k ? 0.0f : __fmul_rn(alpha, t == old ? phi_own : phi[t]);
    const float v = __fadd_rn(lw_scan(w, lane), start);
    const int hit = lw_first(t < k && y < v);
    return hit >= 0 ? c * LW_LANES + (unsigned int)hit : min(c * LW_LANES + LW_LANES - 1u, k - 1u);
}

// DocLists::of for document d, by a warp: the nonzero topics of its row ndk (K counts) in topic
// order, written from `first` (its first token) while they fit its `len` tokens; returns (in
// every lane) how many were written.
__device__ __forceinline__ unsigned int lw_doc_list(const unsigned int* ndk, unsigned int k,
                                                    unsigned int len, unsigned int* topics,
                                                    unsigned int* counts, unsigned int lane) {
    unsigned int at = 0;
    for (unsigned int base = 0; base < k; base += LW_LANES) {
        const unsigned int t = base + lane;
        const unsigned int c = t < k ? ndk[t] : 0u;
        unsigned int all = 0;
        const unsigned int pos = at + lw_rank(c != 0u, lane, &all);
        if (c != 0u && pos < len) {
            topics[pos] = t;
            counts[pos] = c;
        }
        at += all;
    }
    return min(at, len);
}

// The moves of document d's tokens [lo, hi) from z to z_new, by one thread: the document row
// (owned by the thread) saturating at 0, the copy, the totals and the move counts by atomics.
__device__ __forceinline__ void lw_apply_doc(unsigned int lo, unsigned int hi,
                                             const unsigned int* tokens, unsigned int* z,
                                             const unsigned int* z_new, unsigned int* ndk,
                                             float* word_topic, float* totals, int* wt_delta,
                                             int* totals_delta, unsigned int k) {
    for (unsigned int i = lo; i < hi; ++i) {
        const unsigned int old = z[i];
        const unsigned int to = z_new[i];
        if (old == to) {
            continue;
        }
        const size_t row = (size_t)tokens[i] * k;
        ndk[old] = ndk[old] > 0u ? ndk[old] - 1u : 0u;
        ndk[to] += 1u;
        atomicAdd(word_topic + row + old, -1.0f);
        atomicAdd(word_topic + row + to, 1.0f);
        atomicAdd(totals + old, -1.0f);
        atomicAdd(totals + to, 1.0f);
        atomicSub(wt_delta + row + old, 1);
        atomicAdd(wt_delta + row + to, 1);
        atomicSub(totals_delta + old, 1);
        atomicAdd(totals_delta + to, 1);
        z[i] = to;
    }
}
