//! The NeurLZ enhancer, encode side: trains the network on the chunk, quantizes it, runs the
//! decoder's fixed-point inference to find the corrections and the outliers, and keeps the
//! enhancer only when it pays (`docs/NEURLZ.md`, "When the enhancer is kept").

use crate::backend::cuda;
use crate::enhance::neurlz::{self, Inputs, Model, Norm, Outliers, Regulation, FULL_SCALE};
use crate::field::Element;
use crate::format::SECTION_HEADER;
use crate::nn::conv::{Arch, QNet, MAX_CHANNELS};
use crate::nn::conv_train::{Patches, SetShape, TrainConfig};
use crate::nn::corrections::Site;
use crate::nn::tile::Span;
use crate::params::{Enhancer, Params};
use crate::quant::{dequantize, dequantize_f64, Grid};

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

impl<T: Element> Chunk<'_, T> {
    /// The training target at point `i`: the base codec's error there in units of `eb`,
    /// clamped to [-1, 1] (`None` where it is not finite).
    fn target(&self, i: usize) -> Option<f32> {
        let r = (self.x[i].to_f64() - dequantize_f64(self.q[i], self.grid)) / self.eb;
        r.is_finite().then(|| r.clamp(-1.0, 1.0) as f32)
    }
}

/// The base codec's cost at an absolute bound: `(compressed bytes, sum of squared errors)`,
/// at the chunk's `eb` and at `eb / 2` (`None` where it could not be had).
pub type Rates = [Option<(usize, f64)>; 2];

/// Whether [`encode`] tries the enhancer on a chunk of `n` values at the bound `eb`.
pub fn applies(params: &Params, eb: f64, n: usize) -> bool {
    params.enhancer != Enhancer::Off && eb > 0.0 && n >= MIN_VALUES
}

