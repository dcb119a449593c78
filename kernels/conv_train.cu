// resid: NeurLZ training on the GPU (src/nn/conv_train.rs): one optimizer step over a batch
// of B patches is gather, forward (six layers), the loss gradient, backward (input gradients
// and weight gradients per layer), a fixed-order reduction and the Adam update. Floats: the
// trained weights may differ from the CPU's in the last bits, which is allowed (only the
// stored, quantized weights matter to the decoder; ARCHITECTURE.md invariant 2). Every sum runs in
// a fixed order (no atomics), so one device always trains the same weights.
//
// Tensors are channel-major over the batch: channel c of patch b is the plane at
// (c * B + b) * H * W, so the skip connection's concatenation [layer 3, layer 0] is two
// adjacent buffers.
#include "common.cuh"

typedef long long i64;

// conv_train.rs MARGIN: points this close to a patch edge that is not a slice edge do not
// count in the loss.
#define TR_MARGIN 4

// The batch's patches from the training set (`[slice][k][H][W]` inputs, `[slice][o][H][W]`
// targets and mask), `picks` = (slice, y0, x0) per patch. Grid (ceil(ph pw / 256), max(k, o), B).
extern "C" __global__ void tr_gather(const float* input, const float* target, const float* mask,
                                     int k, int o, int H, int W, const int* picks, int B, int ph,
                                     int pw, float* x, float* t, float* m) {
    const i64 n = (i64)ph * pw;
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const int c = blockIdx.y, b = blockIdx.z;
    const int s = picks[3 * b], y0 = picks[3 * b + 1], x0 = picks[3 * b + 2];
    const int y = (int)(j / pw), xx = (int)(j % pw);
    const i64 at = (i64)(y0 + y) * W + x0 + xx;
    const i64 dst = ((i64)c * B + b) * n + j;
    if (c < k) x[dst] = input[((i64)s * k + c) * H * W + at];
    if (c < o) {
        const bool top = y0 > 0, left = x0 > 0, bottom = y0 + ph < H, right = x0 + pw < W;
        const bool edge = (top && y < TR_MARGIN) || (bottom && y + TR_MARGIN >= ph) ||
                          (left && xx < TR_MARGIN) || (right && xx + TR_MARGIN >= pw);
        t[dst] = target[((i64)s * o + c) * H * W + at];
        m[dst] = edge ? 0.0f : mask[((i64)s * o + c) * H * W + at];
    }
}

