//! Which predictor codes a block: the candidates the chunk's predictor word allows, fitted to
//! the block, tried on it (or a central sample of it, [`trial`]), the smallest
//! rate-distortion cost winning; when a learned (NGLR) candidate wins, the best fixed one is
//! kept as its fallback, in case the chunk's weights do not pay.

mod trial;

pub use trial::{predict_block_recon, recon_sse, Choice, Trial};

use crate::params::{Coder, PredictorChoice};
use crate::predict::{
    fitted::{self, FittedLorenzo},
    interp::{self, Interp, InterpMd},
    lorenzo::{self, Lorenzo},
    nglr, Predictor,
};
use crate::quant::Plan;

/// A candidate [`trial::choose_predictor`] tries only when another candidate, `rival`, came
/// within `margin` of `reference`: multi-dimensional interpolation, when one-dimensional
/// interpolation is close to Lorenzo ([`DEFER_MARGIN`]). Where Lorenzo wins clearly (tight
/// bounds) neither interpolation does: on the grade-A fields this skipped 45 of 148 trials
/// and changed no choice.
///
/// Fitted Lorenzo, when it joins plain Lorenzo, is tried only when Lorenzo came within
/// `1 / FITTED_SURE - 1` of one-dimensional interpolation: its estimated gain over Lorenzo is
/// less than that.
#[derive(Clone, Copy)]
pub struct Defer {
    candidate: usize,
    rival: usize,
    reference: usize,
    margin: f64,
}

/// See [`Defer`].
const DEFER_MARGIN: f64 = 0.05;

/// Fitted Lorenzo replaces plain Lorenzo among a block's candidates when its estimated cost
/// is below this share of Lorenzo's (`fitted::fit`'s ratio); between it and 0.99 it joins
/// Lorenzo as a candidate (a deferred one, see [`Defer`]). The estimate ignores the coder's
/// contexts: on CESM TS at rel 1e-4, ratios of 0.96-0.99 coded 0.6-2.6% larger than
/// Lorenzo, 0.74-0.78 0.8-2% smaller. On the grade-A fields 0.8 gave 0.1 points more BD-rate
/// gain than 0.9.
const FITTED_SURE: f64 = 0.8;

/// The fixed candidates a chunk's predictor word allows (NGLR joins them when it is trained).
#[derive(Clone, Copy)]
pub struct Menu {
    lorenzo: bool,
    interp: bool,
    /// The interpolations' coarse-level feedback step.
    coarse: u8,
}

impl Menu {
    pub fn new(choice: PredictorChoice, plan: &Plan) -> Menu {
        let (lorenzo, interp) = match choice {
            PredictorChoice::Auto
            | PredictorChoice::AutoNglr
            | PredictorChoice::AutoLinear
            | PredictorChoice::Wavelet => (true, true),
            PredictorChoice::Lorenzo => (true, false),
            PredictorChoice::Interp => (false, true),
            PredictorChoice::Nglr => (false, false),
        };
        Menu {
            lorenzo,
            interp,
            coarse: interp::coarse_step(plan.m),
        }
    }

    /// Plain Lorenzo is the only fixed candidate (predictor word 1): nothing to try.
    pub fn lorenzo_only(&self) -> bool {
        self.lorenzo && !self.interp
    }

    /// How many fixed candidates a block gets besides fitted Lorenzo; 0 when NGLR is forced.
    pub fn fixed(&self) -> usize {
        self.lorenzo as usize + 2 * self.interp as usize
    }
}

/// One block's own candidates: the interpolations with their kernel fitted to it, and
/// Lorenzo's weights fitted to it where that is estimated to pay.
pub struct Candidates {
    interp_1d: Interp,
    interp_md: InterpMd,
    /// Fitted Lorenzo and its estimated cost as a share of plain Lorenzo's (auto modes only:
    /// predictor word 1 is plain Lorenzo, LBRC).
    fitted: Option<(FittedLorenzo, f64)>,
}

impl Candidates {
    /// The candidates for a block of prequantized indices `q` and extents `ext`.
    pub fn fit(menu: &Menu, q: &[i32], ext: [usize; 3], plan: &Plan) -> Candidates {
        let kernel = if menu.interp {
            interp::fit_kernel(q, ext, plan.m, menu.coarse)
        } else {
            interp::Kernel::CUBIC
        };
        let coarse = menu.coarse;
        Candidates {
            interp_1d: Interp { coarse, kernel },
            interp_md: InterpMd { coarse, kernel },
            fitted: (menu.lorenzo && menu.interp)
                .then(|| fitted::fit(q, ext, plan.m))
                .flatten(),
        }
    }

    /// The candidates in trial order (the fixed ones first, then `learned`), how many are
    /// fixed, and which wait on others. A sure fitted Lorenzo replaces Lorenzo; a closer one
    /// joins the fixed candidates after the interpolations.
    fn list<'a>(
        &'a self,
        menu: &Menu,
        learned: Option<&'a nglr::Nglr>,
    ) -> (Vec<&'a dyn Predictor>, usize, Vec<Defer>) {
        let sure = |ratio: f64| ratio < FITTED_SURE;
        let mut candidates: Vec<&dyn Predictor> = Vec::with_capacity(5);
        if menu.lorenzo {
            match &self.fitted {
                Some((f, ratio)) if sure(*ratio) => candidates.push(f),
                _ => candidates.push(&Lorenzo),
            }
        }
        if menu.interp {
            candidates.extend([&self.interp_1d as &dyn Predictor, &self.interp_md]);
        }
        let fixed = menu.fixed();
        let extra = match &self.fitted {
            Some((f, ratio)) if !sure(*ratio) => {
                candidates.push(f);
                1
            }
            _ => 0,
        };
        match learned {
            Some(n) => candidates.push(n),
            None if fixed == 0 => candidates.push(&Lorenzo), // too few points to train on
            None => {}
        }
        // Lorenzo, then the two interpolations: the second waits for the first. Fitted
        // Lorenzo beside plain Lorenzo waits for both.
        let mut defer = Vec::with_capacity(2);
        if menu.lorenzo && menu.interp {
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
        (candidates, fixed + extra, defer)
    }

    /// Chooses the block's predictor among these candidates and `learned`: the block's values
    /// `x`, prequantized indices `q` and escaped points, of extents `ext`.
    #[allow(clippy::too_many_arguments)]
    pub fn choose<'a>(
        &'a self,
        menu: &Menu,
        learned: Option<&'a nglr::Nglr>,
        (x, q, escaped): (&[f64], &[i32], &[bool]),
        ext: [usize; 3],
        plan: &Plan,
        coder: Coder,
        single: bool,
    ) -> Choice<'a> {
        let (candidates, fixed, defer) = self.list(menu, learned);
        let block = trial::Input { x, q, escaped, ext };
        trial::choose_predictor(&candidates, fixed, &defer, &block, plan, coder, single)
    }
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
pub fn clear_share(model: &crate::nn::weights::Model, fallback: u8) -> f64 {
    match model {
        crate::nn::weights::Model::Linear(_) if matches!(fallback, lorenzo::ID | fitted::ID) => {
            0.03
        }
        _ => 0.1,
    }
}
