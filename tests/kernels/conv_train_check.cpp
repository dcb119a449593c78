// resid: checks the NeurLZ training kernels (kernels/conv_train.cu) on the CPU, through the
// CUDA stand-in of emu.h: every layer kernel (forward, input gradient, weight gradient) on
// odd shapes and channel counts, against a double-precision reference written from the layer
// definitions in src/nn/conv.rs, launched with the grids src/backend/cuda_train.rs uses.
// Prints one line per case and "N passed, M failed"; exits non-zero on a failure.
// Arguments: "quick" (fewer shapes) or "all", then optionally a kernel name to check alone.
//
// Built and run by tests/test_kernels_cpu.py: g++ -std=c++20 -O2 -I kernels.
#include "emu.h"
#include "conv_train.cu"  // from kernels/ (-I)

#include <algorithm>
#include <cstring>
#include <string>

namespace {

// cuda_train.rs: G, CHUNKS, TILE.
constexpr int kG = G;
constexpr int kTile = 32;

int groups(int c) { return (c + kG - 1) / kG; }
int tiles(int h, int w) { return ((w + kTile - 1) / kTile) * ((h + kTile - 1) / kTile); }
// tr_conv3_tc's grid (cuda_train.rs tc_grid).
int tc_tiles(int h, int w) { return ((w + TC_TW - 1) / TC_TW) * ((h + TC_TH - 1) / TC_TH); }
int tc_groups(int c) {
    const int per = c > 8 ? 16 : 8;
    return (c + per - 1) / per;
}
unsigned blocks_for(long long n) { return (unsigned)((n + 255) / 256); }

struct Rng {
    unsigned long long s;
    float next() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    std::vector<float> vec(size_t n) {
        std::vector<float> v(n);
        for (auto& x : v) x = next();
        return v;
    }
};

int passed = 0, failed = 0;
// Only this kernel (the second argument), when given.
std::string only;
bool want(const char* kernel) { return only.empty() || only == kernel; }

// A value against the reference: within float rounding of the sum of its terms' magnitudes.
struct Ref {
    std::vector<double> v, mag;
    explicit Ref(size_t n) : v(n, 0.0), mag(n, 0.0) {}
    void add(size_t i, double t) {
        v[i] += t;
        mag[i] += std::fabs(t);
    }
};

void check(const std::string& name, const std::vector<float>& got, const Ref& want) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const double tol = 1e-5 * want.mag[i] + 1e-6;
        if (!(std::fabs((double)got[i] - want.v[i]) <= tol)) {
            if (!bad) first = i;
            bad++;
        }
    }
    if (bad) {
        failed++;
        std::printf("FAIL %s: %zu of %zu values differ (first at %zu: %.8g, want %.8g)\n", name.c_str(),
                    bad, got.size(), first, got[first], want.v[first]);
    } else {
        passed++;
        std::printf("ok   %s (%zu values)\n", name.c_str(), got.size());
    }
}

// Tensors are channel-major over the batch: channel c of patch b is plane (c * B + b).
struct Shape {
    int B, h, w;
};

// The weight gradients' chunk counts to try: the trainer's 64 where the batch has fewer rows
// than that (chunks with no rows), else fewer (each block is costly to emulate: its warp
// shuffles are barriers here), and 2.
std::vector<int> chunk_counts(Shape s) {
    if (s.B * s.h < 64) return {64, 2};
    return {7, 2};
}

// The gradient: tr_reduce over the chunks' partial sums.
std::vector<float> reduced(std::vector<float>& partial, int chunks, int np) {
    std::vector<float> g(np, NAN);
    emu::launch(dim3((np + 31) / 32), dim3(256), [&] { tr_reduce(partial.data(), chunks, np, g.data()); });
    return g;
}

std::string label(const char* what, Shape s, int cin, int cout, int stride) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s B=%d %dx%d %d->%d stride %d", what, s.B, s.h, s.w, cin, cout,
                  stride);
    return buf;
}

double act(double z, bool relu) { return relu && z < 0 ? 0.0 : z; }

// Input gradient finish: plus `add`, zero where `post` is not positive (as tr_finish_dx).
void finish(Ref& r, size_t i, const float* add, const float* post) {
    if (add) r.add(i, add[i]);
    if (post && !(post[i] > 0.0f)) r.v[i] = 0.0, r.mag[i] = 0.0;
}