// Block-wide sum of 256 threads' values (fixed order).
__device__ __forceinline__ float tr_block_sum(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int d = 128; d > 0; d >>= 1) {
        if ((int)threadIdx.x < d) sh[threadIdx.x] += sh[threadIdx.x + d];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

// Stage one of a sum of v[0 .. n): block k of gridDim.x writes the sum of its chunk to
// part[k]; tr_sum_final adds the parts in order (a fixed order: the same total every run).
extern "C" __global__ void tr_sum(const float* v, long long n, float* part) {
    __shared__ float sh[256];
    const i64 len = (n + gridDim.x - 1) / gridDim.x;
    const i64 lo = (i64)blockIdx.x * len, hi = lo + len < n ? lo + len : n;
    float acc = 0.0f;
    for (i64 i = lo + threadIdx.x; i < hi; i += 256) acc += v[i];
    acc = tr_block_sum(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// One block of 256 threads: each adds every 256th part, then the block's fixed-order sum.
extern "C" __global__ void tr_sum_final(const float* part, int parts, float* out) {
    __shared__ float sh[256];
    float acc = 0.0f;
    for (int k = threadIdx.x; k < parts; k += 256) acc += part[k];
    acc = tr_block_sum(acc, sh);
    if (threadIdx.x == 0) out[0] = acc;
}

// Output (input) channels one thread computes: each value read serves G channels (6: the
// default network is 6 and 12 wide).
#define G 6

// Output tiles of the 3x3 kernels: TW x TH points, PTS a thread (rows ly, ly + 8, ...), so
// each weight read serves PTS points and each staged value several taps.
#define TW 32
#define TH 32
#define PTS 4
// Largest input window (stride 2 with halo).
#define TILE_MAX ((2 * (TH - 1) + 3) * (2 * (TW - 1) + 3))

// Channels the stride-1 tiled kernels stage per barrier (tr_conv3, tr_conv3_bx1): their
// loads are all in flight at once, and a block waits on global memory a third as often. Three
// 34 x 34 windows fit in the stride-2 window's space (TILE_MAX).
#define NC1 3

// Asynchronous 4-byte copies from global to shared memory, so that a block's next channels
// load while it computes on the current ones: cp.async on sm_80 and later (zero fill where
// !ok), grouped by tr_copy_commit and waited for by tr_copy_wait<N> (all but the N groups
// committed last); plain loads and stores before sm_80. The CPU stand-in (tests/kernels/emu.h)
// writes a copy only when a wait covers it.
#if defined(RESID_EMU_H)
__device__ __forceinline__ void tr_copy_async(float* dst, const float* src, bool ok) { emu::cp_async(dst, src, ok); }
__device__ __forceinline__ void tr_copy_commit() { emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void tr_copy_wait() {
    emu::cp_async_wait(N);
}
#elif __CUDA_ARCH__ >= 800
__device__ __forceinline__ void tr_copy_async(float* dst, const float* src, bool ok) {
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(ok ? 4 : 0) : "memory");
}
__device__ __forceinline__ void tr_copy_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void tr_copy_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#else
__device__ __forceinline__ void tr_copy_async(float* dst, const float* src, bool ok) { *dst = ok ? *src : 0.0f; }
__device__ __forceinline__ void tr_copy_commit() {}
template <int N>
__device__ __forceinline__ void tr_copy_wait() {}
#endif

// Starts copying the (TH_ x TW_) windows at (y0, x0) of channels c < nc (nc <= NC_), planes
// h x w `plane` floats apart from `src`, into tile + c TH_ TW_, zero outside the plane, as one
// group of asynchronous copies (tr_copy_wait, then a barrier, before reading them). A thread
// keeps one column (its bounds test once) and steps down it 256 / TW_ rows at a time.
template <int TH_, int TW_, int NC_>
__device__ __forceinline__ void tr_stage_tiles(const float* src, i64 plane, int nc, int h, int w, int y0,
                                               int x0, float* tile) {
    constexpr int rows = 256 / TW_, per = (TH_ + rows - 1) / rows;
    const int c = threadIdx.x % TW_, r0 = threadIdx.x / TW_;
    const int xx = x0 + c;
    const bool inside = r0 < rows && xx >= 0 && xx < w;
    // Not unrolled down the column: the addresses are cheap to recompute, and kept for every
    // row across the channel loop they spilled registers (22 rows a thread at stride 2).
#pragma unroll
    for (int ch = 0; ch < NC_; ch++)
#pragma unroll 1
        for (int q = 0; q < per; q++) {
            const int r = r0 + q * rows, yy = y0 + r;
            if (r0 < rows && ch < nc && r < TH_) {
                const bool ok = inside && yy >= 0 && yy < h;
                tr_copy_async(tile + ch * TH_ * TW_ + r * TW_ + c, ok ? src + ch * plane + (i64)yy * w + xx : src,
                              ok);
            }
        }
    tr_copy_commit();
}

// Starts copying channels c0 .. c0 + NC_ (those below n) of patch b's planes in `src`
// (channel-major over the B patches) into stage (c0 / NC_) % 2 of `tile`, the stages `stage`
// floats apart, as tr_stage_tiles.
template <int TH_, int TW_, int NC_>
__device__ __forceinline__ void tr_stage_channels(const float* src, int B, int b, int c0, int n, int h, int w,
                                                  int y0, int x0, float* tile, int stage) {
    tr_stage_tiles<TH_, TW_, NC_>(src + (c0 * B + b) * (i64)h * w, (i64)B * h * w, n - c0 < NC_ ? n - c0 : NC_,
                                  h, w, y0, x0, tile + ((c0 / NC_) & 1) * stage);
}

// Before a block uses channels c0 .. c0 + NC_ (staged by the call before): starts copying the
// next ones into the other stage, if there are any, and waits for c0's (a barrier must follow).
template <int TH_, int TW_, int NC_>
__device__ __forceinline__ void tr_stage_next(const float* src, int B, int b, int c0, int n, int h, int w, int y0,
                                              int x0, float* tile, int stage) {
    if (c0 + NC_ < n) {
        tr_stage_channels<TH_, TW_, NC_>(src, B, b, c0 + NC_, n, h, w, y0, x0, tile, stage);
        tr_copy_wait<1>();
    } else {
        tr_copy_wait<0>();
    }
}

// Where this thread's tile lies: tile index `tile` of a plane ho x wo, the thread's column
// and first row in it.
struct TilePos {
    int tx, ty, lx, ly;
};

__device__ __forceinline__ TilePos tr_tile_pos(int tile, int wo) {
    const int tiles_x = (wo + TW - 1) / TW;
    TilePos t;
    t.tx = tile % tiles_x;
    t.ty = tile / tiles_x;
    t.lx = threadIdx.x % TW;
    t.ly = threadIdx.x / TW;
    return t;
}

// 3x3 convolution at stride S, zero padding 1, plus bias, optional ReLU, output channels
// G blockIdx.y .. + G; block blockIdx.x is one TW x TH output tile, its input window (with
// the halo) and the taps staged in shared memory, three input channels a barrier at stride 1
// (NC1), one at stride 2.
template <int S>
__device__ __forceinline__ void tr_conv3_tile(const float* x, int cin, int B, int h, int w,
                                              const float* wt, const float* bias, int cout,
                                              int relu, float* out, float* tile, float* wsh) {
    constexpr int tw = (TW - 1) * S + 3, th = (TH - 1) * S + 3;
    const int ho = (h + S - 1) / S, wo = (w + S - 1) / S;
    const TilePos tp = tr_tile_pos(blockIdx.x, wo);
    const int o0 = blockIdx.y * G, b = blockIdx.z;
    float acc[PTS][G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const float bj = bias[o0 + j < cout ? o0 + j : cout - 1];
#pragma unroll
        for (int m = 0; m < PTS; m++) acc[m][j] = bj;
    }
    // Input channels i0 .. i0 + nc a barrier (NC1 at stride 1; the stride-2 window fills the
    // space), in two stages of the tile: the next channels are copied in while these are used.
    constexpr int NC = S == 1 ? NC1 : 1;
    static_assert(NC * th * tw <= TILE_MAX, "staged windows exceed the tile");
    const int y0 = tp.ty * TH * S - 1, x0 = tp.tx * TW * S - 1;
    tr_stage_channels<th, tw, NC>(x, B, b, 0, cin, h, w, y0, x0, tile, TILE_MAX);
    for (int i0 = 0; i0 < cin; i0 += NC) {
        const int nc = cin - i0 < NC ? cin - i0 : NC;
        tr_stage_next<th, tw, NC>(x, B, b, i0, cin, h, w, y0, x0, tile, TILE_MAX);
        if ((int)threadIdx.x < nc * G * 9) {
            const int c = threadIdx.x / (G * 9), j = threadIdx.x / 9 % G, o = o0 + j < cout ? o0 + j : cout - 1;
            wsh[threadIdx.x] = wt[(o * cin + i0 + c) * 9 + threadIdx.x % 9];
        }
        __syncthreads();
        for (int c = 0; c < nc; c++) {
            const float* tl = tile + ((i0 / NC) & 1) * TILE_MAX + c * th * tw;
            const float* ws = wsh + c * G * 9;
#pragma unroll
            for (int k = 0; k < 9; k++) {
                float wk[G];
#pragma unroll
                for (int j = 0; j < G; j++) wk[j] = ws[j * 9 + k];
#pragma unroll
                for (int m = 0; m < PTS; m++) {
                    const float v = tl[((tp.ly + 8 * m) * S + k / 3) * tw + tp.lx * S + k % 3];
#pragma unroll
                    for (int j = 0; j < G; j++) acc[m][j] += wk[j] * v;
                }
            }
        }
        __syncthreads();
    }
    const int ox = tp.tx * TW + tp.lx;
    if (ox >= wo) return;
#pragma unroll
    for (int m = 0; m < PTS; m++) {
        const int oy = tp.ty * TH + tp.ly + 8 * m;
        if (oy >= ho) continue;
        const i64 at = (i64)oy * wo + ox;
#pragma unroll
        for (int j = 0; j < G; j++)
            if (o0 + j < cout)
                out[((i64)(o0 + j) * B + b) * ho * wo + at] = relu ? fmaxf(acc[m][j], 0.0f) : acc[m][j];
    }
}

// 3x3 convolution, stride 1 or 2 (tr_conv3_tile). Grid (ceil(wo / TW) ceil(ho / TH),
// ceil(cout / G), B).
extern "C" __global__ void __launch_bounds__(256, 3) tr_conv3(const float* x, int cin, int B, int h, int w, int stride,
                                    const float* wt, const float* bias, int cout, int relu,
                                    float* out) {
    __shared__ float tile[2 * TILE_MAX];
    __shared__ float wsh[NC1 * G * 9];
    if (stride == 1)
        tr_conv3_tile<1>(x, cin, B, h, w, wt, bias, cout, relu, out, tile, wsh);
    else
        tr_conv3_tile<2>(x, cin, B, h, w, wt, bias, cout, relu, out, tile, wsh);
}

// Channels whose taps the kernels that stage them all (tr_deconv2, tr_deconv2_bx, tr_conv3_bx2)
// hold in shared memory at a time: the network's widest layer in one go.
#define STAGE_CH 32

// Stages the 2x2 transposed convolution's taps for the block: wsh[r * G + j] holds the four
// taps between channel g0 + j of the block's group (clamped below gn) and channel r0 + r of
// the range it loops over, r < n; the group is the output channels (forward) or the input
// channels (input gradient).
__device__ __forceinline__ void tr_stage_deconv2_taps(const float* wt, int cin, int g0, int gn, int r0,
                                                      int n, bool group_out, float4* wsh) {
    for (int t = threadIdx.x; t < n * G; t += blockDim.x) {
        const int r = t / G, j = t % G, g = g0 + j < gn ? g0 + j : gn - 1;
        const int o = group_out ? g : r0 + r, i = group_out ? r0 + r : g;
        const float* q = wt + (o * cin + i) * 4;
        wsh[t] = make_float4(q[0], q[1], q[2], q[3]);
    }
}

// 2x2 transposed convolution, stride 2, h2 x w2 -> h x w (cropped), plus bias, optional ReLU,
// output channels G blockIdx.y .. + G. A thread takes one input point and writes its 2 x 2
// outputs: each input value loaded serves 4 G taps, read from shared memory alike by the
// whole block. Grid (ceil(h2 w2 / 256), ceil(cout / G), B).
extern "C" __global__ void tr_deconv2(const float* x, int cin, int B, int h2, int w2, int h, int w,
                                      const float* wt, const float* bias, int cout, int relu,
                                      float* out) {
    __shared__ float4 wsh[STAGE_CH * G];
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = p < (i64)h2 * w2;
    const int o0 = blockIdx.y * G, b = blockIdx.z;
    const int y2 = active ? (int)(p / w2) : 0, x2 = active ? (int)(p % w2) : 0;
    // acc[j][k]: output (2 y2 + k / 2, 2 x2 + k % 2) of channel o0 + j.
    float acc[G][4];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const float bj = bias[o0 + j < cout ? o0 + j : cout - 1];
#pragma unroll
        for (int k = 0; k < 4; k++) acc[j][k] = bj;
    }
    const float* src = x + (i64)b * h2 * w2 + p;
    const i64 istep = (i64)B * h2 * w2;
    for (int ic = 0; ic < cin; ic += STAGE_CH) {
        const int in = cin - ic < STAGE_CH ? cin - ic : STAGE_CH;
        __syncthreads();
        tr_stage_deconv2_taps(wt, cin, o0, cout, ic, in, true, wsh);
        __syncthreads();
        if (!active) continue;
        for (int i = 0; i < in; i++) {
            const float v = src[(ic + i) * istep];
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float4 q = wsh[i * G + j];
                acc[j][0] += q.x * v;
                acc[j][1] += q.y * v;
                acc[j][2] += q.z * v;
                acc[j][3] += q.w * v;
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int y = 2 * y2 + k / 2, xx = 2 * x2 + k % 2;
        if (y >= h || xx >= w) continue;
#pragma unroll
        for (int j = 0; j < G; j++)
            if (o0 + j < cout)
                out[((i64)(o0 + j) * B + b) * h * w + (i64)y * w + xx] =
                    relu ? fmaxf(acc[j][k], 0.0f) : acc[j][k];
    }
}

// 1x1 convolution plus bias, optional ReLU, over planes of n points.
// Grid (ceil(n / 256), ceil(cout / G), B).
extern "C" __global__ void tr_conv1(const float* x, int cin, int B, long long n, const float* wt,
                                    const float* bias, int cout, int relu, float* out) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    const int o0 = blockIdx.y * G, b = blockIdx.z;
    int oc[G];
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        oc[j] = o0 + j < cout ? o0 + j : cout - 1;
        acc[j] = bias[oc[j]];
    }
    for (int i = 0; i < cin; i++) {
        const float v = x[((i64)i * B + b) * n + p];
#pragma unroll
        for (int j = 0; j < G; j++) acc[j] += wt[oc[j] * cin + i] * v;
    }
#pragma unroll
    for (int j = 0; j < G; j++)
        if (o0 + j < cout) out[((i64)(o0 + j) * B + b) * n + p] = relu ? fmaxf(acc[j], 0.0f) : acc[j];
}

// Gradient of the squared error of softsign(z) against the target, masked.
extern "C" __global__ void tr_loss(const float* z, const float* t, const float* m, long long n,
                                   float* dz) {
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const float d = 1.0f + fabsf(z[j]);
    const float y = z[j] / d;
    dz[j] = 2.0f * (y - t[j]) * m[j] / (d * d);
}

// The input gradient, plus `add` when given, zeroed where `post` (the input's post-ReLU
// activation) is not positive when given (null pointers: not given).
__device__ __forceinline__ float tr_finish_dx(float acc, i64 idx, const float* add, const float* post) {
    if (add) acc += add[idx];
    if (post && !(post[idx] > 0.0f)) acc = 0.0f;
    return acc;
}

// Input gradient of a 3x3 convolution with stride 1 (a 3x3 convolution of the output
// gradient with the flipped taps), input channels G blockIdx.y .. + G, tiled as tr_conv3.
// Grid (ceil(w / TW) ceil(h / TH), ceil(cin / G), B).
extern "C" __global__ void __launch_bounds__(256, 3) tr_conv3_bx1(const float* dout, int cout, int B, int h, int w,
                                        const float* wt, int cin, const float* add,
                                        const float* post, float* dx) {
    constexpr int win = (TH + 2) * (TW + 2);
    __shared__ float tile[2 * NC1 * win];
    __shared__ float wsh[NC1 * G * 9];
    const TilePos tp = tr_tile_pos(blockIdx.x, w);
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    float acc[PTS][G];
#pragma unroll
    for (int m = 0; m < PTS; m++)
#pragma unroll
        for (int j = 0; j < G; j++) acc[m][j] = 0.0f;
    // Output-gradient channels o0 .. o0 + nc a barrier, in two stages as tr_conv3_tile.
    const int wy = tp.ty * TH - 1, wx = tp.tx * TW - 1;
    tr_stage_channels<TH + 2, TW + 2, NC1>(dout, B, b, 0, cout, h, w, wy, wx, tile, NC1 * win);
    for (int o0 = 0; o0 < cout; o0 += NC1) {
        const int nc = cout - o0 < NC1 ? cout - o0 : NC1;
        tr_stage_next<TH + 2, TW + 2, NC1>(dout, B, b, o0, cout, h, w, wy, wx, tile, NC1 * win);
        if ((int)threadIdx.x < nc * G * 9) {
            const int c = threadIdx.x / (G * 9), j = threadIdx.x / 9 % G, i = i0 + j < cin ? i0 + j : cin - 1;
            wsh[threadIdx.x] = wt[((o0 + c) * cin + i) * 9 + threadIdx.x % 9];
        }
        __syncthreads();
        for (int c = 0; c < nc; c++) {
            const float* tl = tile + ((o0 / NC1) & 1) * NC1 * win + c * win;
            const float* ws = wsh + c * G * 9;
            // Tap (ky, kx) reads output point (y + 1 - ky, x + 1 - kx): tile (ly + 2 - ky, lx + 2 - kx).
#pragma unroll
            for (int k = 0; k < 9; k++) {
                float wk[G];
#pragma unroll
                for (int j = 0; j < G; j++) wk[j] = ws[j * 9 + k];
#pragma unroll
                for (int m = 0; m < PTS; m++) {
                    const float d = tl[(tp.ly + 8 * m + 2 - k / 3) * (TW + 2) + tp.lx + 2 - k % 3];
#pragma unroll
                    for (int j = 0; j < G; j++) acc[m][j] += wk[j] * d;
                }
            }
        }
        __syncthreads();
    }
    const int x0 = tp.tx * TW + tp.lx;
    if (x0 >= w) return;
#pragma unroll
    for (int m = 0; m < PTS; m++) {
        const int y0 = tp.ty * TH + tp.ly + 8 * m;
        if (y0 >= h) continue;
#pragma unroll
        for (int j = 0; j < G; j++) {
            if (i0 + j >= cin) continue;
            const i64 idx = ((i64)(i0 + j) * B + b) * h * w + (i64)y0 * w + x0;
            dx[idx] = tr_finish_dx(acc[m][j], idx, add, post);
        }
    }
}

// ---- Tensor cores (sm_80 and later): the 3x3 stride-1 layers as matrix products ----
//
// tr_conv3_tc computes a stride-1 3x3 layer as an implicit matrix product on the tensor
// cores (mma.sync m16n8k8 with TF32 operands): rows are 16 output points of a tile row,
// columns 8 output channels, the sum runs over 8 input channels of one tap at a time;
// tr_conv3_bw_tc (further down) its weight gradients. TF32 keeps 10 mantissa bits, so each
// operand is split into two TF32 values (hi + lo) and a product is taken as three (lo hi +
// hi lo + hi hi): the sums come out as accurate as the FMA kernels' (the lo lo term is
// below float rounding). The host uses these kernels only on devices of compute capability
// 8.0 or more; older ones keep tr_conv3 / tr_conv3_bx1 / tr_conv3_bw.

// v rounded to TF32 (to nearest, ties away from zero; finite v), as cvt.rna.tf32.f32 gives
// it but in two integer instructions where that conversion takes several.
__device__ __forceinline__ u32 tr_tf32(float v) { return (__float_as_uint(v) + 0x1000u) & 0xffffe000u; }

#if defined(RESID_EMU_H)
__device__ __forceinline__ void tr_mma(float* d, const u32* a, const u32* b) { emu::mma_tf32(d, a, b); }
#elif __CUDA_ARCH__ >= 800
// d += A B on the warp's fragments (the layouts are in tests/kernels/emu.h, mma_tf32).
__device__ __forceinline__ void tr_mma(float* d, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
// Not reached: the host does not launch the tensor-core kernels below sm_80.
__device__ __forceinline__ void tr_mma(float*, const u32*, const u32*) { __trap(); }
#endif

// v as hi + lo, both TF32.
__device__ __forceinline__ void tr_split(float v, u32* hi, u32* lo) {
    *hi = tr_tf32(v);
    *lo = tr_tf32(v - __uint_as_float(*hi));
}

// d += A B to about float accuracy from the split operands: the small terms first.
__device__ __forceinline__ void tr_mma3(float* d, const u32* ahi, const u32* alo, const u32* bhi,
                                        const u32* blo) {
    tr_mma(d, alo, bhi);
    tr_mma(d, ahi, blo);
    tr_mma(d, ahi, bhi);
}

// The tensor-core tile: TC_TW x TC_TH output points, two tile rows a warp (two 16-point row
// halves each: four 16-row blocks of the product). The input window of 8 channels sits in shared memory
// with planes TC_PLANE floats apart: TC_PLANE = 8 (mod 32) puts the 32 values of an operand
// fragment (8 points x 4 channels) in 32 different banks.
#define TC_TW 32
#define TC_TH 16
#define TC_PITCH (TC_TW + 2)
#define TC_PLANE 616
static_assert(TC_PLANE >= (TC_TH + 2) * TC_PITCH && TC_PLANE % 32 == 8, "TC_PLANE");
static_assert(TC_TH == 2 * 8, "a warp takes two tile rows");

// tr_conv3_tc with NT groups of 8 output channels a block.
template <int NT>
__device__ __forceinline__ void tr_conv3_tc_tile(const float* x, int cin, int B, int h, int w,
                                                 const float* wt, const float* bias, int cout, int relu,
                                                 int flip, const float* add, const float* post, float* out,
                                                 float* tile, u32* whi, u32* wlo) {
    const int tiles_x = (w + TC_TW - 1) / TC_TW;
    const int tx = (int)blockIdx.x % tiles_x, ty = (int)blockIdx.x / tiles_x;
    const int n0 = blockIdx.y * 8 * NT, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
    // acc[mt][nt][e]: point (row 2 warp + mt / 2, column 16 (mt % 2) + g + 8 (e / 2)) of the
    // tile, channel n0 + 8 nt + 2 q + e % 2.
    float acc[4][NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int o = n0 + 8 * nt + 2 * q + (e & 1);
            const float v = flip || o >= cout ? 0.0f : bias[o];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) acc[mt][nt][e] = v;
        }
    const i64 plane = (i64)h * w;
    for (int c0 = 0; c0 < cin; c0 += 8) {
        __syncthreads();
        // The window: tile row r (of 8 (TC_TH + 2)), warp by warp, its lanes along it.
        for (int r = warp; r < 8 * (TC_TH + 2); r += 8) {
            const int c = r / (TC_TH + 2), yy = ty * TC_TH - 1 + r % (TC_TH + 2);
            const bool row_ok = c0 + c < cin && yy >= 0 && yy < h;
            const float* src = x + ((i64)(c0 + c) * B + b) * plane + (i64)yy * w;
            float* dst = tile + c * TC_PLANE + (r % (TC_TH + 2)) * TC_PITCH;
            for (int col = lane; col < TC_PITCH; col += 32) {
                const int xx = tx * TC_TW - 1 + col;
                dst[col] = row_ok && xx >= 0 && xx < w ? src[xx] : 0.0f;
            }
        }
        // The taps, split: w*[(k * 8 + c) * 8 NT + n] between input channel c0 + c and output
        // channel n0 + n; flipped (the input gradient) they are the layer's tap 8 - k between
        // its output channel c0 + c and input channel n0 + n.
        for (int e = threadIdx.x; e < 9 * 8 * 8 * NT; e += blockDim.x) {
            const int n = e % (8 * NT), c = (e / (8 * NT)) % 8, k = e / (8 * 8 * NT);
            const int o = n0 + n, i = c0 + c;
            float v = 0.0f;
            if (o < cout && i < cin) v = flip ? wt[(i * cout + o) * 9 + 8 - k] : wt[(o * cin + i) * 9 + k];
            tr_split(v, &whi[e], &wlo[e]);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 9; k++) {
            // B[c][n] = tap k between channel c0 + c and n0 + 8 nt + n: b[0] = B[q][g], b[1] = B[q + 4][g].
            u32 bh[NT][2], bl[NT][2];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int at = (k * 8 + q) * 8 * NT + 8 * nt + g;
                bh[nt][0] = whi[at], bl[nt][0] = wlo[at];
                bh[nt][1] = whi[at + 4 * 8 * NT], bl[nt][1] = wlo[at + 4 * 8 * NT];
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                // A[m][c] = input channel c0 + c at output point m of the row half, shifted by the tap.
                const float* a = tile + (2 * warp + mt / 2 + k / 3) * TC_PITCH + 16 * (mt % 2) + k % 3 + g;
                const float av[4] = {a[q * TC_PLANE], a[q * TC_PLANE + 8], a[(q + 4) * TC_PLANE],
                                     a[(q + 4) * TC_PLANE + 8]};
                u32 ah[4], al[4];
#pragma unroll
                for (int j = 0; j < 4; j++) tr_split(av[j], &ah[j], &al[j]);
#pragma unroll
                for (int nt = 0; nt < NT; nt++) tr_mma3(acc[mt][nt], ah, al, bh[nt], bl[nt]);
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        const int oy = ty * TC_TH + 2 * warp + mt / 2;
        if (oy >= h) continue;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int ox = tx * TC_TW + 16 * (mt % 2) + g + 8 * (e >> 1);
                const int o = n0 + 8 * nt + 2 * q + (e & 1);
                if (ox >= w || o >= cout) continue;
                const i64 idx = ((i64)o * B + b) * plane + (i64)oy * w + ox;
                const float v = acc[mt][nt][e];
                out[idx] = flip ? tr_finish_dx(v, idx, add, post) : relu ? fmaxf(v, 0.0f) : v;
            }
    }
}

// A 3x3 stride-1 layer on the tensor cores (see above), h x w in and out, cin channels read
// from x, cout written to out. flip = 0: the forward pass (taps wt[o][i][k], plus bias,
// optional ReLU), as tr_conv3. flip = 1: the input gradient, as tr_conv3_bx1: x is the
// output gradient (cin = the layer's output channels), out the input gradient (cout = the
// layer's input channels), the taps flipped and transposed, plus `add`, masked by `post`.
// A block takes 16 output channels when cout > 8, else 8. Grid (ceil(w / TC_TW) ceil(h /
// TC_TH), ceil(cout / (cout > 8 ? 16 : 8)), B), 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    tr_conv3_tc(const float* x, int cin, int B, int h, int w, const float* wt, const float* bias, int cout,
                int relu, int flip, const float* add, const float* post, float* out) {
    __shared__ float tile[8 * TC_PLANE];
    __shared__ u32 whi[9 * 8 * 16], wlo[9 * 8 * 16];
    if (cout > 8)
        tr_conv3_tc_tile<2>(x, cin, B, h, w, wt, bias, cout, relu, flip, add, post, out, tile, whi, wlo);
    else
        tr_conv3_tc_tile<1>(x, cin, B, h, w, wt, bias, cout, relu, flip, add, post, out, tile, whi, wlo);
}

