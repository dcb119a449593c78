//! Floating-point fitting of the NGLR bias network (encode only: no decode code imports this).
//!
//! Both fits minimize the loss `ln(1 + |r| / c)` of the residual `r` left after the bias, on a
//! subsample of the chunk's points: the coded size grows with the log of the residual's
//! magnitude, so busy regions must not dominate. [`fit_linear`] fits a linear bias in closed
//! form by iteratively reweighted least squares (WEIGHTS kind 2). [`fit`] trains the whole
//! network by Adam, its direct path starting from that closed-form solution. Then the weights
//! are quantized to the stored fixed-point form, and the encoder codes with that integer model
//! only. Training uses a fixed seed and sums in a fixed
//! order, so one machine always produces the same weights; other machines may differ, which is fine:
//! only the stored weights matter to the decoder.

use rayon::prelude::*;

use super::infer::{rshift, Net, B1_MAX, FRAC, HMAX, INPUTS, MAX_EXP, MAX_IN_SHIFT, MAX_OUT_SHIFT};
use super::linear::Linear;
use super::wide;
use super::ADAM;

/// Training effort.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Hidden units of [`fit`]'s network (4 coded as small as 8, and decodes faster).
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Scale `c` of the loss `ln(1 + |r| / c)`, in units of the target's mean magnitude (at
    /// least one grid step). Of 0.01, 0.1, 0.3, 0.5, 1, 2, 3 and 10, 1-2 coded smallest.
    pub floor: f32,
    /// Reweighted least-squares rounds of [`fit_linear`] (and of [`fit`]'s start).
    pub irls_rounds: usize,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hidden: 4,
            epochs: 8,
            batch: 128,
            lr: 1e-3,
            floor: 1.0,
            irls_rounds: 3,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// A small deterministic generator (xorshift64*), so training needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `round(log2(mean |v|))`, clamped to `0..=max` (0 for an all-zero feature).
fn shift_for(vals: impl Iterator<Item = i64>, max: u8) -> u8 {
    let (mut s, mut n) = (0f64, 0usize);
    for v in vals {
        s += (v as f64).abs();
        n += 1;
    }
    shift_of_sum(s, n, max)
}

/// [`shift_for`] from the sum `s` of `n` magnitudes.
fn shift_of_sum(s: f64, n: usize, max: u8) -> u8 {
    if n == 0 || s == 0.0 {
        return 0;
    }
    (s / n as f64).log2().round().clamp(0.0, max as f64) as u8
}

/// [`shift_for`] of each feature, in one pass over the samples (the same sums in the same
/// order as one pass per feature, which would stride through memory sixteen times).
fn input_shifts(f: &[[i64; INPUTS]]) -> [u8; INPUTS] {
    let mut s = [0f64; INPUTS];
    for r in f {
        for (acc, &v) in s.iter_mut().zip(r) {
            *acc += (v as f64).abs();
        }
    }
    s.map(|v| shift_of_sum(v, f.len(), MAX_IN_SHIFT))
}

/// Largest exponent `e <= MAX_EXP` with `max_w 2^e <= 32767` and `max_b 2^(8+e) <= b_lim`.
fn exponent(max_w: f32, max_b: f32, b_lim: f64) -> u8 {
    let mut e = MAX_EXP;
    while e > 0
        && ((max_w as f64) * 2f64.powi(e as i32) > 32767.0
            || (max_b as f64) * 2f64.powi(e as i32 + FRAC as i32) > b_lim)
    {
        e -= 1;
    }
    e
}

fn q16(w: f32, e: u8) -> i16 {
    (w as f64 * 2f64.powi(e as i32))
        .round()
        .clamp(-32767.0, 32767.0) as i16
}

/// Solves `a x = b` (`a` symmetric positive definite, `n x n` row-major) by Gaussian
/// elimination with partial pivoting; returns zeros when it is singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        if a[p * n + c].abs() < 1e-12 {
            return vec![0.0; n];
        }
        for k in 0..n {
            a.swap(c * n + k, p * n + k);
        }
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| a[c * n + k] * x[k]).sum();
        x[c] = (b[c] - s) / a[c * n + c];
    }
    x
}

