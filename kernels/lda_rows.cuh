// Word-topic rows packed for the bus (ps_apps::lda::packed): a run of `rows` rows of K topics
// travels as its nonzero entries, and lda_rows_scatter writes them into the device's copy of
// those rows, which the caller has zeroed. The image is `u32` words:
//
//   ends     rows words: row r's entries are [ends[r - 1], ends[r]) (ends[-1] = 0), each end
//            clamped to `entries`
//   topics   entries u16, two to a word, low half first (word `rows` on)
//   values   entries u16 counts two to a word (f32_values == 0), or entries f32 bits
//            (f32_values != 0), from word rows + ceil(entries / 2) on
//
// An entry whose topic is K or more is skipped. ps_apps::lda::packed::unpack_rows is the host
// half; worker-gpu/tests/headers_on_host.rs runs this body on the CPU on an emulated grid and
// checks it against that.
//
// Parallelism: one warp per row (grid stride), the row's entries spread over the lanes. Every
// entry of the image names a distinct cell, so there is no race and no barrier.
//
// A shared header, not a kernel (see philox.cuh): device functions only.

__device__ __forceinline__ void lda_rows_scatter(const unsigned int* __restrict__ image,
                                                 unsigned int rows,
                                                 unsigned int entries,
                                                 unsigned int f32_values,
                                                 unsigned int topics,
                                                 float* __restrict__ dst) {
    const unsigned long long thread = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned long long warps = ((unsigned long long)gridDim.x * blockDim.x) / 32ull;
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned short* topic = (const unsigned short*)(image + rows);
    const unsigned int* values = image + rows + (entries + 1u) / 2u;
    const unsigned short* counts = (const unsigned short*)values;
    for (unsigned long long r = thread / 32ull; r < rows; r += warps) {
        const unsigned int lo = r == 0ull ? 0u : min(image[r - 1ull], entries);
        const unsigned int hi = min(image[r], entries);
        float* row = dst + r * (unsigned long long)topics;
        for (unsigned int j = lo + lane; j < hi; j += 32u) {
            const unsigned int t = topic[j];
            if (t >= topics) {
                continue;
            }
            row[t] = f32_values != 0u ? __uint_as_float(values[j]) : (float)counts[j];
        }
    }
}
