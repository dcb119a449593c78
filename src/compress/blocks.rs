//! A chunk coded as blocks on a plan, in four phases: cut the chunk into blocks; choose and
//! code each block's predictor; settle the NGLR weights and fallbacks; assemble the container.

use rayon::prelude::*;

use super::assemble::{self, Sections};
use super::nglr::{self, Fallback, NglrEncode, Weights};
use super::source::{Coded, Source};
use crate::backend::cuda_nglr;
use crate::entropy::BlockCoder;
use crate::field::{self, Block, Element};
use crate::format::{directory::BlockPart, escapes};
use crate::params::{ChunkInfo, Enhancer, Params};
use crate::predict::{lorenzo, nglr::Nglr, nglr::ID as NGLR_ID};
use crate::quant::Plan;
use crate::select::{clear_share, Candidates, Menu};

/// A chunk coded as blocks, and the squared error of its decoded values when every block's
/// coding knew its own (the wavelet trial weighs it against the transform's).
pub(super) struct CodedChunk {
    pub bytes: Vec<u8>,
    pub sse: Option<f64>,
}

/// Codes a chunk on `plan`; `gpu_blocks` holds the block payloads when the GPU made them.
/// With the enhancer on, the plan's prequantized indices are dropped once the blocks are
/// coded (`plan.quantized.q` is left empty), so that the enhancer's grid indices and
/// corrections do not sit beside them (docs/RELIABILITY.md, "Memory"): a plan is coded with
/// the enhancer once, and then only loosened or dropped.
pub(super) fn encode_coded<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    plan: &mut Plan,
    gpu_blocks: Option<Vec<Vec<u8>>>,
) -> CodedChunk {
    let dims = field::grid_dims(&chunk.shape);
    let ext = field::block_extents(dims, crate::entropy::block_target(params.coder));
    let blocks = field::blocks(dims, ext).expect("extents are positive");
    let (coded, weights) = match gpu_blocks {
        Some(g) => (gpu_coded(g, plan), None),
        None => {
            assert_eq!(
                plan.quantized.q.len(),
                x.len(),
                "a plan whose indices were dropped is not coded again"
            );
            let source = Source {
                x,
                dims,
                plan,
                coder: params.coder,
                single: T::SIZE == 4,
            };
            code_blocks(&source, &blocks, ext, params, data.len())
        }
    };
    let sse = coded.iter().map(|c| c.sse).sum::<Option<f64>>();
    let mut all_escapes: Vec<usize> = coded
        .iter()
        .flat_map(|c| c.escapes.iter().copied())
        .collect();
    all_escapes.sort_unstable();
    // The payloads' checksums, on all threads.
    let parts: Vec<BlockPart<'_>> = coded
        .par_iter()
        .map(|c| BlockPart {
            predictor: c.id,
            coarse: c.coarse,
            kernel: c.kernel,
            coder: BlockCoder::for_block(params.coder, crate::predict::registry::contexts(c.id)),
            bytes: &c.bytes,
            crc: crc32fast::hash(&c.bytes),
        })
        .collect();
    if params.enhancer != Enhancer::Off {
        plan.quantized.q = Vec::new();
    }
    let plan = &*plan;
    let enhance = (params.enhancer != Enhancer::Off)
        .then(|| {
            let learned = weights.as_ref().map(|w| &w.model);
            let view = super::enhance::Coded {
                blocks: &blocks,
                parts: &parts,
                escapes: &all_escapes,
                learned,
            };
            super::enhance::section(x, data, chunk, params, plan, &view)
        })
        .flatten();
    let sections = Sections {
        weights: weights.as_ref().map(|w| &w.payload[..]),
        blocks: &parts,
        escapes: escapes::write(&all_escapes, data, T::SIZE),
        enhance,
    };
    CodedChunk {
        bytes: assemble::coded_chunk(chunk, params, plan, ext, &sections),
        sse: sse.filter(|_| params.enhancer == Enhancer::Off),
    }
}

/// The GPU's Lorenzo blocks; the escapes are the plan's (already global and sorted).
fn gpu_coded(blocks: Vec<Vec<u8>>, plan: &Plan) -> Vec<Coded> {
    blocks
        .into_iter()
        .enumerate()
        .map(|(n, c)| Coded {
            id: lorenzo::ID,
            coarse: 0,
            kernel: 0,
            bytes: c,
            escapes: if n == 0 {
                plan.quantized.escapes.clone()
            } else {
                Vec::new()
            },
            sse: None,
        })
        .collect()
}

