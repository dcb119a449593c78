#!/usr/bin/env python3
"""NeurLZ benchmark: resid base vs resid + NeurLZ (strict, relaxed) vs SZ3, through h5py.

Each field is one dataset with one chunk holding the whole field. resid runs in rel mode
(bound r * (max - min) of the chunk); SZ3 gets the same absolute bound through
hdf5plugin.SZ3(absolute=eb). Cross-field group: the listed fields of one grid, each scaled to
[0, 1] (so one relative bound means the same for every field), stacked along a new leading
dimension into one chunk; the cross-field rows use enhancer modes 3 / 4.

Reported: bits/value (storage size x 8 / values), PSNR (20 log10(range / RMSE) over the whole
chunk), max |error| / eb, write and read seconds (one run each, timing includes training).

    HDF5_PLUGIN_PATH=target/release python3 scripts/neurlz_bench.py [--rel 1e-2,1e-3] \
        [--fields a.f32,b.f32] [--group T,U,V,Z3] [--budget 0]
"""

import argparse
import math
import os
import re
import struct
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

FILTER_ID = 32900
REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def words(rel, enhancer, budget):
    hi, lo = struct.unpack(">II", struct.pack(">d", rel))
    return (1, 1, hi, lo, 0, 0, enhancer | budget << 8)


def load(name):
    m = re.search(r"_(\d+(?:x\d+)*)\.(f32|f64)$", name)
    shape = tuple(int(d) for d in m.group(1).split("x"))
    dtype = "<f4" if m.group(2) == "f32" else "<f8"
    return np.fromfile(DATA / name, dtype=dtype).reshape(shape)


def measure(data, kw, eb):
    f = h5py.File("neurlz_bench.h5", "w", driver="core", backing_store=False,
                  rdcc_nbytes=0)
    t = time.perf_counter()
    d = f.create_dataset("x", data=data, chunks=data.shape, **kw)
    f.flush()
    wt = time.perf_counter() - t
    size = d.id.get_storage_size()
    t = time.perf_counter()
    back = d[...]
    rt = time.perf_counter() - t
    f.close()
    o, b = data.astype(np.float64), back.astype(np.float64)
    err = np.abs(o - b)
    rng = o.max() - o.min()
    rmse = math.sqrt(float(np.mean(err ** 2)))
    psnr = 20 * math.log10(rng / rmse) if rmse > 0 else float("inf")
    return size * 8 / data.size, psnr, err.max() / eb, wt, rt, back


def run(name, data, rels, rows, budget, per_field=None):
    rng = float(data.max() - data.min())
    for rel in rels:
        eb = rel * rng
        for label, enh in rows:
            if label == "SZ3":
                kw = dict(**hdf5plugin.SZ3(absolute=eb))
            else:
                kw = dict(compression=FILTER_ID, compression_opts=words(rel, enh, budget))
            bpv, psnr, me, wt, rt, back = measure(data, kw, eb)
            extra = ""
            if per_field:
                ps = []
                for k in range(data.shape[0]):
                    e = data[k].astype(np.float64) - back[k].astype(np.float64)
                    r = float(data[k].max() - data[k].min())
                    ps.append(20 * math.log10(r / math.sqrt(float(np.mean(e ** 2)))))
                extra = " " + "/".join(f"{p:.2f}" for p in ps)
            print(f"| {name} | {rel:g} | {label} | {bpv:.4f} | {psnr:.2f} | {me:.3f} | "
                  f"{wt:.2f} | {rt:.3f} |{extra}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rel", default="1e-2,1e-3")
    ap.add_argument("--fields", default="wmag_turbulence_vorticity_magnitude_91x91x91.f32,"
                    "vorticity3d_41x128x128.f32,cesm_camfv_TS_10x192x288.f32")
    ap.add_argument("--group", default="ncep_climo_T_17x64x128.f32,ncep_climo_U_17x64x128.f32,"
                    "ncep_climo_V_17x64x128.f32,ncep_climo_Z3_17x64x128.f32")
    ap.add_argument("--budget", type=int, default=0)
    a = ap.parse_args()
    if not os.environ.get("HDF5_PLUGIN_PATH"):
        sys.exit("set HDF5_PLUGIN_PATH to the directory of libh5resid.so (target/release)")
    rels = [float(r) for r in a.rel.split(",")]
    print("| field | rel | codec | bits/value | PSNR dB | max err / eb | write s | read s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [("resid", 0), ("resid+NeurLZ strict", 1), ("resid+NeurLZ relaxed", 2), ("SZ3", None)]
    for f in filter(None, a.fields.split(",")):
        data = load(f)
        run(f.rsplit("_", 1)[0], data, rels, rows, a.budget)
    if a.group:
        fields = [load(f) for f in a.group.split(",")]
        stack = np.stack([(v - v.min()) / (v.max() - v.min()) for v in fields]).astype("<f4")
        names = "+".join(f.split("_")[2] for f in a.group.split(","))
        rows = rows[:3] + [("resid+NeurLZ strict cross", 3), ("resid+NeurLZ relaxed cross", 4),
                           ("SZ3", None)]
        run(f"ncep_climo[{names}] stacked {stack.shape}", stack, rels, rows, a.budget,
            per_field=True)


if __name__ == "__main__":
    main()
