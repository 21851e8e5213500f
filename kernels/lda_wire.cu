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
// Rice parameters: a value's bits (v >> k) + 1 + k summed over a block is convex in k
// (ps_proto::codec::sparse::best_k), and the host's walk finds its lowest minimiser; here every
// k from 0 to 31 is summed at once, from the counts C_i of values with bit i set:
// sum (v >> k) = sum over i >= k of C_i << (i - k), and the lowest minimiser is taken. Ties
// between layouts go to the lower mode number, as on the host.
//
// Launch: every kernel any grid, blockDim.x a multiple of 32 (lda_wire_rank: the first warp
// works; lda_wire_offsets: one thread). Host halves: ps_proto::codec (the bytes); worker-gpu's
// tests/kernels_on_host/lda_wire_grid.rs runs these kernels on the CPU against it.

#define LDA_WIRE_FULL 0xffffffffu
#define LDA_WIRE_BLOCK_WORDS 4u
#define LDA_WIRE_PLAN_WORDS 8u
#define LDA_WIRE_LIST 0u
#define LDA_WIRE_DENSE 1u
#define LDA_WIRE_RICE 2u
#define LDA_WIRE_RUNS 3u

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

// Bits of v (at least one: 0 takes one bit, as in a varint).
__device__ __forceinline__ unsigned int lda_wire_bits(unsigned long long v) {
    const unsigned int hi = (unsigned int)(v >> 32);
    return hi != 0u ? 64u - (unsigned int)__clz(hi) : 32u - (unsigned int)__clz((unsigned int)v | 1u);
}

