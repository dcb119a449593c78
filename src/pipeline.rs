//! Chains the stages: `bytes -> field -> quantize -> predict -> entropy -> container` and back.

use rayon::prelude::*;

use crate::enhance::{neurlz, neurlz_encode};
use crate::entropy;
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::format::{self, section, Header, Layout, Reader};
use crate::params::{ChunkInfo, Coder, DType, Enhancer, ErrorMode, Params, PredictorChoice};
use crate::predict::{
    self, fitted,
    interp::{self, Interp, InterpMd},
    lorenzo::{self, Lorenzo},
    nglr, BlockEncoder, Predictor,
};
use crate::quant::{self, dequantize, Grid, Plan};
use crate::region::Region;

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
    match chunk.dtype {
        DType::F32 => compress_typed::<f32>(data, chunk, params),
        DType::F64 => compress_typed::<f64>(data, chunk, params),
    }
}

fn compress_typed<T: Element>(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Result<Vec<u8>> {
    if let Some(fill) = chunk.padding {
        let x: Vec<T> = field::from_bytes(data);
        if let Some(region) = Region::find(&x, &chunk.shape, fill) {
            return Ok(compress_edge(&x, data, chunk, params, &region));
        }
    }
    Ok(compress_values::<T>(data, chunk, params))
}

/// An HDF5 edge chunk: its data box is coded as a chunk of its own (so the bound is taken over
/// the user's values only), behind a header of the whole chunk's shape and a REGION section
/// that tells the decoder where the box goes and what the padding holds.
fn compress_edge<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    region: &Region,
) -> Vec<u8> {
    let boxed = ChunkInfo::new(chunk.dtype, &region.extent).expect("a box inside the chunk");
    let coded = compress_values::<T>(&field::to_bytes(&region.gather(x)), &boxed, params);
    let mut r = Reader::new(&coded);
    let header = Header::read(&mut r).expect("the encoder's own header");
    if header.layout == Layout::Stored {
        // Stored exactly: the chunk as it came, padding and all.
        return encode_stored(data, chunk, params);
    }
    let mut payload = Vec::new();
    format::write_region(&mut payload, &region.extent, region.pad);
    let mut out = Vec::with_capacity(coded.len() + format::SECTION_HEADER + payload.len());
    Header {
        version: format::FORMAT_VERSION,
        shape: chunk.shape.clone(),
        sections: header.sections + 1,
        ..header
    }
    .write(&mut out);
    format::write_section(&mut out, section::REGION, &payload);
    out.extend_from_slice(&coded[r.pos..]);
    if out.len() < format::stored_len(chunk.shape.len(), data.len()) {
        out
    } else {
        encode_stored(data, chunk, params)
    }
}

/// Codes a chunk's values (the GPU's when it takes the chunk).
fn compress_values<T: Element>(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Vec<u8> {
    let coded = match gpu_encode(data, chunk, params) {
        // The GPU coded every block: the values are needed only as bytes, for the escapes.
        Some((plan, blocks)) => Some(encode_coded::<T>(
            &[],
            data,
            chunk,
            params,
            &plan,
            Some(blocks),
        )),
        None => {
            let x: Vec<T> = field::from_bytes(data);
            quant::plan(&x, params).map(|plan| match quant::target_nrmse(params) {
                Some(target) => encode_for_target(&x, data, chunk, params, plan, target),
                None => encode_coded(&x, data, chunk, params, &plan, None),
            })
        }
    };
    match coded {
        Some(bytes) if bytes.len() < format::stored_len(chunk.shape.len(), data.len()) => bytes,
        _ => encode_stored(data, chunk, params),
    }
}

/// The NRMSE of a chunk's decoded values against `x` (`None` if it does not decode).
fn decoded_nrmse<T: Element>(x: &[T], bytes: &[u8]) -> Option<f64> {
    let back = decompress(bytes, usize::MAX).ok()?;
    Some(quant::nrmse(x, &field::from_bytes::<T>(&back)))
}

/// Codes a chunk for an NRMSE or PSNR target. `plan` is the target's grid with feedback step
/// 1, which meets the target by construction (the prequantized values are the decoded ones).
/// The default predictors code far smaller with error feedback (step
/// [`quant::FEEDBACK_STEP`], as with absolute bounds), whose error is only known after coding:
/// the grid of the same bound with that step is coded and decoded, and its bound corrected
/// from the measured error towards the target, three times at most, keeping the smallest
/// chunk that meets the target.
/// With the enhancer on, [`quality_target`] then looks for a smaller chunk.
fn encode_for_target<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    plan: Plan,
    target: f64,
) -> Vec<u8> {
    let plain = Params {
        enhancer: Enhancer::Off,
        ..*params
    };
    let mut base: Option<(Plan, Vec<u8>)> = None;
    if params.predictor != PredictorChoice::Lorenzo {
        let mut eb = plan.eb;
        for _ in 0..3 {
            let Some(p) = quant::plan_on(x, plan.grid.mid, eb, quant::FEEDBACK_STEP) else {
                break;
            };
            let bytes = encode_coded(x, data, chunk, &plain, &p, None);
            let Some(e) = decoded_nrmse(x, &bytes).filter(|&e| e > 0.0) else {
                break;
            };
            if e <= target {
                if base.as_ref().map_or(true, |b| bytes.len() < b.1.len()) {
                    base = Some((p, bytes));
                }
                // Close enough: a looser grid would gain little.
                if e > 0.95 * target {
                    break;
                }
            }
            // The error scales about linearly with the bound: aim a little inside the target.
            eb *= 0.99 * target / e;
        }
    }
    // At high rates error feedback stops paying (its finer grid costs about as much as it
    // saves): there, and when the search found nothing, `plan`'s own grid is a candidate too.
    let (plan, bytes) = match base {
        Some((p, b)) if b.len() * 8 <= LOW_RATE_BITS * x.len() => (p, b),
        found => {
            let own = encode_coded(x, data, chunk, &plain, &plan, None);
            match found {
                Some((p, b)) if b.len() <= own.len() => (p, b),
                _ => (plan, own),
            }
        }
    };
    if params.enhancer == Enhancer::Off {
        return bytes;
    }
    quality_target(x, data, chunk, params, &plan, bytes, target)
}

/// Bits per value up to which an NRMSE or PSNR target is coded with error feedback alone
/// (measured on wmag, CESM TS and vorticity2d: feedback needs 8-56% fewer bits at 40-60 dB,
/// about 1% more at 80-100 dB).
const LOW_RATE_BITS: usize = 4;

/// Quality-target mode loosens the base grid by at most this factor.
const MAX_LOOSEN: f64 = 4.0;

/// Quality-target mode (an NRMSE or PSNR target with the enhancer on, `docs/NEURLZ.md`):
/// the smallest chunk that meets the target, from the base codec alone on the target's grid
/// (`plain`, coded on `plan`), the enhancer on that grid, and the enhancer on up to four
/// looser grids, each checked by decoding it.
fn quality_target<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    plan: &Plan,
    plain: Vec<u8>,
    target: f64,
) -> Vec<u8> {
    let forced = Params {
        enhancer_force: true,
        ..*params
    };
    let mut best = plain;
    let enhanced = encode_coded(x, data, chunk, &forced, plan, None);
    let Some(e0) = decoded_nrmse(x, &enhanced) else {
        return best;
    };
    if e0 <= target && enhanced.len() < best.len() {
        best = enhanced;
    }
    // The enhanced error scales about linearly with the grid's bound: each try aims the
    // factor at the target from the last measured error (a little inside it).
    let mut factor = if e0 > 0.0 { target / e0 } else { MAX_LOOSEN }.min(MAX_LOOSEN);
    for _ in 0..4 {
        if !(factor > 1.01) {
            break;
        }
        let Some(loose) = quant::loosened(x, plan, factor) else {
            break;
        };
        let bytes = encode_coded(x, data, chunk, &forced, &loose, None);
        let Some(e) = decoded_nrmse(x, &bytes) else {
            break;
        };
        if e <= target {
            if bytes.len() < best.len() {
                best = bytes;
            }
            if e > 0.97 * target {
                break;
            }
        }
        let next = (factor * 0.99 * target / e.max(f64::MIN_POSITIVE)).min(MAX_LOOSEN);
        // A zero error (a constant chunk) keeps the factor at its cap: the same try again.
        if next == factor {
            break;
        }
        factor = next;
    }
    best
}

/// The values the grid cannot hold, per block, as indices inside the block (increasing).
fn local_escapes(
    plan: &Plan,
    dims: [usize; 3],
    ext: [usize; 3],
    blocks: &[Block],
) -> Vec<Vec<usize>> {
    let mut local: Vec<Vec<usize>> = vec![Vec::new(); blocks.len()];
    let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
    for &i in &plan.quantized.escapes {
        let (b, pos) = field::locate(i, dims, ext);
        let n = (b[0] * counts[1] + b[1]) * counts[2] + b[2];
        let bext = blocks[n].ext;
        local[n].push((pos[0] * bext[1] + pos[1]) * bext[2] + pos[2]);
    }
    local
}

