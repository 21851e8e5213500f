// The window form of the MF wave kernel's block (mf_sgd.cu's mf_sgd_waves_w2 and _w4): a warp
// runs a block's ratings in order with the rows of the next W ratings copying into shared memory
// while one is computed, handing a row from rating to rating where they share it.
//
// Why shared memory and asynchronous copies: loads into registers are tracked by six scoreboards
// per warp, and ptxas put every row load of the window, and the next rating's indices, on the
// same one, so the first use of any of them waited for all (the SASS of the register version of
// this window, and of mf_sgd_waves too, shows a wait on that scoreboard right after each
// prefetch). cp.async copies complete in groups the kernel waits for by count (one group per
// rating), whatever registers the compiler picks.
//
// A shared header, not a kernel (see philox.cuh): device functions only, plain C++ apart from
// CUDA's qualifiers, so that worker-gpu/tests/kernels_on_host/headers.rs runs it on the CPU against the
// ratings stepped one after another (needs mf_step.cuh first). The copies are mf_sgd.cu's (PTX;
// the host test's read global memory when issued and land when issued, when waited for, or in
// between, so a copy made too early or landing too late shows there as a wrong value).

// 16 bytes from global to shared memory through L2 only, asynchronously (cp.async.cg); the
// group of copies issued since the last commit; waiting until at most N groups are pending.
__device__ __forceinline__ void mf_copy16(void* shared, const void* global);
__device__ __forceinline__ void mf_copy_commit();
template <int N>
__device__ __forceinline__ void mf_copy_wait();

// Elements of a row a window slot holds (rank <= MF_WARP * MF_CACHE).
#define MF_SLOT_ROW (MF_WARP * MF_CACHE)

// Whether the window can run rows of `rank` elements of T, `width` apart: plain rows (no bias)
// of whole 16-byte pieces, at most MF_SLOT_ROW elements.
template <typename T>
__device__ __forceinline__ bool mf_window_fits(unsigned int rank,
                                               unsigned int width,
                                               int biased) {
    return !biased && width == rank && rank <= MF_SLOT_ROW && (rank * sizeof(T)) % 16 == 0;
}

// The ratings of the window: indices only; their rows are in shared memory.
// `user` == MF_NONE: the slot holds no rating (past the block's end).
#define MF_NONE 0xffffffffu
struct MfSlot {
    unsigned int user;
    unsigned int item;
    float value;
};

// Copies a row of `rank` elements into `dst` (shared) in 16-byte pieces, piece p by lane
// p % MF_WARP (on a GPU one piece a lane at most: rank <= MF_SLOT_ROW).
template <typename T>
__device__ __forceinline__ void mf_slot_copy(T* dst,
                                             const T* row,
                                             unsigned int lane,
                                             unsigned int rank) {
    const unsigned int per_piece = 16 / sizeof(T);
    for (unsigned int at = lane * per_piece; at < rank; at += MF_WARP * per_piece) {
        mf_copy16(dst + at, row + at);
    }
}

// A rating enters slot `s` (indices `user`, `item`; MF_NONE past the block; the caller sets
// its value), whose rows are `su` and `sv` in shared memory. Each of its rows is copied now
// unless one of the ratings still to be computed before it, in `others` (the window's other
// slots), writes that row first: then the last of those hands the row over when it is computed
// (mf_slot_forward), and no copy is pending into it. One group of copies is committed, empty or
// not, so that the groups count the ratings.
template <int W, typename T>
__device__ __forceinline__ void mf_slot_enter(MfSlot* slots,
                                              int s,
                                              unsigned int user,
                                              unsigned int item,
                                              unsigned int others,
                                              T* su,
                                              T* sv,
                                              const T* users,
                                              const T* items,
                                              unsigned int lane,
                                              unsigned int rank,
                                              unsigned int width) {
    bool user_written = false, item_written = false;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        if (others & (1u << k)) {
            user_written |= slots[k].user == user;
            item_written |= slots[k].item == item;
        }
    }
    slots[s].user = user;
    slots[s].item = item;
    if (user != MF_NONE && !user_written) {
        mf_slot_copy(su, users + (size_t)user * width, lane, rank);
    }
    if (item != MF_NONE && !item_written) {
        mf_slot_copy(sv, items + (size_t)item * width, lane, rank);
    }
    mf_copy_commit();
}

// Rating `done` was just computed and wrote `wu`, `wv` (this lane's elements, lane + MF_WARP * j):
// every other slot of the window (a rating still to come) that shares its user or its item
// takes those values as its row (what a load would now give; a later rating on the same row
// overwrites them). Each lane writes only the elements it later reads.
template <int W, typename T>
__device__ __forceinline__ void mf_slot_forward(const MfSlot* slots,
                                                int done,
                                                T* slab,
                                                const T* wu,
                                                const T* wv,
                                                unsigned int lane,
                                                unsigned int rank) {
#pragma unroll
    for (int k = 0; k < W; ++k) {
        if (k == done) {
            continue;
        }
        T* su = slab + (2 * k) * MF_SLOT_ROW;
        T* sv = su + MF_SLOT_ROW;
        const bool user = slots[k].user == slots[done].user;
        const bool item = slots[k].item == slots[done].item;
#pragma unroll
        for (int j = 0; j < MF_CACHE; ++j) {
            const unsigned int e = lane + MF_WARP * j;
            if (e < rank) {
                if (user) {
                    su[e] = wu[j];
                }
                if (item) {
                    sv[e] = wv[j];
                }
            }
        }
    }
}

