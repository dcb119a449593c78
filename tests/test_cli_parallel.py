"""`resid h5 compress` and `resid h5 decompress` on all cores (--threads), against h5repack
with the filter (what `--threads 1` runs):

- on a file with several chunked datasets (edge chunks, a fill value, fill time "never", a
  contiguous dataset that gets chunks), attributes, a group, a dimension scale and an object
  reference, `compress --threads 2` stores the same raw chunks (`read_direct_chunk`: mask and
  bytes) as `--threads 1` and as plain `h5repack -f UD=32900,...`, with every chunk found in
  the chunk store of the parallel pass (0 store misses); attributes, the dimension scale and
  the reference survive, and the values are within the bound;
- `decompress` (2 threads and 1) gives back a file `h5diff -d <bound>` accepts against the
  original, with no resid filter left, the structure kept, and both outputs equal.

The chunk store itself (damaged or stale stores, misses coded as usual) is tested in
cli/tests/h5_parallel.rs and plugin/src/store.rs.
"""

import json
import subprocess
import sys

import pytest

pytest.importorskip("h5py", reason="h5py is not importable; `pip install h5py`")

from test_hdf5_plugin import PLUGIN, REPO, env, need, run, ud, words  # noqa: E402

RESID = PLUGIN.parent / "resid"
BOUND = 0.01

MAKE = """
import numpy as np, h5py
rng = np.random.default_rng(0)
def field(shape):
    g = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    return sum(np.sin(x * (1 + i)) for i, x in enumerate(g)) * 20 + 250 + rng.normal(0, 0.05, shape)
with h5py.File("in.h5", "w") as f:
    t = f.create_dataset("T", data=field((30, 70, 90)).astype("f4"), chunks=(16, 32, 32),
                         fillvalue=-999.0)
    t.attrs["units"] = "K"
    g = f.create_group("grp")
    g.attrs["title"] = "a group"
    g.create_dataset("P", data=field((50, 45)))
    g.create_dataset("Q", data=field((40, 33, 20)).astype("f4"), chunks=(8, 16, 16),
                     fill_time="never")
    x = f.create_dataset("x", data=np.linspace(0, 1, 90))
    x.make_scale("x")
    t.dims[2].attach_scale(x)
    f.create_dataset("I", data=np.arange(10))
    f.attrs["ref"] = g.ref
"""

FLOATS = ["T", "grp/P", "grp/Q", "x"]

INSPECT = """
import json, sys, itertools
import numpy as np, h5py
out = {}
with h5py.File(sys.argv[1], "r") as f, h5py.File("in.h5", "r") as src:
    for name in %r:
        d = f[name]
        plist = d.id.get_create_plist()
        chunks = {}
        if d.chunks:
            for off in itertools.product(*[range(0, n, c) for n, c in zip(d.shape, d.chunks)]):
                if d.id.get_chunk_info_by_coord(off).byte_offset is not None:
                    m, b = d.id.read_direct_chunk(off)
                    chunks[str(off)] = [m, b.hex()]
        out[name] = {
            "filters": [plist.get_filter(i)[0] for i in range(plist.get_nfilters())],
            "chunks": chunks,
            "err": float(np.abs(d[...].astype("f8") - src[name][...]).max()),
        }
    out["attrs"] = [f["T"].attrs["units"], f["grp"].attrs["title"]]
    out["scale"] = [s.name for s in f["T"].dims[2].values()]
    out["ref"] = f[f.attrs["ref"]].name
    out["ints"] = f["I"][...].tolist()
print(json.dumps(out))
""" % (FLOATS,)


def inspect(tmp_path, name):
    p = subprocess.run([sys.executable, "-c", INSPECT, name], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def resid(tmp_path, *args):
    e = env()
    e.pop("RESID_PLUGIN", None)
    p = subprocess.run([str(RESID), "h5", *args, "--quiet"], cwd=tmp_path, env=e,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture
def source(tmp_path):
    if not RESID.is_file():
        pytest.skip(f"{RESID} not built (cargo build --release -p resid-cli)")
    need("h5repack")
    p = subprocess.run([sys.executable, "-c", MAKE], cwd=tmp_path, env=env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return tmp_path


def test_compress_on_threads_stores_the_serial_chunks(source):
    tmp = source
    out2 = resid(tmp, "compress", "in.h5", "t2.h5", "--abs", str(BOUND), "--threads", "2")
    assert "parallel pass: 50 chunks on 2 threads" in out2 and "0 store misses" in out2, out2
    out1 = resid(tmp, "compress", "in.h5", "t1.h5", "--abs", str(BOUND), "--threads", "1")
    assert "parallel pass" not in out1, out1
    args = ["h5repack", "-l", "/grp/P:CHUNK=50x45"]
    for name in FLOATS:
        args += ["-f", ud(words("abs", BOUND), name="/" + name)]
    p = run(args + [str(tmp / "in.h5"), str(tmp / "plain.h5")])
    assert p.returncode == 0, p.stderr
    plain, t1, t2 = (inspect(tmp, n) for n in ("plain.h5", "t1.h5", "t2.h5"))
    for name in FLOATS:
        assert plain[name]["filters"] == [32900], name
        assert plain[name]["chunks"], name
        assert t1[name]["chunks"] == plain[name]["chunks"], name
        assert t2[name]["chunks"] == plain[name]["chunks"], name
        assert t2[name]["err"] <= BOUND, (name, t2[name]["err"])
    # 16x32x32 chunks over 30x70x90: edge chunks on every axis, padded with the fill value.
    assert len(t2["T"]["chunks"]) == 2 * 3 * 3
    assert t2["attrs"] == ["K", "a group"]
    assert t2["scale"] == ["/x"]
    assert t2["ref"] == "/grp"
    assert t2["ints"] == list(range(10))


def test_decompress_removes_the_filter_within_the_bound(source):
    tmp = source
    resid(tmp, "compress", "in.h5", "c.h5", "--abs", str(BOUND), "--threads", "2")
    out = resid(tmp, "decompress", "c.h5", "d2.h5", "--threads", "2")
    assert "4 resid datasets" in out and "0 store misses" in out, out
    resid(tmp, "decompress", "c.h5", "d1.h5", "--threads", "1")
    need("h5diff")
    p = run(["h5diff", "-d", str(BOUND), str(tmp / "in.h5"), str(tmp / "d2.h5")])
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(["h5diff", str(tmp / "d1.h5"), str(tmp / "d2.h5")])
    assert p.returncode == 0, p.stdout + p.stderr
    d2 = inspect(tmp, "d2.h5")
    for name in FLOATS:
        assert d2[name]["filters"] == [], name
        assert d2[name]["err"] <= BOUND, name
    assert d2["scale"] == ["/x"] and d2["ref"] == "/grp" and d2["attrs"] == ["K", "a group"]
    # Only one dataset, by name; a dataset without resid is refused before any work.
    out = resid(tmp, "decompress", "c.h5", "one.h5", "-d", "grp/Q")
    one = inspect(tmp, "one.h5")
    assert one["grp/Q"]["filters"] == [] and one["T"]["filters"] == [32900], out
    p = subprocess.run([str(RESID), "h5", "decompress", "in.h5", "no.h5"], cwd=tmp, env=env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no dataset uses the resid filter" in p.stderr, p.stderr
    assert not (tmp / "no.h5").exists()
    assert not list(tmp.glob(".*resid-store*")), "a chunk store was left behind"
