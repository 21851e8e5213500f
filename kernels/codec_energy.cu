// The energy count on the device (`energy:E`, ps_proto::codec::energy): how many of a block's
// largest magnitudes hold a fraction E of its energy, found where the block is, so that an
// energy chain is encoded on the device as a top-k is (codec_select.cu writes the chosen
// entries) and nothing but its measure and the encoded bytes crosses PCIe.
//
// An entry's energy is an integer, its square in the block's largest magnitude's scale
// (codec_energy_weight, energy.rs's energy_weight): the sums below are exact in any order, so
// the atomics find the count the host does, bit for bit. The count is found by a radix select
// over the magnitude bits, 8 bits a pass from the top, that accumulates energy as
// codec_select.cu's accumulates counts:
//
//   codec_energy_max   est[0] = the block's largest magnitude bits (est zeroed by the host)
//   codec_energy_hist  count[d] += 1 and energy[d] += weight for every entry whose decided bits
//                      match the prefix so far and whose next 8 bits are d (both histograms
//                      zeroed before the first pass; each pick zeroes them for the next)
//   codec_energy_pick  (one thread) at the first pass, the total and the goal
//                      min(ceil(E * total), total) (f64, rounded to nearest); then the digit at
//                      which the energy from the top reaches what is still needed
//
// After the pass at shift 0, state = {M, mask, need} as codec_select_pick leaves it (M the
// smallest magnitude kept, need how many entries of magnitude M go: the lowest-indexed), so
// codec_select_count, _scan and _write write the chosen entries, and est holds:
//
//   est[0] largest magnitude bits   est[1] energy still needed   est[2] entries above so far
//   est[3] the count k              est[4] 0 while searching, 1 settled early, 2 a fault
//
// Settled early: a block holding a non-finite value sends every entry (k = n, state M = 0 and
// need = n, which chooses all); a block of total 0 sends none (k = 0). A fault (no digit
// reached the goal, which exact sums rule out) leaves k = 0 and the host reports it.
//
// Launch: codec_energy_max and codec_energy_hist any 1-D grid; codec_energy_pick one block
// (thread 0 works). The block holds n < 2^32 entries; 0 < E <= 1.

#define CODEC_ENERGY_INF 0x7f800000u

// energy.rs's energy_weight: floor(sig^2 / 2^(16 + 2 (top_exp - exp))).
__device__ __forceinline__ unsigned long long codec_energy_weight(unsigned int m,
                                                                  unsigned int top) {
    const unsigned int exp = m >> 23;
    unsigned long long sig = m & 0x7fffffu;
    unsigned int e = 1u;
    if (exp != 0u) {
        sig |= 0x800000ull;
        e = exp;
    }
    unsigned int top_exp = top >> 23;
    if (top_exp == 0u) {
        top_exp = 1u;
    }
    const unsigned int shift = 16u + 2u * (top_exp > e ? top_exp - e : 0u);
    return shift >= 64u ? 0ull : (sig * sig) >> shift;
}

extern "C" __global__ void codec_energy_max(const float* __restrict__ x,
                                            unsigned long long n,
                                            unsigned long long* est) {
    __shared__ unsigned int block_max;
    if (threadIdx.x == 0u) {
        block_max = 0u;
    }
    __syncthreads();
    unsigned int top = 0u;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const unsigned int m = __float_as_uint(x[i]) & 0x7fffffffu;
        top = m > top ? m : top;
    }
    atomicMax(&block_max, top);
    __syncthreads();
    if (threadIdx.x == 0u && block_max != 0u) {
        atomicMax(&est[0], (unsigned long long)block_max);
    }
}

