// resid: checks NGLR's decode kernel (kernels/nglr.cu) on the CPU, through the CUDA stand-in of
// emu.h, against the values the Rust decoder computed (src/predict/nglr.rs). The cases come in
// a file written by tests/nglr_kernel_cpu.rs, with the model words and block table exactly as
// src/backend/cuda_nglr.rs passes them; the reconstruction must match bit for bit.
// Prints one line per case and "N passed, M failed"; exits non-zero on a failure.
//
// Built and run by tests/nglr_kernel_cpu.rs: g++ -std=c++20 -O2 -I kernels.
#include "emu.h"
#include "nglr.cu"  // from kernels/ (-I)

#include <string>

namespace {

struct Input {
    FILE* f;
    template <class T>
    T one() {
        T v;
        if (std::fread(&v, sizeof v, 1, f) != 1) emu::fail("case file truncated");
        return v;
    }
    template <class T>
    std::vector<T> many(long long n) {
        std::vector<T> v(n);
        if (n > 0 && std::fread(v.data(), sizeof(T), n, f) != (size_t)n) emu::fail("case file truncated");
        return v;
    }
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CASES\n", argv[0]);
        return 2;
    }
    Input in{std::fopen(argv[1], "rb")};
    if (!in.f) {
        std::perror(argv[1]);
        return 2;
    }
    // File layout (little-endian): cases; then per case: name length and bytes, model word
    // count and words (i64), feedback step m, block count and table (8 u64 a block), value
    // count, codes and expected reconstruction (i32 each).
    const long long cases = in.one<long long>();
    int passed = 0, failed = 0;
    for (long long c = 0; c < cases; c++) {
        const auto name_bytes = in.many<char>(in.one<long long>());
        const std::string name(name_bytes.begin(), name_bytes.end());
        const auto words = in.many<long long>(in.one<long long>());
        const int m = (int)in.one<long long>();
        const long long blocks = in.one<long long>();
        const auto table = in.many<u64>(8 * blocks);
        const long long n = in.one<long long>();
        auto q = in.many<int>(n);
        const auto want = in.many<int>(n);
        std::vector<int> e(n, 0x5a5a5a5a);
        emu::launch(dim3((unsigned)blocks), dim3(256),
                    [&] { nglr_decode(q.data(), e.data(), table.data(), words.data(), m); });
        long long bad = 0, first = -1;
        for (long long i = 0; i < n; i++)
            if (q[i] != want[i]) {
                if (first < 0) first = i;
                bad++;
            }
        if (bad) {
            failed++;
            std::printf("FAIL nglr_decode %s: %lld of %lld values differ (first at %lld: %d, want %d)\n",
                        name.c_str(), bad, n, first, q[first], want[first]);
        } else {
            passed++;
            std::printf("ok   nglr_decode %s (%lld values)\n", name.c_str(), n);
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