/// Chooses and codes every block's predictor (the NGLR model, when the predictor word asks
/// for one, among the candidates), then settles the NGLR weights: the blocks' codings, and
/// the weights when they are kept. `blocks` tile the chunk with extents `ext`; `bytes`: the
/// chunk's size, which decides the GPU.
fn code_blocks<T: Element>(
    source: &Source<'_, T>,
    blocks: &[Block],
    ext: [usize; 3],
    params: &Params,
    bytes: usize,
) -> (Vec<Coded>, Option<Weights>) {
    let plan = source.plan;
    let local = escapes::per_block(&plan.quantized.escapes, source.dims, ext, blocks);
    // One network per chunk, fitted on a subsample, shared by the blocks that use it. In auto
    // modes it is one more candidate per block, and kept only when it pays for itself.
    let learned = nglr::train_for(source.x, source.dims, plan, params, source.single);
    let menu = Menu::new(params.predictor, plan);
    // With the CUDA backend (by name, or auto from Stage::NglrEncode's size on), the blocks NGLR
    // codes whole (every block when it is forced) are coded on the GPU together once the
    // choices are made: the same codes as the CPU's, so the same chunk.
    let nglr_dev = learned
        .is_some()
        .then(|| {
            let stage = crate::backend::Stage::NglrEncode;
            crate::backend::gpu_for(stage, params.backend, bytes)
        })
        .flatten();
    let later = nglr_dev.is_some();
    let coded: Vec<(Option<Coded>, Option<Fallback>)> = blocks
        .par_iter()
        .zip(&local)
        .map(|(b, esc)| code_block(source, b, esc, &menu, learned.as_ref(), later))
        .collect();
    let Some(n) = learned else {
        let coded = coded.into_iter();
        return (
            coded.map(|(c, _)| c.expect("coded: no NGLR")).collect(),
            None,
        );
    };
    let on_gpu = nglr_dev.map(|g| {
        let model = &n.model;
        move |b: &[Block], c: &cuda_nglr::Coding, x: &[f64], q: &mut [i32], e: &mut [bool]| {
            g.nglr_encode(model, b, c, x, q, e)
        }
    });
    let offload = on_gpu.as_ref().map(|f| f as &NglrEncode<'_>);
    let coded = nglr::code_nglr_later(source, blocks, &local, &n, offload, coded);
    nglr::settle(source, blocks, &local, n, menu.fixed() == 0, coded)
}

/// Chooses block `b`'s predictor and codes the block with it: the coding (`None` when it is
/// a whole-block NGLR coding left for the GPU, `later`) and, for an NGLR block in auto mode,
/// the best fixed candidate, coded unless NGLR's sample trial won by more than
/// [`clear_share`], kept in case the weights cost more than NGLR saves.
fn code_block<T: Element>(
    source: &Source<'_, T>,
    b: &Block,
    esc: &[usize],
    menu: &Menu,
    learned: Option<&Nglr>,
    later: bool,
) -> (Option<Coded>, Option<Fallback>) {
    let plan = source.plan;
    if menu.lorenzo_only() && learned.is_none() && plan.m == 1 && esc.is_empty() {
        return (Some(source.code_on_grid(b)), None);
    }
    let (bx, bq, escaped) = source.gather(b, esc);
    let candidates = Candidates::fit(menu, &bq, b.ext, plan);
    let input = (&bx[..], &bq[..], &escaped[..]);
    let choice = candidates.choose(
        menu,
        learned,
        input,
        b.ext,
        plan,
        source.coder,
        source.single,
    );
    let (predictor, done) = choice.best;
    let later = later && done.is_none() && predictor.id() == NGLR_ID;
    let chosen = (!later).then(|| source.code(b, predictor, &bx, &bq, &escaped, done));
    let fallback = choice.fallback.map(|((p, done), saving)| match done {
        None if learned.is_some_and(|n| saving.share > clear_share(&n.model, p.id())) => {
            Fallback::Pending(p.id(), p.coarse(), p.kernel(), p.header(), saving.bytes)
        }
        done => Fallback::Coded(source.code(b, p, &bx, &bq, &escaped, done)),
    });
    (chosen, fallback)
}
