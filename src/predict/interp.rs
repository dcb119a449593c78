//! Multilevel interpolation on the integer grid (the idea behind SZ3's spline predictor,
//! written here for prequantized indices).
//!
//! Values are visited from a coarse lattice to the fine one: at each level of stride `s`
//! (powers of two, largest first) the points halfway between known ones are predicted along
//! z, then y, then x, by cubic interpolation from the known points at `±s` and `±3s`
//! (quadratic or linear where the block ends, the nearest known value at the far edge). The
//! cubic's weights are tuned per block ([`Kernel`]): smooth fields want flatter weights than
//! the classic `(-1, 9, 9, -1) / 16`, turbulent ones steeper. All
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
use crate::error::{Error, Result};

pub const ID: u8 = 2;
pub const MD_ID: u8 = 4;

/// Interpolation one dimension at a time (predictor id 2).
pub struct Interp {
    /// Feedback step of the coarse levels (stride >= 2); 0: the block's own step.
    pub coarse: u8,
    pub kernel: Kernel,
}

/// Multi-dimensional interpolation (block predictor id 4; not the same as `cd_values`'s
/// predictor word 4, auto with NGLR).
pub struct InterpMd {
    /// Feedback step of the coarse levels (stride >= 2); 0: the block's own step.
    pub coarse: u8,
    pub kernel: Kernel,
}

/// The two-sided cubics' weights: `(-k (p3 + n3) + (40 + k) (p1 + n1)) / 80` from the known
/// values at `∓s` (`p1`, `n1`) and `∓3s` (`p3`, `n3`), one `k` for the finest level (`s = 1`)
/// and one for the coarser ones. `k = 5` is the classic cubic through the four points,
/// `(-1, 9, 9, -1) / 16`; `k = 0` is linear. Stored in directory byte 3 as two signed 4-bit
/// offsets `k - 5` (fine in the low nibble), so blocks written before the byte was used (0)
/// keep the classic cubic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    fine: u8,
    coarse: u8,
}

impl Kernel {
    /// The classic cubic at every level (`k = 5`).
    pub const CUBIC: Kernel = Kernel { fine: 5, coarse: 5 };
    /// The largest `k` the format allows.
    pub const MAX: u8 = 12;

    /// The kernel with outer weights `fine / 80` and `coarse / 80`, each at most `MAX`.
    pub fn new(fine: u8, coarse: u8) -> Option<Kernel> {
        (fine <= Self::MAX && coarse <= Self::MAX).then_some(Kernel { fine, coarse })
    }

    /// The weight `k` at stride `s`.
    #[inline(always)]
    fn at(self, s: usize) -> i64 {
        if s == 1 {
            self.fine as i64
        } else {
            self.coarse as i64
        }
    }

    /// Directory byte 3: `fine - 5` in the low nibble, `coarse - 5` in the high one.
    pub fn to_byte(self) -> u8 {
        let nibble = |k: u8| (k.wrapping_sub(5)) & 0xf;
        nibble(self.fine) | nibble(self.coarse) << 4
    }

    /// The kernel of directory byte 3, if in range.
    pub fn from_byte(b: u8) -> Option<Kernel> {
        // Sign-extend each nibble: 0..7 stay, 8..15 are -8..-1.
        let k = |n: u8| (((n << 4) as i8) >> 4) as i16 + 5;
        let (fine, coarse) = (k(b & 0xf), k(b >> 4));
        let ok = |k: i16| (0..=Self::MAX as i16).contains(&k);
        (ok(fine) && ok(coarse)).then_some(Kernel {
            fine: fine as u8,
            coarse: coarse as u8,
        })
    }
}

