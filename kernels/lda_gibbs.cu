// LDA: one collapsed-Gibbs sweep over a worker's tokens, and the compaction of its delta.
//
// Serves ps_apps::lda::LdaCompute::sweep (lda_gibbs_sweep, or lda_gibbs_sweep_ends) and its
// sample_token test hook (lda_gibbs_sample_token[_ends], which takes its uniform as an argument). The conditional of token i
// (local word row w, document d, current topic `old`) is
//
//     p(k) ∝ (n_dk + alpha) * (max(n_wk, 0) + beta) / (max(n_k, 0) + V * beta)
//
// with every count excluding token i itself: its current topic's counts are decremented first
// (n_dk saturating at 0, the f32 copies by exactly 1), as in the CPU oracle (CpuLda). Counts read
// from the f32 copies go through lda_count (round half away from zero, clamp to +-2^29, NaN as 0)
// and are clamped at 0 in the probability only, never in the stored copy.
//
// Layout (all row-major, K = topics):
//   doc_offsets  num_docs + 1 token offsets (u32; the host narrows its usize offsets)
//   tokens       local word row of every token (index into the worker's `words`)
//   z            topic of every token, updated in place
//   doc_topic    num_docs x K (u32), updated in place
//   word_topic   words x K (f32), the local copy, updated in place with atomics
//   totals       K (f32), updated in place with atomics
//   seed_lo/hi, stream, first_index
//                the sweep's uniforms, drawn here rather than shipped: token i (its position in
//                `tokens`) uses philox_uniform(seed, stream, first_index + i) from philox.cuh
//                (prepended by worker-gpu/src/kernels.rs), converted exactly to double. The host
//                passes SweepKey's seed, philox_stream() (the worker) and philox_index(0)
//                (clock << 32), so the uniform is bit for bit ps_apps' SweepKey::uniform(i), the
//                one CpuLda and SparseLda draw for the same token.
//   scratch      (gridDim.x * blockDim.x / 32) x K doubles: each warp's cumulative sums
//   wt_delta     words x K (i32), += the moves (the caller zeroes it); compacted by
//                lda_compact_delta into (global word, topic, change) triples
//   totals_delta K (i32), += the moves (the caller zeroes it)
//
// Parallelism: one warp per document (documents in a grid stride). The document row belongs to
// its warp, so n_dk needs no atomics; within the warp the K topics are spread over the lanes: a
// warp prefix scan per 32 topics writes the cumulative sum to the warp's scratch row (each count
// is read once per token, so the draw sees one consistent snapshot), then a ballot finds the
// first entry above the scaled uniform (lda_draw_scratch). lda_gibbs_sweep_ends draws the same
// topic without the scratch row where K <= 1,024 (lda_draw_ends: each chunk's end in a lane's
// register, the chosen chunk formed again). Tokens of different documents are sampled concurrently
// against the shared word-topic copy and totals (AD-LDA style staleness within the sweep): the
// atomics keep the counts exact, only the order of moves differs.
//
// Deviations from the CPU oracle: the cumulative sum is formed in a different order (a scan
// per 32 topics plus a carry, still in f64), so a uniform that falls within rounding of a boundary
// between two topics may pick the neighbour; and with more than one warp, documents are sampled
// concurrently. Launched with one warp (grid 1, block 32) the kernel visits documents and tokens
// in the oracle's order with the oracle's uniforms (the same Philox values), and the draws agree
// with CpuLda except at such boundaries.
//
// Launch: any grid, blockDim.x a multiple of 32 and at most 256 for the sweeps (their launch
// bounds ask ptxas for 4 blocks of 256 per SM: 63 registers, no spills); no shared memory.

#define LDA_WARP 32
#define LDA_FULL 0xffffffffu
#define LDA_COUNT_CLAMP 536870912.0f /* 2^29 */
// Chunks of 32 topics whose weights (pass 1) or cumulative sums (pass 2) are loaded together.
#define LDA_BATCH 4

// A count read from a (possibly stale, possibly hostile) f32 copy, as ps_apps' to_count.
__device__ __forceinline__ int lda_count(float x) {
    if (isnan(x)) {
        return 0;
    }
    return (int)fminf(fmaxf(roundf(x), -LDA_COUNT_CLAMP), LDA_COUNT_CLAMP);
}

// Reads a shared, concurrently updated count from L2 (never a stale L1 line).
__device__ __forceinline__ float lda_load_shared(const float* p) {
    return __ldcg(p);
}