// Input gradient of a 3x3 convolution with stride 2 (input h x w, output ho x wo), input
// channels G blockIdx.y .. + G. At stride 2 the input point (2a + py, 2c + px) takes tap row
// 1 from output row a when py = 0, and tap rows 0 and 2 from output rows a + 1 and a when
// py = 1 (columns alike): the 2 x 2 input points over output point (a, c) need the output
// gradients at (a .. a + 1, c .. c + 1) only, nine taps in all. A thread takes two such
// squares, output rows a = 2q and 2q + 1 (three output rows), so each gradient value it
// loads serves up to nine taps. Grid (ceil(ceil(ho / 2) wo / 256), ceil(cin / G), B).
extern "C" __global__ void tr_conv3_bx2(const float* dout, int cout, int B, int h, int w,
                                        const float* wt, int cin, const float* add,
                                        const float* post, float* dx) {
    __shared__ float wsh[STAGE_CH * 9 * G];
    const int ho = (h + 1) / 2, wo = (w + 1) / 2;
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = idx < (i64)((ho + 1) / 2) * wo;
    const int q = active ? (int)(idx / wo) : 0, c = active ? (int)(idx % wo) : 0;
    const int a0 = 2 * q;
    // acc[m][py][px][j]: input point (2 (a0 + m) + py, 2 c + px), channel i0 + j.
    float acc[2][2][2][G];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int p = 0; p < 4; p++)
