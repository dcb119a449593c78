//! Lorenzo with fitted weights (predictor id 5): the seven neighbours of 3D Lorenzo, each
//! with its own weight, fitted to the block by the encoder and stored at the start of the
//! block's payload. Plain Lorenzo's weights are `±1`; with error feedback the neighbours
//! carry coding noise, which those weights amplify sevenfold, and smooth or anisotropic blocks
//! want other weights (on the grade-A fields, blocks of vorticity3d and GloSea4 at rel 1e-3
//! code 10-35% smaller).
//!
//! At an inner point (one whose neighbours along every dimension longer than 1 lie in the
//! block) the prediction is `floor((Σ w_j q_j + 2^11) / 2^12)` over the neighbours in the
//! order `w, n, u, nw, uw, un, unw` (`x-1`, `y-1`, `z-1`, then the pairs and the triple),
//! with `w_j` signed 16-bit integers in units of `2^-12`, values outside the block counting as
//! zero. On the block's first row, plane and column it is plain Lorenzo, which there reduces
//! to the Lorenzo predictor of fewer dimensions and so stays exact on constant data.

use super::lorenzo::{self, for_each_row, Rows};
use super::{BlockEncoder, Predictor};
use crate::error::{Error, Result};

pub const ID: u8 = 5;

/// Fraction bits of the weights.
const SHIFT: u32 = 12;
/// The weights' bytes at the start of a block's payload.
pub const HEADER: usize = 14;
/// Plain Lorenzo in these units.
const LORENZO: [i16; 7] = [4096, 4096, 4096, -4096, -4096, -4096, 4096];

/// Lorenzo with fitted weights.
pub struct FittedLorenzo {
    pub w: [i16; 7],
}

impl FittedLorenzo {
    /// The predictor whose weights open `payload`.
    pub fn read(payload: &[u8]) -> Result<FittedLorenzo> {
        let head = payload.get(..HEADER).ok_or(Error::Truncated {
            what: "fitted Lorenzo weights",
        })?;
        Ok(FittedLorenzo {
            w: std::array::from_fn(|j| i16::from_le_bytes([head[2 * j], head[2 * j + 1]])),
        })
    }
}

/// The prediction of element `x` of the current row (earlier elements already final), at an
/// inner point: one whose neighbours along every dimension longer than 1 are in the block.
#[inline(always)]
fn row_prediction(w: &[i64; 7], cur: &[i32], [up, front, corner]: &Rows, x: usize) -> i64 {
    let s = w[0] * cur[x - 1] as i64
        + w[1] * up[x] as i64
        + w[2] * front[x] as i64
        + w[3] * up[x - 1] as i64
        + w[4] * front[x - 1] as i64
        + w[5] * corner[x] as i64
        + w[6] * corner[x - 1] as i64;
    (s + (1 << (SHIFT - 1))) >> SHIFT
}

/// Calls `visit(buf, i, prediction)` for every point in C order: the fitted weights at inner
/// points, plain Lorenzo (of the block's dimensionality) on the faces.
#[inline(always)]
fn walk(
    w: &[i16; 7],
    buf: &mut [i32],
    ext: [usize; 3],
    mut visit: impl FnMut(&mut [i32], usize, i64),
) {
    let w = w.map(|w| w as i64);
    let [nz, ny, nx] = ext;
    let mut row_index = 0;
    for_each_row(buf, ext, |buf, cur, rows| {
        let (z, y) = (row_index / ny, row_index % ny);
        row_index += 1;
        let inner_row = (z > 0 || nz == 1) && (y > 0 || ny == 1);
        for x in 0..nx {
            let pred = if inner_row && x > 0 {
                row_prediction(&w, &buf[cur..cur + nx], rows, x)
            } else {
                lorenzo::row_prediction(&buf[cur..cur + nx], rows, x)
            };
            visit(buf, cur + x, pred);
        }
    });
}

impl Predictor for FittedLorenzo {
    fn id(&self) -> u8 {
        ID
    }

    fn header(&self) -> Vec<u8> {
        self.w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        walk(&self.w, q, ext, |q, i, pred| {
            codes[i] = blk.settle(q, i, pred)
        });
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        let m = m as i64;
        walk(&self.w, codes, ext, |buf, i, pred| {
            buf[i] = pred.wrapping_add(buf[i] as i64 * m) as i32;
        });
    }
}

/// Points [`fit`] samples per block.
const FIT_SAMPLES: usize = 2048;

/// The dimensions (z, y, x) each neighbour steps back along, in weight order.
const STEPS: [[bool; 3]; 7] = [
    [false, false, true],
    [false, true, false],
    [true, false, false],
    [false, true, true],
    [true, false, true],
    [true, true, false],
    [true, true, true],
];

