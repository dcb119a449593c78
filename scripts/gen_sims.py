#!/usr/bin/env python3
"""Writes seeded simulation fields from small numpy solvers, for a benchmark wider than the
fields resid was tuned on (issue #27). Every field comes from integrating real equations;
nothing is drawn from a spectrum directly except the initial conditions.

Solvers (all doubly / triply periodic on [0, 2 pi)^d unless said otherwise, float64 state,
pseudo-spectral with numpy's FFT and the Hou-Li filter exp(-36 (|k_i| / (n/2))^36) on every
axis in place of 2/3 dealiasing, SSP-RK3 time stepping with an adaptive step
dt = min(dt_max, CFL dx / max|u|) (CFL 0.4), linear terms by an exact integrating factor
applied after each step):

- kolmogorov: 2-D incompressible Navier-Stokes in vorticity form,
  w_t + u.grad w = nu lap w - mu w - n cos(n y), forced by f = sin(n y) x at n = 4, linear
  drag mu = 0.1, nu = 1e-3 (the Kochkov et al. 2021 Re = 1000 set-up). Spin-up from a seeded
  random vorticity (rms 5, spectrum peaked at |k| = 6) at 128^2 to t = 20, then 256^2 to
  t = 21, then 512^2: 8 snapshots 0.05 apart (the time stack, 8x512x512), then the last
  state refined spectrally to 1024^2 and run on for 0.05 time units: one 1024^2 vorticity
  field (its finest scales are the dissipation range: a resolved DNS; a lower viscosity at
  1024^2 needed more steps than the time budget allows).
- taylor_green: 3-D incompressible Navier-Stokes (rotational form, pressure by projection),
  Taylor-Green initial velocity u = sin x cos y cos z, v = -cos x sin y cos z, w = 0 plus a
  seeded 1e-3 random solenoidal perturbation (breaks the symmetries), Re = 1/nu = 1600.
  64^3 to t = 7 (under-resolved there: the filter acts as an LES closure), then 128^3 to
  t = 7.5 (past the transition, before the peak of dissipation at t ~ 9): the u component,
  128^3.
- gray_scott: 3-D Gray-Scott reaction-diffusion, u_t = Du lap u - u v^2 + F (1 - u),
  v_t = Dv lap v + u v^2 - (F + k) v, Du = 0.14, Dv = 0.07, F = 0.030, k = 0.057, dx = 1,
  explicit Euler dt = 1, 7-point Laplacian, 128^3, 1400 steps from 160 seeded cubes of
  v = 0.25 (u = 0.5) plus 1% noise: species v, 128^3.
- qg: 2-layer quasi-geostrophic model (the equations of pyqg's QGModel): q_1 = lap psi_1 +
  F1 (psi_2 - psi_1), q_2 = lap psi_2 + F2 (psi_1 - psi_2), q_i,t + J(psi_i, q_i) +
  U_i q_i,x + Q_i,y psi_i,x = -delta_i2 rek lap psi_2, with delta = H1/H2 = 0.25, deformation
  radius Rd = 2 pi / 40, U_1 - U_2 = 1 (U_1 = 1, U_2 = 0), beta = 0.135 U / Rd^2,
  rek = 0.347 U / Rd (pyqg's defaults, nondimensionalised; time unit Rd / U = 0.157), from
  a seeded random PV (rms 1, peaked at |k| = 8). 64^2 to t = 20, 128^2 to t = 22, 256^2 to
  t = 23, 512^2 to t = 23.1: PV of both layers as float32 (2x512x512); on to t = 23.15:
  PV of both layers as float64 (2x512x512). The spin-up is short of pyqg's statistical
  equilibrium (years of model time); the eddies are saturated.
- shallow_water: rotating nonlinear shallow water on the f-plane, u_t + u.grad u - f v =
  -g eta_x, v_t + u.grad v + f u = -g eta_y, eta_t + div((H + eta) u) = 0, g = H = 1,
  f = 4 (Rd = 0.25), from a seeded geostrophically balanced height (spectrum peaked at
  |k| = 6, rms 0.08 H). 128^2 to t = 8, 256^2 to t = 9, 512^2 to t = 9.3: surface height
  eta, 512^2.

The fields are written as raw little-endian NAME_<d0>x..x<dn>.f32|f64 files with a
MANIFEST.tsv in the columns of ../shared/data/MANIFEST.tsv (grade "S", simulated; source:
this script, the solver, its parameters and seed), as scripts/bench reads them:

    scripts/gen_sims.py --out /tmp/sims            # 7 fields, 37 MB, about 5 min, 1 core
    scripts/gen_sims.py --out /tmp/sims --small    # smoke test: tiny grids, seconds
    scripts/bench --data /tmp/sims --all

--only NAME,.. runs some of the solvers. The same seed gives the same bytes on the same
machine with the same numpy version; another CPU may differ in the last bits (the FFT's
SIMD paths), and the chaotic flows then drift apart, statistically alike.
"""

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

