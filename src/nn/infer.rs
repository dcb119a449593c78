//! Fixed-point inference of the NGLR bias network (`docs/FORMAT.md`, "WEIGHTS").
//!
//! The network maps [`INPUTS`] integer features to one integer bias:
//!
//! ```text
//! x_i = clamp(rshift(clamp(f_i, -2^40, 2^40), in_shift_i - 8), -XMAX, XMAX)   (Q8)
//! h_j = clamp(rshift(b1_j + sum_i w1_ji x_i, e1), 0, HMAX)                     (Q8, clipped ReLU)
//! o   = b2 + sum_j w2_j h_j + sum_i v_i x_i                                    (Q(8 + e2))
//! out = clamp(rshift(o, e2 + 8 - out_shift), -BIAS_MAX, BIAS_MAX)              (grid steps)
//! ```
//!
//! `rshift(a, s)` is `(a + 2^(s-1)) >> s` (arithmetic) for `s > 0` and `a << -s` otherwise.
//! Every step is integer arithmetic whose range is bounded by the limits [`Net::validate`]
//! checks, so the result is the same on every machine, thread count and compiler: the
//! encoder codes with exactly the predictions the decoder makes. No floating point here.

use crate::error::{ensure, Error, Result};

/// Number of input features (fixed by the feature set, see `predict::nglr`).
pub const INPUTS: usize = 16;
/// Most hidden units a stored network may have.
pub const MAX_HIDDEN: usize = 32;
/// Fraction bits of activations.
pub const FRAC: u32 = 8;
/// Input clamp: +-64.0 in Q8.
pub const XMAX: i32 = 64 << FRAC;
/// Hidden clamp: the ReLU is clipped at 8.0 (Q8).
pub const HMAX: i32 = 8 << FRAC;
/// Largest bias (grid steps) the network may add.
pub const BIAS_MAX: i64 = 1 << 30;
/// Largest magnitude of a first-layer bias (keeps the i32 accumulator exact).
pub const B1_MAX: i32 = 1 << 29;
/// Largest feature normalization shift.
pub const MAX_IN_SHIFT: u8 = 40;
/// Largest output shift and weight exponents.
pub const MAX_OUT_SHIFT: u8 = 30;
pub const MAX_EXP: u8 = 30;

/// A quantized bias network: weights `w / 2^e`, features normalized by `2^in_shift`, output in
/// units of `2^out_shift` grid steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    pub hidden: usize,
    pub in_shift: [u8; INPUTS],
    pub out_shift: u8,
    /// Exponent of the first layer's weights (`w1 / 2^e1`); its biases are in Q(8 + e1).
    pub e1: u8,
    /// Exponent of the output layer's weights (`w2`, `v`); its bias is in Q(8 + e2).
    pub e2: u8,
    /// `hidden x INPUTS`, row-major (one row per hidden unit).
    pub w1: Vec<i16>,
    pub b1: Vec<i32>,
    pub w2: Vec<i16>,
    /// Direct (linear) weights from the inputs to the output.
    pub v: [i16; INPUTS],
    pub b2: i32,
}

/// `(a + 2^(s-1)) >> s` for `s > 0`, `a << -s` otherwise (callers keep the result in range).
#[inline]
pub fn rshift(a: i64, s: i32) -> i64 {
    if s > 0 {
        (a + (1i64 << (s - 1))) >> s
    } else {
        a << (-s)
    }
}

