"""The CUDA training kernels checked on the CPU: tests/kernels/conv_train_check.cpp runs every
layer kernel of kernels/conv_train.cu through a CPU stand-in for the CUDA execution model
(tests/kernels/emu.h: a fiber per thread, real barriers and warp shuffles) and compares each
result with a double-precision reference of the layer. NVRTC only proves that the kernels
compile; this proves on a machine with no GPU that they compute the right thing, so a kernel
change need not wait for a GPU to be checked (scripts/gpu-check then confirms it on one).

Needs g++ (C++20) on x86-64 (the fibers switch stacks in x86-64 assembly).
"""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "tests" / "kernels" / "conv_train_check.cpp"


def build(tmp_path, kernels_dir, name="check"):
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CUDA stand-in switches stacks in x86-64 assembly")
    cxx = shutil.which("g++")
    if not cxx:
        pytest.skip("no C++ compiler (apt-get install g++)")
    exe = tmp_path / name
    b = subprocess.run([cxx, "-std=c++20", "-O2", "-Wall", "-Wno-unknown-pragmas", "-I", str(kernels_dir),
                        str(SRC), "-o", str(exe)], capture_output=True, text=True)
    assert b.returncode == 0, f"build failed:\n{b.stderr}"
    return exe


def test_training_kernels_match_the_reference(tmp_path):
    exe = build(tmp_path, REPO / "kernels")
    p = subprocess.run([str(exe), "all"], capture_output=True, text=True, timeout=900)
    summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    print(summary)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr
    assert summary.endswith(" 0 failed") and int(summary.split()[0]) >= 850, summary
    for kernel in ["tr_conv3 ", "tr_conv3_tc ", "tr_conv3_tc flip", "tr_conv3_bx1", "tr_conv3_bx2",
                   "tr_conv3_bw ", "tr_conv3_bw_tc", "tr_deconv2 ", "tr_deconv2_bx", "tr_deconv2_bw",
                   "tr_deconv2_bw_tc", "tr_conv1 ", "tr_conv1_bx", "tr_conv1_bw", "tr_out"]:
        assert f"ok   {kernel}" in p.stdout, f"{kernel.strip()} was not checked"


@pytest.mark.parametrize("kernel,line,wrong", [
    # A wrong tap in the stride-2 input gradient.
    ("tr_conv3_bx2", "acc[m][0][0][j] += w11 * d00;", "acc[m][0][0][j] += w10 * d00;"),
    # The weight gradient's window not moved at stride 2.
    ("tr_conv3_bw", "else v[0][kx] = v[4][kx];", "else v[0][kx] = v[3][kx];"),
    # The transposed convolution's bias sums read from the second channel's taps.
    ("tr_deconv2_bw", "const float* bias_sums = sh + 2 * G * 4;", "const float* bias_sums = sh + G * 4;"),
    # One tile row too few loaded.
    ("tr_conv3", "if (r0 < rows && ch < nc && r < TH_) {", "if (r0 < rows && ch < nc && r < TH_ - 1) {"),
    # The next channels' copies not waited for: the tile still holds the last ones.
    ("tr_conv3", "tr_copy_wait<1>();", ""),
    # Every staged channel of a barrier given the first one's taps.
    ("tr_conv3_bx1", "wsh[threadIdx.x] = wt[((o0 + c) * cin + i) * 9", "wsh[threadIdx.x] = wt[(o0 * cin + i) * 9"),
    # Tensor cores: the second output point's fragment register holding the second channel's.
    ("tr_conv3_tc", "const float av[4] = {a[q * TC_PLANE], a[q * TC_PLANE + 8], a[(q + 4) * TC_PLANE],",
     "const float av[4] = {a[q * TC_PLANE], a[(q + 4) * TC_PLANE], a[q * TC_PLANE + 8],"),
    # The product's low halves dropped (TF32 alone: not float accuracy).
    ("tr_conv3_tc", "    tr_mma(d, alo, bhi);\n    tr_mma(d, ahi, blo);\n", ""),
    # The weight gradients' next input row into the window slot still in use.
    ("tr_conv3_bw_tc", "tr_split(px[S - 1][k], &wh[(U + 2) % 3][k], &wl[(U + 2) % 3][k]);",
     "tr_split(px[S - 1][k], &wh[(U + 1) % 3][k], &wl[(U + 1) % 3][k]);"),
    # At stride 2, an output row's two new input rows fetched in each other's place.
    ("tr_conv3_bw_tc", "px[s][k] = ok && cv[k] ? row[s * w + 4 * S * (k / 3) + k % 3 - 1] : 0.0f;",
     "px[s][k] = ok && cv[k] ? row[(S - 1 - s) * w + 4 * S * (k / 3) + k % 3 - 1] : 0.0f;"),
    # The transposed convolution's bias sums on the tensor cores missing one lane's points.
    ("tr_deconv2_bw_tc", "for (int qq = 0; qq < 4; qq++) v += sh[u * 17 * 32 + k + qq];",
     "for (int qq = 0; qq < 3; qq++) v += sh[u * 17 * 32 + k + qq];"),
    # The fused output layer's bias sums left out of the stored row.
    ("tr_out", "if (j < o && i == OUT_WIDTH) dst[bbase + j] = sh[k];", ""),
    # Its input gradient not masked by the layer's input.
    ("tr_out", "if (i < c) *di = av[i] > 0.0f ? dv[i] : 0.0f;", "if (i < c) *di = dv[i];"),
])
def test_a_broken_kernel_fails_the_check(tmp_path, kernel, line, wrong):
    kernels = tmp_path / "kernels"
    shutil.copytree(REPO / "kernels", kernels)
    cu = kernels / "conv_train.cu"
    text = cu.read_text()
    assert text.count(line) == 1, f"the line to break is gone from conv_train.cu: {line}"
    cu.write_text(text.replace(line, wrong))
    exe = build(tmp_path, kernels, "broken")
    p = subprocess.run([str(exe), "quick", kernel], capture_output=True, text=True, timeout=900)
    assert p.returncode != 0, p.stdout[-2000:]
    assert f"FAIL {kernel}" in p.stdout, p.stdout[-2000:]