/// A zero network with `hidden` units and the chunk's normalization shifts, and the samples as
/// it sees them: inputs exactly as the integer network computes them (Q8, clamped) and targets
/// in units of `2^out_shift` grid steps (clamped to +-64), as floats. `None` under 64 samples.
fn normalized(
    f: &[[i64; INPUTS]],
    t: &[i64],
    hidden: usize,
) -> Option<(Net, Vec<[f64; INPUTS]>, Vec<f64>)> {
    let net = zero_net(f, t, hidden)?;
    let n = f.len().min(t.len());
    let xs = f[..n]
        .iter()
        .map(|r| std::array::from_fn(|i| sample_input(&net, i, r[i])))
        .collect();
    let ts = t[..n].iter().map(|&v| sample_target(&net, v)).collect();
    Some((net, xs, ts))
}

/// A zero network with `hidden` units and the normalization shifts of samples `f`, `t`;
/// `None` under 64 samples.
fn zero_net(f: &[[i64; INPUTS]], t: &[i64], hidden: usize) -> Option<Net> {
    let n = f.len().min(t.len());
    if n < 64 {
        return None;
    }
    Some(Net {
        hidden,
        in_shift: input_shifts(&f[..n]),
        out_shift: shift_for(t[..n].iter().copied(), MAX_OUT_SHIFT),
        e1: 0,
        e2: 0,
        w1: vec![0; hidden * INPUTS],
        b1: vec![0; hidden],
        w2: vec![0; hidden],
        v: [0; INPUTS],
        b2: 0,
    })
}

/// Input `i` of a sample as `net` sees it (Q8, clamped), as a float.
#[inline]
fn sample_input(net: &Net, i: usize, f: i64) -> f64 {
    net.input(i, f) as f64 / (1u32 << FRAC) as f64
}

/// A target in units of `2^out_shift` grid steps, clamped to +-64.
#[inline]
fn sample_target(net: &Net, t: i64) -> f64 {
    (t as f64 / 2f64.powi(net.out_shift as i32)).clamp(-64.0, 64.0)
}

/// The Adam phase of [`fit`], everything it reads: the samples as the network sees them, the
/// starting parameters (`w1` (hidden x INPUTS), `b1`, `w2`, `v`, `b2`), every epoch's order of
/// the samples, and the loss scale. [`adam`] runs it on the CPU; the GPU trainer
/// (`backend::cuda::nglr`) runs the same steps.
pub struct AdamProblem {
    pub xs: Vec<[f32; INPUTS]>,
    pub ts: Vec<f32>,
    pub params: Vec<f32>,
    pub hidden: usize,
    /// `epochs x n` sample indices: epoch `e` visits `orders[e n ..][..n]` in batches.
    pub orders: Vec<u32>,
    pub epochs: usize,
    pub batch: usize,
    /// Loss scale `c` of `ln(1 + |r| / c)`.
    pub c: f32,
    /// Where the hidden units' ReLU is clipped.
    pub hmax: f32,
    pub lr: f32,
}

impl AdamProblem {
    /// Offsets of `b1`, `w2`, `v` and `b2` in the parameters.
    pub fn offsets(&self) -> (usize, usize, usize, usize) {
        let h = self.hidden;
        (
            h * INPUTS,
            h * INPUTS + h,
            h * INPUTS + 2 * h,
            h * INPUTS + 2 * h + INPUTS,
        )
    }

    /// The network's output for input `x` under parameters `p`; leaves each hidden unit's
    /// pre-activation in `a` and activation in `hid` (`hidden` long) for the backward pass.
    #[inline]
    fn forward(&self, p: &[f32], x: &[f32; INPUTS], a: &mut [f32], hid: &mut [f32]) -> f32 {
        let (o_b1, o_w2, o_v, o_b2) = self.offsets();
        let mut y = p[o_b2];
        for j in 0..self.hidden {
            let row = &p[j * INPUTS..(j + 1) * INPUTS];
            a[j] = p[o_b1 + j] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
            hid[j] = a[j].clamp(0.0, self.hmax);
            y += p[o_w2 + j] * hid[j];
        }
        for i in 0..INPUTS {
            y += p[o_v + i] * x[i];
        }
        y
    }

