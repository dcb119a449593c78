#!/usr/bin/env python3
"""Write and read speed of a float32 dataset through the filter path (plain h5py, one chunk at
a time) and the parallel path (resid_h5.write / resid_h5.read, whole chunks on a thread pool),
for several chunk shapes and thread counts. Prints a Markdown table (MB/s of raw float32 data,
best of --repeat runs, with the CPU seconds that run took: the parallel path's CPU time is the
filter path's when it adds no work, and its wall time drops only where cores are free) and
checks that both paths store the same bytes.

    cargo build --release -p h5resid
    python3 scripts/parallel_bench.py                      # 128x256x256, chunks 16x64x64 and 64^3
    python3 scripts/parallel_bench.py --shape 64 128 128 --threads 1 2 4 --repeat 5
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import resid_h5  # noqa: E402


def field(shape, seed=0):
    """A smooth field with some noise: what simulation output looks like to the codec."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 4, n, dtype="f4") for n in shape], indexing="ij")
    x = sum(np.sin(g * (1.3 + i) + i) for i, g in enumerate(grids)) * 15 + 280
    return (x + rng.normal(0, 0.02, shape).astype("f4")).astype("f4")


def best(fn, repeat):
    """(wall seconds, CPU seconds of this process) of the fastest of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - t, time.process_time() - c))
    return min(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs="+", default=[128, 256, 256])
    ap.add_argument("--chunks", nargs="+", default=["16x64x64", "64x64x64"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rel", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    shape = tuple(args.shape)
    a = field(shape)
    mb = a.nbytes / 1e6
    kw = resid_h5.Resid(rel=args.rel)
    print(f"float32 {'x'.join(map(str, shape))} ({mb:.0f} MB), rel {args.rel:g}, best of "
          f"{args.repeat}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start\n")
    print("| chunks | path | threads | write MB/s (CPU s) | read MB/s (CPU s) | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for chunk_text in args.chunks:
            chunks = tuple(int(c) for c in chunk_text.split("x"))
            ref = Path(tmp) / "filter.h5"

            def filter_write():
                with h5py.File(ref, "w") as f:
                    f.create_dataset("x", data=a, chunks=chunks, **kw)

            def filter_read():
                with h5py.File(ref, "r") as f:
                    return f["x"][...]

            (wt, wc), (rt, rc) = best(filter_write, args.repeat), best(filter_read, args.repeat)
            with h5py.File(ref, "r") as f:
                stored = f["x"].id.get_storage_size()
                ref_chunks = [f["x"].id.read_direct_chunk(c.chunk_offset)[1]
                              for c in map(f["x"].id.get_chunk_info, range(f["x"].id.get_num_chunks()))]
            print(f"| {chunk_text} | filter (h5py) | 1 | {mb / wt:.1f} ({wc:.2f}) | {mb / rt:.1f} ({rc:.2f}) "
                  f"| {a.nbytes / stored:.1f} |")
            for threads in args.threads:
                path = Path(tmp) / f"par{threads}.h5"

                def par_write():
                    with h5py.File(path, "w") as f:
                        d = f.create_dataset("x", shape=shape, dtype="f4", chunks=chunks, **kw)
                        resid_h5.write(d, a, threads=threads)

                def par_read():
                    with h5py.File(path, "r") as f:
                        return resid_h5.read(f["x"], threads=threads)

                (wt, wc), (rt, rc) = best(par_write, args.repeat), best(par_read, args.repeat)
                with h5py.File(path, "r") as f:
                    mine = [f["x"].id.read_direct_chunk(c.chunk_offset)[1]
                            for c in map(f["x"].id.get_chunk_info, range(f["x"].id.get_num_chunks()))]
                    assert mine == ref_chunks, "the parallel path stored other bytes than the filter"
                    assert np.array_equal(par_read(), filter_read())
                print(f"| {chunk_text} | resid_h5.write/read | {threads} | {mb / wt:.1f} ({wc:.2f}) "
                      f"| {mb / rt:.1f} ({rc:.2f}) | {a.nbytes / stored:.1f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
