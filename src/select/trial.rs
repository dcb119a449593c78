//! Trials: each candidate predicts the block (or a central sample of it) as the encoder
//! would; a whole block is coded, a sample's size estimated from the coder's model costs.

use rayon::prelude::*;

use super::Defer;
use crate::entropy;
use crate::field::{self, Block};
use crate::params::Coder;
use crate::predict::{BlockEncoder, Predictor};
use crate::quant::{self, Plan};

/// Blocks up to this many values are tried whole with every candidate predictor (coded, so
/// the winner's coding is kept); larger ones on a central sample of about an eighth of their
/// volume (at least this many values), whose coded size is estimated from the coder's model
/// costs without coding (`entropy::estimate_block`). 2^13: a 16x64x64 chunk (one block of
/// 64K values) was tried on a half-block sample per candidate at 2^15, and the trials took
/// about 70% of its encode time; at 2^13 it writes about 1.6x faster, sizes on the benchmark
/// fields within 0.2% on average (BENCHMARKS.md, "Cheaper trials").
const FULL_TRIAL: usize = 1 << 13;

/// The trials' rate-distortion trade: a block's cost is its bits plus `n/2 log2(MSE)` over
/// its `n` sampled values, so 6 dB of PSNR (a quarter of the squared error) is worth one bit
/// per value, as at high rates. Interpolation codes its coarse levels more finely, which
/// costs bits and lowers the error; comparing bytes alone, fitted Lorenzo won blocks at loose
/// bounds that then decoded 1-2 dB worse. On the grade-A fields (`examples/eval`): BD-rate
/// against SZ3 -16.9% with the trade, -16.5% without.
const RD_WEIGHT: f64 = 1.0;

/// A block coded in full by a trial: its payload, which points it escaped, and the squared
/// error of its decoded values ([`recon_sse`]).
pub type Trial = (Vec<u8>, Vec<bool>, f64);

/// A predictor and, when its trial was the whole block, that trial's coding.
pub type Pick<'a> = (&'a dyn Predictor, Option<Trial>);

/// What the learned candidate saves over the best fixed one, estimated from their trials.
pub struct Saving {
    /// On the whole block, in bytes.
    pub bytes: f64,
    /// As a share of the fixed candidate's trial.
    pub share: f64,
}

/// What [`choose_predictor`] found for a block.
pub struct Choice<'a> {
    /// The candidate that codes the block (or its sample) into the fewest bytes.
    pub best: Pick<'a>,
    /// When `best` is a learned candidate (one past `fixed`), the best of the fixed ones, kept
    /// in case the chunk's weights turn out not to pay or its full coding is smaller, with
    /// how much the learned one is estimated to save over it.
    pub fallback: Option<(Pick<'a>, Saving)>,
}

/// A block (or a sample of it): values, prequantized indices, escaped points, extents.
pub(super) struct Input<'a> {
    pub x: &'a [f64],
    pub q: &'a [i32],
    pub escaped: &'a [bool],
    pub ext: [usize; 3],
}

/// One trial's size in bytes (`usize::MAX`: not tried) and its [`Trial`] (the payload only when
/// it was the whole block; the escapes and squared error always).
type Tried = (usize, Trial);

/// Tries every candidate on the block (or a central sample of it), escapes counted; a whole-
/// block trial's coding is returned with its pick, so the caller need not code it again.
/// Candidates from index `fixed` on are learned (NGLR).
pub(super) fn choose_predictor<'a>(
    candidates: &[&'a dyn Predictor],
    fixed: usize,
    defer: &[Defer],
    block: &Input<'_>,
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
    let sample = sample_of(block.ext);
    let (sx, sq, se) = (
        field::gather(block.x, block.ext, &sample),
        field::gather(block.q, block.ext, &sample),
        field::gather(block.escaped, block.ext, &sample),
    );
    let s = Input {
        x: &sx,
        q: &sq,
        escaped: &se,
        ext: sample.ext,
    };
    let whole = sample.ext == block.ext;
    let trial = |p: &dyn Predictor| try_one(p, &s, whole, plan, coder, single);
    // Trials run side by side: a chunk of one or two blocks would otherwise leave cores idle.
    // Ties go to the earlier candidate, so the choice does not depend on scheduling. A
    // deferred candidate is tried after the others, and only if its condition holds.
    let mut trials: Vec<Tried> = candidates
        .par_iter()
        .enumerate()
        .map(|(k, p)| match defer.iter().any(|d| d.candidate == k) {
            true => (usize::MAX, (Vec::new(), Vec::new(), 0.0)),
            false => trial(*p),
        })
        .collect();
    for d in defer {
        let (rival, reference) = (trials[d.rival].0 as f64, trials[d.reference].0 as f64);
        if rival <= reference * (1.0 + d.margin) {
            trials[d.candidate] = trial(candidates[d.candidate]);
        }
    }
    pick(
        candidates,
        fixed,
        trials,
        block.q.len(),
        sample.len(),
        whole,
    )
}

