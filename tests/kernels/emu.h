// resid: a CPU stand-in for the CUDA execution model, so the kernels in kernels/*.cu can be
// checked on a machine with no GPU (tests/test_kernels_cpu.py builds the checks with g++).
//
// Every thread of a block is a fiber (its own stack; x86-64 only) on one OS thread: the
// scheduler runs each fiber until it reaches a barrier (__syncthreads, a warp shuffle or a
// warp-wide matrix product, mma_tf32) or returns, and releases a barrier once every live thread of its warp (shuffles) or block
// waits there. Blocks run one after another, so `__shared__` is a function-local `static`. A
// barrier that some threads of a block reach while others wait at another one, or have
// nothing left to do, is reported as a divergence error, which on a GPU is a hang or
// undefined behaviour.
//
// Asynchronous copies into shared memory (cp.async, through tr_copy_async in conv_train.cu)
// land only when the thread waits for their group.
//
// What it does not model: the timing of real threads (it checks results, not speed), races
// between threads of one barrier interval (each runs alone up to its next barrier), memory
// spaces (every pointer is host memory) and float contraction (g++ decides; the checks compare
// against double-precision references with a tolerance, as the GPU tests do).
#ifndef RESID_EMU_H
#define RESID_EMU_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <array>
#include <functional>
#include <vector>

// CUDA's integer min and max.
using std::max;
using std::min;

struct uint3 {
    unsigned x, y, z;
};
struct float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

enum class State { Ready, AtBlock, AtWarp, Done };

struct Fiber {
    void* sp = nullptr;  // its saved stack pointer while it waits
    std::vector<char> stack;
    State state = State::Ready;
    uint3 tid{0, 0, 0};
};

inline uint3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
inline dim3 block_dim, grid_dim;
inline void* scheduler_sp = nullptr;
inline std::vector<Fiber> fibers;
inline int current = 0;
inline std::function<void()> body;
// Two slots per thread for warp shuffles, used in turn (`parity`): a lane may write its next
// value before the others have read its last one.
inline std::vector<unsigned long long> slots;
inline std::vector<int> parity;
// The same for the operands of warp-wide matrix products (mma_tf32): a[4], b[2] and how many
// products the lane had begun (so that a lane that returned before the product is seen).
inline std::vector<std::array<unsigned, 7>> mma_slots;
inline std::vector<unsigned> mma_count;
// Asynchronous copies into shared memory (cp.async): each thread's copies not yet waited for,
// with the value read at issue and the group they were committed in (the thread's groups
// committed so far: `async_groups`). Their destinations are written only when a wait covers
// them, so a kernel that reads a staged tile before waiting reads stale values.
struct AsyncCopy {
    float* dst;
    float v;
    unsigned group;
};
inline std::vector<std::vector<AsyncCopy>> async_copies;
inline std::vector<unsigned> async_groups;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "emu: %s (block %u,%u,%u)\n", what, block_idx.x, block_idx.y, block_idx.z);
    std::exit(2);
}

// A fiber switch: saves the callee-saved registers on the current stack and its stack pointer
// in *save, then continues on `to` (x86-64 System V; the caller saves everything else).
extern "C" void emu_switch(void** save, void* to);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

inline int threads = 0;  // of the block running

inline void run_fiber(void** save, int t) {
    current = t;
    thread_idx = fibers[t].tid;
    emu_switch(save, fibers[t].sp);
}

// Parks the running fiber. The next ready lane of its warp runs straight after it; when none is
// left and the whole warp waits at a shuffle, the warp goes on from its first lane; anything
// else (a block barrier, the end) goes back to the scheduler.
inline void wait_at(State s) {
    const int t = current, lo = t & ~31, hi = lo + 32 < threads ? lo + 32 : threads;
    fibers[t].state = s;
    for (int u = t + 1; u < hi; u++)
        if (fibers[u].state == State::Ready) return run_fiber(&fibers[t].sp, u);
    int alive = 0, at_warp = 0, first = -1;
    for (int u = lo; u < hi; u++) {
        alive += fibers[u].state != State::Done;
        if (fibers[u].state == State::AtWarp) at_warp++, first = first < 0 ? u : first;
    }
    if (at_warp > 0 && at_warp == alive) {
        for (int u = lo; u < hi; u++)
            if (fibers[u].state == State::AtWarp) fibers[u].state = State::Ready;
        if (first == t) return;
        return run_fiber(&fibers[t].sp, first);
    }
    emu_switch(&fibers[t].sp, scheduler_sp);
}

