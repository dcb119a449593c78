//! NGLR on the encoder's side: the chunk's network trained on tiles of it, its whole-block
//! codings left for the GPU coded together, and the decision whether its WEIGHTS section
//! pays (else each NGLR block falls back to its best fixed candidate).

use rayon::prelude::*;

use super::source::{Coded, Source};
use crate::error::Result;
use crate::field::{self, Block, Element};
use crate::format;
use crate::params::{Params, PredictorChoice};
use crate::predict::{self, lorenzo::Lorenzo, nglr};
use crate::quant::Plan;
use crate::select::predict_block_recon;

/// The NGLR model a chunk's predictor word asks for, trained on the chunk: predictor 5 fits
/// a linear bias in closed form (WEIGHTS kind 2); 3 and 4 train the whole network, several
/// times slower. NGLR slows coding down (docs/NGLR.md), so only when asked for.
pub(super) fn train_for<T: Element>(
    x: &[T],
    dims: [usize; 3],
    plan: &Plan,
    params: &Params,
    single: bool,
) -> Option<nglr::Nglr> {
    match params.predictor {
        PredictorChoice::Nglr | PredictorChoice::AutoNglr => {
            train_nglr(x, dims, plan, params, single, Fit::Network)
        }
        PredictorChoice::AutoLinear => train_nglr(x, dims, plan, params, single, Fit::Linear),
        _ => None,
    }
}

/// The chunk's NGLR model with its WEIGHTS payload, kept because its blocks save more than
/// the section costs.
pub(super) struct Weights {
    pub model: nglr::Nglr,
    pub payload: Vec<u8>,
}

/// Settles a chunk whose blocks had `learned` among their candidates: the weights are written
/// only when the blocks that use them save more than they cost (always when NGLR is `forced`);
/// then each block with a coded fallback keeps the smaller of its two codings. A pending
/// fallback counts with its estimated saving; when the weights are dropped, pending fallbacks
/// are coded.
pub(super) fn settle<T: Element>(
    source: &Source<'_, T>,
    blocks: &[Block],
    local_escapes: &[Vec<usize>],
    learned: nglr::Nglr,
    forced: bool,
    coded: Vec<(Coded, Option<Fallback>)>,
) -> (Vec<Coded>, Option<Weights>) {
    let cost = |c: &Coded| c.bytes.len() + c.escapes.len() * (T::SIZE + 2);
    let nglr_wins = |c: &Coded, alt: &Option<Fallback>| match alt {
        Some(Fallback::Coded(a)) => c.id == nglr::ID && cost(c) < cost(a),
        _ => c.id == nglr::ID,
    };
    let mut payload = Vec::new();
    learned.model.write(&mut payload);
    let price = (payload.len() + format::SECTION_HEADER) as f64;
    let (with, without) = coded
        .iter()
        .fold((0f64, 0f64), |(w, wo), (c, alt)| match alt {
            Some(Fallback::Coded(a)) => (w + cost(c).min(cost(a)) as f64, wo + cost(a) as f64),
            Some(Fallback::Pending(_, _, _, _, saving)) => {
                (w + cost(c) as f64, wo + cost(c) as f64 + saving)
            }
            None => (w, wo),
        });
    let used = coded.iter().any(|(c, alt)| nglr_wins(c, alt));
    let keep = used && (forced || with + price < without);
    let coded = if keep {
        coded
    } else {
        code_pending(source, blocks, local_escapes, coded)
    };
    let coded = coded
        .into_iter()
        .map(|(c, alt)| match alt {
            Some(Fallback::Coded(a)) if !keep || cost(&a) <= cost(&c) => a,
            _ => c,
        })
        .collect();
    (
        coded,
        keep.then_some(Weights {
            model: learned,
            payload,
        }),
    )
}

