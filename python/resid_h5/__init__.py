"""resid for h5py: registers the resid HDF5 filter (id 32900) and builds its arguments.

    import h5py, resid_h5
    with h5py.File("out.h5", "w") as f:
        f.create_dataset("x", data=a, chunks=(64, 64, 64), **resid_h5.Resid(rel=1e-3))

Importing the package loads ``libh5resid.so`` and registers it with h5py's own HDF5, as
hdf5plugin does for its filters: the library's ``init_filter`` is given the path of h5py's
``h5z`` extension module (so the plugin calls the HDF5 that h5py uses), then the filter class
from ``H5PLget_plugin_info`` is registered through ``h5py.h5z.register_filter``. No
``HDF5_PLUGIN_PATH`` is needed, for writing or for reading.

HDF5 codes one chunk at a time; :func:`write` and :func:`read` (and the :func:`parallel` view)
code whole chunks on all cores instead, storing the same bytes the filter stores:

    d = f.create_dataset("x", shape=a.shape, dtype="f4", chunks=(16, 64, 64),
                         **resid_h5.Resid(rel=1e-3))
    resid_h5.write(d, a)              # resid_h5.write(d, part, np.s_[0:8], threads=4)
    b = resid_h5.read(d)              # resid_h5.read(d, np.s_[:, 10:20])

The library is looked up, first hit wins: ``$RESID_PLUGIN`` (the file, or a directory
holding it), the copy the wheel carries (``resid_h5/plugins/``), ``target/release`` of the
resid checkout when the package is imported from its source tree (``python/``), then each
directory of ``$HDF5_PLUGIN_PATH``. :data:`PLUGIN_PATH` is the directory of the library found,
for ``HDF5_PLUGIN_PATH`` of h5repack, h5dump, C and Fortran programs (as
``hdf5plugin.PLUGIN_PATH``).
"""

import ctypes
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FILTER_ID", "PLUGIN_PATH", "Resid", "register", "plugin_path", "bound_words", "PluginNotFound",
           "write", "read", "parallel", "Parallel", "ResidError", "library"]

FILTER_ID = 32900
LIBRARY = "libh5resid.so"
MODES = {"abs": 0, "rel": 1, "nrmse": 2, "psnr": 3}
CODERS = {"range": 0, "lz4": 1, "packed": 2, "rans": 3, "grouped": 4}
PREDICTORS = {
    "auto": 0,
    "lorenzo": 1,
    "interp": 2,
    "nglr": 3,
    "auto-nglr": 4,
    "auto-linear": 5,
    "wavelet": 6,
}
BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
ENHANCERS = {"off": 0, "strict": 1, "relaxed": 2, "strict-cross": 3, "relaxed-cross": 4}

_HERE = Path(__file__).resolve().parent
_registered = None  # path of the registered library, once registered


class PluginNotFound(RuntimeError):
    """libh5resid.so was not found in any of the places resid_h5 looks."""


def _candidates():
    # The library the wheel carries (setup.py: setuptools-rust names it libh5resid.abi3.so).
    bundled = sorted((_HERE / "plugins").glob("libh5resid*.so"))
    yield "bundled", bundled[0] if bundled else _HERE / "plugins" / "libh5resid.abi3.so"
    root = _HERE.parent.parent  # imported from the checkout's python/: its own build
    if (root / "Cargo.toml").is_file() and (root / "plugin").is_dir():
        target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
        if not target.is_absolute():
            target = root / target
        yield "checkout", target / "release" / LIBRARY
    for d in filter(None, os.environ.get("HDF5_PLUGIN_PATH", "").split(os.pathsep)):
        yield "HDF5_PLUGIN_PATH", Path(d) / LIBRARY


