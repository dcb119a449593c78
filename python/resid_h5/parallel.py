"""Writing and reading resid datasets on all cores.

HDF5 runs a dataset's filter pipeline one chunk at a time on one thread, and resid works in
parallel only inside a chunk (over blocks of 256K values), so a dataset of small chunks codes
on one core through plain h5py. :func:`write` and :func:`read` code whole chunks on a thread
pool instead, through the C ABI of ``libh5resid.so`` (``resid_encode_chunk`` /
``resid_decode_chunk``; ctypes releases the GIL during the calls), and move the coded chunks
with h5py's ``write_direct_chunk`` / ``read_direct_chunk``. The stored chunks are the ones the
filter writes, byte for byte (same ``cd_values``, edge chunks padded with the fill value as
HDF5 pads them, filter mask 0), so the file reads back through plain h5py, h5dump or any
HDF5 program with the plugin.

    import h5py, resid_h5
    with h5py.File("out.h5", "w") as f:
        d = f.create_dataset("x", shape=a.shape, dtype="f4", chunks=(16, 64, 64),
                             **resid_h5.Resid(rel=1e-3))
        resid_h5.write(d, a)                        # all of it, on all cores
        resid_h5.write(d, a[:8], (slice(0, 8),))    # or a box of it
        b = resid_h5.read(d, np.s_[:, 10:20])       # any box, as d[:, 10:20] would give
        p = resid_h5.parallel(d, threads=4)         # or as a view: p[...] = a; p[0:4]
"""

import collections
import ctypes
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["ResidError", "write", "read", "parallel", "Parallel", "library"]

FILTER_ID = 32900
H5Z_FLAG_OPTIONAL = 0x0001


class ResidError(RuntimeError):
    """A chunk failed to code; the message is resid's (it starts with ``resid:``)."""


_lib = None


def library():
    """The ctypes handle of libh5resid.so (the one :func:`resid_h5.plugin_path` finds) with the
    signatures of its C ABI declared (``resid_encode_chunk``, ``resid_decode_chunk``,
    ``resid_free``, ``resid_last_error``, ``resid_capi_version``, ``resid_local_cd_values``;
    see plugin/include/resid.h)."""
    global _lib
    if _lib is None:
        from . import plugin_path

        lib = ctypes.CDLL(str(plugin_path()))
        u32p, vp, sz = ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p, ctypes.c_size_t
        lib.resid_encode_chunk.argtypes = [u32p, sz, vp, sz, ctypes.POINTER(vp), ctypes.POINTER(sz)]
        lib.resid_encode_chunk.restype = ctypes.c_int
        lib.resid_decode_chunk.argtypes = [u32p, sz, vp, sz, vp, sz]
        lib.resid_decode_chunk.restype = ctypes.c_int
        lib.resid_free.argtypes = [vp]
        lib.resid_free.restype = None
        lib.resid_last_error.argtypes = []
        lib.resid_last_error.restype = ctypes.c_char_p
        lib.resid_capi_version.restype = ctypes.c_uint32
        lib.resid_local_cd_values.argtypes = [u32p, sz, ctypes.c_uint32, sz, ctypes.POINTER(sz),
                                              ctypes.c_int, ctypes.c_uint64, u32p, ctypes.POINTER(sz)]
        lib.resid_local_cd_values.restype = ctypes.c_int
        if lib.resid_capi_version() != 1:
            raise ResidError(f"resid: {plugin_path()} has C ABI version "
                             f"{lib.resid_capi_version()}, resid_h5 needs 1")
        _lib = lib
    return _lib


def _error(lib, where):
    msg = (lib.resid_last_error() or b"").decode("utf-8", "replace") or "resid: unknown error"
    return ResidError(f"{msg} ({where})")


