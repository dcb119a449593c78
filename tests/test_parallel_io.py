"""The parallel writer and reader of resid_h5 (`resid_h5.write`, `resid_h5.read`), through the C
ABI of libh5resid.so (`resid_encode_chunk` / `resid_decode_chunk`):

- a dataset written by `resid_h5.write` holds the same raw chunks (`read_direct_chunk`, mask
  and bytes) as the one h5py writes through the filter, for the same array, chunks and
  parameters: edge chunks (shapes the chunks do not divide), fill values, fill time "never",
  rank 1-4, float32/float64, every mode and coder, chunks that are stored (noise), partial
  writes over existing and missing chunks, 1-3 threads;
- those files read back through plain h5py within the bound, and pass `h5diff -d` (system
  HDF5) against the original in abs mode;
- `resid_h5.read` gives what plain h5py reading gives, for whole datasets and boxes, also over
  chunks never written;
- errors (no resid filter, other filters, a corrupt chunk, bad selections) are clean Python
  exceptions carrying resid's message.

Each test runs its cases in a subprocess with HDF5_PLUGIN_PATH set (and resid_h5 from python/),
so a crash fails the test instead of killing pytest.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("h5py", reason="h5py is not importable; `pip install h5py`")
np = pytest.importorskip("numpy")

from test_hdf5_plugin import PLUGIN, REPO  # noqa: E402

PRELUDE = textwrap.dedent(
    """
    import json, sys
    from math import nan
    import numpy as np, h5py
    import resid_h5

    def field(shape, dtype, seed=0):
        rng = np.random.default_rng(seed)
        grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
        x = sum(np.sin(g * (1 + i) + i) for i, g in enumerate(grids)) * 20 + 250
        return (x + rng.normal(0, 0.05, shape)).astype(dtype)

    def chunk_offsets(d):
        import itertools
        return list(itertools.product(*[range(0, n, c) for n, c in zip(d.shape, d.chunks)]))

    def raw_chunks(d):
        out = {}
        for off in chunk_offsets(d):
            info = d.id.get_chunk_info_by_coord(off)
            out[off] = None if info.byte_offset is None else d.id.read_direct_chunk(off)
        return out

    def diff_chunks(a, b):
        ra, rb = raw_chunks(a), raw_chunks(b)
        return [str(k) for k in ra if ra[k] != rb[k]], len(ra)
    """
)


def run(tmp_path, body, check=True):
    script = tmp_path / f"p_{len(list(tmp_path.glob('p_*.py')))}.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k not in ("RESID_PLUGIN", "PYTHONPATH")}
    env["HDF5_PLUGIN_PATH"] = str(PLUGIN.parent)
    env["PYTHONPATH"] = str(REPO / "python")
    if PLUGIN != REPO / "target" / "release" / "libh5resid.so":
        env["RESID_PLUGIN"] = str(PLUGIN)
    p = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    if check and p.returncode != 0:
        pytest.fail(f"subprocess failed (rc {p.returncode}):\n{p.stdout}\n{p.stderr}")
    lines = p.stdout.strip().splitlines()
    p.result = json.loads(lines[-1]) if lines else None
    return p


# (shape, chunks, dtype, Resid kwargs, create_dataset extras, threads)
CASES = [
    ((37, 50, 45), (16, 16, 16), "<f4", {"rel": 1e-3}, {}, 2),
    ((37, 50, 45), (16, 16, 16), "<f8", {"abs": 0.01, "coder": "lz4"}, {"fillvalue": -999.0}, 3),
    ((33, 20, 17), (8, 20, 5), "<f4", {"nrmse": 1e-4}, {"fillvalue": float("nan")}, 2),
    ((33, 20, 17), (8, 20, 5), "<f4", {"psnr": 70, "coder": "packed"}, {"fillvalue": 9.96921e36}, 1),
    ((1000,), (96,), "<f4", {"rel": 1e-2, "predictor": "interp"}, {"fillvalue": 1.5}, 2),
    ((45, 61), (16, 16), "<f8", {"abs": 1e-4, "predictor": "lorenzo"}, {}, 2),
    ((7, 9, 11, 13), (3, 4, 5, 6), "<f4", {"rel": 1e-3}, {"fillvalue": -1.0}, 2),
    # Fill time "never": HDF5 pads with zeros, whatever the fill value.
    ((37, 20, 20), (16, 16, 16), "<f4", {"rel": 1e-3}, {"fillvalue": 7.0, "fill_time": "never"}, 2),
    # One chunk that holds the whole dataset, and chunks larger than the dataset.
    ((20, 30), (20, 30), "<f4", {"abs": 1e-3}, {}, 2),
    ((20, 30), (32, 32), "<f4", {"abs": 1e-3}, {"fillvalue": 3.0, "maxshape": (None, 40)}, 2),
]


def test_same_raw_chunks_as_the_filter(tmp_path):
    p = run(tmp_path, f"""
        cases = {CASES!r}
        out = []
        with h5py.File("cmp.h5", "w") as f:
            for k, (shape, chunks, dtype, kw, extra, threads) in enumerate(cases):
                a = field(shape, dtype, k)
                extra = {{key: (np.array(v, dtype) if key == "fillvalue" else v) for key, v in extra.items()}}
                plain = f.create_dataset(f"plain{{k}}", data=a, chunks=chunks, **resid_h5.Resid(**kw), **extra)
                par = f.create_dataset(f"par{{k}}", shape=shape, dtype=dtype, chunks=chunks,
                                       **resid_h5.Resid(**kw), **extra)
                resid_h5.write(par, a, threads=threads)
                bad, n = diff_chunks(plain, par)
                same_read = bool(np.array_equal(resid_h5.read(par, threads=threads), plain[...], equal_nan=True))
                out.append({{"case": k, "bad": bad, "chunks": n, "same_read": same_read}})
        print(json.dumps(out))
    """)
    for r in p.result:
        assert r["bad"] == [], (CASES[r["case"]], r)
        assert r["same_read"], (CASES[r["case"]], r)
    assert sum(r["chunks"] for r in p.result) > 100


def test_stored_chunks_and_nonfinite_values(tmp_path):
    """Noise at a tight bound does not code smaller: the stored container, as the filter stores
    it. NaN/Inf values and a chunk that is nothing but the fill value, likewise."""
    p = run(tmp_path, """
        rng = np.random.default_rng(5)
        out = {}
        with h5py.File("noise.h5", "w") as f:
            for name, a in {
                "noise": rng.random((40, 40)).astype("<f4"),
                "special": np.where(rng.random((40, 40)) < 0.05, np.nan, field((40, 40), "<f4")).astype("<f4"),
                "fill": np.full((40, 40), -5.0, "<f4"),
            }.items():
                if name == "special":
                    a[3, 4], a[30, 31] = np.inf, -np.inf
                kw = resid_h5.Resid(abs=1e-7) if name == "noise" else resid_h5.Resid(rel=1e-3)
                plain = f.create_dataset(name, data=a, chunks=(16, 16), fillvalue=np.float32(-5), **kw)
                par = f.create_dataset(name + "_p", shape=a.shape, dtype="<f4", chunks=(16, 16),
                                       fillvalue=np.float32(-5), **kw)
                resid_h5.write(par, a, threads=2)
                bad, n = diff_chunks(plain, par)
                sizes = [len(par.id.read_direct_chunk(o)[1]) for o in chunk_offsets(par)]
                out[name] = {"bad": bad, "n": n, "max_size": max(sizes),
                             "read": bool(np.array_equal(resid_h5.read(par), plain[...], equal_nan=True))}
        print(json.dumps(out))
    """)
    for name, r in p.result.items():
        assert r["bad"] == [] and r["read"], (name, r)
    # The noise chunks are stored: at least the raw 16x16 float32 bytes.
    assert p.result["noise"]["max_size"] >= 16 * 16 * 4


def test_partial_writes_match_the_filter(tmp_path):
    """A write over part of a chunk merges it with the stored chunk, decoded. (HDF5 merges with
    the chunk in its chunk cache when it is there, the values before coding; the file is opened
    with no chunk cache so that the filter path merges with the stored chunk too.)"""
    p = run(tmp_path, """
        a = field((37, 50, 45), "<f4", 1)
        b = field((37, 50, 45), "<f4", 2) * 2
        sels = [np.s_[5:9, 3:40], np.s_[0:16, 16:32, 0:16], np.s_[36, :, 40:], np.s_[..., 44],
                np.s_[20:37, 49], np.s_[-3:, 1:2, :]]
        out = []
        with h5py.File("part.h5", "w", rdcc_nbytes=0) as f:
            for fresh in (False, True):
                kw = dict(chunks=(16, 16, 16), fillvalue=np.float32(-2), **resid_h5.Resid(rel=1e-3))
                plain = f.create_dataset(f"plain{fresh}", shape=a.shape, dtype="<f4", **kw)
                par = f.create_dataset(f"par{fresh}", shape=a.shape, dtype="<f4", **kw)
                if not fresh:
                    plain[...] = a
                    resid_h5.write(par, a)
                for s in sels:
                    plain[s] = b[s]
                    resid_h5.write(par, b[s], s, threads=2)
                    bad, n = diff_chunks(plain, par)
                    out.append({"fresh": fresh, "sel": str(s), "bad": bad})
                # A scalar broadcast over a box, and a view's assignment.
                plain[1:3, 2:4, 5:30] = 1.25
                resid_h5.parallel(par, threads=3)[1:3, 2:4, 5:30] = 1.25
                out.append({"fresh": fresh, "sel": "scalar", "bad": diff_chunks(plain, par)[0],
                            "read": bool(np.array_equal(resid_h5.read(par), plain[...]))})
        print(json.dumps(out))
    """)
    for r in p.result:
        assert r["bad"] == [], r
        assert r.get("read", True), r


def test_reader_matches_h5py(tmp_path):
    p = run(tmp_path, """
        out = []
        with h5py.File("r.h5", "w") as f:
            a = field((37, 50, 45), "<f4", 3)
            d = f.create_dataset("x", data=a, chunks=(16, 16, 16), **resid_h5.Resid(rel=1e-3))
            # Only part written: the rest are chunks never allocated (the fill value).
            g = f.create_dataset("y", shape=(40, 40), dtype="<f8", chunks=(16, 16),
                                 fillvalue=-9.0, **resid_h5.Resid(abs=1e-3))
            g[0:10, 0:20] = field((10, 20), "<f8", 4)
            for dset, sels in ((d, [np.s_[...], np.s_[3:20, 5, 7:], np.s_[-1], np.s_[10:11, 17:49, 0:45],
                                    np.s_[0:0], np.s_[:, :, 44], (5, 6, 7)]),
                               (g, [np.s_[...], np.s_[5:35, 15:25], np.s_[39]])):
                for s in sels:
                    for threads in (1, 2):
                        mine, theirs = resid_h5.read(dset, s, threads=threads), dset[s]
                        out.append({"sel": str(s), "shape": [list(np.shape(mine)), list(np.shape(theirs))],
                                    "same": bool(np.array_equal(mine, theirs))})
            view = resid_h5.parallel(d, threads=2)
            out.append({"sel": "view", "shape": [list(view.shape), list(d.shape)],
                        "same": bool(np.array_equal(view[2:9], d[2:9]))})
        print(json.dumps(out))
    """)
    for r in p.result:
        assert r["same"] and r["shape"][0] == r["shape"][1], r


def test_parallel_files_read_back_within_the_bound(tmp_path):
    """Written in parallel, read by plain h5py in a fresh process, and (abs mode) h5diff -d
    against the original under the system HDF5."""
    p = run(tmp_path, """
        a = field((61, 50, 33), "<f4", 6)
        b = field((61, 50, 33), "<f8", 7)
        with h5py.File("orig.h5", "w") as f:
            f["x"], f["y"], f["z"] = a, b, a
        with h5py.File("par.h5", "w") as f:
            for name, data, kw in (("x", a, {"abs": 1e-3}), ("y", b, {"abs": 1e-4, "coder": "lz4"}),
                                   ("z", a, {"rel": 1e-3})):
                d = f.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=(16, 16, 16),
                                     **resid_h5.Resid(**kw))
                resid_h5.write(d, data, threads=2)
        print(json.dumps("ok"))
    """)
    check = run(tmp_path, """
        import itertools
        out = {}
        with h5py.File("orig.h5", "r") as o, h5py.File("par.h5", "r") as f:
            for name in ("x", "y"):
                out[name] = float(np.abs(f[name][...].astype("f8") - o[name][...]).max())
            # rel: per chunk, relative to the chunk's range.
            worst = 0.0
            x, y = o["z"][...].astype("f8"), f["z"][...].astype("f8")
            for i, j, k in itertools.product(range(0, 61, 16), range(0, 50, 16), range(0, 33, 16)):
                s = np.s_[i:i + 16, j:j + 16, k:k + 16]
                worst = max(worst, float(np.abs(x[s] - y[s]).max() / (np.ptp(x[s]) * 1e-3)))
            out["z"] = worst
        print(json.dumps(out))
    """)
    assert check.result["x"] <= 1e-3 and check.result["y"] <= 1e-4, check.result
    assert check.result["z"] <= 1.0, check.result
    h5diff = shutil.which("h5diff")
    if not h5diff:
        pytest.skip("h5diff not installed (apt-get install hdf5-tools)")
    env = dict(os.environ, HDF5_PLUGIN_PATH=str(PLUGIN.parent))
    for name, eb in (("x", 1e-3), ("y", 1e-4)):
        r = subprocess.run([h5diff, "-d", str(eb), str(tmp_path / "orig.h5"), str(tmp_path / "par.h5"),
                            f"/{name}", f"/{name}"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-2000:])
        # A tighter bound must fail: h5diff really compared decoded values.
    r = subprocess.run([h5diff, "-d", "1e-9", str(tmp_path / "orig.h5"), str(tmp_path / "par.h5"), "/x", "/x"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])


def test_errors_are_clean(tmp_path):
    p = run(tmp_path, """
        out = {}
        def attempt(name, fn):
            try:
                fn()
                out[name] = "no error"
            except Exception as e:
                out[name] = [type(e).__name__, str(e)]
        a = field((40, 40), "<f4")
        with h5py.File("e.h5", "w") as f:
            plain = f.create_dataset("plain", data=a, chunks=(16, 16))
            gz = f.create_dataset("gzip", data=a, chunks=(16, 16), compression="gzip")
            both = f.create_dataset("both", data=a, chunks=(16, 16), fletcher32=True, **resid_h5.Resid(rel=1e-3))
            contig = f.create_dataset("contig", data=a)
            ints = f.create_dataset("ints", data=np.arange(10), chunks=(5,))
            d = f.create_dataset("x", data=a, chunks=(16, 16), **resid_h5.Resid(rel=1e-3))
            for name, ds in (("plain", plain), ("gzip", gz), ("both", both), ("contig", contig), ("ints", ints)):
                attempt("write_" + name, lambda: resid_h5.write(ds, a[: ds.shape[0]]))
                attempt("read_" + name, lambda: resid_h5.read(ds))
            attempt("not_a_dataset", lambda: resid_h5.read(f))
            attempt("step", lambda: resid_h5.read(d, np.s_[::2]))
            attempt("fancy", lambda: resid_h5.read(d, [1, 2]))
            attempt("range", lambda: resid_h5.read(d, np.s_[40]))
            attempt("shape", lambda: resid_h5.write(d, a[:5], np.s_[0:6]))
            attempt("threads", lambda: resid_h5.read(d, threads=0))
            # Corrupt chunks: garbage, and a valid chunk with one byte flipped (its checksum).
            d.id.write_direct_chunk((16, 0), b"this is not a resid chunk")
            m, raw = d.id.read_direct_chunk((0, 16))
            raw = bytearray(raw); raw[len(raw) // 2] ^= 0x40
            d.id.write_direct_chunk((0, 16), bytes(raw))
            for threads in (1, 2):
                attempt(f"garbage{threads}", lambda: resid_h5.read(d, np.s_[16:32, 0:16], threads=threads))
                attempt(f"flipped{threads}", lambda: resid_h5.read(d, np.s_[0:16], threads=threads))
                # A partial write over a corrupt chunk must decode it first: same error.
                attempt(f"partial{threads}", lambda: resid_h5.write(d, 1.0, np.s_[17, 3], threads=threads))
            attempt("h5py", lambda: d[16:32, 0:16])
            # The good chunks still read.
            out["good"] = bool(np.array_equal(resid_h5.read(d, np.s_[0:16, 0:16]), d[0:16, 0:16]))
        print(json.dumps(out))
    """)
    r = p.result
    for name in ("plain", "gzip", "contig"):
        for op in ("write_", "read_"):
            assert r[op + name][0] == "ValueError" and "no resid filter" in r[op + name][1], (name, r[op + name])
    for op in ("write_", "read_"):
        assert r[op + "both"][0] == "ValueError" and "only filter" in r[op + "both"][1], r[op + "both"]
        assert r[op + "ints"][0] == "ValueError", r[op + "ints"]
    assert r["not_a_dataset"][0] == "TypeError"
    assert r["step"][0] == "IndexError" and r["fancy"][0] == "IndexError" and r["range"][0] == "IndexError"
    assert r["shape"][0] == "ValueError" and r["threads"][0] == "ValueError"
    for threads in (1, 2):
        for name in ("garbage", "flipped", "partial"):
            kind, msg = r[f"{name}{threads}"]
            assert kind == "ResidError", (name, r[f"{name}{threads}"])
            assert msg.startswith("resid: cannot decode a chunk"), (name, msg)
            assert "error code" in msg and "of /x" in msg, (name, msg)
    assert r["h5py"][0] == "OSError"
    assert r["good"]


def test_capi_direct(tmp_path):
    """The C ABI through ctypes alone (no h5py dataset): resid_local_cd_values matches what
    set_local stores, and encode/decode round-trip with the filter's bytes."""
    p = run(tmp_path, """
        import ctypes, struct
        lib = resid_h5.library()
        user = resid_h5.Resid(rel=1e-3).filter_options
        dims = (ctypes.c_size_t * 2)(16, 16)
        fill = struct.unpack("<I", struct.pack("<f", -3.0))[0]
        n = ctypes.c_size_t(0)
        u = (ctypes.c_uint32 * len(user))(*user)
        assert lib.resid_local_cd_values(u, len(user), 1, 2, dims, 1, fill, None, ctypes.byref(n)) == -1
        cd = (ctypes.c_uint32 * n.value)()
        assert lib.resid_local_cd_values(u, len(user), 1, 2, dims, 1, fill, cd, ctypes.byref(n)) == 0
        with h5py.File("c.h5", "w") as f:
            d = f.create_dataset("x", data=field((16, 16), "<f4"), chunks=(16, 16), fillvalue=np.float32(-3),
                                 **resid_h5.Resid(rel=1e-3))
            stored = d.id.get_create_plist().get_filter_by_id(32900)[1]
            raw = d.id.read_direct_chunk((0, 0))[1]
        p, m = ctypes.c_void_p(), ctypes.c_size_t()
        a = np.ascontiguousarray(field((16, 16), "<f4"))
        assert lib.resid_encode_chunk(cd, len(cd), a.ctypes.data, a.nbytes, ctypes.byref(p), ctypes.byref(m)) == 0
        enc = ctypes.string_at(p, m.value)
        lib.resid_free(p)
        back = np.empty_like(a)
        rc = lib.resid_decode_chunk(cd, len(cd), enc, len(enc), back.ctypes.data, back.nbytes)
        bad = lib.resid_decode_chunk(cd, len(cd), enc, len(enc), back.ctypes.data, back.nbytes - 4)
        print(json.dumps({"cd": list(cd) == list(stored), "bytes": enc == raw, "rc": rc, "bad": bad,
                          "msg": lib.resid_last_error().decode(), "version": lib.resid_capi_version()}))
    """)
    r = p.result
    assert r["cd"] and r["bytes"] and r["rc"] == 0 and r["version"] == 1, r
    assert r["bad"] == -1 and r["msg"].startswith("resid: the output buffer holds 1020 bytes"), r
