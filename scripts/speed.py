#!/usr/bin/env python3
"""Speed table: resid's modes beside the SZ3 release (pysz), hdf5plugin's SZ3 and ZFP and
HDF5 with no filter, one thread and all threads, whole-field and 16x64x64 chunks.

Run through `scripts/bench --speed` (same field selection: grade-A fields of the data
directory, or --fields / --all / --quick). Every codec gets the same absolute bound
eb = rel * (max - min) per field, rel 1e-3 and 1e-4 by default. Through HDF5 (resid, SZ3,
ZFP, no filter) a dataset is written to and read from an in-memory file with the chunk cache
off (h5py, `driver="core"`), timing only the write and read calls; the SZ3 release is
called directly on the whole field (`pysz`, absolute bound), as a user calls it. Best of
--repeats. Fields of rank > 3 are reshaped to 3-D (leading dims merged); 16x64x64 chunks
are clipped to the field's dims, and a rank-2 field takes their last two (64x64), as in
scripts/bench (before 2026-12-07, 23:40 UTC, a rank-2 field took 16x64).

Each thread setting runs in a child process of its own: one thread is RAYON_NUM_THREADS=1
and OMP_NUM_THREADS=1 (pysz single-threaded); all threads leaves both unset (pysz with
OpenMP on). The table gives geometric means of MB/s (raw bytes per second) over fields and
bounds, the same means as multiples of the SZ3 release's whole-field speed in the same run,
and mean bits/value.
"""

import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

RESID_ID = 32900
CHUNKED = (16, 64, 64)

# (name, cd word 4 coder, cd word 5 predictor): resid's modes.
RESID_MODES = (
    ("resid default", 0, 0),
    ("resid rans (word 4 = 3)", 3, 0),
    ("resid rans + Lorenzo (word 4 = 3, word 5 = 1)", 3, 1),
    ("resid lz4 (word 4 = 1)", 1, 0),
    ("resid packed (word 4 = 2)", 2, 0),
    ("resid packed + Lorenzo (word 4 = 2, word 5 = 1)", 2, 1),
    ("resid fast: grouped + Lorenzo (word 4 = 4, word 5 = 1)", 4, 1),
)
PEERS = ("SZ3 (hdf5plugin)", "ZFP (hdf5plugin)", "no filter")
RELEASE = "SZ3 release (pysz)"


def kwargs(codec, eb):
    import hdf5plugin
    hi, lo = struct.unpack(">II", struct.pack(">d", eb))
    for name, coder, predictor in RESID_MODES:
        if codec == name:
            return {"compression": RESID_ID,
                    "compression_opts": (1, 0, hi, lo, coder, predictor)}
    if codec == "SZ3 (hdf5plugin)":
        return dict(hdf5plugin.SZ3(absolute=eb))
    if codec == "ZFP (hdf5plugin)":
        return dict(hdf5plugin.Zfp(accuracy=eb))
    if codec == "no filter":
        return {}
    raise KeyError(codec)


def through_hdf5(arr, codec, eb, chunks, repeats):
    """(stored bytes, best write s, best read s) through an in-memory HDF5 file."""
    import h5py
    import numpy as np
    best_w = best_r = math.inf
    nbytes = 0
    for k in range(repeats):
        with h5py.File(f"speed-{os.getpid()}-{k}.h5", "w", driver="core",
                       backing_store=False, rdcc_nbytes=0) as f:
            ds = f.create_dataset("x", shape=arr.shape, dtype=arr.dtype, chunks=chunks,
                                  **kwargs(codec, eb))
            t0 = time.perf_counter()
            ds[...] = arr
            f.flush()
            best_w = min(best_w, time.perf_counter() - t0)
            nbytes = ds.id.get_storage_size()
            t0 = time.perf_counter()
            out = ds[()]
            best_r = min(best_r, time.perf_counter() - t0)
    if codec != "no filter":
        err = abs(out.astype("f8") - arr.astype("f8"))
        fin = err[~np.isnan(err)]
        if codec.startswith("resid") and fin.size and fin.max() > eb:
            raise RuntimeError(f"{codec} broke its bound: {fin.max() / eb:.6g} x eb")
    return nbytes, best_w, best_r


def release(arr, eb, repeats, threads):
    """(bytes, best compress s, best decompress s) of the SZ3 release on the whole field."""
    import pysz
    c = pysz.szConfig()
    c.errorBoundMode = pysz.szErrorBoundMode.ABS
    c.absErrorBound = float(eb)
    c.openmp = threads != 1
    best_w = best_r = math.inf
    comp = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        comp, _ = pysz.sz.compress(arr, c)
        best_w = min(best_w, time.perf_counter() - t0)
        t0 = time.perf_counter()
        pysz.sz.decompress(comp, arr.dtype, arr.shape)
        best_r = min(best_r, time.perf_counter() - t0)
    return comp.nbytes, best_w, best_r


