// An exact top-k of any size on the device: what codec_topk.cu's trim does for at most 4,096
// candidates (one block's sort), for any number, so that a large selection (an MF item block, a
// big MLP layer) is also encoded where it is made and only the chosen indices and the values'
// bytes leave. The result is select.rs's: the k entries of largest rank key (magnitude bits
// << 32 | ~index, so ties go to the lower index and NaN ranks above +inf), ascending by index.
//
// The k-th largest magnitude M and how many entries of magnitude exactly M are taken (`need`,
// the lowest-indexed ones) are found by a radix select over the candidates' magnitude bits
// (codecs.cu's codec_topk_compact: every entry at or above a threshold, so the top k are among
// them), 8 bits a pass from the top:
//
//   codec_select_hist   hist[d] += candidates whose decided bits match the prefix so far and
//                       whose next 8 bits are d (hist zeroed before the first pass; each pick
//                       zeroes it for the next)
//   codec_select_pick   (one thread) the digit at which the count from the top reaches `need`:
//                       state = {prefix, bits decided, need}; after the pass at shift 0,
//                       state[0] = M and state[2] = how many entries of magnitude M go
//
// Then every entry of the block is chosen if its magnitude is above M, or equal to it and among
// the first `need` such entries by index, and the chosen are written in index order by a
// scan over tiles of CODEC_SELECT_TILE entries:
//
//   codec_select_count  per tile, its entries above M (high 32 bits) and at M (low 32 bits)
//   codec_select_scan   (one block) the packed counts in place: each tile's, those before it
//   codec_select_write  sel_idx[p] = i, sel_val[p] = x[i] for each chosen entry i, at
//                       p = (entries above M before i) + min(entries at M before i, need),
//                       never at p >= k
//
// Launch: codec_select_hist any 1-D grid; codec_select_pick one block (thread 0 works);
// codec_select_count and codec_select_write any 1-D grid (grid stride over tiles), blockDim.x a
// multiple of 32 of at most 1,024, both the same; codec_select_scan one block of at most 1,024
// threads. The block holds n < 2^32 entries; 1 <= k <= candidates.

#define CODEC_SELECT_TILE 4096u
#define CODEC_SELECT_WARP 32u
#define CODEC_SELECT_FULL 0xffffffffu

extern "C" __global__ void codec_select_hist(const float* __restrict__ cand_val,
                                             unsigned int count,
                                             const unsigned int* __restrict__ state,
                                             unsigned int shift,
                                             unsigned int* hist) {
    __shared__ unsigned int local[256];
    for (unsigned int d = threadIdx.x; d < 256u; d += blockDim.x) {
        local[d] = 0u;
    }
    __syncthreads();
    // The first pass (shift 24) decides the top bits: nothing is decided before it.
    const unsigned int prefix = shift >= 24u ? 0u : state[0];
    const unsigned int mask = shift >= 24u ? 0u : state[1];
    // 64-bit, so that a count near 2^32 cannot wrap the loop.
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; j < count;
         j += stride) {
        const unsigned int m = __float_as_uint(cand_val[j]) & 0x7fffffffu;
        if ((m & mask) == prefix) {
            atomicAdd(&local[(m >> shift) & 255u], 1u);
        }
    }
    __syncthreads();
    for (unsigned int d = threadIdx.x; d < 256u; d += blockDim.x) {
        if (local[d] != 0u) {
            atomicAdd(&hist[d], local[d]);
        }
    }
}

extern "C" __global__ void codec_select_pick(unsigned int* hist,
                                             unsigned int* state,
                                             unsigned int shift,
                                             unsigned int k) {
    if (blockIdx.x != 0u || threadIdx.x != 0u) {
        return;
    }
    unsigned int prefix = 0u;
    unsigned int mask = 0u;
    unsigned int need = k;
    if (shift < 24u) {
        prefix = state[0];
        mask = state[1];
        need = state[2];
    }
    // From the top digit down: the first whose count, with those above it, reaches `need`.
    unsigned int above = 0u;
    for (int d = 255; d >= 0; --d) {
        const unsigned int h = hist[d];
        if (above + h >= need) {
            prefix |= (unsigned int)d << shift;
            need -= above;
            break;
        }
        above += h;
    }
    for (unsigned int d = 0; d < 256u; ++d) {
        hist[d] = 0u;
    }
    state[0] = prefix;
    state[1] = mask | (255u << shift);
    state[2] = need;
}

