//! Predictors on the integer grid. Each turns a block of grid values into residuals and back;
//! the block directory records which one coded each block, and the decoder follows it.

pub mod interp;
pub mod lorenzo;

use crate::error::{Error, Result};

/// A reversible integer predictor over one block (values outside the block count as zero).
pub trait Predictor: Sync {
    /// Stable id written in the block directory (`docs/FORMAT.md`).
    fn id(&self) -> u8;
    /// Residuals of the block's values `q` (C order, extents `ext`), into `r`.
    fn residuals(&self, q: &[i32], ext: [usize; 3], r: &mut [i32]);
    /// The inverse of [`Predictor::residuals`], in place. Uses wrapping arithmetic so any
    /// residuals (a damaged chunk) decode to some values without overflow.
    fn reconstruct(&self, r: &mut [i32], ext: [usize; 3]);
    /// Replaces the placeholder indices of escaped values (block-local indices, increasing) by
    /// their prediction, so they leave a zero residual and do not disturb their neighbours'.
    fn fill_escapes(&self, q: &mut [i32], ext: [usize; 3], escapes: &[usize]);
}

/// Keeps a prediction stored as a grid index inside the quantizer's range.
pub fn clamp_index(pred: i64) -> i32 {
    pred.clamp(-(crate::quant::QMAX as i64), crate::quant::QMAX as i64) as i32
}

/// The predictor with stable id `id`.
pub fn by_id(id: u8) -> Result<&'static dyn Predictor> {
    match id {
        lorenzo::ID => Ok(&lorenzo::Lorenzo),
        interp::ID => Ok(&interp::Interp),
        _ => Err(Error::Corrupt(format!("unknown predictor id {id}"))),
    }
}
