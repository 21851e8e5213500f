// LDA: one word-major sweep over fixed counts (lda_word.cuh has the device functions and says
// what they compute; ps_apps::lda::word_major documents the draw and is its CPU twin).
//
// Serves worker-gpu's CudaWordLda and the resident engine (worker-gpu/src/cuda/lda_word/), an
// LdaCompute. A sweep is, on one stream:
//   lda_word_doc_lists  the documents' nonzero topics (the sweep's fixed document part), once
// then for each document group (worker-gpu's GroupLaunch; one group unless asked):
//   lda_word_sample     the group's tokens' new topics into z_new (its slots: slot_word and
//                       slot_first from the group's first slot), nothing else written
//   lda_word_apply      the group's moves (doc_offsets and doc_topic from its first document):
//                       z, doc_topic, the copy, the totals, the move counts
// then lda_gibbs.cu's lda_compact_delta on the move counts. A document's list stays valid
// through the sweep: its counts move only when its own group's moves land, after its draws.
//
// Layout (row-major, K = topics):
//   doc_offsets   num_docs + 1 token offsets (u32)
//   tokens        the local word row of every token
//   z, z_new      the topic of every token before and after the sweep
//   doc_topic     num_docs x K (u32)
//   doc_nnz       num_docs; doc_topics, doc_counts one entry per token: document d's list is at
//                 [doc_offsets[d], doc_offsets[d] + doc_nnz[d])
//   order         the token positions grouped by word (ascending within a word)
//   token_doc     the document of every token
//   slot_word     the word row of each slot; slot_first slots + 1 offsets into `order`: slot s
//                 draws order[slot_first[s] .. slot_first[s + 1]), tokens of one word (a word
//                 with many tokens has several slots, so that blocks share the work)
//   word_topic    words x K (f32), totals K (f32): the local copy, read while drawing, moved by
//                 lda_word_apply
//   wt_delta      words x K (i32), totals_delta K (i32): += the moves (the caller zeroes them)
//   seed_lo/hi, stream, first_index: token i's uniform is philox_uniform(seed, stream,
//                 first_index + i), SweepKey::uniform(i), as in lda_gibbs.cu
//   alpha, beta, vbeta: WordMajorPriors (f32)
//
// Launch: lda_word_doc_lists and lda_word_sample_token any grid, blockDim.x a multiple of 32
// (sample_token: grid 1, block 32); lda_word_sample any grid, blockDim.x a multiple of 32 and
// (K + ceil(K / 32)) x 4 bytes of dynamic shared memory; lda_word_apply any grid.
//
// Deviations from the CPU twin: none intended (the same f32 operations in the same order); from
// the oracle (CpuLda): a group draws every token from the counts at the group's start.

extern "C" __global__ void lda_word_doc_lists(const unsigned int* __restrict__ doc_offsets,
                                              unsigned int num_docs,
                                              const unsigned int* __restrict__ doc_topic,
                                              unsigned int topics,
                                              unsigned int* __restrict__ doc_nnz,
                                              unsigned int* __restrict__ doc_topics,
                                              unsigned int* __restrict__ doc_counts) {
    const unsigned int lane = threadIdx.x % LW_LANES;
    const unsigned long long warps = ((unsigned long long)gridDim.x * blockDim.x) / LW_LANES;
    const unsigned long long first =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / LW_LANES;
    for (unsigned long long d = first; d < num_docs; d += warps) {
        const unsigned int lo = doc_offsets[d];
        const unsigned int hi = doc_offsets[d + 1];
        const unsigned int n =
            lw_doc_list(doc_topic + d * topics, topics, hi > lo ? hi - lo : 0u, doc_topics + lo,
                        doc_counts + lo, lane);
        if (lane == 0u) {
            doc_nnz[d] = n;
        }
    }
}

