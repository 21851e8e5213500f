// The logistic link of the LR kernels (lr_grad.cu, lr_resident.cu): for a row's margin z and
// label y (0 or 1), the probability sigmoid(z), returned, and the row's loss log(1 + e^z) - y z
// into *loss, in the overflow-free forms of FastLr (e = e^-|z| <= 1), in f32.

__device__ __forceinline__ float lr_link(float z, float y, float* loss) {
    const float ez = expf(-fabsf(z));
    *loss = fmaxf(z, 0.0f) - y * z + log1pf(ez);
    return z >= 0.0f ? 1.0f / (1.0f + ez) : ez / (1.0f + ez);
}
