// Sparse logistic regression: the gradient of the mean logistic loss of a mini-batch.
//
// Serves ps_apps::lr::LrCompute::gradient. For a row with label y in {0, 1} and features x, the
// margin is z = sum_k w_k x_k, the loss log(1 + e^z) - y z, and the row adds
// (sigmoid(z) - y) x_k / n to the gradient of every feature k (n = rows in the batch; a key that
// occurs twice in a row contributes twice).
//
// Layout: the batch in CSR form with its keys already mapped to dense slots (the index of the key
// in the batch's sorted key list, i.e. the position in `weights` and `grad`):
//   row_ptr  rows + 1 offsets into cols / vals
//   cols     slot of every nonzero; LR_MISS (0xffffffff) for a key outside the key list, which
//            counts as weight 0 and receives no gradient (as in the CPU engines)
//   vals     value of every nonzero
//   labels   y of every row (0 or 1, as f32)
//   weights  the (possibly stale) weight of every slot
//   grad     += (sigmoid(z) - y) x * inv_n per nonzero, atomically (the caller zeroes it)
//   loss_sum += the summed (not mean) loss of the batch, in double (the caller zeroes it)
//
// Parallelism: one warp per row (rows in a grid stride): the lanes stride over the row's
// nonzeros for the margin (warp-shuffle sum), then add their nonzeros' terms to grad with
// atomicAdd. The sigmoid and softplus are the overflow-free forms of FastLr, in f32 (lr.cuh).
//
// Deviations from the CPU oracle (CpuLr, f64): f32 arithmetic; each contribution is scaled by
// 1/n before it is added (not the sum afterwards), and atomics add in no fixed order, so the
// result is not bitwise reproducible. It agrees with CpuLr within ps_apps::lr::FAST_REL_TOL.
//
// Launch: any grid, blockDim.x a multiple of 32; no shared memory.

#define LR_WARP 32
#define LR_MISS 0xffffffffu

extern "C" __global__ void lr_gradient(const unsigned int* __restrict__ row_ptr,
                                       const unsigned int* __restrict__ cols,
                                       const float* __restrict__ vals,
                                       const float* __restrict__ labels,
                                       unsigned int rows,
                                       const float* __restrict__ weights,
                                       float* grad,
                                       float inv_n,
                                       double* loss_sum) {
    const unsigned int lane = threadIdx.x & (LR_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / LR_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / LR_WARP;
    double warp_loss = 0.0;

    for (unsigned long long r = warp; r < rows; r += num_warps) {
        const float row_loss = lr_row_step<true>(cols, vals, row_ptr[r], row_ptr[r + 1], lane,
                                                  LR_MISS, labels[r], weights, grad, inv_n);
        if (lane == 0) {
            warp_loss += (double)row_loss;
        }
    }
    if (lane == 0 && warp_loss != 0.0) {
        atomicAdd(loss_sum, warp_loss);
    }
}
