//! The NeurLZ enhancer, encode side: trains the network on the chunk, quantizes it, runs the
//! decoder's fixed-point inference to find the corrections and the outliers, and keeps the
//! enhancer only when it pays (`docs/NEURLZ.md`, "When the enhancer is kept").

use crate::backend::cuda;
use crate::enhance::neurlz::{self, Inputs, Model, Norm, Regulation, FULL_SCALE};
use crate::field::Element;
use crate::format::SECTION_HEADER;
use crate::nn::conv::{Arch, QNet, MAX_CHANNELS};
use crate::nn::conv_train::{TrainConfig, TrainSet};
use crate::params::{Enhancer, Params};
use crate::quant::{dequantize, Grid};

/// Chunks with fewer values are not enhanced (the weights would cost more than they save).
pub const MIN_VALUES: usize = 4096;

/// What the encoder measured (for logs, tests and benchmarks).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Sum of squared errors of the base reconstruction.
    pub sse_base: f64,
    /// Sum of squared errors with the enhancer (outliers uncorrected).
    pub sse_enhanced: f64,
    pub outliers: usize,
    /// Section payload bytes.
    pub bytes: usize,
    /// Bits the enhancer is worth: its PSNR gain times the base codec's bits per dB.
    pub worth_bits: f64,
    pub kept: bool,
}

/// The chunk as the enhancer sees it.
pub struct Chunk<'a, T> {
    pub x: &'a [T],
    /// Reconstructed grid indices (the decoder's), 3D view layout.
    pub q: &'a [i32],
    /// Sorted flat indices of escaped values (stored exactly).
    pub escapes: &'a [usize],
    /// The chunk's shape (leading dimension = fields in cross-field mode).
    pub shape: &'a [usize],
    pub dims: [usize; 3],
    pub grid: Grid,
    pub eb: f64,
    pub m: i64,
}

/// The base codec's cost at an absolute bound: `(compressed bytes, sum of squared errors)`.
pub type BaseRate<'a> = &'a dyn Fn(f64) -> Option<(usize, f64)>;

/// Trains and evaluates the enhancer; returns the `ENHANCE` section payload when it pays.
/// `base_rate` measures the base codec at `eb` and `eb / 2`, which prices the distortion the
/// enhancer removes (`docs/NEURLZ.md`).
pub fn encode<T: Element>(
    c: &Chunk<'_, T>,
    params: &Params,
    base_rate: BaseRate<'_>,
) -> (Option<Vec<u8>>, Option<Outcome>) {
    if params.enhancer == Enhancer::Off || !(c.eb > 0.0) || c.x.len() < MIN_VALUES {
        return (None, None);
    }
    // Cross-field mode also tries one network shared by all fields (the single-field model)
    // and keeps whichever pays more: fields that do not help each other are not made worse.
    // Forced, it keeps the cross-field network as asked.
    let fields = fields_of(c.shape, params.enhancer);
    let candidates: &[usize] = if fields > 1 && !params.enhancer_force {
        &[fields, 1]
    } else {
        &[fields]
    };
    // Bits per dB of the base codec between eb and eb / 2 (measured once, when needed).
    let mut slope: Option<f64> = None;
    let mut best: Option<(f64, Outcome, Vec<u8>)> = None;
    let steps = params.enhancer_steps();
    for &fields in candidates {
        let inputs = choose_inputs(c, params, fields, steps);
        let mut model = train_model(c, params, fields, inputs, steps);
        let corr = corrections(params, &model, c);
        for scale in SCALES {
            model.scale = scale;
            let mut outcome = evaluate(c, &mut model, &corr);
            let mut payload = Vec::new();
            model.write(&mut payload);
            // Never write a section the decoder would refuse.
            if let Err(e) = Model::read(&payload, c.dims) {
                debug_assert!(false, "NeurLZ section does not read back: {e}");
                log::warn!("resid: NeurLZ section dropped, it does not read back: {e}");
                continue;
            }
            let gain_db = 10.0 * (outcome.sse_base / outcome.sse_enhanced).log10();
            if !(gain_db > 0.0) || !gain_db.is_finite() {
                continue;
            }
            let slope =
                *slope.get_or_insert_with(|| match (base_rate(c.eb), base_rate(c.eb / 2.0)) {
                    (Some((b1, s1)), Some((b2, s2))) if s2 > 0.0 && s1 > s2 => {
                        8.0 * b2.saturating_sub(b1) as f64 / (10.0 * (s1 / s2).log10())
                    }
                    _ => 0.0,
                });
            outcome.bytes = payload.len();
            outcome.worth_bits = slope * gain_db;
            let cost = 8.0 * (payload.len() + SECTION_HEADER) as f64;
            let net = outcome.worth_bits - cost;
            outcome.kept = net > 0.0 || params.enhancer_force;
            if best.as_ref().map_or(true, |b| net > b.0) {
                best = Some((net, outcome, payload));
            }
        }
    }
    let Some((_, outcome, payload)) = best else {
        return (None, None);
    };
    log::debug!("resid: NeurLZ {outcome:?}");
    (outcome.kept.then_some(payload), Some(outcome))
}

