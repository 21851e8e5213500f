// Whole blocks of a delta in a lossy value format, with error feedback, on the device: what
// ps_proto::codec::ErrorFeedback::compress does with a chain that selects nothing (`f16`,
// `bf16`, `q8`, `q4`, `q2`, `sign`), so that only the payload leaves the device. The host oracle
// is ps_apps::app::device_codec::ResidualKeeper; the value formats are values.cuh's.
//
// A block is `rows` rows of `width` values, one residual per block kept on the device:
//
//   codec_dense_accumulate  residual += delta: the worker library keeps the residual of the
//                           rows that hold some only, and its error feedback adds the values to a
//                           zero residual; the residual here starts at +0.0 and is never -0.0
//                           (take never makes it), so this adds the same (a -0.0 becomes +0.0)
//   codec_dense_add_to      dst += residual in the rows whose residual holds anything (a read of
//                           the model shows what was not sent yet, as the library's reads do)
//   codec_dense_subtract    a -= b (a delta: the rows after a clock less the rows before it)
//   codec_dense_halves      f16 or bf16 (bf16 != 0): out[i] = the bits of residual[i], and
//                           residual[i] = take(residual[i], the value decoded from them)
//   codec_dense_groups      q8, q4, q2 (bits 8, 4, 2) or sign (sign != 0, bits 1), n values in
//                           groups of CODEC_GROUP: words[g] = the f32 bits of group g's scale for
//                           g < groups = ceil(n / CODEC_GROUP), then from word `groups` on the
//                           codes, packed as quant.rs packs them (a group's codes fill
//                           CODEC_GROUP * bits / 32 whole words, the last group's as many as it
//                           needs, the bits past its last code zero), so that the payload is the
//                           first 4 * groups + ceil(n * bits / 8) bytes of the words; and
//                           residual[i] = take(residual[i], code * scale or +-scale)
//
// Exactness: every operation is the oracle's, rounded alone (__fadd_rn, __fdiv_rn, __fmul_rn;
// a sign scale's sum in f64, in order, by one lane; a levels scale's maximum by a warp, which no
// order changes), so payloads and residuals equal the host's bit for bit for finite values. A
// NaN delta is the exception: the device's addition gives the canonical NaN where the host's
// keeps the payload bits, so an f16 or bf16 NaN's bits may differ (it decodes to NaN either
// way); the block formats send a group holding one with the same fixed NaN scale.
//
// Launch: any 1-D grid, blockDim.x a multiple of 32; codec_dense_add_to and codec_dense_groups
// take a warp per row (group), grid stride, every lane of a warp through the same iterations;
// the others a thread per value, grid stride.

#define CD_WARP 32
#define CD_FULL 0xffffffffu

__device__ __forceinline__ unsigned long long cd_warp() {
    return ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / CD_WARP;
}

__device__ __forceinline__ unsigned long long cd_warps() {
    return ((unsigned long long)gridDim.x * blockDim.x) / CD_WARP;
}

// Whether the row at `row` (width values) holds some residual.
__device__ __forceinline__ bool cd_held(const float* row, unsigned int width, unsigned int lane) {
    bool any = false;
    for (unsigned int j = lane; j < width; j += CD_WARP) {
        any |= row[j] != 0.0f;
    }
    return __ballot_sync(CD_FULL, any) != 0u;
}

extern "C" __global__ void codec_dense_accumulate(float* residual,
                                                  const float* __restrict__ delta,
                                                  unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        residual[i] = __fadd_rn(delta[i], residual[i]);
    }
}

extern "C" __global__ void codec_dense_add_to(float* dst,
                                              const float* __restrict__ residual,
                                              unsigned int width,
                                              unsigned long long rows) {
    const unsigned int lane = threadIdx.x & (CD_WARP - 1);
    for (unsigned long long r = cd_warp(); r < rows; r += cd_warps()) {
        const float* row = residual + r * width;
        if (cd_held(row, width, lane)) {
            for (unsigned int j = lane; j < width; j += CD_WARP) {
                dst[r * width + j] = __fadd_rn(dst[r * width + j], row[j]);
            }
        }
    }
}