/// NGLR's prediction and coding of blocks laid out one after another, in the GPU's place
/// ([`Source::nglr_offloaded`]).
type NglrEncode<'a> = dyn Fn(
        &[Block],
        &crate::backend::cuda_nglr::Coding,
        &[f64],
        &mut [i32],
        &mut [bool],
    ) -> Result<Vec<i32>>
    + 'a;

/// Codes the blocks whose NGLR coding was left for later (`None`): all at once through
/// `offload` (the GPU), or on the CPU when there is none or it fails (logged). Every other
/// block comes back as it was.
fn code_nglr_later<T: Element>(
    source: &Source<'_, T>,
    blocks: &[Block],
    local_escapes: &[Vec<usize>],
    model: &nglr::Nglr,
    offload: Option<&NglrEncode<'_>>,
    coded: Vec<(Option<Coded>, Option<Fallback>)>,
) -> Vec<(Coded, Option<Fallback>)> {
    let later: Vec<usize> = (0..coded.len()).filter(|&k| coded[k].0.is_none()).collect();
    let mut done: Vec<Coded> = Vec::new();
    if !later.is_empty() {
        let bl: Vec<Block> = later.iter().map(|&k| blocks[k]).collect();
        let esc: Vec<Vec<usize>> = later.iter().map(|&k| local_escapes[k].clone()).collect();
        done = offload
            .and_then(|encode| source.nglr_offloaded(&bl, &esc, model, encode))
            .unwrap_or_else(|| {
                bl.par_iter()
                    .zip(&esc)
                    .map(|(b, e)| {
                        let (bx, bq, be) = source.gather(b, e);
                        source.code(b, model, &bx, &bq, &be, None)
                    })
                    .collect()
            });
    }
    let mut done = done.into_iter();
    coded
        .into_iter()
        .map(|(c, f)| match c {
            Some(c) => (c, f),
            None => (
                done.next()
                    .expect("a coding for every block left for later"),
                f,
            ),
        })
        .collect()
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

/// Codes a chunk on `plan`; `gpu_blocks` holds the block payloads when the GPU made them.
fn encode_coded<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    plan: &Plan,
    gpu_blocks: Option<Vec<Vec<u8>>>,
) -> Vec<u8> {
    let dims = field::grid_dims(&chunk.shape);
    let ext = field::block_extents(dims);
    let blocks = field::blocks(dims, ext).expect("extents are positive");

    let local_escapes = local_escapes(plan, dims, ext, &blocks);

    // NGLR: one network per chunk, fitted on a subsample, shared by the blocks that use it.
    // Only when asked for: it slows coding down (docs/NGLR.md). In auto modes it is one more
    // candidate per block, and the weights are kept only when they pay for themselves.
    // Predictor 5 fits a linear bias in closed form (WEIGHTS kind 2); 3 and 4 train the
    // whole network, several times slower.
    let single = T::SIZE == 4;
    let learned = match params.predictor {
        PredictorChoice::Nglr | PredictorChoice::AutoNglr => {
            train_nglr(x, dims, plan, params, single, Fit::Network)
        }
        PredictorChoice::AutoLinear => train_nglr(x, dims, plan, params, single, Fit::Linear),
        _ => None,
    };
    let coarse = interp::coarse_step(plan.m);
    let (with_lorenzo, with_interp) = match params.predictor {
        PredictorChoice::Auto | PredictorChoice::AutoNglr | PredictorChoice::AutoLinear => {
            (true, true)
        }
        PredictorChoice::Lorenzo => (true, false),
        PredictorChoice::Interp => (false, true),
        PredictorChoice::Nglr => (false, false),
    };
    let fixed = with_lorenzo as usize + 2 * with_interp as usize;
    // Per block: the chosen coding and, for an NGLR block in auto mode, the best fixed
    // candidate (coded unless NGLR's sample trial won by more than `clear_share`), kept in case
    // the weights cost more than NGLR saves.
    let cpu_blocks: &[Block] = if gpu_blocks.is_some() { &[] } else { &blocks };
    let source = Source {
        x,
        dims,
        plan,
        coder: params.coder,
        single,
    };
    // With the CUDA backend (by name, or auto from ENCODE_AUTO_MIN_BYTES on), the blocks NGLR
    // codes whole (every block when it is forced) are coded on the GPU together once the
    // choices are made: the same codes as the CPU's, so the same chunk.
    let nglr_dev = (learned.is_some() && gpu_blocks.is_none())
        .then(|| {
            let auto_min = crate::backend::cuda_nglr::ENCODE_AUTO_MIN_BYTES;
            crate::backend::gpu_for_work(params.backend, data.len(), auto_min)
        })
        .flatten();
    let coded: Vec<(Option<Coded>, Option<Fallback>)> = cpu_blocks
        .par_iter()
        .zip(&local_escapes)
        .map(|(b, esc)| {
            let (bx, bq, escaped) = source.gather(b, esc);
            // The interpolations' kernel is fitted to the block.
            let kernel = if with_interp {
                interp::fit_kernel(&bq, b.ext, plan.m, coarse)
            } else {
                interp::Kernel::CUBIC
            };
            let (interp_1d, interp_md) = (Interp { coarse, kernel }, InterpMd { coarse, kernel });
            // Lorenzo's weights fitted to the block, when that is estimated to pay (auto
            // modes only: predictor word 1 is plain Lorenzo, LBRC). A sure estimate replaces
            // Lorenzo among the candidates; a closer one joins it.
            let fitted_lorenzo = (with_lorenzo && with_interp)
                .then(|| fitted::fit(&bq, b.ext, plan.m))
                .flatten();
            let sure = |ratio: f64| ratio < FITTED_SURE;
            let mut candidates: Vec<&dyn Predictor> = Vec::with_capacity(5);
            if with_lorenzo {
                match &fitted_lorenzo {
                    Some((f, ratio)) if sure(*ratio) => candidates.push(f),
                    _ => candidates.push(&Lorenzo),
                }
            }
            if with_interp {
                candidates.extend([&interp_1d as &dyn Predictor, &interp_md]);
            }
            let extra = match &fitted_lorenzo {
                Some((f, ratio)) if !sure(*ratio) => {
                    candidates.push(f);
                    1
                }
                _ => 0,
            };
            match &learned {
                Some(n) => candidates.push(n),
                None if fixed == 0 => candidates.push(&Lorenzo), // too few points to train on
                None => {}
            }
            // Lorenzo, then the two interpolations: the second waits for the first. Fitted
            // Lorenzo beside plain Lorenzo waits for both.
            let mut defer = Vec::with_capacity(2);
            if with_lorenzo && with_interp {
                defer.push(Defer {
                    candidate: 2,
                    rival: 1,
                    reference: 0,
                    margin: DEFER_MARGIN,
                });
            }
            if extra == 1 {
                defer.push(Defer {
                    candidate: fixed,
                    rival: 0,
                    reference: 1,
                    margin: 1.0 / FITTED_SURE - 1.0,
                });
            }
            let choice = choose_predictor(
                &candidates,
                fixed + extra,
                &defer,
                &bx,
                &bq,
                &escaped,
                b.ext,
                plan,
                params.coder,
                single,
            );
            let (predictor, done) = choice.best;
            // A whole-block NGLR coding waits for the GPU, which codes them all at once.
            let later = done.is_none() && predictor.id() == nglr::ID && nglr_dev.is_some();
            let chosen = (!later).then(|| source.code(b, predictor, &bx, &bq, &escaped, done));
            // The fallback is coded now unless the learned candidate's trial won clearly.
            let fallback = choice.fallback.map(|((p, done), saving)| match done {
                None if learned
                    .as_ref()
                    .is_some_and(|n| saving.share > clear_share(&n.model, p.id())) =>
                {
                    Fallback::Pending(p.id(), p.kernel(), p.header(), saving.bytes)
                }
                done => Fallback::Coded(source.code(b, p, &bx, &bq, &escaped, done)),
            });
            (chosen, fallback)
        })
        .collect();
    let coded = match &learned {
        Some(n) => {
            let on_gpu = nglr_dev.map(|g| {
                move |b: &[Block],
                      c: &crate::backend::cuda_nglr::Coding,
                      x: &[f64],
                      q: &mut [i32],
                      e: &mut [bool]| g.nglr_encode(&n.model, b, c, x, q, e)
            });
            let offload = on_gpu.as_ref().map(|f| f as &NglrEncode<'_>);
            code_nglr_later(&source, &blocks, &local_escapes, n, offload, coded)
        }
        None => coded
            .into_iter()
            .map(|(c, f)| (c.expect("coded: no NGLR"), f))
            .collect(),
    };
    // The weights are written only when the blocks that use them save more than they cost;
    // then each block with a coded fallback keeps the smaller of its two codings. A pending
    // fallback counts with its estimated saving; when the weights are dropped, pending
    // fallbacks are coded.
    let cost = |c: &Coded| c.bytes.len() + c.escapes.len() * (T::SIZE + 2);
    let nglr_wins = |c: &Coded, alt: &Option<Fallback>| match alt {
        Some(Fallback::Coded(a)) => c.id == nglr::ID && cost(c) < cost(a),
        _ => c.id == nglr::ID,
    };
    let weights = learned.as_ref().and_then(|n| {
        let mut payload = Vec::new();
        n.model.write(&mut payload);
        let price = (payload.len() + format::SECTION_HEADER) as f64;
        let (with, without) = coded
            .iter()
            .fold((0f64, 0f64), |(w, wo), (c, alt)| match alt {
                Some(Fallback::Coded(a)) => (w + cost(c).min(cost(a)) as f64, wo + cost(a) as f64),
                Some(Fallback::Pending(_, _, _, saving)) => {
                    (w + cost(c) as f64, wo + cost(c) as f64 + saving)
                }
                None => (w, wo),
            });
        let used = coded.iter().any(|(c, alt)| nglr_wins(c, alt));
        let forced = fixed == 0;
        (used && (forced || with + price < without)).then_some(payload)
    });
    let coded: Vec<(Coded, Option<Fallback>)> = if weights.is_some() {
        coded
    } else {
        coded
            .into_par_iter()
            .zip(cpu_blocks)
            .zip(&local_escapes)
            .map(|(((c, alt), b), esc)| match alt {
                Some(Fallback::Pending(id, kernel, header, _)) => {
                    let (bx, bq, escaped) = source.gather(b, esc);
                    let (p, _) = predict::for_block(id, coarse_step_of(id, plan), kernel, &header)
                        .expect("a fixed candidate's own id and bytes");
                    let a = source.code(b, p.as_ref(), &bx, &bq, &escaped, None);
                    (c, Some(Fallback::Coded(a)))
                }
                alt => (c, alt),
            })
            .collect()
    };
    let coded: Vec<Coded> = coded
        .into_iter()
        .map(|(c, alt)| match alt {
            Some(Fallback::Coded(a)) if weights.is_none() || cost(&a) <= cost(&c) => a,
            _ => c,
        })
        .collect();
    let coded: Vec<Coded> = match gpu_blocks {
        // The GPU's Lorenzo blocks; the escapes are the plan's (already global and sorted).
        Some(g) => g
            .into_iter()
            .enumerate()
            .map(|(n, c)| {
                let esc = if n == 0 {
                    plan.quantized.escapes.clone()
                } else {
                    Vec::new()
                };
                Coded {
                    id: Lorenzo.id(),
                    kernel: 0,
                    bytes: c,
                    escapes: esc,
                }
            })
            .collect(),
        None => coded,
    };
    let mut escapes: Vec<usize> = coded
        .iter()
        .flat_map(|c| c.escapes.iter().copied())
        .collect();
    escapes.sort_unstable();
    let enhance = (params.enhancer != Enhancer::Off)
        .then(|| {
            let nglr = weights.as_ref().and(learned.as_ref());
            enhance_section(x, chunk, params, plan, &blocks, &coded, &escapes, nglr)
        })
        .flatten();

    // The directory, then the payloads; their checksums (on all threads) serve both the
    // directory and the section's own.
    let crcs: Vec<u32> = coded
        .par_iter()
        .map(|c| crc32fast::hash(&c.bytes))
        .collect();
    let mut directory = Vec::with_capacity(4 + 12 * coded.len());
    directory.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for (c, crc) in coded.iter().zip(&crcs) {
        directory.push(c.id);
        directory.push(
            entropy::BlockCoder::for_block(params.coder, predict::registry::contexts(c.id)).id(),
        );
        directory.extend_from_slice(&[coarse_step_of(c.id, plan), c.kernel]);
        directory.extend_from_slice(&(c.bytes.len() as u32).to_le_bytes());
        directory.extend_from_slice(&crc.to_le_bytes());
    }
    let dir_crc = crc32fast::hash(&directory);
    let blocks_section: Vec<(&[u8], u32)> = std::iter::once((&directory[..], dir_crc))
        .chain(coded.iter().zip(&crcs).map(|(c, &crc)| (&c.bytes[..], crc)))
        .collect();
    let blocks_len: usize = blocks_section.iter().map(|p| p.0.len()).sum();

    let mut esc_payload = Vec::new();
    esc_payload.extend_from_slice(&(escapes.len() as u64).to_le_bytes());
    let mut prev = None;
    for &i in &escapes {
        format::put_varint(
            &mut esc_payload,
            match prev {
                None => i as u64,
                Some(p) => (i - p - 1) as u64,
            },
        );
        prev = Some(i);
    }
    // The escaped values' own bytes (what `x[i].write_le` gives).
    for &i in &escapes {
        esc_payload.extend_from_slice(&data[i * T::SIZE..(i + 1) * T::SIZE]);
    }

    let header = Header {
        layout: Layout::Coded,
        eb: plan.eb,
        mid: plan.grid.mid,
        step: plan.grid.step,
        feedback: plan.m as u16,
        block: ext,
        sections: 2 + weights.is_some() as u32 + enhance.is_some() as u32,
        ..base_header(chunk, params)
    };
    let mut out = Vec::with_capacity(
        64 + 8 * chunk.shape.len()
            + weights.as_ref().map_or(0, |w| 16 + w.len())
            + 16
            + blocks_len
            + 16
            + esc_payload.len()
            + enhance.as_ref().map_or(0, |e| 16 + e.len()),
    );
    header.write(&mut out);
    if let Some(w) = &weights {
        format::write_section(&mut out, section::WEIGHTS, w);
    }
    format::write_section_parts(&mut out, section::BLOCKS, &blocks_section);
    format::write_section(&mut out, section::ESCAPES, &esc_payload);
    if let Some(e) = &enhance {
        format::write_section(&mut out, section::ENHANCE, e);
    }
    out
}

/// The NeurLZ section (encode only): trained on the decoder's own reconstruction, which the
/// encoder gets by decoding the blocks it just coded. `None` when the enhancer does not pay.
#[allow(clippy::too_many_arguments)]
fn enhance_section<T: Element>(
    x: &[T],
    chunk: &ChunkInfo,
    params: &Params,
    plan: &Plan,
    blocks: &[Block],
    coded: &[Coded],
    escapes: &[usize],
    learned: Option<&nglr::Nglr>,
) -> Option<Vec<u8>> {
    let dims = field::grid_dims(&chunk.shape);
    let parts: Vec<BlockPart<'_>> = coded
        .iter()
        .map(|c| BlockPart {
            predictor: c.id,
            coarse: coarse_step_of(c.id, plan),
            kernel: c.kernel,
            coder: entropy::BlockCoder::for_block(params.coder, predict::registry::contexts(c.id)),
            bytes: &c.bytes,
            crc: crc32fast::hash(&c.bytes),
        })
        .collect();
    let bytes = std::mem::size_of_val(x);
    let q = decode_grid(blocks, &parts, dims, plan.m as i32, learned, bytes).ok()?;
    let view = neurlz_encode::Chunk {
        x,
        q: &q,
        escapes,
        shape: &chunk.shape,
        dims,
        grid: plan.grid,
        eb: plan.eb,
        m: plan.m,
    };
    let base_rate = |bound: f64| -> Option<(usize, f64)> {
        let p = Params {
            mode: ErrorMode::Abs,
            bound,
            enhancer: Enhancer::Off,
            ..*params
        };
        let c = compress(&field::to_bytes(x), chunk, &p).ok()?;
        let y: Vec<T> = field::from_bytes(&decompress(&c, usize::MAX).ok()?);
        Some((c.len(), quant::sse(x, &y)))
    };
    neurlz_encode::encode(&view, params, &base_rate).0
}

/// A coded block: the directory's predictor id and kernel byte, the payload, and the chunk
/// indices of its escaped points.
#[derive(Debug, PartialEq)]
struct Coded {
    id: u8,
    kernel: u8,
    bytes: Vec<u8>,
    escapes: Vec<usize>,
}

/// The best fixed candidate of a block that chose NGLR: coded, or only its estimated saving.
enum Fallback {
    Coded(Coded),
    /// Not coded yet: the predictor (id, kernel byte and header) and how many bytes NGLR is
    /// estimated to save over it.
    Pending(u8, u8, Vec<u8>, f64),
}

/// A block tried on a sample skips coding its fallback when the learned candidate's trial was
/// smaller by more than this share: the estimate is then safe to trust. Below it the fallback
/// is coded, so the smaller coding is known exactly. Per model kind and fallback, measured on
/// the grade-A fields: for the linear bias (word 5) against Lorenzo, which visits the block
/// in the same order, 3% gave the same sizes as 10% and encoded 14% faster (trusting every
/// estimate was 14% faster again but 0.1% larger). A sample cuts an interpolation's levels,
/// so against one the estimate is less sure: 3% coded CESM TS 0.3% larger than plain auto at
/// rel 1e-2 once kernels were fitted. The network (words 3 and 4) keeps 10% against either:
/// 3% coded CESM PRECT and TS 2-4% larger than plain auto at rel 1e-2.
fn clear_share(model: &crate::nn::weights::Model, fallback: u8) -> f64 {
    match model {
        crate::nn::weights::Model::Linear(_) if matches!(fallback, lorenzo::ID | fitted::ID) => {
            0.03
        }
        _ => 0.1,
    }
}

/// What coding a block needs besides the block itself (encode only).
struct Source<'a, T> {
    x: &'a [T],
    dims: [usize; 3],
    plan: &'a Plan,
    coder: Coder,
    single: bool,
}

