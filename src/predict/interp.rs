//! Multilevel interpolation on the integer grid (the idea behind SZ3's spline predictor,
//! written here for prequantized indices).
//!
//! Values are visited from a coarse lattice to the fine one: at each level of stride `s`
//! (powers of two, largest first) the points halfway between known ones are predicted along
//! z, then y, then x, by cubic interpolation from the known points at `±s` and `±3s`
//! (quadratic or linear where the block ends, the nearest known value at the far edge). All
//! arithmetic is on integers with round-half-up shifts, so the decoder rebuilds exactly the
//! encoder's predictions. Smooth fields leave tiny residuals on the fine levels, which hold
//! 7/8 of the points; this wins at loose bounds where Lorenzo's residual noise dominates.
//!
//! Two traversals: [`Interp`] (id 2) interpolates one dimension at a time; [`InterpMd`]
//! (id 4) first fills the points that are new in one coordinate, then those new in two and
//! in three, and predicts these from every dimension at once (a weighted mean of the 1-D
//! cubics, the smoother direction weighing more), which suits isotropic turbulence; the
//! encoder picks per block. Both may code the coarse levels (stride >= 2) with a smaller
//! feedback step, so the points every later level is interpolated from are more accurate.

use super::{BlockEncoder, Predictor};

pub const ID: u8 = 2;
pub const MD_ID: u8 = 4;

/// Interpolation one dimension at a time (predictor id 2).
pub struct Interp {
    /// Feedback step of the coarse levels (stride >= 2); 0: the block's own step.
    pub coarse: u8,
}

/// Multi-dimensional interpolation (block predictor id 4; not the same as `cd_values`'s
/// predictor word 4, auto with NGLR).
pub struct InterpMd {
    /// Feedback step of the coarse levels (stride >= 2); 0: the block's own step.
    pub coarse: u8,
}

/// The coarse-level feedback step the encoder uses with fine step `m`: about 3/4 of it,
/// odd (11 for the usual 15), so coarse points err by at most ~0.7 of the bound. Measured
/// on the grade-A fields: 0.8% fewer bits at equal PSNR than coding them with `m`.
pub fn coarse_step(m: i64) -> u8 {
    if m <= 1 {
        0
    } else {
        ((m * 3 / 4) | 1).min(255) as u8
    }
}

/// The feedback step at stride `s` (`usize::MAX` for the first point).
#[inline]
fn step_at(m: i64, coarse: u8, s: usize) -> i64 {
    if s >= 2 && coarse != 0 {
        coarse as i64
    } else {
        m
    }
}

/// Calls `visit(buf, index, prediction, stride)` for every point of a block in decoding
/// order. The prediction reads `buf` only at points visited before.
#[inline]
fn traverse(
    ext: [usize; 3],
    buf: &mut [i32],
    mut visit: impl FnMut(&mut [i32], usize, i64, usize),
) {
    let strides = [ext[1] * ext[2], ext[2], 1];
    visit(buf, 0, 0, usize::MAX);
    let max = ext.iter().copied().max().unwrap_or(1);
    if max <= 1 {
        return;
    }
    let mut s = 1usize << (usize::BITS - 1 - (max - 1).leading_zeros());
    while s >= 1 {
        for d in 0..3 {
            if ext[d] <= s {
                continue;
            }
            // Lattice steps per dimension for this pass: dims before d are at stride s, after at 2s.
            let step = [0, 1, 2].map(|k| if k < d { s } else { 2 * s });
            let sd = strides[d];
            let n = ext[d];
            let mut a = 0;
            while a < ext[0] {
                let mut b = 0;
                while b < ext[1] {
                    let mut c = 0;
                    while c < ext[2] {
                        let base = a * strides[0] + b * strides[1] + c * strides[2];
                        let mut t = s;
                        while t < n {
                            let i = base + t * sd;
                            // The same cubic the multi-dimensional traversal uses, rounded.
                            let (v, _, _) = along(buf, i, t, s, sd, n);
                            let pred = (v + 8) >> 4;
                            visit(buf, i, pred, s);
                            t += 2 * s;
                        }
                        c += if d == 2 { n.max(1) } else { step[2] };
                    }
                    b += if d == 1 { n.max(1) } else { step[1] };
                }
                a += if d == 0 { n.max(1) } else { step[0] };
            }
        }
        s /= 2;
    }
}

