"""Tests of the Python helper package resid_h5 (python/): finding libh5resid.so, registering it
with h5py's HDF5 without HDF5_PLUGIN_PATH, and the hdf5plugin-style `Resid(...)` arguments.

Every snippet runs in a fresh Python *without* HDF5_PLUGIN_PATH. By default resid_h5 is
imported from python/ (PYTHONPATH); the installed copy (`pip install ./python`, as .ci/run
does) is tested too when it is installed. The plugin is the one test_hdf5_plugin.py uses.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("h5py", reason="h5py is not importable; `pip install h5py`")
np = pytest.importorskip("numpy")

from test_hdf5_plugin import PLUGIN, REPO, check_bound, smooth, words  # noqa: E402

PYDIR = REPO / "python"


def helper_env(pythonpath=True, **extra):
    e = {k: v for k, v in os.environ.items() if k not in ("HDF5_PLUGIN_PATH", "RESID_PLUGIN", "PYTHONPATH")}
    if pythonpath:
        e["PYTHONPATH"] = str(PYDIR)
    # The test suite may build elsewhere (RESID_PLUGIN_DIR / CARGO_TARGET_DIR): say where.
    if PLUGIN != REPO / "target" / "release" / "libh5resid.so":
        e["RESID_PLUGIN"] = str(PLUGIN)
    e.update({k: str(v) for k, v in extra.items() if v is not None})
    return {k: v for k, v in e.items() if v != "<unset>"}


def snippet(python, tmp_path, body, env, check=True, preamble="import json, sys\nimport numpy as np\n",
            timeout=300):
    """Runs `body` (after `preamble`) as a new script in tmp_path with the interpreter `python`
    under `env`; fails the test on a non-zero exit when `check`. The last stdout line, when it
    is JSON, is parsed into `.result`."""
    script = tmp_path / f"s_{len(list(tmp_path.glob('s_*.py')))}.py"
    script.write_text(preamble + textwrap.dedent(body))
    p = subprocess.run([str(python), str(script)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"subprocess failed (rc {p.returncode}):\n{p.stdout}\n{p.stderr}")
    lines = p.stdout.strip().splitlines()
    p.result = json.loads(lines[-1]) if lines and lines[-1][:1] in "[{\"" else None
    return p


def py(tmp_path, body, pythonpath=True, check=True, **extra):
    return snippet(sys.executable, tmp_path, body, helper_env(pythonpath, **extra), check,
                   preamble="import json, sys\nimport numpy as np\nimport h5py\n")


def test_resid_arguments_and_validation(tmp_path):
    p = py(tmp_path, """
        import resid_h5
        from collections.abc import Mapping
        out = {}
        r = resid_h5.Resid(rel=1e-3)
        out["mapping"] = isinstance(r, Mapping)
        out["dict"] = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(r).items()}
        out["id"] = r.filter_id
        out["lz4"] = list(resid_h5.Resid(abs=0.01, coder="lz4").filter_options)
        out["all"] = list(resid_h5.Resid(psnr=60, coder="lz4", predictor="lorenzo", backend="cuda").filter_options)
        out["cpu"] = list(resid_h5.Resid(nrmse=1e-4, backend="cpu").filter_options)
        out["repr"] = repr(resid_h5.Resid(abs=0.5, coder="lz4"))
        out["enh"] = list(resid_h5.Resid(rel=1e-2, enhancer="relaxed-cross", enhancer_budget=3).filter_options)
        out["enh_repr"] = repr(resid_h5.Resid(rel=1e-2, enhancer="strict", enhancer_budget=3))
        bad = {}
        for name, kw in [("none", {}), ("two", {"abs": 1e-3, "rel": 1e-3}), ("neg", {"abs": -1}),
                         ("zero", {"rel": 0}), ("nan", {"abs": float("nan")}), ("str", {"abs": "x"}),
                         ("nrmse", {"nrmse": 2}), ("psnr", {"psnr": 500}),
                         ("coder", {"abs": 1, "coder": "zstd"}), ("backend", {"abs": 1, "backend": "gpu"}),
                         ("enhancer", {"abs": 1, "enhancer": "on"}),
                         ("budget", {"abs": 1, "enhancer": "strict", "enhancer_budget": 256})]:
            try:
                resid_h5.Resid(**kw)
                bad[name] = "accepted"
            except (ValueError, TypeError) as e:
                bad[name] = str(e)
        out["bad"] = bad
        print(json.dumps(out))
    """)
    r = p.result
    assert r["mapping"] and r["id"] == 32900
    assert r["dict"] == {"compression": 32900, "compression_opts": words("rel", 1e-3)}
    assert r["lz4"] == words("abs", 0.01, 1)
    assert r["all"] == words("psnr", 60.0, 1, 1, 0, 2)
    assert r["cpu"] == words("nrmse", 1e-4, 0, 0, 0, 1)
    assert r["repr"] == "Resid(abs=0.5, coder='lz4')"
    assert r["enh"] == words("rel", 1e-2, 0, 0, 4 | 3 << 8)
    assert r["enh_repr"] == "Resid(rel=0.01, enhancer='strict', enhancer_budget=3)"
    for name, msg in r["bad"].items():
        assert msg != "accepted" and msg.startswith("resid"), (name, msg)
    assert "exactly one bound" in r["bad"]["two"] and "exactly one bound" in r["bad"]["none"]
    assert "'range', 'lz4'" in r["bad"]["coder"]


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
@pytest.mark.parametrize("kw,mode,bound", [
    ({"rel": 1e-3}, "rel", 1e-3),
    ({"abs": 0.01, "coder": "lz4"}, "abs", 0.01),
    # The fast mode.
    ({"abs": 0.01, "coder": "grouped", "predictor": "lorenzo"}, "abs", 0.01),
])
def test_h5py_roundtrip_without_plugin_path(tmp_path, dtype, kw, mode, bound):
    data = smooth((37, 50), dtype)
    np.save(tmp_path / "orig.npy", data)
    py(tmp_path, f"""
        import os, resid_h5
        assert "HDF5_PLUGIN_PATH" not in os.environ
        with h5py.File("rt.h5", "w") as f:
            f.create_dataset("x", data=np.load("orig.npy"), chunks=(16, 16), **resid_h5.Resid(**{kw!r}))
    """)
    # A second process reads it: importing resid_h5 is all it takes.
    p = py(tmp_path, """
        import resid_h5
        with h5py.File("rt.h5", "r") as f:
            np.save("back.npy", f["x"][...])
            print(json.dumps({k: list(v) for k, v in f["x"]._filters.items()}))
    """)
    back = np.load(tmp_path / "back.npy")
    check_bound(data, back, mode, bound, (16, 16))
    assert p.result["32900"][:4] == words(mode, bound)
    if kw.get("coder") == "grouped":
        assert p.result["32900"][4:6] == [4, 1]
    # Without resid_h5 (and without HDF5_PLUGIN_PATH) the data cannot be read.
    p = py(tmp_path, """
        try:
            with h5py.File("rt.h5", "r") as f:
                f["x"][...]
            print(json.dumps("read"))
        except OSError as e:
            print(json.dumps(str(e)))
    """)
    assert p.result != "read"


def test_plugin_lookup_order_and_errors(tmp_path):
    p = py(tmp_path, """
        import resid_h5
        print(json.dumps(str(resid_h5.plugin_path())))
    """)
    assert Path(p.result).resolve() == PLUGIN.resolve()
    # RESID_PLUGIN may name the directory; a wrong RESID_PLUGIN is an error, not skipped.
    p = py(tmp_path, "import resid_h5; print(json.dumps(str(resid_h5.register())))", RESID_PLUGIN=PLUGIN.parent)
    assert Path(p.result).resolve() == PLUGIN.resolve()
    p = py(tmp_path, """
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import resid_h5
        try:
            resid_h5.register()
            print(json.dumps("registered"))
        except resid_h5.PluginNotFound as e:
            print(json.dumps([str(x.message) for x in w] + [str(e)]))
    """, RESID_PLUGIN=tmp_path / "nowhere.so")
    assert p.result != "registered"
    assert all("nowhere.so" in m and "RESID_PLUGIN" in m for m in p.result), p.result


def test_registers_when_plugin_path_already_loaded_it(tmp_path):
    """HDF5_PLUGIN_PATH set as well: HDF5 may load the same library first; still one filter."""
    data = smooth((30, 30), "<f4")
    np.save(tmp_path / "orig.npy", data)
    py(tmp_path, """
        with h5py.File("a.h5", "w") as f:   # HDF5 loads the plugin itself through the path
            f.create_dataset("x", data=np.load("orig.npy"), chunks=(15, 15), compression=32900,
                             compression_opts=(1, 0, *__import__("struct").unpack(">II", __import__("struct").pack(">d", 1e-3))))
        import resid_h5
        resid_h5.register(force=True)
        with h5py.File("a.h5", "a") as f:
            f.create_dataset("y", data=np.load("orig.npy"), chunks=(15, 15), **resid_h5.Resid(abs=1e-3))
            np.save("back.npy", np.stack([f["x"][...], f["y"][...]]))
    """, HDF5_PLUGIN_PATH=PLUGIN.parent)
    back = np.load(tmp_path / "back.npy")
    for b in back:
        check_bound(data, b, "abs", 1e-3, None)


def installed_location():
    p = subprocess.run([sys.executable, "-c", "import resid_h5, sys; sys.stdout.write(resid_h5.__file__)"],
                       env=helper_env(pythonpath=False), cwd="/", capture_output=True, text=True)
    return Path(p.stdout) if p.returncode == 0 and p.stdout else None


def test_installed_package(tmp_path):
    where = installed_location()
    if where is None:
        pytest.skip("resid_h5 is not installed (`pip install ./python`); tested from python/ only")
    assert PYDIR not in where.parents, f"{where}: not an installed copy"
    data = smooth((20, 20, 20), "<f4")
    np.save(tmp_path / "orig.npy", data)
    py(tmp_path, """
        import resid_h5
        with h5py.File("i.h5", "w") as f:
            f.create_dataset("x", data=np.load("orig.npy"), chunks=(20, 20, 20), **resid_h5.Resid(rel=1e-4))
        with h5py.File("i.h5", "r") as f:
            np.save("back.npy", f["x"][...])
    """, pythonpath=False)
    check_bound(data, np.load(tmp_path / "back.npy"), "rel", 1e-4, (20, 20, 20))