#pragma unroll
            for (int j = 0; j < G; j++) acc[m][p / 2][p % 2][j] = 0.0f;
    // Which of the three output rows and two columns lie inside the plane.
    const bool r1 = a0 + 1 < ho, r2 = a0 + 2 < ho, c1 = c + 1 < wo;
    for (int oc = 0; oc < cout; oc += STAGE_CH) {
        const int on = cout - oc < STAGE_CH ? cout - oc : STAGE_CH;
        __syncthreads();
        // wsh[(o * 9 + k) * G + j]: tap k of output channel oc + o, input channel i0 + j.
        for (int t = threadIdx.x; t < on * 9 * G; t += blockDim.x) {
            const int o = t / (9 * G), k = (t / G) % 9, j = t % G;
            const int ic = i0 + j < cin ? i0 + j : cin - 1;
            wsh[t] = wt[((oc + o) * cin + ic) * 9 + k];
        }
        __syncthreads();
        if (!active) continue;
        const float* dp = dout + ((i64)oc * B + b) * ho * wo + (i64)a0 * wo + c;
        const i64 ostep = (i64)B * ho * wo;
        for (int o = 0; o < on; o++, dp += ostep) {
            // p[r][e]: output gradient at (a0 + r, c + e), zero outside the plane.
            float p[3][2];
            p[0][0] = dp[0];
            p[0][1] = c1 ? dp[1] : 0.0f;
            p[1][0] = r1 ? dp[wo] : 0.0f;
            p[1][1] = r1 && c1 ? dp[wo + 1] : 0.0f;
            p[2][0] = r2 ? dp[2 * wo] : 0.0f;
            p[2][1] = r2 && c1 ? dp[2 * wo + 1] : 0.0f;
            const float* wk = wsh + o * 9 * G;
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float w00 = wk[0 * G + j], w01 = wk[1 * G + j], w02 = wk[2 * G + j];
                const float w10 = wk[3 * G + j], w11 = wk[4 * G + j], w12 = wk[5 * G + j];
                const float w20 = wk[6 * G + j], w21 = wk[7 * G + j], w22 = wk[8 * G + j];
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const float d00 = p[m][0], d01 = p[m][1], d10 = p[m + 1][0], d11 = p[m + 1][1];
                    acc[m][0][0][j] += w11 * d00;
                    acc[m][0][1][j] += w10 * d01;
                    acc[m][0][1][j] += w12 * d00;
                    acc[m][1][0][j] += w01 * d10;
                    acc[m][1][0][j] += w21 * d00;
                    acc[m][1][1][j] += w00 * d11;
                    acc[m][1][1][j] += w02 * d10;
                    acc[m][1][1][j] += w20 * d01;
                    acc[m][1][1][j] += w22 * d00;
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int p = 0; p < 4; p++) {
            const int y = 2 * (a0 + m) + p / 2, xx = 2 * c + p % 2;
            if (y >= h || xx >= w) continue;
#pragma unroll
            for (int j = 0; j < G; j++) {
                if (i0 + j >= cin) continue;
                const i64 at = ((i64)(i0 + j) * B + b) * h * w + (i64)y * w + xx;
                dx[at] = tr_finish_dx(acc[m][p / 2][p % 2][j], at, add, post);
            }
        }
}

// Input gradient of the 2x2 transposed convolution (input h2 x w2, output h x w), input
// channels G blockIdx.y .. + G: a thread's input point gathers its 2 x 2 outputs' gradients,
// the taps read from shared memory alike by the whole block. Grid (ceil(h2 w2 / 256),
// ceil(cin / G), B).
extern "C" __global__ void tr_deconv2_bx(const float* dout, int cout, int B, int h, int w,
                                         const float* wt, int cin, int h2, int w2,
                                         const float* post, float* dx) {
    __shared__ float4 wsh[STAGE_CH * G];
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = p < (i64)h2 * w2;
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    const int y2 = active ? (int)(p / w2) : 0, x2 = active ? (int)(p % w2) : 0;
    const bool row1 = 2 * y2 + 1 < h, col1 = 2 * x2 + 1 < w;
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) acc[j] = 0.0f;
    const float* d = dout + (i64)b * h * w + (i64)2 * y2 * w + 2 * x2;
    const i64 ostep = (i64)B * h * w;
    for (int oc = 0; oc < cout; oc += STAGE_CH) {
        const int on = cout - oc < STAGE_CH ? cout - oc : STAGE_CH;
        __syncthreads();
        tr_stage_deconv2_taps(wt, cin, i0, cin, oc, on, false, wsh);
        __syncthreads();
        if (!active) continue;
        for (int o = 0; o < on; o++) {
            const float* dd = d + (oc + o) * ostep;
            const float d0 = dd[0], d1 = col1 ? dd[1] : 0.0f;
            const float d2 = row1 ? dd[w] : 0.0f, d3 = row1 && col1 ? dd[w + 1] : 0.0f;
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float4 q = wsh[o * G + j];
                acc[j] += q.x * d0;
                acc[j] += q.y * d1;
                acc[j] += q.z * d2;
                acc[j] += q.w * d3;
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int j = 0; j < G; j++) {
        if (i0 + j >= cin) continue;
        const i64 idx = ((i64)(i0 + j) * B + b) * h2 * w2 + p;
        dx[idx] = tr_finish_dx(acc[j], idx, 0, post);
    }
}

// Input gradient of a 1x1 convolution. Grid (ceil(n / 256), ceil(cin / G), B).
extern "C" __global__ void tr_conv1_bx(const float* dout, int cout, int B, long long n,
                                       const float* wt, int cin, const float* post, float* dx) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    int ic[G];
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        ic[j] = i0 + j < cin ? i0 + j : cin - 1;
        acc[j] = 0.0f;
    }
    for (int o = 0; o < cout; o++) {
        const float d = dout[((i64)o * B + b) * n + p];
#pragma unroll
        for (int j = 0; j < G; j++) acc[j] += wt[o * cin + ic[j]] * d;
    }