    /// The mean loss `ln(1 + |r| / c)` of `params` over the samples (for tests and logs).
    pub fn loss(&self, p: &[f32]) -> f64 {
        let (mut a, mut hid) = (vec![0f32; self.hidden], vec![0f32; self.hidden]);
        let total: f64 = self
            .xs
            .iter()
            .zip(&self.ts)
            .map(|(x, &t)| {
                let y = self.forward(p, x, &mut a, &mut hid);
                (1.0 + ((y - t).abs() / self.c) as f64).ln()
            })
            .sum();
        total / self.xs.len().max(1) as f64
    }
}

/// Fits a network predicting `t` (grid steps) from features `f`; `None` without samples.
pub fn fit(f: &[[i64; INPUTS]], t: &[i64], cfg: &Config) -> Option<Net> {
    fit_with(f, t, cfg, adam)
}

/// [`fit`] with its Adam phase run by `run` (which returns the trained parameters).
pub fn fit_with(
    f: &[[i64; INPUTS]],
    t: &[i64],
    cfg: &Config,
    run: impl FnOnce(&AdamProblem) -> Vec<f32>,
) -> Option<Net> {
    let (mut net, problem) = adam_problem(f, t, cfg)?;
    let p = run(&problem);
    let (o_b1, o_w2, o_v, o_b2) = problem.offsets();
    // Quantize: per-layer power-of-two scales, biases in the accumulators' units.
    let maxabs = |s: &[f32]| s.iter().fold(0f32, |m, v| m.max(v.abs()));
    net.e1 = exponent(maxabs(&p[..o_b1]), maxabs(&p[o_b1..o_w2]), B1_MAX as f64);
    let max_out = maxabs(&p[o_w2..o_b2]);
    net.e2 = exponent(max_out, p[o_b2].abs(), i32::MAX as f64);
    let (e1, e2) = (net.e1, net.e2);
    net.w1 = p[..o_b1].iter().map(|&w| q16(w, e1)).collect();
    net.b1 = p[o_b1..o_w2]
        .iter()
        .map(|&b| {
            (b as f64 * 2f64.powi((e1 as u32 + FRAC) as i32))
                .round()
                .clamp(-(B1_MAX as f64), B1_MAX as f64) as i32
        })
        .collect();
    net.w2 = p[o_w2..o_v].iter().map(|&w| q16(w, e2)).collect();
    for i in 0..INPUTS {
        net.v[i] = q16(p[o_v + i], e2);
    }
    net.b2 = rshift(
        (p[o_b2] as f64 * 2f64.powi((e2 as u32 + FRAC) as i32)).round() as i64,
        0,
    )
    .clamp(i32::MIN as i64 + 1, i32::MAX as i64) as i32;
    debug_assert!(net.validate().is_ok());
    Some(net)
}

/// The network's normalization and the Adam phase of [`fit`] on samples `f`, `t`.
pub fn adam_problem(f: &[[i64; INPUTS]], t: &[i64], cfg: &Config) -> Option<(Net, AdamProblem)> {
    let h = cfg.hidden.clamp(1, super::infer::MAX_HIDDEN);
    let (net, xs, ts) = normalized(f, t, h)?;
    // The direct path starts from the closed-form fit on the same samples.
    let skeleton = Net {
        hidden: 1,
        w1: vec![0; INPUTS],
        b1: vec![0],
        w2: vec![0],
        ..net.clone()
    };
    let lin = linear(skeleton, &xs, &ts, cfg);
    let n = xs.len();
    let xs: Vec<[f32; INPUTS]> = xs.iter().map(|x| x.map(|v| v as f32)).collect();
    let ts: Vec<f32> = ts.iter().map(|&v| v as f32).collect();
    let unit = 1.0 / (1u32 << FRAC) as f32;

    let mut problem = AdamProblem {
        xs,
        ts,
        params: Vec::new(),
        hidden: h,
        orders: Vec::with_capacity(cfg.epochs * n),
        epochs: cfg.epochs,
        batch: cfg.batch.max(1),
        c: cfg.floor.max(1.0 / 2f32.powi(net.out_shift as i32)),
        hmax: HMAX as f32 * unit,
        lr: cfg.lr,
    };
    let (o_b1, o_w2, o_v, o_b2) = problem.offsets();
    let mut p = vec![0f32; o_b2 + 1];
    let mut rng = Rng(cfg.seed | 1);
    let s1 = 1.0 / (INPUTS as f32).sqrt();
    for w in &mut p[..o_b1] {
        *w = rng.sym() * s1;
    }
    for b in &mut p[o_b1..o_w2] {
        *b = 0.5 + 0.5 * rng.sym();
    }
    for w in &mut p[o_w2..o_v] {
        *w = rng.sym() * 0.05;
    }
    for i in 0..INPUTS {
        p[o_v + i] = lin.v[i] as f32 / 2f32.powi(lin.e2 as i32);
    }
    p[o_b2] = lin.b2 as f32 / 2f32.powi((lin.e2 as u32 + FRAC) as i32);
    problem.params = p;
    // Each epoch shuffles the previous epoch's order.
    let mut order: Vec<u32> = (0..n as u32).collect();
    for _ in 0..cfg.epochs {
        for k in (1..n).rev() {
            order.swap(k, (rng.next() % (k as u64 + 1)) as usize);
        }
        problem.orders.extend_from_slice(&order);
    }
    Some((net, problem))
}