#define LW_SAMPLE_PARAMS                                                                        \
    const unsigned int *__restrict__ slot_word, const unsigned int *__restrict__ slot_first,    \
        unsigned int slots, const unsigned int *__restrict__ order,                             \
        const unsigned int *__restrict__ token_doc, const unsigned int *__restrict__ doc_offsets, \
        const unsigned int *__restrict__ doc_nnz, const unsigned int *__restrict__ doc_topics,  \
        const unsigned int *__restrict__ doc_counts, const unsigned int *__restrict__ z,        \
        unsigned int *__restrict__ z_new, const float *__restrict__ word_topic,                 \
        const float *__restrict__ totals, unsigned int seed_lo, unsigned int seed_hi,           \
        unsigned int stream, unsigned long long first_index, unsigned int topics, float alpha,  \
        float beta, float vbeta

extern "C" __global__ void lda_word_sample(LW_SAMPLE_PARAMS) {
    extern __shared__ float lw_shared[];
    float* phi = lw_shared;
    float* qp = lw_shared + topics;
    const unsigned int k = topics;
    const unsigned int lane = threadIdx.x % LW_LANES;
    const unsigned int warp = threadIdx.x / LW_LANES;
    const unsigned int warps = blockDim.x / LW_LANES;
    if (k == 0u) {
        return;
    }
    for (unsigned int s = blockIdx.x; s < slots; s += gridDim.x) {
        const float* row = word_topic + (size_t)slot_word[s] * k;
        lw_word_table(row, totals, k, alpha, beta, vbeta, phi, qp);
        const unsigned int end = slot_first[s + 1];
        for (unsigned int j = slot_first[s] + warp; j < end; j += warps) {
            const unsigned int i = order[j];
            const unsigned int d = token_doc[i];
            const unsigned int base = doc_offsets[d];
            const float u =
                philox_uniform(seed_lo, seed_hi, stream, first_index + (unsigned long long)i);
            const unsigned int t = lw_draw(phi, qp, k, row, totals, doc_topics + base,
                                           doc_counts + base, doc_nnz[d], z[i], u, alpha, beta,
                                           vbeta, lane);
            if (lane == 0u) {
                z_new[i] = t;
            }
        }
        // The next slot's table overwrites this one.
        __syncthreads();
    }
}

// WordMajorLda::sample_token on the device: one token (topic `old`) of a document whose list is
// dtopics/dcounts (nnz entries) against the word row `row` and `totals`, at the caller's u;
// writes the topic to out[0]. Launch: grid 1, block 32, shared memory as lda_word_sample.
extern "C" __global__ void lda_word_sample_token(const float* __restrict__ row,
                                                 const float* __restrict__ totals,
                                                 const unsigned int* __restrict__ dtopics,
                                                 const unsigned int* __restrict__ dcounts,
                                                 unsigned int nnz, unsigned int old, float u,
                                                 unsigned int* __restrict__ out,
                                                 unsigned int topics, float alpha, float beta,
                                                 float vbeta) {
    extern __shared__ float lw_shared[];
    if (topics == 0u || blockIdx.x != 0u) {
        return;
    }
    float* phi = lw_shared;
    float* qp = lw_shared + topics;
    lw_word_table(row, totals, topics, alpha, beta, vbeta, phi, qp);
    if (threadIdx.x >= LW_LANES) {
        return;
    }
    const unsigned int t = lw_draw(phi, qp, topics, row, totals, dtopics, dcounts, nnz, old, u,
                                   alpha, beta, vbeta, threadIdx.x);
    if (threadIdx.x == 0u) {
        out[0] = t;
    }
}

extern "C" __global__ void lda_word_apply(const unsigned int* __restrict__ doc_offsets,
                                          unsigned int num_docs,
                                          const unsigned int* __restrict__ tokens,
                                          unsigned int* __restrict__ z,
                                          const unsigned int* __restrict__ z_new,
                                          unsigned int* __restrict__ doc_topic, float* word_topic,
                                          float* totals, int* wt_delta, int* totals_delta,
                                          unsigned int topics) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long d = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         d < num_docs; d += stride) {
        lw_apply_doc(doc_offsets[d], doc_offsets[d + 1], tokens, z, z_new,
                     doc_topic + d * topics, word_topic, totals, wt_delta, totals_delta, topics);
    }
}
