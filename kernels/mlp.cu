// MLP: the dense kernels of one forward + backward pass.
//
// Serves ps_apps::mlp::MlpCompute. Layer l's table is row-major fan_out x (fan_in + 1), the bias
// in the last column; hidden layers are affine + ReLU, the output layer affine + softmax, and the
// loss is softmax cross-entropy averaged over the batch (gradients of the MEAN loss). All
// matrices are row-major f32 with explicit leading dimensions, so the kernels read the
// parameter table in place (ld = fan_in + 1) and write the gradient table in place.
//
// One layer (X: b x in, W: out x (in + 1), ld = in + 1; Z, dZ: b x out):
//   forward    Z  = act(X W[:, :in]^T + bias)   mlp_sgemm(m=b, n=out, k=in, A=X, B=W trans_b=1,
//                                                bias=W + in, bias_stride=in + 1, relu)
//   loss       dZ = (softmax(Z) - onehot(y)) / b mlp_softmax_xent (output layer)
//   weights    dW[:, :in] = dZ^T X               mlp_sgemm(m=out, n=in, k=b, A=dZ trans_a=1, B=X,
//                                                C=grad, ldc=in + 1)
//   bias       dW[:, in] = column sums of dZ     mlp_bias_grad(out=grad + in, out_stride=in + 1)
//   input      dX = dZ W[:, :in]                 mlp_sgemm(m=b, n=in, k=out, A=dZ, B=W, ldb=in + 1)
//              dX *= (X > 0)                     mlp_relu_backward (X = previous layer's output)
//
// Deviations from the CPU oracle (CpuMlp, f64 accumulation): sums are in f32 and in a different
// order; the results agree to f32 rounding, not bit for bit. ReLU'(0) = 0 and NaN never wins the
// arg-max, as in the oracle.

#define MLP_TM 64 /* rows of C per block */
#define MLP_TN 64 /* columns of C per block */
#define MLP_TK 16 /* depth of a shared-memory tile */
#define MLP_THREADS 256 /* 16 x 16 threads, 4 x 4 outputs each */
#define MLP_WARP 32
#define MLP_FULL 0xffffffffu
#define MLP_NEG_INF __int_as_float(0xff800000)

// C = act(alpha * op(A) op(B) + beta * C + bias), with op(A) m x k and op(B) k x n:
//   op(A)(i, p) = trans_a ? a[p * lda + i] : a[i * lda + p]
//   op(B)(p, j) = trans_b ? b[j * ldb + p] : b[p * ldb + j]
//   bias (may be null) adds bias[j * bias_stride] to column j; relu != 0 applies max(., 0).
// beta == 0 never reads C (so C may hold garbage or NaN).
// Launch: block (16, 16), grid (ceil(n / 64), ceil(m / 64)); 8.5 KB static shared memory.
extern "C" __global__ void __launch_bounds__(MLP_THREADS)
    mlp_sgemm(int m, int n, int k, float alpha,
              const float* __restrict__ a, int lda, int trans_a,
              const float* __restrict__ b, int ldb, int trans_b,
              float beta, float* c, int ldc,
              const float* __restrict__ bias, int bias_stride, int relu) {
    // +1 column: the transposed tile stores are free of bank conflicts (2-way at most).
    __shared__ float as[MLP_TK][MLP_TM + 1];
    __shared__ float bs[MLP_TK][MLP_TN + 1];

    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int tid = ty * 16 + tx;
    const int i0 = blockIdx.y * MLP_TM;
    const int j0 = blockIdx.x * MLP_TN;

    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            acc[r][s] = 0.0f;
        }
    }

    for (int p0 = 0; p0 < k; p0 += MLP_TK) {
        // Load the A tile (64 x 16) and the B tile (16 x 64), four elements per thread each,
        // walking memory in its contiguous direction so that the loads coalesce.
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = tid + MLP_THREADS * r;
            int ii, pp;
            if (trans_a) {
                ii = e % MLP_TM;
                pp = e / MLP_TM;
            } else {
                pp = e % MLP_TK;
                ii = e / MLP_TK;
            }
            const int gi = i0 + ii;
            const int gp = p0 + pp;
            float v = 0.0f;
            if (gi < m && gp < k) {
                v = trans_a ? a[(size_t)gp * lda + gi] : a[(size_t)gi * lda + gp];
            }
            as[pp][ii] = v;
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = tid + MLP_THREADS * r;
            int jj, pp;
            if (trans_b) {
                pp = e % MLP_TK;
                jj = e / MLP_TK;
            } else {
                jj = e % MLP_TN;
                pp = e / MLP_TN;
            }
            const int gj = j0 + jj;
            const int gp = p0 + pp;
            float v = 0.0f;
            if (gj < n && gp < k) {
                v = trans_b ? b[(size_t)gj * ldb + gp] : b[(size_t)gp * ldb + gj];
            }
            bs[pp][jj] = v;
        }
        __syncthreads();