void conv3_case(Rng& rng, Shape s, int cin, int cout, int stride, bool with_add) {
    const int h = s.h, w = s.w, B = s.B;
    const int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride;
    const size_t n = (size_t)h * w, no = (size_t)ho * wo;
    auto x = rng.vec(cin * B * n), wt = rng.vec(cout * cin * 9), bias = rng.vec(cout);
    auto dout = rng.vec(cout * B * no), add = rng.vec(cin * B * n), post = rng.vec(cin * B * n);
    // The three references in one pass over every output point, input channel and tap (taps
    // that fall outside the input add nothing to any of them).
    const int taps = 9, wbase = 5, bbase = wbase + cout * cin * taps + 3, np = bbase + cout + 2;
    Ref fwd(cout * B * no), dx(cin * B * n), gw(np);
    for (int o = 0; o < cout; o++)
        for (int b = 0; b < B; b++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    const size_t j = ((size_t)o * B + b) * no + (size_t)oy * wo + ox;
                    const double d = dout[j];
                    fwd.add(j, bias[o]);
                    gw.add(bbase + o, d);
                    for (int i = 0; i < cin; i++)
                        for (int k = 0; k < 9; k++) {
                            const int y = oy * stride + k / 3 - 1, xx = ox * stride + k % 3 - 1;
                            if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
                            const size_t src = ((size_t)i * B + b) * n + (size_t)y * w + xx;
                            const double wk = wt[(o * cin + i) * 9 + k];
                            fwd.add(j, wk * x[src]);
                            dx.add(src, wk * d);
                            gw.add(wbase + (o * cin + i) * 9 + k, d * x[src]);
                        }
                }

    for (int relu = 0; relu < 2 && want("tr_conv3"); relu++) {
        Ref expect = fwd;
        for (double& v : expect.v) v = act(v, relu);
        std::vector<float> out(cout * B * no, NAN);
        emu::launch(dim3(tiles(ho, wo), groups(cout), B), dim3(256), [&] {
            tr_conv3(x.data(), cin, B, h, w, stride, wt.data(), bias.data(), cout, relu, out.data());
        });
        check(label(relu ? "tr_conv3 relu" : "tr_conv3", s, cin, cout, stride), out, expect);
    }

    // The tensor-core kernel, stride 1: the forward pass, then the input gradient (flipped taps).
    for (int relu = 0; relu < 2 && stride == 1 && want("tr_conv3_tc"); relu++) {
        Ref expect = fwd;
        for (double& v : expect.v) v = act(v, relu);
        std::vector<float> out(cout * B * no, NAN);
        emu::launch(dim3(tc_tiles(h, w), tc_groups(cout), B), dim3(256), [&] {
            tr_conv3_tc(x.data(), cin, B, h, w, wt.data(), bias.data(), cout, relu, 0, nullptr, nullptr,
                        out.data());
        });
        check(label(relu ? "tr_conv3_tc relu" : "tr_conv3_tc", s, cin, cout, stride), out, expect);
    }
    for (int variant = 0; variant < 2 && stride == 1 && want("tr_conv3_tc"); variant++) {
        const float* a = variant ? add.data() : nullptr;
        const float* p = variant ? post.data() : nullptr;
        Ref expect = dx;
        for (size_t j = 0; j < expect.v.size(); j++) finish(expect, j, a, p);
        std::vector<float> got(cin * B * n, NAN);
        emu::launch(dim3(tc_tiles(h, w), tc_groups(cin), B), dim3(256), [&] {
            tr_conv3_tc(dout.data(), cout, B, h, w, wt.data(), nullptr, cin, 0, 1, a, p, got.data());
        });
        check(label(variant ? "tr_conv3_tc flip masked" : "tr_conv3_tc flip", s, cin, cout, stride), got,
              expect);
    }

    for (int variant = 0; variant < 2 && want(stride == 1 ? "tr_conv3_bx1" : "tr_conv3_bx2"); variant++) {
        const float* a = variant && with_add ? add.data() : nullptr;
        const float* p = variant ? post.data() : nullptr;
        Ref expect = dx;
        for (size_t j = 0; j < expect.v.size(); j++) finish(expect, j, a, p);
        std::vector<float> got(cin * B * n, NAN);
        if (stride == 1) {
            emu::launch(dim3(tiles(h, w), groups(cin), B), dim3(256), [&] {
                tr_conv3_bx1(dout.data(), cout, B, h, w, wt.data(), cin, a, p, got.data());
            });
        } else {
            emu::launch(dim3(blocks_for((long long)((ho + 1) / 2) * wo), groups(cin), B), dim3(256), [&] {
                tr_conv3_bx2(dout.data(), cout, B, h, w, wt.data(), cin, a, p, got.data());
            });
        }
        const std::string name = std::string(stride == 1 ? "tr_conv3_bx1" : "tr_conv3_bx2") +
                                 (variant ? " masked" : "");
        check(label(name.c_str(), s, cin, cout, stride), got, expect);
    }

    // The same on the tensor cores.
    for (int chunks : chunk_counts(s)) {
        if (!want("tr_conv3_bw_tc")) break;
        std::vector<float> partial((size_t)chunks * np, 0.0f);
        emu::launch(dim3(((cin + 7) / 8) * ((cout + 7) / 8), chunks), dim3(256), [&] {
            tr_conv3_bw_tc(x.data(), cin, B, h, w, stride, dout.data(), cout, wbase, bbase, np,
                           partial.data());
        });
        const auto g = reduced(partial, chunks, np);
        const std::string name = "tr_conv3_bw_tc " + std::to_string(chunks) + " chunks";
        check(label(name.c_str(), s, cin, cout, stride), g, gw);
    }

    // Weight and bias gradients: partial sums per chunk, then tr_reduce.
    for (int chunks : chunk_counts(s)) {
        if (!want("tr_conv3_bw")) break;
        std::vector<float> partial((size_t)chunks * np, 0.0f);
        emu::launch(dim3(cin * groups(cout), chunks), dim3(256), [&] {
            tr_conv3_bw(x.data(), cin, B, h, w, stride, dout.data(), cout, wbase, bbase, np,
                        partial.data());
        });
        const auto g = reduced(partial, chunks, np);
        const std::string name = "tr_conv3_bw " + std::to_string(chunks) + " chunks";
        check(label(name.c_str(), s, cin, cout, stride), g, gw);
    }
}