#pragma unroll
    for (int j = 0; j < G; j++) {
        if (i0 + j >= cin) continue;
        const i64 idx = ((i64)(i0 + j) * B + b) * n + p;
        dx[idx] = tr_finish_dx(acc[j], idx, 0, post);
    }
}

// The rows [lo, hi) of chunk blockIdx.y of CH = gridDim.y chunks of R rows. The weight
// gradient kernels walk rows with their lanes along a row: no division per point.
__device__ __forceinline__ void tr_rows(int R, int* lo, int* hi) {
    const int len = (R + gridDim.y - 1) / gridDim.y;
    *lo = blockIdx.y * len;
    *hi = *lo + len < R ? *lo + len : R;
}

// Sums each of the block's N values per thread over its 256 threads (butterfly within each
// warp, then the 8 warps in order: a fixed order) and returns the sums in sh[0 .. N) (sh holds
// 8 N floats).
template <int N>
__device__ __forceinline__ void tr_block_sums(const float* v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < N; j++) {
        float a = v[j];
#pragma unroll
        for (int d = 16; d > 0; d >>= 1) a += __shfl_xor_sync(0xffffffffu, a, d);
        if (lane == 0) sh[warp * N + j] = a;
    }
    __syncthreads();
    float a = 0.0f;
    if ((int)threadIdx.x < N)
        for (int k = 0; k < 8; k++) a += sh[k * N + threadIdx.x];
    __syncthreads();
    if ((int)threadIdx.x < N) sh[threadIdx.x] = a;
    __syncthreads();
}

// Writes a block's gradient sums: `sums` (G x taps) for output channels o0 .. o0 + G (those
// below cout) against input channel i, and for i = 0 their biases `bias` (G), into
// partial[chunk * np + index].
__device__ __forceinline__ void tr_store(const float* sums, const float* bias, int taps, int o0, int cout,
                                         int cin, int i, int wbase, int bbase, int np, float* partial) {
    float* dst = partial + (i64)blockIdx.y * np;
    const int t = threadIdx.x;
    if (t < G * taps) {
        const int j = t / taps, k = t % taps;
        if (o0 + j < cout) dst[wbase + ((o0 + j) * cin + i) * taps + k] = sums[t];
    } else if (t < G * taps + G && i == 0) {
        const int j = t - G * taps;
        if (o0 + j < cout) dst[bbase + o0 + j] = bias[j];
    }
}

// Input row yy's three taps for an output column (`src` points at its leftmost tap's column
// in row 0; `cv`: which of the three columns lie inside the plane), zero outside the plane.
__device__ __forceinline__ void tr_row3(const float* src, int h, int w, int yy, const bool* cv, float* v) {
    const bool ok = yy >= 0 && yy < h;
    const float* row = src + (i64)yy * w;
#pragma unroll
    for (int kx = 0; kx < 3; kx++) v[kx] = ok && cv[kx] ? row[kx] : 0.0f;
}

// One output point's terms of tr_conv3_bw: its G output gradients d against its 3x3 input
// window (rows v0, v1, v2).
__device__ __forceinline__ void tr_bw_point(const float* d, const float* v0, const float* v1,
                                            const float* v2, float* s) {
#pragma unroll
    for (int j = 0; j < G; j++) {
        s[G * 9 + j] += d[j];
#pragma unroll
        for (int kx = 0; kx < 3; kx++) {
            s[j * 9 + kx] += d[j] * v0[kx];
            s[j * 9 + 3 + kx] += d[j] * v1[kx];
            s[j * 9 + 6 + kx] += d[j] * v2[kx];
        }
    }
}

// tr_conv3_bw's sums over output rows [lo, hi) of the batch (rows of all patches in turn) at
// stride S, into s (G x 9 weight sums, then G bias sums). A lane walks down its column two
// output rows at a time, keeping the input rows they share in registers: each step loads 2 S
// input rows of three values for two points (nine a point without the window).
template <int S>
__device__ __forceinline__ void tr_conv3_bw_rows(const float* x, int i, int B, int h, int w,
                                                 const float* dout, int o0, int cout, int lo,
                                                 int hi, float* s) {
    const int ho = (h + S - 1) / S, wo = (w + S - 1) / S;
    for (int ox = threadIdx.x & 31; ox < wo; ox += 32) {
        const int xi = ox * S - 1;
        bool cv[3];
#pragma unroll
        for (int kx = 0; kx < 3; kx++) cv[kx] = xi + kx >= 0 && xi + kx < w;
        for (int r = lo; r < hi;) {
            // The rows of one patch.
            const int b = r / ho, oy = r - b * ho;
            const int end = (b + 1) * ho < hi ? (b + 1) * ho : hi;
            const float* src = x + ((i64)i * B + b) * h * w + xi;
            // Output channels past cout read the last one's gradient; their sums are not stored.
            const float* dp[G];
#pragma unroll
            for (int j = 0; j < G; j++)
                dp[j] = dout + ((i64)(o0 + j < cout ? o0 + j : cout - 1) * B + b) * ho * wo +
                        (i64)oy * wo + ox;
            // v[0 .. 2]: input rows y .. y + 2, output row r's window.
            int y = oy * S - 1;
            float v[S + 3][3];
            tr_row3(src, h, w, y, cv, v[0]);
            tr_row3(src, h, w, y + 1, cv, v[1]);
            tr_row3(src, h, w, y + 2, cv, v[2]);
            for (; r + 1 < end; r += 2) {
#pragma unroll
                for (int k = 3; k < S + 3; k++) tr_row3(src, h, w, y + k, cv, v[k]);
                float d0[G], d1[G];
#pragma unroll
                for (int j = 0; j < G; j++) {
                    d0[j] = dp[j][0];
                    d1[j] = dp[j][wo];
                    dp[j] += 2 * wo;
                }
                tr_bw_point(d0, v[0], v[1], v[2], s);
                tr_bw_point(d1, v[S], v[S + 1], v[S + 2], s);
                y += 2 * S;
#pragma unroll
                for (int kx = 0; kx < 3; kx++) {
                    if (S == 1) v[0][kx] = v[2][kx], v[1][kx] = v[3][kx];
                    else v[0][kx] = v[4][kx];
                }
                if (S == 2) tr_row3(src, h, w, y + 1, cv, v[1]);
                tr_row3(src, h, w, y + 2, cv, v[2]);
            }
            if (r < end) {
                float d0[G];
#pragma unroll
                for (int j = 0; j < G; j++) d0[j] = dp[j][0];
                tr_bw_point(d0, v[0], v[1], v[2], s);
                r++;
            }
        }
    }
}

// Weight and bias gradients of a 3x3 convolution (stride 1 or 2), split over CH = gridDim.y
// chunks of the output rows: block (x, chunk), x = input channel i + cin * output group,
// writes the partial sums of output channels G group .. + G against input channel i (and,
// for i = 0, their biases). Each warp takes an eighth of the chunk's rows, in order, its
// lanes along a row. Grid (cin * ceil(cout / G), CH), 256 threads.
extern "C" __global__ void __launch_bounds__(256, 2)
    tr_conv3_bw(const float* x, int cin, int B, int h, int w, int stride, const float* dout, int cout,
                int wbase, int bbase, int np, float* partial) {
    __shared__ float sh[8 * (G * 9 + G)];
    const int ho = (h + stride - 1) / stride;
    const int i = blockIdx.x % cin, o0 = (blockIdx.x / cin) * G;
    const int warp = threadIdx.x >> 5;
    int lo, hi;
    tr_rows(B * ho, &lo, &hi);
    const int per = (hi - lo + 7) / 8;
    const int wlo = lo + warp * per, whi = wlo + per < hi ? wlo + per : hi;
    float s[G * 9 + G];
#pragma unroll
    for (int j = 0; j < G * 9 + G; j++) s[j] = 0.0f;
    if (stride == 1)
        tr_conv3_bw_rows<1>(x, i, B, h, w, dout, o0, cout, wlo, whi, s);
    else
        tr_conv3_bw_rows<2>(x, i, B, h, w, dout, o0, cout, wlo, whi, s);
    tr_block_sums<G * 9 + G>(s, sh);
    tr_store(sh, sh + G * 9, 9, o0, cout, cin, i, wbase, bbase, np, partial);
}

// ---- tr_conv3_bw_tc: the 3x3 weight gradients on the tensor cores ----
//
// The product D[m][n] = sum over output points p of A[m][p] B[p][n]: B[p][n] is output channel
// n0 + n's gradient at p; matrix row m of 16-row block j is input channel c0 + m % 8 at p's
// window tap 2 j + m / 8 (tap 9: the constant 1, whose row gives the bias sums). A k-step is
// 8 consecutive output points of a row. Lane (g, q) holds channel c0 + g's 3 x 3 windows of
// output points p0 + q and p0 + q + 4, split, walking down the rows (each input value loaded
// and split once), and output channel n0 + g's gradient at both points. At stride 2 an output
// row's window shares one input row with the next one's (at stride 1, two).

