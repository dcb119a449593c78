//! The wavelet path (`docs/FORMAT.md`, "Wavelet layout"): the chunk minus its mean through
//! the CDF 9/7 transform, the coefficients quantized with one step for every subband and range
//! coded band by band, then every point the decoder's reconstruction leaves out of bound moved
//! back within it by a correction (whole steps of twice the bound), or stored exactly. Where
//! prediction loses (smooth fields at loose bounds), the transform's few large coefficients
//! cost fewer bits than a residual per point. The reconstruction checked here is the
//! decoder's own (`decompress::wavelet`), so the bound holds by construction.

use rayon::prelude::*;

use crate::decompress::wavelet::{corrected, dequantize, synthesize};
use crate::entropy::{bitplane, Classes, Contexts};
use crate::field::{self, Block, Element};
use crate::format::{self, escapes, section, wavelet, Header, Layout};
use crate::params::{ChunkInfo, Coder, Params};
use crate::quant::{self, within};
use crate::transform::cdf97::{self, Subband};

/// The quantization steps tried, in units of the bound. A step near the bound leaves few
/// points to correct; a wider one codes fewer coefficients and corrects more points: over the
/// 34 benchmark fields at rel 1e-2..1e-5 each of them was the smallest on some (BENCHMARKS.md,
/// "A wavelet path").
const STEPS: [f64; 4] = [1.5, 2.0, 3.0, 4.0];

/// The step the auto words' trial codes with (in units of the bound): the finest of [`STEPS`],
/// which keeps the error, and so the PSNR, closest to the blocks'.
const TRIAL_STEP: f64 = 1.5;

/// The auto words code the wavelet path only when a sample of its coefficients estimates them
/// below this share of the blocks' size (the estimate leaves out the corrections).
const TRIAL_GATE: f64 = 1.0;

/// The auto words try the wavelet path on chunks of at least this many values. Below it the
/// transform has too few levels to pay: over the 34 benchmark fields in 16x64x64 chunks
/// (rel 1e-2..1e-5), the 10,504 chunks of 1,024 values (2-D fields' 16x64 chunks) came out
/// 0.08% smaller with the trial, which took a tenth of their write time; 8,192-value chunks
/// came out 4.7% smaller.
const TRIAL_MIN: usize = 1 << 12;

/// Chunks of at most this many values code their subbands in one range-coder block with one
/// model ([`wavelet::Grouping::Shared`]); larger ones a block per subband, on all threads.
const SHARED_MAX: usize = field::BLOCK_TARGET;

/// Coefficients are coded within this magnitude (the bit-plane coder's range).
const MAX_COEFFICIENT: f64 = (1 << 29) as f64;

/// Values per task of the passes over the whole chunk.
const PIECE: usize = 1 << 16;

/// The chunk coded by the wavelet path at the step of [`STEPS`] whose estimated size is the
/// smallest; `None` when it cannot code the chunk (a value that is not finite, a bound that is
/// not absolute or relative, a grid too small to transform, more than
/// [`wavelet::MAX_VALUES`] values, coefficients beyond the coder's range).
pub(super) fn encode<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
) -> Option<Vec<u8>> {
    let coding = Coding::new(x, chunk, params)?;
    let mut g = vec![T::default(); x.len()];
    let mut q = vec![0i32; x.len()];
    let (_, step) = coding.best_step(x, &mut g, &mut q)?;
    coding.quantize(x, step, &mut g, &mut q);
    let bands = coding.code_bands(&q);
    coding.finish(x, data, chunk, params, step, &mut g, &q, &bands)
}

/// The auto words' trial: the chunk coded by the wavelet path at [`TRIAL_STEP`] when that is
/// smaller than `than` bytes (the blocks' coding); not tried under [`TRIAL_MIN`] values. A chunk whose subbands share one model is
/// coded straight away, and given up as soon as its coefficients alone take `than` bytes;
/// a larger one is skipped when a sample of its coefficients says it will not be smaller
/// ([`TRIAL_GATE`]).
pub(super) fn encode_if_smaller<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    than: usize,
) -> Option<Vec<u8>> {
    if x.len() < TRIAL_MIN {
        return None;
    }
    let coding = Coding::new(x, chunk, params)?;
    let mut g = vec![T::default(); x.len()];
    let mut q = vec![0i32; x.len()];
    let step = TRIAL_STEP * coding.eb;
    if !coding.quantize(x, step, &mut g, &mut q) {
        return None;
    }
    if coding.grouping == wavelet::Grouping::Subbands
        && coding.estimate(&q) as f64 >= TRIAL_GATE * than as f64
    {
        return None;
    }
    let bands = coding.code_bands(&q);
    if bands.iter().map(Vec::len).sum::<usize>() >= than {
        return None;
    }
    let c = coding.finish(x, data, chunk, params, step, &mut g, &q, &bands)?;
    (c.len() < than).then_some(c)
}

