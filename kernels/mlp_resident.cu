// MLP, resident: the per-clock kernels of a whole local-SGD clock on the device.
//
// Serves ps_apps::mlp::MlpResident (worker-gpu's cuda::mlp_resident::CudaMlpResident). The
// worker's samples stay on the device (x: n x d row-major f32, y: n labels); a clock's batches
// are gathered from them by sample index, run through the forward / backward kernels of mlp.cu,
// and each is followed by an SGD step on the local model; at the end the delta is formed here and
// only it is copied back. The seeded initial model (clock 0) is made here too.
//
// Rounding: the SGD step and the delta round every operation separately (__fmul_rn / __fsub_rn /
// __fadd_rn, never contracted into an FMA), exactly as the host's `p -= lr * g` and
// `(local - read) * scale` do in f32; the gradients themselves come from mlp.cu and
// agree with the CPU oracle to f32 rounding.

// A clock's visiting order made on the device: order[i] = visit_at(n, keys, from + i) for
// i < count (visit.cuh), the samples ps_apps::visit::Visit::order names, so the order never
// crosses PCIe. Launch: any 1-D grid (grid stride over count).
extern "C" __global__ void mlp_visit_order(unsigned int k0,
                                           unsigned int k1,
                                           unsigned int k2,
                                           unsigned int k3,
                                           unsigned int n,
                                           unsigned int from,
                                           unsigned int count,
                                           unsigned int* __restrict__ order) {
    visit_fill(k0, k1, k2, k3, n, from, count, order);
}

// Gathers a batch of `rows` samples: batch row r is sample s = order[first + r], or first + r
// when order is null (a contiguous range, as for evaluation).
//   x   n x d features, y n labels (the resident set; s < n, checked by the host)
//   xb  rows x d, yb rows (the batch the mlp.cu kernels read)
// Launch: any 1-D grid (grid stride over rows * d); d >= 1.
extern "C" __global__ void mlp_gather_batch(const float* __restrict__ x,
                                            const unsigned char* __restrict__ y,
                                            const unsigned int* __restrict__ order,
                                            unsigned int first,
                                            unsigned int rows,
                                            unsigned int d,
                                            float* __restrict__ xb,
                                            unsigned char* __restrict__ yb) {
    const unsigned long long total = (unsigned long long)rows * d;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += stride) {
        const unsigned long long r = i / d;
        const unsigned long long c = i - r * d;
        const unsigned long long s =
            order != 0 ? (unsigned long long)order[first + r] : (unsigned long long)first + r;
        xb[i] = x[s * d + c];
        if (c == 0) {
            yb[r] = y[s];
        }
    }
}

// SGD step in place: p[i] = p[i] - lr * g[i] for i < n (product rounded, then the difference).
// Launch: any 1-D grid.
extern "C" __global__ void mlp_sgd_step(float* p,
                                        const float* __restrict__ g,
                                        float lr,
                                        unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        p[i] = __fsub_rn(p[i], __fmul_rn(lr, g[i]));
    }
}

// Delta: out[i] = (local[i] - read[i]) * scale, for i < n.
// Launch: any 1-D grid.
extern "C" __global__ void mlp_delta(const float* __restrict__ local,
                                     const float* __restrict__ read,
                                     float scale,
                                     float* __restrict__ out,
                                     unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        out[i] = __fmul_rn(__fsub_rn(local[i], read[i]), scale);
    }
}

// The seeded initial model of one layer made where it is used, so it never crosses PCIe:
// ps_proto::init::value for Init::Glorot, as ps_apps::mlp::init_layer fills a layer table of
// `width` columns (fan_in weights, the bias last). Cell (row, col) with col < fan_in is
// bound * (2u - 1), u = ((h >> 11) + 0.5) / 2^53 from h = the splitmix64 hash of
// (seed, table, row, col); every other cell is 0. The host rounds each f64 operation to
// nearest even and the result to f32 once; here each is an _rn intrinsic (never contracted
// into an FMA) in the same order, which gives the same bits: (h >> 11) converts exactly, the
// + 0.5 rounds alike (ties to even) from 2^52 up, the division by 2^53 and 2u are exact.
// Launch: any 1-D grid (grid stride over n = rows * width); width >= 1.
__device__ __forceinline__ unsigned long long mlp_init_mix(unsigned long long z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

extern "C" __global__ void mlp_init_glorot(unsigned long long seed,
                                           unsigned int table,
                                           unsigned int fan_in,
                                           unsigned int width,
                                           float bound,
                                           unsigned long long n,
                                           float* __restrict__ out) {
    const unsigned long long a = mlp_init_mix(seed ^ ((unsigned long long)table << 32));
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const unsigned long long row = i / width;
        const unsigned int col = (unsigned int)(i - row * width);
        if (col >= fan_in) {
            out[i] = 0.0f;
            continue;
        }
        const unsigned long long b = mlp_init_mix(a ^ row);
        const unsigned long long h =
            mlp_init_mix(b ^ ((unsigned long long)col * 0x2545f4914f6cdd1dull));
        const double u = __ddiv_rn(__dadd_rn((double)(h >> 11), 0.5), 9007199254740992.0);
        const double v = __dmul_rn((double)bound, __dadd_rn(__dmul_rn(2.0, u), -1.0));
        out[i] = __double2float_rn(v);
    }
}
