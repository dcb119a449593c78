// resid: the integer 3D Lorenzo stage on the GPU (src/predict/lorenzo.rs, src/quant.rs).
//
// Encode: one fused pass per block tile: prequantize each value (with the escape decision),
// Lorenzo residual from the tile's values and the previous plane's (both in shared memory,
// so x is read once), zigzag, and the OR of the block's codes (its bit-plane count). Blocks
// with an escaped value are counted; the host recomputes those blocks on the CPU, because the
// pipeline replaces escaped values by their prediction in sequence.
//
// Decode: prefix sums along x, y and z per block (wrapping u32 adds, so any order gives the
// CPU's bits) and dequantization into the chunk's grid. One kernel walks the planes of a block
// when a plane fits in shared memory; otherwise three passes.
#include "common.cuh"

#define TX 32
#define TY 8
#define HS (TX + 1)

template <typename T>
__device__ void encode_tile(const T* x, u64 d1, u64 d2, const u64* table, u32 tiles_x, double mid,
                            double inv, double step, double eb, int zz, u32* codes, u32* block_or,
                            u32* block_esc) {
    __shared__ int buf[2][(TY + 1) * HS];
    const u32 b = blockIdx.y;
    const BlockDesc d = load_block(table, b);
    const u64 y0 = (u64)(blockIdx.x / tiles_x) * TY;
    const u64 x0 = (u64)(blockIdx.x % tiles_x) * TX;
    if (y0 >= d.ey || x0 >= d.ex) return;  // the whole CTA leaves together
    const u32 tx = threadIdx.x, ty = threadIdx.y, tid = ty * TX + tx;
    // Halo: row y0-1 (x0-1 .. x0+TX-1) and column x0-1 (y0 .. y0+TY-1).
    int hy = -2, hx = -2;
    if (tid < TX + 1) {
        hy = -1;
        hx = (int)tid - 1;
    } else if (tid < TX + 1 + TY) {
        hy = (int)(tid - (TX + 1));
        hx = -1;
    }
    int* prev = buf[0];
    int* cur = buf[1];
    for (u32 i = tid; i < (TY + 1) * HS; i += TX * TY) prev[i] = 0;
    const u64 y = y0 + ty, xx = x0 + tx;
    const bool inside = y < d.ey && xx < d.ex;
    // The halo value this thread loads, if any (hv_ok: inside the block).
    const long long gy = (long long)y0 + hy, gx = (long long)x0 + hx;
    const bool hv_ok = hy != -2 && gy >= 0 && gx >= 0 && (u64)gy < d.ey && (u64)gx < d.ex;
    const u64 own = (u64)y * d2 + d.ox + xx;
    const u64 halo = hv_ok ? (u64)gy * d2 + d.ox + (u64)gx : 0;
    // Values of the next plane are loaded one iteration ahead, so each thread has a load in
    // flight while it works on the current plane.
    T own_next = inside ? x[d.oz * d1 * d2 + d.oy * d2 + own] : (T)0;
    T halo_next = hv_ok ? x[d.oz * d1 * d2 + d.oy * d2 + halo] : (T)0;
    u32 esc_count = 0, or_acc = 0;
    for (u64 z = 0; z < d.ez; z++) {
        const T own_v = own_next, halo_v = halo_next;
        if (z + 1 < d.ez) {
            const u64 next = ((d.oz + z + 1) * d1 + d.oy) * d2;
            if (inside) own_next = x[next + own];
            if (hv_ok) halo_next = x[next + halo];
        }
        int qv = 0;
        if (inside) {
            bool e = false;
            qv = quantize<T>(own_v, mid, inv, step, eb, &e);
            esc_count += e ? 1u : 0u;
        }
        cur[(ty + 1) * HS + tx + 1] = qv;
        if (hy != -2) {
            int hv = 0;
            if (hv_ok) {
                bool e = false;  // counted by the tile that owns the value
                hv = quantize<T>(halo_v, mid, inv, step, eb, &e);
            }
            cur[(hy + 1) * HS + hx + 1] = hv;
        }
        __syncthreads();
        if (inside) {
            const u32 i = (ty + 1) * HS + tx + 1;
            const u32 a = (u32)cur[i] - (u32)cur[i - 1] - (u32)cur[i - HS] + (u32)cur[i - HS - 1];
            const u32 p = (u32)prev[i] - (u32)prev[i - 1] - (u32)prev[i - HS] + (u32)prev[i - HS - 1];
            const int r = (int)(a - p);
            const u32 c = zigzag_encode(r);
            or_acc |= c;
            codes[d.offset + (z * d.ey + y) * d.ex + xx] = zz ? c : (u32)r;
        }
        __syncthreads();
        int* t = prev;
        prev = cur;
        cur = t;
    }
    or_acc = __reduce_or_sync(0xffffffffu, or_acc);
    if ((tid & 31u) == 0u && or_acc != 0u) atomicOr(&block_or[b], or_acc);
    if (esc_count != 0u) atomicAdd(&block_esc[b], esc_count);
}

extern "C" __global__ void __launch_bounds__(TX * TY)
lorenzo_encode_f32(const float* x, u64 d1, u64 d2, const u64* table, u32 tiles_x, double mid,
                   double inv, double step, double eb, int zz, u32* codes, u32* block_or, u32* block_esc) {
    encode_tile<float>(x, d1, d2, table, tiles_x, mid, inv, step, eb, zz, codes, block_or, block_esc);
}
extern "C" __global__ void __launch_bounds__(TX * TY)
lorenzo_encode_f64(const double* x, u64 d1, u64 d2, const u64* table, u32 tiles_x, double mid,
                   double inv, double step, double eb, int zz, u32* codes, u32* block_or, u32* block_esc) {
    encode_tile<double>(x, d1, d2, table, tiles_x, mid, inv, step, eb, zz, codes, block_or, block_esc);
}