/// Runs the Adam phase on the CPU: returns the trained parameters.
pub fn adam(pr: &AdamProblem) -> Vec<f32> {
    let h = pr.hidden;
    let (o_b1, o_w2, o_v, o_b2) = pr.offsets();
    let mut p = pr.params.clone();
    let np = p.len();
    let n = pr.xs.len();
    let (b1m, b2m, eps) = ADAM;
    let mut mom = vec![0f32; np];
    let mut vel = vec![0f32; np];
    let mut g = vec![0f32; np];
    let mut step = 0i32;
    let hmax = pr.hmax;
    let c = pr.c;
    let mut a = vec![0f32; h];
    let mut hid = vec![0f32; h];
    for e in 0..pr.epochs {
        for batch in pr.orders[e * n..(e + 1) * n].chunks(pr.batch) {
            g.iter_mut().for_each(|v| *v = 0.0);
            for &s in batch {
                let x = &pr.xs[s as usize];
                let y = pr.forward(&p, x, &mut a, &mut hid);
                // d/dy of ln(1 + |y - t| / c): the coded size of a residual grows with its log.
                let r = y - pr.ts[s as usize];
                let d = r.signum() / (c + r.abs());
                g[o_b2] += d;
                for i in 0..INPUTS {
                    g[o_v + i] += d * x[i];
                }
                for j in 0..h {
                    g[o_w2 + j] += d * hid[j];
                    if a[j] > 0.0 && a[j] < hmax {
                        let da = d * p[o_w2 + j];
                        g[o_b1 + j] += da;
                        for i in 0..INPUTS {
                            g[j * INPUTS + i] += da * x[i];
                        }
                    }
                }
            }
            step += 1;
            let inv = 1.0 / batch.len() as f32;
            let c1 = 1.0 - b1m.powi(step);
            let c2 = 1.0 - b2m.powi(step);
            for k in 0..np {
                let gk = g[k] * inv;
                mom[k] = b1m * mom[k] + (1.0 - b1m) * gk;
                vel[k] = b2m * vel[k] + (1.0 - b2m) * gk * gk;
                p[k] -= pr.lr * (mom[k] / c1) / ((vel[k] / c2).sqrt() + eps);
            }
        }
    }
    p
}

/// Samples per partial sum of the normal equations in [`irls`].
const RUN: usize = 4096;

/// Fits the linear bias of WEIGHTS kind 2 ([`Linear`]) in closed form: iteratively
/// reweighted least squares for the same loss `ln(1 + |r| / c)` that [`fit`] descends, a few
/// solves of a 17 x 17 system instead of epochs of Adam. The fit runs on the inputs as the
/// network would see them (normalized and clamped, which keeps rare huge features from
/// steering it); the coefficients are then turned back to raw features and grid steps.
/// `None` under 64 samples.
pub fn fit_linear(f: &[[i64; INPUTS]], t: &[i64], cfg: &Config) -> Option<Linear> {
    let net = zero_net(f, t, 1)?;
    let n = f.len().min(t.len());
    // The samples of `normalized`, run by run straight into columns.
    let runs: Vec<Run> = f[..n]
        .par_chunks(RUN)
        .zip(t[..n].par_chunks(RUN))
        .map(|(f, t)| Run {
            cols: (0..=INPUTS)
                .map(|p| match p {
                    INPUTS => vec![1.0; f.len()],
                    p => f.iter().map(|r| sample_input(&net, p, r[p])).collect(),
                })
                .collect(),
            ts: t.iter().map(|&v| sample_target(&net, v)).collect(),
        })
        .collect();
    let coef = irls(&runs, loss_scale(&net, cfg), cfg);
    // The fit sees input i as f_i / 2^in_shift_i and predicts t / 2^out_shift.
    let out = 2f64.powi(net.out_shift as i32);
    let c: [f64; INPUTS] =
        std::array::from_fn(|i| coef[i] * out / 2f64.powi(net.in_shift[i] as i32));
    Some(Linear::from_coefficients(&c, coef[INPUTS] * out))
}

