//! The NeurLZ section's encode glue: the enhancer trains on the decoder's own reconstruction,
//! which the encoder gets by decoding the blocks it just coded (`decompress/`'s block decode).

use crate::enhance::neurlz_encode;
use crate::field::{self, Block, Element};
use crate::format::directory::BlockPart;
use crate::params::{ChunkInfo, Enhancer, ErrorMode, Params};
use crate::predict::nglr::Nglr;
use crate::quant::{self, Plan};

/// A chunk's coded blocks, as the enhancer needs them.
pub(super) struct Coded<'a> {
    pub blocks: &'a [Block],
    pub parts: &'a [BlockPart<'a>],
    /// The chunk's escaped indices, increasing.
    pub escapes: &'a [usize],
    /// The NGLR model, when the chunk keeps its weights.
    pub learned: Option<&'a Nglr>,
}

/// The ENHANCE payload for the chunk `x` (`data` as bytes) coded on `plan`; `None` when the
/// enhancer does not pay. Its rate check codes the chunk again without the enhancer, at other
/// bounds: first, before the chunk's grid indices are decoded, so that the two codings never
/// hold memory at the same time (docs/RELIABILITY.md, "Memory").
pub(super) fn section<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    plan: &Plan,
    coded: &Coded<'_>,
) -> Option<Vec<u8>> {
    if !neurlz_encode::applies(params, plan.eb, x.len()) {
        return None;
    }
    let base_rate = |bound: f64| -> Option<(usize, f64)> {
        let p = Params {
            mode: ErrorMode::Abs,
            bound,
            enhancer: Enhancer::Off,
            ..*params
        };
        let c = super::compress(data, chunk, &p).ok()?;
        let y = crate::decompress::decompress(&c, usize::MAX).ok()?;
        Some((c.len(), quant::sse_bytes(x, &y)))
    };
    let rates = [base_rate(plan.eb), base_rate(plan.eb / 2.0)];
    let dims = field::grid_dims(&chunk.shape);
    let bytes = std::mem::size_of_val(x);
    let (m, learned) = (plan.m as i32, coded.learned);
    let q =
        crate::decompress::decode_grid(coded.blocks, coded.parts, dims, m, learned, bytes).ok()?;
    let view = neurlz_encode::Chunk {
        x,
        q: &q,
        escapes: coded.escapes,
        shape: &chunk.shape,
        dims,
        grid: plan.grid,
        eb: plan.eb,
        m: plan.m,
    };
    neurlz_encode::encode(&view, params, rates).0
}