impl Net {
    /// Checks every limit the fixed-point rules rely on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Error::Corrupt(format!("NGLR weights: {m}"));
        ensure!(
            (1..=MAX_HIDDEN).contains(&self.hidden),
            bad(format!("{} hidden units", self.hidden))
        );
        ensure!(
            self.w1.len() == self.hidden * INPUTS
                && self.b1.len() == self.hidden
                && self.w2.len() == self.hidden,
            bad("layer sizes".into())
        );
        ensure!(
            self.in_shift.iter().all(|&k| k <= MAX_IN_SHIFT),
            bad("input shift".into())
        );
        ensure!(
            self.out_shift <= MAX_OUT_SHIFT && self.e1 <= MAX_EXP && self.e2 <= MAX_EXP,
            bad("shift or exponent out of range".into())
        );
        ensure!(
            self.b1.iter().all(|b| b.unsigned_abs() <= B1_MAX as u32),
            bad("first-layer bias out of range".into())
        );
        ensure!(
            self.w1
                .iter()
                .chain(&self.w2)
                .chain(&self.v)
                .all(|&w| w != i16::MIN),
            bad("weight -32768".into())
        );
        Ok(())
    }

    /// Q8 input of feature value `f` (grid steps) for input `i`.
    #[inline]
    pub fn input(&self, i: usize, f: i64) -> i32 {
        // Features are differences of grid indices (< 2^36); the clamp keeps any value safe.
        let f = f.clamp(-(1 << 40), 1 << 40);
        rshift(f, self.in_shift[i] as i32 - FRAC as i32).clamp(-(XMAX as i64), XMAX as i64) as i32
    }

    /// The bias in grid steps for raw features `f`.
    #[inline]
    pub fn bias(&self, f: &[i64; INPUTS]) -> i64 {
        let mut x = [0i32; INPUTS];
        for i in 0..INPUTS {
            x[i] = self.input(i, f[i]);
        }
        self.bias_q(&x)
    }

    /// The bias in grid steps for Q8 inputs `x` (each within `+-XMAX`).
    #[inline]
    pub fn bias_q(&self, x: &[i32; INPUTS]) -> i64 {
        // |w| < 2^15, |x| <= 2^14, 16 terms < 2^33, |b1| <= 2^29: the i64 sum is exact.
        let mut o = self.b2 as i64;
        for (j, row) in self.w1.chunks_exact(INPUTS).enumerate() {
            let mut a = self.b1[j] as i64;
            for (&w, &xi) in row.iter().zip(x) {
                a += w as i64 * xi as i64;
            }
            let h = rshift(a, self.e1 as i32).clamp(0, HMAX as i64);
            o += self.w2[j] as i64 * h;
        }
        for (&v, &xi) in self.v.iter().zip(x) {
            o += v as i64 * xi as i64;
        }
        // |o| < 2^31 + 32 * 2^26 + 16 * 2^29 < 2^34; the left shift is at most 22 places.
        let s = self.e2 as i32 + FRAC as i32 - self.out_shift as i32;
        rshift(o, s).clamp(-BIAS_MAX, BIAS_MAX)
    }
}

/// Hidden units the portable first layer evaluates side by side.
#[cfg(not(target_arch = "x86_64"))]
const LANES: usize = 8;

/// A [`Net`] laid out for fast evaluation, with exactly the same results. The first layer is
/// transposed and padded with zero units (zero weights, biases and output weights, so the
/// padding adds nothing): on x86_64 in the order SSE2's `pmaddwd` reads (`nn::simd`), elsewhere
/// as `LANES`-wide rows summed in i32 lanes over groups of four inputs. Either way a lane
/// adds at most four products below 2^29 before widening to i64, so nothing overflows.
#[derive(Debug, Clone)]
pub struct Packed {
    #[cfg(target_arch = "x86_64")]
    quads: super::simd::Quads,
    /// `w1t[g * INPUTS + i][l]`: weight of input `i` into hidden unit `g * LANES + l`.
    #[cfg(not(target_arch = "x86_64"))]
    w1t: Vec<[i16; LANES]>,
    b1: Vec<i64>,
    w2: Vec<i64>,
    v: [i16; INPUTS],
    b2: i64,
    /// Input normalization `rshift(f, in_shift - 8)` without a branch: `((f << lsh) + add) >> rsh`
    /// with one of the shifts zero.
    lsh: [i64; INPUTS],
    add: [i64; INPUTS],
    rsh: [i64; INPUTS],
    e1: i32,
    out: i32,
    /// Every output weight of the hidden layer is zero (a linear-only fit): the hidden layer
    /// adds exactly nothing, so it is skipped.
    linear: bool,
}

