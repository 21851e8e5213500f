// Counter-based random numbers on the device: uniforms in [0, 1) from Philox-4x32-10
// (kernels/philox.cuh, prepended by worker-gpu/src/kernels.rs), bit for bit those of
// ps_apps::philox::fill_uniforms on the host.
//
// Serves worker_gpu::cuda::rng (and any engine that wants device-side uniforms without copying
// them from the host); the conformance case `rng` compares it with the host half.
//
// Layout:
//   out   n floats: out[j] = uniform(seed, stream, first_index + j), where
//         seed = seed_hi << 32 | seed_lo. The caller guarantees first_index + n <= 2^64.
//
// Parallelism: one thread per Philox block (four uniforms) in a grid stride over the blocks that
// cover [first_index, first_index + n); the first and last blocks may be partial.
//
// Deviations from the host: none; the values are exact (see philox.cuh).
//
// Launch: any grid and block shape (1-D); no shared memory.

extern "C" __global__ void rng_philox_uniforms(unsigned int seed_lo,
                                               unsigned int seed_hi,
                                               unsigned int stream,
                                               unsigned long long first_index,
                                               unsigned long long n,
                                               float* __restrict__ out)
{
    if (n == 0) {
        return;
    }
    const unsigned long long first_block = first_index >> 2;
    // The last index, first_index + n - 1, cannot overflow by the caller's guarantee.
    const unsigned long long blocks = ((first_index + (n - 1)) >> 2) - first_block + 1;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long b = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         b < blocks; b += stride) {
        const unsigned long long block = first_block + b;
        const philox_block r = philox_uniform_block(seed_lo, seed_hi, stream, block);
#pragma unroll
        for (unsigned int w = 0; w < 4; ++w) {
            // Index block * 4 + w, as an offset from first_index (never overflows: it is taken
            // only inside [first_index, first_index + n)).
            const unsigned long long base = block << 2;
            if (base + w >= first_index && base + w - first_index < n) {
                out[base + w - first_index] = philox_unit_float(r.w[w]);
            }
        }
    }
}
