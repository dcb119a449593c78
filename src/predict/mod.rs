//! Predictors on the integer grid, with error feedback.
//!
//! Values are prequantized onto a fine integer grid (step `2 eb / m`, `m` odd). A predictor
//! visits a block's points in its own causal order, predicts each index from already
//! reconstructed neighbours, and codes `c = round((q - pred) / m)`; the reconstruction is
//! `pred + c m`, within `(m - 1) / 2` fine steps of `q`, so the total error stays within `eb`
//! (the near-lossless scheme of JPEG-LS, on the prequantized integers). With `m = 1` this is
//! plain lossless residual coding of the prequantized grid (LBRC). Everything is integer
//! arithmetic, so the decoder rebuilds the encoder's reconstruction exactly.
//!
//! The block directory records which predictor coded each block; the decoder follows it.
//! [`registry`] lists the predictors a directory may name.

pub mod fitted;
pub mod interp;
pub mod lorenzo;
pub mod nglr;
pub mod registry;

use crate::entropy::ContextChoice;
use crate::error::{ensure, Error, Result};
use crate::quant::{dequantize_f64, within, Grid, QMAX};

/// A causal integer predictor over one block (values outside the block count as zero).
pub trait Predictor: Sync {
    /// Stable id written in the block directory (`docs/FORMAT.md`).
    fn id(&self) -> u8;
    /// Feedback step of the coarse levels, written in the block directory (0: none).
    fn coarse(&self) -> u8 {
        0
    }
    /// Directory byte 3 (0: none; the interpolations' cubic kernel).
    fn kernel(&self) -> u8 {
        0
    }
    /// What the range coder's model follows in this predictor's residuals (its entry's in
    /// the [`registry`]).
    fn contexts(&self) -> ContextChoice {
        registry::contexts(self.id())
    }
    /// Parameters written at the start of the block's payload, before the coded residuals
    /// (fitted Lorenzo's weights).
    fn header(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Codes a block: fills `codes` and turns the fine indices `q` into the reconstruction.
    fn encode(&self, blk: &mut BlockEncoder<'_>, q: &mut [i32], ext: [usize; 3], codes: &mut [i32]);
    /// Decodes in place: codes in, reconstructed grid indices out. Wrapping arithmetic, so
    /// any codes (a damaged chunk) decode to some values without overflow.
    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32);
}

/// The encoder's view of one block: its values and which of them are stored exactly.
pub struct BlockEncoder<'a> {
    /// The block's values (as f64).
    pub x: &'a [f64],
    /// Points stored exactly: set on input for values the grid cannot hold; the encoder adds
    /// points whose reconstruction misses the bound.
    pub escaped: Vec<bool>,
    pub grid: Grid,
    pub eb: f64,
    /// The element type is f32: reconstructions are rounded to f32 (the decoder's last step).
    pub single: bool,
    /// Feedback step in fine-grid units (odd, >= 1).
    pub m: i64,
}

impl BlockEncoder<'_> {
    /// Settles point `i` given its prediction: returns the code and stores the
    /// reconstruction. Escaped points code 0, so the decoder's reconstruction there is the
    /// prediction itself (the exact value comes from the escape list afterwards).
    #[inline(always)]
    pub fn settle(&mut self, q: &mut [i32], i: usize, pred: i64) -> i32 {
        self.settle_with(q, i, pred, self.m)
    }

    /// [`settle`](Self::settle) with feedback step `m` instead of the block's.
    #[inline(always)]
    pub fn settle_with(&mut self, q: &mut [i32], i: usize, pred: i64, m: i64) -> i32 {
        if !self.escaped[i] {
            let d = q[i] as i64 - pred;
            let c = floor_div(d + (m - 1) / 2, m);
            let rec = pred + c * m;
            if rec.abs() <= 2 * QMAX as i64 && c.abs() < 1 << 30 {
                let v = dequantize_f64(rec as i32, self.grid);
                if within(self.x[i], v, self.eb, self.single) {
                    q[i] = rec as i32;
                    return c as i32;
                }
            }
            self.escaped[i] = true;
        }
        q[i] = pred as i32;
        0
    }
}

/// `n.div_euclid(m)` for `m >= 1`, by a multiplication when `m < 2^16` and `|n| < 2^40`: settling a
/// point waits on this quotient before the next prediction can start, and a hardware divide
/// is several times slower. Shifted to a non-negative numerator, the quotient is
/// `(n' × (floor(2^64 / m) + 1)) >> 64`, exact while `n' m < 2^64`.
#[inline(always)]
fn floor_div(n: i64, m: i64) -> i64 {
    if m == 1 {
        return n;
    }
    // Outside the range (a wild learned prediction, say): the hardware divide.
    if !(2..1 << 16).contains(&m) || n.unsigned_abs() >= 1 << 40 {
        return n.div_euclid(m);
    }
    let k = (1i64 << 41) / m + 1;
    let shifted = (n + k * m) as u64;
    let magic = u64::MAX / m as u64 + 1;
    ((shifted as u128 * magic as u128) >> 64) as i64 - k
}

/// The encoders' estimate of what a residual `r` costs when the known values it was predicted
/// from carry coding noise of variance `noise` and the feedback step is `m`:
/// `log2(1 + sqrt(r^2 + noise) / m)` bits, about. Both fits (interpolation kernels, fitted
/// Lorenzo) rank their candidates by sums of it.
#[inline(always)]
pub fn residual_cost(r: f64, noise: f64, m: f64) -> f64 {
    log2_1p((r * r + noise).sqrt() / m)
}