void deconv2_case(Rng& rng, Shape s, int cin, int cout) {
    const int h = s.h, w = s.w, B = s.B, h2 = (h + 1) / 2, w2 = (w + 1) / 2;
    const size_t n = (size_t)h * w, n2 = (size_t)h2 * w2;
    auto x = rng.vec(cin * B * n2), wt = rng.vec(cout * cin * 4), bias = rng.vec(cout);
    auto dout = rng.vec(cout * B * n), post = rng.vec(cin * B * n2);

    // The three references in one pass over every output point and input channel.
    const int wbase = 2, bbase = wbase + cout * cin * 4 + 1, np = bbase + cout + 3;
    Ref fwd(cout * B * n), dx(cin * B * n2), gw(np);
    for (int o = 0; o < cout; o++)
        for (int b = 0; b < B; b++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    const size_t j = ((size_t)o * B + b) * n + (size_t)y * w + xx;
                    const double d = dout[j];
                    const int k = 2 * (y % 2) + xx % 2;
                    fwd.add(j, bias[o]);
                    gw.add(bbase + o, d);
                    for (int i = 0; i < cin; i++) {
                        const size_t src = ((size_t)i * B + b) * n2 + (size_t)(y / 2) * w2 + xx / 2;
                        const double wk = wt[(o * cin + i) * 4 + k];
                        fwd.add(j, wk * x[src]);
                        dx.add(src, wk * d);
                        gw.add(wbase + (o * cin + i) * 4 + k, d * x[src]);
                    }
                }

    for (double& v : fwd.v) v = act(v, true);
    if (want("tr_deconv2")) {
        std::vector<float> out(cout * B * n, NAN);
        emu::launch(dim3(blocks_for((long long)n2), groups(cout), B), dim3(256), [&] {
            tr_deconv2(x.data(), cin, B, h2, w2, h, w, wt.data(), bias.data(), cout, 1, out.data());
        });
        check(label("tr_deconv2 relu", s, cin, cout, 2), out, fwd);
    }

    for (size_t j = 0; j < dx.v.size(); j++) finish(dx, j, nullptr, post.data());
    if (want("tr_deconv2_bx")) {
        std::vector<float> got(cin * B * n2, NAN);
        emu::launch(dim3(blocks_for((long long)n2), groups(cin), B), dim3(256), [&] {
            tr_deconv2_bx(dout.data(), cout, B, h, w, wt.data(), cin, h2, w2, post.data(), got.data());
        });
        check(label("tr_deconv2_bx masked", s, cin, cout, 2), got, dx);
    }

    for (int chunks : chunk_counts(s)) {
        if (!want("tr_deconv2_bw")) break;
        std::vector<float> partial((size_t)chunks * np, 0.0f);
        emu::launch(dim3((cin + 1) / 2 * groups(cout), chunks), dim3(256), [&] {
            tr_deconv2_bw(x.data(), cin, B, h2, w2, h, w, dout.data(), cout, wbase, bbase, np,
                          partial.data());
        });
        const auto g = reduced(partial, chunks, np);
        const std::string name = "tr_deconv2_bw " + std::to_string(chunks) + " chunks";
        check(label(name.c_str(), s, cin, cout, 2), g, gw);
    }
    // The same on the tensor cores.
    for (int chunks : chunk_counts(s)) {
        if (!want("tr_deconv2_bw_tc")) break;
        std::vector<float> partial((size_t)chunks * np, 0.0f);
        emu::launch(dim3((cin + 15) / 16 * ((cout + 7) / 8), chunks), dim3(256), [&] {
            tr_deconv2_bw_tc(x.data(), cin, B, h2, w2, h, w, dout.data(), cout, wbase, bbase, np,
                             partial.data());
        });
        const auto g = reduced(partial, chunks, np);
        const std::string name = "tr_deconv2_bw_tc " + std::to_string(chunks) + " chunks";
        check(label(name.c_str(), s, cin, cout, 2), g, gw);
    }
}