// An input row's values for the lane's two windows at stride S (columns S xa - 1 .. S xa + 1
// and S (xa + 4) - 1 .. + 1; `row` points at column S xa), split; zero where the row or
// column `cv` is outside the plane (or the lane has no channel: cv all false).
template <int S>
__device__ __forceinline__ void tr_bw_tc_load(const float* row, bool row_ok, const bool* cv, u32* hi,
                                              u32* lo) {
#pragma unroll
    for (int k = 0; k < 6; k++)
        tr_split(row_ok && cv[k] ? row[4 * S * (k / 3) + k % 3 - 1] : 0.0f, &hi[k], &lo[k]);
}

// Output row yy's new input rows' values for the lane's windows (stride 1: row yy + 1;
// stride 2: rows 2 yy and 2 yy + 1; `row` points at the first of them, column S xa), zero
// outside the plane, not yet split: fetched a row ahead of their products.
template <int S>
__device__ __forceinline__ void tr_bw_tc_fetch(const float* row, int yy, int h, int w, const bool* cv,
                                               float (&px)[S][6]) {
#pragma unroll
    for (int s = 0; s < S; s++) {
        const bool ok = S * yy + 2 - S + s < h;
#pragma unroll
        for (int k = 0; k < 6; k++) px[s][k] = ok && cv[k] ? row[s * w + 4 * S * (k / 3) + k % 3 - 1] : 0.0f;
    }
}

// Output row y's products: window slots (U, U + 1, U + 2) % 3 hold its input rows S y - 1,
// S y, S y + 1, of which the last (stride 1; at stride 2 the last two) arrive here in px,
// and its output gradient (columns xa, xa + 4) in pd, fetched during the row before. Row
// y + 1's are fetched from xr and dr (planes h x w and ho x wo) before this row's products,
// so their loads are in flight while the tensor cores work; both move down a row. The next
// row's slots start at (U + S) % 3.
template <int U, int S>
__device__ __forceinline__ void tr_bw_tc_row(const float*& xr, const float*& dr, int y, int h, int ho, int w,
                                             int wo, const bool* cv, const bool* dv, float (&px)[S][6],
                                             float (&pd)[2], u32 (&wh)[3][6], u32 (&wl)[3][6],
                                             float (&acc)[5][4]) {
#pragma unroll
    for (int k = 0; k < 6; k++) {
        if (S == 2) tr_split(px[0][k], &wh[(U + 1) % 3][k], &wl[(U + 1) % 3][k]);
        tr_split(px[S - 1][k], &wh[(U + 2) % 3][k], &wl[(U + 2) % 3][k]);
    }
    u32 bh[2], bl[2];
    tr_split(pd[0], &bh[0], &bl[0]);
    tr_split(pd[1], &bh[1], &bl[1]);
    tr_bw_tc_fetch<S>(xr, y + 1, h, w, cv, px);
    const bool next = y + 1 < ho;
    pd[0] = next && dv[0] ? dr[0] : 0.0f;
    pd[1] = next && dv[1] ? dr[4] : 0.0f;
    xr += S * w;
    dr += wo;
    const u32 one = 0x3f800000u;
#pragma unroll
    for (int j = 0; j < 5; j++) {
        // A: a[0] = (tap 2 j, point xa), a[1] = (tap 2 j + 1, xa), a[2], a[3] the same at xa + 4.
        u32 ah[4], al[4];
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int t = 2 * j + (f & 1), pt = f >> 1;
            if (t < 9) {
                ah[f] = wh[(U + t / 3) % 3][3 * pt + t % 3];
                al[f] = wl[(U + t / 3) % 3][3 * pt + t % 3];
            } else {
                ah[f] = one;
                al[f] = 0u;
            }
        }
        tr_mma3(acc[j], ah, al, bh, bl);
    }
}

// The sums of tr_conv3_bw_tc's block at stride S into the lane's acc: input channel c of x
// (planes h x w), output channel o of dout (planes ho x wo), over output rows [lo, hi) of the
// batch. The three output rows a loop step takes come back to the first one's window slots.
template <int S>
__device__ __forceinline__ void tr_conv3_bw_tc_rows(const float* x, int c, bool ok_c, int B, int h, int w,
                                                    const float* dout, int o, bool ok_o, int lo, int hi,
                                                    float (&acc)[5][4]) {
    constexpr int U1 = S % 3, U2 = (2 * S) % 3;
    const int ho = (h + S - 1) / S, wo = (w + S - 1) / S;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, q = lane & 3;
    const int strips = (wo + 7) / 8, segs = strips >= 8 ? 1 : 8 / strips;
    const int seg_len = (hi - lo + segs - 1) / segs;
    for (int item = warp; item < strips * segs; item += 8) {
        const int xa = 8 * (item % strips) + q;
        // Which of the lane's window columns and output points lie inside the planes.
        bool cv[6], dv[2] = {ok_o && xa < wo, ok_o && xa + 4 < wo};
#pragma unroll
        for (int k = 0; k < 6; k++) {
            const int xx = S * xa + 4 * S * (k / 3) + k % 3 - 1;
            cv[k] = ok_c && xx >= 0 && xx < w;
        }
        int r = lo + (item / strips) * seg_len;
        const int rend = r + seg_len < hi ? r + seg_len : hi;
        while (r < rend) {
            // Output rows y0 .. yend of patch b.
            const int b = r / ho, y0 = r - b * ho;
            const int yend = ho < y0 + (rend - r) ? ho : y0 + (rend - r);
            const float* xs = x + ((i64)c * B + b) * h * w + S * xa;
            u32 wh[3][6], wl[3][6];
            tr_bw_tc_load<S>(xs + (i64)(S * y0 - 1) * w, y0 > 0, cv, wh[0], wl[0]);
            if (S == 1) tr_bw_tc_load<S>(xs + (i64)y0 * w, true, cv, wh[1], wl[1]);
            // Row y0's new input rows and output gradient, then row by row a row ahead.
            const float* xr = xs + (i64)(S * y0 + 2 - S) * w;
            const float* dr = dout + ((i64)o * B + b) * ho * wo + (i64)y0 * wo + xa;
            float px[S][6], pd[2];
            tr_bw_tc_fetch<S>(xr, y0, h, w, cv, px);
            pd[0] = dv[0] ? dr[0] : 0.0f;
            pd[1] = dv[1] ? dr[4] : 0.0f;
            xr += S * w;
            dr += wo;
            int y = y0;
            for (; y + 3 <= yend; y += 3) {
                tr_bw_tc_row<0, S>(xr, dr, y, h, ho, w, wo, cv, dv, px, pd, wh, wl, acc);
                tr_bw_tc_row<U1, S>(xr, dr, y + 1, h, ho, w, wo, cv, dv, px, pd, wh, wl, acc);
                tr_bw_tc_row<U2, S>(xr, dr, y + 2, h, ho, w, wo, cv, dv, px, pd, wh, wl, acc);
            }
            if (y < yend) tr_bw_tc_row<0, S>(xr, dr, y, h, ho, w, wo, cv, dv, px, pd, wh, wl, acc);
            if (y + 1 < yend) tr_bw_tc_row<U1, S>(xr, dr, y + 1, h, ho, w, wo, cv, dv, px, pd, wh, wl, acc);
            r += yend - y0;
        }
    }
}

