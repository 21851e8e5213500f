// How values travel: the device side of ps_proto::codec's value formats (format.rs, quant.rs),
// shared by codecs.cu (f16 packing, top-k) and codec_dense.cu (whole blocks in any lossy format).
//
// f16 (format.rs): round to nearest even, like half::f16::from_f32, except that a FINITE value
// beyond +-65504 saturates to +-65504 instead of becoming infinite; +-inf stays +-inf; NaN stays a
// quiet NaN with its sign and top payload bits (sign | 0x7e00 | mantissa >> 13, as half and F16C).
// f16 -> f32 is exact (NaN: quiet, payload kept, as half::f16::to_f32).
//
// bf16 (format.rs f32_to_bf16): round to nearest even on the bits, a finite value beyond bf16's
// largest (0x7F7F) saturating to it, NaN made quiet (bit 6 of the bf16 set), its sign and top
// payload bits kept; bf16 -> f32 is the bits shifted up.
//
// Block formats (quant.rs): groups of CODEC_GROUP values, each one f32 scale and `bits` bits a
// value. q8, q4, q2: levels L = 2^(bits-1) - 1, scale = max|x| / L, code = round(x / scale)
// (half away from zero) clamped to [-L, L], or 0 when the scale is not a positive finite number;
// a value comes back as code * scale. sign: scale = the group's mean magnitude, summed in f64 in
// order and divided in f64, then rounded to f32; code 1 for x < 0 (so -0.0 and NaN are 0); a
// value comes back as -scale or +scale. A group holding a non-finite value has a NaN scale
// (0x7fc00000, Rust's f32::NAN). Codes are two's complement, `bits` wide, packed from the least
// significant bit.
//
// Error feedback's subtraction (feedback.rs `take`): residual r minus what the receiver decodes q,
// or 0 where either is not finite.
//
// CODEC_HOST_SHIMS is defined when worker-gpu/tests/kernels_on_host/ runs this header on the
// CPU: the f16 conversion is then the host compiler's _Float16 (round to nearest even, as PTX's
// cvt.rn). NVRTC never defines it.
//
// A shared header, not a kernel (see philox.cuh): device functions only.

#define CODEC_F16_MAX 65504.0f
#define CODEC_BF16_MAX_BITS 0x7f7f0000u
#define CODEC_GROUP 128
#define CODEC_NAN_BITS 0x7fc00000u

__device__ __forceinline__ unsigned short codec_f32_to_f16_bits(float x) {
    const unsigned int bits = __float_as_uint(x);
    const unsigned int mag = bits & 0x7fffffffu;
    if (mag > 0x7f800000u) {
        // NaN: quiet, sign and top payload bits kept.
        return (unsigned short)(((bits >> 16) & 0x8000u) | 0x7e00u | ((bits >> 13) & 0x3ffu));
    }
    if (mag < 0x7f800000u) {
        x = fminf(fmaxf(x, -CODEC_F16_MAX), CODEC_F16_MAX);
    }
#ifdef CODEC_HOST_SHIMS
    const _Float16 h16 = (_Float16)x;
    unsigned short h;
    memcpy(&h, &h16, 2);
#else
    unsigned short h;
    // The hardware conversion rounds to nearest even, subnormals included (no ftz on cvt).
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
#endif
    return h;
}

__device__ __forceinline__ float codec_f16_bits_to_f32(unsigned short h) {
    const unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    const unsigned int exp = ((unsigned int)h >> 10) & 0x1fu;
    const unsigned int man = (unsigned int)h & 0x3ffu;
    if (exp == 0x1fu) {
        // Infinity, or NaN made quiet with its payload.
        return __uint_as_float(sign | 0x7f800000u | (man != 0u ? 0x00400000u : 0u) | (man << 13));
    }
    if (exp == 0u) {
        // Zero or subnormal: man * 2^-24, exact in f32.
        const float v = (float)man * __uint_as_float(0x33800000u);
        return sign != 0u ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

__device__ __forceinline__ unsigned short codec_f32_to_bf16_bits(float v) {
    const float max = __uint_as_float(CODEC_BF16_MAX_BITS);
    const unsigned int mag = __float_as_uint(v) & 0x7fffffffu;
    if (mag > 0x7f800000u) {
        return (unsigned short)((__float_as_uint(v) >> 16) | 0x40u);
    }
    if (mag < 0x7f800000u) {
        v = fminf(fmaxf(v, -max), max);
    }
    const unsigned int x = __float_as_uint(v);
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float codec_bf16_bits_to_f32(unsigned short b) {
    return __uint_as_float((unsigned int)b << 16);
}

// What error feedback keeps of residual r after the receiver decodes q.
__device__ __forceinline__ float codec_take(float r, float q) {
    return isfinite(r) && isfinite(q) ? __fsub_rn(r, q) : 0.0f;
}

// A block format's code of v under its group's scale (levels = L; sign when `sign`).
__device__ __forceinline__ int codec_quant_code(float v, float scale, int levels, bool sign) {
    if (sign) {
        return v < 0.0f ? 1 : 0;
    }
    if (scale > 0.0f && isfinite(scale)) {
        float c = roundf(__fdiv_rn(v, scale));
        c = fminf(fmaxf(c, (float)-levels), (float)levels);
        return (int)c;
    }
    return 0;
}

// The value a receiver decodes from a code.
__device__ __forceinline__ float codec_quant_value(int code, float scale, bool sign) {
    if (sign) {
        return code != 0 ? -scale : scale;
    }
    return __fmul_rn((float)code, scale);
}
