"""The NeurLZ enhancer through HDF5 (h5py): cd_values word 6 turns it on, the chunks carry
the ENHANCE section, and the bounds hold (strict 1x, relaxed 2x). Same conventions as
test_hdf5_plugin.py, whose helpers this reuses."""

import struct

import pytest

pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

from test_hdf5_plugin import built_plugin, check_bound, h5py_roundtrip, run_py, words  # noqa: F401,E402

ENHANCE = 4


def sections(chunk):
    """Section ids of a resid chunk."""
    assert chunk[:4] == b"RSID"
    rank = chunk[7]
    pos, ids = 64 + 8 * rank, []
    while pos < len(chunk):
        ids.append(chunk[pos])
        (length,) = struct.unpack_from("<Q", chunk, pos + 4)
        pos += 16 + length
    assert pos == len(chunk)
    return ids


def field(shape):
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    v = np.sin(0.11 * x) * np.cos(0.07 * y) * 3 + np.sin(0.05 * (x + y) + 0.3 * z)
    return (v + 0.3 * np.sin(0.9 * x) * np.sin(0.8 * y)).astype("<f4")


@pytest.mark.parametrize("mode,limit", [(1, 1.0), (2, 2.0)])
def test_h5py_enhancer_round_trip(tmp_path, mode, limit):
    data = field((8, 64, 64))
    # word 6: enhancer mode, budget 1 (20 steps), bit 16: keep it whenever it lowers the error
    cd = words("rel", 1e-2, 0, 0, mode | 1 << 8 | 1 << 16)
    back, info = h5py_roundtrip(tmp_path, data, (8, 64, 64), cd)
    assert info["filters"][str(32900)][6] == mode | 1 << 8 | 1 << 16
    check_bound(data, back, "rel", 1e-2 * limit, (8, 64, 64))
    p = run_py(tmp_path, """
        with h5py.File("rt.h5", "r") as f:
            _, chunk = f["x"].id.read_direct_chunk((0, 0, 0))
        open("chunk.bin", "wb").write(chunk)
        print(json.dumps(len(chunk)))
    """)
    assert p.result > 0
    assert sections((tmp_path / "chunk.bin").read_bytes())[-1] == ENHANCE


def test_h5py_cross_field_and_psnr_target(tmp_path):
    """Three fields of one grid stacked along the leading dimension, written with the relaxed
    cross-field enhancer through h5py's compression_opts: within 2x the bound, ENHANCE present.
    Then a PSNR target with the enhancer (quality-target mode): the target holds."""
    stack = np.stack([field((4, 48, 48)) + 0.2 * k for k in range(3)])
    forced = 4 | 1 << 8 | 1 << 16  # relaxed cross-field, budget 1, keep it
    back, _ = h5py_roundtrip(tmp_path, stack, stack.shape, words("rel", 2e-2, 0, 0, forced))
    check_bound(stack, back, "rel", 2e-2 * 2, stack.shape)
    p = run_py(tmp_path, """
        with h5py.File("rt.h5", "r") as f:
            _, chunk = f["x"].id.read_direct_chunk((0, 0, 0, 0))
        open("chunk.bin", "wb").write(chunk)
        print(json.dumps(len(chunk)))
    """)
    assert sections((tmp_path / "chunk.bin").read_bytes())[-1] == ENHANCE

    data = field((8, 64, 64))
    back, _ = h5py_roundtrip(tmp_path, data, data.shape, words("psnr", 40.0, 0, 0, 2 | 1 << 8))
    o, b = data.astype(np.float64), back.astype(np.float64)
    psnr = 20 * np.log10((o.max() - o.min()) / np.sqrt(np.mean((o - b) ** 2)))
    assert psnr >= 40.0