// Weight and bias gradients of a 3x3 convolution (stride 1 or 2) on the tensor cores, as
// tr_conv3_bw: block (x, chunk) with x = input chunk + ceil(cin / 8) * output group covers
// input channels c0 .. c0 + 8 against output channels n0 .. n0 + 8 over the chunk's output rows
// (tr_rows). A warp takes a strip of 8 output columns and walks down the rows of a patch;
// narrow planes (fewer than 8 strips) split the rows among the warps too. The warps' sums are
// added in order in shared memory. Grid (ceil(cin / 8) ceil(cout / 8), CH), 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    tr_conv3_bw_tc(const float* x, int cin, int B, int h, int w, int stride, const float* dout, int cout,
                   int wbase, int bbase, int np, float* partial) {
    __shared__ float sh[8 * 5 * 4 * 32];
    const int cchunks = (cin + 7) / 8;
    const int c0 = 8 * ((int)blockIdx.x % cchunks), n0 = 8 * ((int)blockIdx.x / cchunks);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2;
    int lo, hi;
    tr_rows(B * ((h + stride - 1) / stride), &lo, &hi);
    const bool ok_c = c0 + g < cin, ok_o = n0 + g < cout;
    // Lanes past the channel counts read a valid plane; their values are zeroed.
    const int c = ok_c ? c0 + g : cin - 1, o = ok_o ? n0 + g : cout - 1;
    float acc[5][4];
#pragma unroll
    for (int j = 0; j < 5; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
    if (stride == 1)
        tr_conv3_bw_tc_rows<1>(x, c, ok_c, B, h, w, dout, o, ok_o, lo, hi, acc);
    else
        tr_conv3_bw_tc_rows<2>(x, c, ok_c, B, h, w, dout, o, ok_o, lo, hi, acc);
    // acc[j][e] of lane (g, q): tap 2 j + e / 2, input channel c0 + g, output n0 + 2 q + e % 2.
#pragma unroll
    for (int j = 0; j < 5; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) sh[(warp * 20 + j * 4 + e) * 32 + lane] = acc[j][e];
    __syncthreads();
    float* dst = partial + (i64)blockIdx.y * np;
    for (int t = threadIdx.x; t < 20 * 32; t += blockDim.x) {
        float v = 0.0f;
        for (int k = 0; k < 8; k++) v += sh[k * 20 * 32 + t];
        const int j = t / 128, e = (t / 32) % 4, l = t % 32;
        const int tap = 2 * j + (e >> 1), i = c0 + (l >> 2), oo = n0 + 2 * (l & 3) + (e & 1);
        if (oo >= cout) continue;
        if (tap < 9) {
            if (i < cin) dst[wbase + (oo * cin + i) * 9 + tap] = v;
        } else if (i == 0) {
            dst[bbase + oo] = v;
        }
    }
}

// tr_deconv2_bw's sums over input rows [lo, hi) of the batch (lanes along the rows) for input
// channels i and i + 1 (xb: channel i + 1's planes, null when i + 1 = cin) into s: G x 4 tap
// sums for each channel, then, with Bias, G bias sums (the 2 x 2 outputs of every input).
template <bool Bias>
__device__ __forceinline__ void tr_deconv2_bw_rows(const float* xa, const float* xb, int B, int h2,
                                                   int w2, int h, int w, const float* dout, int o0,
                                                   int cout, int lo, int hi, float* s) {
    for (int r = lo + (threadIdx.x >> 5); r < hi; r += 8) {
        const int b = r / h2, y2 = r - b * h2;
        const i64 at = ((i64)b * h2 + y2) * w2;
        // Output channels past cout read the last one's gradient; their sums are not stored.
        const float* dp[G];
#pragma unroll
        for (int j = 0; j < G; j++)
            dp[j] = dout + ((i64)(o0 + j < cout ? o0 + j : cout - 1) * B + b) * h * w + (i64)2 * y2 * w;
        const bool row1 = 2 * y2 + 1 < h;
        for (int x2 = threadIdx.x & 31; x2 < w2; x2 += 32) {
            const float va = xa[at + x2], vb = xb ? xb[at + x2] : 0.0f;
            const bool col1 = 2 * x2 + 1 < w;
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float* d = dp[j] + 2 * x2;
                const float d00 = d[0], d01 = col1 ? d[1] : 0.0f;
                const float d10 = row1 ? d[w] : 0.0f, d11 = row1 && col1 ? d[w + 1] : 0.0f;
                s[j * 4 + 0] += d00 * va;
                s[j * 4 + 1] += d01 * va;
                s[j * 4 + 2] += d10 * va;
                s[j * 4 + 3] += d11 * va;
                s[G * 4 + j * 4 + 0] += d00 * vb;
                s[G * 4 + j * 4 + 1] += d01 * vb;
                s[G * 4 + j * 4 + 2] += d10 * vb;
                s[G * 4 + j * 4 + 3] += d11 * vb;
                if (Bias) s[2 * G * 4 + j] += (d00 + d01) + (d10 + d11);
            }
        }
    }
}

// As tr_conv3_bw for the 2x2 transposed convolution (input h2 x w2, output h x w), two input
// channels a block: block x = input channel pair p + ceil(cin / 2) * output group covers input
// channels 2p and 2p + 1 (each gradient value loaded serves both). Grid (ceil(cin / 2)
// ceil(cout / G), CH), 256 threads.
extern "C" __global__ void tr_deconv2_bw(const float* x, int cin, int B, int h2, int w2, int h, int w,
                                         const float* dout, int cout, int wbase, int bbase, int np,
                                         float* partial) {
    __shared__ float sh[8 * (2 * G * 4 + G)];
    const int pairs = (cin + 1) / 2;
    const int i = 2 * (blockIdx.x % pairs), o0 = (blockIdx.x / pairs) * G;
    int lo, hi;
    tr_rows(B * h2, &lo, &hi);
    float s[2 * G * 4 + G];
#pragma unroll
    for (int j = 0; j < 2 * G * 4 + G; j++) s[j] = 0.0f;
    const i64 plane = (i64)B * h2 * w2;
    const float* xa = x + i * plane;
    const float* xb = i + 1 < cin ? xa + plane : 0;
    if (i == 0)
        tr_deconv2_bw_rows<true>(xa, xb, B, h2, w2, h, w, dout, o0, cout, lo, hi, s);
    else
        tr_deconv2_bw_rows<false>(xa, xb, B, h2, w2, h, w, dout, o0, cout, lo, hi, s);
    tr_block_sums<2 * G * 4 + G>(s, sh);
    // sh: channel i's taps, channel i + 1's, the biases (stored with channel 0 only).
    const float* bias_sums = sh + 2 * G * 4;
    tr_store(sh, bias_sums, 4, o0, cout, cin, i, wbase, bbase, np, partial);
    if (i + 1 < cin) tr_store(sh + G * 4, bias_sums, 4, o0, cout, cin, i + 1, wbase, bbase, np, partial);
}

// ---- tr_deconv2_bw_tc: the transposed convolution's weight gradients on the tensor cores ----
//
// For each tap t = 2 ty + tx, D_t[m][n] = sum over input points p of A[m][p] B_t[p][n]: A[m][p]
// is input channel c0 + m at p (16 channels a block; rows past cin are zero), B_t[p][n] output
// channel n0 + n's gradient at p's output (2 y2 + ty, 2 x2 + tx) (zero where the output is
// cropped). A k-step is 8 consecutive input points of a row: lane (g, q) holds input channels
// c0 + g and c0 + g + 8 at points x2 + q and x2 + q + 4, split, and output channel n0 + g's
// gradients at both points' four outputs; the four taps share the A fragments. The bias sums
// (every output gradient, all taps) are kept by the lanes beside the products and stored by
// the blocks with c0 = 0. As tr_deconv2_bw otherwise: block (x, chunk), x = input chunk +
// ceil(cin / 16) * output group, over the chunk's input rows (tr_rows); a warp takes a strip of
// 8 input columns down its rows. Grid (ceil(cin / 16) ceil(cout / 8), CH), 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    tr_deconv2_bw_tc(const float* x, int cin, int B, int h2, int w2, int h, int w, const float* dout,
                     int cout, int wbase, int bbase, int np, float* partial) {
    // Per warp and lane: the 16 products' sums (tap, element), then the bias sum.
    __shared__ float sh[8 * 17 * 32];
    const int cchunks = (cin + 15) / 16;
    const int c0 = 16 * ((int)blockIdx.x % cchunks), n0 = 8 * ((int)blockIdx.x / cchunks);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
    int lo, hi;
    tr_rows(B * h2, &lo, &hi);
    const bool ok_a = c0 + g < cin, ok_b = c0 + g + 8 < cin, ok_o = n0 + g < cout;
    // Lanes past the channel counts read a valid plane; their values are zeroed.
    const i64 plane2 = (i64)B * h2 * w2;
    const float* xa_ch = x + (ok_a ? c0 + g : 0) * plane2;
    const float* xb_ch = x + (ok_b ? c0 + g + 8 : 0) * plane2;
    const float* d_ch = dout + (i64)(ok_o ? n0 + g : 0) * B * h * w;
    float acc[4][4], bsum = 0.0f;
#pragma unroll
    for (int t = 0; t < 4; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[t][e] = 0.0f;
    const int strips = (w2 + 7) / 8, segs = strips >= 8 ? 1 : 8 / strips;
    const int seg_len = (hi - lo + segs - 1) / segs;
    for (int item = warp; item < strips * segs; item += 8) {
        const int xa = 8 * (item % strips) + q;
        // Which of the lane's two points lie inside the input, and their outputs' columns
        // inside the (cropped) output.
        const bool pv[2] = {xa < w2, xa + 4 < w2};
        bool cv[2][2];
#pragma unroll
        for (int pt = 0; pt < 2; pt++)
#pragma unroll
            for (int tx = 0; tx < 2; tx++) cv[pt][tx] = ok_o && pv[pt] && 2 * (xa + 4 * pt) + tx < w;
        int r = lo + (item / strips) * seg_len;
        const int rend = r + seg_len < hi ? r + seg_len : hi;
#pragma unroll 2
        for (; r < rend; r++) {
            const int b = r / h2, y2 = r - b * h2;
            const i64 at = ((i64)b * h2 + y2) * w2 + xa;
            // a[0] = A[g][q], a[1] = A[g + 8][q], a[2] = A[g][q + 4], a[3] = A[g + 8][q + 4].
            u32 ah[4], al[4];
            tr_split(ok_a && pv[0] ? xa_ch[at] : 0.0f, &ah[0], &al[0]);
            tr_split(ok_b && pv[0] ? xb_ch[at] : 0.0f, &ah[1], &al[1]);
            tr_split(ok_a && pv[1] ? xa_ch[at + 4] : 0.0f, &ah[2], &al[2]);
            tr_split(ok_b && pv[1] ? xb_ch[at + 4] : 0.0f, &ah[3], &al[3]);
            const float* dr = d_ch + (i64)b * h * w + (i64)(2 * y2) * w + 2 * xa;
            const bool row1 = 2 * y2 + 1 < h;
#pragma unroll
            for (int t = 0; t < 4; t++) {
                const int ty = t >> 1, tx = t & 1;
                const bool rv = ty == 0 || row1;
                // b[0] = B[q][g] (point xa), b[1] = B[q + 4][g] (point xa + 4).
                const float d0 = rv && cv[0][tx] ? dr[ty * w + tx] : 0.0f;
                const float d1 = rv && cv[1][tx] ? dr[ty * w + 8 + tx] : 0.0f;
                bsum += d0 + d1;
                u32 bh[2], bl[2];
                tr_split(d0, &bh[0], &bl[0]);
                tr_split(d1, &bh[1], &bl[1]);
                tr_mma3(acc[t], ah, al, bh, bl);
            }
        }
    }
    // acc[t][e] of lane (g, q): tap t, input channel c0 + g + 8 (e / 2), output n0 + 2 q + e % 2.
#pragma unroll
    for (int t = 0; t < 4; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) sh[(warp * 17 + t * 4 + e) * 32 + lane] = acc[t][e];
    sh[(warp * 17 + 16) * 32 + lane] = bsum;
    __syncthreads();
    float* dst = partial + (i64)blockIdx.y * np;
    for (int k = threadIdx.x; k < 17 * 32; k += blockDim.x) {
        const int idx = k >> 5, l = k & 31;
        if (idx < 16) {
            float v = 0.0f;
            for (int u = 0; u < 8; u++) v += sh[u * 17 * 32 + k];
            const int t = idx >> 2, e = idx & 3;
            const int i = c0 + (l >> 2) + 8 * (e >> 1), oo = n0 + 2 * (l & 3) + (e & 1);
            if (i < cin && oo < cout) dst[wbase + (oo * cin + i) * 4 + t] = v;
        } else if ((l & 3) == 0 && c0 == 0 && n0 + (l >> 2) < cout) {
            // Output channel n0 + l / 4's bias: its four lanes, warp by warp.
            float v = 0.0f;
            for (int u = 0; u < 8; u++)
                for (int qq = 0; qq < 4; qq++) v += sh[u * 17 * 32 + k + qq];
            dst[bbase + n0 + (l >> 2)] = v;
        }
    }
}

// As tr_conv3_bw for a 1x1 convolution over planes of h x w points.
extern "C" __global__ void tr_conv1_bw(const float* x, int cin, int B, int h, int w,
                                       const float* dout, int cout, int wbase, int bbase, int np,
                                       float* partial) {
    __shared__ float sh[8 * (G + G)];
    const int i = blockIdx.x % cin, o0 = (blockIdx.x / cin) * G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int lo, hi;
    tr_rows(B * h, &lo, &hi);
    float s[G + G];
#pragma unroll
    for (int j = 0; j < G + G; j++) s[j] = 0.0f;
    for (int r = lo + warp; r < hi; r += 8) {
        const int b = r / h, y = r - b * h;
        const i64 at = (i64)y * w;
        const float* src = x + ((i64)i * B + b) * h * w + at;
        const float* drow = dout + ((i64)o0 * B + b) * h * w + at;
        const i64 dstep = (i64)B * h * w;
        for (int xx = lane; xx < w; xx += 32) {
            const float v = src[xx];
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float d = o0 + j < cout ? drow[j * dstep + xx] : 0.0f;
                s[j] += d * v;
                s[G + j] += d;
            }
        }
    }
    tr_block_sums<G + G>(s, sh);
    tr_store(sh, sh + G, 1, o0, cout, cin, i, wbase, bbase, np, partial);
}

