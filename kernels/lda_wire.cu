// LDA, resident path: a sweep's delta encoded on the device into the exact bytes the worker library
// puts on the wire, so that only those bytes cross PCIe (issue 11, item 6). The input is the packed
// delta the lda_delta_* passes leave on the device (lda_rows.cuh documents the image: row ends,
// u16 topics, i16 or i32 changes); the output, per frame block, is the payload
// ps_proto::codec::encode_exact_selection makes of that block's entries: a mode byte, the index
// part (ps_proto::codec::sparse: a varint list, Golomb-Rice gaps, Rice-coded runs, or none for
// dense) and the values as i8, i16 or f32, whichever is narrowest for the block's changes.
//
// A frame block is a run of the touched rows (the rows with an entry), cut by the host as the
// worker library cuts entries into frames (ps_proto::push_plan); an entry's index in its block is
// (its row's place among the block's touched rows) * K + topic. Passes:
//
//   lda_wire_touched (a thread per 32 rows) bitmap[w] = which of rows 32w.. have an entry;
//                    counts[w] = how many
//   lda_wire_rank    (one warp) counts[w] becomes the touched rows before word w
//   lda_wire_index   (a warp per row) rank[j] = the place of entry j's row among all touched rows
//   (host)           downloads the bitmap, cuts the touched rows' words into blocks and uploads
//                    four words a block: first row, end row, first touched place, touched rows
//   lda_wire_plan    (a warp per block) every layout's size, as ps_proto::codec::sparse::choose
//                    computes them, and the smallest; plan[8b..] = size (mode byte included),
//                    mode, k (Rice, or the runs' gaps), kl (the runs' lengths), value bytes (1, 2
//                    or 4), entries, runs
//   lda_wire_offsets (one thread) where each block's payload starts: 4-byte aligned, so that
//                    no two blocks share a word; at[nblocks] = the whole
//   lda_wire_write   (a warp per block) the payloads, into `out` zeroed by the caller, every
//                    write an atomicOr of bits into a word (Rice codes of neighbouring entries
//                    share bytes; no write mixes plain stores with atomics)
//
// The index part (each layout's size, the Rice parameters, the codes) is sparse_index.cuh's,
// which codec_index.cu shares. Ties between layouts go to the lower mode number, as on the host.
//
// Launch: every kernel any grid, blockDim.x a multiple of 32 (lda_wire_rank: the first warp
// works; lda_wire_offsets: one thread). Host halves: ps_proto::codec (the bytes); worker-gpu's
// tests/kernels_on_host/lda_wire_grid.rs runs these kernels on the CPU against it.

#define LDA_WIRE_BLOCK_WORDS 4u
#define LDA_WIRE_PLAN_WORDS 8u

__device__ __forceinline__ unsigned long long lda_wire_thread() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long lda_wire_threads() {
    return (unsigned long long)gridDim.x * blockDim.x;
}

// Where row r's entries start in the image.
__device__ __forceinline__ unsigned int lda_wire_row_start(const unsigned int* image, unsigned int r) {
    return r == 0u ? 0u : image[r - 1u];
}

// Entry j's change.
__device__ __forceinline__ int lda_wire_change(const unsigned int* image, unsigned int rows,
                                               unsigned int entries, unsigned int wide,
                                               unsigned int j) {
    const unsigned int* values = image + rows + (entries + 1u) / 2u;
    return wide != 0u ? (int)values[j] : (int)(short)((const unsigned short*)values)[j];
}

// Entry j's index in its block (whose first touched row has place tb0).
__device__ __forceinline__ unsigned int lda_wire_index_of(const unsigned int* image,
                                                          unsigned int rows,
                                                          const unsigned int* rank,
                                                          unsigned int tb0, unsigned int topics,
                                                          unsigned int j) {
    const unsigned short* topic = (const unsigned short*)(image + rows);
    return (rank[j] - tb0) * topics + (unsigned int)topic[j];
}

