//! The encode driver: `compress` -> a whole-chunk coding ([`Whole`]) -> for coded blocks,
//! plan (`quant`) -> select (`crate::select`) -> code ([`blocks`]) -> assemble the container
//! ([`assemble`]); the NRMSE / PSNR target loops ([`target`]) code and decode until the
//! target holds. Encode only: `decompress/` never imports this module, this module uses it
//! (a target loop decodes what it wrote).

mod assemble;
mod blocks;
mod enhance;
mod nglr;
mod source;
mod target;
mod wavelet;

use crate::error::{ensure, Error, Result};
use crate::field::{self, Element};
use crate::format::{self, section, Header, Layout, Reader};
use crate::params::{ChunkInfo, DType, Enhancer, Params, PredictorChoice};
use crate::quant::{self, Plan};
use crate::region::Region;
use blocks::CodedChunk;

pub fn compress(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Result<Vec<u8>> {
    params.validate()?;
    let expected = chunk.byte_len()?;
    ensure!(
        data.len() == expected,
        Error::SizeMismatch {
            expected,
            actual: data.len()
        }
    );
    Ok(match chunk.dtype {
        DType::F32 => compress_typed::<f32>(data, chunk, params),
        DType::F64 => compress_typed::<f64>(data, chunk, params),
    })
}

/// The whole-chunk codings: how a chunk as a whole is turned into a container, chosen once
/// per chunk by [`Whole::choose`]. Storing the chunk as it came is the fallback of every
/// coding (never a choice): a coding's output is kept only when it is smaller.
///
/// To add one (a transform of the whole chunk, say): a variant here, the condition that
/// picks it in [`Whole::choose`] (or a trial against [`Whole::Blocks`]), its arm in
/// [`compress_typed`] returning `Some(container)`, and a section or layout that names it in
/// the container (`docs/FORMAT.md`), which `decompress/` dispatches on.
enum Whole {
    /// The chunk cut into blocks, each predicted and coded on its own ([`blocks`]).
    Blocks,
    /// An HDF5 edge chunk: its data box `region` coded as [`Whole::Blocks`], behind a REGION
    /// section ([`compress_edge`]).
    EdgeBox { region: Region },
    /// The wavelet path ([`wavelet`]), blocks where it cannot code the chunk.
    Wavelet,
}

impl Whole {
    fn choose(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Whole {
        let size = chunk.dtype.size();
        match chunk
            .padding
            .and_then(|fill| Region::find(data, size, &chunk.shape, fill))
        {
            Some(region) => Whole::EdgeBox { region },
            None if params.predictor == PredictorChoice::Wavelet => Whole::Wavelet,
            None => Whole::Blocks,
        }
    }
}

fn compress_typed<T: Element>(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Vec<u8> {
    let coded = match Whole::choose(data, chunk, params) {
        Whole::Blocks => {
            compress_blocks::<T>(data, chunk, params).map(|blocks| match wavelet_trial(params) {
                true => {
                    let x = field::values::<T>(data);
                    let rival = wavelet::Rival {
                        bytes: blocks.bytes.len(),
                        sse: blocks.sse,
                    };
                    wavelet::encode_if_better::<T>(&x, data, chunk, params, &rival)
                        .unwrap_or(blocks.bytes)
                }
                false => blocks.bytes,
            })
        }
        Whole::EdgeBox { region } => compress_edge::<T>(data, chunk, params, &region),
        Whole::Wavelet => wavelet::encode::<T>(&field::values::<T>(data), data, chunk, params)
            .or_else(|| compress_blocks::<T>(data, chunk, params).map(|b| b.bytes)),
    };
    match coded {
        Some(bytes) if bytes.len() < format::stored_len(chunk.shape.len(), data.len()) => bytes,
        _ => encode_stored(data, chunk, params),
    }
}

/// Whether the blocks' coding is tried against the wavelet path ([`wavelet::encode_if_better`]):
/// the auto predictor words, with no enhancer (NeurLZ learns from the blocks' grid) and on the
/// CPU.
fn wavelet_trial(params: &Params) -> bool {
    matches!(
        params.predictor,
        PredictorChoice::Auto | PredictorChoice::AutoLinear | PredictorChoice::AutoNglr
    ) && params.enhancer == Enhancer::Off
}

/// An HDF5 edge chunk: its data box is coded as a chunk of its own (so the bound is taken over
/// the user's values only), behind a header of the whole chunk's shape and a REGION section
/// that tells the decoder where the box goes and what the padding holds. `None` when the box
/// would be stored: the chunk is then stored as it came, padding and all.
fn compress_edge<T: Element>(
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    region: &Region,
) -> Option<Vec<u8>> {
    let boxed = ChunkInfo::new(chunk.dtype, &region.extent).expect("a box inside the chunk");
    let data = region.gather(data, chunk.dtype.size());
    let coded = compress_blocks::<T>(&data, &boxed, params)
        .map(|c| c.bytes)
        .filter(|c| c.len() < format::stored_len(boxed.shape.len(), data.len()))?;
    let mut r = Reader::new(&coded);
    let header = Header::read(&mut r).expect("the encoder's own header");
    let mut payload = Vec::new();
    format::write_region(&mut payload, &region.extent, region.pad);
    let mut out = Vec::with_capacity(coded.len() + format::SECTION_HEADER + payload.len());
    Header {
        version: format::REGION_VERSION,
        shape: chunk.shape.clone(),
        sections: header.sections + 1,
        ..header
    }
    .write(&mut out);
    format::write_section(&mut out, section::REGION, &payload);
    out.extend_from_slice(&coded[r.pos..]);
    Some(out)
}

/// Codes a chunk's values as blocks (the GPU's when it takes the chunk); `None` when no grid
/// can hold them.
fn compress_blocks<T: Element>(
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
) -> Option<CodedChunk> {
    if let Some((mut plan, coded)) = gpu_encode(data, chunk, params) {
        // The GPU coded every block: the values are needed only as bytes, for the escapes.
        return Some(blocks::encode_coded::<T>(
            &[],
            data,
            chunk,
            params,
            &mut plan,
            Some(coded),
        ));
    }
    let x = field::values::<T>(data);
    let x = &x[..];
    let mut plan = quant::plan(x, params)?;
    Some(match quant::target_nrmse(params) {
        Some(target) => CodedChunk {
            bytes: target::encode_for_target(x, data, chunk, params, plan, target),
            sse: None,
        },
        None => blocks::encode_coded(x, data, chunk, params, &mut plan, None),
    })
}

/// Runs the quantize + Lorenzo + coding stages on the GPU when the CUDA backend is selected
/// and the chunk is plain Lorenzo (LBRC, feedback step 1) with an absolute or relative bound:
/// the plan and each block's payload. The CPU computes the same bytes when this returns `None`.
fn gpu_encode(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Option<(Plan, Vec<Vec<u8>>)> {
    if params.predictor != PredictorChoice::Lorenzo || params.enhancer != Enhancer::Off {
        return None;
    }
    let (grid, eb, enc) = crate::backend::gpu_encode(data, chunk, params)?;
    let plan = Plan {
        grid,
        eb,
        m: 1,
        quantized: quant::Quantized {
            escapes: enc.escapes,
            ..Default::default()
        },
    };
    Some((plan, enc.coded))
}

/// The header of a stored chunk; a coded one overrides the grid, blocks and sections.
fn base_header(chunk: &ChunkInfo, params: &Params) -> Header {
    Header {
        version: format::BASE_VERSION,
        layout: Layout::Stored,
        dtype: chunk.dtype,
        shape: chunk.shape.clone(),
        mode: params.mode,
        coder: params.coder,
        requested: params.bound,
        eb: 0.0,
        mid: 0.0,
        step: 0.0,
        feedback: 0,
        block: [0; 3],
        sections: 1,
    }
}

/// The chunk's bytes as they are, behind a header: the output never grows by more than that.
fn encode_stored(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + format::MAX_OVERHEAD);
    base_header(chunk, params).write(&mut out);
    format::write_section(&mut out, section::STORED, data);
    out
}