def plugin_path():
    """Path of the libh5resid.so that :func:`register` loads; raises PluginNotFound."""
    env = os.environ.get("RESID_PLUGIN")
    if env:  # set on purpose: a wrong value is an error, not a reason to look elsewhere
        p = Path(env)
        p = p / LIBRARY if p.is_dir() else p
        if not p.is_file():
            raise PluginNotFound(f"resid_h5: RESID_PLUGIN={env}: {p} does not exist")
        return p
    tried = []
    for where, path in _candidates():
        if path.is_file():
            return path
        tried.append(f"{where}: {path}")
    raise PluginNotFound(
        "resid_h5: libh5resid.so not found. Install the wheel (`pip install ./python` in a "
        "resid checkout builds it), build it with `cargo build --release -p h5resid`, "
        "or set RESID_PLUGIN to its path. Looked in:\n  " + "\n  ".join(tried)
    )


def register(force=False):
    """Loads libh5resid.so and registers filter 32900 with h5py's HDF5. Returns the path of
    the library. Called on import; call it again with force=True after h5py's HDF5 was
    reset, or to re-register."""
    global _registered
    import h5py

    if _registered is not None and not force and h5py.h5z.filter_avail(FILTER_ID):
        return _registered
    path = plugin_path()
    lib = ctypes.CDLL(str(path))
    init = getattr(lib, "init_filter", None)
    if init is not None:
        init.argtypes = [ctypes.c_char_p]
        init.restype = ctypes.c_int
        # -1 also means "already initialised" (the library was loaded before, e.g. through
        # HDF5_PLUGIN_PATH in this process); registration below tells whether it works.
        init(os.fsencode(h5py.h5z.__file__))
    lib.H5PLget_plugin_info.restype = ctypes.c_void_p
    if h5py.h5z.filter_avail(FILTER_ID):
        h5py.h5z.unregister_filter(FILTER_ID)
    h5py.h5z.register_filter(lib.H5PLget_plugin_info())
    if not h5py.h5z.filter_avail(FILTER_ID):
        raise RuntimeError(f"resid_h5: {path} loaded, but h5py does not see filter {FILTER_ID}")
    _registered = path
    return path


def bound_words(bound):
    """The two cd_values words of a double: high 32 bits, then low 32 bits."""
    return struct.unpack(">II", struct.pack(">d", float(bound)))


def _choice(name, value, table):
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in table.values():
        return value
    raise ValueError(f"resid: {name}={value!r} is not one of {', '.join(map(repr, table))}")