// A change in `bytes` (1: i8, 2: i16, 4: the f32 of it) at byte `at`, little-endian.
__device__ __forceinline__ void lda_wire_put_value(unsigned int* out, unsigned long long at, int c,
                                                   unsigned int bytes) {
    const unsigned int v = bytes == 4u ? __float_as_uint((float)c) : (unsigned int)c;
    for (unsigned int i = 0u; i < bytes; ++i) {
        spx_put_byte(out, at + i, v >> (8u * i));
    }
}

// The entry of lane `lane` in the chunk from `base` of a block's entries [e0, e1), its index
// in the block (sparse_index.cuh's spx_entry of the block's indices). Every lane calls it.
__device__ __forceinline__ SpxEntry lda_wire_entry(const unsigned int* image, unsigned int rows,
                                                   const unsigned int* rank, unsigned int tb0,
                                                   unsigned int topics, unsigned int e0,
                                                   unsigned int e1, unsigned int base,
                                                   unsigned int lane, unsigned int* run_start) {
    const unsigned int j = base + lane;
    const bool live = j < e1;
    const bool has_prev = live && j > e0;
    const bool has_next = live && j + 1u < e1;
    const unsigned int index = live ? lda_wire_index_of(image, rows, rank, tb0, topics, j) : 0u;
    const unsigned int prev = has_prev ? lda_wire_index_of(image, rows, rank, tb0, topics, j - 1u) : 0u;
    const unsigned int next = has_next ? lda_wire_index_of(image, rows, rank, tb0, topics, j + 1u) : 0u;
    return spx_entry(index, live, has_prev, prev, has_next, next, base, lane, run_start);
}

extern "C" __global__ void lda_wire_touched(const unsigned int* __restrict__ image, unsigned int rows,
                                            unsigned int* __restrict__ bitmap,
                                            unsigned int* __restrict__ counts) {
    const unsigned int words = (rows + 31u) / 32u;
    for (unsigned long long w = lda_wire_thread(); w < words; w += lda_wire_threads()) {
        const unsigned int lo = (unsigned int)w * 32u;
        const unsigned int hi = min(rows, lo + 32u);
        unsigned int prev = lda_wire_row_start(image, lo);
        unsigned int bits = 0u;
        for (unsigned int r = lo; r < hi; ++r) {
            const unsigned int end = image[r];
            if (end > prev) {
                bits |= 1u << (r - lo);
            }
            prev = end;
        }
        bitmap[w] = bits;
        counts[w] = (unsigned int)__popc(bits);
    }
}

extern "C" __global__ void lda_wire_rank(unsigned int* __restrict__ counts, unsigned int words) {
    if (lda_wire_thread() >= 32ull) {
        return;
    }
    // The first warp: each lane sums a stretch of the words, the lanes' sums are scanned, and
    // each lane writes its stretch's prefixes.
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned int per = (words + 31u) / 32u;
    const unsigned int lo = min(words, lane * per), hi = min(words, lo + per);
    unsigned long long sum = 0ull;
    for (unsigned int w = lo; w < hi; ++w) {
        sum += counts[w];
    }
    unsigned long long carry = 0ull;
    unsigned long long before = spx_scan(sum, lane, &carry);
    for (unsigned int w = lo; w < hi; ++w) {
        const unsigned int c = counts[w];
        counts[w] = (unsigned int)before;
        before += c;
    }
}

extern "C" __global__ void lda_wire_index(const unsigned int* __restrict__ image, unsigned int rows,
                                          const unsigned int* __restrict__ bitmap,
                                          const unsigned int* __restrict__ ranks,
                                          unsigned int* __restrict__ rank) {
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned long long warps = lda_wire_threads() / 32ull;
    for (unsigned long long r = lda_wire_thread() / 32ull; r < rows; r += warps) {
        const unsigned int lo = lda_wire_row_start(image, (unsigned int)r);
        const unsigned int hi = image[r];
        const unsigned int w = (unsigned int)(r / 32ull);
        const unsigned int below = (1u << (unsigned int)(r % 32ull)) - 1u;
        const unsigned int place = ranks[w] + (unsigned int)__popc(bitmap[w] & below);
        for (unsigned int j = lo + lane; j < hi; j += 32u) {
            rank[j] = place;
        }
    }
}

