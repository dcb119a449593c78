//! A coded chunk: its grid and blocks, then WEIGHTS, BLOCKS, ESCAPES and ENHANCE in order
//! (`docs/FORMAT.md`, "Sections"). The blocks decode on the GPU when it takes them, else on
//! the CPU ([`super::blocks`]); with an ENHANCE section they decode once, to grid indices,
//! which both the values and the enhancer's inputs come from.

use crate::enhance::neurlz;
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::format::{self, directory, directory::BlockPart, section, Header, Reader};
use crate::params::{Backend, Coder};
use crate::predict::{lorenzo, nglr};
use crate::quant::{dequantize_into, Grid};

use super::blocks::{decode_grid, decode_scattered};
use super::{escapes_into, read_escapes, Output};

/// What a coded chunk's header says about its blocks, checked before anything is allocated.
struct Geometry {
    grid: Grid,
    /// The feedback step.
    m: i32,
    dims: [usize; 3],
    blocks: Vec<Block>,
}

impl Geometry {
    /// `remaining`: the bytes left in the chunk after the header.
    fn read(h: &Header, remaining: usize) -> Result<Geometry> {
        ensure!(
            h.step.is_finite() && h.step > 0.0 && h.mid.is_finite(),
            Error::Corrupt("quantization grid is not finite and positive".into())
        );
        ensure!(
            h.feedback % 2 == 1,
            Error::Corrupt(format!("feedback step {} is not odd", h.feedback))
        );
        let dims = field::grid_dims(&h.shape);
        ensure!(
            (0..3).all(|k| h.block[k] >= 1 && h.block[k] <= dims[k]),
            Error::Corrupt(format!("block extents {:?} for grid {dims:?}", h.block))
        );
        // Every block has a directory entry: refuse a block count the chunk cannot hold
        // before listing the blocks.
        let count = (0..3).try_fold(1usize, |a, k| a.checked_mul(dims[k].div_ceil(h.block[k])));
        ensure!(
            count.is_some_and(|c| c.saturating_mul(directory::ENTRY) <= remaining),
            Error::Corrupt(format!(
                "block extents {:?} make more blocks than the chunk holds",
                h.block
            ))
        );
        Ok(Geometry {
            grid: Grid {
                mid: h.mid,
                step: h.step,
            },
            m: h.feedback as i32,
            dims,
            blocks: field::blocks(dims, h.block)?,
        })
    }
}

pub(super) fn decode_coded<T: Element>(
    h: &Header,
    r: &mut Reader<'_>,
    out: &mut Output<'_>,
) -> Result<()> {
    ensure!(
        (2..=4).contains(&h.sections),
        Error::Corrupt(format!(
            "coded chunk declares {} sections, version 1 has 2 to 4",
            h.sections
        ))
    );
    let g = Geometry::read(h, r.remaining())?;
    let (learned, payload) = read_weights(h, r)?;
    let parts = directory::read(payload, g.blocks.len())?;
    let enhanced = h.sections == 3 + learned.is_some() as u32;
    let (blocks, m, bytes) = (&g.blocks, g.m, out.len());
    if enhanced {
        // The enhancer writes every value straight into the output (base values at its
        // outliers), from the grid indices: no chunk of values besides them.
        let q = decode_grid(blocks, &parts, g.dims, m, learned.as_ref(), bytes)?;
        let esc = read_escapes(r)?;
        let (id, payload) = format::read_section(r)?;
        ensure!(
            id == section::ENHANCE,
            Error::Corrupt(format!("unknown section id {id} after the escapes"))
        );
        let model = neurlz::Model::read(payload, g.dims)?;
        neurlz::apply_into::<T>(&model, &q, g.dims, g.grid, m as i64, out.buf());
        drop(q);
        return escapes_into::<T>(esc, out.buf());
    }
    if gpu_decode(h, &parts, &g, out) {
        // With no enhancer to run, the escapes go straight into the GPU's bytes.
        return escapes_into::<T>(read_escapes(r)?, out.buf());
    }
    // Each block's values go into the output as little-endian bytes as soon as it is decoded.
    let grid = g.grid;
    let to_bytes = |d: &mut [u8], q: &[i32]| dequantize_into::<T>(q, grid, d);
    let target = (out.buf(), T::SIZE);
    decode_scattered(
        blocks,
        &parts,
        g.dims,
        m,
        learned.as_ref(),
        bytes,
        target,
        to_bytes,
    )?;
    escapes_into::<T>(read_escapes(r)?, out.buf())
}

/// The WEIGHTS section, when the chunk has one, and the BLOCKS payload after it; checks the
/// header's section count against what the chunk holds.
fn read_weights<'a>(h: &Header, r: &mut Reader<'a>) -> Result<(Option<nglr::Nglr>, &'a [u8])> {
    let (mut id, mut payload) = format::read_section(r)?;
    let learned = if id == section::WEIGHTS {
        let model = crate::nn::weights::Model::read(payload)?;
        (id, payload) = format::read_section(r)?;
        Some(nglr::Nglr::from_model(model))
    } else {
        None
    };
    let base = 2 + learned.is_some() as u32;
    ensure!(
        h.sections == base || h.sections == base + 1,
        Error::Corrupt(format!(
            "coded chunk declares {} sections, holds {base}",
            h.sections
        ))
    );
    ensure!(
        id == section::BLOCKS,
        Error::Corrupt(format!("expected the blocks section, found id {id}"))
    );
    Ok((learned, payload))
}

/// Decodes the blocks on the GPU when every block is plain Lorenzo with feedback step 1 (what
/// the kernels run) and the GPU backend is chosen: by `RESID_BACKEND=cuda`, or by `auto` for a
/// large chunk of packed blocks. `false` sends the work to the CPU, which computes the same
/// values.
fn gpu_decode(h: &Header, parts: &[BlockPart<'_>], g: &Geometry, out: &mut Output<'_>) -> bool {
    let coder = |p: &BlockPart<'_>| p.coder.plain_of();
    if h.feedback != 1
        || parts
            .iter()
            .any(|p| p.predictor != lorenzo::ID || p.coarse != 0 || coder(p).is_none())
    {
        return false;
    }
    let list: Vec<(Coder, &[u8], u32)> = parts
        .iter()
        .filter_map(|p| Some((coder(p)?, p.bytes, p.crc)))
        .collect();
    let job = crate::backend::DecodeJob {
        parts: &list,
        dtype: h.dtype,
        dims: g.dims,
        ext: h.block,
        blocks: &g.blocks,
        grid: g.grid,
    };
    // A packed chunk decodes entirely on the GPU, so `auto` uses it for large chunks; the
    // other coders' decoding stays on the CPU unless `RESID_BACKEND=cuda` asks.
    let backend = if list.iter().all(|p| p.0 == Coder::Packed) {
        Backend::Auto
    } else {
        Backend::Cpu
    };
    crate::backend::offload(
        crate::backend::Stage::LorenzoDecode,
        backend,
        out.len(),
        |g| g.decode_into(&job, out.buf()).map(|()| true),
        || false,
    )
}
