#!/usr/bin/env python3
"""Edge chunks as the user sees them: writes a field through h5py with the resid filter in
chunks that do not divide it, then prints each chunk's stored bytes and its worst error over
the user's values divided by the bound (rel: of the chunk's own range; NRMSE/PSNR: the
chunk's own target), for each bound asked for.

    HDF5_PLUGIN_PATH=target/release scripts/edge_chunks.py \\
        ../shared/data/cesm_camfv_TS_10x192x288.f32 --chunks 10,100,100 --rel 1e-3 1e-4 --psnr 60

The field's shape and type come from its file name (NAME_<d0>x..x<dn>.f32|f64).
`--fill V` gives the dataset a fill value (netCDF's float default is 9.96921e36).
"""
import argparse
import itertools
import re
import struct
import tempfile
from pathlib import Path

import h5py
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("field")
    ap.add_argument("--chunks", required=True)
    ap.add_argument("--rel", type=float, nargs="*", default=[])
    ap.add_argument("--nrmse", type=float, nargs="*", default=[])
    ap.add_argument("--psnr", type=float, nargs="*", default=[])
    ap.add_argument("--fill", type=float)
    a = ap.parse_args()
    m = re.search(r"_(\d+(?:x\d+)*)\.(f32|f64)$", a.field)
    shape = tuple(int(d) for d in m.group(1).split("x"))
    dtype = "<f4" if m.group(2) == "f32" else "<f8"
    x = np.fromfile(a.field, dtype=dtype).reshape(shape)
    chunks = tuple(int(c) for c in a.chunks.split(","))
    cases = [(1, b) for b in a.rel] + [(2, b) for b in a.nrmse] + [(3, b) for b in a.psnr]
    kw = {} if a.fill is None else {"fillvalue": np.array(a.fill, dtype=dtype)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.h5"
        for mode, bound in cases:
            hi, lo = struct.unpack(">II", struct.pack(">d", bound))
            with h5py.File(path, "w") as f:
                d = f.create_dataset("x", data=x, chunks=chunks, compression=32900,
                                     compression_opts=(1, mode, hi, lo), **kw)
                sizes = [d.id.get_chunk_info(i).size for i in range(d.id.get_num_chunks())]
            with h5py.File(path, "r") as f:
                y = f["x"][...]
            worst = 0.0
            for start in itertools.product(*[range(0, n, c) for n, c in zip(shape, chunks)]):
                sl = tuple(slice(s, s + c) for s, c in zip(start, chunks))
                u, v = x[sl].astype(np.float64), y[sl].astype(np.float64)
                fin = np.isfinite(u)
                r = np.ptp(u[fin])
                if not r > 0:
                    continue
                if mode == 1:
                    e = np.abs(u - v)[fin].max() / (bound * r)
                else:
                    t = bound if mode == 2 else 10 ** (-bound / 20)
                    e = np.sqrt(np.mean((u - v)[fin] ** 2)) / r / t
                worst = max(worst, e)
            name = {1: "rel", 2: "nrmse", 3: "psnr"}[mode]
            print(f"{name} {bound:g}: {sum(sizes)} bytes, worst chunk {worst:.4f}, chunks {sizes}")


main()
