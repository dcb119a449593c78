#!/usr/bin/env python3
"""NeurLZ benchmark: resid base vs resid + NeurLZ (strict, relaxed) vs SZ3 and ZFP, through h5py.

Each field is one dataset with one chunk holding the whole field. resid runs in rel mode
(bound r * (max - min) of the chunk); SZ3 gets the same absolute bound through
hdf5plugin.SZ3(absolute=eb). Cross-field group: the listed fields of one grid, each scaled to
[0, 1] (so one relative bound means the same for every field), stacked along a new leading
dimension into one chunk; the cross-field rows use enhancer modes 3 / 4. The default groups
are the cross-field groups of ../shared/data/MANIFEST.tsv: ncep_climo, eraint and wrf.

Reported: bits/value (storage size x 8 / values), PSNR (20 log10(range / RMSE) over the whole
chunk), max |error| / eb, write and read seconds (one run each, timing includes training);
then the Bjontegaard delta rate (scripts/bench's cubic fit of log rate vs PSNR) of every codec
against SZ3 and of each enhancer mode against the base codec, over the bounds given, and an
RD plot per field (--plots DIR); then, for the single fields, quality-target mode: a PSNR
target with the base codec alone and with each enhancer mode (--psnr).

    HDF5_PLUGIN_PATH=target/release python3 scripts/neurlz_bench.py [--rel 3e-2,1e-2,3e-3,1e-3] \
        [--fields a.f32,b.f32] [--groups "a.f32,b.f32;c.f32,d.f32"] [--budget 0] [--plots DIR]
"""

import argparse
import importlib.machinery
import importlib.util
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
GROUPS = [
    [f"ncep_climo_{v}_17x64x128.f32" for v in ("T", "U", "V", "Z3")],
    [f"eraint_{v}_2x3x241x480.f32" for v in ("u", "v", "z")],
    [f"wrf_{v}_4x14x48x48.f32" for v in ("T", "P", "QVAPOR", "QCLOUD", "QRAIN")],
]


