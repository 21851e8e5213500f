// Delta codecs on the device: f16 packing, sampled top-k selection and the error-feedback
// residual, so that a GPU worker compresses its deltas before they leave the device.
//
// Serves ps_proto::codec (format.rs, select.rs, feedback.rs); the host keeps the wire format.
//
// The value formats (f16 here) are values.cuh's; the threshold's sort is bitonic.cuh's.
//
// Top-k (select.rs): entries rank by magnitude bits (the f32 bits without the sign, so NaN ranks
// above +inf), ties by lower index. The device part is the sampled threshold (codec_topk_threshold:
// the sample positions, select.rs's splitmix64 sequence, made by codec_topk_samples, and how many
// sample entries must lie at or above the threshold) and the candidate pass (codec_topk_compact: every
// entry with magnitude bits >= threshold, as (index, value), unordered). As in select.rs, the
// host trims the candidates to exactly k (rank key = magnitude bits << 32 | !index) and, if there
// are fewer than k, lowers the threshold and runs the pass again.
//
// Error feedback (feedback.rs): residual += delta (codec_ef_accumulate); encode the residual;
// residual -= what the receiver decodes for every sent entry (codec_ef_subtract), where a
// non-finite residual entry that was sent becomes 0 rather than NaN.
//
// Also the way in of pulled rows that crossed narrow, widened exactly: 16-bit values
// (codec_f16_to_f32, codec_bf16_to_f32) and codes in runs of scales (codec_levels_to_f32,
// ps_apps::app::device_codec::levels).
//
// All kernels: any 1-D grid and block (blockDim.x a multiple of 32), except
// codec_topk_threshold: exactly one block of CODEC_SORT_THREADS threads.

#define CODEC_WARP 32
#define CODEC_FULL 0xffffffffu
#define CODEC_MAX_SAMPLE 4096
#define CODEC_SORT_THREADS 1024

// out[i] = f16 bits of x[i]; round_trip (may be null) receives the value the receiver decodes,
// which is what error feedback subtracts from the residual.
extern "C" __global__ void codec_f32_to_f16(const float* __restrict__ x,
                                            unsigned short* out,
                                            float* round_trip,
                                            unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const unsigned short h = codec_f32_to_f16_bits(x[i]);
        out[i] = h;
        if (round_trip != 0) {
            round_trip[i] = codec_f16_bits_to_f32(h);
        }
    }
}

extern "C" __global__ void codec_f16_to_f32(const unsigned short* __restrict__ h,
                                            float* out,
                                            unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        out[i] = codec_f16_bits_to_f32(h[i]);
    }
}

// bf16 is f32's high half: out[i] = bits h[i] << 16, exact (rows of a bf16 pull codec).
extern "C" __global__ void codec_bf16_to_f32(const unsigned short* __restrict__ h,
                                             float* out,
                                             unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        out[i] = __uint_as_float((unsigned int)h[i] << 16);
    }
}

// Values that crossed as codes (ps_apps::app::device_codec::levels: a q8, q4, q2 or sign pull
// codec's rows) widened exactly: out[i] = (float)code_i * the scale of i, one rounding, as
// LevelImage::widen. `image` is LevelImage::packed: `segments` first value indices (ascending,
// the first 0), their first scales' indices, `scales` f32 scales (one for each group of 128
// values of each segment, from its start), then the codes, `bits` bits each (1: set for -1,
// clear for +1; 2, 4 or 8: two's complement), least-significant bits first. n < 2^32. Any 1-D
// grid.
extern "C" __global__ void codec_levels_to_f32(const unsigned char* __restrict__ image,
                                               unsigned int segments,
                                               unsigned int scales,
                                               unsigned int bits,
                                               unsigned long long n,
                                               float* out) {
    const unsigned int* starts = (const unsigned int*)image;
    const unsigned int* bases = starts + segments;
    const float* scale = (const float*)(bases + segments);
    const unsigned char* codes = (const unsigned char*)(scale + scales);
    const unsigned int mask = (1u << bits) - 1u;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        // The last segment opening at or before i.
        unsigned int lo = 0, hi = segments;
        while (hi - lo > 1u) {
            const unsigned int mid = lo + (hi - lo) / 2u;
            if ((unsigned long long)starts[mid] <= i) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        const unsigned int s = bases[lo] + (unsigned int)((i - starts[lo]) >> 7);
        const unsigned long long at = i * bits;
        const unsigned int raw = ((unsigned int)codes[at >> 3] >> (unsigned int)(at & 7ull)) & mask;
        int code;
        if (bits == 1u) {
            code = raw != 0u ? -1 : 1;
        } else if ((raw >> (bits - 1u)) != 0u) {
            code = (int)raw - (int)(1u << bits);
        } else {
            code = (int)raw;
        }
        out[i] = __fmul_rn((float)code, scale[s]);
    }
}