class _Dataset:
    """What the parallel path needs to know about an h5py dataset, checked."""

    def __init__(self, dset):
        import h5py

        if not isinstance(dset, h5py.Dataset):
            raise TypeError(f"resid_h5: expected an h5py.Dataset, got {type(dset).__name__}")
        self.dset, self.name = dset, dset.name
        if dset.chunks is None:
            raise ValueError(f"resid_h5: dataset {self.name} is not chunked, so it has no resid "
                             "filter; create it with chunks=... and **resid_h5.Resid(...)")
        plist = dset.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if FILTER_ID not in filters:
            raise ValueError(f"resid_h5: dataset {self.name} has no resid filter ({FILTER_ID}); "
                             "create it with **resid_h5.Resid(...)")
        if filters != [FILTER_ID]:
            raise ValueError(f"resid_h5: dataset {self.name} has filters {filters}; the parallel "
                             "path handles resid as the only filter (use plain h5py for others)")
        flags, cd, _ = plist.get_filter_by_id(FILTER_ID)
        self.optional = bool(flags & H5Z_FLAG_OPTIONAL)
        self.cd = (ctypes.c_uint32 * len(cd))(*cd)
        self.dtype = np.dtype(dset.dtype)
        if self.dtype not in (np.dtype("<f4"), np.dtype("<f8")):
            raise ValueError(f"resid_h5: dataset {self.name} holds {self.dtype}; resid codes "
                             "little-endian float32 and float64")
        self.shape, self.chunks = tuple(dset.shape), tuple(dset.chunks)
        # HDF5 fills a new chunk with the fill value, or with zeros when the fill time is
        # "never" (dset.fillvalue is 0 when no fill value is set).
        never = plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER
        self.pad = self.dtype.type(0 if never else dset.fillvalue)
        self.fill = self.dtype.type(dset.fillvalue)
        self.chunk_nbytes = int(np.prod(self.chunks)) * self.dtype.itemsize

    def chunk_boxes(self, lo, hi):
        """(chunk offset, slices in the chunk, slices in the box) of each chunk meeting the box
        [lo, hi), in C order of the chunk grid, as HDF5 walks it."""
        ranges = [range(a // c, (b - 1) // c + 1) if b > a else range(0)
                  for a, b, c in zip(lo, hi, self.chunks)]
        for idx in itertools.product(*ranges):
            start = tuple(i * c for i, c in zip(idx, self.chunks))
            o_lo = [max(a, s) for a, s in zip(lo, start)]
            o_hi = [min(b, s + c, n) for b, s, c, n in zip(hi, start, self.chunks, self.shape)]
            in_chunk = tuple(slice(a - s, b - s) for a, b, s in zip(o_lo, o_hi, start))
            in_box = tuple(slice(a - l, b - l) for a, b, l in zip(o_lo, o_hi, lo))
            yield start, in_chunk, in_box

    def covers_chunk(self, start, in_chunk):
        """Whether `in_chunk` is all of the chunk's part inside the dataset."""
        return all(sl.start == 0 and sl.stop == min(c, n - s)
                   for sl, s, c, n in zip(in_chunk, start, self.chunks, self.shape))

    def raw_chunk(self, start):
        """(filter mask, stored bytes) of the chunk at `start`, or None when not allocated."""
        info = self.dset.id.get_chunk_info_by_coord(start)
        if info.byte_offset is None:
            return None
        return self.dset.id.read_direct_chunk(start)

    def decode(self, lib, raw, out, start):
        """Decodes the stored chunk `raw` (mask, bytes) into `out` (one chunk, C-contiguous)."""
        mask, data = raw
        if mask & 1:  # stored without resid (an optional filter that failed)
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)
            return
        rc = lib.resid_decode_chunk(self.cd, len(self.cd), bytes(data), len(data),
                                    out.ctypes.data, out.nbytes)
        if rc != 0:
            raise _error(lib, f"chunk at {start} of {self.name}")

    def encode(self, lib, chunk, start):
        """(filter mask, bytes to store) for one whole chunk."""
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        rc = lib.resid_encode_chunk(self.cd, len(self.cd), chunk.ctypes.data, chunk.nbytes,
                                    ctypes.byref(p), ctypes.byref(n))
        if rc != 0:
            if self.optional:  # as HDF5 does with an optional filter: store the chunk raw
                return 1, chunk.tobytes()
            raise _error(lib, f"chunk at {start} of {self.name}")
        try:
            return 0, ctypes.string_at(p, n.value)
        finally:
            lib.resid_free(p)


def _box(selection, shape):
    """[lo, hi) of a selection of step-1 slices and integers (Ellipsis allowed), and the shape
    h5py gives it (integer dimensions dropped)."""
    sel = () if selection is None else selection
    sel = sel if isinstance(sel, tuple) else (sel,)
    if sum(s is Ellipsis for s in sel) > 1:
        raise IndexError("resid_h5: at most one Ellipsis in a selection")
    if Ellipsis in sel:
        i = sel.index(Ellipsis)
        sel = sel[:i] + (slice(None),) * (len(shape) - len(sel) + 1) + sel[i + 1:]
    if len(sel) > len(shape):
        raise IndexError(f"resid_h5: {len(sel)} indices for a dataset of rank {len(shape)}")
    sel = sel + (slice(None),) * (len(shape) - len(sel))
    lo, hi, out_shape = [], [], []
    for s, n in zip(sel, shape):
        if isinstance(s, slice):
            a, b, step = s.indices(n)
            if step != 1:
                raise IndexError("resid_h5: only slices of step 1 (a box of the dataset)")
            lo.append(a)
            hi.append(max(a, b))
            out_shape.append(hi[-1] - a)
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            i = int(s) + (n if s < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"resid_h5: index {int(s)} out of range for a dimension of {n}")
            lo.append(i)
            hi.append(i + 1)
        else:
            raise IndexError(f"resid_h5: {s!r}: a selection is slices (step 1) and integers")
    return lo, hi, tuple(out_shape)


