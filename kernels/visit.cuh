// The visiting order of an epoch (ps_apps::visit::Visit) in CUDA C, bit for bit the Rust host
// half (crates/ps-apps/src/visit.rs): a four-round Feistel network on the smallest even number of
// bits that holds n, walked until it lands below n, with a round function of 32-bit wrapping
// multiplies, xors and shifts only.
//
// A shared header, not a kernel (see philox.cuh): device functions only.

__device__ __forceinline__ unsigned int visit_round(unsigned int half, unsigned int key) {
    unsigned int x = half ^ key;
    x *= 0x9E3779B1u;
    x ^= x >> 15;
    x *= 0x85EBCA77u;
    x ^= x >> 13;
    x *= 0xC2B2AE3Du;
    return x ^ (x >> 16);
}

// Bits of each half of the domain for n >= 1 values: 4^h is the smallest power of four >= n.
__device__ __forceinline__ unsigned int visit_half_bits(unsigned int n) {
    const unsigned int bits = 32u - (unsigned int)__clz(n - 1u); // __clz(0) = 32
    const unsigned int h = (bits + 1u) / 2u;
    return h < 1u ? 1u : h;
}

// The sample at position j (< n) of the permutation keyed by k0..k3.
__device__ __forceinline__ unsigned int visit_at(unsigned int n,
                                                 unsigned int k0,
                                                 unsigned int k1,
                                                 unsigned int k2,
                                                 unsigned int k3,
                                                 unsigned int j) {
    const unsigned int h = visit_half_bits(n);
    const unsigned long long mask = (1ull << h) - 1ull;
    const unsigned int keys[4] = {k0, k1, k2, k3};
    unsigned long long x = j;
    do {
        unsigned long long l = x >> h, r = x & mask;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const unsigned long long f =
                (unsigned long long)visit_round((unsigned int)r, keys[i]) & mask;
            const unsigned long long t = l ^ f;
            l = r;
            r = t;
        }
        x = (l << h) | r;
    } while (x >= n);
    return (unsigned int)x;
}

// order[i] = visit_at(n, keys, from + i) for i < count, grid-stride over any 1-D grid: the body
// of the kernels that make a visit's order where the samples are (from + count <= n).
__device__ __forceinline__ void visit_fill(unsigned int k0,
                                           unsigned int k1,
                                           unsigned int k2,
                                           unsigned int k3,
                                           unsigned int n,
                                           unsigned int from,
                                           unsigned int count,
                                           unsigned int* __restrict__ order) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < count; i += (unsigned long long)gridDim.x * blockDim.x) {
        order[i] = visit_at(n, k0, k1, k2, k3, from + (unsigned int)i);
    }
}