/// A block's values (as f64), prequantized indices, and which points are escaped already.
type BlockInput = (Vec<f64>, Vec<i32>, Vec<bool>);

impl<T: Element> Source<'_, T> {
    /// Block `b`'s input; `esc` lists its points the grid cannot hold (block-local).
    fn gather(&self, b: &Block, esc: &[usize]) -> BlockInput {
        let bx = field::gather(self.x, self.dims, b)
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let bq = field::gather(&self.plan.quantized.q, self.dims, b);
        let mut escaped = vec![false; bq.len()];
        for &li in esc {
            escaped[li] = true;
        }
        (bx, bq, escaped)
    }

    /// Codes block `b` (its values `bx`, indices `bq`, escapes) with `predictor`, or takes the
    /// coding of a whole-block trial.
    fn code(
        &self,
        b: &Block,
        predictor: &dyn Predictor,
        bx: &[f64],
        bq: &[i32],
        escaped: &[bool],
        done: Option<Trial>,
    ) -> Coded {
        let (bytes, escaped) = done.unwrap_or_else(|| {
            let (codes, escaped) =
                predict_block(predictor, bx, bq, escaped, b.ext, self.plan, self.single);
            (self.payload(b, predictor, &codes), escaped)
        });
        self.coded(b, predictor, bytes, &escaped)
    }

    /// Block `b`'s payload: `predictor`'s header, then its residual `codes` coded.
    fn payload(&self, b: &Block, predictor: &dyn Predictor, codes: &[i32]) -> Vec<u8> {
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
    /// listed by chunk index.
    fn coded(
        &self,
        b: &Block,
        predictor: &dyn Predictor,
        bytes: Vec<u8>,
        escaped: &[bool],
    ) -> Coded {
        let global = escaped
            .iter()
            .enumerate()
            .filter(|(_, &e)| e)
            .map(|(li, _)| b.global_index(self.dims, li))
            .collect();
        Coded {
            id: predictor.id(),
            kernel: predictor.kernel(),
            bytes,
            escapes: global,
        }
    }

    /// Every block coded by NGLR with the prediction handed to `encode` (the GPU's place),
    /// which gets the blocks, the coding settings, and their values, prequantized indices and
    /// escape flags one block after another; it returns the residual codes, leaving the
    /// reconstruction and the final escapes in place. The same blocks as NGLR's CPU path
    /// codes, from the same codes. `None` when `encode` fails (logged).
    fn nglr_offloaded(
        &self,
        blocks: &[Block],
        local_escapes: &[Vec<usize>],
        model: &nglr::Nglr,
        encode: impl FnOnce(
            &[Block],
            &crate::backend::cuda_nglr::Coding,
            &[f64],
            &mut [i32],
            &mut [bool],
        ) -> Result<Vec<i32>>,
    ) -> Option<Vec<Coded>> {
        // Each block gathered straight into its place (no second copy of the chunk's inputs).
        let total: usize = blocks.iter().map(Block::len).sum();
        let (mut x, mut q, mut escaped) =
            (vec![0f64; total], vec![0i32; total], vec![false; total]);
        let mut places = Vec::with_capacity(blocks.len());
        let (mut xr, mut qr, mut er) = (x.as_mut_slice(), q.as_mut_slice(), escaped.as_mut_slice());
        for b in blocks {
            let (xb, xs) = std::mem::take(&mut xr).split_at_mut(b.len());
            let (qb, qs) = std::mem::take(&mut qr).split_at_mut(b.len());
            let (eb, es) = std::mem::take(&mut er).split_at_mut(b.len());
            places.push((xb, qb, eb));
            (xr, qr, er) = (xs, qs, es);
        }
        places
            .into_par_iter()
            .zip(blocks)
            .zip(local_escapes)
            .for_each(|(((xb, qb, eb), b), esc)| {
                let (bx, bq, be) = self.gather(b, esc);
                xb.copy_from_slice(&bx);
                qb.copy_from_slice(&bq);
                eb.copy_from_slice(&be);
            });
        let coding = crate::backend::cuda_nglr::Coding {
            grid: self.plan.grid,
            eb: self.plan.eb,
            single: self.single,
            m: self.plan.m,
        };
        let codes = match encode(blocks, &coding, &x, &mut q, &mut escaped) {
            Ok(c) => c,
            Err(e) => {
                crate::backend::gpu_failed("NGLR encode", &e, "the CPU codes the chunk");
                return None;
            }
        };
        let starts: Vec<usize> = blocks
            .iter()
            .scan(0, |at, b| {
                *at += b.len();
                Some(*at - b.len())
            })
            .collect();
        Some(
            blocks
                .par_iter()
                .zip(starts)
                .map(|(b, at)| {
                    let r = at..at + b.len();
                    let bytes = self.payload(b, model, &codes[r.clone()]);
                    self.coded(b, model, bytes, &escaped[r])
                })
                .collect(),
        )
    }
}

