#!/usr/bin/env python3
"""Writes and reads one large float32 dataset (1 GiB by default) every way resid offers, beside
SZ3 and ZFP (hdf5plugin), and prints a Markdown table: MB/s of raw float32 data, with the CPU
seconds each run took (this process's, plus its children's for the command-line tool), the
ratio, and the speed-up of 2 threads over 1.

- filter: h5py through the HDF5 filter (one chunk at a time on one thread);
- resid_h5: `resid_h5.write` / `resid_h5.read` on 1 and 2 threads (whole chunks on a pool);
- CLI: `resid h5 compress` / `resid h5 decompress` with --threads 1 and 2, from and to a
  plain (contiguous, unfiltered) file, h5repack included;
- SZ3 and ZFP through the filter path of hdf5plugin, with the same absolute bound
  (rel x (max - min) of the whole field).

Every run is timed once (the whole benchmark takes about 15 minutes on 2 cores); the script
checks that the filter path, resid_h5 and the CLI store the same chunks, byte for byte.

    cargo build --release --workspace
    python3 scripts/cli_parallel_bench.py                       # 512x512x1024 (1 GiB)
    python3 scripts/cli_parallel_bench.py --shape 128 256 256   # a quick look (32 MiB)
"""

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import resid_h5  # noqa: E402

RESID = REPO / "target" / "release" / "resid"


def field(shape, seed=0, slab=32):
    """A smooth field with some noise (as scripts/parallel_bench.py's), built slab by slab so
    that only the result takes memory."""
    out = np.empty(shape, "f4")
    axes = [np.linspace(0, 4, n, dtype="f4") for n in shape]
    rest = sum(np.sin(g * (1.3 + i) + i)
               for i, g in enumerate(np.meshgrid(*axes[1:], indexing="ij"), start=1))
    for s in range(0, shape[0], slab):
        rng = np.random.default_rng([seed, s])
        z = np.sin(axes[0][s:s + slab] * 1.3).reshape((-1,) + (1,) * (len(shape) - 1))
        x = (z + rest) * 15 + 280
        out[s:s + slab] = x + rng.normal(0, 0.02, x.shape).astype("f4")
    return out


def timed(fn):
    """(wall seconds, CPU seconds of this process and its finished children, result)."""
    def cpu():
        own = time.process_time()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own + kids.ru_utime + kids.ru_stime
    t, c = time.perf_counter(), cpu()
    r = fn()
    return time.perf_counter() - t, cpu() - c, r


