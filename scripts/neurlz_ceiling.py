#!/usr/bin/env python3
"""How much of a codec's reconstruction error is predictable from the reconstruction: the
ceiling of an error-predicting enhancer such as NeurLZ.

For each field and relative bound, resid and SZ3 (hdf5plugin, same absolute bound) compress
the field through h5py; the script fits, by least squares, the error X - X' from the 27 values
of X' around each point (3x3x3, differences to the centre) and prints the share of the error
variance that filter explains, with the error's RMS in units of the bound (a uniform error
gives 0.577) and its lag-1 correlation along the fastest axis. A share of s caps a linear
enhancer's gain at -10 log10(1 - s) dB; the CNN is nonlinear, but on white error it has
nothing to learn either.

    HDF5_PLUGIN_PATH=target/release python3 scripts/neurlz_ceiling.py [--rel 1e-2,1e-3] [FIELD.f32 ...]

Needs ../shared/data (not in a user's clone); exits with a message when it is absent.
"""

import argparse
import math
import struct
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FIELDS = ["wmag_turbulence_vorticity_magnitude_91x91x91.f32", "vorticity3d_41x128x128.f32",
          "cesm_camfv_TS_10x192x288.f32"]


def resid_words(rel):
    hi, lo = struct.unpack(">II", struct.pack(">d", rel))
    return (1, 1, hi, lo)


def roundtrip(x, kw):
    f = h5py.File("ceiling.h5", "w", driver="core", backing_store=False, rdcc_nbytes=0)
    d = f.create_dataset("x", data=x, chunks=x.shape, **kw)
    f.flush()
    bits = d.id.get_storage_size() * 8 / x.size
    y = d[...]
    f.close()
    return y, bits


def explained(x, y, eb):
    e = (x.astype(np.float64) - y) / eb
    r = y.astype(np.float64) / eb
    n0, n1, n2 = r.shape
    c = r[1:-1, 1:-1, 1:-1]
    feats = [(r[1 + a:n0 - 1 + a, 1 + b:n1 - 1 + b, 1 + d:n2 - 1 + d] - c).ravel()
             for a in (-1, 0, 1) for b in (-1, 0, 1) for d in (-1, 0, 1)]
    A = np.stack(feats + [np.ones(c.size)], 1)
    t = e[1:-1, 1:-1, 1:-1].ravel()
    coef, *_ = np.linalg.lstsq(A, t, rcond=None)
    share = 1 - (t - A @ coef).var() / t.var()
    lag1 = np.corrcoef(e[:, :, 1:].ravel(), e[:, :, :-1].ravel())[0, 1]
    return share, math.sqrt(float(np.mean(e ** 2))), lag1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rel", default="1e-2,1e-3")
    ap.add_argument("fields", nargs="*", default=FIELDS)
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: this script needs the shared data set")
    print("| field | rel | codec | bits/value | error RMS / eb | lag-1 corr | explained | "
          "linear ceiling dB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.fields:
        shape = tuple(int(v) for v in name.rsplit("_", 1)[1].split(".")[0].split("x"))
        x = np.fromfile(DATA / name, dtype="<f4").reshape(shape)
        x = x.reshape((-1,) + shape[-2:]) if len(shape) != 3 else x
        rng = float(x.max() - x.min())
        for rel in (float(r) for r in a.rel.split(",")):
            eb = rel * rng
            for label, kw in (("resid", dict(compression=32900, compression_opts=resid_words(rel))),
                              ("SZ3", dict(**hdf5plugin.SZ3(absolute=eb)))):
                y, bits = roundtrip(x, kw)
                share, rms, lag1 = explained(x, y, eb)
                print(f"| {name.rsplit('_', 1)[0]} | {rel:g} | {label} | {bits:.3f} | {rms:.3f} | "
                      f"{lag1:+.3f} | {share * 100:.1f}% | {-10 * math.log10(1 - share):.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
