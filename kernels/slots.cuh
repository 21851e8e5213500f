// The sorted set of local columns a batch of CSR rows touches (ps_apps::lr's batch keys as the
// worker's local ids), made on the device in four passes with no shared memory and no barrier,
// so that each is a grid-stride loop (worker-gpu/tests/kernels_on_host/headers.rs runs them on the CPU
// on an emulated grid):
//
//   slots_mark   flags[cols[e]] = 1 for every nonzero e of rows batch[0..n)   (flags zeroed first)
//   slots_count  counts[c] = flags set in chunk c, ids [c * chunk, min(f, (c + 1) * chunk)), and
//                sums[c] = the sum of slots_hash(id) over them (wrapping)
//   slots_scan   (one thread) counts[c] = the flags before chunk c; counts[chunks] = the total;
//                sums[chunks] = the sum of all chunks' sums: a checksum of the set of ids, which
//                the host compares with the ids of the keys it sends weights for
//   slots_write  slots[counts[c] + j] = the j-th flagged id of chunk c: all ids ascending
//
// A shared header, not a kernel (see philox.cuh): device functions only.

__device__ __forceinline__ unsigned long long slots_thread() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long slots_stride() {
    return (unsigned long long)gridDim.x * blockDim.x;
}

// An id's share of the set checksum (a SplitMix64-style mix; worker_gpu's slot_checksum).
__device__ __forceinline__ unsigned long long slots_hash(unsigned int id) {
    unsigned long long x = ((unsigned long long)id + 1ull) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 32);
}

__device__ __forceinline__ void slots_mark(const unsigned int* __restrict__ row_ptr,
                                           const unsigned int* __restrict__ cols,
                                           const unsigned int* __restrict__ batch,
                                           unsigned int n,
                                           unsigned char* flags) {
    for (unsigned long long i = slots_thread(); i < n; i += slots_stride()) {
        const unsigned int r = batch[i];
        for (unsigned int e = row_ptr[r]; e < row_ptr[r + 1]; ++e) {
            flags[cols[e]] = 1; // every writer writes 1: no race on the value
        }
    }
}

__device__ __forceinline__ void slots_count(const unsigned char* __restrict__ flags,
                                            unsigned int f,
                                            unsigned int chunk,
                                            unsigned int chunks,
                                            unsigned int* __restrict__ counts,
                                            unsigned long long* __restrict__ sums) {
    for (unsigned long long c = slots_thread(); c < chunks; c += slots_stride()) {
        const unsigned long long lo = c * chunk;
        const unsigned long long hi = lo + chunk < f ? lo + chunk : f;
        unsigned int k = 0;
        unsigned long long h = 0;
        for (unsigned long long id = lo; id < hi; ++id) {
            if (flags[id]) {
                ++k;
                h += slots_hash((unsigned int)id);
            }
        }
        counts[c] = k;
        sums[c] = h;
    }
}

__device__ __forceinline__ void slots_scan(unsigned int* counts,
                                           unsigned long long* sums,
                                           unsigned int chunks) {
    if (slots_thread() == 0) {
        unsigned int acc = 0;
        unsigned long long h = 0;
        for (unsigned int c = 0; c < chunks; ++c) {
            const unsigned int k = counts[c];
            counts[c] = acc;
            acc += k;
            h += sums[c];
        }
        counts[chunks] = acc;
        sums[chunks] = h;
    }
}

__device__ __forceinline__ void slots_write(const unsigned char* __restrict__ flags,
                                            unsigned int f,
                                            unsigned int chunk,
                                            unsigned int chunks,
                                            const unsigned int* __restrict__ offsets,
                                            unsigned int* __restrict__ slots) {
    for (unsigned long long c = slots_thread(); c < chunks; c += slots_stride()) {
        const unsigned long long lo = c * chunk;
        const unsigned long long hi = lo + chunk < f ? lo + chunk : f;
        unsigned int at = offsets[c];
        for (unsigned long long id = lo; id < hi; ++id) {
            if (flags[id]) {
                slots[at++] = (unsigned int)id;
            }
        }
    }
}
