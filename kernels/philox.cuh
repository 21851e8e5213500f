// Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11; the Random123 library) and the uniforms
// of ps_apps::philox, in CUDA C, bit for bit the same as the Rust host half
// (crates/ps-apps/src/philox.rs, checked against Random123's known answers).
//
// A shared header, not a kernel: worker-gpu/src/kernels.rs prepends it to the kernel files that
// name it (NVRTC compiles each file alone, without include directives), followed by a #line
// directive so that compiler messages still name the kernel file's own lines. Device functions
// only.
//
// The uniform stream (as in philox.rs): key = seed (low word first); index i is word i % 4 of
// the block whose counter is {i / 4 low word, i / 4 high word, stream, 0}; a word x becomes
// (x >> 8) * 2^-24, exact in f32.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Four 32-bit words: a counter or an output block.
struct philox_block {
    unsigned int w[4];
};

// One round: two 32x32->64 products, their high halves mixed with the other words and the key.
__device__ __forceinline__ philox_block philox_round(philox_block c, unsigned int k0,
                                                      unsigned int k1)
{
    const unsigned long long p0 = (unsigned long long)PHILOX_M0 * c.w[0];
    const unsigned long long p1 = (unsigned long long)PHILOX_M1 * c.w[2];
    philox_block r;
    r.w[0] = (unsigned int)(p1 >> 32) ^ c.w[1] ^ k0;
    r.w[1] = (unsigned int)p1;
    r.w[2] = (unsigned int)(p0 >> 32) ^ c.w[3] ^ k1;
    r.w[3] = (unsigned int)p0;
    return r;
}

// Philox-4x32-10 of counter c under key (k0, k1): ten rounds, the key bumped before each round
// but the first (unsigned arithmetic wraps, as in the host half).
__device__ __forceinline__ philox_block philox4x32_10(philox_block c, unsigned int k0,
                                                      unsigned int k1)
{
    c = philox_round(c, k0, k1);
#pragma unroll
    for (int r = 1; r < 10; ++r) {
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
        c = philox_round(c, k0, k1);
    }
    return c;
}

// The block holding uniforms 4 * block .. 4 * block + 3 of `stream` under the seed.
__device__ __forceinline__ philox_block philox_uniform_block(unsigned int seed_lo,
                                                             unsigned int seed_hi,
                                                             unsigned int stream,
                                                             unsigned long long block)
{
    philox_block c;
    c.w[0] = (unsigned int)block;
    c.w[1] = (unsigned int)(block >> 32);
    c.w[2] = stream;
    c.w[3] = 0u;
    return philox4x32_10(c, seed_lo, seed_hi);
}

// A word as a uniform in [0, 1): the top 24 bits (exactly representable) times 2^-24 (a power
// of two, so the product is exact under any rounding mode).
__device__ __forceinline__ float philox_unit_float(unsigned int x)
{
    return (float)(x >> 8) * 5.9604644775390625e-8f;
}

// Uniform `index` of `stream` under the seed (ps_apps::philox::uniform).
__device__ __forceinline__ float philox_uniform(unsigned int seed_lo, unsigned int seed_hi,
                                                unsigned int stream, unsigned long long index)
{
    const philox_block b = philox_uniform_block(seed_lo, seed_hi, stream, index >> 2);
    const unsigned int j = (unsigned int)(index & 3u);
    // Selected without a dynamic index, which would put the block in local memory.
    return philox_unit_float(j == 0 ? b.w[0] : j == 1 ? b.w[1] : j == 2 ? b.w[2] : b.w[3]);
}