#pragma unroll
        for (int pp = 0; pp < MLP_TK; ++pp) {
            float ar[4];
            float br[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                ar[r] = as[pp][ty + 16 * r];
                br[r] = bs[pp][tx + 16 * r];
            }
#pragma unroll
            for (int r = 0; r < 4; ++r) {
#pragma unroll
                for (int s = 0; s < 4; ++s) {
                    acc[r][s] = fmaf(ar[r], br[s], acc[r][s]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int i = i0 + ty + 16 * r;
        if (i >= m) {
            continue;
        }
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            const int j = j0 + tx + 16 * s;
            if (j >= n) {
                continue;
            }
            float* out = c + (size_t)i * ldc + j;
            float v = alpha * acc[r][s];
            if (beta != 0.0f) {
                v = fmaf(beta, *out, v);
            }
            if (bias != 0) {
                v += bias[(size_t)j * bias_stride];
            }
            if (relu) {
                v = fmaxf(v, 0.0f);
            }
            *out = v;
        }
    }
}

// Output layer: per sample (row of `logits`, batch x classes, classes <= 256 as labels are u8)
// the stable softmax (max subtracted), the cross-entropy -ln p(label) = m + ln(sum) - z_label,
// and the arg-max (first maximum; NaN never wins; 0 when nothing beats -inf).
//   dlogits (may be null)  batch x classes: (p - onehot(label)) * inv_batch
//   pred (may be null)     arg-max class per sample
//   loss_sum (may be null) += sum of the losses (double, atomic)
//   correct (may be null)  += number of samples whose arg-max equals the label (atomic)
// labels may be null only when dlogits, loss_sum and correct all are (prediction only).
// Launch: one warp per sample in a grid stride; blockDim.x a multiple of 32.
extern "C" __global__ void mlp_softmax_xent(const float* __restrict__ logits,
                                            int batch,
                                            int classes,
                                            const unsigned char* __restrict__ labels,
                                            float* dlogits,
                                            float inv_batch,
                                            unsigned char* pred,
                                            double* loss_sum,
                                            unsigned long long* correct) {
    const int lane = threadIdx.x & (MLP_WARP - 1);
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / MLP_WARP;
    const long long num_warps = ((long long)gridDim.x * blockDim.x) / MLP_WARP;
    double warp_loss = 0.0;
    unsigned long long warp_correct = 0;

    for (long long row = warp; row < batch; row += num_warps) {
        const float* z = logits + (size_t)row * classes;

        // Maximum (NaN ignored, as f64::max) and first arg-max.
        float m = MLP_NEG_INF;
        float best_v = MLP_NEG_INF;
        int best = 0x7fffffff;
        for (int cl = lane; cl < classes; cl += MLP_WARP) {
            const float v = z[cl];
            m = fmaxf(m, v);
            if (v > best_v) {
                best_v = v;
                best = cl;
            }
        }
#pragma unroll
        for (int off = MLP_WARP / 2; off > 0; off >>= 1) {
            m = fmaxf(m, __shfl_xor_sync(MLP_FULL, m, off));
            const float ov = __shfl_xor_sync(MLP_FULL, best_v, off);
            const int oi = __shfl_xor_sync(MLP_FULL, best, off);
            if (ov > best_v || (ov == best_v && oi < best)) {
                best_v = ov;
                best = oi;
            }
        }
        if (best == 0x7fffffff) {
            best = 0;
        }

        float s = 0.0f;
        for (int cl = lane; cl < classes; cl += MLP_WARP) {
            s += expf(z[cl] - m);
        }
#pragma unroll
        for (int off = MLP_WARP / 2; off > 0; off >>= 1) {
            s += __shfl_xor_sync(MLP_FULL, s, off);
        }

        const int label = labels != 0 ? (int)labels[row] : -1;
        if (dlogits != 0) {
            float* g = dlogits + (size_t)row * classes;
            const float inv_s = 1.0f / s;
            for (int cl = lane; cl < classes; cl += MLP_WARP) {
                const float p = expf(z[cl] - m) * inv_s;
                g[cl] = (p - (cl == label ? 1.0f : 0.0f)) * inv_batch;
            }
        }
        if (lane == 0) {
            if (pred != 0) {
                pred[row] = (unsigned char)best;
            }
            if (label >= 0) {
                warp_loss += (double)m + log((double)s) - (double)z[label];
                warp_correct += best == label ? 1ull : 0ull;
            }
        }
    }
    if (lane == 0) {
        if (loss_sum != 0 && warp_loss != 0.0) {
            atomicAdd(loss_sum, warp_loss);
        }
        if (correct != 0 && warp_correct != 0) {
            atomicAdd(correct, warp_correct);
        }
    }
}

// The epilogue of a GEMM that cuBLAS ran (worker-gpu's MlpGemm::Cublas): c[i * ldc + j] =
// act(c[i * ldc + j] + bias[j * bias_stride]) for i < m, j < n, with mlp_sgemm's bias and ReLU
// (bias may be null; relu != 0 applies fmaxf(., 0)). Launch: any 1-D grid.
extern "C" __global__ void mlp_bias_act(float* c,
                                        int m,
                                        int n,
                                        int ldc,
                                        const float* __restrict__ bias,
                                        int bias_stride,
                                        int relu) {
    const unsigned long long total = (unsigned long long)m * (unsigned long long)n;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         e < total; e += stride) {
        const unsigned long long i = e / (unsigned long long)n;
        const unsigned long long j = e % (unsigned long long)n;
        float* out = c + i * (unsigned long long)ldc + j;
        float v = *out;
        if (bias != 0) {
            v += bias[j * (unsigned long long)bias_stride];
        }
        if (relu) {
            v = fmaxf(v, 0.0f);
        }
        *out = v;
    }
}