// Unnormalised conditional of a topic from its counts as loaded (already excluding the token).
__device__ __forceinline__ double lda_weight_of(unsigned int ndk_t,
                                                float wt_t,
                                                float total_t,
                                                double alpha,
                                                double beta,
                                                double vbeta) {
    const double nd = (double)ndk_t;
    const double nw = (double)max(lda_count(wt_t), 0);
    const double nt = (double)max(lda_count(total_t), 0);
    return (nd + alpha) * (nw + beta) / (nt + vbeta);
}

// Unnormalised conditional of topic t (counts already exclude the token).
__device__ __forceinline__ double lda_weight(const unsigned int* ndk,
                                             const float* wt_row,
                                             const float* totals,
                                             unsigned int t,
                                             double alpha,
                                             double beta,
                                             double vbeta) {
    return lda_weight_of(ndk[t], lda_load_shared(wt_row + t), lda_load_shared(totals + t), alpha,
                         beta, vbeta);
}

// This lane's weights of the LDA_BATCH chunks from topic `base` (0 past the last topic): every
// count of the batch is loaded before any weight is formed, so the loads (mostly from L2 and
// DRAM) are in flight together. Formed one chunk at a time instead, each f64 division (a call
// to its slow path in the SASS) kept the next chunk's loads from being issued before it. A
// topic past the last loads topic 0's counts (always there) and weighs 0.
__device__ __forceinline__ void lda_batch_weights(const unsigned int* ndk,
                                                  const float* wt_row,
                                                  const float* totals,
                                                  unsigned int base,
                                                  unsigned int lane,
                                                  unsigned int k,
                                                  double alpha,
                                                  double beta,
                                                  double vbeta,
                                                  double c[LDA_BATCH]) {
    unsigned int nd[LDA_BATCH];
    float nw[LDA_BATCH], nt[LDA_BATCH];
#pragma unroll
    for (int j = 0; j < LDA_BATCH; ++j) {
        const unsigned int t = base + (unsigned int)j * LDA_WARP + lane;
        const unsigned int at = t < k ? t : 0u;
        nd[j] = ndk[at];
        nw[j] = lda_load_shared(wt_row + at);
        nt[j] = lda_load_shared(totals + at);
    }
#pragma unroll
    for (int j = 0; j < LDA_BATCH; ++j) {
        const unsigned int t = base + (unsigned int)j * LDA_WARP + lane;
        c[j] = t < k ? lda_weight_of(nd[j], nw[j], nt[j], alpha, beta, vbeta) : 0.0;
    }
}

// The draw where the weights' sum is not a positive finite number: u scaled to a uniform topic,
// as the oracle.
__device__ __forceinline__ unsigned int lda_degenerate_draw(double u, unsigned int k) {
    const double s = u * (double)k;
    return s > 0.0 ? min((unsigned int)fmin(s, (double)(k - 1)), k - 1) : 0u;
}

// The inclusive prefix sum of `v` over the warp's lanes (lane l gets the sum of lanes 0..l), in
// one fixed order: both draws below sum a chunk this way, so their sums agree bit for bit.
__device__ __forceinline__ double lda_warp_scan(double v, unsigned int lane) {
#pragma unroll
    for (int off = 1; off < LDA_WARP; off <<= 1) {
        const double y = __shfl_up_sync(LDA_FULL, v, off);
        if (lane >= (unsigned int)off) {
            v += y;
        }
    }
    return v;
}