extern "C" __global__ void codec_dense_halves(float* residual,
                                              unsigned short* out,
                                              int bf16,
                                              unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const float r = residual[i];
        unsigned short h;
        float q;
        if (bf16 != 0) {
            h = codec_f32_to_bf16_bits(r);
            q = codec_bf16_bits_to_f32(h);
        } else {
            h = codec_f32_to_f16_bits(r);
            q = codec_f16_bits_to_f32(h);
        }
        out[i] = h;
        residual[i] = codec_take(r, q);
    }
}

extern "C" __global__ void codec_dense_groups(float* residual,
                                              unsigned int* words,
                                              unsigned int bits,
                                              int sign,
                                              unsigned long long n) {
    const unsigned int lane = threadIdx.x & (CD_WARP - 1);
    const bool is_sign = sign != 0;
    const int levels = is_sign ? 1 : (1 << (bits - 1)) - 1;
    const unsigned long long groups = (n + CODEC_GROUP - 1) / CODEC_GROUP;
    const unsigned int per_word = 32u / bits;
    const unsigned int mask = bits == 32u ? 0xffffffffu : (1u << bits) - 1u;
    for (unsigned long long g = cd_warp(); g < groups; g += cd_warps()) {
        const unsigned long long lo = g * CODEC_GROUP;
        const unsigned int m =
            n - lo < (unsigned long long)CODEC_GROUP ? (unsigned int)(n - lo) : CODEC_GROUP;
        float* x = residual + lo;
        // Each lane's values: lane, lane + 32, lane + 64, lane + 96.
        float v[CODEC_GROUP / CD_WARP];
        bool finite = true;
        float top = 0.0f;
        for (unsigned int t = 0; t < CODEC_GROUP / CD_WARP; ++t) {
            const unsigned int j = lane + t * CD_WARP;
            v[t] = j < m ? x[j] : 0.0f;
            finite &= isfinite(v[t]);
            top = fmaxf(top, fabsf(v[t]));
        }
        const bool all_finite = __ballot_sync(CD_FULL, !finite) == 0u;
        float scale;
        if (!all_finite) {
            scale = __uint_as_float(CODEC_NAN_BITS);
        } else if (is_sign) {
            double sum = 0.0;
            if (lane == 0) {
                for (unsigned int j = 0; j < m; ++j) {
                    sum = __dadd_rn(sum, (double)fabsf(x[j]));
                }
            }
            sum = __shfl_sync(CD_FULL, sum, 0);
            scale = __double2float_rn(__ddiv_rn(sum, (double)m));
        } else {
            for (unsigned int off = CD_WARP / 2; off > 0; off >>= 1) {
                top = fmaxf(top, __shfl_xor_sync(CD_FULL, top, off));
            }
            scale = __fdiv_rn(top, (float)levels);
        }
        if (lane == 0) {
            words[g] = all_finite ? __float_as_uint(scale) : CODEC_NAN_BITS;
        }
        // The codes: word w of the group holds values w * per_word .. (w + 1) * per_word.
        const unsigned int used = (m * bits + 31u) / 32u;
        for (unsigned int w = lane; w < used; w += CD_WARP) {
            unsigned int word = 0u;
            for (unsigned int i = 0; i < per_word; ++i) {
                const unsigned int j = w * per_word + i;
                if (j < m) {
                    const int code = codec_quant_code(x[j], scale, levels, is_sign);
                    word |= ((unsigned int)code & mask) << (i * bits);
                }
            }
            words[groups + g * (CODEC_GROUP / 32u) * bits + w] = word;
        }
        // Every lane has read what it codes before any residual changes.
        __syncwarp();
        for (unsigned int t = 0; t < CODEC_GROUP / CD_WARP; ++t) {
            const unsigned int j = lane + t * CD_WARP;
            if (j < m) {
                const int code = codec_quant_code(v[t], scale, levels, is_sign);
                x[j] = codec_take(v[t], codec_quant_value(code, scale, is_sign));
            }
        }
    }
}

extern "C" __global__ void codec_dense_subtract(float* a,
                                                const float* __restrict__ b,
                                                unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        a[i] = __fsub_rn(a[i], b[i]);
    }
}
