// Word-topic rows packed for the bus (ps_apps::lda::packed, which documents the image), both
// ways, so that only nonzero cells cross PCIe. The image is `u32` words:
//
//   ends     rows words: row r's entries are [ends[r - 1], ends[r]) (ends[-1] = 0)
//   topics   entries u16, two to a word, low half first (word `rows` on)
//   values   from word rows + ceil(entries / 2) on: 16-bit values two to a word, or 32-bit
//            values one to a word
//
// In: lda_rows_scatter writes a pulled run (values u16 counts, or f32 bits when f32_values is
// set; each end clamped to `entries`) into the device's copy of those rows, which the caller has
// zeroed; an entry whose topic is K or more is skipped. One warp per row (grid stride), the
// row's entries spread over the lanes; every entry names a distinct cell, so there is no race
// and no barrier. Host half: ps_apps::lda::packed::unpack_rows.
//
// Out: a sweep's dense move counts (rows x K i32) become a packed delta in five barrier-free
// passes (the bodies of lda_resident.cu's lda_delta_* kernels); rows are grouped in chunks of
// LDA_DELTA_CHUNK, and meta holds 2 + ceil(rows / LDA_DELTA_CHUNK) words:
//
//   count   (a thread per row) image[r] = the row's nonzero cells, bit 31 set when one is
//           outside [-32767, 32767]
//   chunks  (a thread per chunk) the chunk's counts become ends within the chunk, and
//           meta[2 + c] = the chunk's total, bit 31 set when a row of it is wide
//   scan    (one thread) meta[2 + c] = the entries before chunk c; meta[0] = all entries,
//           meta[1] = 1 when any change is wide (values i32, else i16); the odd last half-words
//           are zeroed, when the entries fit `capacity`
//   write   (a thread per row) the row's nonzero cells in topic order, from its start
//   ends    (a thread per row, after write) image[r] += its chunk's start: the ends become the
//           image's
//
// write and ends do nothing when the entries exceed `capacity` (the host then sees meta[0] >
// capacity and writes nothing). Host half: ps_apps::lda::packed::pack_delta, the same image word
// for word. worker-gpu/tests/kernels_on_host/headers.rs runs every body here on the CPU on an emulated
// grid and checks it against the host halves.
//
// A shared header, not a kernel (see philox.cuh): device functions only.

__device__ __forceinline__ unsigned long long lda_rows_thread() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long lda_rows_stride() {
    return (unsigned long long)gridDim.x * blockDim.x;
}

__device__ __forceinline__ void lda_rows_scatter(const unsigned int* __restrict__ image,
                                                 unsigned int rows,
                                                 unsigned int entries,
                                                 unsigned int f32_values,
                                                 unsigned int topics,
                                                 float* __restrict__ dst) {
    const unsigned long long thread = lda_rows_thread();
    const unsigned long long warps = lda_rows_stride() / 32ull;
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned short* topic = (const unsigned short*)(image + rows);
    const unsigned int* values = image + rows + (entries + 1u) / 2u;
    const unsigned short* counts = (const unsigned short*)values;
    for (unsigned long long r = thread / 32ull; r < rows; r += warps) {
        const unsigned int lo = r == 0ull ? 0u : min(image[r - 1ull], entries);
        const unsigned int hi = min(image[r], entries);
        float* row = dst + r * (unsigned long long)topics;
        for (unsigned int j = lo + lane; j < hi; j += 32u) {
            const unsigned int t = topic[j];
            if (t >= topics) {
                continue;
            }
            row[t] = f32_values != 0u ? __uint_as_float(values[j]) : (float)counts[j];
        }
    }
}

// In, tighter: lda_rows_scatter_rice writes a pulled run packed as a Rice rows image
// (ps_apps::lda::packed::rice documents it: per chunk of 32 rows its first stream bit, Rice k
// and value code; each row's length in bits; the rows' entries as Rice-coded topic gaps, each
// followed by its value in 8, 16 or 32 bits) into the zeroed rows, a thread per row: it adds the
// lengths of the rows before it in its chunk to find its first bit, then decodes its entries in
// order. A topic of K or more is skipped; a row decodes nothing past its length, and no read
// goes past the stream's `stream_words` (a 32-bit read may take bits of the next row). The
// arguments must describe the image as packed (rows, wide_lengths, stream_words): the kernel is
// not told its length. Host half: ps_apps::lda::packed::rice::unpack_rice_rows.