def chunk_digest(path, name="x"):
    """SHA-256 over every stored chunk (offset, filter mask, bytes), in chunk order."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        d = f[name].id
        for i in range(d.get_num_chunks()):
            off = d.get_chunk_info(i).chunk_offset
            mask, data = d.read_direct_chunk(off)
            h.update(repr((off, mask)).encode())
            h.update(data)
    return h.hexdigest()


def cli(*args):
    p = subprocess.run([str(RESID), "h5", *map(str, args), "--quiet", "--force"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"resid h5 {args[0]} failed:\n{p.stdout}{p.stderr}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs="+", default=[512, 512, 1024])
    ap.add_argument("--chunks", nargs="+", default=["64x64x64", "16x64x64"])
    ap.add_argument("--rel", type=float, default=1e-3)
    ap.add_argument("--no-peers", action="store_true", help="leave SZ3 and ZFP out")
    ap.add_argument("--dir", help="where the files go (default: a temporary directory)")
    args = ap.parse_args()
    if not RESID.is_file():
        sys.exit(f"{RESID} not found: cargo build --release --workspace")
    os.environ.setdefault("HDF5_PLUGIN_PATH", str(REPO / "target" / "release"))
    shape = tuple(args.shape)
    t0 = time.perf_counter()
    a = field(shape)
    eb = float(args.rel * (a.max() - a.min()))
    mb = a.nbytes / 1e6
    print(f"float32 {'x'.join(map(str, shape))} ({a.nbytes / 2**20:.0f} MiB, made in "
          f"{time.perf_counter() - t0:.0f} s), rel {args.rel:g} = abs {eb:.6g}, one run each, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start\n")
    print("| chunks | path | threads | write MB/s (CPU s) | read MB/s (CPU s) | ratio |")
    print("|---|---|---|---|---|---|")
    rows = {}

    def row(chunks, path, threads, w, r, stored):
        (wt, wc), (rt, rc) = w, r
        rows[(chunks, path, threads)] = (wt, rt)
        print(f"| {chunks} | {path} | {threads} | {mb / wt:.1f} ({wc:.1f}) | {mb / rt:.1f} ({rc:.1f}) "
              f"| {a.nbytes / stored:.1f} |", flush=True)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        src = tmp / "src.h5"
        with h5py.File(src, "w") as f:
            f.create_dataset("x", data=a)
        for chunk_text in args.chunks:
            chunks = tuple(int(c) for c in chunk_text.split("x"))
            run_resid(a, tmp, src, chunks, chunk_text, eb, row)
            if not args.no_peers:
                run_peers(a, tmp, chunks, chunk_text, eb, row)
    print("\nspeed-up, 2 threads over 1 (wall time):\n")
    for (chunks, path, threads), (wt, rt) in rows.items():
        if threads == 2 and (chunks, path, 1) in rows:
            w1, r1 = rows[(chunks, path, 1)]
            print(f"- {chunks}, {path}: write {w1 / wt:.2f}x, read {r1 / rt:.2f}x")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; "
          f"{time.perf_counter() - t0:.0f} s in all")


def run_resid(a, tmp, src, chunks, chunk_text, eb, row):
    kw = resid_h5.Resid(abs=eb)
    ref = tmp / "filter.h5"

    def write_filter():
        with h5py.File(ref, "w") as f:
            f.create_dataset("x", data=a, chunks=chunks, **kw)

    def read(path, threads=None):
        with h5py.File(path, "r") as f:
            return f["x"][...] if threads is None else resid_h5.read(f["x"], threads=threads)

    w = timed(write_filter)[:2]
    wt, wc, back = timed(lambda: read(ref))
    assert np.abs(back.astype("f8") - a).max() <= eb, "the filter path broke the bound"
    del back
    stored = ref.stat().st_size
    want = chunk_digest(ref)
    row(chunk_text, "filter (h5py)", 1, w, (wt, wc), stored)
    for threads in (1, 2):
        path = tmp / f"par{threads}.h5"

        def write_par():
            with h5py.File(path, "w") as f:
                d = f.create_dataset("x", shape=a.shape, dtype="f4", chunks=chunks, **kw)
                resid_h5.write(d, a, threads=threads)

        w = timed(write_par)[:2]
        r = timed(lambda: read(path, threads))[:2]
        assert chunk_digest(path) == want, "resid_h5.write stored other bytes than the filter"
        row(chunk_text, "resid_h5.write/read", threads, w, r, path.stat().st_size)
        path.unlink()
    for threads in (1, 2):
        out, back = tmp / f"cli{threads}.h5", tmp / f"back{threads}.h5"
        w = timed(lambda: cli("compress", src, out, "--abs", repr(eb), "--chunks", chunk_text,
                              "--threads", threads))[:2]
        r = timed(lambda: cli("decompress", out, back, "--threads", threads))[:2]
        assert chunk_digest(out) == want, "resid h5 compress stored other bytes than the filter"
        with h5py.File(back, "r") as f:
            assert np.abs(f["x"][...].astype("f8") - a).max() <= eb, "the CLI broke the bound"
        row(chunk_text, "resid h5 compress/decompress", threads, w, r, out.stat().st_size)
        out.unlink()
        back.unlink()
    ref.unlink()


def run_peers(a, tmp, chunks, chunk_text, eb, row):
    import hdf5plugin

    for name, kw in [("SZ3 (hdf5plugin)", hdf5plugin.SZ3(absolute=eb)),
                     ("ZFP (hdf5plugin)", hdf5plugin.Zfp(accuracy=eb))]:
        path = tmp / "peer.h5"

        def write():
            with h5py.File(path, "w") as f:
                f.create_dataset("x", data=a, chunks=chunks, **kw)

        def read():
            with h5py.File(path, "r") as f:
                return f["x"][...]

        w = timed(write)[:2]
        rt, rc, back = timed(read)
        err = np.abs(back.astype("f8") - a).max()
        del back
        row(chunk_text, name + ("" if err <= eb else f", max error {err:.3g} > bound"), 1, w,
            (rt, rc), path.stat().st_size)
        path.unlink()


if __name__ == "__main__":
    main()