// Draws the new topic of a token (its counts already removed) by inverting u in [0, 1) on the
// cumulative conditional, formed in the warp's scratch row `cdf` (any K). Called by the whole
// warp; returns the topic in every lane.
__device__ __forceinline__ unsigned int lda_draw_scratch(const unsigned int* ndk,
                                                         const float* wt_row,
                                                         const float* totals,
                                                         double u,
                                                         double* cdf,
                                                         unsigned int lane,
                                                         unsigned int k,
                                                         double alpha,
                                                         double beta,
                                                         double vbeta) {
    // Pass 1: the cumulative sum, 32 topics at a time (a warp scan plus the carry), into the
    // warp's scratch row. Every count is read exactly once per token, so the inversion below sees
    // one consistent snapshot even while other warps move tokens. The weights of LDA_BATCH
    // chunks are formed before any is scanned, so their loads (mostly from L2) are in flight
    // together rather than one chunk's after another's; the sums are the same, in the same order
    // (a chunk past the last topic adds exact zeros).
    double carry = 0.0;
    for (unsigned int base = 0; base < k; base += LDA_WARP * LDA_BATCH) {
        double c[LDA_BATCH];
        lda_batch_weights(ndk, wt_row, totals, base, lane, k, alpha, beta, vbeta, c);
#pragma unroll
        for (int j = 0; j < LDA_BATCH; ++j) {
            const unsigned int t = base + (unsigned int)j * LDA_WARP + lane;
            const double v = lda_warp_scan(c[j], lane) + carry;
            if (t < k) {
                cdf[t] = v;
            }
            carry = __shfl_sync(LDA_FULL, v, LDA_WARP - 1);
        }
    }
    const double total = carry;

    // Pass 2: the first topic whose cumulative sum exceeds u * total. Lane l reads back only the
    // entries it wrote itself (t = base + l in both passes), LDA_BATCH chunks' worth at a time,
    // and the chunks are then tested in order.
    unsigned int chosen;
    if (total > 0.0 && isfinite(total)) {
        const double x = u * total;
        chosen = k - 1; // rounding fallback: the last topic, as the oracle
        bool found = false;
        for (unsigned int base = 0; base < k && !found; base += LDA_WARP * LDA_BATCH) {
            double v[LDA_BATCH];
#pragma unroll
            for (int j = 0; j < LDA_BATCH; ++j) {
                const unsigned int t = base + (unsigned int)j * LDA_WARP + lane;
                v[j] = t < k ? cdf[t] : 0.0;
            }
#pragma unroll
            for (int j = 0; j < LDA_BATCH; ++j) {
                const unsigned int t = base + (unsigned int)j * LDA_WARP + lane;
                const unsigned int hit = __ballot_sync(LDA_FULL, t < k && x < v[j]);
                if (!found && hit != 0u) {
                    chosen = base + (unsigned int)j * LDA_WARP + (unsigned int)(__ffs(hit) - 1);
                    found = true;
                }
            }
        }
    } else {
        chosen = lda_degenerate_draw(u, k);
    }

    return chosen;
}

// lda_draw_scratch's draw without the scratch row, for K up to 32 x 32: pass 1 keeps only the sum
// at the end of each chunk of 32 topics, lane j holding chunk j's, in a register; the chunk the
// draw falls in is the first whose end exceeds u * total, and only that chunk's weights are
// formed again and scanned onto the previous chunk's end, exactly as pass 1 formed them. So a
// token's sums never go to memory and pass 2 reads 3 x 32 counts instead of the scratch row.
// With one warp nothing moves a count between the passes, and the topic is lda_draw_scratch's
// bit for bit (unless f64 rounding puts a sum inside a chunk above the chunk's last one: a tie
// at a boundary, as the oracle comparison allows). With several, another warp may move a count
// of that chunk in between: the draw is then against the chunk's new weights, and where u * total
// falls past them, the chunk's last topic. That leans toward the last topic by the chunk's change
// over the total, a bias of its own beside the staleness AD-LDA accepts, and as small (a count
// or two in totals of thousands).
__device__ __forceinline__ unsigned int lda_draw_ends(const unsigned int* ndk,
                                                      const float* wt_row,
                                                      const float* totals,
                                                      double u,
                                                      unsigned int lane,
                                                      unsigned int k,
                                                      double alpha,
                                                      double beta,
                                                      double vbeta) {
    const unsigned int chunks = (k + LDA_WARP - 1) / LDA_WARP;
    double carry = 0.0;
    double end = 0.0; // lane j: the cumulative sum at the end of chunk j
    for (unsigned int base = 0; base < k; base += LDA_WARP * LDA_BATCH) {
        double c[LDA_BATCH];
        lda_batch_weights(ndk, wt_row, totals, base, lane, k, alpha, beta, vbeta, c);
#pragma unroll
        for (int j = 0; j < LDA_BATCH; ++j) {
            double v = lda_warp_scan(c[j], lane) + carry;
            carry = __shfl_sync(LDA_FULL, v, LDA_WARP - 1);
            if (lane == base / LDA_WARP + (unsigned int)j) {
                end = carry;
            }
        }
    }
    const double total = carry;
    if (!(total > 0.0 && isfinite(total))) {
        return lda_degenerate_draw(u, k);
    }
    const double x = u * total;
    const unsigned int hit = __ballot_sync(LDA_FULL, lane < chunks && x < end);
    if (hit == 0u) {
        return k - 1; // rounding fallback: the last topic, as the oracle
    }
    const unsigned int chunk = (unsigned int)(__ffs(hit) - 1);
    const double before = __shfl_sync(LDA_FULL, end, chunk == 0u ? 0u : chunk - 1u);
    const double start = chunk == 0u ? 0.0 : before;
    const unsigned int t = chunk * LDA_WARP + lane;
    const double w = t < k ? lda_weight(ndk, wt_row, totals, t, alpha, beta, vbeta) : 0.0;
    const double v = lda_warp_scan(w, lane) + start;
    const unsigned int in_chunk = __ballot_sync(LDA_FULL, t < k && x < v);
    if (in_chunk == 0u) {
        return min(chunk * LDA_WARP + LDA_WARP - 1u, k - 1);
    }
    return chunk * LDA_WARP + (unsigned int)(__ffs(in_chunk) - 1);
}