// ---- tr_out: the output layer's forward and backward passes in one ----
//
// The 1x1 output layer (c -> o, no ReLU) as tr_conv1, the loss gradient dz as tr_loss, the
// input gradient as tr_conv1_bx (masked where the layer's input, a post-ReLU activation, is
// not positive) and the weight and bias sums as tr_conv1_bw, point by point: those four
// kernels read the c input planes three times and wrote and read z and dz, for 6 multiply-adds
// a point; this reads each input value once and writes only the input gradient. z, dz and the
// input gradient are the same operations in the same order as theirs (bit for bit in the CPU
// stand-in; on the device, where this module may contract into FMA, the compiler's choices
// could differ in a last bit, which training allows). It also sums the mask (the points that count, as tr_sum). For networks of at most OUT_MAX
// outputs and OUT_WIDTH inputs to the output layer (the encoder's: one or two fields, width 4
// or 6); the host runs the four kernels for the others.
#define OUT_MAX 2
#define OUT_WIDTH 8
#define OUT_ROW (OUT_WIDTH + 1)
#define OUT_SUMS (OUT_MAX * OUT_ROW + 1)

// Block k of gridDim.x takes chunk k of the batch's P points (planes of P: channel i's values
// at a + i P), writes its weight and bias sums into partial row k (partial[k * np + ...],
// parameters as tr_conv1_bw stores them) and its mask sum into mparts[k].
// Grid (CH, 1, 1), 256 threads.
extern "C" __global__ void __launch_bounds__(256) tr_out(const float* __restrict__ a, int c, long long P,
                                                         const float* __restrict__ wt,
                                                         const float* __restrict__ bias, int o,
                                                         const float* __restrict__ t,
                                                         const float* __restrict__ m,
                                                         float* __restrict__ dx, int wbase, int bbase,
                                                         int np, float* __restrict__ partial,
                                                         float* __restrict__ mparts) {
    // Output j's taps at wsh[j OUT_ROW .. + c), its bias at wsh[j OUT_ROW + OUT_WIDTH].
    __shared__ float wsh[OUT_MAX * OUT_ROW];
    __shared__ float sh[8 * OUT_SUMS];
    if ((int)threadIdx.x < OUT_MAX * OUT_ROW) {
        const int j = threadIdx.x / OUT_ROW, i = threadIdx.x % OUT_ROW;
        float v = 0.0f;
        if (j < o && i < c) v = wt[j * c + i];
        if (j < o && i == OUT_WIDTH) v = bias[j];
        wsh[threadIdx.x] = v;
    }
    __syncthreads();
    // s[j OUT_ROW + i]: output j's gradient against input i (i = OUT_WIDTH: its bias); the
    // last: the mask.
    float s[OUT_SUMS];
#pragma unroll
    for (int k = 0; k < OUT_SUMS; k++) s[k] = 0.0f;
    const i64 len = (P + gridDim.x - 1) / gridDim.x;
    const i64 lo = (i64)blockIdx.x * len, hi = lo + len < P ? lo + len : P;
    // Two points a step, so that each thread has both points' loads in flight at once.
#pragma unroll 2
    for (i64 q = lo + threadIdx.x; q < hi; q += 256) {
        float av[OUT_WIDTH], dv[OUT_WIDTH];
        const float* ai = a + q;
#pragma unroll
        for (int i = 0; i < OUT_WIDTH; i++, ai += P) {
            av[i] = i < c ? *ai : 0.0f;
            dv[i] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < OUT_MAX; j++) {
            if (j >= o) break;
            const float* wj = wsh + j * OUT_ROW;
            float z = wj[OUT_WIDTH];
#pragma unroll
            for (int i = 0; i < OUT_WIDTH; i++)
                if (i < c) z += wj[i] * av[i];
            const float d = 1.0f + fabsf(z);
            const float y = z / d;
            const float mj = m[j * P + q];
            const float dz = 2.0f * (y - t[j * P + q]) * mj / (d * d);
            s[OUT_SUMS - 1] += mj;
            s[j * OUT_ROW + OUT_WIDTH] += dz;
#pragma unroll
            for (int i = 0; i < OUT_WIDTH; i++)
                if (i < c) {
                    dv[i] += wj[i] * dz;
                    s[j * OUT_ROW + i] += dz * av[i];
                }
        }
        float* di = dx + q;
#pragma unroll
        for (int i = 0; i < OUT_WIDTH; i++, di += P)
            if (i < c) *di = av[i] > 0.0f ? dv[i] : 0.0f;
    }
    tr_block_sums<OUT_SUMS>(s, sh);
    const int k = threadIdx.x;
    float* dst = partial + (i64)blockIdx.x * np;
    if (k < OUT_MAX * OUT_ROW) {
        const int j = k / OUT_ROW, i = k % OUT_ROW;
        if (j < o && i < c) dst[wbase + j * c + i] = sh[k];
        if (j < o && i == OUT_WIDTH) dst[bbase + j] = sh[k];
    } else if (k == OUT_SUMS - 1) {
        mparts[blockIdx.x] = sh[k];
    }
}

// g[j] = sum over the CH chunks of partial[c * np + j]: a block takes 32 parameters (a warp's
// lanes, so each row's loads are one line), each warp an eighth of the chunks in order, and
// the warps' sums are added in order (a fixed order). Grid (ceil(np / 32)), 256 threads.
extern "C" __global__ void tr_reduce(const float* partial, int CH, int np, float* g) {
    __shared__ float sh[8 * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = blockIdx.x * 32 + lane;
    const int len = (CH + 7) / 8, lo = warp * len, hi = lo + len < CH ? lo + len : CH;
    float acc = 0.0f;
    if (j < np)
        for (int c = lo; c < hi; c++) acc += partial[(i64)c * np + j];
    sh[warp * 32 + lane] = acc;
    __syncthreads();
    if (warp != 0 || j >= np) return;
    float v = 0.0f;
    for (int k = 0; k < 8; k++) v += sh[k * 32 + lane];
    g[j] = v;
}

// Adam on the gradient summed over the batch, divided by the number of points that counted
// (`total`); no step when none did (as conv_train.rs `train`).
extern "C" __global__ void tr_adam(float* params, const float* g, float* m1, float* m2, int np,
                                   const float* total, float lr, float b1, float b2, float c1,
                                   float c2, float eps) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= np) return;
    const float tot = total[0];
    if (!(tot > 0.0f)) return;
    const float gi = g[j] / tot;
    m1[j] = b1 * m1[j] + (1.0f - b1) * gi;
    m2[j] = b2 * m2[j] + (1.0f - b2) * gi * gi;
    params[j] -= lr * (m1[j] / c1) / (sqrtf(m2[j] / c2) + eps);
}