def _threads(threads):
    if threads is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"resid_h5: threads={threads!r}: a positive integer or None")
    return threads


def _pipeline(tasks, work, finish, threads):
    """Runs `work(task)` on `threads` threads, at most 2 per thread in flight, and hands each
    result to `finish(task, result)` on this thread, in task order."""
    if threads == 1:
        for t in tasks:
            finish(t, work(t))
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="resid") as pool:
        pending = collections.deque()
        try:
            for t in tasks:
                pending.append((t, pool.submit(work, t)))
                while len(pending) >= 2 * threads:
                    t0, f = pending.popleft()
                    finish(t0, f.result())
            while pending:
                t0, f = pending.popleft()
                finish(t0, f.result())
        finally:
            for _, f in pending:
                f.cancel()


def write(dset, data, selection=None, threads=None):
    """Writes `data` into `selection` of `dset` (default: all of it), coding whole chunks on
    `threads` threads (default: the cores this process may use).

    `dset` must have been created with the resid filter as its only filter
    (``**resid_h5.Resid(...)``). `selection` is what ``dset[selection] = data`` takes, limited to
    a box: slices of step 1, integers and Ellipsis. `data` is converted to the dataset's type
    with numpy and broadcast to the selection's shape. Chunks the box covers only in part are
    read (or start as the fill value) and merged first, as HDF5 does. The stored chunks are the
    filter's, byte for byte. Raises ResidError with resid's message when a chunk fails to code.
    """
    info = _Dataset(dset)
    lib = library()
    lo, hi, out_shape = _box(selection, info.shape)
    box_shape = tuple(b - a for a, b in zip(lo, hi))
    arr = np.broadcast_to(np.asarray(data, dtype=info.dtype), out_shape).reshape(box_shape)

    def tasks():
        for start, in_chunk, in_box in info.chunk_boxes(lo, hi):
            raw = None if info.covers_chunk(start, in_chunk) else info.raw_chunk(start)
            yield start, in_chunk, in_box, raw

    def work(task):
        start, in_chunk, in_box, raw = task
        chunk = np.empty(info.chunks, info.dtype)
        if raw is not None:
            info.decode(lib, raw, chunk, start)
        elif any(sl.stop - sl.start != c for sl, c in zip(in_chunk, info.chunks)):
            chunk.fill(info.pad)  # an edge chunk, or a new chunk written in part
        chunk[in_chunk] = arr[in_box]
        return info.encode(lib, chunk, start)

    def finish(task, coded):
        mask, stored = coded
        dset.id.write_direct_chunk(task[0], stored, filter_mask=mask)

    _pipeline(tasks(), work, finish, _threads(threads))


def read(dset, selection=None, threads=None):
    """Reads `selection` of `dset` (default: all of it), decoding whole chunks on `threads`
    threads (default: the cores this process may use). Returns the numpy array
    ``dset[selection]`` gives (same shape and values); `selection` as for :func:`write`.
    Raises ResidError with resid's message for a chunk that does not decode."""
    info = _Dataset(dset)
    lib = library()
    lo, hi, out_shape = _box(selection, info.shape)
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)), info.dtype)

    def tasks():
        for start, in_chunk, in_box in info.chunk_boxes(lo, hi):
            yield start, in_chunk, in_box, info.raw_chunk(start)

    def work(task):
        start, in_chunk, in_box, raw = task
        if raw is None:
            out[in_box] = info.fill
            return
        whole = all(sl.start == 0 and sl.stop - sl.start == c
                    for sl, c in zip(in_chunk, info.chunks))
        if whole and out[in_box].flags.c_contiguous:
            info.decode(lib, raw, out[in_box], start)  # straight into the result
            return
        chunk = np.empty(info.chunks, info.dtype)
        info.decode(lib, raw, chunk, start)
        out[in_box] = chunk[in_chunk]

    _pipeline(tasks(), work, lambda task, _: None, _threads(threads))
    return out.reshape(out_shape)


class Parallel:
    """``dset`` seen through :func:`read` and :func:`write`: ``p[sel]`` reads, ``p[sel] = a``
    writes, with the same selections (boxes) and `threads`."""

    def __init__(self, dset, threads=None):
        _Dataset(dset)  # checked now, not at the first access
        self.dset, self.threads = dset, _threads(threads)

    def __getitem__(self, selection):
        return read(self.dset, selection, self.threads)

    def __setitem__(self, selection, data):
        write(self.dset, data, selection, self.threads)

    @property
    def shape(self):
        return self.dset.shape

    @property
    def dtype(self):
        return self.dset.dtype

    def __repr__(self):
        return f"<resid_h5.parallel {self.dset.name!r} shape {self.dset.shape}, {self.threads} threads>"


def parallel(dset, threads=None):
    """A :class:`Parallel` view of `dset`: ``resid_h5.parallel(d)[...] = a``."""
    return Parallel(dset, threads)
