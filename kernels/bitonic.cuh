// A block's bitonic sort in shared memory: keys[0..padded) ascending (padded a power of two),
// every thread of the block taking part (any blockDim.x); ends with a barrier, so that any
// thread may then read any key. Used by codecs.cu's sampled threshold (u32 magnitude bits) and
// codec_topk.cu's trim (u64 rank keys).

template <typename T>
__device__ __forceinline__ void codec_bitonic(T* keys, unsigned int padded) {
    for (unsigned int size = 2; size <= padded; size <<= 1) {
        for (unsigned int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (unsigned int i = threadIdx.x; i < padded; i += blockDim.x) {
                const unsigned int j = i ^ stride;
                if (j > i) {
                    const T a = keys[i];
                    const T b = keys[j];
                    const bool ascending = (i & size) == 0u;
                    if ((a > b) == ascending) {
                        keys[i] = b;
                        keys[j] = a;
                    }
                }
            }
        }
    }
    __syncthreads();
}