/// The mean of the values, summed in a fixed order (the decoder reads it from the header).
fn mean<T: Element>(x: &[T]) -> f64 {
    let sums: Vec<f64> = x
        .par_chunks(1 << 16)
        .map(|c| c.iter().map(|v| v.to_f64()).sum())
        .collect();
    sums.iter().sum::<f64>() / x.len() as f64
}

/// What one chunk's codings share.
struct Coding {
    dims: [usize; 3],
    levels: [u8; 3],
    grouping: wavelet::Grouping,
    bands: Vec<Subband>,
    eb: f64,
    mid: f64,
}

impl Coding {
    /// `None` when the wavelet path cannot code the chunk (see [`encode`]).
    fn new<T: Element>(x: &[T], chunk: &ChunkInfo, params: &Params) -> Option<Coding> {
        if x.len() > wavelet::MAX_VALUES {
            return None;
        }
        let st = quant::stats(x);
        if st.finite != x.len() {
            return None;
        }
        let eb = quant::pointwise_bound(&st, params)?;
        if !(eb > 0.0 && eb.is_finite()) {
            return None;
        }
        let dims = field::grid_dims(&chunk.shape);
        let levels = cdf97::levels_for(dims);
        let grouping = if x.len() <= SHARED_MAX {
            wavelet::Grouping::Shared
        } else {
            wavelet::Grouping::Subbands
        };
        (levels != [0; 3]).then(|| Coding {
            dims,
            levels,
            grouping,
            bands: cdf97::subbands(dims, levels),
            eb,
            mid: mean(x),
        })
    }

    /// Transforms the chunk into `g` and quantizes the coefficients with `step` into `q`;
    /// `false` when one is beyond [`MAX_COEFFICIENT`] steps.
    fn quantize<T: Element>(&self, x: &[T], step: f64, g: &mut [T], q: &mut [i32]) -> bool {
        let mid = self.mid;
        g.par_iter_mut()
            .zip(x.par_iter())
            .for_each(|(g, v)| *g = T::of(v.to_f64() - mid));
        cdf97::forward(g, self.dims, self.levels);
        let inv = 1.0 / step;
        g.par_chunks(PIECE)
            .zip(q.par_chunks_mut(PIECE))
            .map(|(c, q)| quant::round_indices(c, inv, MAX_COEFFICIENT, q))
            .reduce(|| true, |a, b| a && b)
    }

    /// The step of [`STEPS`] with the smallest estimated chunk ([`Coding::estimate_at`]) and
    /// that estimate; `None` when no step can code the chunk.
    fn best_step<T: Element>(&self, x: &[T], g: &mut [T], q: &mut [i32]) -> Option<(usize, f64)> {
        STEPS
            .iter()
            .filter_map(|&m| {
                let step = m * self.eb;
                Some((self.estimate_at(x, step, g, q)?, step))
            })
            .min_by_key(|&(est, _)| est)
    }

    /// The chunk's size at `step`, estimated: the coefficients from a sample of each
    /// subband's rows, the corrections from the decoder's reconstruction. `None` when the
    /// step cannot code the chunk.
    fn estimate_at<T: Element>(
        &self,
        x: &[T],
        step: f64,
        g: &mut [T],
        q: &mut [i32],
    ) -> Option<usize> {
        if !self.quantize(x, step, g, q) {
            return None;
        }
        let bands = self.estimate(q);
        self.reconstruct(step, g, q);
        let (fixes, exact) = corrections(x, g, self.eb)?;
        Some(bands + wavelet::corrections_estimate(&fixes) + exact.len() * (T::SIZE + 2))
    }

    /// The decoder's values from the quantized coefficients `q`, into `g`.
    fn reconstruct<T: Element>(&self, step: f64, g: &mut [T], q: &[i32]) {
        g.par_iter_mut()
            .zip(q.par_iter())
            .for_each(|(g, &q)| *g = dequantize(q, step));
        synthesize(g, self.dims, self.levels, self.mid);
    }

    /// The coefficients' coded size, estimated from runs of rows of each subband, each with a
    /// model of its own (so a little above what a shared model codes).
    fn estimate(&self, q: &[i32]) -> usize {
        self.bands
            .par_iter()
            .map(|b| {
                let (v, scale) = sample(q, self.dims, b);
                let rows = v.len() / b.ext[2];
                let est =
                    bitplane::estimate(&v, [1, rows, b.ext[2]], Classes::Single, Contexts::Near);
                (est as f64 * scale) as usize
            })
            .sum()
    }

