// resid: NeurLZ inference on the GPU (src/nn/conv.rs, src/enhance/neurlz.rs): the network's
// input planes from the grid indices, the six fixed-point layers, and the regulated
// correction. Integer arithmetic only, the same operations as the Rust definition, so the
// corrections are the CPU's bit for bit (`tests/gpu.rs` checks).
//
// Activations are channel-major over a batch of S samples (slices): channel c of sample s is
// the plane at (c * S + s) * H * W. Then the skip connection's concatenation [layer 3, layer 0]
// is two adjacent buffers, and layer 0 writes straight into the second half.
#include "common.cuh"

typedef long long i64;

// conv.rs FRAC / ONE / ACT_MAX.
#define NZ_ONE 65536LL
#define NZ_ACT_MAX 8388608LL

__device__ __forceinline__ i64 nz_clamp(i64 v) {
    return v < -NZ_ACT_MAX ? -NZ_ACT_MAX : (v > NZ_ACT_MAX ? NZ_ACT_MAX : v);
}

// conv.rs `finish`: scale the accumulator by the channel's integer scale, add the bias, ReLU,
// clamp.
__device__ __forceinline__ int nz_finish(i64 acc, int mult, int shift, int bias, int relu) {
    i64 round = (1LL << shift) >> 1;
    i64 v = ((acc * (i64)mult + round) >> shift) + (i64)bias;
    if (relu && v < 0) v = 0;
    return (int)nz_clamp(v);
}

// One layer's stored parameters, as i32 arrays: weights [cout][cin][taps], then per output
// channel mult, shift and bias.
struct QLayer {
    const int* w;
    const int* mult;
    const int* shift;
    const int* bias;
};

__device__ __forceinline__ QLayer nz_layer(const int* p, int cin, int cout, int taps) {
    QLayer l;
    l.w = p;
    l.mult = p + cin * cout * taps;
    l.shift = l.mult + cout;
    l.bias = l.shift + cout;
    return l;
}

// The input planes of samples s0 .. s0 + S (neurlz.rs `slice_inputs`, `input_planes`):
// per field f, channel f * k + 0 the normalized index, + 1 the in-slice detail and, with
// k = 4, + 2 / + 3 the differences to the previous / next slice of the field. Grid
// (ceil(h w / 256), fields, S). `norm` holds (center, half) per field.
extern "C" __global__ void nz_inputs(const int* q, int k, int fields, int per_field, int s0, int S,
                                     int h, int w, const long long* norm, long long m, int* x) {
    const i64 hw = (i64)h * w;
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= hw) return;
    const int f = blockIdx.y, s = blockIdx.z;
    const int t = s0 + s;
    const int* cur = q + ((i64)f * per_field + t) * hw;
    const int y = (int)(j / w), xx = (int)(j % w);
    const i64 c = cur[j];
    const i64 center = norm[2 * f], half = norm[2 * f + 1];
    int* out = x + ((i64)(f * k) * S + s) * hw + j;
    out[0] = (int)nz_clamp((c - center) * NZ_ONE / half);
    const i64 n = y > 0 ? cur[j - w] : c;
    const i64 so = y + 1 < h ? cur[j + w] : c;
    const i64 we = xx > 0 ? cur[j - 1] : c;
    const i64 e = xx + 1 < w ? cur[j + 1] : c;
    out[(i64)S * hw] = (int)nz_clamp((4 * c - n - so - we - e) * NZ_ONE / (2 * m));
    if (k == 4) {
        const i64 prev = t > 0 ? nz_clamp(((i64)cur[j - hw] - c) * NZ_ONE / (2 * m)) : 0;
        const i64 next = t + 1 < per_field ? nz_clamp(((i64)cur[j + hw] - c) * NZ_ONE / (2 * m)) : 0;
        out[2 * (i64)S * hw] = (int)prev;
        out[3 * (i64)S * hw] = (int)next;
    }
}

// Output channels one thread computes (each value read serves NZG of them).
#define NZG 6

// Every product below is an activation (|a| <= 2^23) times an i8 weight, and every sum has at
// most 9 x 64 of them, so below 2^40: a double holds each partial sum exactly, in any order
// (conv.rs accumulates the same way), and double arithmetic is far faster here than i64.
struct Acc {
    double v[NZG];
    int oc[NZG];
};

__device__ __forceinline__ void nz_acc_init(Acc* a, int o0, int cout) {
#pragma unroll
    for (int j = 0; j < NZG; j++) {
        a->v[j] = 0.0;
        a->oc[j] = o0 + j < cout ? o0 + j : cout - 1;
    }
}

