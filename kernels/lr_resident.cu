// Sparse logistic regression on device-resident rows (ps_apps::lr::LrResident).
//
// The worker's training rows are uploaded once, in CSR form with every key replaced by its local
// id (its position in the sorted list of the worker's distinct keys): row_ptr (rows + 1 offsets),
// cols (local id of every nonzero), vals, labels (0 or 1 as f32). A clock names its batch by row
// indices, or by its visit (positions of the epoch's keyed permutation, visit.cuh), whose row
// indices lr_visit_rows makes here; it brings the weights of its keys; weights and gradient are
// dense over the local ids (`features` floats), so no key is looked up on the device:
//
//   lr_visit_rows     batch[i] = visit_at(n, keys, from + i)   (the batch's rows, i < count)
//   lr_slots_*        the batch's local ids, sorted (slots.cuh): with a visit, the slots of the
//                     batch keys are made here too, and only the keys' weights come in
//   lr_scatter        dense[slot[i]] = values[i]              (the batch keys' pulled weights)
//   lr_gradient_rows  grad[c] += (sigmoid(z) - y) x_c * inv_n for every nonzero of the rows
//                     batch[0..n), z = sum_c weights[c] x_c; loss_sum += the summed loss
//                     (grad zeroed by the caller; only the batch keys' ids are read and written)
//   lr_gather         out[i] = dense[slot[i]]                 (the batch keys' gradient)
//
// lr_gradient_rows is lr_grad.cu's lr_gradient with the row taken from `batch` and the columns
// already dense ids: one warp per row (grid stride), the lanes stride over the row's nonzeros
// for the margin (warp-shuffle sum), then add their terms with atomicAdd; sigmoid and softplus
// in the overflow-free forms of FastLr, in f32 (lr.cuh). Deviations from the CPU oracle: as
// lr_grad.cu (f32, each term scaled by 1/n before it is added, atomics in no fixed order).
//
// Launch: any grid, blockDim.x a multiple of 32 (lr_gradient_rows); no shared memory.

#define LRR_WARP 32

extern "C" __global__ void lr_visit_rows(unsigned int k0,
                                         unsigned int k1,
                                         unsigned int k2,
                                         unsigned int k3,
                                         unsigned int n,
                                         unsigned int from,
                                         unsigned int count,
                                         unsigned int* __restrict__ batch) {
    visit_fill(k0, k1, k2, k3, n, from, count, batch);
}

extern "C" __global__ void lr_slots_mark(const unsigned int* __restrict__ row_ptr,
                                         const unsigned int* __restrict__ cols,
                                         const unsigned int* __restrict__ batch,
                                         unsigned int n,
                                         unsigned char* flags) {
    slots_mark(row_ptr, cols, batch, n, flags);
}

extern "C" __global__ void lr_slots_count(const unsigned char* __restrict__ flags,
                                          unsigned int f,
                                          unsigned int chunk,
                                          unsigned int chunks,
                                          unsigned int* __restrict__ counts,
                                          unsigned long long* __restrict__ sums) {
    slots_count(flags, f, chunk, chunks, counts, sums);
}

extern "C" __global__ void lr_slots_scan(unsigned int* counts,
                                         unsigned long long* sums,
                                         unsigned int chunks) {
    slots_scan(counts, sums, chunks);
}

extern "C" __global__ void lr_slots_write(const unsigned char* __restrict__ flags,
                                          unsigned int f,
                                          unsigned int chunk,
                                          unsigned int chunks,
                                          const unsigned int* __restrict__ offsets,
                                          unsigned int* __restrict__ slots) {
    slots_write(flags, f, chunk, chunks, offsets, slots);
}

extern "C" __global__ void lr_scatter(const unsigned int* __restrict__ slot,
                                      const float* __restrict__ values,
                                      unsigned int n,
                                      float* dense) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        dense[slot[i]] = values[i];
    }
}

extern "C" __global__ void lr_gather(const float* __restrict__ dense,
                                     const unsigned int* __restrict__ slot,
                                     unsigned int n,
                                     float* out) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        out[i] = dense[slot[i]];
    }
}

extern "C" __global__ void lr_gradient_rows(const unsigned int* __restrict__ row_ptr,
                                            const unsigned int* __restrict__ cols,
                                            const float* __restrict__ vals,
                                            const float* __restrict__ labels,
                                            const unsigned int* __restrict__ batch,
                                            unsigned int n,
                                            const float* __restrict__ weights,
                                            float* grad,
                                            float inv_n,
                                            double* loss_sum) {
    const unsigned int lane = threadIdx.x & (LRR_WARP - 1);
    const unsigned long long warp =
        ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / LRR_WARP;
    const unsigned long long num_warps = ((unsigned long long)gridDim.x * blockDim.x) / LRR_WARP;
    double warp_loss = 0.0;

    for (unsigned long long b = warp; b < n; b += num_warps) {
        const unsigned int r = batch[b];
        const float row_loss = lr_row_step<false>(cols, vals, row_ptr[r], row_ptr[r + 1], lane, 0u,
                                                  labels[r], weights, grad, inv_n);
        if (lane == 0) {
            warp_loss += (double)row_loss;
        }
    }
    if (lane == 0 && warp_loss != 0.0) {
        atomicAdd(loss_sum, warp_loss);
    }
}
