//! A coded chunk's container: the header, then WEIGHTS (when kept), BLOCKS, ESCAPES and
//! ENHANCE (when it pays), in the order `docs/FORMAT.md` fixes.

use super::base_header;
use crate::format::{self, directory, directory::BlockPart, section, Header, Layout};
use crate::params::{ChunkInfo, Params};
use crate::quant::Plan;

/// A coded chunk's sections, ready to be written.
pub(super) struct Sections<'a> {
    /// The NGLR model's payload.
    pub weights: Option<&'a [u8]>,
    pub blocks: &'a [BlockPart<'a>],
    /// The ESCAPES payload.
    pub escapes: Vec<u8>,
    /// The NeurLZ enhancer's payload.
    pub enhance: Option<Vec<u8>>,
}

/// The container of a chunk coded on `plan` in blocks of extents `ext`.
pub(super) fn coded_chunk(
    chunk: &ChunkInfo,
    params: &Params,
    plan: &Plan,
    ext: [usize; 3],
    s: &Sections<'_>,
) -> Vec<u8> {
    let header = Header {
        layout: Layout::Coded,
        eb: plan.eb,
        mid: plan.grid.mid,
        step: plan.grid.step,
        feedback: plan.m as u16,
        block: ext,
        sections: 2 + s.weights.is_some() as u32 + s.enhance.is_some() as u32,
        ..base_header(chunk, params)
    };
    let section_len = |p: &[u8]| format::SECTION_HEADER + p.len();
    let mut out = Vec::with_capacity(
        64 + 8 * chunk.shape.len()
            + s.weights.map_or(0, section_len)
            + directory::section_len(s.blocks)
            + section_len(&s.escapes)
            + s.enhance.as_deref().map_or(0, section_len),
    );
    header.write(&mut out);
    if let Some(w) = s.weights {
        format::write_section(&mut out, section::WEIGHTS, w);
    }
    directory::write_section(&mut out, s.blocks);
    format::write_section(&mut out, section::ESCAPES, &s.escapes);
    if let Some(e) = &s.enhance {
        format::write_section(&mut out, section::ENHANCE, e);
    }
    out
}
