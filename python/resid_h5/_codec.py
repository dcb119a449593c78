"""One array in, one resid chunk out, and back: the core the numcodecs and Zarr codecs share.

The bytes are the HDF5 filter's own (the library's C ABI, `resid_encode_chunk` /
`resid_decode_chunk`): a resid chunk is self-describing (docs/FORMAT.md, "Header"), so a
stored Zarr chunk decodes with what its header says, and its bound is the one it was written
with.
"""

import ctypes
import struct

import numpy as np

from . import Resid
from .parallel import ResidError, _error, library

DTYPES = {np.dtype("<f4"): 1, np.dtype("<f8"): 2}
CODE_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
MAGIC = b"RSID"
def _cd_values(args: Resid, dtype_code, shape):
    """The full cd_values the filter would hold for one chunk of `shape` (no fill value)."""
    lib = library()
    user = (ctypes.c_uint32 * len(args.filter_options))(*args.filter_options)
    dims = (ctypes.c_size_t * len(shape))(*shape)
    cap = 64
    out, n = (ctypes.c_uint32 * cap)(), ctypes.c_size_t(cap)
    rc = lib.resid_local_cd_values(user, len(user), dtype_code, len(shape), dims, 0, 0, out,
                                   ctypes.byref(n))
    if rc != 0:
        raise _error(lib, f"a chunk of shape {tuple(shape)}")
    return (ctypes.c_uint32 * n.value)(*out[: n.value])


def encode(args: Resid, array):
    """The resid chunk of `array` (float32 or float64, any shape with at least one value)."""
    a = np.asarray(array)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        raise ResidError(f"resid: the array's element type is {a.dtype}, not a 4- or 8-byte "
                         "float; resid codes float32 and float64")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    if a.size == 0:
        raise ResidError("resid: the array is empty; a chunk holds at least one value")
    shape = a.shape or (1,)
    lib = library()
    cd = _cd_values(args, DTYPES[a.dtype], shape)
    p, n = ctypes.c_void_p(), ctypes.c_size_t()
    rc = lib.resid_encode_chunk(cd, len(cd), a.ctypes.data, a.nbytes, ctypes.byref(p),
                                ctypes.byref(n))
    if rc != 0:
        raise _error(lib, f"encoding an array of shape {a.shape}")
    try:
        return ctypes.string_at(p, n.value)
    finally:
        lib.resid_free(p)


def header(data):
    """(dtype, shape) from a resid chunk's header; ResidError when it is not one."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ResidError("resid: not a resid chunk (no RSID magic)")
    dtype, rank = CODE_DTYPES.get(data[6]), data[7]
    if dtype is None or not 1 <= rank <= 32 or len(data) < 8 + 8 * rank:
        raise ResidError("resid: damaged chunk header (element type or rank)")
    shape = struct.unpack_from(f"<{rank}Q", data, 8)
    if any(d == 0 for d in shape) or np.prod(shape, dtype=np.float64) * dtype.itemsize > 2**48:
        raise ResidError(f"resid: damaged chunk header (shape {shape})")
    return dtype, shape


def decode(args: Resid, data, out=None):
    """The array a resid chunk holds (C order, its own shape and element type), written into
    `out` when given (same number of bytes)."""
    data = bytes(data)
    dtype, shape = header(data)
    result = np.empty(shape, dtype) if out is None else out
    if result.nbytes != int(np.prod(shape)) * dtype.itemsize or not result.flags.c_contiguous:
        raise ResidError(f"resid: the output holds {result.nbytes} bytes, the chunk "
                         f"{int(np.prod(shape)) * dtype.itemsize} ({shape}, {dtype})")
    lib = library()
    cd = _cd_values(args, DTYPES[dtype], shape)
    rc = lib.resid_decode_chunk(cd, len(cd), data, len(data), result.ctypes.data, result.nbytes)
    if rc != 0:
        raise _error(lib, f"decoding a chunk of shape {shape}")
    return result