/// The weights for a block of fine indices `q` coded with feedback step `m` (encode only), or
/// `None` when they are not estimated to beat plain Lorenzo by 1%. Only neighbours along
/// dimensions longer than 1 count, and their weights sum to one, so a constant block is
/// predicted exactly whatever its level. A sample of inner points gives features `f` and
/// targets `t`; the known values carry coding noise of variance `v = (m^2 - 1) / 12`, which
/// weights `w` amplify by `Σ w_j^2`. A residual `r` costs about `log2(1 + s / m)` with
/// `s = sqrt(r^2 + v Σ w_j^2)`; iteratively reweighted least squares (weights
/// `1 / (s + m)^2`, the noise as a ridge term) lowers it, from plain Lorenzo's weights.
pub fn fit(q: &[i32], ext: [usize; 3], m: i64) -> Option<(FittedLorenzo, f64)> {
    let [nz, ny, nx] = ext;
    let long = [nz > 1, ny > 1, nx > 1];
    let active: Vec<usize> = (0..7)
        .filter(|&j| (0..3).all(|d| !STEPS[j][d] || long[d]))
        .collect();
    // One neighbour (1-D blocks) leaves nothing to fit.
    if !long[2] || active.len() < 3 {
        return None;
    }
    let (z0, y0) = (usize::from(long[0]), usize::from(long[1]));
    let inner = (nz - z0) * (ny - y0) * (nx - 1);
    let step = inner.div_ceil(FIT_SAMPLES).max(1);
    let back = |j: usize| -> usize {
        (STEPS[j][0] as usize) * ny * nx + (STEPS[j][1] as usize) * nx + STEPS[j][2] as usize
    };
    let mut f: Vec<[f64; 7]> = Vec::with_capacity(FIT_SAMPLES + 1);
    let mut t: Vec<f64> = Vec::with_capacity(FIT_SAMPLES + 1);
    let per_plane = (ny - y0) * (nx - 1);
    for k in (0..inner).step_by(step) {
        let (z, rest) = (z0 + k / per_plane, k % per_plane);
        let (y, x) = (y0 + rest / (nx - 1), 1 + rest % (nx - 1));
        let i = (z * ny + y) * nx + x;
        let mut row = [0f64; 7];
        for (x, &j) in row.iter_mut().zip(&active) {
            *x = q[i - back(j)] as f64;
        }
        f.push(row);
        t.push(q[i] as f64);
    }
    let n = active.len();
    let lorenzo: Vec<f64> = active.iter().map(|&j| LORENZO[j] as f64 / 4096.0).collect();
    let mf = m as f64;
    let v = (m * m - 1) as f64 / 12.0;
    let predict = |w: &[f64], f: &[f64]| -> f64 { w.iter().zip(f).map(|(a, b)| a * b).sum() };
    let cost = |w: &[f64]| -> f64 {
        let noise = v * w.iter().map(|a| a * a).sum::<f64>();
        f.iter()
            .zip(&t)
            .map(|(f, &t)| super::residual_cost(t - predict(w, f), noise, mf))
            .sum()
    };
    // The weights sum to one: fit on differences to the last neighbour,
    // `t - f_last = Σ_{j<last} w_j (f_j - f_last)`, `w_last = 1 - Σ_{j<last} w_j`.
    let last = n - 1;
    let mut w = lorenzo.clone();
    let mut lorenzo_cost = 0.0;
    for round in 0..2 {
        let noise = v * w.iter().map(|a| a * a).sum::<f64>();
        let mut g = vec![vec![0f64; last]; last];
        let mut h = vec![0f64; last];
        let mut total = 0.0;
        for (f, &t) in f.iter().zip(&t) {
            let r = t - predict(&w, f);
            if round == 0 {
                lorenzo_cost += super::residual_cost(r, noise, mf);
            }
            let s = (r * r + noise).sqrt() + mf;
            let c = 1.0 / (s * s);
            total += c;
            for a in 0..last {
                let da = f[a] - f[last];
                h[a] += c * da * (t - f[last]);
                for b in a..last {
                    g[a][b] += c * da * (f[b] - f[last]);
                }
            }
        }
        // The noise term v Σ w_j^2 with w_last = 1 - Σ_{j<last} w_j.
        // (Only the upper triangle was summed; the lower one mirrors it.)
        let upper = g.clone();
        for (a, row) in g.iter_mut().enumerate() {
            h[a] += v * total;
            for (b, x) in row.iter_mut().enumerate() {
                *x = if b < a { upper[b][a] } else { *x }
                    + v * total * if a == b { 2.0 } else { 1.0 };
            }
        }
        let u = solve(g, h)?;
        w = u.clone();
        w.push(1.0 - u.iter().sum::<f64>());
    }
    let mut weights = [0i16; 7];
    let mut sum = 0i32;
    for (k, &j) in active[..last].iter().enumerate() {
        let a = (w[k] * 4096.0).round().clamp(-8192.0, 8192.0) as i16;
        weights[j] = a;
        sum += a as i32;
    }
    weights[active[last]] = (4096 - sum) as i16;
    let used: Vec<f64> = active.iter().map(|&j| weights[j] as f64 / 4096.0).collect();
    let ratio = cost(&used) / lorenzo_cost;
    (ratio < 0.99).then_some((FittedLorenzo { w: weights }, ratio))
}