// The sampled threshold: sorts the magnitude bits of x at the first min(samples, 4096) positions
// of sample_idx (bitonic sort in shared memory) and writes to *threshold the `above`-th largest
// (above = 0 is read as 1), or 0 (take every entry) when above >= samples, as select.rs's
// `sampled`. Launch: one block of CODEC_SORT_THREADS (1024) threads; 16 KB static shared memory.
extern "C" __global__ void __launch_bounds__(CODEC_SORT_THREADS)
    codec_topk_threshold(const float* __restrict__ x,
                         const unsigned int* __restrict__ sample_idx,
                         unsigned int samples,
                         unsigned int above,
                         unsigned int* threshold) {
    __shared__ unsigned int keys[CODEC_MAX_SAMPLE];
    const unsigned int s = samples < CODEC_MAX_SAMPLE ? samples : CODEC_MAX_SAMPLE;
    unsigned int padded = 2;
    while (padded < s) {
        padded <<= 1;
    }
    // Padding with 0 sorts below every sample, so the top `above` entries are the samples'.
    for (unsigned int i = threadIdx.x; i < padded; i += blockDim.x) {
        keys[i] = i < s ? (__float_as_uint(x[sample_idx[i]]) & 0x7fffffffu) : 0u;
    }
    codec_bitonic<unsigned int>(keys, padded);
    if (threadIdx.x == 0) {
        const unsigned int a = above == 0u ? 1u : above;
        *threshold = a >= s ? 0u : keys[padded - a];
    }
}

// The sample positions of a block of n (select.rs's `sample_positions`): splitmix64 from a fixed
// seed (the i-th draw's state is (i + 2) times the increment, wrapping), each mapped to [0, n) by
// the high half of a 64 x 64-bit product; out[i] for i < count. Made here, so that no position
// crosses PCIe. Any 1-D grid, a thread per position, grid stride.
extern "C" __global__ void codec_topk_samples(unsigned long long n,
                                              unsigned int* out,
                                              unsigned int count) {
    const unsigned int stride = gridDim.x * blockDim.x;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        unsigned long long z = 0x9E3779B97F4A7C15ull * ((unsigned long long)i + 2ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[i] = (unsigned int)__umul64hi(z, n);
    }
}

// Candidates: every entry of x whose magnitude bits are >= *threshold is appended as
// (index, value) at a slot taken from *count (warp-aggregated atomics; the order is not
// deterministic). Every candidate bumps *count (the caller zeroes it); only the first `capacity`
// are written, so *count > capacity tells the caller to grow the buffers. n <= 2^32.
extern "C" __global__ void codec_topk_compact(const float* __restrict__ x,
                                              unsigned long long n,
                                              const unsigned int* __restrict__ threshold,
                                              unsigned int* out_idx,
                                              float* out_val,
                                              unsigned int* count,
                                              unsigned int capacity) {
    const unsigned int t = *threshold;
    const unsigned int lane = threadIdx.x & (CODEC_WARP - 1);
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long first = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    // The same number of rounds for every lane, so that the ballot has the full warp.
    const unsigned long long rounds = (n + stride - 1) / stride;
    for (unsigned long long r = 0; r < rounds; ++r) {
        const unsigned long long i = first + r * stride;
        const float v = i < n ? x[i] : 0.0f;
        const bool take = i < n && (__float_as_uint(v) & 0x7fffffffu) >= t;
        const unsigned int mask = __ballot_sync(CODEC_FULL, take);
        if (mask == 0u) {
            continue;
        }
        unsigned int base = 0;
        if (lane == 0) {
            base = atomicAdd(count, (unsigned int)__popc(mask));
        }
        base = __shfl_sync(CODEC_FULL, base, 0);
        if (take) {
            const unsigned int slot = base + (unsigned int)__popc(mask & ((1u << lane) - 1u));
            if (slot < capacity) {
                out_idx[slot] = (unsigned int)i;
                out_val[slot] = v;
            }
        }
    }
}

// Error feedback, step 1: residual += delta.
extern "C" __global__ void codec_ef_accumulate(float* residual,
                                               const float* __restrict__ delta,
                                               unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        residual[i] += delta[i];
    }
}

// Error feedback, step 3: for each of the `count` sent entries j, the index i = idx[j] (or j when
// idx is null: every entry sent) gets residual[i] -= sent[sent_by_index ? i : j], where sent holds
// the decoded (quantised) values; a non-finite residual entry becomes 0 (feedback.rs `take`).
// Entries not sent keep their residual. Indices must be distinct.
extern "C" __global__ void codec_ef_subtract(float* residual,
                                             const unsigned int* __restrict__ idx,
                                             const float* __restrict__ sent,
                                             int sent_by_index,
                                             unsigned long long count) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         j < count; j += stride) {
        const unsigned long long i = idx != 0 ? (unsigned long long)idx[j] : j;
        const float r = residual[i];
        const float q = sent[sent_by_index ? i : j];
        residual[i] = isfinite(r) ? r - q : 0.0f;
    }
}