HEADER = ("file\tshape_C_order(last=fastest)\tdtype\tsource_repo\tsource_path\tsource_commit\t"
          "physical_quantity\tvalue_range\tsmoothness\tnotes\tgrade\tcross_field_group")
CFL = 0.4
TWO_PI = 2 * math.pi


# ---------------------------------------------------------------- spectral helpers

class Grid:
    """A periodic grid of n points per axis on [0, 2 pi)^d, real FFT on the last axis."""

    def __init__(self, n, d):
        self.n, self.d = n, d
        full = np.fft.fftfreq(n, 1.0 / n)
        half = np.fft.rfftfreq(n, 1.0 / n)
        axes = [full] * (d - 1) + [half]
        self.k = np.meshgrid(*axes, indexing="ij", sparse=True)  # integer wavenumbers
        self.k2 = sum(k * k for k in self.k)
        self.k2inv = np.where(self.k2 > 0, 1.0 / np.where(self.k2 > 0, self.k2, 1), 0.0)
        filt = 1.0
        for k in self.k:
            filt = filt * np.exp(-36.0 * (np.abs(k) / (n / 2)) ** 36)
        self.filt = filt
        self.shape = (n,) * d
        self.dx = TWO_PI / n

    def phys(self, f):
        """Inverse real FFT over the last d axes."""
        return np.fft.irfftn(f, s=self.shape, axes=tuple(range(-self.d, 0)))

    def spec(self, a):
        """Forward real FFT over the last d axes."""
        return np.fft.rfftn(a, axes=tuple(range(-self.d, 0)))

    def ik(self, f, axis):
        """Spectral derivative along `axis` (0 = slowest)."""
        return 1j * self.k[axis] * f