// Resamples one token whose document row is ndk and word row wt_row: removes it from topic `old`
// (lane 0), draws its new topic (lda_draw_ends where ENDS and K <= 1,024, else lda_draw_scratch
// with the warp's scratch row `cdf`) and adds the token back (lane 0). Called by the whole warp;
// returns the new topic in every lane.
template <bool ENDS>
__device__ __forceinline__ unsigned int lda_resample(unsigned int* ndk,
                                                     float* wt_row,
                                                     float* totals,
                                                     unsigned int old,
                                                     double u,
                                                     double* cdf,
                                                     unsigned int lane,
                                                     unsigned int k,
                                                     double alpha,
                                                     double beta,
                                                     double vbeta) {
    // Remove the token from its current topic.
    if (lane == 0) {
        const unsigned int n = ndk[old];
        ndk[old] = n > 0 ? n - 1 : 0;
        atomicAdd(wt_row + old, -1.0f);
        atomicAdd(totals + old, -1.0f);
    }
    // Orders lane 0's writes before the other lanes' reads (__syncwarp is a memory barrier among
    // the warp's threads).
    __syncwarp();

    const unsigned int chosen =
        ENDS && k <= LDA_WARP * LDA_WARP
            ? lda_draw_ends(ndk, wt_row, totals, u, lane, k, alpha, beta, vbeta)
            : lda_draw_scratch(ndk, wt_row, totals, u, cdf, lane, k, alpha, beta, vbeta);

    // Add the token back with its new topic.
    if (lane == 0) {
        ndk[chosen] += 1u;
        atomicAdd(wt_row + chosen, 1.0f);
        atomicAdd(totals + chosen, 1.0f);
    }
    return chosen;
}

#define LDA_SWEEP_PARAMS                                                                        \
    const unsigned int *__restrict__ doc_offsets, unsigned int num_docs,                        \
        const unsigned int *__restrict__ tokens, unsigned int *z, unsigned int *doc_topic,      \
        float *word_topic, float *totals, unsigned int seed_lo, unsigned int seed_hi,           \
        unsigned int stream, unsigned long long first_index, double *scratch, int *wt_delta,    \
        int *totals_delta, unsigned int topics, double alpha, double beta, double vbeta
#define LDA_SWEEP_ARGS                                                                          \
    doc_offsets, num_docs, tokens, z, doc_topic, word_topic, totals, seed_lo, seed_hi, stream,  \
        first_index, scratch, wt_delta, totals_delta, topics, alpha, beta, vbeta