def child(spec):
    """Measures every codec on the fields of `spec` in this process; prints JSON rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    rows = []
    for path in spec["fields"]:
        name, arr = load(Path(path))
        fin = arr[np.isfinite(arr)]
        vrange = float(fin.max() - fin.min())
        for rel in spec["rels"]:
            eb = rel * vrange
            raw = arr.nbytes
            nb, tw, tr = release(arr, eb, spec["repeats"], spec["threads"])
            rows.append(dict(field=name, rel=rel, codec=RELEASE, layout="whole field",
                             bpv=8 * nb / arr.size, write=raw / 1e6 / tw, read=raw / 1e6 / tr))
            for layout, chunks in (("whole field", arr.shape),
                                   ("16x64x64 chunks",
                                    tuple(min(c, d) for c, d in
                                          zip(CHUNKED[-arr.ndim:], arr.shape)))):
                for codec in [m[0] for m in RESID_MODES] + list(PEERS):
                    try:
                        nb, tw, tr = through_hdf5(arr, codec, eb, chunks, spec["repeats"])
                    except Exception as e:  # a peer failed: report it, go on
                        rows.append(dict(field=name, rel=rel, codec=codec, layout=layout,
                                         failed=" ".join(str(e).split())[:120]))
                        continue
                    rows.append(dict(field=name, rel=rel, codec=codec, layout=layout,
                                     bpv=8 * nb / arr.size, write=raw / 1e6 / tw,
                                     read=raw / 1e6 / tr))
    print(json.dumps(rows))


def load(path):
    import numpy as np
    stem, ext = path.name.rsplit(".", 1)
    dims = tuple(int(d) for d in stem.rsplit("_", 1)[1].split("x"))
    arr = np.fromfile(path, dtype="<f4" if ext == "f32" else "<f8").reshape(dims)
    if arr.ndim > 3:
        arr = arr.reshape((math.prod(dims[:-2]),) + dims[-2:])
    return stem.rsplit("_", 1)[0], np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("=")))


def gm(v):
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else float("nan")


def table(rows, threads_label):
    """Markdown rows of one thread setting."""
    ref = [r for r in rows if r["codec"] == RELEASE]
    ref_w, ref_r = gm([r["write"] for r in ref]), gm([r["read"] for r in ref])
    out = [f"### {threads_label}", "",
           f"{RELEASE}, whole field: write {ref_w:.1f} MB/s, read {ref_r:.1f} MB/s "
           f"(geometric means; the x columns divide by these).", "",
           "| layout | codec | write MB/s | read MB/s | write x SZ3 release | "
           "read x SZ3 release | bits/value | runs |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    codecs = [RELEASE] + [m[0] for m in RESID_MODES] + list(PEERS)
    for layout in ("whole field", "16x64x64 chunks"):
        for codec in codecs:
            sel = [r for r in rows if r["codec"] == codec and r["layout"] == layout]
            ok = [r for r in sel if "write" in r]
            if not sel:
                continue
            if not ok:
                out.append(f"| {layout} | {codec} | failed: {sel[0]['failed']} | | | | | 0 |")
                continue
            w, rd = gm([r["write"] for r in ok]), gm([r["read"] for r in ok])
            bpv = sum(r["bpv"] for r in ok) / len(ok)
            out.append(f"| {layout} | {codec} | {w:.1f} | {rd:.1f} | {w / ref_w:.2f} | "
                       f"{rd / ref_r:.2f} | {bpv:.3f} | {len(ok)}"
                       + (f" ({len(sel) - len(ok)} failed)" if len(ok) < len(sel) else "")
                       + " |")
    return out + [""]


def run(fields, rels, repeats, plugin_dir):
    """Runs both thread settings in child processes; returns the Markdown section."""
    report = ["## Speed", "",
              f"Fields: {', '.join(Path(f).name for f in fields)}; bounds rel "
              f"{', '.join(f'{r:g}' for r in rels)} (absolute eb = rel x range, the same for "
              f"every codec); best of {repeats}. CPU: {cpu_name()}, {os.cpu_count()} "
              "logical cores.", ""]
    for threads, label in ((1, "One thread (RAYON_NUM_THREADS=1, OMP_NUM_THREADS=1)"),
                           (0, f"All threads ({os.cpu_count()})")):
        env = dict(os.environ)
        env["HDF5_PLUGIN_PATH"] = str(plugin_dir)
        # numpy's BLAS threads spin after the harness's error check: keep them off the cores.
        env["OPENBLAS_NUM_THREADS"] = "1"
        for k in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS"):
            env.pop(k, None)
            if threads == 1:
                env[k] = "1"
        spec = dict(fields=[str(f) for f in fields], rels=list(rels), repeats=repeats,
                    threads=threads)
        print(f"speed: {label} ...", file=sys.stderr)
        p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"speed child failed:\n{p.stderr[-2000:]}")
        rows = json.loads(p.stdout.strip().splitlines()[-1])
        report += table(rows, label)
    return report


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        print("run it as: scripts/bench --speed [--fields ...] [--rels ...]", file=sys.stderr)
        sys.exit(2)
