// The index part of a top-k's payload made on the device, so that the chosen indices need not
// cross PCIe (4 bytes each) for the host to code them: the host gets their measure, picks the
// layout and writes its opening (ps_proto::codec::index_layout), and the device writes the
// codes, the bytes sparse.rs writes after that opening. The layouts are sparse_index.cuh's.
//
//   codec_index_plan   (one warp) the measure of the m indices idx[0..m) (strictly
//                      increasing, below n), as ps_proto::codec::index_sizes: plan[0..8) = list
//                      bytes, Rice bits, runs, runs' gap bits, runs' length bits, the Rice
//                      parameter, the runs' gap parameter, the runs' length parameter; where an
//                      index is not above the one before it or not below n, the Rice parameter
//                      is CODEC_INDEX_FAULT (no parameter is that large), which the host refuses
//   codec_index_write  (one warp) the codes of `mode` (list, Rice or runs; k the Rice parameter
//                      or the runs' gaps', kl the runs' lengths') into `out`, zeroed by the
//                      caller, from its first byte; a code that would end past `words` words is
//                      not written (a measure that does not match the list: a fault)
//
// Launch: one block whose first warp works (blockDim.x a multiple of 32), any grid (the other
// blocks return); m <= 2^32 - 64.

#define CODEC_INDEX_FAULT 0xffffffffull

// Entry base + lane of the list (sparse_index.cuh's spx_entry; every lane calls it).
__device__ __forceinline__ SpxEntry codec_index_entry(const unsigned int* __restrict__ idx,
                                                      unsigned int m, unsigned int base,
                                                      unsigned int lane, unsigned int* run_start) {
    const unsigned int j = base + lane;
    const bool live = j < m;
    const bool has_prev = live && j > 0u;
    const bool has_next = live && j + 1u < m;
    return spx_entry(live ? idx[j] : 0u, live, has_prev, has_prev ? idx[j - 1u] : 0u, has_next,
                     has_next ? idx[j + 1u] : 0u, base, lane, run_start);
}

extern "C" __global__ void codec_index_plan(const unsigned int* __restrict__ idx,
                                            unsigned int m,
                                            unsigned long long n,
                                            unsigned long long* __restrict__ plan) {
    if (blockIdx.x != 0u || threadIdx.x >= 32u) {
        return;
    }
    const unsigned int lane = threadIdx.x;
    SpxTally t = spx_tally_zero();
    unsigned int run_start = 0u;
    bool fault = false;
    for (unsigned int base = 0u; base < m; base += 32u) {
        const SpxEntry x = codec_index_entry(idx, m, base, lane, &run_start);
        const unsigned int j = base + lane;
        fault |= x.live && ((unsigned long long)x.index >= n || (j > 0u && x.index <= idx[j - 1u]));
        spx_tally(x, lane, &t);
    }
    fault = __ballot_sync(SPX_FULL, fault) != 0u;
    const SpxPlan q = spx_plan(t, m, lane);
    if (lane == 0u) {
        plan[0] = q.list_bytes;
        plan[1] = q.rice_bits;
        plan[2] = q.runs;
        plan[3] = q.gap_bits;
        plan[4] = q.len_bits;
        plan[5] = fault ? CODEC_INDEX_FAULT : q.k;
        plan[6] = q.kg;
        plan[7] = q.kl;
    }
}

extern "C" __global__ void codec_index_write(const unsigned int* __restrict__ idx,
                                             unsigned int m,
                                             unsigned int mode,
                                             unsigned int k,
                                             unsigned int kl,
                                             unsigned long long words,
                                             unsigned int* __restrict__ out) {
    if (blockIdx.x != 0u || threadIdx.x >= 32u) {
        return;
    }
    const unsigned int lane = threadIdx.x;
    unsigned long long carry = 0ull;
    unsigned int run_start = 0u;
    for (unsigned int base = 0u; base < m; base += 32u) {
        const SpxEntry x = codec_index_entry(idx, m, base, lane, &run_start);
        const unsigned long long len = spx_index_len(x, mode, k, kl);
        const unsigned long long before = spx_scan(len, lane, &carry);
        const unsigned long long end_bits = mode == SPX_LIST ? 8ull * (before + len) : before + len;
        if (end_bits <= 32ull * words) {
            spx_put_index(out, 0ull, before, x, mode, k, kl);
        }
    }
}