void conv1_case(Rng& rng, Shape s, int cin, int cout) {
    const int h = s.h, w = s.w, B = s.B;
    const size_t n = (size_t)h * w;
    auto x = rng.vec(cin * B * n), wt = rng.vec(cout * cin), bias = rng.vec(cout);
    auto dout = rng.vec(cout * B * n), post = rng.vec(cin * B * n);
    Ref fwd(cout * B * n), dx(cin * B * n);
    const int wbase = 1, bbase = wbase + cout * cin, np = bbase + cout;
    Ref gw(np);
    for (int o = 0; o < cout; o++)
        for (int b = 0; b < B; b++)
            for (size_t p = 0; p < n; p++) {
                const size_t j = ((size_t)o * B + b) * n + p;
                fwd.add(j, bias[o]);
                gw.add(bbase + o, dout[j]);
                for (int i = 0; i < cin; i++) {
                    const size_t src = ((size_t)i * B + b) * n + p;
                    fwd.add(j, (double)wt[o * cin + i] * x[src]);
                    dx.add(src, (double)wt[o * cin + i] * dout[j]);
                    gw.add(wbase + o * cin + i, (double)dout[j] * x[src]);
                }
            }
    if (want("tr_conv1")) {
        std::vector<float> out(cout * B * n, NAN);
        emu::launch(dim3(blocks_for((long long)n), groups(cout), B), dim3(256), [&] {
            tr_conv1(x.data(), cin, B, (long long)n, wt.data(), bias.data(), cout, 0, out.data());
        });
        check(label("tr_conv1", s, cin, cout, 1), out, fwd);
    }
    for (size_t j = 0; j < dx.v.size(); j++) finish(dx, j, nullptr, post.data());
    if (want("tr_conv1_bx")) {
        std::vector<float> got(cin * B * n, NAN);
        emu::launch(dim3(blocks_for((long long)n), groups(cin), B), dim3(256), [&] {
            tr_conv1_bx(dout.data(), cout, B, (long long)n, wt.data(), cin, post.data(), got.data());
        });
        check(label("tr_conv1_bx masked", s, cin, cout, 1), got, dx);
    }
    if (want("tr_conv1_bw")) {
        const int chunks = chunk_counts(s)[0];
        std::vector<float> partial((size_t)chunks * np, 0.0f);
        emu::launch(dim3(cin * groups(cout), chunks), dim3(256), [&] {
            tr_conv1_bw(x.data(), cin, B, h, w, dout.data(), cout, wbase, bbase, np, partial.data());
        });
        const auto g = reduced(partial, chunks, np);
        check(label("tr_conv1_bw", s, cin, cout, 1), g, gw);
    }
}