extern "C" __global__ void lda_wire_plan(const unsigned int* __restrict__ image, unsigned int rows,
                                         unsigned int entries, unsigned int wide,
                                         unsigned int topics, const unsigned int* __restrict__ rank,
                                         const unsigned int* __restrict__ blocks,
                                         unsigned int nblocks, unsigned int* __restrict__ plan) {
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned long long warps = lda_wire_threads() / 32ull;
    for (unsigned long long b = lda_wire_thread() / 32ull; b < nblocks; b += warps) {
        const unsigned int* blk = blocks + b * LDA_WIRE_BLOCK_WORDS;
        const unsigned int e0 = lda_wire_row_start(image, blk[0]);
        const unsigned int e1 = image[blk[1] - 1u];
        const unsigned int tb0 = blk[2];
        const unsigned long long n = (unsigned long long)blk[3] * topics;
        SpxTally t = spx_tally_zero();
        int lo = 0, hi = 0;
        unsigned int run_start = e0;
        for (unsigned int base = e0; base < e1; base += 32u) {
            const SpxEntry x =
                lda_wire_entry(image, rows, rank, tb0, topics, e0, e1, base, lane, &run_start);
            spx_tally(x, lane, &t);
            if (x.live) {
                const int c = lda_wire_change(image, rows, entries, wide, base + lane);
                lo = c < lo ? c : lo;
                hi = c > hi ? c : hi;
            }
        }
        for (int d = 16; d >= 1; d /= 2) {
            const int olo = __shfl_xor_sync(SPX_FULL, lo, d);
            const int ohi = __shfl_xor_sync(SPX_FULL, hi, d);
            lo = olo < lo ? olo : lo;
            hi = ohi > hi ? ohi : hi;
        }
        const unsigned long long m = (unsigned long long)(e1 - e0);
        const SpxPlan q = spx_plan(t, m, lane);
        const unsigned int value_bytes = (lo >= -128 && hi <= 127) ? 1u
                                         : (lo >= -32768 && hi <= 32767) ? 2u
                                                                         : 4u;
        const unsigned long long values = m * value_bytes;
        const unsigned long long head = spx_varint_len(m);
        // Sizes after the mode byte, in mode order (LIST, DENSE, RICE, RUNS).
        unsigned long long size[4];
        size[SPX_LIST] = head + q.list_bytes + values;
        size[SPX_DENSE] = n * value_bytes;
        size[SPX_RICE] = head + 1ull + (q.rice_bits + 7ull) / 8ull + values;
        size[SPX_RUNS] = head + spx_varint_len(q.runs) + 2ull + (q.gap_bits + q.len_bits + 7ull) / 8ull + values;
        unsigned int mode = SPX_LIST;
        for (unsigned int i = 1u; i < 4u; ++i) {
            if (size[i] < size[mode]) {
                mode = i;
            }
        }
        if (lane == 0u) {
            unsigned int* p = plan + b * LDA_WIRE_PLAN_WORDS;
            p[0] = (unsigned int)(1ull + size[mode]);
            p[1] = mode;
            p[2] = mode == SPX_RUNS ? q.kg : q.k;
            p[3] = mode == SPX_RUNS ? q.kl : 0u;
            p[4] = value_bytes;
            p[5] = (unsigned int)m;
            p[6] = (unsigned int)q.runs;
            p[7] = 0u;
        }
    }
}

extern "C" __global__ void lda_wire_offsets(const unsigned int* __restrict__ plan,
                                            unsigned int nblocks,
                                            unsigned long long* __restrict__ at) {
    if (lda_wire_thread() != 0ull) {
        return;
    }
    unsigned long long pos = 0ull;
    for (unsigned int b = 0u; b < nblocks; ++b) {
        at[b] = pos;
        pos += ((unsigned long long)plan[b * LDA_WIRE_PLAN_WORDS] + 3ull) & ~3ull;
    }
    at[nblocks] = pos;
}