// A fiber runs the launch's body once per block, then parks until the next block.
[[noreturn]] inline void entry() {
    for (;;) {
        body();
        wait_at(State::Done);
    }
}

// A new fiber's stack: six zero registers for emu_switch to pop, then entry as the return
// address, placed so that entry starts with the stack aligned as after a call.
inline void start_fiber(Fiber& f) {
    f.stack.assign(64 * 1024, 0);
    auto top = (reinterpret_cast<uintptr_t>(f.stack.data()) + f.stack.size()) & ~uintptr_t(15);
    void** ret = reinterpret_cast<void**>(top - 16);
    ret[0] = reinterpret_cast<void*>(&entry);
    ret[1] = nullptr;
    f.sp = ret - 6;
}

inline int lane_of(int t) { return t & 31; }

// Runs one block: every fiber to completion, releasing barriers as they fill.
inline void run_block() {
    const int n = (int)(block_dim.x * block_dim.y * block_dim.z);
    if (n > 1024) fail("more than 1024 threads in a block");
    if ((int)fibers.size() < n) fibers.resize(n);
    threads = n;
    slots.assign(2 * n, 0);
    parity.assign(n, 0);
    mma_slots.assign(2 * n, {});
    mma_count.assign(n, 0);
    async_copies.assign(n, {});
    async_groups.assign(n, 0);
    for (int t = 0; t < n; t++) {
        Fiber& f = fibers[t];
        f.tid = {t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
        f.state = State::Ready;
        if (f.stack.empty()) start_fiber(f);
    }
    const int warps = (n + 31) / 32;
    for (;;) {
        // Each warp in turn runs until all its live threads wait at the block barrier (or are
        // done), its own barriers (shuffles) released as they fill: 32 fibers at a time.
        for (int w = 0; w < warps; w++) {
            const int lo = 32 * w, hi = lo + 32 < n ? lo + 32 : n;
            for (;;) {
                for (int t = lo; t < hi; t++) {
                    if (fibers[t].state != State::Ready) continue;
                    run_fiber(&scheduler_sp, t);
                }
                int alive = 0, at_warp = 0;
                for (int t = lo; t < hi; t++) {
                    alive += fibers[t].state != State::Done;
                    at_warp += fibers[t].state == State::AtWarp;
                }
                if (at_warp == 0) break;
                if (at_warp != alive) fail("threads of a warp wait at different barriers");
                for (int t = lo; t < hi; t++)
                    if (fibers[t].state == State::AtWarp) fibers[t].state = State::Ready;
            }
        }
        int alive = 0;
        for (int t = 0; t < n; t++) alive += fibers[t].state != State::Done;
        if (alive == 0) {
            for (int t = 0; t < n; t++)
                if (!async_copies[t].empty()) fail("cp.async copies never waited for");
            return;
        }
        if (alive != n) fail("__syncthreads after some threads returned");
        for (int t = 0; t < n; t++) fibers[t].state = State::Ready;
    }
}

// kernel<<<grid, block>>>(...) as emu::launch(grid, block, [&] { kernel(...); }).
template <class F>
void launch(dim3 grid, dim3 block, F f) {
    grid_dim = grid;
    block_dim = block;
    body = f;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_idx = {x, y, z};
                run_block();
            }
}