/// `acc[l] += w[l] * x` in every lane.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn madd(acc: &mut [i32; LANES], w: &[i16; LANES], x: i16) {
    for l in 0..LANES {
        acc[l] += w[l] as i32 * x as i32;
    }
}

impl Packed {
    pub fn new(net: &Net) -> Packed {
        #[cfg(target_arch = "x86_64")]
        let padded = net.hidden.div_ceil(4) * 4;
        #[cfg(not(target_arch = "x86_64"))]
        let padded = net.hidden.div_ceil(LANES) * LANES;
        let mut b1 = vec![0i64; padded];
        let mut w2 = vec![0i64; padded];
        for j in 0..net.hidden {
            b1[j] = net.b1[j] as i64;
            w2[j] = net.w2[j] as i64;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let mut w1t = vec![[0i16; LANES]; padded / LANES * INPUTS];
        #[cfg(not(target_arch = "x86_64"))]
        for j in 0..net.hidden {
            for i in 0..INPUTS {
                w1t[(j / LANES) * INPUTS + i][j % LANES] = net.w1[j * INPUTS + i];
            }
        }
        Packed {
            #[cfg(target_arch = "x86_64")]
            quads: super::simd::quads(&net.w1, net.hidden),
            #[cfg(not(target_arch = "x86_64"))]
            w1t,
            b1,
            w2,
            v: net.v,
            b2: net.b2 as i64,
            lsh: net.in_shift.map(|s| (FRAC as i64 - s as i64).max(0)),
            add: net.in_shift.map(|s| match s as i32 - FRAC as i32 {
                k if k > 0 => 1i64 << (k - 1),
                _ => 0,
            }),
            rsh: net.in_shift.map(|s| (s as i64 - FRAC as i64).max(0)),
            e1: net.e1 as i32,
            out: net.e2 as i32 + FRAC as i32 - net.out_shift as i32,
            linear: net.w2.iter().all(|&w| w == 0),
        }
    }

    /// The Q8 inputs (the same integers as [`Net::input`], without its branch).
    #[inline(always)]
    fn inputs(&self, f: &[i64; INPUTS]) -> [i16; INPUTS] {
        let mut x = [0i16; INPUTS];
        for i in 0..INPUTS {
            // |f| <= 2^40 and lsh <= 8: no overflow.
            let fi = f[i].clamp(-(1 << 40), 1 << 40);
            let v = ((fi << self.lsh[i]) + self.add[i]) >> self.rsh[i];
            x[i] = v.clamp(-(XMAX as i64), XMAX as i64) as i16;
        }
        x
    }

    /// `acc[j] = sum_i w1[j][i] x[i]` for every padded hidden unit.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn first_layer(&self, x: &[i16; INPUTS], acc: &mut [i64]) {
        super::simd::first_layer(&self.quads, x, acc);
    }

    /// `acc[j] = sum_i w1[j][i] x[i]` for every padded hidden unit.
    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn first_layer(&self, x: &[i16; INPUTS], acc: &mut [i64]) {
        for (rows, out) in self
            .w1t
            .chunks_exact(INPUTS)
            .zip(acc.chunks_exact_mut(LANES))
        {
            let rows: &[[i16; LANES]; INPUTS] = rows.try_into().expect("INPUTS rows per group");
            for quad in 0..INPUTS / 4 {
                let mut a32 = [0i32; LANES];
                for t in 0..4 {
                    madd(&mut a32, &rows[4 * quad + t], x[4 * quad + t]);
                }
                for (o, a) in out.iter_mut().zip(a32) {
                    *o += a as i64;
                }
            }
        }
    }