extern "C" __global__ void lda_wire_write(const unsigned int* __restrict__ image, unsigned int rows,
                                          unsigned int entries, unsigned int wide,
                                          unsigned int topics, const unsigned int* __restrict__ rank,
                                          const unsigned int* __restrict__ blocks,
                                          unsigned int nblocks, const unsigned int* __restrict__ plan,
                                          const unsigned long long* __restrict__ at,
                                          unsigned long long capacity,
                                          unsigned int* __restrict__ out) {
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned long long warps = lda_wire_threads() / 32ull;
    for (unsigned long long b = lda_wire_thread() / 32ull; b < nblocks; b += warps) {
        const unsigned int* blk = blocks + b * LDA_WIRE_BLOCK_WORDS;
        const unsigned int* p = plan + b * LDA_WIRE_PLAN_WORDS;
        const unsigned int e0 = lda_wire_row_start(image, blk[0]);
        const unsigned int e1 = image[blk[1] - 1u];
        const unsigned int tb0 = blk[2];
        const unsigned int mode = p[1], k = p[2], kl = p[3], value_bytes = p[4];
        const unsigned long long m = p[5], runs = p[6];
        const unsigned long long start = at[b];
        // A plan past the zeroed bytes (a fault): the block is not written, and the host, which
        // checks the sizes against the same bound, refuses the delta.
        if (start + p[0] > capacity) {
            continue;
        }
        // The header: mode, then (but for dense) the entries, and the mode's parameters.
        unsigned long long head = 1ull;
        if (mode != SPX_DENSE) {
            head += spx_varint_len(m);
        }
        if (mode == SPX_RICE) {
            head += 1ull;
        }
        if (mode == SPX_RUNS) {
            head += spx_varint_len(runs) + 2ull;
        }
        if (lane == 0u) {
            spx_put_byte(out, start, mode);
            if (mode != SPX_DENSE) {
                unsigned long long h = 1ull + spx_put_varint(out, start + 1ull, m);
                if (mode == SPX_RICE) {
                    spx_put_byte(out, start + h, k);
                }
                if (mode == SPX_RUNS) {
                    h += spx_put_varint(out, start + h, runs);
                    spx_put_byte(out, start + h, k);
                    spx_put_byte(out, start + h + 1ull, kl);
                }
            }
        }
        const unsigned long long body = start + head;
        // The index part: bytes (list) or bits (Rice, runs) before each entry, as a running sum.
        unsigned long long carry = 0ull;
        unsigned int run_start = e0;
        for (unsigned int base = e0; base < e1; base += 32u) {
            const SpxEntry x =
                lda_wire_entry(image, rows, rank, tb0, topics, e0, e1, base, lane, &run_start);
            const unsigned long long before = spx_scan(spx_index_len(x, mode, k, kl), lane, &carry);
            spx_put_index(out, body, before, x, mode, k, kl);
            if (x.live && mode == SPX_DENSE) {
                const int c = lda_wire_change(image, rows, entries, wide, base + lane);
                lda_wire_put_value(out, start + 1ull + (unsigned long long)x.index * value_bytes, c,
                                   value_bytes);
            }
        }
        if (mode == SPX_DENSE) {
            continue;
        }
        // The other layouts' values follow the index part, whose length is known only now.
        // carry is now the index part's length: bytes (list) or bits.
        const unsigned long long values_at =
            body + (mode == SPX_LIST ? carry : (carry + 7ull) / 8ull);
        for (unsigned int j = e0 + lane; j < e1; j += 32u) {
            const int c = lda_wire_change(image, rows, entries, wide, j);
            lda_wire_put_value(out, values_at + (unsigned long long)(j - e0) * value_bytes, c, value_bytes);
        }
    }
}