/// Codes one block with `predictor`: returns the codes and which points ended up escaped.
fn predict_block(
    predictor: &dyn Predictor,
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    plan: &Plan,
    single: bool,
) -> (Vec<i32>, Vec<bool>) {
    let (codes, _, escaped) = predict_block_recon(predictor, x, q, escaped, ext, plan, single);
    (codes, escaped)
}

/// [`predict_block`], also returning the decoder's reconstruction of the block's indices
/// (which the encoder leaves in place of the prequantized ones).
fn predict_block_recon(
    predictor: &dyn Predictor,
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    plan: &Plan,
    single: bool,
) -> (Vec<i32>, Vec<i32>, Vec<bool>) {
    let mut blk = BlockEncoder {
        x,
        escaped: escaped.to_vec(),
        grid: plan.grid,
        eb: plan.eb,
        single,
        m: plan.m,
    };
    let mut recon = q.to_vec();
    let mut codes = vec![0i32; q.len()];
    predictor.encode(&mut blk, &mut recon, ext, &mut codes);
    (codes, recon, blk.escaped)
}

/// Blocks up to this many values are tried whole with every candidate predictor (coded, so
/// the winner's coding is kept); larger ones on a central sample of about an eighth of their
/// volume, whose coded size is estimated from the coder's model costs without coding
/// (`entropy::estimate_block`: on the grade-A fields the choices changed in one run of 28, 0.5% smaller, and
/// encode time fell 6%).
const FULL_TRIAL: usize = 1 << 15;

/// A candidate [`choose_predictor`] tries only when another candidate, `rival`, came within
/// [`DEFER_MARGIN`] of `reference`: multi-dimensional interpolation, when one-dimensional
/// interpolation is close to Lorenzo. Where Lorenzo wins clearly (tight bounds) neither
/// interpolation does: on the grade-A fields this skipped 45 of 148 trials and changed no
/// choice.
///
/// Fitted Lorenzo, when it joins plain Lorenzo, is tried only when Lorenzo came within
/// `1 / FITTED_SURE - 1` of one-dimensional interpolation: its estimated gain over Lorenzo is
/// less than that.
#[derive(Clone, Copy)]
struct Defer {
    candidate: usize,
    rival: usize,
    reference: usize,
    margin: f64,
}

/// See [`Defer`].
const DEFER_MARGIN: f64 = 0.05;

/// Fitted Lorenzo replaces plain Lorenzo among a block's candidates when its estimated cost
/// is below this share of Lorenzo's (`fitted::fit`'s ratio); between it and 0.99 it joins
/// Lorenzo as a candidate (a deferred one, see [`Defer`]). The estimate ignores the coder's contexts: on CESM TS at rel 1e-4, ratios of
/// 0.96-0.99 coded 0.6-2.6% larger than Lorenzo, 0.74-0.78 0.8-2% smaller. On the grade-A
/// fields 0.8 gave 0.1 points more BD-rate gain than 0.9.
const FITTED_SURE: f64 = 0.8;

/// The trials' rate-distortion trade: a block's cost is its bits plus `n/2 log2(MSE)` over
/// its `n` sampled values, so 6 dB of PSNR (a quarter of the squared error) is worth one bit
/// per value, as at high rates. Interpolation codes its coarse levels more finely, which
/// costs bits and lowers the error; comparing bytes alone, fitted Lorenzo won blocks at loose
/// bounds that then decoded 1-2 dB worse. On the grade-A fields (`examples/eval`): BD-rate
/// against SZ3 -16.9% with the trade, -16.5% without.
const RD_WEIGHT: f64 = 1.0;

/// A block coded in full by a trial: its payload and which points it escaped.
type Trial = (Vec<u8>, Vec<bool>);

/// A predictor and, when its trial was the whole block, that trial's coding.
type Pick<'a> = (&'a dyn Predictor, Option<Trial>);

/// What the learned candidate saves over the best fixed one, estimated from their trials.
struct Saving {
    /// On the whole block, in bytes.
    bytes: f64,
    /// As a share of the fixed candidate's trial.
    share: f64,
}

