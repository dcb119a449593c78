// resid: NGLR's prediction on the GPU (src/predict/nglr.rs): integer Lorenzo plus the chunk's
// learned bias. Decoding, `q = pred + code * m`; encoding, the code that keeps the value within
// the bound, or an escape (predict/mod.rs `settle`). Bit for bit as the CPU codes a block.
//
// A point's prediction reads the reconstruction of its causal neighbours, the farthest ahead in
// x being (z, y - 1, x + 1) and (z - 1, y, x + 1). So the points with equal `x + 2y + 2z` (a
// front) depend only on earlier fronts: one thread block per NGLR block walks its fronts in
// order, the threads sharing each front's points, a barrier between fronts (which also makes
// the front's global writes visible to the whole block). A 64^3 block has 316 fronts of 830
// points on average, 1,792 at most.
//
// The prediction is integer arithmetic on the stored weights (nn/infer.rs, nn/linear.rs),
// whose ranges Net::validate and Linear::validate bound, so nothing there rounds or
// overflows. The encoder's bound check is IEEE double arithmetic in the Rust code's order (the
// module is compiled without FMA contraction).
#include "common.cuh"

typedef long long i64;

// nn/infer.rs: INPUTS, MAX_HIDDEN, FRAC, XMAX, HMAX, BIAS_MAX.
#define NG_INPUTS 16
#define NG_MAXH 32
#define NG_FRAC 8
#define NG_XMAX (64 << NG_FRAC)
#define NG_HMAX (8 << NG_FRAC)
#define NG_BIAS_MAX (1ll << 30)
#define NG_FEATURE_MAX (1ll << 40)

// The model as cuda_nglr.rs `model_words` lays it out (i64 words):
//   0 kind (1 network, 2 linear), 1 hidden units, 2 e1 (linear: shift), 3 output shift
//   (e2 + 8 - out_shift), 4 b2 (linear: intercept), 5..21 in_shift, 21..37 v (linear: w),
//   then w1 (hidden x 16, row per unit), b1 (hidden), w2 (hidden).
#define NG_HEAD 37

struct NgModel {
    int kind, hidden, e1, out;
    i64 b2;
    int shift[NG_INPUTS];  // in_shift - FRAC
    i64 v[NG_INPUTS];
    int w1[NG_MAXH * NG_INPUTS];
    i64 b1[NG_MAXH];
    i64 w2[NG_MAXH];
};

// infer.rs `rshift`: round half up for s > 0, a left shift otherwise (at most 22 places here).
__device__ __forceinline__ i64 ng_rshift(i64 a, int s) {
    return s > 0 ? (a + (1ll << (s - 1))) >> s : (i64)((u64)a << -s);
}