// Warp shuffle: every live lane of the warp writes its value, waits for the others, and reads
// lane `src(lane)`'s.
template <class T, class Src>
T shuffle(T v, Src src) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const int t = current, base = t & ~31, buf = parity[t] * threads;
    parity[t] ^= 1;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    slots[buf + t] = bits;
    wait_at(State::AtWarp);
    const int from = base + src(lane_of(t));
    T r = v;
    if (from >= base && from < threads) std::memcpy(&r, &slots[buf + from], sizeof(T));
    return r;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 with d as accumulator: D = A B + D for a
// 16 x 8 A, 8 x 8 B and 16 x 8 D spread over the warp's 32 lanes as the PTX ISA lays out
// their fragments (g = lane / 4, q = lane % 4):
//   a[0] = A[g][q], a[1] = A[g + 8][q], a[2] = A[g][q + 4], a[3] = A[g + 8][q + 4];
//   b[0] = B[q][g], b[1] = B[q + 4][g];
//   d[e] = D[g + 8 (e / 2)][2 q + e % 2].
// Every lane writes its operands, waits for the whole warp, and computes its own four results
// from everyone's. The operands' low 13 bits are ignored, as the tensor cores ignore them; the
// products are summed in double and rounded once (the hardware's order of float additions is
// its own: the checks allow for float rounding).
inline void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    const int t = current, base = t & ~31;
    const unsigned seq = ++mma_count[t];
    const int buf = (seq & 1) * threads;
    if (base + 32 > threads) fail("mma in a warp of fewer than 32 threads");
    mma_slots[buf + t] = {a[0], a[1], a[2], a[3], b[0], b[1], seq};
    wait_at(State::AtWarp);
    for (int u = base; u < base + 32; u++)
        if (mma_slots[buf + u][6] != seq) fail("mma without every lane of the warp");
    auto val = [](unsigned u) {
        u &= 0xffffe000u;
        float f;
        std::memcpy(&f, &u, 4);
        return (double)f;
    };
    // A[m][k] and B[k][n] from the lanes that hold them.
    auto A = [&](int m, int k) { return val(mma_slots[buf + base + (m % 8) * 4 + k % 4][(m >= 8) + 2 * (k >= 4)]); };
    auto B = [&](int k, int n) { return val(mma_slots[buf + base + n * 4 + k % 4][4 + (k >= 4)]); };
    const int lane = t - base, g = lane >> 2, q = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int m = g + 8 * (e >> 1), n = 2 * q + (e & 1);
        double acc = d[e];
        for (int k = 0; k < 8; k++) acc += A(m, k) * B(k, n);
        d[e] = (float)acc;
    }
}

// cp.async of 4 bytes with zero fill: *dst = ok ? *src : 0 once a wait covers it.
inline void cp_async(float* dst, const float* src, bool ok) {
    async_copies[current].push_back({dst, ok ? *src : 0.0f, async_groups[current]});
}
inline void cp_async_commit() { async_groups[current]++; }
// cp.async.wait_group n: every copy but those of the n groups committed last is done (copies
// not yet committed stay pending, as on the device).
inline void cp_async_wait(unsigned n) {
    auto& v = async_copies[current];
    const unsigned committed = async_groups[current];
    const unsigned upto = committed > n ? committed - n : 0;
    std::vector<AsyncCopy> left;
    for (const AsyncCopy& c : v) {
        if (c.group < upto) *c.dst = c.v;
        else left.push_back(c);
    }
    v = left;
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(...)

inline void __syncthreads() { emu::wait_at(emu::State::AtBlock); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::shuffle(v, [mask](int lane) { return lane ^ mask; });
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned d) {
    return emu::shuffle(v, [d](int lane) { return lane >= (int)d ? lane - (int)d : lane; });
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned d) {
    return emu::shuffle(v, [d](int lane) { return lane + (int)d < 32 ? lane + (int)d : lane; });
}
template <class T>
T __shfl_sync(unsigned, T v, int src) {
    return emu::shuffle(v, [src](int) { return src & 31; });
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline long long __double_as_longlong(double d) {
    long long u;
    std::memcpy(&u, &d, 8);
    return u;
}
inline float __double2float_rn(double d) { return (float)d; }

#endif  // RESID_EMU_H
