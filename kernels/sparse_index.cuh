// The index part of a sparse payload (ps_proto::codec::sparse) on the device, for a warp that
// walks a strictly increasing list of indices in chunks of 32 (lane i holding entry base + i):
// a varint list (the first index as it is, each next as the difference), Golomb-Rice gaps (the
// first index, each next's difference less one), or Rice-coded runs of consecutive indices (the
// gap before a run from the last run's end less two, the first run's start as it is; the run's
// length less one). lda_wire.cu (an LDA sweep's delta) and codec_index.cu (a top-k's chosen
// indices) write the same bytes the host's sparse.rs writes.
//
//   spx_entry      an entry's gaps and whether it starts or ends a run, from its index and its
//                  neighbours' (every lane calls it: it votes)
//   spx_tally      adds a chunk's entries to what the layouts' sizes need: per lane i, the
//                  counts of bit i among the Rice gaps, the runs' gaps and lengths; the list's
//                  bytes; the runs
//   spx_plan       the lowest Rice parameter of the fewest bits for each, as sparse.rs's
//                  best_k: a value's bits (v >> k) + 1 + k summed over the list is convex in k,
//                  and every k from 0 to 31 is summed at once from the bit counts C_i,
//                  sum (v >> k) = sum over i >= k of C_i << (i - k)
//   spx_index_len  an entry's length in a layout: bytes (list) or bits (Rice, runs)
//   spx_put_index  writes it at its place: every write an atomicOr of bits into a word of an
//                  output zeroed by the caller (neighbouring codes share bytes)
//
// A shared header (see philox.cuh): device functions only.

#define SPX_FULL 0xffffffffu
#define SPX_LIST 0u
#define SPX_DENSE 1u
#define SPX_RICE 2u
#define SPX_RUNS 3u

// Bits of v (at least one: 0 takes one bit, as in a varint).
__device__ __forceinline__ unsigned int spx_bits(unsigned long long v) {
    const unsigned int hi = (unsigned int)(v >> 32);
    return hi != 0u ? 64u - (unsigned int)__clz(hi) : 32u - (unsigned int)__clz((unsigned int)v | 1u);
}

// Bytes of v as a LEB128 varint.
__device__ __forceinline__ unsigned int spx_varint_len(unsigned long long v) {
    return (spx_bits(v) + 6u) / 7u;
}

__device__ __forceinline__ unsigned long long spx_sum(unsigned long long v) {
    for (int d = 16; d >= 1; d /= 2) {
        v += __shfl_xor_sync(SPX_FULL, v, d);
    }
    return v;
}

// The exclusive prefix of v over the warp's lanes, after *carry (the earlier chunks'); adds the
// chunk's total to *carry.
__device__ __forceinline__ unsigned long long spx_scan(unsigned long long v, unsigned int lane,
                                                       unsigned long long* carry) {
    unsigned long long x = v;
    for (unsigned int d = 1u; d < 32u; d *= 2u) {
        const unsigned long long y = __shfl_up_sync(SPX_FULL, x, d);
        if (lane >= d) {
            x += y;
        }
    }
    const unsigned long long total = __shfl_sync(SPX_FULL, x, 31);
    const unsigned long long before = *carry + x - v;
    *carry += total;
    return before;
}

// Bits of every Rice parameter: lane k returns the bits of the values counted by c (lane i holding
// C_i) coded with k, `count` values in all.
__device__ __forceinline__ unsigned long long spx_rice_bits(unsigned long long c,
                                                            unsigned long long count,
                                                            unsigned int lane) {
    unsigned long long bits = count * (unsigned long long)(lane + 1u);
    for (unsigned int i = 0u; i < 32u; ++i) {
        const unsigned long long ci = __shfl_sync(SPX_FULL, c, i);
        if (i >= lane) {
            bits += ci << (i - lane);
        }
    }
    return bits;
}