def resample(f, n_old, n_new, d):
    """Spectral interpolation of rfft coefficients `f` (last d axes) from n_old to n_new
    points per axis; numpy's normalisation is kept so that the physical values match."""
    lead = f.shape[:-d]
    out = np.zeros(lead + (n_new,) * (d - 1) + (n_new // 2 + 1,), dtype=f.dtype)
    h = n_old // 2
    # index ranges: the low and the negative wavenumbers on every full axis
    for signs in itertools.product((0, 1), repeat=d - 1):
        src, dst = [Ellipsis], [Ellipsis]
        for s in signs:
            src.append(slice(0, h) if s == 0 else slice(n_old - h + 1, n_old))
            dst.append(slice(0, h) if s == 0 else slice(n_new - h + 1, n_new))
        src.append(slice(0, h))
        dst.append(slice(0, h))
        out[tuple(dst)] = f[tuple(src)]
    return out * (n_new / n_old) ** d


def integrate(state, rhs, damp, t, t_end, dx, dt_max, label):
    """Steps `state` from t to t_end by SSP-RK3 (Shu-Osher). rhs(state) -> (tendency, the
    largest advecting speed), the speed of the step's first stage setting the CFL step;
    damp(dt) -> factor applied after each step (integrating factor of the linear terms,
    times the filter). Returns (state, t, steps)."""
    steps = 0
    while t < t_end - 1e-12:
        k1, v = rhs(state)
        if not (np.isfinite(v) and np.all(np.isfinite(k1))):
            raise FloatingPointError(f"{label}: blew up at t = {t:.4g}")
        dt = min(dt_max, CFL * dx / max(v, 1e-12), t_end - t)
        s1 = state + dt * k1
        s2 = 0.75 * state + 0.25 * (s1 + dt * rhs(s1)[0])
        state = (state / 3.0 + (2.0 / 3.0) * (s2 + dt * rhs(s2)[0])) * damp(dt)
        t += dt
        steps += 1
    return state, t, steps


def run_plan(state, t, n_prev, plan, d, rhs_for, damp_for, dt_max, label, log):
    """Integrates `state` through a refinement `plan` of (n, t_end, *extra) stages: resampled
    spectrally to n points per axis when n changes, then stepped to t_end on Grid(n, d) with
    rhs_for(g) and damp_for(g, *extra). Returns (state, t, the last grid, its rhs)."""
    for n, t_end, *extra in plan:
        if n != n_prev:
            state, n_prev = resample(state, n_prev, n, d), n
        g = Grid(n, d)
        rhs = rhs_for(g)
        state, t, steps = integrate(state, rhs, damp_for(g, *extra), t, t_end, g.dx, dt_max,
                                    label)
        log(f"{label} {n}^{d}{''.join(f' {e:g}' for e in extra)}: t = {t:.3f} ({steps} steps)")
    return state, t, g, rhs


def filter_only(g):
    """The damping of a model with no linear terms: the spectral filter alone."""
    return lambda dt: g.filt


def peaked_spectrum(rng, g, k0, lead=()):
    """Random spectral coefficients with amplitude |k|^4 exp(-2 (|k|/k0)^2) (a band around
    k0), as rfft coefficients of a real field (built from real noise, so Hermitian)."""
    noise = rng.standard_normal(lead + g.shape)
    f = g.spec(noise)
    k = np.sqrt(g.k2)
    f *= (k / k0) ** 2 * np.exp(-(k / k0) ** 2)
    return f


# ---------------------------------------------------------------- 2-D Kolmogorov flow

def kolmogorov(rng, small, log):
    """Returns [(name, array, quantity, smoothness, params)]."""
    nforce, mu = 4, 0.1
    if small:
        plan = [(32, 1e-2, 2.0), (64, 1e-2, 2.2)]
        stack_n, stack_dt, fine = 64, 0.1, (128, 5e-3, 0.05)
    else:
        plan = [(128, 1e-3, 20.0), (256, 1e-3, 21.0)]
        stack_n, stack_dt, fine = 512, 0.05, (1024, 1e-3, 0.05)

    def rhs_for(g):
        forcing = g.spec(-nforce * np.cos(nforce * np.arange(g.n) * g.dx)[:, None]
                         * np.ones((1, g.n)))
        def rhs(w):
            psi = w * g.k2inv
            u = g.phys(g.ik(psi, 0))          # u = psi_y (axis 0 is y)
            v = g.phys(-g.ik(psi, 1))         # v = -psi_x
            wy, wx = g.phys(g.ik(w, 0)), g.phys(g.ik(w, 1))
            return (g.spec(-(u * wx + v * wy)) * g.filt + forcing,
                    float(np.max(np.abs(u)) + np.max(np.abs(v))))
        return rhs

    def damp_for(g, nu):
        return lambda dt: np.exp(-(nu * g.k2 + mu) * dt) * g.filt

    n0 = plan[0][0]
    g = Grid(n0, 2)
    w = peaked_spectrum(rng, g, 6.0)
    w *= 5.0 / np.sqrt(np.mean(g.phys(w) ** 2))  # rms vorticity 5
    w, t, g, _ = run_plan(w, 0.0, n0, [(n, t_end, nu) for n, nu, t_end in plan], 2, rhs_for,
                            damp_for, 0.02, "kolmogorov", log)
    w = resample(w, g.n, stack_n, 2)
    g = Grid(stack_n, 2)
    rhs = rhs_for(g)
    nu = plan[-1][1]
    frames = []
    for i in range(8):
        w, t, steps = integrate(w, rhs, damp_for(g, nu), t, t + stack_dt, g.dx, 0.02,
                                "kolmogorov")
        frames.append(g.phys(w))
    log(f"kolmogorov {stack_n}^2: 8 frames to t = {t:.3f}")
    nf, nu_f, dur = fine
    w = resample(w, stack_n, nf, 2)
    g = Grid(nf, 2)
    rhs = rhs_for(g)
    w, t, steps = integrate(w, rhs, damp_for(g, nu_f), t, t + dur, g.dx, 0.02,
                            "kolmogorov")
    log(f"kolmogorov {nf}^2 nu {nu_f:g}: t = {t:.3f} ({steps} steps)")
    common = f"2-D NS vorticity, Kolmogorov forcing sin({nforce}y), drag {mu}"
    return [
        ("sim_kolmogorov_vorticity", g.phys(w), "f32",
         f"{common}, nu {nu_f:g} (Re {1 / nu_f:g}) on {nf}^2, t = {t:.2f}", "turbulent 2-D",
         f"pseudo-spectral RK3; 128^2, 256^2, 512^2, then {nf}^2 for {dur}"),
        ("sim_kolmogorov_vorticity_stack", np.stack(frames), "f32",
         f"{common}, nu {nu:g} (Re {1 / nu:g}): 8 snapshots dt {stack_dt} on {stack_n}^2",
         "turbulent 2-D, time-correlated", "pseudo-spectral RK3 (time, y, x)"),
    ]


# ---------------------------------------------------------------- 3-D Taylor-Green vortex

def taylor_green(rng, small, log):
    nu = 1.0 / 1600
    plan = [(16, 1.0), (32, 1.5)] if small else [(64, 7.0), (128, 7.5)]
    n0 = plan[0][0]
    g = Grid(n0, 3)
    x = np.arange(n0) * g.dx
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")  # axis 0 = x here; z fastest
    u0 = np.stack([np.sin(X) * np.cos(Y) * np.cos(Z), -np.cos(X) * np.sin(Y) * np.cos(Z),
                   np.zeros_like(X)])
    pert = peaked_spectrum(rng, g, 4.0, (3,))
    uh = g.spec(u0) + pert * (1e-3 / np.sqrt(np.mean(g.phys(pert) ** 2)))

    def project(uh, g):
        div = sum(g.k[i] * uh[i] for i in range(3))
        return np.stack([uh[i] - g.k[i] * div * g.k2inv for i in range(3)])

    def rhs_for(g):
        def rhs(uh):
            u = g.phys(uh)
            wh = np.stack([g.ik(uh[2], 1) - g.ik(uh[1], 2), g.ik(uh[0], 2) - g.ik(uh[2], 0),
                           g.ik(uh[1], 0) - g.ik(uh[0], 1)])
            w = g.phys(wh)
            cross = np.stack([u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2],
                              u[0] * w[1] - u[1] * w[0]])
            return (project(g.spec(cross) * g.filt, g),
                    float(np.sqrt(np.max(np.sum(u * u, 0)))))
        return rhs

    uh, t, g, _ = run_plan(project(uh, g), 0.0, n0, plan, 3, rhs_for,
                           lambda g: lambda dt: np.exp(-nu * g.k2 * dt) * g.filt, 0.1,
                           "taylor_green", log)
    u = g.phys(uh[0])
    return [("sim_taylorgreen_u", u, "f32",
             f"3-D Taylor-Green vortex, Re 1600, velocity x-component at t = {t:.2f} "
             f"({plan[-1][0]}^3)", "turbulent 3-D",
             "pseudo-spectral RK3; 64^3 to t=7, then 128^3")]


# ---------------------------------------------------------------- 3-D Gray-Scott

def gray_scott(rng, small, log):
    Du, Dv, F, k = 0.14, 0.07, 0.030, 0.057
    n, steps, seeds = (32, 300, 10) if small else (128, 1400, 160)
    u = np.ones((n, n, n), np.float32)
    v = np.zeros((n, n, n), np.float32)
    for _ in range(seeds):
        c = rng.integers(0, n, 3)
        sl = tuple(slice(int(ci), int(ci) + 4) for ci in c)
        u[sl], v[sl] = 0.5, 0.25
    u += 0.01 * rng.standard_normal(u.shape).astype(np.float32)
    v += 0.01 * rng.standard_normal(v.shape).astype(np.float32)
    v = np.clip(v, 0, None)

    def lap(a):
        out = -6.0 * a
        for ax in range(3):
            out += np.roll(a, 1, ax)
            out += np.roll(a, -1, ax)
        return out

    F32, Fk = np.float32(F), np.float32(F + k)
    for _ in range(steps):
        uvv = u * v * v
        u, v = (u + Du * lap(u) - uvv + F32 * (1 - u),
                v + Dv * lap(v) + uvv - Fk * v)
    log(f"gray_scott {n}^3: {steps} steps, v in [{v.min():.3g}, {v.max():.3g}]")
    return [("sim_grayscott3d_v", v, "f32",
             f"3-D Gray-Scott reaction-diffusion, species v, Du {Du} Dv {Dv} F {F} k {k}, "
             f"{steps} steps dt 1", "patterns (spots/worms), sharp", "explicit FD, float32")]


# ---------------------------------------------------------------- 2-layer QG

def qg(rng, small, log):
    delta, U1, U2 = 0.25, 1.0, 0.0
    Rd = TWO_PI / 40
    beta, rek = 0.135 * (U1 - U2) / Rd ** 2, 0.347 * (U1 - U2) / Rd
    F1 = 1.0 / (Rd ** 2 * (1 + delta))
    F2 = delta * F1
    Qy = np.array([beta + F1 * (U1 - U2), beta - F2 * (U1 - U2)])
    U = np.array([U1, U2])
    if small:
        plan, out_t = [(32, 4.0), (64, 5.0)], (5.1, 5.2)
    else:
        plan, out_t = [(64, 20.0), (128, 22.0), (256, 23.0), (512, 23.1)], (23.1, 23.15)

    def invert(qh, g):
        det = g.k2 * (g.k2 + F1 + F2)
        det = np.where(det > 0, det, 1.0)
        p1 = (-(g.k2 + F2) * qh[0] - F1 * qh[1]) / det
        p2 = (-F2 * qh[0] - (g.k2 + F1) * qh[1]) / det
        p = np.stack([p1, p2])
        p[:, g.k2 == 0] = 0
        return p

    def rhs_for(g):
        def rhs(qh):
            ph = invert(qh, g)
            u = g.phys(-g.ik(ph, 0))   # u = -psi_y
            v = g.phys(g.ik(ph, 1))    # v = psi_x
            qy, qx = g.phys(g.ik(qh, 0)), g.phys(g.ik(qh, 1))
            out = g.spec(-(u * qx + v * qy)) * g.filt
            out -= U[:, None, None] * g.ik(qh, 1) + Qy[:, None, None] * g.ik(ph, 1)
            out[1] += rek * g.k2 * ph[1]
            return out, float(np.max(np.abs(u + U[:, None, None])) + np.max(np.abs(v)))
        return rhs

    n0 = plan[0][0]
    g = Grid(n0, 2)
    qh = peaked_spectrum(rng, g, 8.0, (2,))
    qh *= 1.0 / np.sqrt(np.mean(g.phys(qh) ** 2))  # rms PV 1
    qh, t, g, rhs = run_plan(qh, 0.0, n0, plan, 2, rhs_for, filter_only, 0.05, "qg", log)
    q32 = g.phys(qh)
    qh, t, steps = integrate(qh, rhs, filter_only(g), t, out_t[1], g.dx, 0.05, "qg")
    log(f"qg {g.n}^2: t = {t:.3f} ({steps} steps)")
    q64 = g.phys(qh)
    common = (f"2-layer QG potential vorticity (layers 1, 2), delta {delta}, L/Rd 40, "
              f"U1-U2 1, beta {beta:.3g}, rek {rek:.3g}")
    return [("sim_qg2layer_pv", q32, "f32", f"{common}, t = {out_t[0]:g} ({g.n}^2)",
             "turbulent 2-D, two levels", "pseudo-spectral RK3, pyqg QGModel equations"),
            ("sim_qg2layer_pv_f64", q64, "f64", f"{common}, t = {t:.4g} ({g.n}^2)",
             "turbulent 2-D, two levels", "pseudo-spectral RK3, pyqg QGModel equations")]


# ---------------------------------------------------------------- rotating shallow water

def shallow_water(rng, small, log):
    f0, grav, H = 4.0, 1.0, 1.0
    plan = [(32, 1.0), (64, 1.3)] if small else [(128, 8.0), (256, 9.0), (512, 9.3)]
    n0 = plan[0][0]
    g = Grid(n0, 2)
    eh = peaked_spectrum(rng, g, 6.0)
    eh *= 0.08 * H / np.sqrt(np.mean(g.phys(eh) ** 2))
    state = np.stack([-grav / f0 * g.ik(eh, 0), grav / f0 * g.ik(eh, 1), eh])  # u, v, eta

    def rhs_for(g):
        def rhs(s):
            u, v, e = g.phys(s)
            ux, uy = g.phys(g.ik(s[0], 1)), g.phys(g.ik(s[0], 0))
            vx, vy = g.phys(g.ik(s[1], 1)), g.phys(g.ik(s[1], 0))
            du = g.spec(-(u * ux + v * uy)) * g.filt + f0 * s[1] - grav * g.ik(s[2], 1)
            dv = g.spec(-(u * vx + v * vy)) * g.filt - f0 * s[0] - grav * g.ik(s[2], 0)
            hu, hv = g.spec((H + e) * u), g.spec((H + e) * v)
            de = -(g.ik(hu, 1) + g.ik(hv, 0)) * g.filt
            return (np.stack([du, dv, de]),
                    float(np.sqrt(np.max(u * u + v * v)) + np.sqrt(grav * (H + e.max()))))
        return rhs

    state, t, g, _ = run_plan(state, 0.0, n0, plan, 2, rhs_for, filter_only, 0.05,
                              "shallow_water", log)
    eta = g.phys(state[2])
    return [("sim_shallowwater_eta", eta, "f32",
             f"rotating shallow water surface height eta, f {f0}, g H 1 (Rd 0.25), "
             f"t = {t:.2f} ({g.n}^2)", "smooth 2-D with fronts and waves",
             "pseudo-spectral RK3, decaying geostrophic turbulence")]


SOLVERS = {"kolmogorov": kolmogorov, "taylor_green": taylor_green, "gray_scott": gray_scott,
           "qg": qg, "shallow_water": shallow_water}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                epilog="Solvers: " + ", ".join(SOLVERS),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--seed", type=int, default=20261207, help="default: %(default)s")
    p.add_argument("--small", action="store_true",
                   help="tiny grids and short runs: a smoke test of the solvers, seconds")
    p.add_argument("--only", default=",".join(SOLVERS),
                   help="comma-separated solvers to run (default: all)")
    a = p.parse_args()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    if not only or any(s not in SOLVERS for s in only):
        p.error(f"--only: each must be one of {', '.join(SOLVERS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    t_all = time.perf_counter()

    def log(msg):
        print(f"gen_sims: [{time.perf_counter() - t_all:6.1f} s] {msg}", file=sys.stderr)

    for k, solver in enumerate(only):
        # One stream per solver, so that --only gives the same bytes as a full run.
        rng = np.random.default_rng([a.seed, list(SOLVERS).index(solver)])
        t0 = time.perf_counter()
        for name, arr, ext, quantity, smooth, how in SOLVERS[solver](rng, a.small, log):
            dtype = "<f8" if ext == "f64" else "<f4"
            arr = np.ascontiguousarray(arr, dtype=dtype)
            if not np.all(np.isfinite(arr)):
                raise FloatingPointError(f"{name}: non-finite values")
            fname = f"{name}_{'x'.join(map(str, arr.shape))}.{ext}"
            arr.tofile(a.out / fname)
            rows.append("\t".join([
                fname, "x".join(map(str, arr.shape)),
                "float64 LE" if ext == "f64" else "float32 LE",
                "generated", f"scripts/gen_sims.py ({solver}: {how})",
                f"seed {a.seed}{' --small' if a.small else ''}", quantity,
                f"[{arr.min():.6g}, {arr.max():.6g}]", smooth,
                f"mean {arr.mean():.6g} std {arr.std():.6g}", "S", solver]))
            log(f"{fname} ({arr.nbytes / 1e6:.1f} MB)")
        log(f"{solver}: {time.perf_counter() - t0:.1f} s")
    (a.out / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    log(f"done, {len(rows) - 1} fields in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