/// The loss scale `c` of `ln(1 + |r| / c)` in the normalized output units of `net`.
fn loss_scale(net: &Net, cfg: &Config) -> f64 {
    (cfg.floor as f64).max(1.0 / 2f64.powi(net.out_shift as i32))
}

/// The closed-form fit of [`fit_linear`] as a network's direct path, on samples already
/// [`normalized`] for `net` (one hidden unit, all zero): where [`fit`] starts.
fn linear(mut net: Net, xs: &[[f64; INPUTS]], ts: &[f64], cfg: &Config) -> Net {
    let coef = irls(&runs_of(xs, ts), loss_scale(&net, cfg), cfg);
    let max_v = coef[..INPUTS].iter().fold(0f64, |a, v| a.max(v.abs()));
    net.e2 = exponent(max_v as f32, coef[INPUTS].abs() as f32, i32::MAX as f64);
    let e2 = net.e2;
    net.v = std::array::from_fn(|i| q16(coef[i] as f32, e2));
    net.b2 = (coef[INPUTS] * 2f64.powi((net.e2 as u32 + FRAC) as i32))
        .round()
        .clamp(i32::MIN as f64 + 1.0, i32::MAX as f64) as i32;
    debug_assert!(net.validate().is_ok());
    net
}

/// The samples of one run of [`RUN`] by columns: the 16 inputs, then a column of ones, and
/// the targets.
struct Run {
    cols: Vec<Vec<f64>>,
    ts: Vec<f64>,
}

/// [`Run`]s of normalized samples.
fn runs_of(xs: &[[f64; INPUTS]], ts: &[f64]) -> Vec<Run> {
    xs.par_chunks(RUN)
        .zip(ts.par_chunks(RUN))
        .map(|(xs, ts)| Run {
            cols: (0..=INPUTS)
                .map(|p| match p {
                    INPUTS => vec![1.0; xs.len()],
                    p => xs.iter().map(|x| x[p]).collect(),
                })
                .collect(),
            ts: ts.to_vec(),
        })
        .collect()
}

