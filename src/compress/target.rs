//! NRMSE and PSNR targets: their error is known only after coding, so these loops code,
//! decode and measure, keeping the smallest chunk that meets the target.

use super::blocks::encode_coded;
use crate::field::{self, Element};
use crate::params::{ChunkInfo, Enhancer, Params, PredictorChoice};
use crate::quant::{self, Plan};

/// The NRMSE of a chunk's decoded values against `x` (`None` if it does not decode).
fn decoded_nrmse<T: Element>(x: &[T], bytes: &[u8]) -> Option<f64> {
    let back = crate::decompress::decompress(bytes, usize::MAX).ok()?;
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
pub(super) fn encode_for_target<T: Element>(
    x: &[T],
    data: &[u8],
    chunk: &ChunkInfo,
    params: &Params,
    mut plan: Plan,
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
            let Some(mut p) = quant::plan_on(x, plan.grid.mid, eb, quant::FEEDBACK_STEP) else {
                break;
            };
            let bytes = encode_coded(x, data, chunk, &plain, &mut p, None).bytes;
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
            let own = encode_coded(x, data, chunk, &plain, &mut plan, None).bytes;
            match found {
                Some((p, b)) if b.len() <= own.len() => (p, b),
                _ => (plan, own),
            }
        }
    };
    if params.enhancer == Enhancer::Off {
        return bytes;
    }
    quality_target(x, data, chunk, params, plan, bytes, target)
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
    mut plan: Plan,
    plain: Vec<u8>,
    target: f64,
) -> Vec<u8> {
    let forced = Params {
        enhancer_force: true,
        ..*params
    };
    let mut best = plain;
    let enhanced = encode_coded(x, data, chunk, &forced, &mut plan, None).bytes;
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
        let Some(mut loose) = quant::loosened(x, &plan, factor) else {
            break;
        };
        let bytes = encode_coded(x, data, chunk, &forced, &mut loose, None).bytes;
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
