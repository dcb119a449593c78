"""The pip wheel (python/: setuptools-rust builds the plugin into the package) and what it
brings: h5py with no HDF5_PLUGIN_PATH, xarray + h5netcdf read on a Dask cluster of worker
processes, netCDF4-python through resid_h5.PLUGIN_PATH, numcodecs and Zarr (v2 and v3) codecs.

A module fixture builds the wheel from this checkout (`pip wheel --no-deps ./python`; cargo
builds into target/wheel) and installs it into a fresh virtual environment that sees the
system's h5py, numpy, xarray, Dask and Zarr (`--system-site-packages`) but not the checkout.
Every snippet runs that environment's Python in a temporary directory with no
HDF5_PLUGIN_PATH, RESID_PLUGIN or PYTHONPATH, and with the wheel's registration on import of
h5py switched on (tests/conftest.py switches it off for the other tests).

Needs setuptools-rust and wheel to build, xarray, h5netcdf, dask.distributed, netCDF4,
numcodecs and zarr for the later tests; .ci/run installs them and sets RESID_REQUIRE_ECOSYSTEM=1, so that a
missing one fails instead of skipping.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from test_python_helper import snippet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("RESID_REQUIRE_ECOSYSTEM") == "1"


def need(*modules):
    missing = [m for m in modules if not _importable(m)]
    if missing:
        msg = f"not installed: {', '.join(missing)} (pip install {' '.join(missing)})"
        if REQUIRE:
            pytest.fail(msg + "; RESID_REQUIRE_ECOSYSTEM=1")
        pytest.skip(msg)


def _importable(module):
    p = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return p.returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    need("setuptools_rust", "wheel", "h5py")
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(REPO / "python")],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    (whl,) = out.glob("resid_h5-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A virtual environment with the wheel installed; its python."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(root)],
                   check=True, timeout=120)
    python = root / "bin" / "python"
    # The system's pip, run by the environment's python, installs into the environment.
    p = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    return python


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items()
         if k not in ("HDF5_PLUGIN_PATH", "RESID_PLUGIN", "PYTHONPATH", "CARGO_TARGET_DIR")}
    e["RESID_H5_AUTOREGISTER"] = "1"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def vpy(venv, tmp_path, body, check=True, **env):
    """Runs `body` with the environment's python in tmp_path; its last line, as JSON."""
    return snippet(venv, tmp_path, body, clean_env(**env), check, timeout=600)


def field(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).cumsum(axis=-1).astype("f4")


# ---------------------------------------------------------------------------------------------
# The wheel


