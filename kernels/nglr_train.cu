// resid: the Adam phase of NGLR's network fit on the GPU (src/nn/train.rs `adam`): one block
// runs every step of every epoch, the parameters in shared memory. Each step: one thread per
// sample of the batch computes the forward pass and the loss gradient, then one thread per
// parameter sums its gradient over the batch (in sample order) and takes the Adam step.
// Floats: the weights may differ from the CPU's in the last bits, which is allowed (only the
// quantized network the encoder stores matters; ARCHITECTURE.md invariant 2).
#include "common.cuh"

typedef long long i64;

// nn/infer.rs INPUTS and MAX_HIDDEN; the GPU fit takes batches of at most NG_MAXB samples.
#define NG_INPUTS 16
#define NG_MAXH 32
#define NG_MAXB 128
#define NG_MAXP (NG_MAXH * NG_INPUTS + 2 * NG_MAXH + NG_INPUTS + 1)
// Parameters a thread updates (NG_MAXP <= 3 x 256).
#define NG_SLOTS 3

// Launch with one block of 256 threads. `orders` holds epochs x n sample indices.
extern "C" __global__ void nglr_adam(const float* xs, const float* ts, const u32* orders, int n,
                                     int epochs, int batch, int h, float* params, float c,
                                     float hmax, float lr, float b1, float b2, float eps) {
    __shared__ float p[NG_MAXP];
    __shared__ float xsh[NG_MAXB][NG_INPUTS];
    __shared__ float hid[NG_MAXB][NG_MAXH];
    __shared__ float da[NG_MAXB][NG_MAXH];
    __shared__ float dsh[NG_MAXB];
    const int t = threadIdx.x;
    const int ob1 = h * NG_INPUTS, ow2 = ob1 + h, ov = ow2 + h, ob2 = ov + NG_INPUTS;
    const int np = ob2 + 1;
    for (int k = t; k < np; k += 256) p[k] = params[k];
    float mom[NG_SLOTS], vel[NG_SLOTS], next[NG_SLOTS];
#pragma unroll
    for (int q = 0; q < NG_SLOTS; q++) mom[q] = vel[q] = next[q] = 0.0f;
    float pw1 = 1.0f, pw2 = 1.0f;
    __syncthreads();
    for (int e = 0; e < epochs; e++) {
        const u32* ord = orders + (i64)e * n;
        for (int start = 0; start < n; start += batch) {
            const int bs = n - start < batch ? n - start : batch;
            if (t < bs) {
                const u32 s = ord[start + t];
                float x[NG_INPUTS];
#pragma unroll
                for (int i = 0; i < NG_INPUTS; i++) {
                    x[i] = xs[(i64)s * NG_INPUTS + i];
                    xsh[t][i] = x[i];
                }
                float y = p[ob2];
                for (int j = 0; j < h; j++) {
                    float a = p[ob1 + j];
#pragma unroll
                    for (int i = 0; i < NG_INPUTS; i++) a += p[j * NG_INPUTS + i] * x[i];
                    const float hd = fminf(fmaxf(a, 0.0f), hmax);
                    hid[t][j] = hd;
                    y += p[ow2 + j] * hd;
                    // The clipped ReLU passes the gradient strictly inside (0, hmax).
                    da[t][j] = (a > 0.0f && a < hmax) ? 1.0f : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < NG_INPUTS; i++) y += p[ov + i] * x[i];
                // d/dy of ln(1 + |y - t| / c).
                const float r = y - ts[s];
                const float sg = r > 0.0f ? 1.0f : (r < 0.0f ? -1.0f : copysignf(1.0f, r));
                const float d = sg / (c + fabsf(r));
                dsh[t] = d;
                for (int j = 0; j < h; j++) da[t][j] *= d * p[ow2 + j];
            }
            __syncthreads();
            pw1 *= b1;
            pw2 *= b2;
            const float c1 = 1.0f - pw1, c2 = 1.0f - pw2;
            const float inv = 1.0f / (float)bs;
#pragma unroll
            for (int q = 0; q < NG_SLOTS; q++) {
                const int k = t + 256 * q;
                if (k >= np) break;
                float g = 0.0f;
                if (k < ob1) {
                    const int j = k / NG_INPUTS, i = k % NG_INPUTS;
                    for (int u = 0; u < bs; u++) g += da[u][j] * xsh[u][i];
                } else if (k < ow2) {
                    for (int u = 0; u < bs; u++) g += da[u][k - ob1];
                } else if (k < ov) {
                    for (int u = 0; u < bs; u++) g += dsh[u] * hid[u][k - ow2];
                } else if (k < ob2) {
                    for (int u = 0; u < bs; u++) g += dsh[u] * xsh[u][k - ov];
                } else {
                    for (int u = 0; u < bs; u++) g += dsh[u];
                }
                const float gk = g * inv;
                mom[q] = b1 * mom[q] + (1.0f - b1) * gk;
                vel[q] = b2 * vel[q] + (1.0f - b2) * gk * gk;
                next[q] = p[k] - lr * (mom[q] / c1) / (sqrtf(vel[q] / c2) + eps);
            }
            __syncthreads();
#pragma unroll
            for (int q = 0; q < NG_SLOTS; q++) {
                const int k = t + 256 * q;
                if (k < np) p[k] = next[q];
            }
            __syncthreads();
        }
    }
    for (int k = t; k < np; k += 256) params[k] = p[k];
}
