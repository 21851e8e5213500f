// The end of a top-k selection on the device, so that a selection's values can be encoded where
// they are (codec_dense.cu's kernels on the compact values) and only the payload leaves: what
// DeviceTopK's host trim (`best_of_candidates`) and feedback did with the candidates copied back.
//
//   codec_topk_trim     of the `count` candidates of codecs.cu's codec_topk_compact (every entry
//                       whose magnitude bits reach the threshold, in no order), the `k` of
//                       largest rank key (magnitude bits << 32 | ~index: ties by lower index,
//                       NaN above +inf, as select.rs ranks them), written ascending by index to
//                       sel_idx, with their values read from x to sel_val
//   codec_topk_scatter  x[sel_idx[j]] = vals[j] (the compact values after the encoder left in
//                       them what error feedback keeps: they go back into the residual)
//
// Launch: codec_topk_trim one block of CODEC_TRIM_THREADS threads (any multiple of 32 gives the
// same result), count <= CODEC_TRIM_CAP (the caller trims larger sets on the host), k <= count,
// indices below 2^32 - 1 (so that every key is above the padding, 0); 32 KB static shared
// memory. codec_topk_scatter: any 1-D grid, a thread per entry, grid stride; indices distinct.
// The sort is bitonic.cuh's.

#define CODEC_TRIM_CAP 4096
#define CODEC_TRIM_THREADS 1024

extern "C" __global__ void __launch_bounds__(CODEC_TRIM_THREADS)
    codec_topk_trim(const float* __restrict__ x,
                    const unsigned int* __restrict__ cand_idx,
                    const float* __restrict__ cand_val,
                    unsigned int count,
                    unsigned int k,
                    unsigned int* sel_idx,
                    float* sel_val) {
    __shared__ unsigned long long keys[CODEC_TRIM_CAP];
    const unsigned int c = count < CODEC_TRIM_CAP ? count : CODEC_TRIM_CAP;
    const unsigned int kk = k < c ? k : c;
    unsigned int padded = 2;
    while (padded < c) {
        padded <<= 1;
    }
    // Rank keys; the padding (0) sorts below every candidate.
    for (unsigned int i = threadIdx.x; i < padded; i += blockDim.x) {
        unsigned long long key = 0ull;
        if (i < c) {
            const unsigned long long mag = __float_as_uint(cand_val[i]) & 0x7fffffffu;
            key = (mag << 32) | (unsigned long long)(~cand_idx[i]);
        }
        keys[i] = key;
    }
    codec_bitonic<unsigned long long>(keys, padded);
    // The top kk keys are the last kk; their indices, and the maximum elsewhere, sorted again:
    // the first kk are then the chosen indices, ascending.
    // (Each thread rewrites the slots it reads.)
    for (unsigned int i = threadIdx.x; i < padded; i += blockDim.x) {
        keys[i] = i >= padded - kk ? (unsigned long long)(~(unsigned int)keys[i])
                                   : 0xffffffffffffffffull;
    }
    codec_bitonic<unsigned long long>(keys, padded);
    for (unsigned int j = threadIdx.x; j < kk; j += blockDim.x) {
        const unsigned int i = (unsigned int)keys[j];
        sel_idx[j] = i;
        sel_val[j] = x[i];
    }
}

extern "C" __global__ void codec_topk_scatter(float* x,
                                              const unsigned int* __restrict__ sel_idx,
                                              const float* __restrict__ vals,
                                              unsigned long long k) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; j < k;
         j += stride) {
        x[sel_idx[j]] = vals[j];
    }
}