    /// [`Net::bias`], bit for bit.
    #[inline]
    pub fn bias(&self, f: &[i64; INPUTS]) -> i64 {
        let x = self.inputs(f);
        let mut o = self.b2;
        if !self.linear {
            let mut acc = [0i64; MAX_HIDDEN];
            let acc = &mut acc[..self.b1.len()];
            self.first_layer(&x, acc);
            for ((&a, &b1), &w2) in acc.iter().zip(&self.b1).zip(&self.w2) {
                let h = rshift(b1 + a, self.e1).clamp(0, HMAX as i64);
                o += w2 * h;
            }
        }
        for (&v, &xi) in self.v.iter().zip(&x) {
            o += v as i64 * xi as i64;
        }
        rshift(o, self.out).clamp(-BIAS_MAX, BIAS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Net {
        Net {
            hidden: 2,
            in_shift: [3; INPUTS],
            out_shift: 3,
            e1: 12,
            e2: 12,
            w1: (0..2 * INPUTS as i32)
                .map(|i| (i * 977 % 8000 - 4000) as i16)
                .collect(),
            b1: vec![1 << 18, -(1 << 17)],
            w2: vec![3000, -2000],
            v: [100; INPUTS],
            b2: 5000,
        }
    }

    #[test]
    fn extremes_stay_in_range() {
        let mut n = net();
        n.w1.iter_mut().for_each(|w| *w = i16::MAX);
        n.w2.iter_mut().for_each(|w| *w = i16::MAX);
        n.v = [i16::MAX; INPUTS];
        n.b1 = vec![B1_MAX; 2];
        n.b2 = i32::MAX;
        for e in [0, 30] {
            for s in [0, 30] {
                n.e1 = e;
                n.e2 = e;
                n.out_shift = s;
                n.validate().unwrap();
                for f in [i64::MAX / 4, i64::MIN / 4, 0] {
                    let b = n.bias(&[f; INPUTS]);
                    assert!(b.abs() <= BIAS_MAX);
                }
            }
        }
    }

    #[test]
    fn first_layer_bias_of_i32_min_is_refused() {
        // Found by `scripts/fuzz 200 container`: `i32::MIN.abs()` overflowed (a panic with
        // debug assertions) and, wrapping, let the value through validation.
        let mut n = net();
        for b in [i32::MIN, -B1_MAX - 1, B1_MAX + 1] {
            n.b1[1] = b;
            let e = n.validate().expect_err("out-of-range bias accepted");
            assert!(e.to_string().contains("first-layer bias"), "{e}");
        }
        n.b1[1] = -B1_MAX;
        n.validate().unwrap();
    }

    #[test]
    fn packed_matches_net_bit_for_bit() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        for hidden in [1, 7, 8, 9, 32] {
            for trial in 0..20 {
                let extreme = trial % 4 == 0;
                let w = |r: i64| {
                    if extreme {
                        if r & 1 == 1 {
                            -i16::MAX
                        } else {
                            i16::MAX
                        }
                    } else {
                        (r % 60000 - 30000) as i16
                    }
                };
                let net = Net {
                    hidden,
                    in_shift: [0; INPUTS].map(|_| (next() % 41) as u8),
                    out_shift: (next() % 31) as u8,
                    e1: (next() % 31) as u8,
                    e2: (next() % 31) as u8,
                    w1: (0..hidden * INPUTS).map(|_| w(next())).collect(),
                    b1: (0..hidden)
                        .map(|_| (next() % (2 * B1_MAX as i64) - B1_MAX as i64) as i32)
                        .collect(),
                    // Every fifth net is linear-only, which `Packed` evaluates without its
                    // hidden layer.
                    w2: (0..hidden)
                        .map(|_| if trial % 5 == 1 { 0 } else { w(next()) })
                        .collect(),
                    v: [0; INPUTS].map(|_| w(next())),
                    b2: next() as i32,
                };
                net.validate().unwrap();
                let packed = Packed::new(&net);
                for _ in 0..50 {
                    let f = [0; INPUTS].map(|_| (next() - (1 << 30)) << (next() % 24));
                    assert_eq!(packed.bias(&f), net.bias(&f));
                }
            }
        }
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(rshift(3, 1), 2);
        assert_eq!(rshift(-3, 1), -1);
        assert_eq!(rshift(5, 0), 5);
        assert_eq!(rshift(5, -2), 20);
        let n = net();
        assert_eq!(n.bias(&[0; INPUTS]), n.bias(&[0; INPUTS]));
    }
}
