// The window form of the MF wave kernel's block (mf_sgd.cu's mf_sgd_waves_w2 and _w4): a warp
// runs a block's ratings in order with the rows of the next W ratings loaded ahead, handing a
// row from rating to rating where they share it.
//
// A shared header, not a kernel (see philox.cuh): device functions only, plain C++ apart from
// CUDA's qualifiers and intrinsics, so that worker-gpu/tests/headers_on_host.rs runs it on the
// CPU against the ratings computed one after another (needs mf_step.cuh first).

// The rows of one rating as this lane holds them, still in the table's storage format: they are
// converted when the rating is computed, so a load still in flight stalls nothing before that.
// `user` == MF_NONE: the slot holds no rating (past the block's end).
#define MF_NONE 0xffffffffu
template <typename T>
struct MfSlot {
    unsigned int user;
    unsigned int item;
    float value;
    T uc[MF_CACHE];
    T vc[MF_CACHE];
    T bu;
    T bv;
};

template <bool COHERENT, typename T>
__device__ __forceinline__ T mf_raw(const T* p) {
    return COHERENT ? __ldcg(p) : *p;
}

// Issues the loads of a slot's user row (through the default path) or item row (through L2
// only), as mf_block_waves loads them.
template <bool COHERENT, typename T>
__device__ __forceinline__ void mf_slot_row(const T* row,
                                            unsigned int lane,
                                            unsigned int rank,
                                            int biased,
                                            T* c,
                                            T& bias) {
#pragma unroll
    for (int j = 0; j < MF_CACHE; ++j) {
        const unsigned int k = lane + MF_WARP * j;
        c[j] = k < rank ? mf_raw<COHERENT>(row + k) : mf_stored<T>(0.0f);
    }
    bias = biased ? mf_raw<COHERENT>(row + rank) : mf_stored<T>(0.0f);
}

// A rating enters slot `s` (indices `user`, `item`, `value`; MF_NONE past the block). Each of
// its rows is loaded now unless one of the ratings still to be computed before it, in `others`
// (the window's other slots), writes that row first: then the last of those hands the row over
// when it is computed (mf_slot_forward). A load there would be wasted, and worse: handing a row
// into registers that a load is still filling waits for that load.
template <int W, typename T>
__device__ __forceinline__ void mf_slot_enter(MfSlot<T>* slots,
                                              int s,
                                              unsigned int user,
                                              unsigned int item,
                                              float value,
                                              unsigned int others,
                                              const T* users,
                                              const T* items,
                                              unsigned int lane,
                                              unsigned int rank,
                                              unsigned int width,
                                              int biased) {
    bool user_written = false, item_written = false;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        if (others & (1u << k)) {
            user_written |= slots[k].user == user;
            item_written |= slots[k].item == item;
        }
    }
    MfSlot<T>& c = slots[s];
    c.user = user;
    c.item = item;
    c.value = value;
    if (user != MF_NONE && !user_written) {
        mf_slot_row<false>(users + (size_t)user * width, lane, rank, biased, c.uc, c.bu);
    }
    if (item != MF_NONE && !item_written) {
        mf_slot_row<true>(items + (size_t)item * width, lane, rank, biased, c.vc, c.bv);
    }
}

// Rating `done` was just computed and wrote `su`, `sv`, `sbu`, `sbv`: every other slot of the
// window (a rating still to come) that shares its user or its item takes those values as its
// row (they are what a load would now give; a later rating on the same row overwrites them).
template <int W, typename T>
__device__ __forceinline__ void mf_slot_forward(MfSlot<T>* slots,
                                                int done,
                                                const T* su,
                                                const T* sv,
                                                T sbu,
                                                T sbv) {
#pragma unroll
    for (int k = 0; k < W; ++k) {
        if (k == done) {
            continue;
        }
        if (slots[k].user == slots[done].user) {
#pragma unroll
            for (int j = 0; j < MF_CACHE; ++j) {
                slots[k].uc[j] = su[j];
            }
            slots[k].bu = sbu;
        }
        if (slots[k].item == slots[done].item) {
#pragma unroll
            for (int j = 0; j < MF_CACHE; ++j) {
                slots[k].vc[j] = sv[j];
            }
            slots[k].bv = sbv;
        }
    }
}