/// What [`choose_predictor`] found for a block.
struct Choice<'a> {
    /// The candidate that codes the block (or its sample) into the fewest bytes.
    best: Pick<'a>,
    /// When `best` is a learned candidate (one past `fixed`), the best of the fixed ones, kept
    /// in case the chunk's weights turn out not to pay or its full coding is smaller, with
    /// how much the learned one is estimated to save over it.
    fallback: Option<(Pick<'a>, Saving)>,
}

/// Tries every candidate on the block (or a central sample of it), escapes counted; a whole-
/// block trial's coding is returned with its pick, so the caller need not code it again.
/// Candidates from index `fixed` on are learned (NGLR).
#[allow(clippy::too_many_arguments)]
fn choose_predictor<'a>(
    candidates: &[&'a dyn Predictor],
    fixed: usize,
    defer: &[Defer],
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    plan: &Plan,
    coder: Coder,
    single: bool,
) -> Choice<'a> {
    if candidates.len() == 1 {
        return Choice {
            best: (candidates[0], None),
            fallback: None,
        };
    }
    let n = q.len();
    let sample = if n <= FULL_TRIAL {
        Block {
            origin: [0; 3],
            ext,
        }
    } else {
        // Halve the largest extent until the sample holds about an eighth of the block.
        let target = (n / 8).max(FULL_TRIAL);
        let mut sub = ext;
        while sub.iter().product::<usize>() > target {
            let k = (0..3)
                .max_by_key(|&k| (sub[k], 3 - k))
                .expect("three extents");
            sub[k] = sub[k].div_ceil(2);
        }
        Block {
            origin: [0, 1, 2].map(|k| (ext[k] - sub[k]) / 2),
            ext: sub,
        }
    };
    let sx = field::gather(x, ext, &sample);
    let sq = field::gather(q, ext, &sample);
    let se = field::gather(escaped, ext, &sample);
    let whole = sample.ext == ext;
    // A whole-block trial is coded (the winner's coding is kept); a sample's size is
    // estimated from the model's costs, without running the range coder.
    let trial = |p: &dyn Predictor| {
        let (codes, recon, esc) = predict_block_recon(p, &sx, &sq, &se, sample.ext, plan, single);
        let sse: f64 = sx
            .iter()
            .zip(&recon)
            .zip(&esc)
            .filter(|(_, &e)| !e)
            .map(|((&x, &r), _)| {
                let d = x - quant::dequantize_f64(r, plan.grid);
                d * d
            })
            .sum();
        let escapes = esc.iter().filter(|&&e| e).count() * (2 + 8);
        let mut bytes = p.header();
        if whole {
            bytes.extend(entropy::encode_block(
                coder,
                &codes,
                sample.ext,
                p.contexts(),
            ));
            (bytes.len() + escapes, (bytes, esc), sse)
        } else {
            let size =
                bytes.len() + entropy::estimate_block(coder, &codes, sample.ext, p.contexts());
            (size + escapes, (Vec::new(), esc), sse)
        }
    };
    // Trials run side by side: a chunk of one or two blocks would otherwise leave cores idle.
    // Ties go to the earlier candidate, so the choice does not depend on scheduling. A
    // deferred candidate is tried after the others, and only if its condition holds.
    let mut trials: Vec<(usize, Trial, f64)> = candidates
        .par_iter()
        .enumerate()
        .map(|(k, p)| match defer.iter().any(|d| d.candidate == k) {
            true => (usize::MAX, (Vec::new(), Vec::new()), 0.0),
            false => trial(*p),
        })
        .collect();
    for d in defer {
        let (rival, reference) = (trials[d.rival].0 as f64, trials[d.reference].0 as f64);
        if rival <= reference * (1.0 + d.margin) {
            trials[d.candidate] = trial(candidates[d.candidate]);
        }
    }
    // Each trial's rate-distortion cost (see RD_WEIGHT); an untried candidate never wins.
    let ns = sample.len() as f64;
    let cost = |k: usize| {
        let (bytes, _, sse) = &trials[k];
        if *bytes == usize::MAX {
            f64::INFINITY
        } else {
            *bytes as f64 * 8.0 + RD_WEIGHT * 0.5 * ns * (sse / ns).max(f64::MIN_POSITIVE).log2()
        }
    };
    let smallest = |n: usize| (0..n).min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
    let best = smallest(candidates.len()).expect("at least one predictor");
    let fallback = smallest(fixed.min(candidates.len()))
        .filter(|_| best >= fixed)
        .map(|k| {
            let d = trials[k].0 as f64 - trials[best].0 as f64;
            let saving = Saving {
                bytes: d * n as f64 / sample.len() as f64,
                share: d / trials[k].0.max(1) as f64,
            };
            (k, saving)
        });
    let mut trials: Vec<Option<Trial>> = trials.into_iter().map(|t| Some(t.1)).collect();
    let mut pick = |k: usize| (candidates[k], trials[k].take().filter(|_| whole));
    Choice {
        best: pick(best),
        fallback: fallback.map(|(k, saving)| (pick(k), saving)),
    }
}

/// How much of the NGLR network [`train_nglr`] fits.
#[derive(Clone, Copy)]
enum Fit {
    /// A linear bias over the raw features, in closed form (WEIGHTS kind 2).
    Linear,
    /// The whole network, by gradient descent.
    Network,
}

/// Fits the chunk's NGLR network (encode only). Training pairs come from tiles spread over the
/// chunk (the whole chunk when it is small), each coded with Lorenzo and feedback first, so
/// the features see a reconstruction like the one the decoder will have; about
/// `params.nglr_samples()` points in all. `None` when there are too few points.
fn train_nglr<T: Element>(
    x: &[T],
    dims: [usize; 3],
    plan: &Plan,
    params: &Params,
    single: bool,
    fit: Fit,
) -> Option<nglr::Nglr> {
    use crate::nn::train;
    let budget = params.nglr_samples();
    let active = dims.iter().filter(|&&d| d > 1).count();
    let side = [4096, 4096, 64, 16][active];
    let tile = if x.len() <= 2 * budget {
        dims
    } else {
        dims.map(|d| d.min(side))
    };
    let mut escaped = vec![false; x.len()];
    for &i in &plan.quantized.escapes {
        escaped[i] = true;
    }
    // One tile coded with Lorenzo and feedback, as the encoder would: its training pairs.
    let pairs_of = |origin: [usize; 3]| {
        let b = Block { origin, ext: tile };
        let bx: Vec<f64> = field::gather(x, dims, &b)
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let bq = field::gather(&plan.quantized.q, dims, &b);
        let be = field::gather(&escaped, dims, &b);
        let (_, recon, esc) = predict_block_recon(&Lorenzo, &bx, &bq, &be, tile, plan, single);
        let (mut f, mut t) = (Vec::new(), Vec::new());
        nglr::training_pairs(&recon, &bq, &esc, tile, &mut f, &mut t);
        (f, t)
    };
    // Tiles at pseudo-random origins, a batch at a time (as many as the remaining budget
    // needs, coded side by side), until the budget is met.
    let inner = nglr::inner_count(tile);
    let (mut f, mut t) = (Vec::new(), Vec::new());
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next_origin = || {
        [0, 1, 2].map(|k| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % (dims[k] - tile[k] + 1) as u64) as usize
        })
    };
    while f.len() < budget {
        let count = if tile == dims {
            1
        } else {
            (budget - f.len()).div_ceil(inner.max(1))
        };
        let origins: Vec<[usize; 3]> = (0..count).map(|_| next_origin()).collect();
        let parts: Vec<_> = origins.par_iter().map(|&o| pairs_of(o)).collect();
        let before = f.len();
        for (pf, pt) in parts {
            f.extend(pf);
            t.extend(pt);
        }
        if tile == dims || f.len() == before {
            break;
        }
    }
    let cfg = train::Config::default();
    Some(match fit {
        Fit::Linear => nglr::Nglr::linear(train::fit_linear(&f, &t, &cfg)?),
        Fit::Network => nglr::Nglr::new(crate::backend::cuda_nglr::fit(
            params.backend,
            &f,
            &t,
            &cfg,
        )?),
    })
}

pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let header = Header::read(&mut Reader::new(data))?;
    let out_len = header.len() * header.dtype.size();
    ensure!(
        out_len <= max_len,
        Error::TooLarge {
            needed: out_len,
            limit: max_len
        }
    );
    // Refuse a declared size the machine cannot hold as an error, not an allocation abort.
    Vec::<u8>::new()
        .try_reserve_exact(out_len)
        .map_err(|_| Error::TooLarge {
            needed: out_len,
            limit: max_len,
        })?;
    let mut out = Output::Owned(Vec::new(), out_len);
    decode_chunk(data, &mut out)?;
    match out {
        Output::Owned(v, _) => Ok(v),
        Output::Into(_) => unreachable!("made as Owned above"),
    }
}

/// Where a decoded chunk goes: the caller's buffer, or one allocated only when the decoder
/// writes its result, so that it is not held while the decoder's own buffers are.
enum Output<'a> {
    Into(&'a mut [u8]),
    /// The buffer (empty until needed) and its length.
    Owned(Vec<u8>, usize),
}