// 32 stream bits from bit p (zeros past the stream's `words`).
__device__ __forceinline__ unsigned int lda_rice_read32(const unsigned int* __restrict__ stream,
                                                        unsigned long long words,
                                                        unsigned long long p) {
    const unsigned long long w = p >> 5;
    const unsigned int sh = (unsigned int)(p & 31ull);
    const unsigned int lo = w < words ? stream[w] : 0u;
    const unsigned int hi = w + 1ull < words ? stream[w + 1ull] : 0u;
    return sh == 0u ? lo : (lo >> sh) | (hi << (32u - sh));
}

__device__ __forceinline__ void lda_rows_scatter_rice(const unsigned int* __restrict__ image,
                                                      unsigned int rows,
                                                      unsigned int wide_lengths,
                                                      unsigned int stream_words,
                                                      unsigned int topics,
                                                      float* __restrict__ dst) {
    const unsigned int chunks = (rows + 31u) / 32u;
    const unsigned int* lengths = image + 2u * chunks;
    const unsigned int* stream = lengths + (wide_lengths != 0u ? rows : (rows + 1u) / 2u);
    const unsigned long long end_of_stream = 32ull * stream_words;
    for (unsigned long long r = lda_rows_thread(); r < rows; r += lda_rows_stride()) {
        const unsigned int c = (unsigned int)(r / 32ull);
        const unsigned int meta = image[2u * c + 1u];
        const unsigned int k = meta & 31u;
        const unsigned int code = (meta >> 5) & 3u;
        if (code > 2u) {
            continue;
        }
        const unsigned int vbits = 8u << code;
        unsigned long long p = image[2u * c];
        unsigned long long len = 0ull;
        for (unsigned long long i = 32ull * c; i <= r; ++i) {
            const unsigned int l = wide_lengths != 0u
                                       ? lengths[i]
                                       : (lengths[i / 2ull] >> (16u * (unsigned int)(i % 2ull))) & 0xffffu;
            if (i < r) {
                p += l;
            } else {
                len = l;
            }
        }
        const unsigned long long end = p + len;
        if (end > end_of_stream) {
            continue;
        }
        float* row = dst + r * (unsigned long long)topics;
        unsigned long long t = 0ull;
        bool first = true;
        while (p < end) {
            unsigned long long q = 0ull;
            for (;;) {
                const unsigned int x = lda_rice_read32(stream, stream_words, p);
                const unsigned int ones = x == 0xffffffffu ? 32u : (unsigned int)__ffs(~x) - 1u;
                q += ones;
                p += ones;
                if (ones < 32u || p >= end) {
                    break;
                }
            }
            p += 1ull;
            const unsigned int mask = k == 0u ? 0u : 0xffffffffu >> (32u - k);
            const unsigned long long g = (q << k) | (lda_rice_read32(stream, stream_words, p) & mask);
            p += k;
            t = first ? g : t + 1ull + g;
            first = false;
            const unsigned int vmask = vbits == 32u ? 0xffffffffu : (1u << vbits) - 1u;
            const unsigned int v = lda_rice_read32(stream, stream_words, p) & vmask;
            p += vbits;
            if (p > end) {
                break;
            }
            if (t < topics) {
                row[t] = code == 2u ? __uint_as_float(v) : (float)v;
            }
        }
    }
}

#define LDA_DELTA_CHUNK 256u

__device__ __forceinline__ void lda_delta_count_rows(const int* __restrict__ cells,
                                                     unsigned int rows,
                                                     unsigned int topics,
                                                     unsigned int* __restrict__ image) {
    for (unsigned long long r = lda_rows_thread(); r < rows; r += lda_rows_stride()) {
        const int* row = cells + r * (unsigned long long)topics;
        unsigned int n = 0u;
        unsigned int wide = 0u;
        for (unsigned int t = 0u; t < topics; ++t) {
            const int c = row[t];
            if (c != 0) {
                ++n;
                wide |= (c > 32767 || c < -32767) ? 1u : 0u;
            }
        }
        image[r] = n | (wide << 31);
    }
}