// The lowest k of the fewest bits (every lane gets it), and those bits.
__device__ __forceinline__ unsigned int spx_best_k(unsigned long long bits, unsigned int lane,
                                                   unsigned long long* best) {
    unsigned long long b = bits;
    unsigned int k = lane;
    for (int d = 16; d >= 1; d /= 2) {
        const unsigned long long ob = __shfl_xor_sync(SPX_FULL, b, d);
        const unsigned int ok = __shfl_xor_sync(SPX_FULL, k, d);
        if (ob < b || (ob == b && ok < k)) {
            b = ob;
            k = ok;
        }
    }
    *best = b;
    return k;
}

// Ors the low `n` (<= 32) bits of v into the bit stream `out` at bit `at` (LSB first).
__device__ __forceinline__ void spx_put_bits(unsigned int* out, unsigned long long at,
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

__device__ __forceinline__ void spx_put_byte(unsigned int* out, unsigned long long at,
                                             unsigned int byte) {
    spx_put_bits(out, at * 8ull, byte & 0xffu, 8u);
}

// v as a LEB128 varint at byte `at`; returns its length.
__device__ __forceinline__ unsigned int spx_put_varint(unsigned int* out, unsigned long long at,
                                                       unsigned long long v) {
    unsigned int n = 0u;
    while (v >= 0x80ull) {
        spx_put_byte(out, at + n, (unsigned int)(v & 0x7full) | 0x80u);
        v >>= 7;
        ++n;
    }
    spx_put_byte(out, at + n, (unsigned int)v);
    return n + 1u;
}

// v Rice coded with k at bit `at`: v >> k one-bits, a zero (already there), the low k bits.
__device__ __forceinline__ void spx_put_rice(unsigned int* out, unsigned long long at,
                                             unsigned long long v, unsigned int k) {
    unsigned long long q = v >> k;
    while (q > 0ull) {
        const unsigned int n = q >= 32ull ? 32u : (unsigned int)q;
        spx_put_bits(out, at, SPX_FULL, n);
        at += n;
        q -= n;
    }
    spx_put_bits(out, at + 1ull, (unsigned int)v, k);
}

// An entry (the one of lane `lane` in the chunk from `base`): its index, its gap in each
// layout, whether it starts or ends a run and (at a run's end) the run's length less one.
struct SpxEntry {
    bool live, starts, ends;
    unsigned int index, list_gap, gap, run_gap, run_len;
};

// Entry j = base + lane (live: j is in the list), of index `index`, whose neighbours in the list
// (where there are: has_prev, has_next) have indices prev and next. *run_start carries the last
// run's first entry from chunk to chunk (the list's first entry to begin with).
__device__ __forceinline__ SpxEntry spx_entry(unsigned int index, bool live, bool has_prev,
                                              unsigned int prev, bool has_next, unsigned int next,
                                              unsigned int base, unsigned int lane,
                                              unsigned int* run_start) {
    SpxEntry x;
    const unsigned int j = base + lane;
    x.live = live;
    x.index = live ? index : 0u;
    x.starts = live && (!has_prev || index != prev + 1u);
    x.ends = live && (!has_next || next != index + 1u);
    x.list_gap = has_prev ? index - prev : x.index;
    x.gap = has_prev ? index - prev - 1u : x.index;
    x.run_gap = has_prev && x.starts ? index - prev - 2u : (has_prev ? 0u : x.index);
    const unsigned int starts_mask = __ballot_sync(SPX_FULL, x.starts);
    const unsigned int upto = lane == 31u ? SPX_FULL : (2u << lane) - 1u;
    const unsigned int mine = starts_mask & upto;
    const unsigned int first = mine != 0u ? base + 31u - (unsigned int)__clz(mine) : *run_start;
    x.run_len = j - first;
    if (starts_mask != 0u) {
        *run_start = base + 31u - (unsigned int)__clz(starts_mask);
    }
    return x;
}

// What the layouts' sizes need, tallied chunk by chunk (per lane: see spx_tally).
struct SpxTally {
    unsigned long long c_gap, c_run_gap, c_run_len, list_bytes, runs;
};

__device__ __forceinline__ SpxTally spx_tally_zero() {
    SpxTally t;
    t.c_gap = 0ull;
    t.c_run_gap = 0ull;
    t.c_run_len = 0ull;
    t.list_bytes = 0ull;
    t.runs = 0ull;
    return t;
}

__device__ __forceinline__ void spx_tally(const SpxEntry& x, unsigned int lane, SpxTally* t) {
    t->runs += (unsigned long long)__popc(__ballot_sync(SPX_FULL, x.starts));
    if (x.live) {
        t->list_bytes += spx_varint_len(x.list_gap);
    }
    const unsigned int g = x.live ? x.gap : 0u;
    const unsigned int rg = x.starts ? x.run_gap : 0u;
    const unsigned int rl = x.ends ? x.run_len : 0u;
    unsigned int any = g | rg | rl;
    for (int d = 16; d >= 1; d /= 2) {
        any |= __shfl_xor_sync(SPX_FULL, any, d);
    }
    const unsigned int top = any == 0u ? 0u : 32u - (unsigned int)__clz(any);
    for (unsigned int i = 0u; i < top; ++i) {
        const unsigned int a = (unsigned int)__popc(__ballot_sync(SPX_FULL, (g >> i) & 1u));
        const unsigned int r1 = (unsigned int)__popc(__ballot_sync(SPX_FULL, (rg >> i) & 1u));
        const unsigned int r2 = (unsigned int)__popc(__ballot_sync(SPX_FULL, (rl >> i) & 1u));
        if (lane == i) {
            t->c_gap += a;
            t->c_run_gap += r1;
            t->c_run_len += r2;
        }
    }
}

// The index parts' sizes of a list of m entries (every lane gets them): the list's varint
// bytes, the Rice gaps' parameter and bits, the runs, their gaps' and lengths' parameters and
// bits (headers not included).
struct SpxPlan {
    unsigned long long list_bytes, rice_bits, runs, gap_bits, len_bits;
    unsigned int k, kg, kl;
};

__device__ __forceinline__ SpxPlan spx_plan(const SpxTally& t, unsigned long long m,
                                            unsigned int lane) {
    SpxPlan p;
    p.list_bytes = spx_sum(t.list_bytes);
    p.runs = t.runs;
    p.k = spx_best_k(spx_rice_bits(t.c_gap, m, lane), lane, &p.rice_bits);
    p.kg = spx_best_k(spx_rice_bits(t.c_run_gap, t.runs, lane), lane, &p.gap_bits);
    p.kl = spx_best_k(spx_rice_bits(t.c_run_len, t.runs, lane), lane, &p.len_bits);
    return p;
}

// Entry x's length in `mode`: bytes (list) or bits (Rice, runs; k is the runs' gaps' parameter
// there, kl their lengths'); 0 for dense or an entry past the list.
__device__ __forceinline__ unsigned long long spx_index_len(const SpxEntry& x, unsigned int mode,
                                                            unsigned int k, unsigned int kl) {
    if (!x.live) {
        return 0ull;
    }
    const unsigned long long run_gap = x.run_gap, run_len = x.run_len;
    switch (mode) {
        case SPX_LIST:
            return spx_varint_len(x.list_gap);
        case SPX_RICE:
            return ((unsigned long long)x.gap >> k) + 1ull + k;
        case SPX_RUNS:
            return (x.starts ? (run_gap >> k) + 1ull + k : 0ull) +
                   (x.ends ? (run_len >> kl) + 1ull + kl : 0ull);
        default:
            return 0ull;
    }
}

// Writes entry x's code of `mode` into the index part that starts at byte `body` of `out`,
// `before` bytes (list) or bits (Rice, runs) into it.
__device__ __forceinline__ void spx_put_index(unsigned int* out, unsigned long long body,
                                              unsigned long long before, const SpxEntry& x,
                                              unsigned int mode, unsigned int k, unsigned int kl) {
    if (!x.live) {
        return;
    }
    if (mode == SPX_LIST) {
        spx_put_varint(out, body + before, x.list_gap);
    } else if (mode == SPX_RICE) {
        spx_put_rice(out, body * 8ull + before, x.gap, k);
    } else if (mode == SPX_RUNS) {
        unsigned long long bit = body * 8ull + before;
        if (x.starts) {
            spx_put_rice(out, bit, x.run_gap, k);
            bit += ((unsigned long long)x.run_gap >> k) + 1ull + k;
        }
        if (x.ends) {
            spx_put_rice(out, bit, x.run_len, kl);
        }
    }
}