    /// The quantized coefficients `q` range coded: a block per subband, or one for all
    /// ([`wavelet::Grouping`]).
    fn code_bands(&self, q: &[i32]) -> Vec<Vec<u8>> {
        let (single, near) = (Classes::Single, Contexts::Near);
        match self.grouping {
            wavelet::Grouping::Subbands => self
                .bands
                .par_iter()
                .map(|b| bitplane::encode(&gather(q, self.dims, b), b.ext, single, near))
                .collect(),
            wavelet::Grouping::Shared => {
                let parts: Vec<Vec<i32>> =
                    self.bands.iter().map(|b| gather(q, self.dims, b)).collect();
                let parts: Vec<(&[i32], [usize; 3])> = parts
                    .iter()
                    .zip(&self.bands)
                    .map(|(v, b)| (&v[..], b.ext))
                    .collect();
                vec![bitplane::encode_parts(&parts, single, near)]
            }
        }
    }

    /// The chunk coded with quantization step `step` from its coefficients `q` (`g`: their
    /// memory for the reconstruction), which `bands` holds range coded; `None` when more
    /// than half the values would need a correction.
    #[allow(clippy::too_many_arguments)]
    fn finish<T: Element>(
        &self,
        x: &[T],
        data: &[u8],
        chunk: &ChunkInfo,
        params: &Params,
        step: f64,
        g: &mut [T],
        q: &[i32],
        bands: &[Vec<u8>],
    ) -> Option<Vec<u8>> {
        self.reconstruct(step, g, q);
        let (fixes, exact) = corrections(x, g, self.eb)?;
        let corrections = wavelet::write_corrections(&fixes);
        let payload = wavelet::write(self.levels, self.grouping, bands, &corrections);
        let esc = escapes::write(&exact, data, T::SIZE);
        let mut out = Vec::with_capacity(payload.len() + esc.len() + format::MAX_OVERHEAD);
        Header {
            version: format::WAVELET_VERSION,
            layout: Layout::Wavelet,
            dtype: chunk.dtype,
            shape: chunk.shape.clone(),
            mode: params.mode,
            coder: Coder::Range,
            requested: params.bound,
            eb: self.eb,
            mid: self.mid,
            step,
            feedback: 0,
            block: [0; 3],
            sections: 2,
        }
        .write(&mut out);
        format::write_section(&mut out, section::WAVELET, &payload);
        format::write_section(&mut out, section::ESCAPES, &esc);
        Some(out)
    }
}

/// Rows of a subband for [`Coding::estimate`]: runs of `RUN` rows out of every
/// `RUN * STRIDE` (all of a small band), and how many times the band's rows outnumber them.
fn sample(q: &[i32], dims: [usize; 3], b: &Subband) -> (Vec<i32>, f64) {
    const RUN: usize = 8;
    const STRIDE: usize = 8;
    let rows = b.ext[0] * b.ext[1];
    let every = if rows * b.ext[2] < 1 << 14 { 1 } else { STRIDE };
    let mut v = Vec::new();
    let mut taken = 0usize;
    let block = Block::from(*b);
    let starts = block.row_starts(dims).enumerate();
    for (_, row) in starts.filter(|(r, _)| (r / RUN) % every == 0) {
        v.extend_from_slice(&q[row..row + b.ext[2]]);
        taken += 1;
    }
    (v, rows as f64 / taken as f64)
}

/// A subband's coefficients, C order within its box.
fn gather(q: &[i32], dims: [usize; 3], b: &Subband) -> Vec<i32> {
    field::gather(q, dims, &Block::from(*b))
}

/// Points out of bound: corrected (index, steps), and stored exactly (index).
type Found = (Vec<(usize, i64)>, Vec<usize>);

/// The points the reconstruction `y` leaves out of bound: those a correction brings back
/// (index, steps), and those it does not (stored exactly), both by increasing index; `None`
/// when more than half the values need a correction (the format's limit).
fn corrections<T: Element>(x: &[T], y: &[T], eb: f64) -> Option<Found> {
    let single = T::SIZE == 4;
    let pieces: Vec<Found> = x
        .par_chunks(PIECE)
        .zip(y.par_chunks(PIECE))
        .enumerate()
        .map(|(p, (x, y))| {
            let (mut fixes, mut exact) = (Vec::new(), Vec::new());
            for (j, (&orig, &r)) in x.iter().zip(y).enumerate() {
                let v = orig.to_f64();
                // Subnormals come back bit for bit, as on the blocks' path.
                let special = orig.is_special();
                if !special && within(v, r.to_f64(), eb, single) {
                    continue;
                }
                let i = p * PIECE + j;
                let k = ((v - r.to_f64()) / (2.0 * eb)).round();
                let fixed = !special && k.abs() <= wavelet::MAX_STEPS as f64 && {
                    let c = corrected(r, k as i64, eb).to_f64();
                    within(v, c, eb, single)
                };
                if fixed {
                    fixes.push((i, k as i64));
                } else {
                    exact.push(i);
                }
            }
            (fixes, exact)
        })
        .collect();
    let (mut fixes, mut exact) = (Vec::new(), Vec::new());
    for (f, e) in pieces {
        fixes.extend(f);
        exact.extend(e);
    }
    (fixes.len() <= x.len() / 2).then_some((fixes, exact))
}