// Bytes of v as a LEB128 varint.
__device__ __forceinline__ unsigned int lda_wire_varint_len(unsigned long long v) {
    return (lda_wire_bits(v) + 6u) / 7u;
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

__device__ __forceinline__ unsigned long long lda_wire_sum(unsigned long long v) {
    for (int d = 16; d >= 1; d /= 2) {
        v += __shfl_xor_sync(LDA_WIRE_FULL, v, d);
    }
    return v;
}

// The exclusive prefix of v over the warp's lanes, after *carry (the earlier chunks'); adds the
// chunk's total to *carry.
__device__ __forceinline__ unsigned long long lda_wire_scan(unsigned long long v, unsigned int lane,
                                                            unsigned long long* carry) {
    unsigned long long x = v;
    for (unsigned int d = 1u; d < 32u; d *= 2u) {
        const unsigned long long y = __shfl_up_sync(LDA_WIRE_FULL, x, d);
        if (lane >= d) {
            x += y;
        }
    }
    const unsigned long long total = __shfl_sync(LDA_WIRE_FULL, x, 31);
    const unsigned long long before = *carry + x - v;
    *carry += total;
    return before;
}

// Bits of every Rice parameter: lane k returns the bits of the values counted by c (lane i holding
// C_i) coded with k, `count` values in all.
__device__ __forceinline__ unsigned long long lda_wire_rice_bits(unsigned long long c,
                                                                 unsigned long long count,
                                                                 unsigned int lane) {
    unsigned long long bits = count * (unsigned long long)(lane + 1u);
    for (unsigned int i = 0u; i < 32u; ++i) {
        const unsigned long long ci = __shfl_sync(LDA_WIRE_FULL, c, i);
        if (i >= lane) {
            bits += ci << (i - lane);
        }
    }
    return bits;
}

// The lowest k of the fewest bits (every lane gets it), and those bits.
__device__ __forceinline__ unsigned int lda_wire_best_k(unsigned long long bits, unsigned int lane,
                                                        unsigned long long* best) {
    unsigned long long b = bits;
    unsigned int k = lane;
    for (int d = 16; d >= 1; d /= 2) {
        const unsigned long long ob = __shfl_xor_sync(LDA_WIRE_FULL, b, d);
        const unsigned int ok = __shfl_xor_sync(LDA_WIRE_FULL, k, d);
        if (ob < b || (ob == b && ok < k)) {
            b = ob;
            k = ok;
        }
    }
    *best = b;
    return k;
}

// Ors the low `n` (<= 32) bits of v into the bit stream `out` at bit `at` (LSB first).
__device__ __forceinline__ void lda_wire_put_bits(unsigned int* out, unsigned long long at,
                                                  unsigned int v, unsigned int n) {
    if (n == 0u) {
        return;
    }
    const unsigned int masked = n == 32u ? v : v & ((1u << n) - 1u);
    if (masked == 0u) {
        return;
    }
    const unsigned long long word = at >> 5;
    const unsigned int shift = (unsigned int)(at & 31ull);
    atomicOr(out + word, masked << shift);
    if (shift != 0u && shift + n > 32u) {
        atomicOr(out + word + 1ull, masked >> (32u - shift));
    }
}

__device__ __forceinline__ void lda_wire_put_byte(unsigned int* out, unsigned long long at,
                                                  unsigned int byte) {
    lda_wire_put_bits(out, at * 8ull, byte & 0xffu, 8u);
}

// v as a LEB128 varint at byte `at`; returns its length.
__device__ __forceinline__ unsigned int lda_wire_put_varint(unsigned int* out, unsigned long long at,
                                                            unsigned long long v) {
    unsigned int n = 0u;
    while (v >= 0x80ull) {
        lda_wire_put_byte(out, at + n, (unsigned int)(v & 0x7full) | 0x80u);
        v >>= 7;
        ++n;
    }
    lda_wire_put_byte(out, at + n, (unsigned int)v);
    return n + 1u;
}

// v Rice coded with k at bit `at`: v >> k one-bits, a zero (already there), the low k bits.
__device__ __forceinline__ void lda_wire_put_rice(unsigned int* out, unsigned long long at,
                                                  unsigned long long v, unsigned int k) {
    unsigned long long q = v >> k;
    while (q > 0ull) {
        const unsigned int n = q >= 32ull ? 32u : (unsigned int)q;
        lda_wire_put_bits(out, at, LDA_WIRE_FULL, n);
        at += n;
        q -= n;
    }
    lda_wire_put_bits(out, at + 1ull, (unsigned int)v, k);
}

// A change in `bytes` (1: i8, 2: i16, 4: the f32 of it) at byte `at`, little-endian.
__device__ __forceinline__ void lda_wire_put_value(unsigned int* out, unsigned long long at, int c,
                                                   unsigned int bytes) {
    const unsigned int v = bytes == 4u ? __float_as_uint((float)c) : (unsigned int)c;
    for (unsigned int i = 0u; i < bytes; ++i) {
        lda_wire_put_byte(out, at + i, v >> (8u * i));
    }
}

// What the plan and the write need of the entry of lane `lane` in the chunk from `base` of a
// block's entries [e0, e1): its index in the block and its gap in each layout, whether it starts
// or ends a run of consecutive indices, and (at a run's end) the run's length less one.
// *run_start carries the last run's first entry from chunk to chunk. Every lane calls it.
struct LdaWireEntry {
    bool live, starts, ends;
    unsigned int index, list_gap, gap, run_gap, run_len;
};

__device__ __forceinline__ LdaWireEntry lda_wire_entry(const unsigned int* image, unsigned int rows,
                                                       const unsigned int* rank, unsigned int tb0,
                                                       unsigned int topics, unsigned int e0,
                                                       unsigned int e1, unsigned int base,
                                                       unsigned int lane, unsigned int* run_start) {
    LdaWireEntry x;
    const unsigned int j = base + lane;
    x.live = j < e1;
    const bool has_prev = x.live && j > e0;
    const bool has_next = x.live && j + 1u < e1;
    x.index = x.live ? lda_wire_index_of(image, rows, rank, tb0, topics, j) : 0u;
    const unsigned int prev = has_prev ? lda_wire_index_of(image, rows, rank, tb0, topics, j - 1u) : 0u;
    const unsigned int next = has_next ? lda_wire_index_of(image, rows, rank, tb0, topics, j + 1u) : 0u;
    x.starts = x.live && (!has_prev || x.index != prev + 1u);
    x.ends = x.live && (!has_next || next != x.index + 1u);
    // The list codes the first index as it is and each next as the difference; Rice the gap
    // less one; a run's gap is from the last run's end, less two.
    x.list_gap = has_prev ? x.index - prev : x.index;
    x.gap = has_prev ? x.index - prev - 1u : x.index;
    x.run_gap = has_prev && x.starts ? x.index - prev - 2u : (has_prev ? 0u : x.index);
    const unsigned int starts_mask = __ballot_sync(LDA_WIRE_FULL, x.starts);
    const unsigned int upto = lane == 31u ? LDA_WIRE_FULL : (2u << lane) - 1u;
    const unsigned int mine = starts_mask & upto;
    const unsigned int first = mine != 0u ? base + 31u - (unsigned int)__clz(mine) : *run_start;
    x.run_len = j - first;
    if (starts_mask != 0u) {
        *run_start = base + 31u - (unsigned int)__clz(starts_mask);
    }
    return x;
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
    unsigned long long before = lda_wire_scan(sum, lane, &carry);
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
        // Lane i: the counts of bit i among the Rice gaps, the runs' gaps, the runs' lengths.
        unsigned long long c_gap = 0ull, c_run_gap = 0ull, c_run_len = 0ull;
        unsigned long long list_bytes = 0ull;
        unsigned long long runs = 0ull;
        int lo = 0, hi = 0;
        unsigned int run_start = e0;
        for (unsigned int base = e0; base < e1; base += 32u) {
            const LdaWireEntry x =
                lda_wire_entry(image, rows, rank, tb0, topics, e0, e1, base, lane, &run_start);
            runs += (unsigned long long)__popc(__ballot_sync(LDA_WIRE_FULL, x.starts));
            if (x.live) {
                list_bytes += lda_wire_varint_len(x.list_gap);
                const int c = lda_wire_change(image, rows, entries, wide, base + lane);
                lo = c < lo ? c : lo;
                hi = c > hi ? c : hi;
            }
            const unsigned int g = x.live ? x.gap : 0u;
            const unsigned int rg = x.starts ? x.run_gap : 0u;
            const unsigned int rl = x.ends ? x.run_len : 0u;
            unsigned int any = g | rg | rl;
            for (int d = 16; d >= 1; d /= 2) {
                any |= __shfl_xor_sync(LDA_WIRE_FULL, any, d);
            }
            const unsigned int top = any == 0u ? 0u : 32u - (unsigned int)__clz(any);
            for (unsigned int i = 0u; i < top; ++i) {
                const unsigned int a = (unsigned int)__popc(__ballot_sync(LDA_WIRE_FULL, (g >> i) & 1u));
                const unsigned int r1 = (unsigned int)__popc(__ballot_sync(LDA_WIRE_FULL, (rg >> i) & 1u));
                const unsigned int r2 = (unsigned int)__popc(__ballot_sync(LDA_WIRE_FULL, (rl >> i) & 1u));
                if (lane == i) {
                    c_gap += a;
                    c_run_gap += r1;
                    c_run_len += r2;
                }
            }
        }
        list_bytes = lda_wire_sum(list_bytes);
        for (int d = 16; d >= 1; d /= 2) {
            const int olo = __shfl_xor_sync(LDA_WIRE_FULL, lo, d);
            const int ohi = __shfl_xor_sync(LDA_WIRE_FULL, hi, d);
            lo = olo < lo ? olo : lo;
            hi = ohi > hi ? ohi : hi;
        }
        const unsigned long long m = (unsigned long long)(e1 - e0);
        unsigned long long rice_bits = 0ull, gap_bits = 0ull, len_bits = 0ull;
        const unsigned int k = lda_wire_best_k(lda_wire_rice_bits(c_gap, m, lane), lane, &rice_bits);
        const unsigned int kg = lda_wire_best_k(lda_wire_rice_bits(c_run_gap, runs, lane), lane, &gap_bits);
        const unsigned int kl = lda_wire_best_k(lda_wire_rice_bits(c_run_len, runs, lane), lane, &len_bits);
        const unsigned int value_bytes = (lo >= -128 && hi <= 127) ? 1u
                                         : (lo >= -32768 && hi <= 32767) ? 2u
                                                                         : 4u;
        const unsigned long long values = m * value_bytes;
        const unsigned long long head = lda_wire_varint_len(m);
        // Sizes after the mode byte, in mode order (LIST, DENSE, RICE, RUNS).
        unsigned long long size[4];
        size[LDA_WIRE_LIST] = head + list_bytes + values;
        size[LDA_WIRE_DENSE] = n * value_bytes;
        size[LDA_WIRE_RICE] = head + 1ull + (rice_bits + 7ull) / 8ull + values;
        size[LDA_WIRE_RUNS] = head + lda_wire_varint_len(runs) + 2ull + (gap_bits + len_bits + 7ull) / 8ull + values;
        unsigned int mode = LDA_WIRE_LIST;
        for (unsigned int i = 1u; i < 4u; ++i) {
            if (size[i] < size[mode]) {
                mode = i;
            }
        }
        if (lane == 0u) {
            unsigned int* p = plan + b * LDA_WIRE_PLAN_WORDS;
            p[0] = (unsigned int)(1ull + size[mode]);
            p[1] = mode;
            p[2] = mode == LDA_WIRE_RUNS ? kg : k;
            p[3] = mode == LDA_WIRE_RUNS ? kl : 0u;
            p[4] = value_bytes;
            p[5] = (unsigned int)m;
            p[6] = (unsigned int)runs;
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
        if (mode != LDA_WIRE_DENSE) {
            head += lda_wire_varint_len(m);
        }
        if (mode == LDA_WIRE_RICE) {
            head += 1ull;
        }
        if (mode == LDA_WIRE_RUNS) {
            head += lda_wire_varint_len(runs) + 2ull;
        }
        if (lane == 0u) {
            lda_wire_put_byte(out, start, mode);
            if (mode != LDA_WIRE_DENSE) {
                unsigned long long h = 1ull + lda_wire_put_varint(out, start + 1ull, m);
                if (mode == LDA_WIRE_RICE) {
                    lda_wire_put_byte(out, start + h, k);
                }
                if (mode == LDA_WIRE_RUNS) {
                    h += lda_wire_put_varint(out, start + h, runs);
                    lda_wire_put_byte(out, start + h, k);
                    lda_wire_put_byte(out, start + h + 1ull, kl);
                }
            }
        }
        const unsigned long long body = start + head;
        // The index part: bytes (list) or bits (Rice, runs) before each entry, as a running sum.
        unsigned long long carry = 0ull;
        unsigned int run_start = e0;
        for (unsigned int base = e0; base < e1; base += 32u) {
            const LdaWireEntry x =
                lda_wire_entry(image, rows, rank, tb0, topics, e0, e1, base, lane, &run_start);
            const bool live = x.live, starts = x.starts, ends = x.ends;
            const unsigned int j = base + lane, idx = x.index;
            const unsigned long long list_gap = x.list_gap, gap = x.gap;
            const unsigned long long run_gap = x.run_gap, run_len = x.run_len;
            unsigned long long len = 0ull;
            if (live && mode == LDA_WIRE_LIST) {
                len = lda_wire_varint_len(list_gap);
            } else if (live && mode == LDA_WIRE_RICE) {
                len = (gap >> k) + 1ull + k;
            } else if (live && mode == LDA_WIRE_RUNS) {
                len = (starts ? (run_gap >> k) + 1ull + k : 0ull) + (ends ? (run_len >> kl) + 1ull + kl : 0ull);
            }
            const unsigned long long before = lda_wire_scan(len, lane, &carry);
            if (live && mode == LDA_WIRE_LIST) {
                lda_wire_put_varint(out, body + before, list_gap);
            } else if (live && mode == LDA_WIRE_RICE) {
                lda_wire_put_rice(out, body * 8ull + before, gap, k);
            } else if (live && mode == LDA_WIRE_RUNS) {
                unsigned long long bit = body * 8ull + before;
                if (starts) {
                    lda_wire_put_rice(out, bit, run_gap, k);
                    bit += (run_gap >> k) + 1ull + k;
                }
                if (ends) {
                    lda_wire_put_rice(out, bit, run_len, kl);
                }
            }
            if (live && mode == LDA_WIRE_DENSE) {
                const int c = lda_wire_change(image, rows, entries, wide, j);
                lda_wire_put_value(out, start + 1ull + (unsigned long long)idx * value_bytes, c,
                                   value_bytes);
            }
        }
        if (mode == LDA_WIRE_DENSE) {
            continue;
        }
        // The other layouts' values follow the index part, whose length is known only now.
        // carry is now the index part's length: bytes (list) or bits.
        const unsigned long long values_at =
            body + (mode == LDA_WIRE_LIST ? carry : (carry + 7ull) / 8ull);
        for (unsigned int j = e0 + lane; j < e1; j += 32u) {
            const int c = lda_wire_change(image, rows, entries, wide, j);
            lda_wire_put_value(out, values_at + (unsigned long long)(j - e0) * value_bytes, c, value_bytes);
        }
    }
}