impl Output<'_> {
    fn len(&self) -> usize {
        match self {
            Output::Into(s) => s.len(),
            Output::Owned(_, n) => *n,
        }
    }

    fn buf(&mut self) -> &mut [u8] {
        match self {
            Output::Into(s) => s,
            Output::Owned(v, n) => {
                if v.len() != *n {
                    // Zeroed by the allocator (calloc): first touched by the decoder's writes.
                    *v = vec![0u8; *n];
                }
                v
            }
        }
    }
}

/// Decodes a chunk into `out`, which must be exactly its decoded size (the GPU writes straight
/// into it, and a caller such as the HDF5 filter saves a copy of the chunk).
pub fn decompress_into(data: &[u8], out: &mut [u8]) -> Result<()> {
    decode_chunk(data, &mut Output::Into(out))
}

fn decode_chunk(data: &[u8], out: &mut Output<'_>) -> Result<()> {
    let mut r = Reader::new(data);
    let header = Header::read(&mut r)?;
    let out_len = header.len() * header.dtype.size();
    ensure!(
        out_len <= out.len(),
        Error::TooLarge {
            needed: out_len,
            limit: out.len()
        }
    );
    ensure!(
        out_len == out.len(),
        Error::SizeMismatch {
            expected: out.len(),
            actual: out_len
        }
    );
    match header.layout {
        Layout::Stored => {
            ensure!(
                header.sections == 1,
                Error::Corrupt("stored chunk with more than one section".into())
            );
            let (id, payload) = format::read_section(&mut r)?;
            ensure!(
                id == section::STORED && payload.len() == out_len,
                Error::Corrupt("stored section does not match the shape".into())
            );
            out.buf().copy_from_slice(payload);
        }
        Layout::Coded => match read_region(header, &mut r)? {
            (header, None) => decode_typed(&header, &mut r, out)?,
            // An edge chunk: its data box, coded as a chunk of its own, then the padding.
            (boxed, Some(region)) => {
                let mut values = Output::Owned(Vec::new(), boxed.len() * boxed.dtype.size());
                decode_typed(&boxed, &mut r, &mut values)?;
                region.scatter(values.buf(), out.buf(), boxed.dtype.size());
            }
        },
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes", r.remaining()))
    );
    Ok(())
}

fn decode_typed(h: &Header, r: &mut Reader<'_>, out: &mut Output<'_>) -> Result<()> {
    match h.dtype {
        DType::F32 => decode_coded::<f32>(h, r, out),
        DType::F64 => decode_coded::<f64>(h, r, out),
    }
}

/// The REGION section of a version-2 coded chunk (it comes first), and the header of the
/// chunk of the data box that follows it (the box's shape, one section fewer).
fn read_region(header: Header, r: &mut Reader<'_>) -> Result<(Header, Option<Region>)> {
    if header.version == format::BASE_VERSION {
        return Ok((header, None));
    }
    ensure!(
        header.sections >= 3,
        Error::Corrupt(format!(
            "version-2 chunk declares {} sections",
            header.sections
        ))
    );
    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::REGION,
        Error::Corrupt(format!("expected the region section, found id {id}"))
    );
    let (extent, pad) = format::read_region(payload, &header.shape, header.dtype.size())?;
    let region = Region {
        shape: header.shape.clone(),
        extent,
        pad,
    };
    let header = Header {
        version: format::BASE_VERSION,
        shape: region.extent.clone(),
        sections: header.sections - 1,
        ..header
    };
    Ok((header, Some(region)))
}

fn decode_coded<T: Element>(h: &Header, r: &mut Reader<'_>, out: &mut Output<'_>) -> Result<()> {
    ensure!(
        (2..=4).contains(&h.sections),
        Error::Corrupt(format!(
            "coded chunk declares {} sections, version 1 has 2 to 4",
            h.sections
        ))
    );
    ensure!(
        h.step.is_finite() && h.step > 0.0 && h.mid.is_finite(),
        Error::Corrupt("quantization grid is not finite and positive".into())
    );
    let grid = Grid {
        mid: h.mid,
        step: h.step,
    };
    ensure!(
        h.feedback % 2 == 1,
        Error::Corrupt(format!("feedback step {} is not odd", h.feedback))
    );
    let m = h.feedback as i32;
    let dims = field::grid_dims(&h.shape);
    ensure!(
        (0..3).all(|k| h.block[k] >= 1 && h.block[k] <= dims[k]),
        Error::Corrupt(format!("block extents {:?} for grid {dims:?}", h.block))
    );
    // Every block has a 12-byte directory entry: refuse a block count the chunk cannot hold
    // before listing the blocks.
    let count = (0..3).try_fold(1usize, |a, k| a.checked_mul(dims[k].div_ceil(h.block[k])));
    ensure!(
        count.is_some_and(|c| c.saturating_mul(12) <= r.remaining()),
        Error::Corrupt(format!(
            "block extents {:?} make more blocks than the chunk holds",
            h.block
        ))
    );
    let blocks = field::blocks(dims, h.block)?;

    let (mut id, mut payload) = format::read_section(r)?;
    let learned = if id == section::WEIGHTS {
        let model = crate::nn::weights::Model::read(payload)?;
        (id, payload) = format::read_section(r)?;
        Some(nglr::Nglr::from_model(model))
    } else {
        None
    };
    ensure!(
        h.sections == 2 + learned.is_some() as u32 || h.sections == 3 + learned.is_some() as u32,
        Error::Corrupt(format!(
            "coded chunk declares {} sections, holds {}",
            h.sections,
            2 + learned.is_some() as u32
        ))
    );
    ensure!(
        id == section::BLOCKS,
        Error::Corrupt(format!("expected the blocks section, found id {id}"))
    );
    let parts = split_blocks(payload, blocks.len())?;
    let mut values = match gpu_decode(h, &parts, &blocks, dims, grid, out) {
        // With no enhancer to run, the escapes go straight into the GPU's bytes.
        true if h.sections == 2 + learned.is_some() as u32 => {
            let (id, esc_payload) = format::read_section(r)?;
            ensure!(
                id == section::ESCAPES,
                Error::Corrupt(format!("expected the escapes section, found id {id}"))
            );
            return apply_escapes_to_bytes::<T>(esc_payload, out.buf());
        }
        true => field::from_bytes(out.buf()),
        false => {
            let dequantized =
                |q: Vec<i32>| -> Vec<T> { q.iter().map(|&v| dequantize::<T>(v, grid)).collect() };
            let decoded =
                decode_blocks(&blocks, &parts, m, learned.as_ref(), out.len(), dequantized)?;
            let mut values = vec![T::from_f64(0.0); h.len()];
            for (b, d) in blocks.iter().zip(decoded) {
                field::scatter(&mut values, dims, b, &d);
            }
            values
        }
    };

    let (id, esc_payload) = format::read_section(r)?;
    ensure!(
        id == section::ESCAPES,
        Error::Corrupt(format!("expected the escapes section, found id {id}"))
    );
    if h.sections == 3 + learned.is_some() as u32 {
        let (id, payload) = format::read_section(r)?;
        ensure!(
            id == section::ENHANCE,
            Error::Corrupt(format!("unknown section id {id} after the escapes"))
        );
        let model = neurlz::Model::read(payload, dims)?;
        let q = decode_grid(&blocks, &parts, dims, m, learned.as_ref(), out.len())?;
        neurlz::apply(&model, &q, dims, grid, m as i64, &mut values);
    }
    apply_escapes(esc_payload, &mut values)?;
    field::write_bytes(&values, out.buf());
    Ok(())
}

/// Decodes the blocks on the GPU when every block is plain Lorenzo with feedback step 1 (what
/// the kernels run) and the GPU backend is chosen: by `RESID_BACKEND=cuda`, or by `auto` for a
/// large chunk of packed blocks. `None` sends the work to the CPU, which computes the same
/// values.
fn gpu_decode(
    h: &Header,
    parts: &[BlockPart<'_>],
    blocks: &[Block],
    dims: [usize; 3],
    grid: Grid,
    out: &mut Output<'_>,
) -> bool {
    let coder = |p: &BlockPart<'_>| p.coder.plain_of();
    if h.feedback != 1
        || parts
            .iter()
            .any(|p| p.predictor != Lorenzo.id() || p.coarse != 0 || coder(p).is_none())
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
        dims,
        ext: h.block,
        blocks,
        grid,
    };
    // A packed chunk decodes entirely on the GPU, so `auto` uses it for large chunks; the
    // other coders' decoding stays on the CPU unless `RESID_BACKEND=cuda` asks.
    let backend = if list.iter().all(|p| p.0 == Coder::Packed) {
        crate::params::Backend::Auto
    } else {
        crate::params::Backend::Cpu
    };
    let Some(gpu) = crate::backend::gpu_for_decode(out.len(), backend) else {
        return false;
    };
    match gpu.decode_into(&job, out.buf()) {
        Ok(()) => true,
        Err(e) => {
            crate::backend::gpu_failed("decode", &e, "the CPU redoes the chunk");
            false
        }
    }
}

/// The coarse-level feedback step this encoder gives blocks of predictor `id`.
fn coarse_step_of(id: u8, plan: &Plan) -> u8 {
    predict::registry::coarse_step(id, plan.m)
}

