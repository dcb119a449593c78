"""The resid filter in the programs scientists run: a C simulation code writing an extendible
dataset step by step (examples/heat/heat.c), netCDF-4 through netCDF-C's nc_def_var_filter,
and parallel HDF5 from 2 MPI ranks with collective I/O.

Each C program is built here and run with HDF5_PLUGIN_PATH pointing at the plugin. A test
whose tools are missing skips and says what to install: netCDF needs libnetcdf-dev
(installed by .ci/run and scripts/setup), MPI needs libhdf5-openmpi-dev and openmpi-bin
(`scripts/setup --mpi`; .ci/run installs them and sets RESID_REQUIRE_MPI=1, which turns the
MPI test's skip into a failure).
"""

import os
import re
import shutil
import subprocess

import pytest

pytest.importorskip("h5py", reason="h5py is not importable; `pip install h5py`")
np = pytest.importorskip("numpy")

from test_hdf5_plugin import PLUGIN, REPO, run, run_py  # noqa: E402


def pkg_flags(*names):
    """cflags + libs of the first pkg-config module that exists, or None."""
    if not shutil.which("pkg-config"):
        return None
    for name in names:
        pc = subprocess.run(["pkg-config", "--cflags", "--libs", name], capture_output=True, text=True)
        if pc.returncode == 0 and pc.stdout.strip():
            return pc.stdout.split()
    return None


def build(tmp_path, source, exe_name, flags, cc=None):
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (apt-get install gcc)")
    exe = tmp_path / exe_name
    b = subprocess.run([cc, "-O2", str(source), "-o", str(exe), *flags, "-lm"], capture_output=True, text=True)
    assert b.returncode == 0, f"build of {source.name} failed:\n{b.stderr}"
    return exe


# ---------------------------------------------------------------------------------------------
# A simulation code: examples/heat/heat.c


def heat_exe(tmp_path):
    flags = pkg_flags("hdf5-serial", "hdf5")
    if flags is None:
        pytest.skip("pkg-config hdf5 not available (apt-get install libhdf5-dev pkg-config)")
    return build(tmp_path, REPO / "examples" / "heat" / "heat.c", "heat", flags)


@pytest.mark.parametrize("mode,bound", [("abs", 0.01), ("rel", 1e-3)])
def test_heat_example(tmp_path, mode, bound):
    exe = heat_exe(tmp_path)
    out = tmp_path / "heat.h5"
    p = run([str(exe), str(out), mode, str(bound), "64", "48", "12"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "heat: ok" in p.stdout
    ratio = float(re.search(r"ratio ([\d.]+)", p.stdout).group(1))
    assert ratio > 2, p.stdout
    # The file is an ordinary HDF5 file: h5py (its own HDF5) reads the extendible dataset.
    r = run_py(tmp_path, f"""
        with h5py.File({str(out)!r}, "r") as f:
            d = f["T"]
            print(json.dumps({{"shape": d.shape, "max": d.maxshape[0], "chunks": d.chunks,
                               "filters": list(d._filters), "finite": bool(np.isfinite(d[...]).all())}}))
    """)
    assert r.result == {"shape": [12, 64, 48], "max": None, "chunks": [1, 64, 48], "filters": ["32900"],
                        "finite": True}


def test_heat_example_without_plugin_says_why(tmp_path):
    exe = heat_exe(tmp_path)
    p = run([str(exe), str(tmp_path / "h.h5"), "abs", "0.01", "8", "8", "2"], plugin_path=False)
    assert p.returncode == 2
    assert "HDF5_PLUGIN_PATH" in p.stderr, p.stderr
    p = run([str(exe), str(tmp_path / "h.h5"), "nonsense", "0.01"])
    assert p.returncode == 2 and "usage" in p.stderr


# ---------------------------------------------------------------------------------------------
# netCDF-4 (netCDF-C on Debian's HDF5 1.10)


def test_netcdf_c_def_var_filter(tmp_path):
    flags = pkg_flags("netcdf")
    if flags is None:
        pytest.skip("netCDF-C not installed (apt-get install libnetcdf-dev)")
    exe = build(tmp_path, REPO / "tests" / "c" / "netcdf_roundtrip.c", "nc_roundtrip", flags)
    out = tmp_path / "rt.nc"
    p = run([str(exe), str(out), "0.01"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "filter 32900" in p.stdout
    # The netCDF variable is an HDF5 dataset with the filter: h5py sees the same values.
    r = run_py(tmp_path, f"""
        with h5py.File({str(out)!r}, "r") as f:
            d = f["tas"]
            print(json.dumps({{"filters": list(d._filters), "shape": d.shape, "units": d.attrs["units"].decode()
                               if isinstance(d.attrs["units"], bytes) else str(d.attrs["units"]),
                               "min": float(d[...].min())}}))
    """)
    assert r.result["filters"] == ["32900"] and r.result["shape"] == [6, 45, 90]
    assert r.result["units"] == "K" and r.result["min"] > 200
    # Without the plugin, defining the filter fails with netCDF's own message.
    p = run([str(exe), str(tmp_path / "x.nc")], plugin_path=False)
    assert p.returncode == 2 and "filter" in p.stderr.lower(), p.stderr


# ---------------------------------------------------------------------------------------------
# Parallel HDF5: 2 MPI ranks, collective writes of one filtered dataset


def test_mpi_collective_write(tmp_path):
    mpirun = shutil.which("mpirun")
    flags = pkg_flags("hdf5-openmpi")
    mpicc = shutil.which("mpicc")
    if not (mpirun and flags and mpicc):
        why = ("parallel HDF5 not installed (apt-get install libhdf5-openmpi-dev openmpi-bin, "
               "or scripts/setup --mpi)")
        if os.environ.get("RESID_REQUIRE_MPI") == "1":
            pytest.fail(f"RESID_REQUIRE_MPI=1 but {why}")
        pytest.skip(why)
    exe = build(tmp_path, REPO / "tests" / "c" / "mpi_write.c", "mpi_write", flags, cc=mpicc)
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    assert "libhdf5_openmpi" in ldd, ldd
    out = tmp_path / "mpi.h5"
    bound = 0.01
    env_cmd = [mpirun, "-n", "2", "--oversubscribe", "--allow-run-as-root",
               "-x", "HDF5_PLUGIN_PATH", "--mca", "btl", "self,vader", str(exe), str(out), str(bound)]
    p = run(env_cmd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 ranks wrote" in p.stdout, p.stdout
    # Read back serially (h5py's HDF5) and compare with the values each rank computed.
    r = run_py(tmp_path, f"""
        with h5py.File({str(out)!r}, "r") as f:
            d = f["x"]
            x = d[...].astype(np.float64)
            rows, cols = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), indexing="ij")
            want = (100.0 * np.sin(0.05 * rows) * np.cos(0.03 * cols) + 0.5 * rows
                    + 0.001 * (rows * x.shape[1] + cols)).astype(np.float32).astype(np.float64)
            print(json.dumps({{"shape": d.shape, "chunks": d.chunks, "filters": list(d._filters),
                               "maxerr": float(np.abs(x - want).max()),
                               "stored": int(d.id.get_storage_size()), "raw": int(x.size * 4)}}))
    """)
    res = r.result
    assert res["shape"] == [64, 96] and res["chunks"] == [32, 32] and res["filters"] == ["32900"], res
    assert res["maxerr"] <= bound, res
    assert res["stored"] < res["raw"], res
