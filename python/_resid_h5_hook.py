"""Registers the resid filter in every Python process that imports h5py, with no import of
resid_h5 and no HDF5_PLUGIN_PATH: what makes Dask and multiprocessing workers read resid
datasets as they read gzip ones.

The installed `resid_h5.pth` imports this module at interpreter start. It only puts a finder
in front of `sys.meta_path`; when h5py is first imported, the finder lets the real import run
and then imports resid_h5 (which registers filter 32900 with h5py's HDF5) and steps aside.
Nothing else is imported at start-up. `RESID_H5_AUTOREGISTER=0` (read at start-up and again
when h5py is imported) turns it off; so does an `HDF5_PLUGIN_PATH` holding a resid plugin,
which HDF5 then loads itself. A failure to register is a warning, never a failed h5py
import.
"""

import os
import sys


class _AfterH5py:
    """Meta-path finder: runs resid_h5's registration right after h5py is executed."""

    def find_spec(self, name, path=None, target=None):
        if name != "h5py":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders locate h5py
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register()

        spec.loader.exec_module = exec_module
        return spec


def _enabled():
    return os.environ.get("RESID_H5_AUTOREGISTER", "1").lower() not in ("0", "off", "no", "false")


def _on_plugin_path():
    """Whether a directory of HDF5_PLUGIN_PATH holds a resid plugin: HDF5 then loads that one
    itself, and the setting a user (or a benchmark) made on purpose wins over the wheel's."""
    import glob

    dirs = os.environ.get("HDF5_PLUGIN_PATH", "").split(os.pathsep)
    return any(glob.glob(os.path.join(d, "libh5resid*.so")) for d in dirs if d)


def _register():
    if not _enabled() or _on_plugin_path():
        return
    try:
        import resid_h5  # noqa: F401  (registers on import)
    except Exception as e:  # never break the h5py import
        import warnings

        warnings.warn(f"resid_h5: could not register the resid filter with h5py: {e}",
                      RuntimeWarning, stacklevel=2)


if _enabled():
    if "h5py" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterH5py) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterH5py())