// tr_out against the four kernels it replaces, run here too (tr_conv1, tr_loss, tr_conv1_bx,
// tr_conv1_bw): the input gradient bit for bit, the weight and bias sums within rounding of
// a double-precision sum of the same dz, the mask sum exactly (0/1 masks).
void out_case(Rng& rng, Shape s, int cin, int cout, int chunks) {
    const int B = s.B;
    const size_t n = (size_t)s.h * s.w, P = (size_t)B * n;
    auto x = rng.vec(cin * P), wt = rng.vec(cout * cin), bias = rng.vec(cout), t = rng.vec(cout * P);
    auto m = rng.vec(cout * P);
    for (auto& v : m) v = v > -0.2f ? 1.0f : 0.0f;
    std::vector<float> z(cout * P, NAN), dz(cout * P, NAN), want_dx(cin * P, NAN);
    emu::launch(dim3(blocks_for((long long)n), groups(cout), B), dim3(256), [&] {
        tr_conv1(x.data(), cin, B, (long long)n, wt.data(), bias.data(), cout, 0, z.data());
    });
    emu::launch(dim3(blocks_for((long long)(cout * P))), dim3(256),
                [&] { tr_loss(z.data(), t.data(), m.data(), (long long)(cout * P), dz.data()); });
    emu::launch(dim3(blocks_for((long long)n), groups(cin), B), dim3(256), [&] {
        tr_conv1_bx(dz.data(), cout, B, (long long)n, wt.data(), cin, x.data(), want_dx.data());
    });
    const int wbase = 3, bbase = wbase + cout * cin, np = bbase + cout + 2;
    Ref gw(np);
    double count = 0;
    for (int o = 0; o < cout; o++)
        for (size_t q = 0; q < P; q++) {
            const double d = dz[o * P + q];
            gw.add(bbase + o, d);
            count += m[o * P + q];
            for (int i = 0; i < cin; i++) gw.add(wbase + o * cin + i, d * x[i * P + q]);
        }
    std::vector<float> dx(cin * P, NAN), partial((size_t)chunks * np, 0.0f), mparts(chunks, NAN);
    emu::launch(dim3(chunks), dim3(256), [&] {
        tr_out(x.data(), cin, (long long)P, wt.data(), bias.data(), cout, t.data(), m.data(), dx.data(),
               wbase, bbase, np, partial.data(), mparts.data());
    });
    const std::string name = label("tr_out", s, cin, cout, 1) + " chunks " + std::to_string(chunks);
    const bool same = std::memcmp(dx.data(), want_dx.data(), dx.size() * sizeof(float)) == 0;
    float total = NAN;
    emu::launch(dim3(1), dim3(256), [&] { tr_sum_final(mparts.data(), chunks, &total); });
    if (same && total == (float)count) {
        passed++;
        std::printf("ok   %s: input gradient bit for bit, mask sum %g\n", name.c_str(), total);
    } else {
        failed++;
        std::printf("FAIL %s: input gradient %s, mask sum %g (want %g)\n", name.c_str(),
                    same ? "equal" : "differs", total, count);
    }
    check(name + " weight sums", reduced(partial, chunks, np), gw);
}

}  // namespace

int main(int argc, char** argv) {
    // "quick": fewer shapes (the test suite); no argument: all of them.
    const bool quick = argc > 1 && std::string(argv[1]) == "quick";
    if (argc > 2) only = argv[2];
    Rng rng{12345};
    // Patches as the trainer cuts them: whole small slices, odd sizes, the default 48^2 and the
    // 64^2 of the large runs (two 32 x 32 tiles each way), and sizes that leave partial tiles.
    // 21 x 133: rows wider than a warp at every resolution (a lane takes several columns);
    // 1 x 1 and 65 x 3: degenerate slices the trainer takes whole.
    std::vector<Shape> shapes = {{3, 7, 5}, {2, 33, 40}, {1, 70, 37}, {1, 21, 133}, {3, 1, 1}, {1, 65, 3}};
    if (!quick) shapes.push_back({2, 64, 64});
    // (cin, cout) as the network's layers have them for widths 6 and 16 and odd counts.
    const int pairs[][2] = {{1, 6}, {6, 12}, {12, 12}, {12, 6}, {7, 13}, {2, 1}};
    for (Shape s : shapes) {
        for (auto& p : pairs) {
            for (int stride : {1, 2}) conv3_case(rng, s, p[0], p[1], stride, stride == 2);
        }
        deconv2_case(rng, s, 12, 6);
        deconv2_case(rng, s, 5, 7);
        deconv2_case(rng, s, 20, 9);
        conv1_case(rng, s, 6, 1);
        conv1_case(rng, s, 7, 8);
        if (want("tr_out"))
            for (auto [cin, cout] : {std::pair{6, 1}, {4, 2}, {8, 2}, {1, 1}})
                for (int chunks : chunk_counts(s)) out_case(rng, s, cin, cout, chunks);
    }
    if (!quick) {
        conv3_case(rng, {1, 40, 41}, 32, 32, 1, false);
        conv3_case(rng, {1, 40, 41}, 16, 32, 2, true);
        deconv2_case(rng, {1, 40, 41}, 32, 16);
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