/// Iteratively reweighted least squares for the loss `ln(1 + |r| / c)`: the coefficients of
/// the 16 inputs, then the intercept.
fn irls(runs: &[Run], c: f64, cfg: &Config) -> Vec<f64> {
    let m = INPUTS + 1;
    let mut coef = vec![0f64; m];
    let mut res: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| r.ts.iter().map(|&y| -y).collect())
        .collect();
    let rounds = cfg.irls_rounds.max(1);
    for round in 0..rounds {
        // Early rounds only steer the weights: each uses half the runs of the next (the
        // samples come from tiles spread over the chunk, so a prefix of runs is a sample).
        let used = |round: usize| runs.len().div_ceil(1 << (rounds - 1 - round).min(2));
        // Normal equations, summed over fixed runs of samples side by side and then in run
        // order, so the sums do not depend on the thread count. Each entry is one dot
        // product of two weighted columns.
        let sums: Vec<(Vec<f64>, Vec<f64>)> = runs[..used(round)]
            .par_iter()
            .zip(&res)
            .map(|(run, res)| {
                // IRLS weight psi(r) / r of the loss, with |r| floored at c.
                let w: Vec<f64> = res
                    .iter()
                    .map(|r| {
                        let a = r.abs();
                        1.0 / (a.max(c) * (c + a))
                    })
                    .collect();
                let mut ata = vec![0f64; m * m];
                let mut atb = vec![0f64; m];
                let mut weighted = vec![0f64; w.len()];
                for p in 0..m {
                    for ((o, &a), &b) in weighted.iter_mut().zip(&run.cols[p]).zip(&w) {
                        *o = a * b;
                    }
                    atb[p] = wide::dot64(&weighted, &run.ts);
                    for q in p..m {
                        ata[p * m + q] = wide::dot64(&weighted, &run.cols[q]);
                    }
                }
                (ata, atb)
            })
            .collect();
        let mut ata = vec![0f64; m * m];
        let mut atb = vec![0f64; m];
        for (a, b) in sums {
            ata.iter_mut().zip(a).for_each(|(s, v)| *s += v);
            atb.iter_mut().zip(b).for_each(|(s, v)| *s += v);
        }
        // The ones column weighted by the weights: their sum.
        let wsum = ata[m * m - 1];
        for p in 0..m {
            for q in 0..p {
                ata[p * m + q] = ata[q * m + p];
            }
            ata[p * m + p] += 1e-6 * wsum;
        }
        coef = solve(ata, atb, m);
        if round + 1 < rounds {
            let next = used(round + 1);
            runs[..next]
                .par_iter()
                .zip(&mut res[..next])
                .for_each(|(run, res)| {
                    for (k, r) in res.iter_mut().enumerate() {
                        *r = -run.ts[k];
                    }
                    for (col, &cf) in run.cols.iter().zip(&coef) {
                        for (r, &x) in res.iter_mut().zip(col) {
                            *r += cf * x;
                        }
                    }
                });
        }
    }
    coef
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_fit_is_linear_and_close() {
        // t = 5 f2 - f3 + 7, with a few wild outliers the log loss must shrug off.
        let mut rng = Rng(11);
        let f: Vec<[i64; INPUTS]> = (0..6000)
            .map(|_| std::array::from_fn(|i| (rng.sym() * 200.0) as i64 * (i < 4) as i64))
            .collect();
        let t: Vec<i64> = f
            .iter()
            .enumerate()
            .map(|(k, r)| 5 * r[2] - r[3] + 7 + if k % 97 == 0 { 100_000 } else { 0 })
            .collect();
        let cfg = Config::default();
        let lin = fit_linear(&f, &t, &cfg).unwrap();
        lin.validate().unwrap();
        let (mut err, mut base) = (0f64, 0f64);
        for (r, &y) in f.iter().zip(&t).filter(|(_, &y)| y.abs() < 50_000) {
            err += (lin.bias(r) - y).abs() as f64;
            base += y.abs() as f64;
        }
        assert!(err < 0.02 * base, "linear bias: mean error {err} vs {base}");
        // The same fit as a network's direct path (where `fit` starts): linear, and the fast
        // evaluation skips its hidden layer with the same results.
        let (skeleton, xs, ts) = normalized(&f, &t, 1).unwrap();
        let net = linear(skeleton, &xs, &ts, &cfg);
        net.validate().unwrap();
        assert!(net.w2.iter().all(|&w| w == 0), "hidden layer unused");
        let packed = crate::nn::infer::Packed::new(&net);
        let (mut err, mut base) = (0f64, 0f64);
        for (k, (r, &y)) in f.iter().zip(&t).enumerate().filter(|(k, _)| k % 97 != 0) {
            assert_eq!(packed.bias(r), net.bias(r), "sample {k}");
            err += (net.bias(r) - y).abs() as f64;
            base += y.abs() as f64;
        }
        assert!(err < 0.02 * base, "mean error {err} vs {base}");
    }

    #[test]
    fn learns_a_linear_bias() {
        // t = 3 f0 - 2 f1 + noise: the fitted integer network should get close.
        let mut rng = Rng(7);
        let f: Vec<[i64; INPUTS]> = (0..4000)
            .map(|_| std::array::from_fn(|i| if i < 2 { (rng.sym() * 100.0) as i64 } else { 0 }))
            .collect();
        let t: Vec<i64> = f.iter().map(|r| 3 * r[0] - 2 * r[1]).collect();
        let net = fit(&f, &t, &Config::default()).unwrap();
        net.validate().unwrap();
        let err: f64 = f
            .iter()
            .zip(&t)
            .map(|(r, &y)| (net.bias(r) - y).abs() as f64)
            .sum::<f64>()
            / f.len() as f64;
        let base: f64 = t.iter().map(|&y| y.abs() as f64).sum::<f64>() / t.len() as f64;
        assert!(err < 0.1 * base, "mean error {err} vs {base}");
    }
}