// The same block as mf_block_waves, with a window of W ratings whose rows are loaded ahead
// instead of one (W >= 2): while a rating is computed, the rows of the next W - 1 are already
// loading, and the loads of the one after them are issued as soon as it is written. Slot j of
// the window holds rating base + j of each group of W (static indices, so the slots stay in
// registers). Right after rating r is computed and written, it hands its new rows to the
// window's later ratings that share them (mf_slot_forward), and its slot takes rating r + W,
// loading each row of it that none of the ratings r + 1 .. r + W - 1 writes first
// (mf_slot_enter). So no rating waits for a load issued after the rating before it, and none
// reads a row an earlier rating has yet to write. The ratings run in the same order with the
// same arithmetic (mf_apply) as mf_block_waves, and a forwarded row is what a load would give,
// so both give the same tables; only the loads move. Registers grow with W (kernel-check
// prints them); the engine sizes its lanes by the chosen kernel's occupancy.
template <typename T, int W>
__device__ double mf_block_window(const unsigned int* __restrict__ rating_user,
                                  const unsigned int* __restrict__ rating_item,
                                  const float* __restrict__ rating_value,
                                  unsigned int lo,
                                  unsigned int hi,
                                  T* users,
                                  T* items,
                                  unsigned int lane,
                                  unsigned int rank,
                                  unsigned int width,
                                  int biased,
                                  float mean,
                                  float lr,
                                  float reg) {
    if (lo >= hi) {
        return 0.0;
    }
    MfSlot<T> s[W];
#pragma unroll
    for (int j = 0; j < W; ++j) {
        s[j].user = MF_NONE;
        s[j].item = MF_NONE;
    }
#pragma unroll
    for (int j = 0; j < W; ++j) {
        const unsigned int r = lo + j;
        const bool in = r < hi;
        // Slots 0 .. j - 1 hold the ratings before this one.
        mf_slot_enter<W>(s, j, in ? rating_user[r] : MF_NONE, in ? rating_item[r] : MF_NONE,
                         in ? rating_value[r] : 0.0f, (1u << j) - 1, users, items, lane, rank,
                         width, biased);
    }
    // The indices of the rating the next freed slot takes, loaded one rating ahead.
    unsigned int pu = MF_NONE, pi = MF_NONE;
    float pv = 0.0f;
    if (lo + W < hi) {
        pu = rating_user[lo + W];
        pi = rating_item[lo + W];
        pv = rating_value[lo + W];
    }
    double sse = 0.0;
    for (unsigned int base = lo; base < hi; base += W) {
#pragma unroll
        for (int j = 0; j < W; ++j) {
            const unsigned int r = base + j;
            if (r < hi) {
                MfSlot<T>& c = s[j];
                float uc[MF_CACHE], vc[MF_CACHE];
#pragma unroll
                for (int i = 0; i < MF_CACHE; ++i) {
                    uc[i] = mf_f32(c.uc[i]);
                    vc[i] = mf_f32(c.vc[i]);
                }
                T su[MF_CACHE], sv[MF_CACHE], sbu, sbv;
                const float e = mf_apply<true>(users + (size_t)c.user * width,
                                               items + (size_t)c.item * width, uc, vc,
                                               mf_f32(c.bu), mf_f32(c.bv), c.value, lane, rank,
                                               biased, mean, lr, reg, su, sv, sbu, sbv);
                sse += (double)e * (double)e;
                mf_slot_forward<W>(s, j, su, sv, sbu, sbv);
                // The other slots hold ratings r + 1 .. r + W - 1.
                mf_slot_enter<W>(s, j, pu, pi, pv, ((1u << W) - 1) & ~(1u << j), users, items,
                                 lane, rank, width, biased);
                const unsigned int nx = r + W + 1;
                const bool in = nx < hi;
                pu = in ? rating_user[nx] : MF_NONE;
                pi = in ? rating_item[nx] : MF_NONE;
                pv = in ? rating_value[nx] : 0.0f;
            }
        }
    }
    return sse;
}