// ReLU backward in place: grad[i] = act[i] > 0 ? grad[i] : 0, where act is the layer's output
// after the ReLU (positive exactly where the pre-activation was). Launch: any 1-D grid.
extern "C" __global__ void mlp_relu_backward(float* grad,
                                             const float* __restrict__ act,
                                             unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        if (!(act[i] > 0.0f)) {
            grad[i] = 0.0f;
        }
    }
}

// Bias gradient: out[j * out_stride] = scale * sum over rows r of dz[r * cols + j], for
// j < cols (overwrites). With dz already scaled by 1 / batch, scale = 1.
// Launch: block (32, 8), grid ceil(cols / 32).
extern "C" __global__ void __launch_bounds__(256)
    mlp_bias_grad(const float* __restrict__ dz, int rows, int cols, float scale, float* out,
                  int out_stride) {
    __shared__ float part[8][MLP_WARP + 1];
    const int j = blockIdx.x * MLP_WARP + threadIdx.x;
    float s = 0.0f;
    if (j < cols) {
        for (int r = threadIdx.y; r < rows; r += 8) {
            s += dz[(size_t)r * cols + j];
        }
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float t = 0.0f;
#pragma unroll
        for (int y = 0; y < 8; ++y) {
            t += part[y][threadIdx.x];
        }
        out[(size_t)j * out_stride] = scale * t;
    }
}