def peer_tools():
    """scripts/bench, loaded as a module, for its BD-rate and RD plot."""
    loader = importlib.machinery.SourceFileLoader("bench", str(REPO / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader("bench", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def words(bound, enhancer, budget, mode=1):
    """cd_values: mode 1 = relative bound, 3 = PSNR target (dB)."""
    hi, lo = struct.unpack(">II", struct.pack(">d", bound))
    return (1, mode, hi, lo, 0, 0, enhancer | budget << 8)


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
    """Prints one table row per (bound, codec); returns {codec: [(bits/value, PSNR)]}."""
    rng = float(data.max() - data.min())
    rd = {}
    for rel in rels:
        eb = rel * rng
        for label, enh in rows:
            if label == "SZ3":
                kw = dict(**hdf5plugin.SZ3(absolute=eb))
            elif label == "ZFP":
                kw = dict(**hdf5plugin.Zfp(accuracy=eb))
            else:
                kw = dict(compression=FILTER_ID, compression_opts=words(rel, enh, budget))
            bpv, psnr, me, wt, rt, back = measure(data, kw, eb)
            rd.setdefault(label, []).append((bpv, psnr))
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
    return rd


def quality_table(name, data, targets, budget):
    """Quality-target mode: the same PSNR target with the base codec alone and with the
    enhancer (which may loosen the base grid); bits saved at that target."""
    for t in targets:
        base = None
        for label, enh in (("resid", 0), ("resid+NeurLZ strict", 1), ("resid+NeurLZ relaxed", 2)):
            kw = dict(compression=FILTER_ID, compression_opts=words(t, enh, budget, mode=3))
            bpv, psnr, _, wt, rt, _ = measure(data, kw, 1.0)
            base = base or bpv
            print(f"| {name} | {t:g} | {label} | {bpv:.4f} | {psnr:.2f} | "
                  f"{(bpv / base - 1) * 100:+.1f}% | {wt:.2f} | {rt:.3f} |", flush=True)


def bd_table(results, tools):
    """BD-rate of every codec against SZ3, and of each enhancer mode against the base codec."""
    enh = list(dict.fromkeys(c for rd in results.values() for c in rd if c.startswith("resid+")))
    cols = [(c, "SZ3") for c in ["resid"] + enh + ["ZFP"]] + [(c, "resid") for c in enh]
    print()
    print("| field | " + " | ".join(f"{c} vs {a}" for c, a in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    sums = {}
    for name, rd in results.items():
        cells = []
        for c, a in cols:
            v = tools.bd_rate(rd[a], rd[c]) if c in rd and a in rd else None
            if v is not None:
                sums.setdefault((c, a), []).append(v)
            cells.append("-" if v is None else f"{v:+.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    avg = [f"{sum(sums[k]) / len(sums[k]):+.1f} ({len(sums[k])})" if k in sums else "-"
           for k in cols]
    print("| **average** | " + " | ".join(avg) + " |")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rel", default="3e-2,1e-2,3e-3,1e-3")
    ap.add_argument("--fields", default="wmag_turbulence_vorticity_magnitude_91x91x91.f32,"
                    "vorticity3d_41x128x128.f32,cesm_camfv_TS_10x192x288.f32")
    ap.add_argument("--groups", default=";".join(",".join(g) for g in GROUPS),
                    help="groups separated by ';', fields of a group by ','")
    ap.add_argument("--budget", type=int, default=0)
    ap.add_argument("--plots", default=None, help="directory for one RD plot per field")
    ap.add_argument("--psnr", default="40,50,60",
                    help="PSNR targets (dB) for the quality-target table of the single fields; "
                    "empty to skip")
    a = ap.parse_args()
    if not os.environ.get("HDF5_PLUGIN_PATH"):
        sys.exit("set HDF5_PLUGIN_PATH to the directory of libh5resid.so (target/release)")
    rels = [float(r) for r in a.rel.split(",")]
    print("| field | rel | codec | bits/value | PSNR dB | max err / eb | write s | read s |")
    print("|---|---|---|---|---|---|---|---|")
    tools = peer_tools()
    results = {}
    rows = [("resid", 0), ("resid+NeurLZ strict", 1), ("resid+NeurLZ relaxed", 2), ("SZ3", None),
            ("ZFP", None)]
    for f in filter(None, a.fields.split(",")):
        data = load(f)
        name = f.rsplit("_", 1)[0]
        results[name] = run(name, data, rels, rows, a.budget)
    rows = rows[:3] + [("resid+NeurLZ strict cross", 3), ("resid+NeurLZ relaxed cross", 4),
                       ("SZ3", None), ("ZFP", None)]
    for group in filter(None, a.groups.split(";")):
        files = group.split(",")
        # Each field as at most 3D (leading dimensions merged) so the stack is at most 4D,
        # the most SZ3 accepts.
        fields = [v.reshape((-1,) + v.shape[-2:]) if v.ndim > 3 else v
                  for v in (load(f) for f in files)]
        stack = np.stack([(v - v.min()) / (v.max() - v.min()) for v in fields]).astype("<f4")
        prefix = os.path.commonprefix(files).rstrip("_")
        names = "+".join(f[len(prefix):].strip("_").rsplit("_", 1)[0] for f in files)
        name = f"{prefix}[{names}] stacked {stack.shape}"
        results[name] = run(name, stack, rels, rows, a.budget, per_field=True)
    bd_table(results, tools)
    targets = [float(t) for t in a.psnr.split(",") if t]
    if targets:
        print()
        print("| field | PSNR target dB | codec | bits/value | PSNR dB | bits vs base | "
              "write s | read s |")
        print("|---|---|---|---|---|---|---|---|")
        for f in filter(None, a.fields.split(",")):
            quality_table(f.rsplit("_", 1)[0], load(f), targets, a.budget)
    if a.plots:
        # ZFP's accuracy mode lands at 4-20x the bits of the others: it would flatten the plot.
        for name, rd in ((n, {c: v for c, v in rd.items() if c != "ZFP"})
                         for n, rd in results.items()):
            short = "neurlz_" + re.sub(r"[^A-Za-z0-9_+]+", "_", name.split(" ")[0]).strip("_")
            tools.plot_field(short, "NeurLZ benchmark, one chunk per field",
                             [dict(codec=c, bpv=b, psnr=p)
                              for c, pts in rd.items() for b, p in pts],
                             list(rd), Path(a.plots))


if __name__ == "__main__":
    main()