/// One entry of the block directory, with its payload.
#[derive(Clone)]
struct BlockPart<'a> {
    predictor: u8,
    /// Coarse-level feedback step of an interpolated block (directory byte 2; 0: none).
    coarse: u8,
    /// Cubic kernel of an interpolated block (directory byte 3; 0 otherwise).
    kernel: u8,
    coder: entropy::BlockCoder,
    bytes: &'a [u8],
    crc: u32,
}

fn split_blocks(payload: &[u8], expected: usize) -> Result<Vec<BlockPart<'_>>> {
    let mut r = Reader::new(payload);
    let count = r.u32("block directory")? as usize;
    ensure!(
        count == expected,
        Error::Corrupt(format!("{count} blocks, the grid has {expected}"))
    );
    let dir = r.take(
        count.checked_mul(12).ok_or(Error::Truncated {
            what: "block directory",
        })?,
        "block directory",
    )?;
    let mut parts = Vec::with_capacity(count);
    for e in dir.chunks_exact(12) {
        let len = u32::from_le_bytes(e[4..8].try_into().unwrap()) as usize;
        parts.push(BlockPart {
            predictor: e[0],
            coarse: e[2],
            kernel: e[3],
            coder: entropy::BlockCoder::from_id(e[1])?,
            bytes: r.take(len, "block")?,
            crc: u32::from_le_bytes(e[8..12].try_into().unwrap()),
        });
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the last block".into())
    );
    Ok(parts)
}

/// The predictor that decodes a block: the chunk's NGLR model, or one made from the block's
/// directory entry.
enum BlockPredictor<'a> {
    Learned(&'a nglr::Nglr),
    Own(Box<dyn Predictor>),
}

impl BlockPredictor<'_> {
    fn get(&self) -> &dyn Predictor {
        match self {
            BlockPredictor::Learned(n) => *n,
            BlockPredictor::Own(p) => p.as_ref(),
        }
    }
}

/// A block's residual codes, its checksum verified, and the predictor that decodes them.
fn block_codes<'a>(
    b: &Block,
    part: &BlockPart<'_>,
    learned: Option<&'a nglr::Nglr>,
) -> Result<(BlockPredictor<'a>, Vec<i32>)> {
    ensure!(
        crc32fast::hash(part.bytes) == part.crc,
        Error::ChecksumMismatch { what: "block" }
    );
    let (predictor, header) = match (part.predictor, learned) {
        (nglr::ID, Some(n)) if part.coarse == 0 && part.kernel == 0 => {
            (BlockPredictor::Learned(n), 0)
        }
        (id, _) => {
            let (p, header) = predict::for_block(id, part.coarse, part.kernel, part.bytes)?;
            (BlockPredictor::Own(p), header)
        }
    };
    let mut q = vec![0i32; b.len()];
    let classes = predict::registry::contexts(part.predictor).classes;
    entropy::decode_block(part.coder, &part.bytes[header..], b.ext, classes, &mut q)?;
    Ok((predictor, q))
}

/// `finish` of every block's reconstructed grid indices, in block order. The blocks' codes are
/// decoded on the CPU; the prediction of NGLR blocks, sequential inside a block, runs on the
/// GPU when one is chosen for a chunk of `bytes` decoded bytes (`RESID_BACKEND=cuda`; `auto`
/// from [`crate::backend::cuda_nglr::DECODE_AUTO_MIN_BYTES`] on), with the CPU's values bit
/// for bit; on
/// the CPU otherwise, or when the GPU fails (logged). On the CPU each block's indices are
/// finished as soon as they are decoded, so they are never all held at once.
fn decode_blocks<R: Send>(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    m: i32,
    learned: Option<&nglr::Nglr>,
    bytes: usize,
    finish: impl Fn(Vec<i32>) -> R + Sync + Send,
) -> Result<Vec<R>> {
    let gpu = learned
        .filter(|_| parts.iter().any(|p| p.predictor == nglr::ID))
        .and_then(|n| {
            let auto_min = crate::backend::cuda_nglr::DECODE_AUTO_MIN_BYTES;
            Some((
                crate::backend::gpu_for_work(crate::params::Backend::Cpu, bytes, auto_min)?,
                n,
            ))
        });
    let Some((gpu, model)) = gpu else {
        return blocks
            .par_iter()
            .zip(parts)
            .map(|(b, part)| {
                let (p, mut q) = block_codes(b, part, learned)?;
                p.get().decode(&mut q, b.ext, m);
                Ok(finish(q))
            })
            .collect();
    };
    let q = decode_blocks_offloaded(blocks, parts, m, model, |on, codes| {
        gpu.nglr_decode(&model.model, on, codes, m)
    })?;
    Ok(q.into_par_iter().map(finish).collect())
}

/// [`decode_blocks`] with the NGLR blocks' prediction handed to `offload`, which gets those
/// blocks and their codes one block after another, to be turned into reconstructed indices in
/// place. The other blocks decode on the CPU meanwhile; when `offload` fails (logged), the
/// CPU decodes the NGLR blocks too.
fn decode_blocks_offloaded(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    m: i32,
    model: &nglr::Nglr,
    offload: impl FnOnce(&[Block], &mut [i32]) -> Result<()>,
) -> Result<Vec<Vec<i32>>> {
    let staged: Vec<(bool, Vec<i32>)> = blocks
        .par_iter()
        .zip(parts)
        .map(|(b, part)| {
            let (p, mut q) = block_codes(b, part, Some(model))?;
            let learned = matches!(p, BlockPredictor::Learned(_));
            if !learned {
                p.get().decode(&mut q, b.ext, m);
            }
            Ok((learned, q))
        })
        .collect::<Result<_>>()?;
    let learned: Vec<Block> = blocks
        .iter()
        .zip(&staged)
        .filter(|(_, s)| s.0)
        .map(|(b, _)| *b)
        .collect();
    let mut codes: Vec<i32> = staged
        .iter()
        .filter(|s| s.0)
        .flat_map(|s| s.1.iter().copied())
        .collect();
    let offloaded = match offload(&learned, &mut codes) {
        Ok(()) => true,
        Err(e) => {
            crate::backend::gpu_failed("NGLR decode", &e, "the CPU decodes the blocks");
            false
        }
    };
    let mut rest = codes.as_slice();
    Ok(staged
        .into_iter()
        .zip(blocks)
        .map(|((learned, mut q), b)| {
            if learned && offloaded {
                let (mine, others) = rest.split_at(q.len());
                q.copy_from_slice(mine);
                rest = others;
            } else if learned {
                model.decode(&mut q, b.ext, m);
            }
            q
        })
        .collect())
}

/// The reconstructed grid indices of the whole chunk (what the NeurLZ enhancer reads).
fn decode_grid(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    dims: [usize; 3],
    m: i32,
    learned: Option<&nglr::Nglr>,
    bytes: usize,
) -> Result<Vec<i32>> {
    let decoded = decode_blocks(blocks, parts, m, learned, bytes, |q| q)?;
    let mut q = vec![0i32; dims[0] * dims[1] * dims[2]];
    for (b, d) in blocks.iter().zip(decoded) {
        field::scatter(&mut q, dims, b, &d);
    }
    Ok(q)
}

fn apply_escapes<T: Element>(payload: &[u8], values: &mut [T]) -> Result<()> {
    let n = values.len();
    for_each_escape::<T>(payload, n, |i, raw| values[i] = T::read_le(raw))
}

/// [`apply_escapes`] on the values' little-endian bytes (the GPU decoder's output).
fn apply_escapes_to_bytes<T: Element>(payload: &[u8], bytes: &mut [u8]) -> Result<()> {
    let n = bytes.len() / T::SIZE;
    for_each_escape::<T>(payload, n, |i, raw| {
        bytes[i * T::SIZE..(i + 1) * T::SIZE].copy_from_slice(raw)
    })
}