/// Solves `g x = h` (Gaussian elimination with partial pivoting); `None` when `g` is
/// singular or the solution is not finite.
fn solve(mut g: Vec<Vec<f64>>, mut h: Vec<f64>) -> Option<Vec<f64>> {
    let n = h.len();
    for c in 0..n {
        let p = (c..n).max_by(|&a, &b| g[a][c].abs().total_cmp(&g[b][c].abs()))?;
        if g[p][c].abs() < 1e-300 {
            return None;
        }
        g.swap(c, p);
        h.swap(c, p);
        let (top, rest) = g.split_at_mut(c + 1);
        let pivot = &top[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let k = row[c] / pivot[c];
            for (x, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                *x -= k * p;
            }
            h[c + 1 + r] -= k * h[c];
        }
    }
    let mut x = vec![0f64; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|j| g[c][j] * x[j]).sum();
        x[c] = (h[c] - s) / g[c][c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::testing::{lossless_codes, round_trip};

    fn field(ext: [usize; 3]) -> Vec<f64> {
        (0..ext.iter().product::<usize>())
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 + (i as f64 * 0.01).sin() * 100.0)
            .collect()
    }

    #[test]
    fn round_trips_odd_shapes_and_weights() {
        let weights = [
            LORENZO,
            [2000, 2500, 1500, -1000, -500, -700, 296],
            [i16::MAX, i16::MIN, 0, 0, 0, 0, 0],
        ];
        for ext in [
            [1, 1, 1],
            [1, 1, 9],
            [1, 7, 5],
            [5, 6, 7],
            [3, 1, 8],
            [9, 17, 33],
        ] {
            let x = field(ext);
            for w in weights {
                for m in [1, 3, 15] {
                    round_trip(&FittedLorenzo { w }, &x, ext, m, 0.5);
                }
            }
        }
    }

    #[test]
    fn header_round_trips_and_short_ones_are_refused() {
        let p = FittedLorenzo {
            w: [1, -2, 300, -4000, 5, 32767, -32768],
        };
        let mut payload = p.header();
        assert_eq!(payload.len(), HEADER);
        payload.extend([9, 9, 9]);
        assert_eq!(FittedLorenzo::read(&payload).unwrap().w, p.w);
        let e = FittedLorenzo::read(&payload[..HEADER - 1])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("fitted Lorenzo weights"), "{e}");
    }

    #[test]
    fn fit_keeps_constant_blocks_exact_and_finds_smoother_weights() {
        let ext = [12, 20, 24];
        let n: usize = ext.iter().product();
        // A smooth field at a coarse feedback step: noise dominates, so weights with a smaller
        // sum of squares than Lorenzo's 7 win, and they sum to one (2^12).
        let smooth: Vec<i32> = (0..n)
            .map(|i| {
                let (z, y, x) = (i / 480, (i / 24) % 20, i % 24);
                (1e6 + 300.0 * ((x as f64) * 0.3).sin() + 200.0 * ((y + z) as f64 * 0.2).cos())
                    as i32
            })
            .collect();
        let (f, ratio) = fit(&smooth, ext, 15).expect("pays");
        assert!(ratio < 0.99, "{ratio}");
        assert_eq!(
            f.w.iter().map(|&w| w as i32).sum::<i32>(),
            4096,
            "{:?}",
            f.w
        );
        let norm: f64 = f.w.iter().map(|&w| (w as f64 / 4096.0).powi(2)).sum();
        assert!(norm < 7.0, "{:?}", f.w);
        // Whatever the weights, a constant block codes to zeros after its first value.
        let codes = lossless_codes(&f, &vec![123_456i32; n], ext);
        assert!(codes[1..].iter().all(|&c| c == 0));
        // One dimension leaves nothing to fit.
        assert!(fit(&smooth[..24], [1, 1, 24], 15).is_none());
    }
}
