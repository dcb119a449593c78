// resid: the lz4 path's bit-plane transposition (src/code/lz4.rs) and its inverse.
// Per block, codes are cut into groups of 64 (in block order); each group becomes `planes`
// u64 words, highest plane first, bit j of a word = that plane's bit of code j.
// One warp per group: lane j holds codes j and j + 32; ballots give a plane's two halves.
#include "common.cuh"

// grid (ceil(max groups / 8), blocks), 256 threads.
extern "C" __global__ void bitplane_transpose(const u32* codes, const u64* table, const u32* planes,
                                              const u64* word_off, u64* words) {
    const u32 b = blockIdx.y;
    const BlockDesc d = load_block(table, b);
    const u64 n = d.ez * d.ey * d.ex;
    const u64 g = (u64)blockIdx.x * 8 + (threadIdx.x >> 5);
    const u32 lane = threadIdx.x & 31u;
    if (g * 64 >= n) return;  // whole warp
    const u32 P = planes[b];
    const u64 i0 = g * 64 + lane, i1 = i0 + 32;
    const u32 c0 = i0 < n ? codes[d.offset + i0] : 0u;
    const u32 c1 = i1 < n ? codes[d.offset + i1] : 0u;
    u64 mine = 0;
    for (u32 p = 0; p < P; p++) {
        const u32 lo = __ballot_sync(0xffffffffu, (c0 >> p) & 1u);
        const u32 hi = __ballot_sync(0xffffffffu, (c1 >> p) & 1u);
        if (lane == p) mine = (u64)lo | ((u64)hi << 32);
    }
    if (lane < P) words[word_off[b] + g * P + (P - 1 - lane)] = mine;
}

// The inverse, with zigzag decoding: words -> residuals (block-major).
extern "C" __global__ void bitplane_untranspose(const u64* words, const u64* table, const u32* planes,
                                                const u64* word_off, int* r) {
    const u32 b = blockIdx.y;
    const BlockDesc d = load_block(table, b);
    const u64 n = d.ez * d.ey * d.ex;
    const u64 g = (u64)blockIdx.x * 8 + (threadIdx.x >> 5);
    const u32 lane = threadIdx.x & 31u;
    if (g * 64 >= n) return;  // whole warp
    const u32 P = planes[b];
    const u64 w = lane < P ? words[word_off[b] + g * P + (P - 1 - lane)] : 0ull;
    u32 c0 = 0, c1 = 0;
    for (u32 p = 0; p < P; p++) {
        const u64 wp = __shfl_sync(0xffffffffu, w, p);
        c0 |= (u32)((wp >> lane) & 1ull) << p;
        c1 |= (u32)((wp >> (lane + 32)) & 1ull) << p;
    }
    const u64 i0 = g * 64 + lane, i1 = i0 + 32;
    if (i0 < n) r[d.offset + i0] = zigzag_decode(c0);
    if (i1 < n) r[d.offset + i1] = zigzag_decode(c1);
}