/// The block itself when it is small enough to try whole; else a central sample of about an
/// eighth of it (the largest extent halved until it fits).
fn sample_of(ext: [usize; 3]) -> Block {
    let n: usize = ext.iter().product();
    if n <= FULL_TRIAL {
        return Block {
            origin: [0; 3],
            ext,
        };
    }
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
}

/// One candidate's trial on `s`: a whole block is coded (the winner's coding is kept); a
/// sample's size is estimated from the model's costs, without running the range coder.
fn try_one(
    p: &dyn Predictor,
    s: &Input<'_>,
    whole: bool,
    plan: &Plan,
    coder: Coder,
    single: bool,
) -> Tried {
    let (codes, recon, esc) = predict_block_recon(p, s.x, s.q, s.escaped, s.ext, plan, single);
    let sse = recon_sse(s.x, &recon, &esc, plan);
    let escapes = esc.iter().filter(|&&e| e).count() * (2 + 8);
    let mut bytes = p.header();
    if whole {
        bytes.extend(entropy::encode_block(coder, &codes, s.ext, p.contexts()));
        (bytes.len() + escapes, (bytes, esc, sse))
    } else {
        let size =
            bytes.len() + entropy::estimate_block(sample_model(coder), &codes, s.ext, p.contexts());
        (size + escapes, (Vec::new(), esc, sse))
    }
}

/// The squared error of a block's decoded values: `recon` holds their grid indices, and an
/// escaped point (stored exactly) adds nothing.
pub fn recon_sse(x: &[f64], recon: &[i32], escaped: &[bool], plan: &Plan) -> f64 {
    // Four sums in a fixed order and no branch, so the loop runs on vector registers.
    let mut acc = [0.0f64; 4];
    for (i, ((&x, &r), &e)) in x.iter().zip(recon).zip(escaped).enumerate() {
        let d = x - quant::dequantize_f64(r, plan.grid);
        acc[i & 3] += if e { 0.0 } else { d * d };
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The coder whose model estimates a sample's size. rANS codes the range coder's model with
/// static tables; its own estimate charges a sample (an eighth of the block) for whole tables
/// and picked worse candidates than the adaptive model's estimate, which ranks them as the
/// coded block does (eraint z: 3.1% more bits than the range coder's choices, 0.2% fewer now).
fn sample_model(coder: Coder) -> Coder {
    match coder {
        Coder::Rans => Coder::Range,
        other => other,
    }
}

/// The winner by rate-distortion cost (see [`RD_WEIGHT`]; an untried candidate never wins)
/// and, when it is learned, the best fixed candidate with the estimated saving over it on
/// the block's `n` values (the trials covered `ns`).
fn pick<'a>(
    candidates: &[&'a dyn Predictor],
    fixed: usize,
    trials: Vec<Tried>,
    n: usize,
    ns: usize,
    whole: bool,
) -> Choice<'a> {
    let nsf = ns as f64;
    let cost = |k: usize| {
        let (bytes, (_, _, sse)) = &trials[k];
        if *bytes == usize::MAX {
            f64::INFINITY
        } else {
            *bytes as f64 * 8.0 + RD_WEIGHT * 0.5 * nsf * (sse / nsf).max(f64::MIN_POSITIVE).log2()
        }
    };
    let smallest = |n: usize| (0..n).min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
    let best = smallest(candidates.len()).expect("at least one predictor");
    let fallback = smallest(fixed.min(candidates.len()))
        .filter(|_| best >= fixed)
        .map(|k| {
            let d = trials[k].0 as f64 - trials[best].0 as f64;
            let saving = Saving {
                bytes: d * n as f64 / ns as f64,
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

/// Codes one block with `predictor`: the codes, the decoder's reconstruction of the block's
/// indices (which the encoder leaves in place of the prequantized ones), and which points
/// ended up escaped. The trials here, the coding
/// in `compress/` and NGLR's training pairs all predict through it.
pub fn predict_block_recon(
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