/// Codes the fallbacks left pending (the weights were dropped, so they are needed).
fn code_pending<T: Element>(
    source: &Source<'_, T>,
    blocks: &[Block],
    local_escapes: &[Vec<usize>],
    coded: Vec<(Coded, Option<Fallback>)>,
) -> Vec<(Coded, Option<Fallback>)> {
    coded
        .into_par_iter()
        .zip(blocks)
        .zip(local_escapes)
        .map(|(((c, alt), b), esc)| match alt {
            Some(Fallback::Pending(id, coarse, kernel, header, _)) => {
                let (bx, bq, escaped) = source.gather(b, esc);
                let (p, _) = predict::for_block(id, coarse, kernel, &header)
                    .expect("a fixed candidate's own id and bytes");
                let a = source.code(b, p.as_ref(), &bx, &bq, &escaped, None);
                (c, Some(Fallback::Coded(a)))
            }
            alt => (c, alt),
        })
        .collect()
}

/// The best fixed candidate of a block that chose NGLR: coded, or only its estimated saving.
pub(super) enum Fallback {
    Coded(Coded),
    /// Not coded yet: the predictor (id, coarse step, kernel byte and header) and how many
    /// bytes NGLR is estimated to save over it.
    Pending(u8, u8, u8, Vec<u8>, f64),
}

/// NGLR's prediction and coding of blocks laid out one after another, in the GPU's place
/// ([`Source::nglr_offloaded`]).
pub(super) type NglrEncode<'a> = dyn Fn(
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
pub(super) fn code_nglr_later<T: Element>(
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

impl<T: Element> Source<'_, T> {
    /// Every block coded by NGLR with the prediction handed to `encode` (the GPU's place),
    /// which gets the blocks, the coding settings, and their values, prequantized indices and
    /// escape flags one block after another; it returns the residual codes, leaving the
    /// reconstruction and the final escapes in place. The same blocks as NGLR's CPU path
    /// codes, from the same codes. `None` when `encode` fails (logged).
    pub(super) fn nglr_offloaded(
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
                crate::backend::fell_back(crate::backend::Stage::NglrEncode, &e);
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
                    self.coded(b, model, bytes, &escaped[r], None)
                })
                .collect(),
        )
    }
}

/// How much of the NGLR network [`train_nglr`] fits.
#[derive(Clone, Copy)]
pub(super) enum Fit {
    /// A linear bias over the raw features, in closed form (WEIGHTS kind 2).
    Linear,
    /// The whole network, by gradient descent.
    Network,
}

/// Fits the chunk's NGLR network (encode only). Training pairs come from tiles spread over the
/// chunk (the whole chunk when it is small), each coded with Lorenzo and feedback first, so
/// the features see a reconstruction like the one the decoder will have; about
/// `params.nglr_samples()` points in all. `None` when there are too few points.
pub(super) fn train_nglr<T: Element>(
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
        let bx = field::gather_map(x, dims, &b, T::to_f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::params::Coder;
    use crate::quant;

    /// A rough f32 field of two blocks (80 x 100 x 100).
    fn rough() -> Vec<f32> {
        let mut s = 0x9e37_79b9u64;
        (0..800_000)
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

    /// An f32 chunk of two blocks, one value the grid cannot hold in each, NGLR forced: the
    /// values, plan, blocks, their escapes and the fitted model.
    struct NglrChunk {
        x: Vec<f32>,
        plan: Plan,
        blocks: Vec<Block>,
        escapes: Vec<Vec<usize>>,
        model: nglr::Nglr,
    }

    const DIMS: [usize; 3] = [80, 100, 100];

    fn nglr_chunk() -> NglrChunk {
        let mut x = rough();
        x[12_345] = f32::NAN;
        x[707_001] = f32::INFINITY;
        let params = Params::abs(0.01).with_predictor(PredictorChoice::Nglr);
        let plan = quant::plan(&x, &params).unwrap();
        let ext = field::block_extents(DIMS, field::ADAPTIVE_BLOCK_TARGET);
        let blocks = field::blocks(DIMS, ext).unwrap();
        let escapes =
            crate::format::escapes::per_block(&plan.quantized.escapes, DIMS, ext, &blocks);
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
}