__device__ __forceinline__ i64 ng_clamp(i64 v, i64 lo, i64 hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Net::bias (infer.rs) or Linear::bias (linear.rs) of features `f`.
__device__ __forceinline__ i64 ng_bias(const NgModel& m, const i64* f) {
    if (m.kind == 2) {
        i64 a = m.b2;
#pragma unroll
        for (int i = 0; i < NG_INPUTS; i++) a += m.v[i] * f[i];
        return ng_clamp(ng_rshift(a, m.e1), -NG_BIAS_MAX, NG_BIAS_MAX);
    }
    int x[NG_INPUTS];
#pragma unroll
    for (int i = 0; i < NG_INPUTS; i++) {
        const i64 fi = ng_clamp(f[i], -NG_FEATURE_MAX, NG_FEATURE_MAX);
        x[i] = (int)ng_clamp(ng_rshift(fi, m.shift[i]), -NG_XMAX, NG_XMAX);
    }
    i64 o = m.b2;
    for (int j = 0; j < m.hidden; j++) {
        const int* w = m.w1 + j * NG_INPUTS;
        i64 a = m.b1[j];
        // |w| < 2^15 and |x| <= 2^14: four products sum exactly in 32 bits.
#pragma unroll
        for (int k = 0; k < NG_INPUTS; k += 4)
            a += (i64)(w[k] * x[k] + w[k + 1] * x[k + 1] + w[k + 2] * x[k + 2] + w[k + 3] * x[k + 3]);
        o += m.w2[j] * ng_clamp(ng_rshift(a, m.e1), 0, NG_HMAX);
    }
#pragma unroll
    for (int i = 0; i < NG_INPUTS; i++) o += m.v[i] * x[i];
    return ng_clamp(ng_rshift(o, m.out), -NG_BIAS_MAX, NG_BIAS_MAX);
}

__device__ void ng_load_model(NgModel& m, const i64* words) {
    const int t = threadIdx.x;
    if (t == 0) {
        m.kind = (int)words[0];
        m.hidden = (int)words[1];
        m.e1 = (int)words[2];
        m.out = (int)words[3];
        m.b2 = words[4];
    }
    if (t < NG_INPUTS) {
        m.shift[t] = (int)words[5 + t] - NG_FRAC;
        m.v[t] = words[21 + t];
    }
    const int h = words[0] == 1 ? (int)words[1] : 0;
    for (int k = t; k < h * NG_INPUTS; k += blockDim.x) m.w1[k] = (int)words[NG_HEAD + k];
    for (int k = t; k < h; k += blockDim.x) {
        m.b1[k] = words[NG_HEAD + h * NG_INPUTS + k];
        m.w2[k] = words[NG_HEAD + h * NG_INPUTS + h + k];
    }
    __syncthreads();
}

// One point of a block `n` = (nz, ny, nx) at (z, y, x), flat index i: the Lorenzo prediction
// (lorenzo.rs `predict_at`: terms outside the block are zero) and, at an inner point, the bias
// of its 16 features (nglr.rs `features`: neighbours minus the prediction, and neighbours'
// Lorenzo errors; a feature along a dimension of extent 1 is zero). Returns the prediction and
// leaves the Lorenzo prediction in *lp.
__device__ __forceinline__ i64 ng_predict(const NgModel& m, const int* q, const int* e, int nz, int ny,
                                          int nx, int z, int y, int x, i64 i, i64* lp) {
    const i64 sy = nx, sz = (i64)ny * nx;
    const bool bx = x > 0, by = y > 0, bz = z > 0;
    i64 l = 0;
    if (bx) l += q[i - 1];
    if (by) l += q[i - sy];
    if (bz) l += q[i - sz];
    if (bx && by) l -= q[i - sy - 1];
    if (bx && bz) l -= q[i - sz - 1];
    if (by && bz) l -= q[i - sz - sy];
    if (bx && by && bz) l += q[i - sz - sy - 1];
    *lp = l;
    const bool ax = nx > 1, ay = ny > 1, az = nz > 1;
    const bool inner = (!az || z >= 2) && (!ay || y >= 2) && (ax ? (x >= 2 && x + 1 < nx) : true);
    if (!inner) return l;
    i64 f[NG_INPUTS];
#pragma unroll
    for (int k = 0; k < NG_INPUTS; k++) f[k] = 0;
    if (ax) {
        f[0] = q[i - 1] - l;
        f[7] = q[i - 2] - l;
        f[12] = e[i - 1];
    }
    if (ay) {
        f[1] = q[i - sy] - l;
        f[8] = q[i - 2 * sy] - l;
        f[13] = e[i - sy];
    }
    if (az) {
        f[2] = q[i - sz] - l;
        f[9] = q[i - 2 * sz] - l;
        f[14] = e[i - sz];
    }
    if (ax && ay) {
        f[3] = q[i - sy - 1] - l;
        f[10] = q[i - sy + 1] - l;
        f[15] = e[i - sy - 1];
    }
    if (ax && az) {
        f[4] = q[i - sz - 1] - l;
        f[11] = q[i - sz + 1] - l;
    }
    if (ay && az) f[5] = q[i - sz - sy] - l;
    if (ax && ay && az) f[6] = q[i - sz - sy - 1] - l;
    return l + ng_bias(m, f);
}

// nglr.rs `lorenzo_error`: the reconstruction minus the Lorenzo prediction, saturated to i32.
__device__ __forceinline__ int ng_error(int q, i64 l) {
    return (int)ng_clamp((i64)q - l, -2147483648ll, 2147483647ll);
}

// Calls visit(z, y, x) for every point of front f of a block (nz, ny, nx), the block's
// threads taking them in turn: the points with y + z = s and x = f - 2s, s ascending, z
// ascending within s.
template <class Visit>
__device__ __forceinline__ void ng_front(int f, int nz, int ny, int nx, Visit visit) {
    const int s_lo = f - nx + 1 > 0 ? (f - nx + 2) / 2 : 0;
    const int s_hi = min(f / 2, nz + ny - 2);
    int k = threadIdx.x, base = 0;
    for (int s = s_lo; s <= s_hi; s++) {
        const int z0 = max(0, s - ny + 1), z1 = min(nz - 1, s);
        const int count = z1 - z0 + 1;
        for (; k < base + count; k += blockDim.x) {
            const int z = z0 + (k - base);
            visit(z, s - z, f - 2 * s);
        }
        base += count;
    }
}

// Walks the NGLR block of this thread block (the table's entry blockIdx.x) front by front. Each
// point's prediction goes to settle(j, pred), j its index in the chunk's arrays, which leaves
// the point's reconstruction in q[j]; the point's Lorenzo error is then kept in e for the
// features of the points after it.
template <class Settle>
__device__ __forceinline__ void ng_scan(int* q, int* e, const u64* table, const i64* model, Settle settle) {
    __shared__ NgModel mod;
    ng_load_model(mod, model);
    const BlockDesc d = load_block(table, blockIdx.x);
    const int nz = (int)d.ez, ny = (int)d.ey, nx = (int)d.ex;
    int* qb = q + d.offset;
    int* eb = e + d.offset;
    const int fronts = (nx - 1) + 2 * (ny - 1) + 2 * (nz - 1) + 1;
    for (int f = 0; f < fronts; f++) {
        ng_front(f, nz, ny, nx, [&](int z, int y, int x) {
            const i64 i = ((i64)z * ny + y) * nx + x;
            i64 l;
            const i64 pred = ng_predict(mod, qb, eb, nz, ny, nx, z, y, x, i, &l);
            settle((i64)d.offset + i, pred);
            eb[i] = ng_error(qb[i], l);
        });
        __syncthreads();
    }
}

// Decodes NGLR blocks in place: `q` holds each block's residual codes (block-major, at the
// table's offsets; cuda.rs `block_table`) and receives its reconstructed grid indices; `e` is
// scratch of the same size. One thread block per NGLR block.
extern "C" __global__ void nglr_decode(int* q, int* e, const u64* table, const i64* model, int m) {
    ng_scan(q, e, table, model, [&](i64 j, i64 pred) { q[j] = (int)(u32)(u64)(pred + (i64)q[j] * m); });
}

// predict/mod.rs `within`: the decoded value v of original x is within eb, in f64 and, for
// f32 data, also as the difference taken in f32 arithmetic.
__device__ __forceinline__ bool ng_within(double x, double v, double eb, int single) {
    if (!single) return fabs(x - v) <= eb;
    const float v32 = __double2float_rn(v);
    return fabs(x - (double)v32) <= eb && (double)fabsf(__double2float_rn(x) - v32) <= eb;
}

// predict/mod.rs `BlockEncoder::settle_with` at point i with prediction `pred`: the code, the
// reconstruction left in q[i]; an escaped point (already, or now because its reconstruction
// misses the bound or leaves the grid) codes 0 and keeps the prediction.
__device__ __forceinline__ int ng_settle(int* q, unsigned char* esc, const double* x, i64 i, i64 pred, i64 m,
                                         double mid, double step, double eb, int single) {
    if (!esc[i]) {
        const i64 n = (i64)q[i] - pred + (m - 1) / 2;
        const i64 c = n / m - ((n % m != 0 && n < 0) ? 1 : 0);  // floor division (m >= 1)
        const i64 rec = pred + c * m;
        const i64 qmax = (i64)RESID_QMAX;
        if (rec <= 2 * qmax && rec >= -2 * qmax && c < (1ll << 30) && c > -(1ll << 30)) {
            // quant.rs `dequantize_f64`.
            const double v = mid + (double)(int)rec * step;
            if (ng_within(x[i], v, eb, single)) {
                q[i] = (int)rec;
                return (int)c;
            }
        }
        esc[i] = 1;
    }
    q[i] = (int)(u32)(u64)pred;
    return 0;
}

// Codes NGLR blocks (nglr.rs `Nglr::encode`), laid out as for nglr_decode: `q` holds each
// block's prequantized indices and receives the reconstruction, `codes` the residual codes,
// `esc` the escaped points (nonzero; in: those the grid cannot hold, out: also those the
// encoder escaped), `x` the values as f64; `e` is scratch. Feedback step m, grid (mid, step),
// bound eb; `single` for f32 data. One thread block per NGLR block.
extern "C" __global__ void nglr_encode(int* q, int* codes, int* e, unsigned char* esc, const double* x,
                                       const u64* table, const i64* model, long long m, double mid,
                                       double step, double eb, int single) {
    ng_scan(q, e, table, model, [&](i64 j, i64 pred) {
        codes[j] = ng_settle(q, esc, x, j, pred, m, mid, step, eb, single);
    });
}
