// resid: range statistics of a chunk (quant.rs `stats`): min and max of the finite values as
// f64, and their count. Min/max are order-independent, so the result equals the CPU's exactly.
#include "common.cuh"

// f64 -> u64 key with the same order (negative values flipped).
__device__ __forceinline__ u64 order_key(double v) {
    u64 b = (u64)__double_as_longlong(v);
    return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}

template <typename T>
__device__ void stats(const T* x, u64 n, u64* out) {
    u64 lo = ~0ull, hi = 0ull, cnt = 0ull;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        if (isfinite(v)) {
            u64 k = order_key(v);
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
            cnt++;
        }
    }
#pragma unroll
    for (u32 d = 16; d > 0; d >>= 1) {
        u64 l2 = __shfl_down_sync(0xffffffffu, lo, d);
        u64 h2 = __shfl_down_sync(0xffffffffu, hi, d);
        cnt += __shfl_down_sync(0xffffffffu, cnt, d);
        lo = l2 < lo ? l2 : lo;
        hi = h2 > hi ? h2 : hi;
    }
    if ((threadIdx.x & 31u) == 0u && cnt > 0ull) {
        atomicMin(&out[0], lo);
        atomicMax(&out[1], hi);
        atomicAdd(&out[2], cnt);
    }
}

extern "C" __global__ void stats_f32(const float* x, u64 n, u64* out) { stats<float>(x, n, out); }
extern "C" __global__ void stats_f64(const double* x, u64 n, u64* out) { stats<double>(x, n, out); }