/// Correction scales the encoder tries (`2^15` = as the network says): a smaller scale trades
/// some of the gain for fewer outliers.
const SCALES: [u16; 3] = [FULL_SCALE, FULL_SCALE / 4 * 3, FULL_SCALE / 2];

fn fields_of(shape: &[usize], enhancer: Enhancer) -> usize {
    if enhancer.is_cross() && shape.len() >= 3 && (2..=MAX_CHANNELS).contains(&shape[0]) {
        shape[0]
    } else {
        1
    }
}

/// Which inputs the network gets. With one slice per field only the in-slice planes mean
/// anything. Otherwise the neighbouring slices help where they continue the field (a 3D
/// volume) and hurt where they do not (levels or time steps merged into the leading
/// dimension: on ERA-Interim u, v, z, BD-rate -14% with them against -18% without): a
/// network of each kind is trained on a quarter of the steps, and the one whose corrections
/// leave the smaller squared error is trained in full.
fn choose_inputs<T: Element>(
    c: &Chunk<'_, T>,
    params: &Params,
    fields: usize,
    steps: usize,
) -> Inputs {
    if c.dims[0] / fields < 2 {
        return Inputs::Slice;
    }
    let probe = (steps / 4).max(1);
    let sse = |inputs: Inputs| {
        let mut model = train_model(c, params, fields, inputs, probe);
        let corr = corrections(params, &model, c);
        evaluate(c, &mut model, &corr).sse_enhanced
    };
    if sse(Inputs::Slice) < sse(Inputs::Volume) {
        Inputs::Slice
    } else {
        Inputs::Volume
    }
}

