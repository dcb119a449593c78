#!/usr/bin/env python3
"""Peak resident-set growth of one h5py write and of one h5py read of one chunk through the
plugin, each in a fresh process (Linux: VmHWM of /proc/self/status, reset through
/proc/self/clear_refs just before the call): the measurement of issue 29 and
docs/RELIABILITY.md, "Memory".

    cargo build --release -p h5resid
    HDF5_PLUGIN_PATH=target/release python3 scripts/rss_h5.py --shape 1,2048,2048 --enhancer 1

--enhancer E is cd word 6's mode (0 off .. 4 relaxed-cross), forced (`E | 1 << 16`, so the
enhancer is kept whenever it lowers the error); --predictor and --coder are cd words 5 and 4.
Prints one JSON line: the chunk's bytes, the stored bytes, and the growth of each call.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

FILTER_ID = 32900


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def field(shape):
    """A smooth field with fine structure and a little noise (the memory tests' field)."""
    import numpy as np

    h, w = shape[-2], shape[-1]
    lead = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(7)
    out = np.empty((lead, h, w), dtype=np.float32)
    for z in range(lead):
        v = (np.sin(x * 0.011) * np.cos(y * 0.007) * 30.0
             + np.sin(0.005 * (x + y) + 0.3 * z) * 10.0
             + 0.3 * np.sin(x * 0.09) * np.sin(y * 0.08)
             + rng.random((h, w)) * 0.4)
        out[z] = v
    return out.reshape(shape)


def child(args):
    import h5py

    shape = tuple(int(s) for s in args.shape.split(","))
    if args.phase == "write":
        data = field(shape)
        hi, lo = struct.unpack(">II", struct.pack(">d", args.rel))
        opts = (1, 1, hi, lo, args.coder, args.predictor, args.enhancer | 1 << 16 if args.enhancer else 0, 0)
        f = h5py.File(args.file, "w")
        base = status("VmRSS")
        reset_hwm()
        f.create_dataset("x", data=data, chunks=shape, compression=FILTER_ID,
                         compression_opts=opts)
        f.close()
    else:
        f = h5py.File(args.file, "r")
        ds = f["x"]
        base = status("VmRSS")
        reset_hwm()
        data = ds[...]
        f.close()
    peak = status("VmHWM")
    print(json.dumps({"phase": args.phase, "chunk_bytes": data.nbytes, "growth": peak - base}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1,2048,2048")
    p.add_argument("--rel", type=float, default=1e-2)
    p.add_argument("--enhancer", type=int, default=1)
    p.add_argument("--predictor", type=int, default=0)
    p.add_argument("--coder", type=int, default=0)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        return child(args)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rss.h5")
        out = {}
        for phase in ("write", "read"):
            r = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--phase", phase,
                                "--file", path], capture_output=True, text=True, check=True)
            line = json.loads(r.stdout.strip().splitlines()[-1])
            out["chunk_bytes"] = line["chunk_bytes"]
            out[phase] = line["growth"]
        out["stored_bytes"] = os.path.getsize(path)
    c = out["chunk_bytes"]
    out["write_x"] = round(out["write"] / c, 2)
    out["read_x"] = round(out["read"] / c, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