/// About `log2(1 + y)` for `y >= 0`, within 0.01 (the encoders' cost estimates compare sums
/// of it; the library `ln` cost them more time than the fits they rank). The exponent of
/// `1 + y` plus a quadratic in its mantissa; pure arithmetic, so the same everywhere.
#[inline(always)]
pub fn log2_1p(y: f64) -> f64 {
    let z = 1.0 + y;
    let bits = z.to_bits();
    let e = ((bits >> 52) & 0x7ff) as f64 - 1023.0;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)) - 1.0;
    e + m * (1.346_607_9 - 0.346_607_9 * m)
}

/// The predictor of a block with stable id `id` and payload `payload`, and the length of its
/// header there (the residual codes follow). `coarse` is the block's coarse-level feedback
/// step (directory byte 2: 0 or odd, and 0 unless the predictor has coarse levels) and
/// `kernel` its directory byte 3 (0 unless the predictor has coarse levels).
pub fn for_block(
    id: u8,
    coarse: u8,
    kernel: u8,
    payload: &[u8],
) -> Result<(Box<dyn Predictor>, usize)> {
    let entry = registry::entry(id);
    let levels = entry.is_some_and(|e| e.coarse.is_some());
    ensure!(
        coarse == 0 || (coarse % 2 == 1 && levels),
        Error::Corrupt(format!(
            "coarse feedback step {coarse} for a block of predictor {id}"
        ))
    );
    ensure!(kernel == 0 || levels, Error::ReservedBitsSet);
    match entry {
        Some(e) => (e.build)(coarse, kernel, payload),
        None => Err(Error::Corrupt(format!("unknown predictor id {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::for_block;

    #[test]
    fn coarse_step_only_for_interpolation_and_odd() {
        assert!(
            for_block(2, 11, 0, &[]).is_ok()
                && for_block(4, 11, 0, &[]).is_ok()
                && for_block(4, 0, 0, &[]).is_ok()
        );
        for (id, coarse) in [(1, 11), (2, 10), (4, 2), (3, 1)] {
            let e = for_block(id, coarse, 0, &[]).err().expect("refused");
            assert!(e.to_string().contains("coarse feedback step"), "{e}");
        }
        assert!(for_block(9, 0, 0, &[]).is_err());
    }

    #[test]
    fn kernel_byte_only_for_interpolation_and_in_range() {
        // Byte 3 holds two signed nibbles k - 5: 0x0b is k = 0 and 5, 0x77 is 12 and 12.
        for b in [0u8, 1, 0x0b, 0xb0, 0x77] {
            assert!(
                for_block(2, 11, b, &[]).is_ok() && for_block(4, 0, b, &[]).is_ok(),
                "{b}"
            );
        }
        for b in [0x08u8, 0x0a, 0xa0, 0x80] {
            let e = for_block(2, 11, b, &[]).err().expect("refused");
            assert!(e.to_string().contains("kernel"), "{e}");
        }
        assert!(for_block(1, 0, 1, &[]).is_err());
    }

    #[test]
    fn floor_div_is_div_euclid() {
        for m in [1i64, 3, 11, 15, 255, 65535] {
            for n in (-40_000i64..40_000).chain([
                (1 << 40) - 1,
                1 - (1 << 40),
                1 << 33,
                1 << 41,
                -(1 << 50),
            ]) {
                assert_eq!(super::floor_div(n, m), n.div_euclid(m), "{n} / {m}");
            }
        }
    }

    #[test]
    fn log2_1p_is_close() {
        for i in 0..100_000 {
            let y = i as f64 * 0.013 + (i as f64 * 1e-3).powi(4);
            let exact = (1.0 + y).log2();
            assert!((super::log2_1p(y) - exact).abs() < 0.01, "{y}");
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The codes of integer values `q` under `p`, lossless (unit grid, feedback step 1).
    pub fn lossless_codes(p: &dyn Predictor, q: &[i32], ext: [usize; 3]) -> Vec<i32> {
        let x: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        let mut blk = BlockEncoder {
            x: &x,
            escaped: vec![false; q.len()],
            grid: Grid {
                mid: 0.0,
                step: 1.0,
            },
            eb: 0.5,
            single: false,
            m: 1,
        };
        let mut codes = vec![0; q.len()];
        p.encode(&mut blk, &mut q.to_vec(), ext, &mut codes);
        codes
    }

    /// Encodes `x` on a unit grid with feedback `m` and bound `eb`, decodes, and checks that
    /// the decoder rebuilds the encoder's reconstruction and that it is within the bound.
    pub fn round_trip(p: &dyn Predictor, x: &[f64], ext: [usize; 3], m: i64, eb: f64) {
        let grid = Grid {
            mid: 0.0,
            step: 2.0 * eb / m as f64,
        };
        let mut q: Vec<i32> = x.iter().map(|v| (v / grid.step).round() as i32).collect();
        let mut blk = BlockEncoder {
            x,
            escaped: vec![false; x.len()],
            grid,
            eb,
            single: false,
            m,
        };
        let mut codes = vec![0; x.len()];
        p.encode(&mut blk, &mut q, ext, &mut codes);
        p.decode(&mut codes, ext, m as i32);
        for i in 0..x.len() {
            if !blk.escaped[i] {
                assert_eq!(codes[i], q[i], "{ext:?} m {m} point {i}");
                let v = dequantize_f64(codes[i], grid);
                assert!((x[i] - v).abs() <= eb, "{ext:?} m {m} point {i}");
            }
        }
    }
}