__device__ __forceinline__ void nz_acc_store(const Acc* a, const QLayer& l, int o0, int cout, int relu,
                                             int* out, i64 plane_stride, i64 at) {
#pragma unroll
    for (int j = 0; j < NZG; j++) {
        const int o = o0 + j;
        if (o < cout) out[(i64)o * plane_stride + at] = nz_finish((i64)a->v[j], l.mult[o], l.shift[o], l.bias[o], relu);
    }
}

// 3x3 convolution, zero padding 1, stride 1 or 2, over `cin` channels of S planes h x w,
// output channels NZG blockIdx.y .. + NZG. Grid (ceil(ho wo / 256), ceil(cout / NZG), S).
extern "C" __global__ void nz_conv3(const int* x, int cin, int S, int h, int w, int stride,
                                    const int* params, int cout, int relu, int* out) {
    const int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride;
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (i64)ho * wo) return;
    const int o0 = blockIdx.y * NZG, s = blockIdx.z;
    const QLayer l = nz_layer(params, cin, cout, 9);
    const int oy = (int)(p / wo), ox = (int)(p % wo);
    Acc a;
    nz_acc_init(&a, o0, cout);
    for (int i = 0; i < cin; i++) {
        const int* src = x + ((i64)i * S + s) * h * w;
        for (int ky = 0; ky < 3; ky++) {
            const int yy = oy * stride + ky - 1;
            if (yy < 0 || yy >= h) continue;
            for (int kx = 0; kx < 3; kx++) {
                const int xi = ox * stride + kx - 1;
                if (xi < 0 || xi >= w) continue;
                const double v = (double)src[(i64)yy * w + xi];
#pragma unroll
                for (int j = 0; j < NZG; j++) a.v[j] += (double)l.w[(a.oc[j] * cin + i) * 9 + ky * 3 + kx] * v;
            }
        }
    }
    nz_acc_store(&a, l, o0, cout, relu, out, (i64)S * ho * wo, (i64)s * ho * wo + p);
}

// 2x2 transposed convolution, stride 2, from h2 x w2 to h x w (cropped): output (y, x) is
// tap (y % 2, x % 2) of input (y / 2, x / 2). Grid (ceil(h w / 256), ceil(cout / NZG), S).
extern "C" __global__ void nz_deconv2(const int* x, int cin, int S, int h2, int w2, int h, int w,
                                      const int* params, int cout, int relu, int* out) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (i64)h * w) return;
    const int o0 = blockIdx.y * NZG, s = blockIdx.z;
    const QLayer l = nz_layer(params, cin, cout, 4);
    const int y = (int)(p / w), xx = (int)(p % w);
    const int tap = 2 * (y % 2) + xx % 2;
    const i64 at = (i64)(y / 2) * w2 + xx / 2;
    Acc a;
    nz_acc_init(&a, o0, cout);
    for (int i = 0; i < cin; i++) {
        const double v = (double)x[((i64)i * S + s) * h2 * w2 + at];
#pragma unroll
        for (int j = 0; j < NZG; j++) a.v[j] += (double)l.w[(a.oc[j] * cin + i) * 4 + tap] * v;
    }
    nz_acc_store(&a, l, o0, cout, relu, out, (i64)S * h * w, (i64)s * h * w + p);
}

// 1x1 convolution over planes of n points. Grid (ceil(n / 256), ceil(cout / NZG), S).
extern "C" __global__ void nz_conv1(const int* x, int cin, int S, long long n, const int* params,
                                    int cout, int relu, int* out) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    const int o0 = blockIdx.y * NZG, s = blockIdx.z;
    const QLayer l = nz_layer(params, cin, cout, 1);
    Acc a;
    nz_acc_init(&a, o0, cout);
    for (int i = 0; i < cin; i++) {
        const double v = (double)x[((i64)i * S + s) * n + p];
#pragma unroll
        for (int j = 0; j < NZG; j++) a.v[j] += (double)l.w[a.oc[j] * cin + i] * v;
    }
    nz_acc_store(&a, l, o0, cout, relu, out, (i64)S * n, (i64)s * n + p);
}

// The regulated correction conv.rs `softsign` of output channel f, sample s, written where
// slice s0 + s of field f lies in the chunk. Grid (ceil(hw / 256), fields, S).
extern "C" __global__ void nz_correct(const int* z, int per_field, int s0, int S, long long hw,
                                      int* corr) {
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= hw) return;
    const int f = blockIdx.y, s = blockIdx.z;
    const i64 v = z[((i64)f * S + s) * hw + j];
    const i64 a = v < 0 ? -v : v;
    corr[((i64)f * per_field + s0 + s) * hw + j] = (int)((v * NZ_ONE) / (NZ_ONE + a));
}