/// Trains and evaluates the enhancer; returns the `ENHANCE` section payload when it pays.
/// `rates`, the base codec at `eb` and `eb / 2`, prices the distortion the enhancer removes
/// (`docs/NEURLZ.md`).
pub fn encode<T: Element>(
    c: &Chunk<'_, T>,
    params: &Params,
    rates: Rates,
) -> (Option<Vec<u8>>, Option<Outcome>) {
    if !applies(params, c.eb, c.x.len()) {
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
    // Bits per dB of the base codec between eb and eb / 2 (worked out once, when needed).
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
            let slope = *slope.get_or_insert_with(|| match rates {
                [Some((b1, s1)), Some((b2, s2))] if s2 > 0.0 && s1 > s2 => {
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
    let set = ChunkSet {
        c,
        inputs,
        norm: norms(c, fields),
    };
    let k = inputs.planes();
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
    let norm = set.norm;
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
        outliers: Outliers::default(),
    }
}

/// Each field's input normalization: the centre and half-width of its grid indices, escaped
/// values left out.
fn norms<T>(c: &Chunk<'_, T>, fields: usize) -> Vec<Norm> {
    let span = c.q.len() / fields;
    let mut esc = c.escapes.iter().copied().peekable();
    (0..fields)
        .map(|f| {
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for i in f * span..(f + 1) * span {
                if esc.peek() == Some(&i) {
                    esc.next();
                    continue;
                }
                lo = lo.min(c.q[i] as i64);
                hi = hi.max(c.q[i] as i64);
            }
            if lo > hi {
                (lo, hi) = (0, 0);
            }
            Norm {
                center: ((lo + hi) / 2) as i32,
                half: ((hi - lo + 1) / 2).clamp(1, u32::MAX as i64) as u32,
            }
        })
        .collect()
}

/// The chunk's training set, computed a patch at a time ([`Patches`]): sample `s` is slice `s`
/// of every field, with `k` input planes per field (the decoder's fixed-point inputs / 2^16),
/// and per field the target (the residual in units of the bound, within `[-1, 1]`) and the
/// mask (0 at escaped values and where the residual is not finite).
struct ChunkSet<'a, T> {
    c: &'a Chunk<'a, T>,
    inputs: Inputs,
    norm: Vec<Norm>,
}

impl<T: Element> Patches for ChunkSet<'_, T> {
    fn shape(&self) -> SetShape {
        let fields = self.norm.len();
        SetShape {
            k: self.inputs.planes() * fields,
            o: fields,
            h: self.c.dims[1],
            w: self.c.dims[2],
            slices: self.c.dims[0] / fields,
        }
    }

    fn patch(&self, s: usize, y0: usize, x0: usize, ph: usize, pw: usize) -> [Vec<f32>; 3] {
        let c = self.c;
        let [n0, h, w] = c.dims;
        let per_field = n0 / self.norm.len();
        let (wy, wx) = (Span::new(y0, y0 + ph), Span::new(x0, x0 + pw));
        let mut planes = Vec::new();
        for (f, &norm) in self.norm.iter().enumerate() {
            let site = Site {
                inputs: self.inputs,
                q: c.q,
                f,
                s,
                per_field,
                dims: c.dims,
                norm,
                m: c.m,
            };
            site.window(wy, wx, &mut planes);
        }
        let input = planes.iter().map(|&b| b as f32 / 65536.0).collect();
        let mut target = vec![0f32; self.norm.len() * ph * pw];
        let mut mask = vec![0f32; target.len()];
        for f in 0..self.norm.len() {
            for y in 0..ph {
                let i0 = (f * per_field + s) * h * w + (y0 + y) * w + x0;
                let mut esc = c.escapes[c.escapes.partition_point(|&e| e < i0)..]
                    .iter()
                    .peekable();
                let at = (f * ph + y) * pw;
                for (j, i) in (i0..i0 + pw).enumerate() {
                    if esc.peek() == Some(&&i) {
                        esc.next();
                        continue;
                    }
                    if let Some(t) = c.target(i) {
                        target[at + j] = t;
                        mask[at + j] = 1.0;
                    }
                }
            }
        }
        [input, target, mask]
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
    model.outliers = Outliers::new(c.x.len());
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
            model.outliers.insert(i);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv_train::TrainSet;

    /// The training set as the encoder built it whole before patches were computed on demand
    /// (`[s][field][plane][y][x]` inputs, `[s][field][y][x]` targets and masks).
    fn dense<T: Element>(c: &Chunk<'_, T>, inputs: Inputs, norm: &[Norm]) -> [Vec<f32>; 3] {
        let (n, fields) = (c.x.len(), norm.len());
        let per_field = c.dims[0] / fields;
        let plane = c.dims[1] * c.dims[2];
        let mut usable = vec![true; n];
        for &i in c.escapes {
            usable[i] = false;
        }
        let k = inputs.planes();
        let mut input = vec![0f32; k * n];
        let mut target = vec![0f32; n];
        let mut mask = vec![0f32; n];
        for s in 0..per_field {
            for (f, &nf) in norm.iter().enumerate() {
                let src = (f * per_field + s) * plane;
                let dst = (s * fields + f) * plane;
                let mut planes = Vec::new();
                neurlz::slice_inputs(inputs, c.q, f, s, per_field, c.dims, nf, c.m, &mut planes);
                let idst = (s * fields + f) * k * plane;
                for (a, &b) in input[idst..idst + k * plane].iter_mut().zip(&planes) {
                    *a = b as f32 / 65536.0;
                }
                for j in 0..plane {
                    let i = src + j;
                    if usable[i] {
                        if let Some(t) = c.target(i) {
                            target[dst + j] = t;
                            mask[dst + j] = 1.0;
                        }
                    }
                }
            }
        }
        [input, target, mask]
    }

    /// Every patch the encoder computes on demand is, bit for bit, the crop of the whole
    /// training set it used to build (so training, and the chunks it writes, are unchanged):
    /// one field and three, in-slice and volume inputs, escaped and non-finite values.
    #[test]
    fn patches_are_crops_of_the_whole_set() {
        let dims = [6, 13, 17];
        let n: usize = dims.iter().product();
        let mut x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 5.0).collect();
        x[40] = f32::NAN;
        x[41] = f32::INFINITY;
        let grid = Grid {
            mid: 0.1,
            step: 0.25,
        };
        let q: Vec<i32> = x
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    (v / 0.25).round() as i32
                } else {
                    0
                }
            })
            .collect();
        let escapes = [3, 40, 41, 200, 201, 1000, n - 1];
        let shape = dims.to_vec();
        let c = Chunk {
            x: &x,
            q: &q,
            escapes: &escapes,
            shape: &shape,
            dims,
            grid,
            eb: 0.125,
            m: 1,
        };
        for (fields, inputs) in [
            (1, Inputs::Slice),
            (1, Inputs::Volume),
            (3, Inputs::Slice),
            (3, Inputs::Volume),
        ] {
            let set = ChunkSet {
                c: &c,
                inputs,
                norm: norms(&c, fields),
            };
            let [input, target, mask] = dense(&c, inputs, &set.norm);
            assert!(mask.contains(&0.0) && mask.contains(&1.0));
            let sh = set.shape();
            let whole = TrainSet {
                k: sh.k,
                o: sh.o,
                h: sh.h,
                w: sh.w,
                slices: sh.slices,
                input: &input,
                target: &target,
                mask: &mask,
            };
            for (s, y0, x0, ph, pw) in [
                (0, 0, 0, 13, 17),
                (1, 2, 3, 5, 7),
                (sh.slices - 1, 12, 16, 1, 1),
                (0, 4, 0, 9, 17),
            ] {
                assert_eq!(
                    set.patch(s, y0, x0, ph, pw),
                    whole.patch(s, y0, x0, ph, pw),
                    "{fields} fields, {inputs:?}, patch {s} ({y0}, {x0}) {ph}x{pw}"
                );
            }
        }
    }
}
