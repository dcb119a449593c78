// resid: helpers shared by every kernel. Compiled by NVRTC with --fmad=false --ftz=false, so the
// float arithmetic below is the same IEEE sequence the Rust code runs (no contraction into FMA).
#ifndef RESID_COMMON_CUH
#define RESID_COMMON_CUH

typedef unsigned int u32;
typedef unsigned long long u64;

// Largest quantization index magnitude (src/quant.rs QMAX = 2^27).
#define RESID_QMAX 134217728.0

// A block of the chunk's 3D grid: origin, extent, start of its values in block-major order.
// Matches src/backend/cuda.rs `block_table` (8 u64 per block).
struct BlockDesc {
    u64 oz, oy, ox, ez, ey, ex, offset, pad;
};

__device__ __forceinline__ BlockDesc load_block(const u64* table, u32 b) {
    const u64* t = table + 8 * (u64)b;
    BlockDesc d;
    d.oz = t[0]; d.oy = t[1]; d.ox = t[2];
    d.ez = t[3]; d.ey = t[4]; d.ex = t[5];
    d.offset = t[6]; d.pad = t[7];
    return d;
}

__device__ __forceinline__ u32 zigzag_encode(int r) { return ((u32)r << 1) ^ (u32)(r >> 31); }
__device__ __forceinline__ int zigzag_decode(u32 z) { return (int)(z >> 1) ^ -(int)(z & 1u); }

// NaN, infinities and subnormals: the quantizer never touches them (field.rs is_special).
__device__ __forceinline__ bool is_special(float v) {
    u32 b = __float_as_uint(v);
    u32 e = (b >> 23) & 0xffu;
    u32 m = b & 0x7fffffu;
    return e == 0xffu || (e == 0u && m != 0u);
}
__device__ __forceinline__ bool is_special(double v) {
    u64 b = (u64)__double_as_longlong(v);
    u64 e = (b >> 52) & 0x7ffull;
    u64 m = b & 0xfffffffffffffull;
    return e == 0x7ffull || (e == 0ull && m != 0ull);
}

__device__ __forceinline__ float narrow(double v, float) { return __double2float_rn(v); }
__device__ __forceinline__ double narrow(double v, double) { return v; }

// quant.rs `dequantize`: T::from_f64(mid + q * step).
template <typename T>
__device__ __forceinline__ T dequantize(int q, double mid, double step) {
    return narrow(mid + (double)q * step, T());
}

// quant.rs `quantize` for one value: the index, or `*esc = true` (index 0) when the value is
// escaped. Same operations in the same order as the Rust code.
template <typename T>
__device__ __forceinline__ int quantize(T v, double mid, double inv, double step, double eb, bool* esc) {
    double xf = (double)v;
    double qf = round((xf - mid) * inv);
    bool ok = !is_special(v) && fabs(qf) <= RESID_QMAX;
    int qi = ok ? (int)qf : 0;
    double err = fabs(xf - (double)dequantize<T>(qi, mid, step));
    if (ok && err <= eb) return qi;
    *esc = true;
    return 0;
}

// Inclusive warp scan with wrapping u32 adds (the Rust side uses wrapping_add).
__device__ __forceinline__ u32 warp_scan(u32 v, u32 lane) {
#pragma unroll
    for (u32 d = 1; d < 32; d <<= 1) {
        u32 o = __shfl_up_sync(0xffffffffu, v, d);
        if (lane >= d) v += o;
    }
    return v;
}

#endif  // RESID_COMMON_CUH
