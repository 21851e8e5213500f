// One SGD step of an MF rating by a whole warp, and the loads of its rows: shared by the kernels
// of mf_sgd.cu (the model, the layouts and the f16 storage are described there) and the window
// of mf_window.cuh.
//
// A shared header, not a kernel (see philox.cuh): device functions only, and plain C++ apart from
// CUDA's qualifiers and warp intrinsics, so that worker-gpu/tests/kernels_on_host/headers.rs can run it on
// the CPU with one lane (MF_WARP 1; the warp sum is then the lane's own partial sum).

#ifndef MF_WARP
#define MF_WARP 32
#endif
// Rank elements each lane keeps in registers between the dot product and the update
// (rank <= 32 * MF_CACHE stays in registers; beyond that the rest is read again from memory).
#ifndef MF_CACHE
#define MF_CACHE 4
#endif

__device__ __forceinline__ float mf_warp_sum(float x) {
#pragma unroll
    for (int off = MF_WARP / 2; off > 0; off >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, off);
    }
    return x;
}

// How a table of T holds a factor: `f32` gives a stored value as f32, `stored` an f32 as the
// table stores it. f32 here; f16 bits (unsigned short) in mf_sgd.cu, whose PTX a host compiler
// cannot take.
template <typename T>
struct MfStore;

template <>
struct MfStore<float> {
    __device__ static float f32(float x) {
        return x;
    }
    __device__ static float stored(float x) {
        return x;
    }
};

template <typename T>
__device__ __forceinline__ float mf_f32(T x) {
    return MfStore<T>::f32(x);
}

template <typename T>
__device__ __forceinline__ T mf_stored(float x) {
    return MfStore<T>::stored(x);
}

template <typename T>
__device__ __forceinline__ void mf_put(T* p, float x) {
    *p = mf_stored<T>(x);
}

// Loads a row element as f32: through L2 only (`COHERENT`, for item rows other warps may have
// written since this SM last cached them: the wave kernel) or through the default path.
template <bool COHERENT, typename T>
__device__ __forceinline__ float mf_item(const T* p) {
    return mf_f32(COHERENT ? __ldcg(p) : *p);
}

// A row's first MF_WARP * MF_CACHE elements, as this lane holds them (zeros past the rank), and
// its bias (0 for the plain model).
template <bool COHERENT, typename T>
__device__ __forceinline__ void mf_load_row(const T* row,
                                            unsigned int lane,
                                            unsigned int rank,
                                            int biased,
                                            float* c,
                                            float& bias) {
#pragma unroll
    for (int j = 0; j < MF_CACHE; ++j) {
        const unsigned int k = lane + MF_WARP * j;
        c[j] = k < rank ? mf_item<COHERENT>(row + k) : 0.0f;
    }
    bias = biased ? mf_item<COHERENT>(row + rank) : 0.0f;
}

// x + lr * (e * other - reg * x), the factor update, and b + lr * (e - reg * b), the bias
// update, with their roundings written out (one product, then fused multiply-adds) instead of
// left to the compiler's contraction: every kernel that inlines mf_apply (the plain wave loop,
// the windows, f32 and f16 tables) then rounds a step alike, which the bit-for-bit comparisons
// of those kernels (conformance `mf_waves`, the host grid tests) rely on.
__device__ __forceinline__ float mf_factor_update(float x,
                                                  float other,
                                                  float e,
                                                  float lr,
                                                  float reg) {
    return fmaf(lr, fmaf(e, other, __fmul_rn(-reg, x)), x);
}

__device__ __forceinline__ float mf_bias_update(float b, float e, float lr, float reg) {
    return fmaf(lr, fmaf(-reg, b, e), b);
}

