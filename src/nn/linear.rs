//! The linear NGLR bias (WEIGHTS kind 2): NGLR's 16 features weighted directly,
//! `bias = clamp(rshift(b + sum_i w_i f_i, shift), -2^30, 2^30)`.
//!
//! It is what a linear-only network (kind 1 with `w2 = 0`) computes, minus the per-feature
//! normalization and clamping, which cost most of its time. Without them the bias is linear in
//! the reconstructed indices, so the terms that read earlier rows can be summed for a whole
//! row before the row is decoded ([`crate::predict::nglr`]), leaving a few operations per point.
//!
//! Bounds (every value a decoder can meet, damaged chunks included): a feature is a difference
//! of wrapped 32-bit indices and Lorenzo predictions, below 2^35 in magnitude; `|w_i| <= 2^20`
//! and `|b| <= 2^40`, so the sum stays below 2^60 and 64-bit arithmetic is exact.

use super::infer::{rshift, BIAS_MAX, INPUTS};
use crate::error::{ensure, Error, Result};

/// Largest weight magnitude.
pub const W_MAX: i32 = 1 << 20;
/// Largest intercept magnitude.
pub const B_MAX: i64 = 1 << 40;
/// Largest output shift.
pub const MAX_SHIFT: u8 = 40;

/// A linear bias over the NGLR features, in fixed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    pub w: [i32; INPUTS],
    pub b: i64,
    pub shift: u8,
}

impl Linear {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Error::Corrupt(format!("linear NGLR weights: {m}"));
        ensure!(
            self.w.iter().all(|w| w.unsigned_abs() <= W_MAX as u32),
            bad("weight out of range")
        );
        ensure!(
            self.b.unsigned_abs() <= B_MAX as u64,
            bad("intercept out of range")
        );
        ensure!(self.shift <= MAX_SHIFT, bad("shift out of range"));
        Ok(())
    }

    /// The bias in grid steps for features `f` (each below 2^35 in magnitude).
    #[inline]
    pub fn bias(&self, f: &[i64; INPUTS]) -> i64 {
        let mut a = self.b;
        for (&w, &v) in self.w.iter().zip(f) {
            a += w as i64 * v;
        }
        self.finish(a)
    }

    /// The bias from the weighted sum `a` (intercept included).
    #[inline(always)]
    pub fn finish(&self, a: i64) -> i64 {
        rshift(a, self.shift as i32).clamp(-BIAS_MAX, BIAS_MAX)
    }

    /// The fixed-point form of `bias = intercept + sum_i c_i f_i` (real coefficients, grid
    /// steps per feature unit): the largest shift that keeps every weight and the intercept
    /// in range.
    pub fn from_coefficients(c: &[f64; INPUTS], intercept: f64) -> Linear {
        let max_c = c.iter().fold(0f64, |a, v| a.max(v.abs()));
        let mut shift = MAX_SHIFT;
        while shift > 0
            && (max_c * 2f64.powi(shift as i32) > (W_MAX - 1) as f64
                || intercept.abs() * 2f64.powi(shift as i32) > (B_MAX - 1) as f64)
        {
            shift -= 1;
        }
        let scale = 2f64.powi(shift as i32);
        let lin = Linear {
            w: std::array::from_fn(|i| {
                (c[i] * scale).round().clamp(-W_MAX as f64, W_MAX as f64) as i32
            }),
            b: (intercept * scale)
                .round()
                .clamp(-B_MAX as f64, B_MAX as f64) as i64,
            shift,
        };
        debug_assert!(lin.validate().is_ok());
        lin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_follows_the_coefficients() {
        let mut c = [0f64; INPUTS];
        c[0] = 0.3;
        c[5] = -1.25;
        c[12] = 0.01;
        let lin = Linear::from_coefficients(&c, 2.6);
        lin.validate().unwrap();
        let mut f = [0i64; INPUTS];
        f[0] = 100;
        f[5] = -8;
        f[12] = 1000;
        // 30 + 10 + 10 + 2.6 = 52.6
        assert_eq!(lin.bias(&f), 53);
        // The extremes of the documented bounds cannot overflow.
        let wide = Linear {
            w: [W_MAX; INPUTS],
            b: B_MAX,
            shift: 0,
        };
        assert_eq!(wide.bias(&[(1 << 35) - 1; INPUTS]), BIAS_MAX);
        assert_eq!(wide.bias(&[-(1 << 35) + 1; INPUTS]), -BIAS_MAX);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let ok = Linear {
            w: [0; INPUTS],
            b: 0,
            shift: 3,
        };
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.w[3] = W_MAX + 1;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.b = -B_MAX - 1;
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.shift = MAX_SHIFT + 1;
        assert!(bad.validate().is_err());
    }
}