// ---- decode, fast path: one CTA per block, planes of at most PLANE_MAX values ----

#define DEC_THREADS 512
#define PLANE_MAX 4096
#define PLANE_PAD 4608
#define PER (PLANE_MAX / DEC_THREADS)

template <typename T>
__device__ void decode_planes(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, T* out) {
    __shared__ u32 s[PLANE_PAD];
    const BlockDesc d = load_block(table, blockIdx.x);
    const u32 ex = (u32)d.ex, ey = (u32)d.ey, n = ex * ey, stride = ex | 1u;
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5, nw = DEC_THREADS / 32;
    u32 acc[PER];
#pragma unroll
    for (u32 k = 0; k < PER; k++) acc[k] = 0u;
    for (u64 z = 0; z < d.ez; z++) {
        const u32* rp = r + d.offset + z * n;
#pragma unroll
        for (u32 k = 0; k < PER; k++) {
            const u32 e = tid + k * DEC_THREADS;
            if (e < n) s[(e / ex) * stride + e % ex] = rp[e];
        }
        __syncthreads();
        for (u32 row = warp; row < ey; row += nw) {
            u32 carry = 0;
            for (u32 c0 = 0; c0 < ex; c0 += 32) {
                const u32 c = c0 + lane;
                u32 v = c < ex ? s[row * stride + c] : 0u;
                v = warp_scan(v, lane) + carry;
                if (c < ex) s[row * stride + c] = v;
                carry = __shfl_sync(0xffffffffu, v, 31);
            }
        }
        __syncthreads();
        for (u32 col = warp; col < ex; col += nw) {
            u32 carry = 0;
            for (u32 r0 = 0; r0 < ey; r0 += 32) {
                const u32 rr = r0 + lane;
                u32 v = rr < ey ? s[rr * stride + col] : 0u;
                v = warp_scan(v, lane) + carry;
                if (rr < ey) s[rr * stride + col] = v;
                carry = __shfl_sync(0xffffffffu, v, 31);
            }
        }
        __syncthreads();
        const u64 base = (d.oz + z) * d1 + d.oy;
#pragma unroll
        for (u32 k = 0; k < PER; k++) {
            const u32 e = tid + k * DEC_THREADS;
            if (e < n) {
                const u32 yy = e / ex, xx = e % ex;
                acc[k] += s[yy * stride + xx];
                out[(base + yy) * d2 + d.ox + xx] = dequantize<T>((int)acc[k], mid, step);
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS)
lorenzo_decode_planes_f32(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, float* out) {
    decode_planes<float>(r, table, d1, d2, mid, step, out);
}
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
lorenzo_decode_planes_f64(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, double* out) {
    decode_planes<double>(r, table, d1, d2, mid, step, out);
}

// ---- decode, any block shape: three passes ----

// Prefix sums along x: one warp per row; grid (ceil(rows / 8), blocks), 256 threads.
extern "C" __global__ void lorenzo_scan_x(u32* r, const u64* table) {
    const BlockDesc d = load_block(table, blockIdx.y);
    const u64 row = (u64)blockIdx.x * 8 + (threadIdx.x >> 5);
    const u32 lane = threadIdx.x & 31u;
    if (row >= d.ez * d.ey) return;  // whole warp
    u32* p = r + d.offset + row * d.ex;
    u32 carry = 0;
    for (u64 c0 = 0; c0 < d.ex; c0 += 32) {
        const u64 c = c0 + lane;
        u32 v = c < d.ex ? p[c] : 0u;
        v = warp_scan(v, lane) + carry;
        if (c < d.ex) p[c] = v;
        carry = __shfl_sync(0xffffffffu, v, 31);
    }
}

// Prefix sums along y: one thread per (z, x); grid (ceil(ez * ex / 256), blocks).
extern "C" __global__ void lorenzo_scan_y(u32* r, const u64* table) {
    const BlockDesc d = load_block(table, blockIdx.y);
    const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= d.ez * d.ex) return;
    const u64 z = t / d.ex, xx = t % d.ex;
    u32* p = r + d.offset + z * d.ey * d.ex + xx;
    u32 acc = 0;
    for (u64 y = 0; y < d.ey; y++) {
        acc += p[y * d.ex];
        p[y * d.ex] = acc;
    }
}

// Prefix sums along z and dequantization: one thread per (y, x); grid (ceil(ey * ex / 256), blocks).
template <typename T>
__device__ void scan_z(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, T* out) {
    const BlockDesc d = load_block(table, blockIdx.y);
    const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 n = d.ey * d.ex;
    if (t >= n) return;
    const u64 y = t / d.ex, xx = t % d.ex;
    const u32* p = r + d.offset + t;
    u32 acc = 0;
    for (u64 z = 0; z < d.ez; z++) {
        acc += p[z * n];
        out[((d.oz + z) * d1 + d.oy + y) * d2 + d.ox + xx] = dequantize<T>((int)acc, mid, step);
    }
}

extern "C" __global__ void lorenzo_scan_z_f32(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, float* out) {
    scan_z<float>(r, table, d1, d2, mid, step, out);
}
extern "C" __global__ void lorenzo_scan_z_f64(const u32* r, const u64* table, u64 d1, u64 d2, double mid, double step, double* out) {
    scan_z<double>(r, table, d1, d2, mid, step, out);
}