/// One-dimensional estimate along dim `d` (stride `sd`, extent `n`) for point `i` at
/// coordinate `t` (an odd multiple of `s`): `(estimate times 16, two-sided, |p1 - n1|)`.
/// [`traverse`] rounds it half up; [`md_prediction`] averages several.
#[inline(always)]
fn along(buf: &[i32], i: usize, t: usize, s: usize, sd: usize, n: usize) -> (i64, bool, i64) {
    let value = |j: usize| buf[j] as i64;
    let p1 = value(i - s * sd);
    if t + s >= n {
        return (16 * p1, false, 0);
    }
    let n1 = value(i + s * sd);
    let has_prev3 = t >= 3 * s;
    let has_next3 = t + 3 * s < n;
    let v = match (has_prev3, has_next3) {
        (true, true) => -value(i - 3 * s * sd) + 9 * p1 + 9 * n1 - value(i + 3 * s * sd),
        (true, false) => 2 * (-value(i - 3 * s * sd) + 6 * p1 + 3 * n1),
        (false, true) => 2 * (3 * p1 + 6 * n1 - value(i + 3 * s * sd)),
        (false, false) => 8 * (p1 + n1),
    };
    (v, true, (p1 - n1).abs())
}

/// Prediction of point `i` (coordinates `coord`, new in the dimensions where `pat` is 1) at
/// stride `s`: the mean of the two-sided 1-D estimates, each weighted by
/// `max(1, 2^20 / (min(|p1 - n1|, 2^24) + 16))` with `p1, n1` its neighbours at `∓s` (a flat
/// direction interpolates better); without a two-sided estimate, the mean of the one-sided
/// ones (the previous value along each dimension). Rounded half up (floor division).
#[inline(always)]
fn md_prediction(
    buf: &[i32],
    i: usize,
    coord: [usize; 3],
    pat: [usize; 3],
    s: usize,
    strides: [usize; 3],
    ext: [usize; 3],
) -> i64 {
    let (mut wv, mut wsum) = (0i64, 0i64);
    let (mut one, mut ones) = (0i64, 0i64);
    for d in 0..3 {
        if pat[d] == 1 {
            let (v, two_sided, g) = along(buf, i, coord[d], s, strides[d], ext[d]);
            if two_sided {
                let w = ((1i64 << 20) / (g.min(1 << 24) + 16)).max(1);
                wv += w * v;
                wsum += w;
            } else {
                one += v;
                ones += 1;
            }
        }
    }
    let (num, den) = if wsum > 0 {
        (wv, 16 * wsum)
    } else {
        (one, 16 * ones.max(1))
    };
    (num + den / 2).div_euclid(den)
}

/// The multi-dimensional traversal: at each stride, the points new in one coordinate (z, y,
/// x), then in two (zy, zx, yx), then in three, each group in C order.
#[inline]
fn traverse_md(
    ext: [usize; 3],
    buf: &mut [i32],
    mut visit: impl FnMut(&mut [i32], usize, i64, usize),
) {
    let strides = [ext[1] * ext[2], ext[2], 1];
    visit(buf, 0, 0, usize::MAX);
    let max = ext.iter().copied().max().unwrap_or(1);
    if max <= 1 {
        return;
    }
    let mut s = 1usize << (usize::BITS - 1 - (max - 1).leading_zeros());
    const PATTERNS: [[usize; 3]; 7] = [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 1],
    ];
    while s >= 1 {
        for pat in PATTERNS {
            if (0..3).any(|d| pat[d] == 1 && ext[d] <= s) {
                continue;
            }
            let start = pat.map(|p| p * s);
            let mut a = start[0];
            while a < ext[0] {
                let mut b = start[1];
                while b < ext[1] {
                    let mut c = start[2];
                    while c < ext[2] {
                        let i = a * strides[0] + b * strides[1] + c * strides[2];
                        let pred = md_prediction(buf, i, [a, b, c], pat, s, strides, ext);
                        visit(buf, i, pred, s);
                        c += 2 * s;
                    }
                    b += 2 * s;
                }
                a += 2 * s;
            }
        }
        s /= 2;
    }
}

/// Visits a block in the order of the one-dimensional or the multi-dimensional traversal.
#[inline(always)]
fn walk(
    md: bool,
    ext: [usize; 3],
    buf: &mut [i32],
    mut visit: impl FnMut(&mut [i32], usize, i64, usize),
) {
    if md {
        traverse_md(ext, buf, &mut visit)
    } else {
        traverse(ext, buf, &mut visit)
    }
}