// The same block as mf_block_waves, with a window of W ratings (W >= 2) whose rows copy into
// `slab` (shared memory, this warp's: W slots of a user row and an item row, MF_SLOT_ROW
// elements each) ahead of their turn; only for rows mf_window_fits. Slot j of the window holds
// rating base + j of each group of W (static indices, so the slots stay in registers). Before
// rating r is computed, the warp waits for its group of copies (the W - 1 later ones may still
// be pending); after, r hands its new rows to the window's later ratings that share them
// (mf_slot_forward), and its slot takes rating r + W, copying each row of it that none of the
// ratings r + 1 .. r + W - 1 writes first (mf_slot_enter). So no rating reads a row an earlier
// one has yet to write. The ratings run in the same order with the same arithmetic (mf_apply)
// as mf_block_waves, and a copied or forwarded row holds the bits a load would give, so both
// give the same tables; only the loads move.
template <typename T, int W>
__device__ double mf_block_window(const unsigned int* __restrict__ rating_user,
                                  const unsigned int* __restrict__ rating_item,
                                  const float* __restrict__ rating_value,
                                  unsigned int lo,
                                  unsigned int hi,
                                  T* users,
                                  T* items,
                                  T* slab,
                                  unsigned int lane,
                                  unsigned int rank,
                                  unsigned int width,
                                  float lr,
                                  float reg) {
    if (lo >= hi) {
        return 0.0;
    }
    // mf_window_fits: at most one piece a lane, so the copy loops are one step.
    rank = rank < MF_SLOT_ROW ? rank : MF_SLOT_ROW;
    MfSlot s[W];
    unsigned int first_user[W], first_item[W];
#pragma unroll
    for (int j = 0; j < W; ++j) {
        s[j].user = MF_NONE;
        s[j].item = MF_NONE;
        // The first W ratings' indices, all loads in flight before any is used.
        const bool in = (unsigned int)j < hi - lo;
        const unsigned int r = in ? lo + j : hi - 1;
        first_user[j] = rating_user[r];
        first_item[j] = rating_item[r];
        s[j].value = rating_value[r];
    }
#pragma unroll
    for (int j = 0; j < W; ++j) {
        const bool in = (unsigned int)j < hi - lo;
        // Slots 0 .. j - 1 hold the ratings before this one.
        mf_slot_enter<W>(s, j, in ? first_user[j] : MF_NONE, in ? first_item[j] : MF_NONE,
                         (1u << j) - 1, slab + 2 * j * MF_SLOT_ROW,
                         slab + (2 * j + 1) * MF_SLOT_ROW, users, items, lane, rank, width);
    }
    // The indices of the rating the next freed slot takes (`pin`: there is one), loaded one
    // rating ahead so that entering it waits for nothing; past the block, the block's last
    // rating's, unused (a load that is always made, so nothing waits on it to choose). Its
    // value is loaded into the slot as it enters, used W ratings later.
    bool pin = hi - lo > W;
    unsigned int at = pin ? lo + W : hi - 1;
    unsigned int pu = rating_user[at], pi = rating_item[at];
    double sse = 0.0;
    // `hi - lo` ratings in groups of W, counted so that nothing wraps near 2^32.
    for (unsigned int left = hi - lo, base = lo; left > 0; left -= left < W ? left : W, base += W) {
#pragma unroll
        for (int j = 0; j < W; ++j) {
            if ((unsigned int)j < left) {
                const unsigned int r = base + j;
                T* su = slab + 2 * j * MF_SLOT_ROW;
                T* sv = su + MF_SLOT_ROW;
                // This rating's copies (the oldest group) have landed, every lane's.
                mf_copy_wait<W - 1>();
                __syncwarp();
                float uc[MF_CACHE], vc[MF_CACHE];
#pragma unroll
                for (int i = 0; i < MF_CACHE; ++i) {
                    const unsigned int e = lane + MF_WARP * i;
                    uc[i] = e < rank ? mf_f32(su[e]) : 0.0f;
                    vc[i] = e < rank ? mf_f32(sv[e]) : 0.0f;
                }
                T wu[MF_CACHE], wv[MF_CACHE], wbu, wbv;
                const float e = mf_apply<true>(users + (size_t)s[j].user * width,
                                               items + (size_t)s[j].item * width, uc, vc, 0.0f,
                                               0.0f, s[j].value, lane, rank, 0, 0.0f, lr, reg, wu,
                                               wv, wbu, wbv);
                sse += (double)e * (double)e;
                mf_slot_forward<W>(s, j, slab, wu, wv, lane, rank);
                // Rating r + W (pu, pi; MF_NONE past the block) takes this slot. Every lane has
                // read its rows (mf_apply ends with __syncwarp) before the next copies land in
                // them. The other slots hold ratings r + 1 .. r + W - 1.
                mf_slot_enter<W>(s, j, pin ? pu : MF_NONE, pin ? pi : MF_NONE,
                                 ((1u << W) - 1) & ~(1u << j), su, sv, users, items, lane, rank,
                                 width);
                s[j].value = rating_value[at];
                pin = left - j > W + 1;
                at = pin ? r + W + 1 : hi - 1;
                pu = rating_user[at];
                pi = rating_item[at];
            }
        }
    }
    return sse;
}