__device__ __forceinline__ void lda_delta_chunk_rows(unsigned int* __restrict__ image,
                                                     unsigned int rows,
                                                     unsigned int* __restrict__ meta) {
    const unsigned int chunks = (rows + LDA_DELTA_CHUNK - 1u) / LDA_DELTA_CHUNK;
    for (unsigned long long c = lda_rows_thread(); c < chunks; c += lda_rows_stride()) {
        const unsigned int lo = (unsigned int)c * LDA_DELTA_CHUNK;
        const unsigned int hi = min(rows, lo + LDA_DELTA_CHUNK);
        unsigned int sum = 0u;
        unsigned int wide = 0u;
        for (unsigned int r = lo; r < hi; ++r) {
            const unsigned int v = image[r];
            wide |= v >> 31;
            sum += v & 0x7fffffffu; // at most 256 rows of at most 65,536 cells: no overflow
            image[r] = sum;
        }
        meta[2u + c] = sum | (wide << 31);
    }
}

__device__ __forceinline__ void lda_delta_scan_rows(unsigned int* __restrict__ image,
                                                    unsigned int rows,
                                                    unsigned int capacity,
                                                    unsigned int* __restrict__ meta) {
    if (lda_rows_thread() != 0ull) {
        return;
    }
    const unsigned int chunks = (rows + LDA_DELTA_CHUNK - 1u) / LDA_DELTA_CHUNK;
    unsigned long long total = 0ull;
    unsigned int wide = 0u;
    for (unsigned int c = 0u; c < chunks; ++c) {
        const unsigned int v = meta[2u + c];
        wide |= v >> 31;
        meta[2u + c] = total < 0xffffffffull ? (unsigned int)total : 0xffffffffu;
        total += v & 0x7fffffffu;
    }
    const unsigned int entries = total < 0xffffffffull ? (unsigned int)total : 0xffffffffu;
    meta[0] = entries;
    meta[1] = wide;
    if (entries <= capacity && (entries & 1u) != 0u) {
        unsigned short* topic = (unsigned short*)(image + rows);
        topic[entries] = 0u;
        if (wide == 0u) {
            unsigned short* values = (unsigned short*)(image + rows + (entries + 1u) / 2u);
            values[entries] = 0u;
        }
    }
}

__device__ __forceinline__ void lda_delta_write_rows(const int* __restrict__ cells,
                                                     unsigned int rows,
                                                     unsigned int topics,
                                                     unsigned int* __restrict__ image,
                                                     const unsigned int* __restrict__ meta,
                                                     unsigned int capacity) {
    const unsigned int entries = meta[0];
    const unsigned int wide = meta[1];
    if (entries > capacity) {
        return;
    }
    unsigned short* topic = (unsigned short*)(image + rows);
    unsigned int* values = image + rows + (entries + 1u) / 2u;
    for (unsigned long long r = lda_rows_thread(); r < rows; r += lda_rows_stride()) {
        const unsigned int c0 = (unsigned int)(r / LDA_DELTA_CHUNK);
        unsigned int j = meta[2u + c0] + (r % LDA_DELTA_CHUNK == 0ull ? 0u : image[r - 1ull]);
        const int* row = cells + r * (unsigned long long)topics;
        for (unsigned int t = 0u; t < topics; ++t) {
            const int c = row[t];
            if (c != 0) {
                topic[j] = (unsigned short)t;
                if (wide != 0u) {
                    values[j] = (unsigned int)c;
                } else {
                    ((unsigned short*)values)[j] = (unsigned short)(short)c;
                }
                ++j;
            }
        }
    }
}

__device__ __forceinline__ void lda_delta_ends_rows(unsigned int* __restrict__ image,
                                                    unsigned int rows,
                                                    const unsigned int* __restrict__ meta,
                                                    unsigned int capacity) {
    if (meta[0] > capacity) {
        return;
    }
    for (unsigned long long r = lda_rows_thread(); r < rows; r += lda_rows_stride()) {
        image[r] += meta[2u + (unsigned int)(r / LDA_DELTA_CHUNK)];
    }
}
