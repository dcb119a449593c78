// resid: NeurLZ training on the GPU (src/nn/conv_train.rs): one optimizer step over a batch
// of B patches is gather, forward (six layers), the loss gradient, backward (input gradients
// and weight gradients per layer), a fixed-order reduction and the Adam update. Floats: the
// trained weights may differ from the CPU's in the last bits, which is allowed (only the
// stored, quantized weights matter to the decoder; DESIGN.md invariant 2). Every sum runs in
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

extern "C" __global__ void tr_sum_final(const float* part, int parts, float* out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float acc = 0.0f;
    for (int k = 0; k < parts; k++) acc += part[k];
    out[0] = acc;
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

// Loads the (th x tw) window of plane `src` (h x w) at (y0, x0) into `tile`, zero outside.
__device__ __forceinline__ void tr_load_tile(const float* src, int h, int w, int y0, int x0, int th,
                                             int tw, float* tile) {
    for (int t = threadIdx.x; t < th * tw; t += 256) {
        const int r = t / tw, c = t - r * tw;
        const int yy = y0 + r, xx = x0 + c;
        tile[t] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? src[(i64)yy * w + xx] : 0.0f;
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

// 3x3 convolution (zero padding 1, stride 1 or 2) plus bias, optional ReLU, output channels
// G blockIdx.y .. + G; block blockIdx.x is one TW x TH output tile, its input window (with
// the halo) and the taps staged in shared memory one input channel at a time.
// Grid (ceil(wo / TW) ceil(ho / TH), ceil(cout / G), B).
extern "C" __global__ void tr_conv3(const float* x, int cin, int B, int h, int w, int stride,
                                    const float* wt, const float* bias, int cout, int relu,
                                    float* out) {
    __shared__ float tile[TILE_MAX];
    __shared__ float wsh[G * 9];
    const int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride;
    const TilePos tp = tr_tile_pos(blockIdx.x, wo);
    const int tw = (TW - 1) * stride + 3, th = (TH - 1) * stride + 3;
    const int o0 = blockIdx.y * G, b = blockIdx.z;
    float acc[PTS][G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const float bj = bias[o0 + j < cout ? o0 + j : cout - 1];
#pragma unroll
        for (int m = 0; m < PTS; m++) acc[m][j] = bj;
    }
    for (int i = 0; i < cin; i++) {
        tr_load_tile(x + ((i64)i * B + b) * h * w, h, w, tp.ty * TH * stride - 1,
                     tp.tx * TW * stride - 1, th, tw, tile);
        if (threadIdx.x < G * 9) {
            const int j = threadIdx.x / 9, o = o0 + j < cout ? o0 + j : cout - 1;
            wsh[threadIdx.x] = wt[(o * cin + i) * 9 + threadIdx.x % 9];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 9; k++) {
            float wk[G];
#pragma unroll
            for (int j = 0; j < G; j++) wk[j] = wsh[j * 9 + k];
#pragma unroll
            for (int m = 0; m < PTS; m++) {
                const float v = tile[((tp.ly + 8 * m) * stride + k / 3) * tw + tp.lx * stride + k % 3];
#pragma unroll
                for (int j = 0; j < G; j++) acc[m][j] += wk[j] * v;
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

// 2x2 transposed convolution, stride 2, h2 x w2 -> h x w (cropped), plus bias, optional ReLU.
// Grid (ceil(h w / 256), ceil(cout / G), B).
extern "C" __global__ void tr_deconv2(const float* x, int cin, int B, int h2, int w2, int h, int w,
                                      const float* wt, const float* bias, int cout, int relu,
                                      float* out) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (i64)h * w) return;
    const int o0 = blockIdx.y * G, b = blockIdx.z;
    const int y = (int)(p / w), xx = (int)(p % w);
    const int tap = 2 * (y % 2) + xx % 2;
    const i64 at = (i64)(y / 2) * w2 + xx / 2;
    int oc[G];
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        oc[j] = o0 + j < cout ? o0 + j : cout - 1;
        acc[j] = bias[oc[j]];
    }
    for (int i = 0; i < cin; i++) {
        const float v = x[((i64)i * B + b) * h2 * w2 + at];
#pragma unroll
        for (int j = 0; j < G; j++) acc[j] += wt[(oc[j] * cin + i) * 4 + tap] * v;
    }
#pragma unroll
    for (int j = 0; j < G; j++)
        if (o0 + j < cout) out[((i64)(o0 + j) * B + b) * h * w + p] = relu ? fmaxf(acc[j], 0.0f) : acc[j];
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
extern "C" __global__ void tr_conv3_bx1(const float* dout, int cout, int B, int h, int w,
                                        const float* wt, int cin, const float* add,
                                        const float* post, float* dx) {
    __shared__ float tile[(TH + 2) * (TW + 2)];
    __shared__ float wsh[G * 9];
    const TilePos tp = tr_tile_pos(blockIdx.x, w);
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    float acc[PTS][G];
#pragma unroll
    for (int m = 0; m < PTS; m++)
#pragma unroll
        for (int j = 0; j < G; j++) acc[m][j] = 0.0f;
    for (int o = 0; o < cout; o++) {
        tr_load_tile(dout + ((i64)o * B + b) * h * w, h, w, tp.ty * TH - 1, tp.tx * TW - 1, TH + 2,
                     TW + 2, tile);
        if (threadIdx.x < G * 9) {
            const int j = threadIdx.x / 9, i = i0 + j < cin ? i0 + j : cin - 1;
            wsh[threadIdx.x] = wt[(o * cin + i) * 9 + threadIdx.x % 9];
        }
        __syncthreads();
        // Tap (ky, kx) reads output point (y + 1 - ky, x + 1 - kx): tile (ly + 2 - ky, lx + 2 - kx).
#pragma unroll
        for (int k = 0; k < 9; k++) {
            float wk[G];
#pragma unroll
            for (int j = 0; j < G; j++) wk[j] = wsh[j * 9 + k];
#pragma unroll
            for (int m = 0; m < PTS; m++) {
                const float d = tile[(tp.ly + 8 * m + 2 - k / 3) * (TW + 2) + tp.lx + 2 - k % 3];
#pragma unroll
                for (int j = 0; j < G; j++) acc[m][j] += wk[j] * d;
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

// Input gradient of a 3x3 convolution (input h x w, stride 1 or 2), input channels
// G blockIdx.y .. + G. Grid (ceil(h w / 256), ceil(cin / G), B).
extern "C" __global__ void tr_conv3_bx(const float* dout, int cout, int B, int h, int w, int stride,
                                       const float* wt, int cin, const float* add,
                                       const float* post, float* dx) {
    const int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride;
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (i64)h * w) return;
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    const int y = (int)(p / w), xx = (int)(p % w);
    int ic[G];
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        ic[j] = i0 + j < cin ? i0 + j : cin - 1;
        acc[j] = 0.0f;
    }
    for (int ky = 0; ky < 3; ky++) {
        const int ty = y + 1 - ky;
        if (ty < 0 || ty % stride) continue;
        const int oy = ty / stride;
        if (oy >= ho) continue;
        for (int kx = 0; kx < 3; kx++) {
            const int tx = xx + 1 - kx;
            if (tx < 0 || tx % stride) continue;
            const int ox = tx / stride;
            if (ox >= wo) continue;
            const i64 at = (i64)oy * wo + ox;
            for (int o = 0; o < cout; o++) {
                const float d = dout[((i64)o * B + b) * ho * wo + at];
#pragma unroll
                for (int j = 0; j < G; j++) acc[j] += wt[(o * cin + ic[j]) * 9 + ky * 3 + kx] * d;
            }
        }
    }
#pragma unroll
    for (int j = 0; j < G; j++) {
        if (i0 + j >= cin) continue;
        const i64 idx = ((i64)(i0 + j) * B + b) * h * w + p;
        dx[idx] = tr_finish_dx(acc[j], idx, add, post);
    }
}

// Input gradient of the 2x2 transposed convolution (input h2 x w2, output h x w).
// Grid (ceil(h2 w2 / 256), ceil(cin / G), B).
extern "C" __global__ void tr_deconv2_bx(const float* dout, int cout, int B, int h, int w,
                                         const float* wt, int cin, int h2, int w2,
                                         const float* post, float* dx) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (i64)h2 * w2) return;
    const int i0 = blockIdx.y * G, b = blockIdx.z;
    const int y2 = (int)(p / w2), x2 = (int)(p % w2);
    int ic[G];
    float acc[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        ic[j] = i0 + j < cin ? i0 + j : cin - 1;
        acc[j] = 0.0f;
    }
    for (int k = 0; k < 4; k++) {
        const int y = 2 * y2 + k / 2, xx = 2 * x2 + k % 2;
        if (y >= h || xx >= w) continue;
        for (int o = 0; o < cout; o++) {
            const float d = dout[((i64)o * B + b) * h * w + (i64)y * w + xx];
#pragma unroll
            for (int j = 0; j < G; j++) acc[j] += wt[(o * cin + ic[j]) * 4 + k] * d;
        }
    }
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
// gradient kernels give each warp a row at a time (lanes along it): no division per point.
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

// Writes a block's gradient sums: taps `taps` of output channels o0 .. o0 + G (those below
// cout) and input channel i, and for i = 0 their biases, into partial[chunk * np + index].
__device__ __forceinline__ void tr_store(const float* sums, int taps, int o0, int cout, int cin, int i,
                                         int wbase, int bbase, int np, float* partial) {
    float* dst = partial + (i64)blockIdx.y * np;
    const int t = threadIdx.x;
    if (t < G * taps) {
        const int j = t / taps, k = t % taps;
        if (o0 + j < cout) dst[wbase + ((o0 + j) * cin + i) * taps + k] = sums[t];
    } else if (t < G * taps + G && i == 0) {
        const int j = t - G * taps;
        if (o0 + j < cout) dst[bbase + o0 + j] = sums[t];
    }
}

// Weight and bias gradients of a 3x3 convolution, split over CH = gridDim.y chunks of the
// output rows: block (x, chunk), x = input channel i + cin * output group, writes the
// partial sums of output channels G group .. + G against input channel i (and, for i = 0,
// their biases). Grid (cin * ceil(cout / G), CH), 256 threads.
extern "C" __global__ void tr_conv3_bw(const float* x, int cin, int B, int h, int w, int stride,
                                       const float* dout, int cout, int wbase, int bbase, int np,
                                       float* partial) {
    __shared__ float sh[8 * (G * 9 + G)];
    const int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride;
    const int i = blockIdx.x % cin, o0 = (blockIdx.x / cin) * G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int lo, hi;
    tr_rows(B * ho, &lo, &hi);
    float s[G * 9 + G];
#pragma unroll
    for (int j = 0; j < G * 9 + G; j++) s[j] = 0.0f;
    for (int r = lo + warp; r < hi; r += 8) {
        const int b = r / ho, oy = r - b * ho;
        const float* src = x + ((i64)i * B + b) * h * w;
        const float* drow = dout + ((i64)o0 * B + b) * ho * wo + (i64)oy * wo;
        const i64 dstep = (i64)B * ho * wo;
        for (int ox = lane; ox < wo; ox += 32) {
            float d[G];
#pragma unroll
            for (int j = 0; j < G; j++) {
                d[j] = o0 + j < cout ? drow[j * dstep + ox] : 0.0f;
                s[G * 9 + j] += d[j];
            }
#pragma unroll
            for (int k = 0; k < 9; k++) {
                const int yy = oy * stride + k / 3 - 1, xi = ox * stride + k % 3 - 1;
                const float v = (yy >= 0 && yy < h && xi >= 0 && xi < w) ? src[(i64)yy * w + xi] : 0.0f;
#pragma unroll
                for (int j = 0; j < G; j++) s[j * 9 + k] += d[j] * v;
            }
        }
    }
    tr_block_sums<G * 9 + G>(s, sh);
    tr_store(sh, 9, o0, cout, cin, i, wbase, bbase, np, partial);
}

// As tr_conv3_bw for the 2x2 transposed convolution (rows: the h2 x w2 inputs', each point
// with its 2 x 2 outputs).
extern "C" __global__ void tr_deconv2_bw(const float* x, int cin, int B, int h2, int w2, int h, int w,
                                         const float* dout, int cout, int wbase, int bbase, int np,
                                         float* partial) {
    __shared__ float sh[8 * (G * 4 + G)];
    const int i = blockIdx.x % cin, o0 = (blockIdx.x / cin) * G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int lo, hi;
    tr_rows(B * h2, &lo, &hi);
    float s[G * 4 + G];
#pragma unroll
    for (int j = 0; j < G * 4 + G; j++) s[j] = 0.0f;
    for (int r = lo + warp; r < hi; r += 8) {
        const int b = r / h2, y2 = r - b * h2;
        const float* src = x + ((i64)i * B + b) * h2 * w2 + (i64)y2 * w2;
        const float* dplane = dout + ((i64)o0 * B + b) * h * w;
        const i64 dstep = (i64)B * h * w;
        for (int x2 = lane; x2 < w2; x2 += 32) {
            const float v = src[x2];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int y = 2 * y2 + k / 2, xx = 2 * x2 + k % 2;
                if (y >= h || xx >= w) continue;
#pragma unroll
                for (int j = 0; j < G; j++) {
                    const float d = o0 + j < cout ? dplane[j * dstep + (i64)y * w + xx] : 0.0f;
                    s[j * 4 + k] += d * v;
                    s[G * 4 + j] += d;
                }
            }
        }
    }
    tr_block_sums<G * 4 + G>(s, sh);
    tr_store(sh, 4, o0, cout, cin, i, wbase, bbase, np, partial);
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
    tr_store(sh, 1, o0, cout, cin, i, wbase, bbase, np, partial);
}

// g[j] = sum over the CH chunks of partial[c * np + j], in chunk order.
extern "C" __global__ void tr_reduce(const float* partial, int CH, int np, float* g) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= np) return;
    float acc = 0.0f;
    for (int c = 0; c < CH; c++) acc += partial[(i64)c * np + j];
    g[j] = acc;
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