class Resid(Mapping):
    """Arguments of ``h5py.Group.create_dataset`` for the resid filter.

    Exactly one bound: ``abs=`` (absolute error), ``rel=`` (relative to each chunk's value
    range), ``nrmse=`` (0 < t <= 1) or ``psnr=`` (dB, 0 < p <= 400). Options:
    ``coder='range'|'rans'|'lz4'|'packed'|'grouped'`` (``'rans'``: the range coder's model by
    table lookups, faster to read; ``'packed'``: the GPU's coder, see docs/GPU.md;
    ``'grouped'`` with ``predictor='lorenzo'``: the fast mode, over twice SZ3's speed),
    ``predictor='auto'|'lorenzo'|'interp'|'nglr'|'auto-nglr'|'auto-linear'|'wavelet'``
    (``'auto-linear'``: smaller, writes at about two thirds of auto's speed; ``'auto-nglr'``:
    smallest output, several times slower; see docs/NGLR.md; ``'wavelet'``: every chunk it can
    through a CDF 9/7 wavelet, which the auto words also try per chunk),
    ``backend='auto'|'cpu'|'cuda'``,
    ``enhancer='off'|'strict'|'relaxed'|'strict-cross'|'relaxed-cross'`` (the NeurLZ
    enhancer, docs/NEURLZ.md; **relaxed modes keep every value within twice the bound**; the
    cross modes read the leading dimension as fields of one grid), ``enhancer_budget=``
    (training steps in units of 20, 1..255; default 16).

    >>> f.create_dataset("x", data=a, chunks=(64, 64, 64), **Resid(rel=1e-3))
    >>> f.create_dataset("uvz", data=np.stack([u, v, z]), chunks=(3, 6, 241, 480),
    ...                  **Resid(rel=1e-2, enhancer="relaxed-cross"))

    Like hdf5plugin's filter classes it is a Mapping with ``compression`` and
    ``compression_opts``, and has ``filter_id`` and ``filter_options``.
    """

    filter_id = FILTER_ID
    filter_name = "resid"

    def __init__(self, abs=None, rel=None, nrmse=None, psnr=None, *, coder="range",
                 predictor="auto", backend="auto", enhancer="off", enhancer_budget=None):
        given = {k: v for k, v in (("abs", abs), ("rel", rel), ("nrmse", nrmse), ("psnr", psnr))
                 if v is not None}
        if len(given) != 1:
            raise ValueError("resid: give exactly one bound: abs=, rel=, nrmse= or psnr= "
                             f"(got {', '.join(given) or 'none'})")
        (mode, bound), = given.items()
        try:
            bound = float(bound)
        except (TypeError, ValueError):
            raise TypeError(f"resid: {mode}={bound!r} is not a number") from None
        if not math.isfinite(bound) or bound <= 0:
            raise ValueError(f"resid: {mode}={bound!r}: the bound must be finite and > 0")
        if mode == "nrmse" and bound > 1:
            raise ValueError(f"resid: nrmse={bound!r}: must be in (0, 1]")
        if mode == "psnr" and bound > 400:
            raise ValueError(f"resid: psnr={bound!r}: must be in (0, 400] dB")
        self.mode, self.bound = mode, bound
        self.coder = _choice("coder", coder, CODERS)
        self.predictor = _choice("predictor", predictor, PREDICTORS)
        self.backend = _choice("backend", backend, BACKENDS)
        self.enhancer = _choice("enhancer", enhancer, ENHANCERS)
        if enhancer_budget is None:
            self.enhancer_budget = 0
        elif (isinstance(enhancer_budget, int) and not isinstance(enhancer_budget, bool)
              and 1 <= enhancer_budget <= 255):
            self.enhancer_budget = enhancer_budget
        else:
            raise ValueError(f"resid: enhancer_budget={enhancer_budget!r}: an integer in 1..255")
        hi, lo = bound_words(bound)
        opts = [1, MODES[mode], hi, lo, self.coder, self.predictor,
                self.enhancer | self.enhancer_budget << 8, self.backend]
        # Trailing defaults are left out: the filter fills them in (set_local).
        while len(opts) > 4 and opts[-1] == 0:
            opts.pop()
        self.filter_options = tuple(opts)

    @property
    def _kwargs(self):
        return {"compression": self.filter_id, "compression_opts": self.filter_options}

    def __getitem__(self, key):
        return self._kwargs[key]

    def __iter__(self):
        return iter(self._kwargs)

    def __len__(self):
        return 2

    def config(self):
        """The keyword arguments that rebuild these arguments: the bound, then each option not
        at its default, by name (JSON-ready: numcodecs and Zarr metadata store it)."""
        out = {self.mode: self.bound}
        for key, table in (("coder", CODERS), ("predictor", PREDICTORS), ("backend", BACKENDS),
                           ("enhancer", ENHANCERS)):
            code = getattr(self, key)
            if code != 0:  # every option's default has code 0
                out[key] = next(name for name, c in table.items() if c == code)
        if self.enhancer_budget:
            out["enhancer_budget"] = self.enhancer_budget
        return out

    def __repr__(self):
        return f"Resid({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


from .parallel import Parallel, ResidError, library, parallel, read, write  # noqa: E402

PLUGIN_PATH = str(_HERE / "plugins")
"""Directory holding the library, for ``HDF5_PLUGIN_PATH`` (the one :func:`plugin_path` finds)."""

try:
    PLUGIN_PATH = str(register().parent)
except (PluginNotFound, ImportError) as _e:  # pragma: no cover - reported on use
    import warnings

    warnings.warn(str(_e), RuntimeWarning, stacklevel=2)