/// The kernel of directory byte 3 ([`Kernel::from_byte`]), or why it cannot be one.
pub fn kernel_of(byte: u8) -> Result<Kernel> {
    Kernel::from_byte(byte).ok_or_else(|| {
        Error::Corrupt(format!(
            "interpolation kernel byte {byte:#04x} out of range"
        ))
    })
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

/// Pairs [`fit_kernel`] samples per level and block: enough to place the kernel within one
/// step of its best on the grade-A fields, few enough to cost about 1% of coding the block.
const KERNEL_SAMPLES: usize = 2048;

/// The kernel for a block of fine indices `q` (encode only), each level's weight chosen by
/// the estimated cost of its two-sided cubics: the finest level (`s = 1`), which predicts
/// most points, and the next (`s = 2`) for the coarse ones. See `fit_level`.
pub fn fit_kernel(q: &[i32], ext: [usize; 3], m: i64, coarse: u8) -> Kernel {
    let mc = if coarse != 0 { coarse as i64 } else { m };
    Kernel {
        fine: fit_level(q, ext, 1, m, mc),
        coarse: fit_level(q, ext, 2, mc, mc),
    }
}

/// The weight `k` for level `s` whose points are coded with feedback step `m` and predicted
/// from points coded with `mc`. A sample of points `i` at odd multiples of `s` along one
/// dimension gives `e = q - (p1 + n1) / 2` and `g = (p1 + n1) - (p3 + n3)`, so weight `k`
/// leaves `e - k g / 80`. The known values carry coding noise of variance
/// `v = (mc^2 - 1) / 12`, which the kernel amplifies by `1/2 + 2a + 4a^2`, `a = k / 80`. A
/// residual of size `r` costs about `log2(1 + r / m)`; the weight with the smallest sum wins,
/// found on a coarse grid and refined around its best. The classic `k = 5` without samples.
fn fit_level(q: &[i32], ext: [usize; 3], s: usize, m: i64, mc: i64) -> u8 {
    let v = (mc * mc - 1) as f64 / 12.0;
    let strides = [ext[1] * ext[2], ext[2], 1];
    let mut pairs: Vec<(f64, f64)> = Vec::with_capacity(KERNEL_SAMPLES + 64);
    for d in 0..3 {
        if ext[d] < 6 * s + 1 {
            continue;
        }
        // Rows along d through multiples of 2s in the other two dimensions, evenly sampled.
        let (o1, o2) = match d {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let cols = ext[o2].div_ceil(2 * s);
        let rows = ext[o1].div_ceil(2 * s) * cols;
        let per_row = (ext[d] - 6 * s).div_ceil(2 * s);
        let step = (rows * per_row).div_ceil(KERNEL_SAMPLES / 3).max(1);
        let sd = strides[d] * s;
        for r in (0..rows).step_by(step) {
            let base = 2 * s * ((r / cols) * strides[o1] + (r % cols) * strides[o2]);
            for t in (3 * s..ext[d] - 3 * s).step_by(2 * s) {
                let i = base + t * strides[d];
                let at = |j: usize| q[j] as f64;
                let near = at(i - sd) + at(i + sd);
                let g = near - at(i - 3 * sd) - at(i + 3 * sd);
                pairs.push((at(i) - near / 2.0, g));
            }
        }
    }
    if pairs.is_empty() {
        return Kernel::CUBIC.fine;
    }
    let m = m as f64;
    let cost = |k: u8| {
        let a = k as f64 / 80.0;
        let noise = v * (0.5 + 2.0 * a + 4.0 * a * a);
        pairs
            .iter()
            .map(|&(e, g)| super::residual_cost(e - a * g, noise, m))
            .sum::<f64>()
    };
    let best = |ks: &mut dyn Iterator<Item = u8>| {
        ks.map(|k| (cost(k), k))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map_or(Kernel::CUBIC.fine, |c| c.1)
    };
    let grid = best(&mut (0..=Kernel::MAX).step_by(4));
    best(&mut (grid.saturating_sub(3)..=(grid + 3).min(Kernel::MAX)))
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
    k: Kernel,
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
                            let (v, _, _) = along(buf, i, t, s, sd, n, k.at(s));
                            let pred = (v + 40).div_euclid(80);
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
/// coordinate `t` (an odd multiple of `s`): `(estimate times 80, two-sided, |p1 - n1|)`.
/// [`traverse`] rounds it half up; [`md_prediction`] averages several.
#[inline(always)]
fn along(
    buf: &[i32],
    i: usize,
    t: usize,
    s: usize,
    sd: usize,
    n: usize,
    k: i64,
) -> (i64, bool, i64) {
    let value = |j: usize| buf[j] as i64;
    let p1 = value(i - s * sd);
    if t + s >= n {
        return (80 * p1, false, 0);
    }
    let n1 = value(i + s * sd);
    let has_prev3 = t >= 3 * s;
    let has_next3 = t + 3 * s < n;
    let v = match (has_prev3, has_next3) {
        (true, true) => (40 + k) * (p1 + n1) - k * (value(i - 3 * s * sd) + value(i + 3 * s * sd)),
        (true, false) => 10 * (-value(i - 3 * s * sd) + 6 * p1 + 3 * n1),
        (false, true) => 10 * (3 * p1 + 6 * n1 - value(i + 3 * s * sd)),
        (false, false) => 40 * (p1 + n1),
    };
    (v, true, (p1 - n1).abs())
}

/// Prediction of point `i` (coordinates `coord`, new in the dimensions where `pat` is 1) at
/// stride `s`: the mean of the two-sided 1-D estimates, each weighted by
/// `max(1, 2^20 / (min(|p1 - n1|, 2^24) + 16))` with `p1, n1` its neighbours at `∓s` (a flat
/// direction interpolates better); without a two-sided estimate, the mean of the one-sided
/// ones (the previous value along each dimension). Rounded half up (floor division).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn md_prediction(
    buf: &[i32],
    i: usize,
    coord: [usize; 3],
    pat: [usize; 3],
    s: usize,
    strides: [usize; 3],
    ext: [usize; 3],
    k: i64,
) -> i64 {
    let (mut wv, mut wsum) = (0i64, 0i64);
    let (mut one, mut ones) = (0i64, 0i64);
    for d in 0..3 {
        if pat[d] == 1 {
            let (v, two_sided, g) = along(buf, i, coord[d], s, strides[d], ext[d], k);
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
        (wv, 80 * wsum)
    } else {
        (one, 80 * ones.max(1))
    };
    (num + den / 2).div_euclid(den)
}

/// The multi-dimensional traversal: at each stride, the points new in one coordinate (z, y,
/// x), then in two (zy, zx, yx), then in three, each group in C order.
#[inline]
fn traverse_md(
    ext: [usize; 3],
    k: Kernel,
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
                        let pred = md_prediction(buf, i, [a, b, c], pat, s, strides, ext, k.at(s));
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
    kernel: Kernel,
    buf: &mut [i32],
    mut visit: impl FnMut(&mut [i32], usize, i64, usize),
) {
    let k = kernel;
    if md {
        traverse_md(ext, k, buf, &mut visit)
    } else {
        traverse(ext, k, buf, &mut visit)
    }
}

/// [`Predictor::encode`] of either interpolation.
fn encode_levels(
    md: bool,
    coarse: u8,
    kernel: Kernel,
    blk: &mut BlockEncoder<'_>,
    q: &mut [i32],
    ext: [usize; 3],
    codes: &mut [i32],
) {
    let m = blk.m;
    walk(md, ext, kernel, q, |buf, i, pred, s| {
        codes[i] = blk.settle_with(buf, i, pred, step_at(m, coarse, s))
    });
}

/// [`Predictor::decode`] of either interpolation: visited points hold reconstructed indices,
/// the others still hold codes.
fn decode_levels(md: bool, coarse: u8, kernel: Kernel, codes: &mut [i32], ext: [usize; 3], m: i32) {
    walk(md, ext, kernel, codes, |buf, i, pred, s| {
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

    fn kernel(&self) -> u8 {
        self.kernel.to_byte()
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        encode_levels(false, self.coarse, self.kernel, blk, q, ext, codes);
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        decode_levels(false, self.coarse, self.kernel, codes, ext, m);
    }
}

impl Predictor for InterpMd {
    fn id(&self) -> u8 {
        MD_ID
    }

    fn coarse(&self) -> u8 {
        self.coarse
    }

    fn kernel(&self) -> u8 {
        self.kernel.to_byte()
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        encode_levels(true, self.coarse, self.kernel, blk, q, ext, codes);
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        decode_levels(true, self.coarse, self.kernel, codes, ext, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::testing::{lossless_codes, round_trip};

    fn check(ext: [usize; 3]) {
        let n: usize = ext.iter().product();
        let mut seen = vec![0u8; n];
        traverse(ext, Kernel::CUBIC, &mut vec![0; n], |_, i, _, _| {
            seen[i] += 1
        });
        assert!(seen.iter().all(|&c| c == 1), "{ext:?}: each point once");
        let mut seen = vec![0u8; n];
        traverse_md(ext, Kernel::CUBIC, &mut vec![0; n], |_, i, _, _| {
            seen[i] += 1
        });
        assert!(
            seen.iter().all(|&c| c == 1),
            "{ext:?}: each point once (md)"
        );
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 + (i as f64 * 0.01).sin() * 100.0)
            .collect();
        for m in [1, 3, 15] {
            for coarse in [0, coarse_step(m)] {
                for (fine, coarse_k) in [(0, 5), (5, 5), (7, 3), (Kernel::MAX, 0)] {
                    let kernel = Kernel::new(fine, coarse_k).expect("in range");
                    round_trip(&Interp { coarse, kernel }, &x, ext, m, 0.5);
                    round_trip(&InterpMd { coarse, kernel }, &x, ext, m, 0.5);
                }
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
        let q: Vec<i32> = (0..64).map(|x| 3 * x * x + 5 * x).collect();
        let interp = Interp {
            coarse: 0,
            kernel: Kernel::CUBIC,
        };
        let codes = lossless_codes(&interp, &q, ext);
        let big = codes.iter().skip(8).filter(|v| v.abs() > 1).count();
        assert!(big < 8, "{codes:?}");
    }

    #[test]
    fn classic_kernel_is_the_four_point_cubic() {
        // Known values 0, 10, 30, 60 at -3, -1, 1, 3: (-1 * 0 + 9 * 10 + 9 * 30 - 60) / 16.
        let buf = [0, 0, 10, 0, 30, 0, 60];
        for (k, want) in [(5, 300 * 5), (0, 40 * 40), (12, 52 * 40 - 12 * 60)] {
            assert_eq!(along(&buf, 3, 3, 1, 1, 7, k).0, want, "k {k}");
        }
        assert_eq!(Kernel::CUBIC.to_byte(), 0);
        for fine in 0..=Kernel::MAX {
            for coarse in 0..=Kernel::MAX {
                let kernel = Kernel::new(fine, coarse).unwrap();
                assert_eq!(Kernel::from_byte(kernel.to_byte()), Some(kernel));
                assert_eq!((kernel.at(1), kernel.at(2)), (fine as i64, coarse as i64));
            }
        }
        // Fine 0 (offset -5, nibble 0xb), coarse 12 (offset 7).
        assert_eq!(Kernel::new(0, 12).unwrap().to_byte(), 0x7b);
        assert_eq!(Kernel::new(Kernel::MAX + 1, 5), None);
        // Nibble offsets 8..15 are -8..-1: k = -3..4; below 0 is refused, as is 13..20.
        assert_eq!(Kernel::from_byte(0x0a), None);
        assert_eq!(Kernel::from_byte(0xa0), None);
        assert_eq!(Kernel::from_byte(0x0b), Kernel::new(0, 5));
    }

    #[test]
    fn fitted_kernel_follows_the_field() {
        let ext = [16, 16, 64];
        let field = |f: &dyn Fn(f64) -> f64| -> Vec<i32> {
            (0..16 * 16 * 64)
                .map(|i| f((i % 64) as f64 + (i / 64 % 16) as f64 + (i / 1024) as f64) as i32)
                .collect()
        };
        // Lossless (m = 1) on a cubic: the classic kernel predicts it exactly.
        let cubic = field(&|t| t * t * t / 8.0);
        assert_eq!(fit_kernel(&cubic, ext, 1, 0), Kernel::CUBIC);
        // A coarse feedback step on a gentle slope: coding noise dominates, so flatter
        // kernels, which amplify it less, win (linear on the finest level).
        let slope = fit_kernel(&field(&|t| 1000.0 * (t / 40.0).sin()), ext, 15, 11);
        assert!(slope.fine == 0 && slope.coarse < 5, "{slope:?}");
        // A wave of ten samples per period, lossless: the cubic undershoots, and the fit
        // steepens the kernel, by level. Exactly, `a = (1 - cos w) / (2 (cos w - cos 3w))`:
        // 0.085 (k = 7) at w = pi / 5, 0.31 at the coarse levels' w = 2 pi / 5, beyond MAX.
        let wave = field(&|t| 1000.0 * (t * std::f64::consts::PI / 5.0).sin());
        assert_eq!(
            fit_kernel(&wave, ext, 1, 0),
            Kernel::new(7, Kernel::MAX).unwrap()
        );
        // Too short in every dimension for a two-sided cubic: the classic kernel.
        assert_eq!(fit_kernel(&[0; 27], [3, 3, 3], 15, 11), Kernel::CUBIC);
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
        let p = md_prediction(&buf, 4, [0, 1, 1], [0, 1, 1], 1, [9, 3, 1], ext, 5);
        // Weights 2^20/16 and 2^20/116: (10 * 65536 + 50 * 9039) / 74575, rounded; the plain
        // mean would be 30.
        assert_eq!(p, 15);
    }
}