/// [`Predictor::encode`] of either interpolation.
fn encode_levels(
    md: bool,
    coarse: u8,
    blk: &mut BlockEncoder<'_>,
    q: &mut [i32],
    ext: [usize; 3],
    codes: &mut [i32],
) {
    let m = blk.m;
    walk(md, ext, q, |buf, i, pred, s| {
        codes[i] = blk.settle_with(buf, i, pred, step_at(m, coarse, s))
    });
}

/// [`Predictor::decode`] of either interpolation: visited points hold reconstructed indices,
/// the others still hold codes.
fn decode_levels(md: bool, coarse: u8, codes: &mut [i32], ext: [usize; 3], m: i32) {
    walk(md, ext, codes, |buf, i, pred, s| {
        buf[i] =
            pred.wrapping_add((buf[i] as i64).wrapping_mul(step_at(m as i64, coarse, s))) as i32;
    });
}

impl Predictor for Interp {
    fn id(&self) -> u8 {
        ID
    }

    fn coarse(&self) -> u8 {
        self.coarse
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        encode_levels(false, self.coarse, blk, q, ext, codes);
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        decode_levels(false, self.coarse, codes, ext, m);
    }
}

impl Predictor for InterpMd {
    fn id(&self) -> u8 {
        MD_ID
    }

    fn coarse(&self) -> u8 {
        self.coarse
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        encode_levels(true, self.coarse, blk, q, ext, codes);
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        decode_levels(true, self.coarse, codes, ext, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::testing::round_trip;

    fn check(ext: [usize; 3]) {
        let n: usize = ext.iter().product();
        let mut seen = vec![0u8; n];
        traverse(ext, &mut vec![0; n], |_, i, _, _| seen[i] += 1);
        assert!(seen.iter().all(|&c| c == 1), "{ext:?}: each point once");
        let mut seen = vec![0u8; n];
        traverse_md(ext, &mut vec![0; n], |_, i, _, _| seen[i] += 1);
        assert!(
            seen.iter().all(|&c| c == 1),
            "{ext:?}: each point once (md)"
        );
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 + (i as f64 * 0.01).sin() * 100.0)
            .collect();
        for m in [1, 3, 15] {
            for coarse in [0, coarse_step(m)] {
                round_trip(&Interp { coarse }, &x, ext, m, 0.5);
                round_trip(&InterpMd { coarse }, &x, ext, m, 0.5);
            }
        }
    }

    #[test]
    fn round_trips_odd_shapes() {
        for ext in [
            [1, 1, 1],
            [1, 1, 2],
            [1, 1, 17],
            [1, 9, 13],
            [5, 6, 7],
            [40, 1, 3],
            [33, 17, 65],
            [2, 2, 2],
        ] {
            check(ext);
        }
    }

    #[test]
    fn cubic_field_is_predicted_exactly_inside() {
        let ext = [1, 1, 64];
        let x: Vec<f64> = (0..64).map(|x| (3 * x * x + 5 * x) as f64).collect();
        let mut q: Vec<i32> = x.iter().map(|&v| v as i32).collect();
        let mut blk = BlockEncoder {
            x: &x,
            escaped: vec![false; 64],
            grid: crate::quant::Grid {
                mid: 0.0,
                step: 1.0,
            },
            eb: 0.5,
            single: false,
            m: 1,
        };
        let mut codes = vec![0; 64];
        Interp { coarse: 0 }.encode(&mut blk, &mut q, ext, &mut codes);
        let big = codes.iter().skip(8).filter(|v| v.abs() > 1).count();
        assert!(big < 8, "{codes:?}");
    }

    #[test]
    fn coarse_step_is_odd_and_tighter() {
        assert_eq!(coarse_step(1), 0);
        assert_eq!(coarse_step(15), 11);
        for m in (3..200).step_by(2) {
            let c = coarse_step(m) as i64;
            assert!(c % 2 == 1 && c <= m, "m {m}: {c}");
        }
    }

    #[test]
    fn md_weights_the_flat_direction() {
        // A 3x3 plane, known corners and edge midpoints; the centre is new in y and x. Along
        // x the row is flat (10, 10), along y it jumps (0, 100): the flat estimate dominates.
        let ext = [1, 3, 3];
        let buf = vec![0, 0, 0, 10, 0, 10, 100, 100, 100];
        let p = md_prediction(&buf, 4, [0, 1, 1], [0, 1, 1], 1, [9, 3, 1], ext);
        // Weights 2^20/16 and 2^20/116: (10 * 65536 + 50 * 9039) / 74575, rounded; the plain
        // mean would be 30.
        assert_eq!(p, 15);
    }
}
