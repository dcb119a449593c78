// resid: the packed coder (src/code/packed.rs) on the GPU. Per block, zigzag codes (block
// order) are cut into groups of 32; a group is stored as `w` u32 words, `w` the bit width of
// its largest code, word b = bit b of the 32 codes (bit j for code j). One warp a group.
//
// Encode: packed_widths (each group's width), packed_scan (per block, the exclusive prefix
// sum of the widths: each group's first word within its block, and the block's total), then
// packed_write once the host has placed the blocks' words. Decode: packed_scan over the widths
// in the payloads, then packed_read.
#include "common.cuh"

typedef unsigned char u8;

__device__ __forceinline__ u32 warp_or(u32 v) {
#pragma unroll
    for (u32 d = 16; d > 0; d >>= 1) v |= __shfl_xor_sync(0xffffffffu, v, d);
    return v;
}

// The group this warp codes: block blockIdx.y, group blockIdx.x * 8 + warp, for grids of
// (ceil(max groups / 8), blocks) CTAs of 256 threads. False (for the whole warp) past the
// block's last group.
struct Group {
    BlockDesc d;
    u32 b, lane;
    u64 n, g;
};

__device__ __forceinline__ bool group_at(const u64* table, Group* w) {
    w->b = blockIdx.y;
    w->d = load_block(table, w->b);
    w->n = w->d.ez * w->d.ey * w->d.ex;
    w->g = (u64)blockIdx.x * 8 + (threadIdx.x >> 5);
    w->lane = threadIdx.x & 31u;
    return w->g * 32 < w->n;
}

// This lane's code of the group (0 past the block's end).
__device__ __forceinline__ u32 lane_code(const u32* codes, const Group& w) {
    const u64 i = w.g * 32 + w.lane;
    return i < w.n ? codes[w.d.offset + i] : 0u;
}

// widths[group_off[b] + g].
extern "C" __global__ void packed_widths(const u32* codes, const u64* table, const u64* group_off,
                                         u8* widths) {
    Group w;
    if (!group_at(table, &w)) return;
    const u32 o = warp_or(lane_code(codes, w));
    if (w.lane == 0) widths[group_off[w.b] + w.g] = (u8)(32 - __clz(o));
}

// grid (blocks), 1024 threads. Reads the block's widths at widths + width_off[b]; writes
// first[group_off[b] + g] (the group's first word in its block) and total[b].
extern "C" __global__ void packed_scan(const u8* widths, const u64* width_off, const u64* table,
                                       const u64* group_off, u32* first, u32* total) {
    __shared__ u32 warp_sums[32];
    __shared__ u32 carry;
    const u32 b = blockIdx.x;
    const BlockDesc d = load_block(table, b);
    const u64 groups = (d.ez * d.ey * d.ex + 31) / 32;
    const u8* w = widths + width_off[b];
    u32* out = first + group_off[b];
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (u64 base = 0; base < groups; base += 1024) {
        const u64 g = base + threadIdx.x;
        const u32 v = g < groups ? (u32)w[g] : 0u;
        const u32 inc = warp_scan(v, lane);
        if (lane == 31) warp_sums[warp] = inc;
        __syncthreads();
        if (warp == 0) {
            const u32 s = warp_scan(warp_sums[lane], lane);
            warp_sums[lane] = s;  // inclusive sums of the warps
        }
        __syncthreads();
        const u32 before = carry + (warp > 0 ? warp_sums[warp - 1] : 0u) + inc - v;
        if (g < groups) out[g] = before;
        __syncthreads();
        if (threadIdx.x == 0) carry += warp_sums[31];
        __syncthreads();
    }
    if (threadIdx.x == 0) total[b] = carry;
}

// The block's words start at words + word_off[b] (u32 units).
extern "C" __global__ void packed_write(const u32* codes, const u64* table, const u64* group_off,
                                        const u8* widths, const u32* first, const u64* word_off,
                                        u32* words) {
    Group w;
    if (!group_at(table, &w)) return;
    const u32 c = lane_code(codes, w);
    const u64 k = group_off[w.b] + w.g;
    const u32 width = widths[k];
    u32 mine = 0;
    for (u32 p = 0; p < width; p++) {
        const u32 plane = __ballot_sync(0xffffffffu, (c >> p) & 1u);
        if (w.lane == p) mine = plane;
    }
    if (w.lane < width) words[word_off[w.b] + first[k] + w.lane] = mine;
}

// The payloads lie end to end in `payload` (u32-aligned: every payload is a multiple of 4
// bytes); block b's starts at byte pay_off[b] with its widths, its words after the padded
// widths (`words_at[b]`, bytes). Writes the residuals (block-major, zigzag decoded).
extern "C" __global__ void packed_read(const u8* payload, const u64* pay_off, const u64* words_at,
                                       const u64* table, const u64* group_off, const u32* first,
                                       int* r) {
    Group w;
    if (!group_at(table, &w)) return;
    const u32 width = payload[pay_off[w.b] + w.g];
    const u32* words = (const u32*)(payload + words_at[w.b]) + first[group_off[w.b] + w.g];
    const u32 mine = w.lane < width ? words[w.lane] : 0u;
    u32 c = 0;
    for (u32 p = 0; p < width; p++) c |= ((__shfl_sync(0xffffffffu, mine, p) >> w.lane) & 1u) << p;
    const u64 i = w.g * 32 + w.lane;
    if (i < w.n) r[w.d.offset + i] = zigzag_decode(c);
}