// Tile t of x, in rounds of blockDim.x entries: counts its entries above M and at M after
// `base` (packed as in codec_select_count) and, with `write`, writes the chosen ones. Returns
// the packed counts at the tile's end.
__device__ __forceinline__ unsigned long long codec_select_tile(const float* __restrict__ x,
                                                                unsigned long long n,
                                                                unsigned long long t,
                                                                unsigned int m_star,
                                                                unsigned int need,
                                                                unsigned int k,
                                                                unsigned long long base,
                                                                bool write,
                                                                unsigned int* sel_idx,
                                                                float* sel_val) {
    __shared__ unsigned int warp_above[32];
    __shared__ unsigned int warp_at[32];
    const unsigned int lane = threadIdx.x & (CODEC_SELECT_WARP - 1u);
    const unsigned int warp = threadIdx.x / CODEC_SELECT_WARP;
    const unsigned int warps = (blockDim.x + CODEC_SELECT_WARP - 1u) / CODEC_SELECT_WARP;
    const unsigned int before_lane = (1u << lane) - 1u;
    unsigned long long above_run = base >> 32;
    unsigned long long at_run = base & 0xffffffffull;
    const unsigned long long start = t * CODEC_SELECT_TILE;
    // The same rounds for every thread of the block, so that ballots and barriers see them all.
    for (unsigned int r = 0; r < CODEC_SELECT_TILE; r += blockDim.x) {
        const unsigned long long i = start + r + threadIdx.x;
        const bool in = r + threadIdx.x < CODEC_SELECT_TILE && i < n;
        const float v = in ? x[i] : 0.0f;
        const unsigned int m = __float_as_uint(v) & 0x7fffffffu;
        const bool is_above = in && m > m_star;
        const bool is_at = in && m == m_star;
        const unsigned int ballot_above = __ballot_sync(CODEC_SELECT_FULL, is_above);
        const unsigned int ballot_at = __ballot_sync(CODEC_SELECT_FULL, is_at);
        if (lane == 0u) {
            warp_above[warp] = (unsigned int)__popc(ballot_above);
            warp_at[warp] = (unsigned int)__popc(ballot_at);
        }
        __syncthreads();
        unsigned int above_before = 0u;
        unsigned int at_before = 0u;
        unsigned int above_round = 0u;
        unsigned int at_round = 0u;
        for (unsigned int w = 0; w < warps; ++w) {
            if (w < warp) {
                above_before += warp_above[w];
                at_before += warp_at[w];
            }
            above_round += warp_above[w];
            at_round += warp_at[w];
        }
        if (write) {
            const unsigned long long a =
                above_run + above_before + (unsigned int)__popc(ballot_above & before_lane);
            const unsigned long long e =
                at_run + at_before + (unsigned int)__popc(ballot_at & before_lane);
            const unsigned long long p = a + (e < need ? e : (unsigned long long)need);
            // p < k holds for every chosen entry when the pick saw at least k candidates; the
            // bound keeps a wrong count from writing past the buffers.
            if ((is_above || (is_at && e < need)) && p < k) {
                sel_idx[p] = (unsigned int)i;
                sel_val[p] = v;
            }
        }
        above_run += above_round;
        at_run += at_round;
        // The warp counts are rewritten next round.
        __syncthreads();
    }
    return (above_run << 32) | at_run;
}

extern "C" __global__ void codec_select_count(const float* __restrict__ x,
                                              unsigned long long n,
                                              const unsigned int* __restrict__ state,
                                              unsigned long long* tiles) {
    const unsigned int m_star = state[0];
    const unsigned long long count = (n + CODEC_SELECT_TILE - 1u) / CODEC_SELECT_TILE;
    for (unsigned long long t = blockIdx.x; t < count; t += gridDim.x) {
        const unsigned long long c = codec_select_tile(x, n, t, m_star, 0u, 0u, 0ull, false, 0, 0);
        if (threadIdx.x == 0u) {
            tiles[t] = c;
        }
    }
}

extern "C" __global__ void __launch_bounds__(1024)
    codec_select_scan(unsigned long long* tiles, unsigned long long count) {
    __shared__ unsigned long long part[1024];
    // Each thread sums a run of consecutive tiles; the runs' sums are scanned across the block.
    const unsigned long long run = (count + blockDim.x - 1u) / blockDim.x;
    const unsigned long long lo = threadIdx.x * run;
    const unsigned long long hi = lo + run < count ? lo + run : count;
    unsigned long long sum = 0ull;
    for (unsigned long long t = lo; t < hi; ++t) {
        sum += tiles[t];
    }
    part[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned int off = 1u; off < blockDim.x; off <<= 1) {
        const unsigned long long add = threadIdx.x >= off ? part[threadIdx.x - off] : 0ull;
        __syncthreads();
        part[threadIdx.x] += add;
        __syncthreads();
    }
    // Neither half carries into the other: each is a count of at most n < 2^32 entries.
    unsigned long long acc = part[threadIdx.x] - sum;
    for (unsigned long long t = lo; t < hi; ++t) {
        const unsigned long long c = tiles[t];
        tiles[t] = acc;
        acc += c;
    }
}

extern "C" __global__ void codec_select_write(const float* __restrict__ x,
                                              unsigned long long n,
                                              const unsigned int* __restrict__ state,
                                              const unsigned long long* __restrict__ tiles,
                                              unsigned int k,
                                              unsigned int* sel_idx,
                                              float* sel_val) {
    const unsigned int m_star = state[0];
    const unsigned int need = state[2];
    const unsigned long long count = (n + CODEC_SELECT_TILE - 1u) / CODEC_SELECT_TILE;
    for (unsigned long long t = blockIdx.x; t < count; t += gridDim.x) {
        codec_select_tile(x, n, t, m_star, need, k, tiles[t], true, sel_idx, sel_val);
    }
}