def test_wheel_carries_the_plugin(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "resid_h5/plugins/libh5resid.abi3.so" in names, names
    assert {"resid_h5.pth", "_resid_h5_hook.py", "resid_h5/numcodecs.py", "resid_h5/zarr.py"} <= set(names)
    # One wheel for every CPython >= 3.8: the library does not link Python.
    assert "-cp38-abi3-" in wheel.name, wheel.name
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    cargo_version = re.search(r'\[workspace\.package\]\s*version = "([^"]+)"',
                              (REPO / "Cargo.toml").read_text()).group(1)
    assert f"\nVersion: {cargo_version}\n" in meta
    assert "License: MIT OR Apache-2.0" in meta and "Classifier: Topic :: Scientific/Engineering" in meta
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[numcodecs.codecs]\nresid = resid_h5.numcodecs:ResidCodec" in entry
    assert "[zarr.codecs]\nresid = resid_h5.zarr:ResidZarrCodec" in entry


def test_installed_wheel_needs_no_checkout(venv, tmp_path):
    p = vpy(venv, tmp_path, """
        import os, resid_h5
        print(json.dumps({"lib": str(resid_h5.plugin_path()), "dir": resid_h5.PLUGIN_PATH,
                          "pkg": os.path.dirname(resid_h5.__file__)}))
    """)
    lib, pkg = Path(p.result["lib"]), Path(p.result["pkg"])
    assert lib == pkg / "plugins" / "libh5resid.abi3.so" and p.result["dir"] == str(lib.parent)
    assert venv.parent.parent in pkg.parents, pkg
    # Nothing installed points back at this checkout.
    for f in pkg.rglob("*"):
        if f.is_file():
            assert str(REPO).encode() not in f.read_bytes(), f
    ldd = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    assert "hdf5" not in ldd and "python" not in ldd, ldd
    # Write with resid_h5; read in a process that only imports h5py; h5dump through PLUGIN_PATH.
    data = field((12, 40, 50))
    np.save(tmp_path / "orig.npy", data)
    vpy(venv, tmp_path, """
        import h5py, resid_h5
        with h5py.File("w.h5", "w") as f:
            f.create_dataset("x", data=np.load("orig.npy"), chunks=(6, 40, 50), **resid_h5.Resid(abs=0.01))
    """)
    p = vpy(venv, tmp_path, """
        import h5py
        with h5py.File("w.h5", "r") as f:
            err = float(np.abs(f["x"][...].astype(np.float64) - np.load("orig.npy")).max())
        print(json.dumps({"err": err, "auto": "resid_h5" in sys.modules}))
    """)
    assert p.result["auto"] and p.result["err"] <= 0.01, p.result
    # Switched off, the same read fails: the registration above is what made it work.
    p = vpy(venv, tmp_path, """
        import h5py
        try:
            with h5py.File("w.h5", "r") as f:
                f["x"][...]
            print(json.dumps("read"))
        except OSError as e:
            print(json.dumps(str(e)))
    """, RESID_H5_AUTOREGISTER=0)
    assert p.result != "read" and "plugin" in p.result.lower(), p.result
    # HDF5_PLUGIN_PATH naming a resid plugin wins: the wheel's copy stays out of the way.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(lib, other / "libh5resid.so")
    p = vpy(venv, tmp_path, """
        import h5py
        with h5py.File("w.h5", "r") as f:
            err = float(np.abs(f["x"][...].astype(np.float64) - np.load("orig.npy")).max())
        print(json.dumps({"err": err, "auto": "resid_h5" in sys.modules}))
    """, HDF5_PLUGIN_PATH=other)
    assert not p.result["auto"] and p.result["err"] <= 0.01, p.result
    h5dump = shutil.which("h5dump")
    if h5dump:
        d = subprocess.run([h5dump, "-d", "x", "-s", "0,0,0", "-c", "1,1,3", "w.h5"], cwd=tmp_path,
                           env=clean_env(HDF5_PLUGIN_PATH=lib.parent), capture_output=True, text=True)
        assert d.returncode == 0 and "(0,0,0):" in d.stdout, d.stdout + d.stderr
        vals = [float(v) for v in d.stdout.split("(0,0,0):")[1].split("}")[0].replace(",", " ").split()]
        assert np.abs(np.array(vals) - data[0, 0, :3]).max() <= 0.01


# ---------------------------------------------------------------------------------------------
# xarray + h5netcdf, read on a Dask cluster of 2 worker processes


def test_xarray_h5netcdf_on_dask_workers(venv, tmp_path):
    need("xarray", "h5netcdf", "dask.distributed")
    p = vpy(venv, tmp_path, """
        import os
        import h5py, xarray as xr
        from dask.distributed import Client, LocalCluster
        import resid_h5

        def main():
            rng = np.random.default_rng(1)
            t = rng.normal(size=(12, 48, 64)).cumsum(axis=2).astype("f4")
            ds = xr.Dataset({"t": (("time", "y", "x"), t, {"units": "K"})},
                            coords={"time": np.arange(12)})
            ds.to_netcdf("a.nc", engine="h5netcdf",
                         encoding={"t": {**resid_h5.Resid(abs=0.02), "chunksizes": (3, 48, 64)}})
            with h5py.File("a.nc", "r") as f:
                filters = list(f["t"]._filters)
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                back = xr.open_dataset("a.nc", engine="h5netcdf", chunks={"time": 3})
                err = float(abs(back.t.astype("f8") - ds.t.astype("f8")).max().compute())
                pids = client.run(os.getpid)
                loaded = client.run(lambda: "resid_h5" in sys.modules)
            print(json.dumps({"err": err, "filters": filters, "units": back.t.attrs["units"],
                              "pids": sorted(pids.values()), "me": os.getpid(),
                              "loaded": sorted(loaded.values())}))

        if __name__ == "__main__":
            main()
    """)
    r = p.result
    assert r["filters"] == ["32900"] and r["units"] == "K", r
    assert r["err"] <= 0.02, r
    assert len(set(r["pids"])) == 2 and r["me"] not in r["pids"], r
    assert r["loaded"] == [True, True], r


def test_netcdf4_python_reads_with_plugin_path(venv, tmp_path):
    """netCDF4-python has an HDF5 of its own: it reads through resid_h5.PLUGIN_PATH."""
    need("xarray", "h5netcdf", "netCDF4")
    data = field((6, 30, 40), seed=3)
    np.save(tmp_path / "orig.npy", data)
    vpy(venv, tmp_path, """
        import xarray as xr, resid_h5
        xr.Dataset({"t": (("time", "y", "x"), np.load("orig.npy"))}).to_netcdf(
            "n.nc", engine="h5netcdf", encoding={"t": {**resid_h5.Resid(abs=0.01), "chunksizes": (2, 30, 40)}})
    """)
    p = vpy(venv, tmp_path, """
        import os, resid_h5
        os.environ["HDF5_PLUGIN_PATH"] = resid_h5.PLUGIN_PATH    # before importing netCDF4
        import netCDF4, xarray as xr
        a = np.load("orig.npy").astype("f8")
        x = netCDF4.Dataset("n.nc")["t"][...]
        y = xr.open_dataset("n.nc", engine="netcdf4").t.values
        print(json.dumps([float(np.abs(x - a).max()), float(np.abs(y - a).max())]))
    """)
    assert max(p.result) <= 0.01, p.result


# ---------------------------------------------------------------------------------------------
# numcodecs and Zarr


def test_numcodecs_and_zarr(venv, tmp_path):
    need("numcodecs", "zarr", "xarray")
    data = field((20, 48, 70), seed=2)
    np.save(tmp_path / "orig.npy", data)
    p = vpy(venv, tmp_path, """
        import numcodecs, zarr, xarray as xr
        from resid_h5.zarr import ResidZarrCodec
        a = np.load("orig.npy")
        out = {}
        codec = numcodecs.get_codec({"id": "resid", "abs": 0.01, "coder": "rans"})
        out["config"] = codec.get_config()
        enc = codec.encode(a)
        dec = codec.decode(enc)
        out["codec"] = [len(enc), a.nbytes, list(dec.shape), str(dec.dtype),
                        float(np.abs(dec.astype("f8") - a).max())]
        z = zarr.create_array("v2.zarr", shape=a.shape, chunks=(8, 48, 32), dtype="f4",
                              compressors=[codec], zarr_format=2)
        z[...] = a
        z = zarr.create_array("v3.zarr", shape=a.shape, chunks=(8, 48, 32), dtype="f8",
                              serializer=ResidZarrCodec(rel=1e-4), compressors=None)
        z[...] = a.astype("f8")
        ds = xr.Dataset({"t": (("z", "y", "x"), a)})
        ds.to_zarr("x.zarr", zarr_format=3, consolidated=False, encoding={
            "t": {"serializer": ResidZarrCodec(abs=0.01), "compressors": None, "chunks": (5, 48, 70)}})
        errors = []
        for bad in (lambda: codec.encode(np.arange(10)), lambda: codec.decode(b"not a chunk" * 4),
                    lambda: codec.decode(enc[:-7]), lambda: numcodecs.get_codec({"id": "resid"}),
                    lambda: zarr.create_array("i.zarr", shape=(4,), dtype="i4",
                                              serializer=ResidZarrCodec(abs=1), compressors=None)):
            try:
                bad()
                errors.append("no error")
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        out["errors"] = errors
        print(json.dumps(out))
    """)
    r = p.result
    assert r["config"] == {"id": "resid", "abs": 0.01, "coder": "rans"}, r
    n, raw, shape, dtype, err = r["codec"]
    assert shape == list(data.shape) and dtype == "float32" and err <= 0.01 and n < raw / 3, r
    enc_int, garbage, cut, nobound, zint = r["errors"]
    assert enc_int.startswith("ResidError: resid: the array's element type is int64"), enc_int
    assert garbage == "ResidError: resid: not a resid chunk (no RSID magic)", garbage
    assert cut.startswith("ResidError: resid: cannot decode") and "truncated" in cut, cut
    assert "give exactly one bound" in nobound, nobound
    assert "ValueError: resid: the array's element type is int32" in zint, zint
    # A fresh process opens each store through its metadata alone (the entry points).
    p = vpy(venv, tmp_path, """
        import zarr, xarray as xr
        a = np.load("orig.npy").astype("f8")
        out = {}
        for name in ("v2.zarr", "v3.zarr"):
            z = zarr.open_array(name, mode="r")
            out[name] = float(np.abs(z[...].astype("f8") - a).max())
        out["v3 codecs"] = json.load(open("v3.zarr/zarr.json"))["codecs"]
        out["v2 compressor"] = json.load(open("v2.zarr/.zarray"))["compressor"]
        back = xr.open_zarr("x.zarr", consolidated=False)
        out["xarray"] = float(np.abs(back.t.values.astype("f8") - a).max())
        print(json.dumps(out))
    """)
    r = p.result
    assert r["v2 compressor"] == {"id": "resid", "abs": 0.01, "coder": "rans"}, r
    assert r["v3 codecs"] == [{"name": "resid", "configuration": {"rel": 0.0001}}], r
    assert r["v2.zarr"] <= 0.01 and r["xarray"] <= 0.01, r
    # rel: 1e-4 of each 8x48x32 chunk's value range (edge chunks padded with the fill value 0).
    rng = max(float(np.ptp(np.append(data[i:i + 8, :, j:j + 32], 0.0)))
              for i in range(0, 20, 8) for j in range(0, 70, 32))
    assert r["v3.zarr"] <= 1e-4 * rng, (r, rng)
