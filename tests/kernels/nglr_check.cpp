// resid: checks NGLR's kernels (kernels/nglr.cu: nglr_decode, nglr_encode) on the CPU, through
// the CUDA stand-in of emu.h, against what the Rust code computed (src/predict/nglr.rs). The
// cases come in a file written by tests/nglr_kernel_cpu.rs, with the model words and block
// table exactly as src/backend/cuda_nglr.rs passes them; reconstructions, codes and escapes
// must match bit for bit.
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
    // File layout (little-endian): cases; then per case: name length and bytes, kind (0
    // decode, 1 encode), model word count and words (i64), feedback step m, block count and
    // table (8 u64 a block), value count n. Decode: codes and the expected reconstruction (i32
    // each). Encode: mid, step, eb (f64), single (i64), values (f64), prequantized indices
    // (i32), escaped (u8), then the expected codes, reconstruction (i32) and escaped (u8).
    const long long cases = in.one<long long>();
    int passed = 0, failed = 0;
    for (long long c = 0; c < cases; c++) {
        const auto name_bytes = in.many<char>(in.one<long long>());
        const std::string name(name_bytes.begin(), name_bytes.end());
        const long long kind = in.one<long long>();
        const auto words = in.many<long long>(in.one<long long>());
        const long long m = in.one<long long>();
        const long long blocks = in.one<long long>();
        const auto table = in.many<u64>(8 * blocks);
        const long long n = in.one<long long>();
        std::vector<int> e(n, 0x5a5a5a5a);
        long long bad = 0, first = -1;
        std::string what;
        auto compare = [&](const char* field, const auto& got, const auto& want) {
            for (long long i = 0; i < n; i++)
                if (got[i] != want[i]) {
                    if (first < 0) first = i, what = field;
                    bad++;
                }
        };
        if (kind == 0) {
            auto q = in.many<int>(n);
            const auto want = in.many<int>(n);
            emu::launch(dim3((unsigned)blocks), dim3(256),
                        [&] { nglr_decode(q.data(), e.data(), table.data(), words.data(), (int)m); });
            compare("reconstruction", q, want);
        } else {
            const double mid = in.one<double>(), step = in.one<double>(), eb = in.one<double>();
            const int single = (int)in.one<long long>();
            const auto x = in.many<double>(n);
            auto q = in.many<int>(n);
            auto esc = in.many<unsigned char>(n);
            const auto want_codes = in.many<int>(n);
            const auto want_q = in.many<int>(n);
            const auto want_esc = in.many<unsigned char>(n);
            std::vector<int> codes(n, 0x3c3c3c3c);
            emu::launch(dim3((unsigned)blocks), dim3(256), [&] {
                nglr_encode(q.data(), codes.data(), e.data(), esc.data(), x.data(), table.data(), words.data(), m,
                            mid, step, eb, single);
            });
            compare("codes", codes, want_codes);
            compare("reconstruction", q, want_q);
            compare("escapes", esc, want_esc);
        }
        const char* kernel = kind == 0 ? "nglr_decode" : "nglr_encode";
        if (bad) {
            failed++;
            std::printf("FAIL %s %s: %lld values differ (first: %s at %lld)\n", kernel, name.c_str(), bad,
                        what.c_str(), first);
        } else {
            passed++;
            std::printf("ok   %s %s (%lld values)\n", kernel, name.c_str(), n);
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