/// Reads the escapes section of a chunk of `n` values, calling `put(index, value bytes)` for
/// each escaped value (indices checked against `n`).
fn for_each_escape<T: Element>(
    payload: &[u8],
    n: usize,
    mut put: impl FnMut(usize, &[u8]),
) -> Result<()> {
    let mut r = Reader::new(payload);
    let count = r.u64("escapes")?;
    ensure!(
        count <= n as u64,
        Error::Corrupt(format!("{count} escaped values in a chunk of {n}"))
    );
    let count = count as usize;
    // Each index takes at least one byte and each value T::SIZE: refuse before allocating.
    ensure!(
        count.saturating_mul(1 + T::SIZE) <= r.remaining(),
        Error::Truncated { what: "escapes" }
    );
    let mut idx = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let i = next
            .checked_add(r.varint("escape index")?)
            .filter(|&i| i < n as u64)
            .ok_or_else(|| Error::Corrupt("escape index out of range".into()))?;
        idx.push(i as usize);
        next = i + 1;
    }
    let raw = r.take(count * T::SIZE, "escaped values")?;
    for (&i, b) in idx.iter().zip(raw.chunks_exact(T::SIZE)) {
        put(i, b);
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the escaped values".into())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rough f32 field of two blocks (40 x 100 x 100).
    fn rough() -> Vec<f32> {
        let mut s = 0x9e37_79b9u64;
        (0..400_000)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (y, x) = ((i / 100) % 100, i % 100);
                (x as f32 * 0.13).sin() * (y as f32 * 0.05).cos() * 20.0
                    + (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// [`rough`] coded with `predictor` at one absolute bound.
    fn coded(predictor: PredictorChoice) -> Vec<u8> {
        let data: Vec<u8> = rough().iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunk = ChunkInfo::new(DType::F32, &[40, 100, 100]).unwrap();
        compress(&data, &chunk, &Params::abs(0.01).with_predictor(predictor)).unwrap()
    }

    /// An f32 chunk of two blocks, one value the grid cannot hold in each, NGLR forced: the
    /// values, plan, blocks, their escapes and the fitted model.
    struct NglrChunk {
        x: Vec<f32>,
        plan: Plan,
        blocks: Vec<Block>,
        escapes: Vec<Vec<usize>>,
        model: nglr::Nglr,
    }

    const DIMS: [usize; 3] = [40, 100, 100];

    fn nglr_chunk() -> NglrChunk {
        let mut x = rough();
        x[12_345] = f32::NAN;
        x[307_001] = f32::INFINITY;
        let params = Params::abs(0.01).with_predictor(PredictorChoice::Nglr);
        let plan = quant::plan(&x, &params).unwrap();
        let ext = field::block_extents(DIMS);
        let blocks = field::blocks(DIMS, ext).unwrap();
        let escapes = local_escapes(&plan, DIMS, ext, &blocks);
        assert!(escapes.iter().all(|e| e.len() == 1));
        let model = train_nglr(&x, DIMS, &plan, &params, true, Fit::Network).unwrap();
        NglrChunk {
            x,
            plan,
            blocks,
            escapes,
            model,
        }
    }

    impl NglrChunk {
        fn source(&self) -> Source<'_, f32> {
            Source {
                x: &self.x,
                dims: DIMS,
                plan: &self.plan,
                coder: Coder::Range,
                single: true,
            }
        }

        /// Block `k` as the CPU codes it with NGLR.
        fn cpu(&self, k: usize) -> Coded {
            let source = self.source();
            let (b, e) = (&self.blocks[k], &self.escapes[k]);
            let (bx, bq, escaped) = source.gather(b, e);
            source.code(b, &self.model, &bx, &bq, &escaped, None)
        }

        /// What the GPU's NGLR encode computes, done on the CPU.
        fn encode(
            &self,
            bl: &[Block],
            coding: &crate::backend::cuda_nglr::Coding,
            x: &[f64],
            q: &mut [i32],
            esc: &mut [bool],
        ) -> Result<Vec<i32>> {
            let codes =
                crate::backend::cuda_nglr::encode_on_cpu(&self.model, bl, coding, x, q, esc);
            Ok(codes)
        }
    }

    fn failing(
        _: &[Block],
        _: &crate::backend::cuda_nglr::Coding,
        _: &[f64],
        _: &mut [i32],
        _: &mut [bool],
    ) -> Result<Vec<i32>> {
        Err(Error::Unsupported("test".into()))
    }

    /// NGLR's blocks coded with the prediction offloaded (the GPU's place) are the blocks the
    /// CPU codes when the offload computes what the CPU does, escapes included; a failing
    /// offload leaves the chunk to the CPU.
    #[test]
    fn offloaded_nglr_encode_codes_the_cpus_blocks() {
        let c = nglr_chunk();
        let source = c.source();
        let cpu: Vec<Coded> = (0..2).map(|k| c.cpu(k)).collect();
        let mut seen = Vec::new();
        let offloaded = source
            .nglr_offloaded(&c.blocks, &c.escapes, &c.model, |bl, coding, x, q, esc| {
                seen = bl.to_vec();
                c.encode(bl, coding, x, q, esc)
            })
            .unwrap();
        assert_eq!(seen, c.blocks);
        assert_eq!(offloaded, cpu);
        assert!(cpu.iter().any(|b| b.escapes.contains(&12_345)));
        assert!(source
            .nglr_offloaded(&c.blocks, &c.escapes, &c.model, failing)
            .is_none());
    }

    /// The blocks whose NGLR coding was left for the GPU get their own codings back, in
    /// place among the others, through the offload, through the CPU when it fails, and
    /// through the CPU without one.
    #[test]
    fn nglr_codings_left_for_later_fill_their_blocks() {
        let c = nglr_chunk();
        let source = c.source();
        let encode = |bl: &[Block],
                      coding: &crate::backend::cuda_nglr::Coding,
                      x: &[f64],
                      q: &mut [i32],
                      esc: &mut [bool]| c.encode(bl, coding, x, q, esc);
        let offloads: [Option<&NglrEncode<'_>>; 3] = [Some(&encode), Some(&failing), None];
        for later in [[true, false], [false, true], [true, true], [false, false]] {
            for offload in offloads {
                let coded = (0..2)
                    .map(|k| ((!later[k]).then(|| c.cpu(k)), None))
                    .collect();
                let got = code_nglr_later(&source, &c.blocks, &c.escapes, &c.model, offload, coded);
                let got: Vec<Coded> = got.into_iter().map(|(b, _)| b).collect();
                assert_eq!(got, vec![c.cpu(0), c.cpu(1)], "{later:?}");
            }
        }
    }

    /// The chunk's feedback step, NGLR model (if any) and blocks section.
    fn sections(bytes: &[u8]) -> (i32, Option<nglr::Nglr>, &[u8]) {
        let mut r = Reader::new(bytes);
        let h = Header::read(&mut r).unwrap();
        let (mut id, mut payload) = format::read_section(&mut r).unwrap();
        let mut model = None;
        if id == section::WEIGHTS {
            model = Some(nglr::Nglr::from_model(
                crate::nn::weights::Model::read(payload).unwrap(),
            ));
            (id, payload) = format::read_section(&mut r).unwrap();
        }
        assert_eq!(id, section::BLOCKS);
        (h.feedback as i32, model, payload)
    }

    /// The NGLR blocks' prediction handed to an offload (the GPU's place) comes back into the
    /// right blocks, among blocks the CPU decodes; a failing offload leaves it to the CPU.
    #[test]
    fn offloaded_nglr_blocks_come_back_in_place() {
        let (a, b) = (
            coded(PredictorChoice::Nglr),
            coded(PredictorChoice::Lorenzo),
        );
        let (m, model, pa) = sections(&a);
        let model = model.expect("an NGLR chunk has a weights section");
        let (_, none, pb) = sections(&b);
        assert!(none.is_none());
        let dims = [40, 100, 100];
        let blocks = field::blocks(dims, field::block_extents(dims)).unwrap();
        assert_eq!(blocks.len(), 2);
        let (na, nb) = (split_blocks(pa, 2).unwrap(), split_blocks(pb, 2).unwrap());
        assert!(na.iter().all(|p| p.predictor == nglr::ID));
        assert!(nb.iter().all(|p| p.predictor == Lorenzo.id()));
        let cpu = |parts: &[BlockPart<'_>]| -> Vec<Vec<i32>> {
            blocks
                .iter()
                .zip(parts)
                .map(|(b, part)| {
                    let (p, mut q) = block_codes(b, part, Some(&model)).unwrap();
                    p.get().decode(&mut q, b.ext, m);
                    q
                })
                .collect()
        };
        // The CPU's own decode, what the offload must reproduce.
        let offload = |on: &[Block], codes: &mut [i32]| {
            let mut at = 0;
            for b in on {
                model.decode(&mut codes[at..at + b.len()], b.ext, m);
                at += b.len();
            }
            assert_eq!(at, codes.len());
            Ok(())
        };
        let [a0, a1] = <[BlockPart<'_>; 2]>::try_from(na).ok().unwrap();
        let [b0, b1] = <[BlockPart<'_>; 2]>::try_from(nb).ok().unwrap();
        for (parts, learned) in [
            (vec![a0.clone(), b1.clone()], [true, false]),
            (vec![b0.clone(), a1.clone()], [false, true]),
            (vec![a0, a1], [true, true]),
        ] {
            let want = cpu(&parts);
            let mut seen = Vec::new();
            let got = decode_blocks_offloaded(&blocks, &parts, m, &model, |on, codes| {
                seen = on.to_vec();
                offload(on, codes)
            })
            .unwrap();
            assert_eq!(got, want);
            let expected: Vec<Block> = (0..2).filter(|&k| learned[k]).map(|k| blocks[k]).collect();
            assert_eq!(seen, expected);
            let failing = |_: &[Block], _: &mut [i32]| Err(Error::Unsupported("test".into()));
            let got = decode_blocks_offloaded(&blocks, &parts, m, &model, failing).unwrap();
            assert_eq!(got, want);
            // What the offload leaves is what the blocks get: only the NGLR blocks differ.
            let shifted = decode_blocks_offloaded(&blocks, &parts, m, &model, |on, codes| {
                offload(on, codes)?;
                codes.iter_mut().for_each(|v| *v += 1);
                Ok(())
            })
            .unwrap();
            for k in 0..2 {
                let moved: Vec<i32> = want[k].iter().map(|v| v + learned[k] as i32).collect();
                assert_eq!(shifted[k], moved, "block {k}");
            }
        }
    }
}
