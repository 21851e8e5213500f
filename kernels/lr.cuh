// What the LR kernels (lr_grad.cu, lr_resident.cu) share: the logistic link and one row's step.
//
// lr_link: for a row's margin z and label y (0 or 1), the probability sigmoid(z), returned, and
// the row's loss log(1 + e^z) - y z into *loss, in the overflow-free forms of FastLr
// (e = e^-|z| <= 1), in f32.

__device__ __forceinline__ float lr_link(float z, float y, float* loss) {
    const float ez = expf(-fabsf(z));
    *loss = fmaxf(z, 0.0f) - y * z + log1pf(ez);
    return z >= 0.0f ? 1.0f / (1.0f + ez) : ez / (1.0f + ez);
}

// One CSR row by a whole warp (every lane calls it with the same row): the lanes stride over its
// nonzeros [begin, end) for the margin z = sum weights[cols[e]] vals[e] (a warp-shuffle sum),
// then add (sigmoid(z) - y) vals[e] * inv_n to grad[cols[e]] atomically. With SKIP, a column
// equal to `skip` counts as weight 0 and gets no gradient (lr_grad.cu's keys outside the call).
// Returns the row's loss (every lane).
template <bool SKIP>
__device__ __forceinline__ float lr_row_step(const unsigned int* __restrict__ cols,
                                             const float* __restrict__ vals,
                                             unsigned int begin,
                                             unsigned int end,
                                             unsigned int lane,
                                             unsigned int skip,
                                             float y,
                                             const float* __restrict__ weights,
                                             float* grad,
                                             float inv_n) {
    float part = 0.0f;
    for (unsigned int e = begin + lane; e < end; e += 32u) {
        const unsigned int c = cols[e];
        if (!SKIP || c != skip) {
            part = fmaf(weights[c], vals[e], part);
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        part += __shfl_xor_sync(0xffffffffu, part, off);
    }
    float row_loss;
    const float p = lr_link(part, y, &row_loss);
    const float g = (p - y) * inv_n;
    for (unsigned int e = begin + lane; e < end; e += 32u) {
        const unsigned int c = cols[e];
        if (!SKIP || c != skip) {
            atomicAdd(grad + c, g * vals[e]);
        }
    }
    return row_loss;
}