extern "C" __global__ void codec_energy_hist(const float* __restrict__ x,
                                             unsigned long long n,
                                             const unsigned int* __restrict__ state,
                                             const unsigned long long* __restrict__ est,
                                             unsigned int shift,
                                             unsigned int* count,
                                             unsigned long long* energy) {
    __shared__ unsigned int local_count[256];
    __shared__ unsigned long long local_energy[256];
    for (unsigned int d = threadIdx.x; d < 256u; d += blockDim.x) {
        local_count[d] = 0u;
        local_energy[d] = 0ull;
    }
    __syncthreads();
    const unsigned int top = (unsigned int)est[0];
    // Nothing to count once settled (or with a non-finite entry, which settles at the first
    // pick); every thread of the block sees the same.
    if (top < CODEC_ENERGY_INF && est[4] == 0ull) {
        const unsigned int prefix = shift >= 24u ? 0u : state[0];
        const unsigned int mask = shift >= 24u ? 0u : state[1];
        // A thread's entries mostly share a digit (the top one is mostly the exponent's):
        // it sums a run of one digit and adds the run to the block's counts when the digit
        // changes, rather than every thread adding every entry to the same few cells.
        unsigned int run_digit = 256u;
        unsigned int run_count = 0u;
        unsigned long long run_energy = 0ull;
        const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
        for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
             i < n; i += stride) {
            const unsigned int m = __float_as_uint(x[i]) & 0x7fffffffu;
            if ((m & mask) == prefix) {
                const unsigned int d = (m >> shift) & 255u;
                if (d != run_digit) {
                    if (run_count != 0u) {
                        atomicAdd(&local_count[run_digit], run_count);
                        atomicAdd(&local_energy[run_digit], run_energy);
                    }
                    run_digit = d;
                    run_count = 0u;
                    run_energy = 0ull;
                }
                run_count += 1u;
                run_energy += codec_energy_weight(m, top);
            }
        }
        if (run_count != 0u) {
            atomicAdd(&local_count[run_digit], run_count);
            atomicAdd(&local_energy[run_digit], run_energy);
        }
    }
    __syncthreads();
    for (unsigned int d = threadIdx.x; d < 256u; d += blockDim.x) {
        if (local_count[d] != 0u) {
            atomicAdd(&count[d], local_count[d]);
        }
        if (local_energy[d] != 0ull) {
            atomicAdd(&energy[d], local_energy[d]);
        }
    }
}

extern "C" __global__ void codec_energy_pick(unsigned int* count,
                                             unsigned long long* energy,
                                             unsigned int* state,
                                             unsigned long long* est,
                                             unsigned int shift,
                                             float e,
                                             unsigned int n) {
    if (blockIdx.x != 0u || threadIdx.x != 0u) {
        return;
    }
    const unsigned int top = (unsigned int)est[0];
    if (shift >= 24u) {
        unsigned long long total = 0ull;
        for (unsigned int d = 0; d < 256u; ++d) {
            total += energy[d];
        }
        est[2] = 0ull;
        if (top >= CODEC_ENERGY_INF) {
            state[0] = 0u;
            state[1] = 0xffffffffu;
            state[2] = n;
            est[3] = n;
            est[4] = 1ull;
        } else if (total == 0ull) {
            est[3] = 0ull;
            est[4] = 1ull;
        } else {
            const double t = (double)total;
            const double g = ceil(__dmul_rn((double)e, t));
            est[1] = g >= t ? total : (unsigned long long)g;
            est[3] = 0ull;
            est[4] = 0ull;
        }
    }
    if (est[4] == 0ull) {
        unsigned int prefix = shift >= 24u ? 0u : state[0];
        const unsigned int mask = shift >= 24u ? 0u : state[1];
        unsigned long long rem = est[1];
        unsigned long long above = est[2];
        // From the top digit down: the first whose energy, with those above it, reaches `rem`.
        unsigned long long cum = 0ull;
        unsigned long long cum_count = 0ull;
        bool found = false;
        for (int d = 255; d >= 0; --d) {
            const unsigned long long h = energy[d];
            if (h != 0ull && cum + h >= rem) {
                prefix |= (unsigned int)d << shift;
                rem -= cum;
                above += cum_count;
                found = true;
                break;
            }
            cum += h;
            cum_count += count[d];
        }
        if (!found) {
            est[3] = 0ull;
            est[4] = 2ull;
        } else {
            state[0] = prefix;
            state[1] = mask | (255u << shift);
            est[1] = rem;
            est[2] = above;
            if (shift == 0u) {
                // Every entry of magnitude M weighs the same, and more than 0 (its digit held
                // energy): the fewest of them that reach what is left.
                const unsigned long long w = codec_energy_weight(prefix, top);
                const unsigned long long need = rem / w + (rem % w != 0ull ? 1ull : 0ull);
                state[2] = (unsigned int)need;
                est[3] = above + need;
            }
        }
    }
    for (unsigned int d = 0; d < 256u; ++d) {
        count[d] = 0u;
        energy[d] = 0ull;
    }
}
