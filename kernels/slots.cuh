// The sorted set of local columns a batch of CSR rows touches (ps_apps::lr's batch keys as the
// worker's local ids), made on the device in four passes with no shared memory and no barrier,
// so that each is a grid-stride loop (worker-gpu/tests/headers_on_host.rs runs them on the CPU
// on an emulated grid):
//
//   slots_mark   flags[cols[e]] = 1 for every nonzero e of rows batch[0..n)   (flags zeroed first)
//   slots_count  counts[c] = flags set in chunk c, ids [c * chunk, min(f, (c + 1) * chunk))
//   slots_scan   (one thread) counts[c] = the flags before chunk c; counts[chunks] = the total
//   slots_write  slots[counts[c] + j] = the j-th flagged id of chunk c: all ids ascending
//
// A shared header, not a kernel (see philox.cuh): device functions only.

__device__ __forceinline__ unsigned long long slots_thread() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long slots_stride() {
    return (unsigned long long)gridDim.x * blockDim.x;
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
                                            unsigned int* __restrict__ counts) {
    for (unsigned long long c = slots_thread(); c < chunks; c += slots_stride()) {
        const unsigned long long lo = c * chunk;
        const unsigned long long hi = lo + chunk < f ? lo + chunk : f;
        unsigned int k = 0;
        for (unsigned long long id = lo; id < hi; ++id) {
            k += flags[id];
        }
        counts[c] = k;
    }
}

__device__ __forceinline__ void slots_scan(unsigned int* counts, unsigned int chunks) {
    if (slots_thread() == 0) {
        unsigned int acc = 0;
        for (unsigned int c = 0; c < chunks; ++c) {
            const unsigned int k = counts[c];
            counts[c] = acc;
            acc += k;
        }
        counts[chunks] = acc;
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
