"""HDF5 integration tests of the resid filter plugin (libh5resid.so, filter id 32900).

Run after `cargo build --release -p h5resid`:

    python3 -m pytest -q tests/

The plugin is looked up in $RESID_PLUGIN_DIR, else $CARGO_TARGET_DIR/release, else
target/release. Everything that loads the plugin runs in a subprocess with HDF5_PLUGIN_PATH
set, so a crash shows up as a failed test, not a dead test runner. h5py brings its own
HDF5 (2.0); h5repack, h5dump, h5diff and the C test use Debian's HDF5 (1.10): the same
plugin binary must work under both. Tests that need a missing system tool skip with a message.
"""

import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

h5py = pytest.importorskip("h5py", reason="h5py is not importable; `pip install h5py` to run the HDF5 plugin tests")
np = pytest.importorskip("numpy")

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"
FILTER_ID = 32900
MODES = {"abs": 0, "rel": 1, "nrmse": 2, "psnr": 3}


def plugin_dir():
    if os.environ.get("RESID_PLUGIN_DIR"):
        return Path(os.environ["RESID_PLUGIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "release"


PLUGIN = plugin_dir() / "libh5resid.so"


@pytest.fixture(scope="session", autouse=True)
def built_plugin():
    if not PLUGIN.is_file():
        pytest.fail(f"{PLUGIN} not found: build it first with `cargo build --release -p h5resid`")
    return PLUGIN


def words(mode, bound, *options):
    """User cd_values: version, mode, bound (high word, low word), then options."""
    hi, lo = struct.unpack(">II", struct.pack(">d", bound))
    return [1, MODES[mode], hi, lo, *options]


def ud(words_, flag=0, name=None):
    arg = f"UD={FILTER_ID},{flag},{len(words_)}," + ",".join(str(w) for w in words_)
    return f"{name}:{arg}" if name else arg


def env(plugin_path=True):
    e = dict(os.environ)
    if plugin_path:
        e["HDF5_PLUGIN_PATH"] = str(PLUGIN.parent)
    else:
        e.pop("HDF5_PLUGIN_PATH", None)
    return e


def need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} not installed (apt-get install hdf5-tools libhdf5-dev)")
    return path


def run(cmd, plugin_path=True, **kw):
    return subprocess.run(cmd, env=env(plugin_path), capture_output=True, text=True, timeout=300, **kw)


PREAMBLE = """\
import json, sys
import numpy as np
import h5py
"""


def run_py(tmp_path, body, check=True, plugin_path=True):
    """Runs `body` in a fresh Python with the plugin on HDF5_PLUGIN_PATH; returns the process.
    The last stdout line, when JSON, is parsed into `.result`."""
    script = tmp_path / f"snippet_{len(list(tmp_path.glob('snippet_*.py')))}.py"
    script.write_text(PREAMBLE + textwrap.dedent(body))
    p = run([sys.executable, str(script)], plugin_path=plugin_path, cwd=tmp_path)
    if check and p.returncode != 0:
        pytest.fail(f"subprocess failed (rc {p.returncode}):\n{p.stdout}\n{p.stderr}")
    lines = p.stdout.strip().splitlines()
    p.result = None
    if lines:
        try:
            p.result = json.loads(lines[-1])
        except ValueError:
            pass
    return p


def smooth(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    x = 50.0 * np.sin(sum(grids)) + 10.0 * np.cos(2 * grids[0]) + rng.normal(0, 0.5, shape)
    return x.astype(dtype)


def check_bound(orig, back, mode, bound, chunks):
    """abs: |x - x'| <= bound everywhere. rel: per chunk, bound * (max - min) of the chunk as
    HDF5 hands it to the filter (an edge chunk is padded with the fill value 0)."""
    assert back.shape == orig.shape and back.dtype == orig.dtype
    o, b = orig.astype(np.float64), back.astype(np.float64)
    err = np.abs(o - b)
    if mode == "abs":
        assert err.max() <= bound, f"max error {err.max()} > bound {bound}"
        return err.max()
    grid = [range(0, n, c) for n, c in zip(orig.shape, chunks)]
    for start in np.array(np.meshgrid(*grid, indexing="ij")).reshape(len(chunks), -1).T:
        sl = tuple(slice(s, s + c) for s, c in zip(start, chunks))
        region = o[sl]
        lo, hi = region.min(), region.max()
        if region.shape != tuple(chunks):
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        eb = bound * (hi - lo)
        assert err[sl].max() <= eb, f"chunk at {tuple(start)}: max error {err[sl].max()} > {eb}"
    return err.max()


def h5py_roundtrip(tmp_path, data, chunks, cd):
    np.save(tmp_path / "orig.npy", data)
    p = run_py(tmp_path, f"""
        data = np.load("orig.npy")
        with h5py.File("rt.h5", "w") as f:
            f.create_dataset("x", data=data, chunks={tuple(chunks)!r},
                             compression={FILTER_ID}, compression_opts={tuple(cd)!r})
        with h5py.File("rt.h5", "r") as f:
            d = f["x"]
            np.save("back.npy", d[...])
            print(json.dumps({{"filters": {{k: list(v) for k, v in d._filters.items()}},
                               "stored": int(d.id.get_storage_size())}}))
    """)
    return np.load(tmp_path / "back.npy"), p.result


# ---------------------------------------------------------------------------------------------
# The library itself


def test_plugin_does_not_link_libhdf5():
    readelf = need("readelf")
    out = subprocess.run([readelf, "-d", str(PLUGIN)], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", out)
    assert needed, out
    assert not [n for n in needed if "hdf5" in n], needed
    syms = subprocess.run(["nm", "-D", "--defined-only", str(PLUGIN)], capture_output=True, text=True).stdout
    for s in ("H5PLget_plugin_type", "H5PLget_plugin_info"):
        assert re.search(rf"\bT {s}\b", syms), s


def test_h5repack_args_script():
    script = REPO / "scripts" / "h5repack-args"
    out = subprocess.run([sys.executable, str(script), "--rel", "1e-3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "UD=32900,0,4,1,1,1062232653,3539053052"
    out = subprocess.run([sys.executable, str(script), "--abs", "0.01", "--coder", "lz4", "--optional"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == ud(words("abs", 0.01, 1), flag=1)
    out = subprocess.run([sys.executable, str(script), "--abs", "0.25", "--words"], capture_output=True, text=True)
    assert out.stdout.strip() == ",".join(map(str, words("abs", 0.25)))
    bad = subprocess.run([sys.executable, str(script), "--abs", "-1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "bound" in bad.stderr


# ---------------------------------------------------------------------------------------------
# h5py (HDF5 2.0 bundled in the wheel, loaded RTLD_LOCAL)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
@pytest.mark.parametrize("mode,bound", [("abs", 1e-3), ("abs", 0.5), ("rel", 1e-3), ("rel", 1e-2)])
def test_h5py_roundtrip_bound(tmp_path, dtype, mode, bound):
    data = smooth((37, 50), dtype)  # 16x16 chunks: edge chunks on both axes
    chunks = (16, 16)
    back, info = h5py_roundtrip(tmp_path, data, chunks, words(mode, bound))
    check_bound(data, back, mode, bound, chunks)
    stored = info["filters"][str(FILTER_ID)]
    assert stored[:4] == words(mode, bound)
    # Element type, rank, chunk dims, then the padding flag and the fill value's bits (0).
    assert stored[8:] == [1 if dtype == "<f4" else 2, 2, 16, 16, 1, 0, 0]


@pytest.mark.parametrize("coder", [1, 2, 3, 4])
@pytest.mark.parametrize("predictor", [0, 1])
def test_h5py_fast_coders(tmp_path, coder, predictor):
    """The lz4, packed (GPU), rANS and grouped (fast mode) coders through the plugin, with auto and Lorenzo
    prediction: bound kept, the words stored with the dataset."""
    data = smooth((37, 50), "<f4")
    chunks = (16, 16)
    back, info = h5py_roundtrip(tmp_path, data, chunks, words("abs", 1e-3, coder, predictor))
    check_bound(data, back, "abs", 1e-3, chunks)
    assert info["filters"][str(FILTER_ID)][4:6] == [coder, predictor]


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_h5py_wavelet_word(tmp_path, dtype):
    """Predictor word 6 through the plugin: whole chunks in the wavelet layout (format version 3,
    read raw), the edge chunks of the dataset coded as blocks behind REGION; the bound kept in
    every chunk."""
    y, x = np.meshgrid(np.arange(210), np.arange(300), indexing="ij")
    data = (np.sin(x * 0.031) * np.cos(y * 0.027) * 5 + np.sin(0.011 * (x + 2 * y)) * 3).astype(dtype)
    chunks = (100, 150)
    cd = words("rel", 1e-3, 0, 6)
    back, info = h5py_roundtrip(tmp_path, data, chunks, cd)
    check_bound(data, back, "rel", 1e-3, chunks)
    assert info["filters"][str(FILTER_ID)][4:6] == [0, 6]
    p = run_py(tmp_path, """
        with h5py.File("rt.h5", "r") as f:
            d = f["x"]
            print(json.dumps([d.id.read_direct_chunk(off)[1][4] for off in [(0, 0), (100, 150), (200, 0)]]))
    """)
    # Two whole chunks (version 3), one edge chunk (version 2: REGION first).
    assert p.result == [3, 3, 2]


@pytest.mark.parametrize(
    "shape,chunks,dtype,mode,bound",
    [
        ((7,), (1,), "<f4", "abs", 1e-3),
        ((5, 3), (1, 1), "<f8", "abs", 1e-6),
        ((9,), (1,), "<f4", "rel", 1e-2),  # range 0: must be stored exactly
        ((3, 5, 7), (2, 2, 2), "<f4", "abs", 1e-2),
        ((1000,), (1000,), "<f8", "rel", 1e-4),
    ],
)
def test_h5py_small_and_single_element_chunks(tmp_path, shape, chunks, dtype, mode, bound):
    data = smooth(shape, dtype, seed=3)
    back, _ = h5py_roundtrip(tmp_path, data, chunks, words(mode, bound))
    check_bound(data, back, mode, bound, chunks)


def test_h5py_special_values(tmp_path):
    data = smooth((40,), "<f4")
    data[[3, 17, 30]] = [np.nan, np.inf, -np.inf]
    back, _ = h5py_roundtrip(tmp_path, data, (16,), words("abs", 1e-2))
    finite = np.isfinite(data)
    assert np.array_equal(np.isnan(back), np.isnan(data))
    assert np.array_equal(back[~finite & ~np.isnan(data)], data[~finite & ~np.isnan(data)])
    assert np.abs(back[finite].astype(np.float64) - data[finite]).max() <= 1e-2


def real_fields():
    out = []
    for p in sorted(TESTDATA.glob("*.f32")) + sorted(TESTDATA.glob("*.f64")):
        m = re.search(r"_(\d+(?:x\d+)*)\.(f32|f64)$", p.name)
        if m:
            out.append(pytest.param(p, tuple(int(d) for d in m.group(1).split("x")), m.group(2), id=p.stem))
    return out or [pytest.param(None, None, None, marks=pytest.mark.skip(reason="no raw fields in testdata/"))]


@pytest.mark.parametrize("path,shape,kind", real_fields())
@pytest.mark.parametrize("mode,bound", [("abs", 1e-3), ("rel", 1e-3)])
def test_h5py_real_fields(tmp_path, path, shape, kind, mode, bound):
    data = np.fromfile(path, dtype="<f4" if kind == "f32" else "<f8").reshape(shape)
    chunks = tuple(max(1, d // 2 + 1) for d in shape)  # edge chunks on every axis
    if mode == "abs":
        finite = data[np.isfinite(data)]
        bound = bound * float(finite.max() - finite.min() or 1.0)
    back, info = h5py_roundtrip(tmp_path, data, chunks, words(mode, bound))
    check_bound(data, back, mode, bound, chunks)


@pytest.mark.parametrize("predictor", [0, 2, 3, 4, 5])
def test_h5py_every_predictor_on_turbulence(tmp_path, predictor):
    # cd word 5: auto, interpolation (either kind), NGLR forced, auto with NGLR, auto with a
    # linear bias. Within the bound through h5py, and the learned auto modes smaller than auto.
    path = TESTDATA / "wmag_turbulence_vorticity_magnitude_91x91x91.f32"
    data = np.fromfile(path, dtype="<f4").reshape(91, 91, 91)
    chunks = (46, 91, 91)
    back, info = h5py_roundtrip(tmp_path, data, chunks, words("rel", 1e-3, 0, predictor))
    check_bound(data, back, "rel", 1e-3, chunks)
    assert info["filters"][str(FILTER_ID)][5] == predictor
    if predictor in (4, 5):
        _, auto = h5py_roundtrip(tmp_path, data, chunks, words("rel", 1e-3, 0, 0))
        assert info["stored"] < auto["stored"], (info["stored"], auto["stored"])


# ---------------------------------------------------------------------------------------------
# Bad input: corrupted chunks, wrong parameters, unsupported types


def write_corrupt_file(tmp_path):
    run_py(tmp_path, f"""
        data = np.linspace(-5, 5, 96, dtype="<f4")
        with h5py.File("bad.h5", "w") as f:
            d = f.create_dataset("x", data=data, chunks=(16,), compression={FILTER_ID},
                                 compression_opts={tuple(words("abs", 1e-3))!r})
            mask, raw = d.id.read_direct_chunk((0,))
            flipped = bytearray(raw); flipped[len(raw) // 2] ^= 0x5A
            d.id.write_direct_chunk((0,), bytes(flipped), mask)          # payload damaged
            d.id.write_direct_chunk((16,), raw[: len(raw) // 2], mask)   # truncated
            d.id.write_direct_chunk((32,), raw[:3], mask)                # shorter than a header
            d.id.write_direct_chunk((48,), b"\\xff" * len(raw), mask)     # not a resid chunk
            head = bytearray(raw); head[0] ^= 0xFF
            d.id.write_direct_chunk((64,), bytes(head), mask)           # magic damaged
    """)


def test_h5py_corrupt_chunks_raise_and_process_lives(tmp_path):
    write_corrupt_file(tmp_path)
    p = run_py(tmp_path, """
        out = {}
        with h5py.File("bad.h5", "r") as f:
            for start in range(0, 96, 16):
                try:
                    f["x"][start:start + 16]
                    out[start] = "ok"
                except Exception as e:
                    out[start] = type(e).__name__ + ": " + str(e)
        print(json.dumps(out))
    """)
    res = p.result
    assert res["80"] == "ok", res
    for start in ("0", "16", "32", "48", "64"):
        assert res[start].startswith("OSError"), res
        assert "filter" in res[start].lower(), res


def test_h5dump_corrupt_chunk_fails_with_resid_message(tmp_path):
    need("h5dump")
    write_corrupt_file(tmp_path)
    p = run(["h5dump", "--enable-error-stack", "-d", "/x", str(tmp_path / "bad.h5")])
    assert p.returncode != 0
    assert "resid: cannot decode" in p.stderr, p.stderr[-3000:]


BAD_WORDS = {
    "bad_version": [2, 0, *words("abs", 1e-3)[2:]],
    "bad_mode": [1, 9, *words("abs", 1e-3)[2:]],
    "negative_bound": words("abs", -1.0),
    "nan_bound": words("rel", float("nan")),
    "too_few_words": words("abs", 1e-3)[:3],
    "bad_coder": words("abs", 1e-3, 7),
    "enhancer_unknown": words("abs", 1e-3, 0, 0, 9),
}


@pytest.mark.parametrize("case", sorted(BAD_WORDS))
def test_h5py_bad_cd_values_refused(tmp_path, case):
    p = run_py(tmp_path, f"""
        try:
            with h5py.File("b.h5", "w") as f:
                f.create_dataset("x", data=np.zeros(10, "<f4"), chunks=(5,),
                                 compression={FILTER_ID}, compression_opts={tuple(BAD_WORDS[case])!r})
            print(json.dumps("created"))
        except Exception as e:
            print(json.dumps(type(e).__name__ + ": " + str(e)))
    """)
    assert p.result != "created"
    assert "resid: bad parameters" in p.result, p.result


def test_h5py_big_endian_refused(tmp_path):
    p = run_py(tmp_path, f"""
        try:
            with h5py.File("be.h5", "w") as f:
                f.create_dataset("x", data=np.zeros(10, ">f8"), chunks=(5,),
                                 compression={FILTER_ID}, compression_opts={tuple(words("abs", 1e-3))!r})
            print(json.dumps("created"))
        except Exception as e:
            print(json.dumps(str(e)))
    """)
    assert "big-endian" in p.result and "resid" in p.result, p.result


# ---------------------------------------------------------------------------------------------
# HDF5 command-line tools (Debian HDF5 1.10, global symbol scope)


def write_plain_file(tmp_path, name="in.h5"):
    """A file as a model would write it: floats, a ~1e5 float, ints, a string, big-endian."""
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.create_dataset("T", data=smooth((37, 50), "<f4"))
        f.create_dataset("D", data=smooth((20, 30), "<f8", seed=1), chunks=(7, 11))
        f.create_dataset("P", data=(1e5 + smooth((30,), "<f4", seed=2)).astype("<f4"))
        f.create_dataset("I", data=np.arange(100, dtype="<i4"))
        f.create_dataset("S", data="hello resid")
        f.create_dataset("BE", data=smooth((10,), ">f4"), chunks=(5,))
        f.attrs["title"] = "test"
    return path


def read_all(path):
    """Every top-level dataset of `path`, read by h5py in a subprocess that has the plugin."""
    npz = path.with_suffix(".npz")
    run_py(path.parent, f"""
        with h5py.File({str(path)!r}, "r") as f:
            np.savez({str(npz)!r}, **{{k: np.asarray(f[k][()]) for k in f}})
    """)
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}


def filters_of(path):
    p = run(["h5dump", "-p", "-H", str(path)])
    assert p.returncode == 0, p.stderr
    out, cur = {}, None
    for line in p.stdout.splitlines():
        m = re.search(r'DATASET "([^"]+)"', line)
        if m:
            cur = m.group(1)
            out[cur] = False
        if cur and "FILTER_ID 32900" in line:
            out[cur] = True
    return out


@pytest.mark.parametrize("dtype_name,bound", [("T", 1e-3), ("D", 1e-2), ("P", 1e-3)])
def test_h5repack_h5diff_h5dump(tmp_path, dtype_name, bound):
    need("h5repack")
    src = write_plain_file(tmp_path)
    out = tmp_path / "out.h5"
    p = run(["h5repack", "--enable-error-stack", "-l", "T:CHUNK=16x16",
             "-f", ud(words("abs", bound), name=dtype_name), str(src), str(out)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert filters_of(out)[dtype_name], "filter not applied"
    a, b = read_all(src), read_all(out)
    check_bound(a[dtype_name], b[dtype_name], "abs", bound, None)
    d = run(["h5diff", "-d", repr(bound), str(src), str(out), dtype_name, dtype_name])
    assert d.returncode == 0, d.stdout + d.stderr
    dump = run(["h5dump", "-d", dtype_name, str(out)])
    assert dump.returncode == 0 and "DATA {" in dump.stdout, dump.stderr
    hdr = run(["h5dump", "-p", "-H", "-d", dtype_name, str(out)]).stdout
    assert "COMMENT resid:" in hdr


def test_h5repack_optional_whole_mixed_file(tmp_path):
    need("h5repack")
    src = write_plain_file(tmp_path)
    out = tmp_path / "out.h5"
    bound = 1e-3
    p = run(["h5repack", "-f", ud(words("abs", bound), flag=1), str(src), str(out)])
    assert p.returncode == 0, p.stdout + p.stderr
    f = filters_of(out)
    assert f["T"] and f["D"] and f["P"], f
    assert not f["I"] and not f["S"], f
    assert not f["BE"], f  # refused (big-endian): h5repack keeps the original settings
    a, b = read_all(src), read_all(out)
    assert np.array_equal(a["I"], b["I"]) and a["S"] == b["S"]
    assert np.array_equal(a["BE"], b["BE"])
    for k in ("T", "D", "P"):
        check_bound(a[k], b[k], "abs", bound, None)
    with h5py.File(out, "r") as g:  # attributes are not filtered
        assert g.attrs["title"] == "test"
    d = run(["h5diff", "-d", repr(bound), str(src), str(out)])
    assert d.returncode == 0, d.stdout + d.stderr


@pytest.mark.parametrize("case", sorted(BAD_WORDS))
def test_h5repack_bad_cd_values_reported(tmp_path, case):
    need("h5repack")
    src = write_plain_file(tmp_path)
    out = tmp_path / "out.h5"
    p = run(["h5repack", "--enable-error-stack", "-f", ud(BAD_WORDS[case], name="T"), str(src), str(out)])
    # h5repack 1.10 falls back to the original settings and exits 0; the reason is on stderr.
    assert "resid: bad parameters" in p.stderr, p.stderr[-3000:]
    if out.exists():
        assert not filters_of(out).get("T"), "bad parameters must not produce a filtered dataset"


def test_h5repack_big_endian_reported(tmp_path):
    need("h5repack")
    src = write_plain_file(tmp_path)
    p = run(["h5repack", "--enable-error-stack", "-f", ud(words("abs", 1e-3), name="BE"),
             str(src), str(tmp_path / "out.h5")])
    assert "resid: big-endian floats are not supported" in p.stderr, p.stderr[-3000:]


def test_h5py_reads_what_h5repack_wrote_and_back(tmp_path):
    """h5repack (HDF5 1.10) writes, h5py (HDF5 2.0) reads; h5py writes, h5dump reads."""
    need("h5repack")
    src = write_plain_file(tmp_path)
    out = tmp_path / "out.h5"
    assert run(["h5repack", "-f", ud(words("rel", 1e-3), name="D"), str(src), str(out)]).returncode == 0
    p = run_py(tmp_path, """
        with h5py.File("out.h5", "r") as f:
            np.save("d.npy", f["D"][...])
            print(json.dumps(list(f["D"].chunks)))
    """)
    chunks = tuple(p.result)
    check_bound(read_all(src)["D"], np.load(tmp_path / "d.npy"), "rel", 1e-3, chunks)


# ---------------------------------------------------------------------------------------------
# A C program against Debian's libhdf5


def test_c_program_roundtrip(tmp_path):
    cc = need("cc")
    flags = ["-I/usr/include/hdf5/serial", "-L/usr/lib/x86_64-linux-gnu/hdf5/serial", "-lhdf5"]
    if shutil.which("pkg-config"):
        pc = subprocess.run(["pkg-config", "--cflags", "--libs", "hdf5"], capture_output=True, text=True)
        if pc.returncode == 0 and pc.stdout.strip():
            flags = pc.stdout.split()
    exe = tmp_path / "roundtrip"
    build = subprocess.run([cc, "-O1", str(REPO / "tests" / "c" / "roundtrip.c"), "-o", str(exe), *flags, "-lm"],
                           capture_output=True, text=True)
    if build.returncode != 0 and "hdf5.h" in build.stderr:
        pytest.skip("HDF5 C headers not installed (apt-get install libhdf5-dev)")
    assert build.returncode == 0, build.stderr
    for bound in ("1e-3", "0.5"):
        p = run([str(exe), str(tmp_path / f"c_{bound}.h5"), bound])
        assert p.returncode == 0, p.stdout + p.stderr
        assert "max_abs_err=" in p.stdout
    # The file the C program wrote reads back in h5py too.
    with_h5py = run_py(tmp_path, """
        with h5py.File("c_1e-3.h5", "r") as f:
            print(json.dumps([float(f["T"][...].min()), list(f["T"]._filters)]))
    """)
    assert with_h5py.result[1] == [str(FILTER_ID)]
    assert math.isfinite(with_h5py.result[0])


def test_hdf5plugin_style_registration_without_plugin_path(tmp_path):
    """hdf5plugin's way: ctypes-load the library, init_filter(<h5py.h5z path>), register the
    class with h5py. No HDF5_PLUGIN_PATH involved."""
    p = run_py(tmp_path, f"""
        import ctypes
        assert not h5py.h5z.filter_avail({FILTER_ID})
        lib = ctypes.CDLL({str(PLUGIN)!r})
        assert lib.init_filter(h5py.h5z.__file__.encode()) == 0
        lib.H5PLget_plugin_info.restype = ctypes.c_void_p
        h5py.h5z.register_filter(lib.H5PLget_plugin_info())
        data = np.linspace(0, 1, 300, dtype="<f4").reshape(10, 30)
        with h5py.File("reg.h5", "w") as f:
            f.create_dataset("x", data=data, chunks=(4, 8), compression={FILTER_ID},
                             compression_opts={tuple(words("abs", 1e-3))!r})
        with h5py.File("reg.h5", "r") as f:
            print(json.dumps(float(np.abs(f["x"][...].astype("f8") - data).max())))
    """, plugin_path=False)
    assert p.result <= 1e-3


def test_plugin_stays_mapped_after_dlclose(tmp_path):
    # The codec's worker threads outlive each call; if HDF5's dlclose at shutdown unmapped the
    # library under them, the host process would crash at exit. The plugin pins itself.
    body = f"""
import ctypes, ctypes.util
lib = ctypes.CDLL({str(PLUGIN)!r})
lib.H5PLget_plugin_info.restype = ctypes.c_void_p
assert lib.H5PLget_plugin_info()
libdl = ctypes.CDLL(ctypes.util.find_library("dl") or "libc.so.6")
libdl.dlclose.argtypes = [ctypes.c_void_p]
for _ in range(3):
    libdl.dlclose(lib._handle)
maps = open("/proc/self/maps").read()
assert "libh5resid.so" in maps, "plugin was unmapped by dlclose"
print("pinned")
"""
    p = run_py(tmp_path, body)
    assert "pinned" in p.stdout


def test_c_program_many_runs_exit_cleanly(tmp_path):
    # Regression: a C program exiting right after using the filter once crashed (SIGSEGV) when
    # HDF5 unloaded the plugin under the codec's idle worker threads.
    cc = need("cc")
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "hdf5"], capture_output=True, text=True)
    if pc.returncode != 0:
        pytest.skip("pkg-config hdf5 not available")
    exe = tmp_path / "roundtrip"
    build = subprocess.run([cc, "-O1", str(REPO / "tests" / "c" / "roundtrip.c"), "-o", str(exe),
                            *pc.stdout.split(), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    for i in range(10):
        p = run([str(exe), str(tmp_path / f"many_{i}.h5"), "0.5"])
        assert p.returncode == 0, f"run {i}: rc {p.returncode} {p.stdout} {p.stderr}"


@pytest.mark.parametrize("level", ["", "info", "off"])
def test_codec_messages_reach_stderr(tmp_path, level):
    """The plugin sends the codec's log messages to stderr: warnings by default (an unknown
    RESID_BACKEND; CUDA asked for where no GPU is usable), more with RESID_LOG=info (which
    backend runs and why), none with off; each said once a process."""
    script = tmp_path / "log.py"
    script.write_text(PREAMBLE + textwrap.dedent(f"""
        x = np.sin(np.linspace(0, 50, 32 * 64 * 64)).reshape(32, 64, 64).astype("<f4")
        with h5py.File("log.h5", "w") as f:
            for k in range(3):  # CUDA backend, Lorenzo: the GPU is asked for every chunk
                f.create_dataset(f"d{{k}}", data=x, chunks=(16, 64, 64), compression={FILTER_ID},
                                 compression_opts={tuple(words("rel", 1e-4, 0, 1, 0, 2))!r})
        with h5py.File("log.h5", "r") as f:
            print(json.dumps({{"max_err": float(np.abs(f["d2"][...] - x).max())}}))
    """))
    e = env()
    e.update(RESID_BACKEND="bogus", RESID_LOG=level)
    p = subprocess.run([sys.executable, str(script)], env=e, cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["max_err"] <= 1e-4 * 2.0
    bad = '[WARN] resid: RESID_BACKEND="bogus" is not cpu, cuda or auto: using cd_values'
    lines = p.stderr.splitlines()
    ours = [l for l in lines if "resid:" in l]
    refused = [l for l in ours if "the CUDA backend was asked for, but no GPU is usable" in l]
    if level == "off":
        assert not ours, p.stderr
        return
    assert lines.count(bad) == 1, p.stderr
    # Asking for CUDA where there is no GPU is a warning, once; auto only says it at info.
    assert len(refused) <= 1 and all(l.startswith("[WARN] resid: ") for l in refused), ours
    if level == "":
        assert all(l.startswith("[WARN] resid: ") for l in ours), ours
    else:
        up = [l for l in ours if l.startswith("[INFO] resid: GPU backend on")]
        down = [l for l in ours if l.startswith("[INFO] resid: no usable GPU")]
        assert (len(up), len(down), len(refused)) in [(1, 0, 0), (0, 1, 1)], ours
