#!/usr/bin/env python3
"""Writes seeded synthetic fields that widen the benchmark beyond the real fields it was
tuned on: Gaussian random fields of several spectral slopes, a log-normal density, fronts,
a precipitation-like field that is mostly zero, plane waves, a stratified atmosphere, a
smooth field under white noise, a 2-D vorticity-like slice, a float64 field and a 4-D time
series. Each is a raw little-endian file named NAME_<d0>x..x<dn>.f32|f64, as the benchmark
reads them, with a MANIFEST.tsv row (grade "G", generated) and the seed it came from.

    scripts/gen_fields.py --out /tmp/gen                   # about 12 MB per field, 12 fields
    scripts/gen_fields.py --out /tmp/gen --scale 0.5       # smaller (each dim halved)
    scripts/bench --data /tmp/gen --all --rels 1e-3,1e-4
    scripts/bench --speed --data /tmp/gen --all

The same seed and scale give the same bytes on any machine with the same numpy major
version (numpy's `default_rng` streams are stable within it).
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

HEADER = ("file\tshape_C_order(last=fastest)\tdtype\tsource_repo\tsource_path\tsource_commit\t"
          "physical_quantity\tvalue_range\tsmoothness\tnotes\tgrade\tcross_field_group")


def grf(rng, shape, slope):
    """A zero-mean, unit-variance Gaussian random field whose power spectrum falls as
    |k|^-slope (isotropic, periodic)."""
    noise = rng.standard_normal(shape)
    f = np.fft.rfftn(noise)
    ks = np.meshgrid(*[np.fft.fftfreq(n) if i < len(shape) - 1 else np.fft.rfftfreq(n)
                       for i, n in enumerate(shape)], indexing="ij")
    k = np.sqrt(sum(g * g for g in ks))
    k[(0,) * len(shape)] = np.inf
    f *= k ** (-slope / 2)
    out = np.fft.irfftn(f, s=shape, axes=list(range(len(shape))))
    return (out - out.mean()) / out.std()


def fields(rng, s):
    """(name, array, quantity, smoothness) of every field; `s` scales each dimension."""
    d = lambda n: max(8, int(round(n * s)))  # noqa: E731
    cube = (d(128), d(128), d(192))
    out = []
    out.append(("gen_grf_kolmogorov", 280 + 15 * grf(rng, cube, 11 / 3),
                "Gaussian random field, spectrum k^-11/3 (inertial-range turbulence)",
                "turbulent"))
    out.append(("gen_grf_smooth", 1000 + 50 * grf(rng, cube, 5.0),
                "Gaussian random field, spectrum k^-5", "very smooth"))
    out.append(("gen_grf_rough", 3 * grf(rng, cube, 2.0),
                "Gaussian random field, spectrum k^-2", "rough"))
    out.append(("gen_lognormal_density", np.exp(1.2 * grf(rng, cube, 3.0)),
                "log-normal density, exp of a k^-3 field (skewed, positive)", "smooth, skewed"))
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in cube], indexing="ij")
    fronts = np.tanh((x - 0.4 - 0.1 * np.sin(6 * y + 3 * z)) / 0.01)
    fronts += 0.5 * np.tanh((y - 0.7 + 0.05 * np.cos(9 * x)) / 0.005)
    out.append(("gen_fronts", 300 + 20 * fronts + 0.5 * grf(rng, cube, 3.0),
                "two sharp fronts (tanh, widths 1% and 0.5%) over a smooth background",
                "smooth with discontinuities"))
    rain = np.maximum(grf(rng, cube, 3.0) - 1.0, 0.0) ** 1.5 * 1e-4
    out.append(("gen_sparse_precipitation", rain,
                "precipitation-like: a k^-3 field above a threshold (about 84% zeros)",
                "sparse"))
    waves = np.zeros(cube)
    for _ in range(12):
        kv = rng.normal(0, 25, 3)
        waves += rng.uniform(0.2, 1.0) * np.sin(kv[0] * z + kv[1] * y + kv[2] * x
                                                + rng.uniform(0, 2 * np.pi))
    out.append(("gen_plane_waves", waves, "sum of 12 random plane waves", "oscillatory"))
    strat = 290 - 60 * z + 2 * grf(rng, cube, 4.0) * (1 - 0.8 * z)
    out.append(("gen_stratified_temperature", strat,
                "temperature-like: a vertical lapse rate plus perturbations that shrink with "
                "height", "smooth, trend along the slowest axis"))
    out.append(("gen_noisy_smooth", 50 * grf(rng, cube, 5.0) + 0.5 * rng.standard_normal(cube),
                "a k^-5 field under 1% white noise (instrument noise)", "noise-dominated"))
    out.append(("gen_vorticity_slice", 10 * grf(rng, (d(2048), d(1536)), 3.0),
                "2-D Gaussian random field, spectrum k^-3 (2-D turbulence vorticity)",
                "smooth 2-D"))
    out.append(("gen_grf_double", 1e5 + 1e3 * grf(rng, cube, 11 / 3),
                "float64 Gaussian random field, spectrum k^-11/3, large offset", "turbulent"))
    base = grf(rng, (d(12), d(32), d(64), d(128)), 4.0)
    out.append(("gen_timeseries_4d", 250 + 10 * base,
                "4-D (time, z, y, x) k^-4 field: slowly varying in time", "smooth 4-D"))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--seed", type=int, default=20261207, help="default: %(default)s")
    p.add_argument("--scale", type=float, default=1.0,
                   help="factor on every dimension (default 1: about 12 MB per field)")
    a = p.parse_args()
    if not 0 < a.scale <= 4:
        p.error("--scale must lie in (0, 4]")
    a.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    rows = [HEADER]
    for name, arr, quantity, smooth in fields(rng, a.scale):
        dtype = "<f8" if name == "gen_grf_double" else "<f4"
        arr = np.ascontiguousarray(arr, dtype=dtype)
        ext = "f64" if dtype == "<f8" else "f32"
        fname = f"{name}_{'x'.join(map(str, arr.shape))}.{ext}"
        arr.tofile(a.out / fname)
        zero = float(np.mean(arr == 0))
        rows.append("\t".join([
            fname, "x".join(map(str, arr.shape)),
            "float64 LE" if ext == "f64" else "float32 LE",
            "generated", "scripts/gen_fields.py", f"seed {a.seed} scale {a.scale:g}",
            quantity, f"[{arr.min():.6g}, {arr.max():.6g}]", smooth,
            f"mean {arr.mean():.6g} std {arr.std():.6g} zero_frac {zero:.3f}", "G", ""]))
        print(f"gen_fields: {fname} ({arr.nbytes / 1e6:.1f} MB)", file=sys.stderr)
    (a.out / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
