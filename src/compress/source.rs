//! Coding one block: its inputs gathered from the chunk, a predictor run over them, the
//! residual codes entropy coded behind the predictor's header.

use crate::entropy;
use crate::field::{self, Block, Element};
use crate::format::escapes;
use crate::params::Coder;
use crate::predict::lorenzo::Lorenzo;
use crate::predict::Predictor;
use crate::quant::Plan;
use crate::select::{predict_block_recon, recon_sse, Trial};

/// A coded block: the directory's predictor id and kernel byte, the payload, the chunk
/// indices of its escaped points, and the squared error of its decoded values where the
/// coding computed them (not on the GPU's paths).
#[derive(Debug)]
pub(super) struct Coded {
    pub id: u8,
    /// Directory byte 2: the coarse levels' feedback step (0: none).
    pub coarse: u8,
    pub kernel: u8,
    pub bytes: Vec<u8>,
    pub escapes: Vec<usize>,
    pub sse: Option<f64>,
}

/// Codings are equal when what they write is: the squared error is what the encoder learned
/// on the way (the GPU's paths do not compute it), not part of the coding.
impl PartialEq for Coded {
    fn eq(&self, other: &Coded) -> bool {
        (self.id, self.coarse, self.kernel) == (other.id, other.coarse, other.kernel)
            && self.bytes == other.bytes
            && self.escapes == other.escapes
    }
}

/// What coding a block needs besides the block itself (encode only).
pub(super) struct Source<'a, T> {
    pub x: &'a [T],
    pub dims: [usize; 3],
    pub plan: &'a Plan,
    pub coder: Coder,
    /// The elements are `f32`.
    pub single: bool,
}

/// A block's values (as f64), prequantized indices, and which points are escaped already.
pub(super) type BlockInput = (Vec<f64>, Vec<i32>, Vec<bool>);

impl<T: Element> Source<'_, T> {
    /// Block `b`'s input; `esc` lists its points the grid cannot hold (block-local).
    pub(super) fn gather(&self, b: &Block, esc: &[usize]) -> BlockInput {
        let bx = field::gather_map(self.x, self.dims, b, T::to_f64);
        let bq = field::gather(&self.plan.quantized.q, self.dims, b);
        let mut escaped = vec![false; bq.len()];
        for &li in esc {
            escaped[li] = true;
        }
        (bx, bq, escaped)
    }

    /// Codes block `b` (its values `bx`, indices `bq`, escapes) with `predictor`, or takes the
    /// coding of a whole-block trial.
    pub(super) fn code(
        &self,
        b: &Block,
        predictor: &dyn Predictor,
        bx: &[f64],
        bq: &[i32],
        escaped: &[bool],
        done: Option<Trial>,
    ) -> Coded {
        let (bytes, escaped, sse) = done.unwrap_or_else(|| {
            let (codes, recon, escaped) =
                predict_block_recon(predictor, bx, bq, escaped, b.ext, self.plan, self.single);
            let sse = recon_sse(bx, &recon, &escaped, self.plan);
            (self.payload(b, predictor, &codes), escaped, sse)
        });
        self.coded(b, predictor, bytes, &escaped, Some(sse))
    }

    /// Block `b` coded by plain Lorenzo on the grid (feedback step 1) when none of its points
    /// is escaped: the mixed differences of its indices, which is what `Lorenzo::encode`
    /// computes then, without the values, escape flags and reconstruction the feedback path
    /// copies for it (the fast mode's encode spent a fifth of its time on those copies).
    pub(super) fn code_on_grid(&self, b: &Block) -> Coded {
        let bq = field::gather(&self.plan.quantized.q, self.dims, b);
        let mut codes = vec![0; bq.len()];
        Lorenzo.residuals(&bq, b.ext, &mut codes);
        let bytes = self.payload(b, &Lorenzo, &codes);
        self.coded(b, &Lorenzo, bytes, &[], None)
    }

    /// Block `b`'s payload: `predictor`'s header, then its residual `codes` coded.
    pub(super) fn payload(&self, b: &Block, predictor: &dyn Predictor, codes: &[i32]) -> Vec<u8> {
        let mut bytes = predictor.header();
        bytes.extend(entropy::encode_block(
            self.coder,
            codes,
            b.ext,
            predictor.contexts(),
        ));
        bytes
    }

    /// Block `b` coded by `predictor` into `bytes`, its `escaped` points (block-local flags)
    /// listed by chunk index, with the squared error of its values when known.
    pub(super) fn coded(
        &self,
        b: &Block,
        predictor: &dyn Predictor,
        bytes: Vec<u8>,
        escaped: &[bool],
        sse: Option<f64>,
    ) -> Coded {
        Coded {
            id: predictor.id(),
            coarse: predictor.coarse(),
            kernel: predictor.kernel(),
            bytes,
            escapes: escapes::in_chunk(b, self.dims, escaped),
            sse,
        }
    }
}