template <bool ENDS>
__device__ __forceinline__ void lda_sweep_body(LDA_SWEEP_PARAMS) {
    const unsigned int lane = threadIdx.x & (LDA_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / LDA_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / LDA_WARP;
    const unsigned int k = topics;
    if (k == 0u) {
        return;
    }

    double* cdf = scratch + (size_t)warp * k;

    for (unsigned long long d = warp; d < num_docs; d += num_warps) {
        unsigned int* ndk = doc_topic + (size_t)d * k;
        const unsigned int end = doc_offsets[d + 1];
        for (unsigned int i = doc_offsets[d]; i < end; ++i) {
            const unsigned int w = tokens[i];
            const unsigned int old = z[i];
            float* wt_row = word_topic + (size_t)w * k;
            // The token's uniform, SweepKey::uniform(i): every lane computes the same value
            // (cheaper than a broadcast), as an exact f32 -> f64 conversion like the host's.
            const double u = (double)philox_uniform(seed_lo, seed_hi, stream,
                                                    first_index + (unsigned long long)i);
            const unsigned int chosen =
                lda_resample<ENDS>(ndk, wt_row, totals, old, u, cdf, lane, k, alpha, beta, vbeta);
            if (lane == 0) {
                if (chosen != old) {
                    atomicSub(wt_delta + (size_t)w * k + old, 1);
                    atomicAdd(wt_delta + (size_t)w * k + chosen, 1);
                    atomicSub(totals_delta + old, 1);
                    atomicAdd(totals_delta + chosen, 1);
                }
                z[i] = chosen;
            }
            __syncwarp();
        }
    }
}

// The sweep with each kind of draw: lda_gibbs_sweep forms the cumulative sums in the scratch
// row (any K); lda_gibbs_sweep_ends keeps only each chunk's end in registers where K <= 1,024
// (and uses the scratch row above that). The host picks one (worker-gpu's LdaSweepKernel).
extern "C" __global__ void __launch_bounds__(256, 4) lda_gibbs_sweep(LDA_SWEEP_PARAMS) {
    lda_sweep_body<false>(LDA_SWEEP_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 4) lda_gibbs_sweep_ends(LDA_SWEEP_PARAMS) {
    lda_sweep_body<true>(LDA_SWEEP_ARGS);
}

// LdaCompute::sample_token on the device: resamples one token (current topic `old`) of the
// document row ndk (K) against the word row wt_row (K) and totals (K) with the caller's uniform u
// in [0, 1), exactly as lda_gibbs_sweep does (lda_gibbs_sample_token_ends: as
// lda_gibbs_sweep_ends), and writes the new topic to out[0]. The three rows are the caller's
// copies and are modified (the token removed and added back). scratch holds K doubles. Launch:
// grid 1, block 32.
#define LDA_SAMPLE_PARAMS                                                                       \
    unsigned int *ndk, float *wt_row, float *totals, unsigned int old, double u,                \
        double *scratch, unsigned int *out, unsigned int topics, double alpha, double beta,     \
        double vbeta
#define LDA_SAMPLE_ARGS ndk, wt_row, totals, old, u, scratch, out, topics, alpha, beta, vbeta

template <bool ENDS>
__device__ __forceinline__ void lda_sample_token_body(LDA_SAMPLE_PARAMS) {
    const unsigned int lane = threadIdx.x & (LDA_WARP - 1);
    if (topics == 0u || blockIdx.x != 0u || threadIdx.x >= LDA_WARP) {
        return;
    }
    const unsigned int chosen =
        lda_resample<ENDS>(ndk, wt_row, totals, old, u, scratch, lane, topics, alpha, beta, vbeta);
    if (lane == 0) {
        out[0] = chosen;
    }
}

extern "C" __global__ void lda_gibbs_sample_token(LDA_SAMPLE_PARAMS) {
    lda_sample_token_body<false>(LDA_SAMPLE_ARGS);
}

extern "C" __global__ void lda_gibbs_sample_token_ends(LDA_SAMPLE_PARAMS) {
    lda_sample_token_body<true>(LDA_SAMPLE_ARGS);
}

// Compacts the nonzero entries of wt_delta (words x K) into (global word, topic, change) triples,
// unordered (the host sorts them by (word, topic) for LdaDelta). `words` maps a local row to its
// global word id. Every nonzero entry bumps `count` (the caller zeroes it); only the first
// `capacity` are written, so count > capacity tells the caller to grow the buffers and run again.
// Launch: any grid, blockDim.x a multiple of 32.
extern "C" __global__ void lda_compact_delta(const int* __restrict__ wt_delta,
                                             unsigned int num_words,
                                             unsigned int topics,
                                             const unsigned int* __restrict__ words,
                                             unsigned int* out_word,
                                             unsigned int* out_topic,
                                             int* out_change,
                                             unsigned int* count,
                                             unsigned int capacity) {
    const unsigned long long n = (unsigned long long)num_words * topics;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned int lane = threadIdx.x & (LDA_WARP - 1);
    // Every lane of a warp runs the same number of iterations (the bound is rounded up to the
    // stride), so the warp-aggregated atomic below always has the full warp.
    const unsigned long long first = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned long long rounds = (n + stride - 1) / stride;
    for (unsigned long long r = 0; r < rounds; ++r) {
        const unsigned long long e = first + r * stride;
        const int c = e < n ? wt_delta[e] : 0;
        const unsigned int mask = __ballot_sync(LDA_FULL, c != 0);
        if (mask == 0u) {
            continue;
        }
        unsigned int base = 0;
        if (lane == 0) {
            base = atomicAdd(count, (unsigned int)__popc(mask));
        }
        base = __shfl_sync(LDA_FULL, base, 0);
        if (c != 0) {
            const unsigned int slot = base + (unsigned int)__popc(mask & ((1u << lane) - 1u));
            if (slot < capacity) {
                out_word[slot] = words[e / topics];
                out_topic[slot] = (unsigned int)(e % topics);
                out_change[slot] = c;
            }
        }
    }
}