// The SGD step of rating `value` on user row `u` and item row `v`, whose first
// MF_WARP * MF_CACHE elements this lane holds in `uc`, `vc` (zeros past the rank) and whose biases
// are `bu`, `bv`: by a whole warp (every lane calls it with the same rows). Elements past
// MF_WARP * MF_CACHE (rank > 128) are read at their use. Returns the error measured before the
// update; on return this rating's writes are visible to every lane of the warp, and `su`, `sv`,
// `sbu`, `sbv` hold what this lane wrote of the first MF_WARP * MF_CACHE elements and the biases
// (what a load of them would now give; every lane gets the biases; zeros past the rank).
template <bool COHERENT, typename T>
__device__ __forceinline__ float mf_apply(T* u,
                                          T* v,
                                          const float* uc,
                                          const float* vc,
                                          float bu,
                                          float bv,
                                          float value,
                                          unsigned int lane,
                                          unsigned int rank,
                                          int biased,
                                          float mean,
                                          float lr,
                                          float reg,
                                          T* su,
                                          T* sv,
                                          T& sbu,
                                          T& sbv) {
    float part = 0.0f;
#pragma unroll
    for (int j = 0; j < MF_CACHE; ++j) {
        part = fmaf(uc[j], vc[j], part);
    }
    for (unsigned int k = lane + MF_WARP * MF_CACHE; k < rank; k += MF_WARP) {
        part = fmaf(mf_f32(u[k]), mf_item<COHERENT>(v + k), part);
    }
    const float dot = mf_warp_sum(part);
    const float e = value - (biased ? mean + bu + bv + dot : dot);

    // Every lane has finished reading its u_k, v_k above before it writes them below, and
    // no two lanes share an index k: the update uses the old values.
#pragma unroll
    for (int j = 0; j < MF_CACHE; ++j) {
        const unsigned int k = lane + MF_WARP * j;
        su[j] = mf_stored<T>(0.0f);
        sv[j] = mf_stored<T>(0.0f);
        if (k < rank) {
            const float u0 = uc[j];
            const float v0 = vc[j];
            su[j] = mf_stored<T>(mf_factor_update(u0, v0, e, lr, reg));
            sv[j] = mf_stored<T>(mf_factor_update(v0, u0, e, lr, reg));
            u[k] = su[j];
            v[k] = sv[j];
        }
    }
    for (unsigned int k = lane + MF_WARP * MF_CACHE; k < rank; k += MF_WARP) {
        const float u0 = mf_f32(u[k]);
        const float v0 = mf_item<COHERENT>(v + k);
        mf_put(&u[k], mf_factor_update(u0, v0, e, lr, reg));
        mf_put(&v[k], mf_factor_update(v0, u0, e, lr, reg));
    }
    sbu = mf_stored<T>(0.0f);
    sbv = mf_stored<T>(0.0f);
    if (biased) {
        // Every lane has the same biases and error, so the same new biases.
        sbu = mf_stored<T>(mf_bias_update(bu, e, lr, reg));
        sbv = mf_stored<T>(mf_bias_update(bv, e, lr, reg));
        // Every lane has read the biases (before the warp sum); order those reads before lane
        // 0's write in memory too, not only in the source.
        __syncwarp();
        if (lane == 0) {
            u[rank] = sbu;
            v[rank] = sbv;
        }
    }
    // The next rating of this warp may share a row with this one: make this rating's
    // writes visible to the other lanes first.
    __syncwarp();
    return e;
}

// One SGD step of rating `value` on user row `u` and item row `v`, by a whole warp (every lane
// calls it with the same arguments); returns the squared error measured before the update.
template <bool COHERENT>
__device__ __forceinline__ double mf_step(float* u,
                                          float* v,
                                          float value,
                                          unsigned int lane,
                                          unsigned int rank,
                                          int biased,
                                          float mean,
                                          float lr,
                                          float reg) {
    float uc[MF_CACHE], vc[MF_CACHE], bu, bv;
    mf_load_row<false>(u, lane, rank, biased, uc, bu);
    mf_load_row<COHERENT>(v, lane, rank, biased, vc, bv);
    float su[MF_CACHE], sv[MF_CACHE], sbu, sbv; // unused here
    const float e = mf_apply<COHERENT>(u, v, uc, vc, bu, bv, value, lane, rank, biased, mean, lr,
                                       reg, su, sv, sbu, sbv);
    return (double)e * (double)e;
}