/// Trains the network for `fields` fields along the leading dimension (1: one network input
/// per slice, shared by every slice) for `steps` optimizer steps.
fn train_model<T: Element>(
    c: &Chunk<'_, T>,
    params: &Params,
    fields: usize,
    inputs: Inputs,
    steps: usize,
) -> Model {
    let n = c.x.len();
    let per_field = c.dims[0] / fields;
    let plane = c.dims[1] * c.dims[2];
    let mut usable = vec![true; n];
    for &i in c.escapes {
        usable[i] = false;
    }
    let norm: Vec<Norm> = (0..fields)
        .map(|f| {
            let span = f * per_field * plane..(f + 1) * per_field * plane;
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for i in span {
                if usable[i] {
                    lo = lo.min(c.q[i] as i64);
                    hi = hi.max(c.q[i] as i64);
                }
            }
            if lo > hi {
                (lo, hi) = (0, 0);
            }
            Norm {
                center: ((lo + hi) / 2) as i32,
                half: ((hi - lo + 1) / 2).clamp(1, u32::MAX as i64) as u32,
            }
        })
        .collect();

    let k = inputs.planes();
    // Training samples: slice s of every field, `[s][field][plane][y][x]`.
    let mut input = vec![0f32; k * n];
    let mut target = vec![0f32; n];
    let mut mask = vec![0f32; n];
    for s in 0..per_field {
        for (f, &nf) in norm.iter().enumerate() {
            let src = (f * per_field + s) * plane;
            let dst = (s * fields + f) * plane;
            let mut planes = Vec::with_capacity(k * plane);
            neurlz::slice_inputs(inputs, c.q, f, s, per_field, c.dims, nf, c.m, &mut planes);
            let idst = (s * fields + f) * k * plane;
            for (a, &b) in input[idst..idst + k * plane].iter_mut().zip(&planes) {
                *a = b as f32 / 65536.0;
            }
            for j in 0..plane {
                let i = src + j;
                if usable[i] {
                    let base = c.grid.mid + c.q[i] as f64 * c.grid.step;
                    let r = (c.x[i].to_f64() - base) / c.eb;
                    if r.is_finite() {
                        target[dst + j] = r.clamp(-1.0, 1.0) as f32;
                        mask[dst + j] = 1.0;
                    }
                }
            }
        }
    }
    let set = TrainSet {
        k: k * fields,
        o: fields,
        h: c.dims[1],
        w: c.dims[2],
        slices: per_field,
        input: &input,
        target: &target,
        mask: &mask,
    };
    let arch = Arch {
        cin: k * fields,
        width: if n >= 1 << 15 { 6 } else { 4 },
        cout: fields,
    };
    let cfg = TrainConfig {
        steps,
        ..TrainConfig::default()
    };
    let net: QNet = cuda::train::train(params.backend, arch, &set, &cfg).quantize();
    Model {
        inputs,
        regulation: if params.enhancer.is_strict() {
            Regulation::Strict
        } else {
            Regulation::Relaxed
        },
        fields,
        scale: FULL_SCALE,
        norm,
        net,
        outliers: Vec::new(),
    }
}

/// The decoder's corrections for `model` (on the GPU when `params.backend` selects it).
fn corrections<T>(params: &Params, model: &Model, c: &Chunk<'_, T>) -> Vec<i32> {
    cuda::conv::corrections(
        params.backend,
        model.inputs,
        &model.net,
        &model.norm,
        c.q,
        c.dims,
        c.m,
    )
}

/// With the decoder's corrections `corr`, lists the outliers at the model's scale and
/// measures the errors.
fn evaluate<T: Element>(c: &Chunk<'_, T>, model: &mut Model, corr: &[i32]) -> Outcome {
    let limit = match model.regulation {
        Regulation::Strict => c.eb,
        Regulation::Relaxed => 2.0 * c.eb,
    };
    let mut esc = c.escapes.iter().peekable();
    let (mut sse0, mut sse1) = (0f64, 0f64);
    model.outliers.clear();
    for (i, ((xi, &qi), &ci)) in c.x.iter().zip(c.q).zip(corr).enumerate() {
        if esc.peek() == Some(&&i) {
            esc.next();
            continue;
        }
        let x = xi.to_f64();
        let e0 = x - dequantize::<T>(qi, c.grid).to_f64();
        let ce = neurlz::scaled(ci, model.scale);
        let e1 = x - neurlz::enhanced::<T>(qi, ce, c.grid, c.m).to_f64();
        sse0 += e0 * e0;
        if e1.abs() <= limit {
            sse1 += e1 * e1;
        } else {
            model.outliers.push(i);
            sse1 += e0 * e0;
        }
    }
    Outcome {
        sse_base: sse0,
        sse_enhanced: sse1,
        outliers: model.outliers.len(),
        bytes: 0,
        worth_bits: 0.0,
        kept: false,
    }
}
