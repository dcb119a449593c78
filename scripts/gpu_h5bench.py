#!/usr/bin/env python3
"""Whole filter through h5py on the GPU machine: write and read a field with the resid plugin,
CPU backend beside the CUDA backend (RESID_BACKEND), same cd_values. Checks that both files
hold the same compressed bytes per chunk and decode to the same values. Prints a markdown table.

Usage: HDF5_PLUGIN_PATH=<dir with libh5resid.so> gpu_h5bench.py [side] [reps]"""
import os
import struct
import subprocess
import sys
import time

import numpy as np

FILTER = 32900


def cd_values(bound, mode=1, coder=0, predictor=1):
    hi, lo = struct.unpack(">II", struct.pack(">d", bound))
    return (1, mode, hi, lo, coder, predictor, 0, 0)


CHILD = r"""
import sys, time, json, h5py, numpy as np
path, side, coder, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cd = None if sys.argv[5] == "none" else tuple(int(v) for v in sys.argv[5].split(","))
filt = {} if cd is None else {"compression": 32900, "compression_opts": cd}
z, y, x = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32),
                      np.arange(side, dtype=np.float32), indexing="ij")
data = (np.sin(x * 0.02) * 3 + np.cos(y * 0.015) * 2 + z * 0.01).astype(np.float32)
del x, y, z
chunk = (min(side, 128), side, side)
w, r = [], []
for _ in range(reps):
    t = time.perf_counter()
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=data, chunks=chunk, **filt)
    w.append(time.perf_counter() - t)
    t = time.perf_counter()
    with h5py.File(path, "r") as f:
        back = f["v"][...]
    r.append(time.perf_counter() - t)
with h5py.File(path, "r") as f:
    ds = f["v"]
    chunks = [ds.id.read_direct_chunk(ds.id.get_chunk_info(i).chunk_offset)[1]
              for i in range(ds.id.get_num_chunks())]
import hashlib
h = hashlib.sha256(b"".join(chunks)).hexdigest()
err = float(np.max(np.abs(back.astype(np.float64) - data)))
print(json.dumps({"write_s": min(w), "read_s": min(r), "bytes": sum(len(c) for c in chunks),
                  "raw": data.nbytes, "sha": h, "maxerr": err,
                  "back_sha": hashlib.sha256(back.tobytes()).hexdigest()}))
"""


def main():
    side = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    out = os.environ.get("TMPDIR", "/tmp")
    rows = []
    import json
    for coder, cname in [(0, "range"), (1, "lz4"), (2, "packed")]:
        res = {}
        for be in ["cpu", "cuda"]:
            env = dict(os.environ, RESID_BACKEND=be)
            cd = ",".join(str(v) for v in cd_values(1e-4, coder=coder))
            p = subprocess.run([sys.executable, "-c", CHILD, f"{out}/resid_{be}.h5", str(side), str(coder),
                                str(reps), cd], env=env, capture_output=True, text=True)
            if p.returncode != 0:
                print(p.stdout, p.stderr, file=sys.stderr)
                sys.exit(1)
            res[be] = json.loads(p.stdout.strip().splitlines()[-1])
        same = res["cpu"]["sha"] == res["cuda"]["sha"] and res["cpu"]["back_sha"] == res["cuda"]["back_sha"]
        for be in ["cpu", "cuda"]:
            r = res[be]
            mb = r["raw"] / 1e6
            rows.append(f"| {cname} | {be} | {r['raw'] / r['bytes']:.2f} | {mb / r['write_s']:.0f} | "
                        f"{mb / r['read_s']:.0f} | {r['maxerr']:.2e} | {'yes' if same else 'NO'} |")
        if not same:
            print("\n".join(rows))
            print(f"MISMATCH between CPU and CUDA backends for coder {cname}", file=sys.stderr)
            sys.exit(1)
    # HDF5's own chunked I/O with no filter: the ceiling for any filter.
    p = subprocess.run([sys.executable, "-c", CHILD, f"{out}/resid_none.h5", str(side), "0", str(reps), "none"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr, file=sys.stderr)
        sys.exit(1)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    mb = r["raw"] / 1e6
    rows.append(f"| none (no filter) | - | {r['raw'] / r['bytes']:.2f} | {mb / r['write_s']:.0f} | "
                f"{mb / r['read_s']:.0f} | {r['maxerr']:.2e} | - |")
    print(f"h5py write/read of a {side}^3 f32 field (chunks of 128x{side}x{side}), rel 1e-4, Lorenzo, "
          f"best of {reps}; MB/s of raw data\n")
    print("| coder | backend | ratio | write MB/s | read MB/s | max error | same bytes as CPU |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
