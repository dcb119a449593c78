//! Float training of the NeurLZ network ([`super::conv`]) on one chunk. Encode-only: the
//! decoder never imports this module; only the quantized weights it produces matter.
//!
//! Adam with a cosine-decayed learning rate on random patches of the chunk's slices
//! (`batch` patches per step), mean squared error between the regulated output
//! `softsign(z)` and the target residual in units of the bound.

use rayon::prelude::*;

use super::conv::{out_size, pad, quantize_channel, Arch, Kind, LayerShape, QLayer, QNet, ONE};
use super::wide::{axpy, dot};
use super::ADAM;

/// What the network learns from: `slices` samples of `k` input planes and `o` target planes.
pub struct TrainSet<'a> {
    pub k: usize,
    pub o: usize,
    pub h: usize,
    pub w: usize,
    pub slices: usize,
    /// `[slice][k][h][w]`, normalized inputs (the decoder's fixed-point inputs / 2^16).
    pub input: &'a [f32],
    /// `[slice][o][h][w]`, residual / eb, within [-1, 1].
    pub target: &'a [f32],
    /// `[slice][o][h][w]`, 1 where the point counts, 0 where it does not (escaped values).
    pub mask: &'a [f32],
}

/// The sizes of a training set: `slices` samples of `k` input planes and `o` target planes
/// of `h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetShape {
    pub k: usize,
    pub o: usize,
    pub h: usize,
    pub w: usize,
    pub slices: usize,
}

/// What training reads: patches of a training set. A [`TrainSet`] holds the whole set; the
/// encoder computes each patch from the chunk when it is drawn, so training holds a batch's
/// patches, not the chunk's inputs.
pub trait Patches: Sync {
    fn shape(&self) -> SetShape;
    /// The `ph x pw` patch at `(y0, x0)` of sample `s` (inside the sample): its `k` input
    /// planes, `o` target planes and `o` mask planes, each `[plane][y][x]`.
    fn patch(&self, s: usize, y0: usize, x0: usize, ph: usize, pw: usize) -> [Vec<f32>; 3];
}

impl Patches for TrainSet<'_> {
    fn shape(&self) -> SetShape {
        SetShape {
            k: self.k,
            o: self.o,
            h: self.h,
            w: self.w,
            slices: self.slices,
        }
    }

    fn patch(&self, s: usize, y0: usize, x0: usize, h: usize, w: usize) -> [Vec<f32>; 3] {
        let crop = |src: &[f32], ch: usize| -> Vec<f32> {
            let mut out = Vec::with_capacity(ch * h * w);
            for c in 0..ch {
                for y in 0..h {
                    let start = ((s * ch + c) * self.h + y0 + y) * self.w + x0;
                    out.extend_from_slice(&src[start..start + w]);
                }
            }
            out
        };
        [
            crop(self.input, self.k),
            crop(self.target, self.o),
            crop(self.mask, self.o),
        ]
    }
}

/// Training budget and schedule.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    /// Patch side (clamped to the slice).
    pub patch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 200,
            batch: 8,
            patch: 48,
            lr: 1e-2,
            seed: 0x5EED_4E55_7A11_0001,
        }
    }
}

/// Points this close to a patch edge that is not a slice edge do not count in the loss (the
/// network would see zero padding there that it never sees at inference).
const MARGIN: usize = 4;

/// A float network: per layer, weights `[out][in][tap]` then biases, in one vector.
#[derive(Debug, Clone)]
pub struct FNet {
    pub arch: Arch,
    pub params: Vec<f32>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Where each layer's weights and biases start in [`FNet::params`].
pub fn offsets(arch: &Arch) -> Vec<(usize, usize)> {
    let mut off = 0;
    arch.layers()
        .iter()
        .map(|l| {
            let w = off;
            off += l.weights();
            let b = off;
            off += l.cout;
            (w, b)
        })
        .collect()
}

impl FNet {
    pub fn new(arch: Arch, seed: u64) -> FNet {
        let mut rng = Rng(seed);
        let mut params = Vec::with_capacity(arch.params());
        let layers = arch.layers();
        for (n, l) in layers.iter().enumerate() {
            let fan_in = (l.cin * l.kind.taps()) as f32;
            let bound = if n + 1 == layers.len() {
                0.1 * (3.0 / fan_in).sqrt()
            } else {
                (6.0 / fan_in).sqrt()
            };
            params.extend((0..l.weights()).map(|_| rng.unit() * bound));
            params.extend(std::iter::repeat(0.0).take(l.cout));
        }
        FNet { arch, params }
    }

    /// The stored form: int8 weights per output channel with an integer scale, biases in
    /// 16-bit fixed point.
    pub fn quantize(&self) -> QNet {
        let offs = offsets(&self.arch);
        let layers = self
            .arch
            .layers()
            .iter()
            .zip(&offs)
            .map(|(shape, &(wo, bo))| {
                let per = shape.cin * shape.kind.taps();
                let mut ql = QLayer {
                    shape: *shape,
                    w: Vec::with_capacity(shape.weights()),
                    mult: Vec::new(),
                    shift: Vec::new(),
                    bias: Vec::new(),
                };
                for o in 0..shape.cout {
                    let (q, m, s) =
                        quantize_channel(&self.params[wo + o * per..wo + (o + 1) * per]);
                    ql.w.extend(q);
                    ql.mult.push(m);
                    ql.shift.push(s);
                    let b = (self.params[bo + o] as f64 * ONE as f64).round();
                    ql.bias
                        .push(b.clamp(i32::MIN as f64, i32::MAX as f64) as i32);
                }
                ql
            })
            .collect();
        QNet {
            arch: self.arch,
            layers,
        }
    }
}

/// The patch side actually used on `set`: `(ph, pw)`.
pub fn patch_size<P: Patches + ?Sized>(set: &P, cfg: &TrainConfig) -> (usize, usize) {
    let set = set.shape();
    (cfg.patch.min(set.h), cfg.patch.min(set.w))
}

/// Every step's patches, `(slice, y0, x0)`, `cfg.batch` per step: the one random sequence both
/// trainers (CPU here, GPU in `backend::cuda::train`) follow.
pub fn schedule<P: Patches + ?Sized>(set: &P, cfg: &TrainConfig) -> Vec<(usize, usize, usize)> {
    let (ph, pw) = patch_size(set, cfg);
    let set = set.shape();
    let mut rng = Rng(cfg.seed ^ 0xA5A5_A5A5);
    (0..cfg.steps * cfg.batch)
        .map(|_| {
            (
                rng.below(set.slices),
                rng.below(set.h - ph + 1),
                rng.below(set.w - pw + 1),
            )
        })
        .collect()
}

/// The learning rate of step `step`: cosine decay from `cfg.lr` to 0.
pub fn lr_at(cfg: &TrainConfig, step: usize) -> f32 {
    cfg.lr * 0.5 * (1.0 + (std::f32::consts::PI * step as f32 / cfg.steps.max(1) as f32).cos())
}

/// Trains a network of shape `arch` on `set`.
pub fn train<P: Patches + ?Sized>(arch: Arch, set: &P, cfg: &TrainConfig) -> FNet {
    let mut net = FNet::new(arch, cfg.seed);
    let np = net.params.len();
    let (mut m1, mut m2) = (vec![0f32; np], vec![0f32; np]);
    let (b1, b2, eps) = ADAM;
    let picks = schedule(set, cfg);
    let patch = patch_size(set, cfg);
    for (step, batch) in picks.chunks(cfg.batch.max(1)).enumerate() {
        let (g, total) = batch_grad(&net, set, batch, patch);
        if total <= 0.0 {
            continue;
        }
        let lr = lr_at(cfg, step);
        let t = (step + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..np {
            let gi = g[i] / total;
            m1[i] = b1 * m1[i] + (1.0 - b1) * gi;
            m2[i] = b2 * m2[i] + (1.0 - b2) * gi * gi;
            net.params[i] -= lr * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
        }
    }
    net
}

/// The gradient of the squared error summed over the patches `picks` of side `(ph, pw)`, and
/// the number of points that counted.
pub fn batch_grad<P: Patches + ?Sized>(
    net: &FNet,
    set: &P,
    picks: &[(usize, usize, usize)],
    (ph, pw): (usize, usize),
) -> (Vec<f32>, f32) {
    let offs = offsets(&net.arch);
    let grads: Vec<(Vec<f32>, f32)> = picks
        .par_iter()
        .map(|&(s, y0, x0)| patch_grad(net, &offs, set, s, y0, x0, ph, pw))
        .collect();
    let total: f32 = grads.iter().map(|g| g.1).sum();
    let mut g = vec![0f32; net.params.len()];
    for (gp, _) in &grads {
        for (a, b) in g.iter_mut().zip(gp) {
            *a += b;
        }
    }
    (g, total)
}

/// Gradient (summed, not averaged) of the squared error over one patch, and the number of
/// points that counted.
#[allow(clippy::too_many_arguments)]
fn patch_grad<P: Patches + ?Sized>(
    net: &FNet,
    offs: &[(usize, usize)],
    set: &P,
    s: usize,
    y0: usize,
    x0: usize,
    h: usize,
    w: usize,
) -> (Vec<f32>, f32) {
    let arch = net.arch;
    let layers = arch.layers();
    let p = &net.params;
    let [x, t, mut mask] = set.patch(s, y0, x0, h, w);
    let set = set.shape();
    let (top, left) = (y0 > 0, x0 > 0);
    let (bottom, right) = (y0 + h < set.h, x0 + w < set.w);
    for c in 0..set.o {
        for y in 0..h {
            for xx in 0..w {
                if (top && y < MARGIN)
                    || (bottom && y + MARGIN >= h)
                    || (left && xx < MARGIN)
                    || (right && xx + MARGIN >= w)
                {
                    mask[(c * h + y) * w + xx] = 0.0;
                }
            }
        }
    }
    let count: f32 = mask.iter().sum();
    let mut g = vec![0f32; p.len()];
    if count <= 0.0 {
        return (g, 0.0);
    }
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let lw = |n: usize| &p[offs[n].0..offs[n].0 + layers[n].weights()];
    let lb = |n: usize| &p[offs[n].1..offs[n].1 + layers[n].cout];

    // Forward.
    let a0 = relu(conv3_f(&layers[0], lw(0), lb(0), &x, h, w, 1));
    let a1 = relu(conv3_f(&layers[1], lw(1), lb(1), &a0, h, w, 2));
    let a2 = relu(conv3_f(&layers[2], lw(2), lb(2), &a1, h2, w2, 1));
    let a3 = relu(deconv2_f(&layers[3], lw(3), lb(3), &a2, h2, w2, h, w));
    let mut cat = a3.clone();
    cat.extend_from_slice(&a0);
    let a4 = relu(conv3_f(&layers[4], lw(4), lb(4), &cat, h, w, 1));
    let z = conv1_f(&layers[5], lw(5), lb(5), &a4, h * w);

    // Loss gradient through the softsign regulator.
    let dz: Vec<f32> = z
        .iter()
        .zip(&t)
        .zip(&mask)
        .map(|((&zi, &ti), &mi)| {
            let d = 1.0 + zi.abs();
            let y = zi / d;
            2.0 * (y - ti) * mi / (d * d)
        })
        .collect();

    // Backward.
    let (gw, gb) = split(&mut g, offs, &layers, 5);
    let d4 = conv1_b(&layers[5], lw(5), &a4, &dz, h * w, gw, gb);
    let d4 = relu_b(d4, &a4);
    let (gw, gb) = split(&mut g, offs, &layers, 4);
    let dcat = conv3_b(&layers[4], lw(4), &cat, &d4, h, w, 1, gw, gb);
    let n3 = layers[3].cout * h * w;
    let d3 = relu_b(dcat[..n3].to_vec(), &a3);
    let d0_skip = &dcat[n3..];
    let (gw, gb) = split(&mut g, offs, &layers, 3);
    let d2 = deconv2_b(&layers[3], lw(3), &a2, &d3, h2, w2, h, w, gw, gb);
    let d2 = relu_b(d2, &a2);
    let (gw, gb) = split(&mut g, offs, &layers, 2);
    let d1 = conv3_b(&layers[2], lw(2), &a1, &d2, h2, w2, 1, gw, gb);
    let d1 = relu_b(d1, &a1);
    let (gw, gb) = split(&mut g, offs, &layers, 1);
    let mut d0 = conv3_b(&layers[1], lw(1), &a0, &d1, h, w, 2, gw, gb);
    for (a, b) in d0.iter_mut().zip(d0_skip) {
        *a += b;
    }
    let d0 = relu_b(d0, &a0);
    let (gw, gb) = split(&mut g, offs, &layers, 0);
    conv3_b(&layers[0], lw(0), &x, &d0, h, w, 1, gw, gb);
    (g, count)
}

fn split<'a>(
    g: &'a mut [f32],
    offs: &[(usize, usize)],
    layers: &[LayerShape],
    n: usize,
) -> (&'a mut [f32], &'a mut [f32]) {
    let (wo, bo) = offs[n];
    let (a, b) = g[wo..bo + layers[n].cout].split_at_mut(bo - wo);
    (a, b)
}

fn relu(mut v: Vec<f32>) -> Vec<f32> {
    v.iter_mut().for_each(|a| *a = a.max(0.0));
    v
}

fn relu_b(mut d: Vec<f32>, post: &[f32]) -> Vec<f32> {
    for (a, &p) in d.iter_mut().zip(post) {
        if p <= 0.0 {
            *a = 0.0;
        }
    }
    d
}

/// How one 3x3 layer reads its padded input: each tap `k` of input channel `i` is one
/// contiguous "tap plane" of length `len`, whose point `j` multiplies output slot `j`.
///
/// - Stride 1: output point `(y, x)` sits at slot `y * wp + x` of a plane as wide as the padded
///   input, so tap `(ky, kx)` is the padded input shifted by `ky * wp + kx`, read in place
///   (the two slots past each row's end are dropped on output and zero in gradients).
/// - Stride 2: slot `y * wo + x`; the tap planes are gathered once per patch (9 per channel).
struct Taps {
    stride: usize,
    /// Padded input planes (stride 1) or gathered tap planes (stride 2).
    data: Vec<f32>,
    plane: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    len: usize,
}

impl Taps {
    fn new(x: &[f32], cin: usize, h: usize, w: usize, stride: usize) -> Taps {
        let (ho, wo) = (out_size(h, stride), out_size(w, stride));
        let wp = w + 2;
        let padded = pad(x, cin, h, w);
        let plane = (h + 2) * wp;
        if stride == 1 {
            let len = (h - 1) * wp + w;
            return Taps {
                stride,
                data: padded,
                plane,
                wp,
                ho,
                wo,
                len,
            };
        }
        let len = ho * wo;
        let mut data = vec![0f32; cin * 9 * len];
        for (n, dst) in data.chunks_exact_mut(len).enumerate() {
            let (i, k) = (n / 9, n % 9);
            let src = &padded[i * plane..(i + 1) * plane];
            for y in 0..ho {
                let row = (y * stride + k / 3) * wp + k % 3;
                for (xx, d) in dst[y * wo..(y + 1) * wo].iter_mut().enumerate() {
                    *d = src[row + xx * stride];
                }
            }
        }
        Taps {
            stride,
            data,
            plane,
            wp,
            ho,
            wo,
            len,
        }
    }

    /// Tap `k` of input channel `i`.
    fn tap(&self, i: usize, k: usize) -> &[f32] {
        let at = if self.stride == 1 {
            i * self.plane + (k / 3) * self.wp + k % 3
        } else {
            (i * 9 + k) * self.len
        };
        &self.data[at..at + self.len]
    }

    /// Output plane `(ho x wo)` from slots.
    fn gather_out(&self, slots: &[f32], out: &mut [f32]) {
        let step = if self.stride == 1 { self.wp } else { self.wo };
        for y in 0..self.ho {
            out[y * self.wo..(y + 1) * self.wo]
                .copy_from_slice(&slots[y * step..y * step + self.wo]);
        }
    }

    /// Slots from an output-shaped plane (zero in the extra slots).
    fn scatter_out(&self, plane: &[f32], slots: &mut [f32]) {
        let step = if self.stride == 1 { self.wp } else { self.wo };
        for y in 0..self.ho {
            slots[y * step..y * step + self.wo]
                .copy_from_slice(&plane[y * self.wo..(y + 1) * self.wo]);
        }
    }

    /// Adds a gradient with respect to tap `k` of channel `i` to the gradient of the padded
    /// input `dp` (laid out like the padded input).
    fn add_tap_grad(&self, i: usize, k: usize, g: &[f32], dp: &mut [f32]) {
        let base = i * self.plane + (k / 3) * self.wp + k % 3;
        if self.stride == 1 {
            for (d, &v) in dp[base..base + self.len].iter_mut().zip(g) {
                *d += v;
            }
            return;
        }
        for y in 0..self.ho {
            let row = base + y * self.stride * self.wp;
            for (xx, &v) in g[y * self.wo..(y + 1) * self.wo].iter().enumerate() {
                dp[row + xx * self.stride] += v;
            }
        }
    }
}

fn conv3_f(
    l: &LayerShape,
    wt: &[f32],
    b: &[f32],
    x: &[f32],
    h: usize,
    w: usize,
    s: usize,
) -> Vec<f32> {
    debug_assert!(matches!(l.kind, Kind::Conv3 { .. }));
    let taps = Taps::new(x, l.cin, h, w, s);
    let n = taps.ho * taps.wo;
    let mut out = vec![0f32; l.cout * n];
    let mut acc = vec![0f32; taps.len];
    for o in 0..l.cout {
        acc.iter_mut().for_each(|v| *v = b[o]);
        for i in 0..l.cin {
            for k in 0..9 {
                axpy(&mut acc, wt[(o * l.cin + i) * 9 + k], taps.tap(i, k));
            }
        }
        taps.gather_out(&acc, &mut out[o * n..(o + 1) * n]);
    }
    out
}

/// Backward of a 3x3 convolution: accumulates weight and bias gradients, returns the input
/// gradient.
#[allow(clippy::too_many_arguments)]
fn conv3_b(
    l: &LayerShape,
    wt: &[f32],
    x: &[f32],
    dout: &[f32],
    h: usize,
    w: usize,
    s: usize,
    gw: &mut [f32],
    gb: &mut [f32],
) -> Vec<f32> {
    let taps = Taps::new(x, l.cin, h, w, s);
    let n = taps.ho * taps.wo;
    let mut slots = vec![vec![0f32; taps.len]; l.cout];
    for (o, d) in slots.iter_mut().enumerate() {
        let plane = &dout[o * n..(o + 1) * n];
        gb[o] += plane.iter().sum::<f32>();
        taps.scatter_out(plane, d);
    }
    let (hp, wp) = (h + 2, w + 2);
    let mut dp = vec![0f32; l.cin * hp * wp];
    let mut g = vec![0f32; taps.len];
    for i in 0..l.cin {
        for k in 0..9 {
            let tap = taps.tap(i, k);
            g.iter_mut().for_each(|v| *v = 0.0);
            for (o, d) in slots.iter().enumerate() {
                let wi = (o * l.cin + i) * 9 + k;
                gw[wi] += dot(d, tap);
                axpy(&mut g, wt[wi], d);
            }
            taps.add_tap_grad(i, k, &g, &mut dp);
        }
    }
    let mut dx = vec![0f32; l.cin * h * w];
    for i in 0..l.cin {
        for y in 0..h {
            let src = (i * hp + y + 1) * wp + 1;
            dx[(i * h + y) * w..(i * h + y + 1) * w].copy_from_slice(&dp[src..src + w]);
        }
    }
    dx
}

/// The four phases of a `h x w` plane: phase `(dy, dx)` holds the points `(2y + dy, 2x + dx)`
/// as an `h2 x w2` plane (zero where that point is outside), in `out[(2 dy + dx) h2 w2 ..]`.
fn phases(x: &[f32], h: usize, w: usize, out: &mut [f32]) {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    out.iter_mut().for_each(|v| *v = 0.0);
    for y in 0..h {
        for (xx, &v) in x[y * w..(y + 1) * w].iter().enumerate() {
            out[((2 * (y % 2) + xx % 2) * h2 + y / 2) * w2 + xx / 2] = v;
        }
    }
}

/// 2x2 transposed convolution with stride 2: tap `(dy, dx)` of input point `(y, x)` lands on
/// output point `(2y + dy, 2x + dx)` alone, so each tap is one whole-plane axpy into that
/// phase of the output.
#[allow(clippy::too_many_arguments)]
fn deconv2_f(
    l: &LayerShape,
    wt: &[f32],
    b: &[f32],
    x: &[f32],
    h2: usize,
    w2: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let n2 = h2 * w2;
    let mut out = vec![0f32; l.cout * h * w];
    let mut ph = vec![0f32; 4 * n2];
    for o in 0..l.cout {
        ph.iter_mut().for_each(|v| *v = b[o]);
        for i in 0..l.cin {
            let src = &x[i * n2..(i + 1) * n2];
            for (k, dst) in ph.chunks_exact_mut(n2).enumerate() {
                axpy(dst, wt[(o * l.cin + i) * 4 + k], src);
            }
        }
        let dst = &mut out[o * h * w..(o + 1) * h * w];
        for y in 0..h {
            for (xx, d) in dst[y * w..(y + 1) * w].iter_mut().enumerate() {
                *d = ph[((2 * (y % 2) + xx % 2) * h2 + y / 2) * w2 + xx / 2];
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn deconv2_b(
    l: &LayerShape,
    wt: &[f32],
    x: &[f32],
    dout: &[f32],
    h2: usize,
    w2: usize,
    h: usize,
    w: usize,
    gw: &mut [f32],
    gb: &mut [f32],
) -> Vec<f32> {
    let n2 = h2 * w2;
    let mut dx = vec![0f32; l.cin * n2];
    let mut ph = vec![0f32; 4 * n2];
    for o in 0..l.cout {
        let d = &dout[o * h * w..(o + 1) * h * w];
        gb[o] += d.iter().sum::<f32>();
        phases(d, h, w, &mut ph);
        for i in 0..l.cin {
            let src = &x[i * n2..(i + 1) * n2];
            let dsrc = &mut dx[i * n2..(i + 1) * n2];
            for (k, dk) in ph.chunks_exact(n2).enumerate() {
                let wi = (o * l.cin + i) * 4 + k;
                gw[wi] += dot(dk, src);
                axpy(dsrc, wt[wi], dk);
            }
        }
    }
    dx
}

fn conv1_f(l: &LayerShape, wt: &[f32], b: &[f32], x: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; l.cout * n];
    for o in 0..l.cout {
        let dst = &mut out[o * n..(o + 1) * n];
        dst.iter_mut().for_each(|v| *v = b[o]);
        for i in 0..l.cin {
            let wv = wt[o * l.cin + i];
            for (a, &v) in dst.iter_mut().zip(&x[i * n..(i + 1) * n]) {
                *a += v * wv;
            }
        }
    }
    out
}

fn conv1_b(
    l: &LayerShape,
    wt: &[f32],
    x: &[f32],
    dout: &[f32],
    n: usize,
    gw: &mut [f32],
    gb: &mut [f32],
) -> Vec<f32> {
    let mut dx = vec![0f32; l.cin * n];
    for o in 0..l.cout {
        let d = &dout[o * n..(o + 1) * n];
        gb[o] += d.iter().sum::<f32>();
        for i in 0..l.cin {
            let wv = wt[o * l.cin + i];
            let src = &x[i * n..(i + 1) * n];
            let mut acc = 0f32;
            for ((&dv, &xv), dxv) in d.iter().zip(src).zip(&mut dx[i * n..(i + 1) * n]) {
                acc += dv * xv;
                *dxv += dv * wv;
            }
            gw[o * l.cin + i] += acc;
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite-difference check of the hand-written backward pass.
    #[test]
    fn gradients_match_finite_differences() {
        let arch = Arch {
            cin: 2,
            width: 2,
            cout: 2,
        };
        let (h, w) = (7, 5);
        let mut rng = Rng(3);
        let input: Vec<f32> = (0..2 * h * w).map(|_| rng.unit()).collect();
        let target: Vec<f32> = (0..2 * h * w).map(|_| rng.unit() * 0.5).collect();
        let mask = vec![1f32; 2 * h * w];
        let set = TrainSet {
            k: 2,
            o: 2,
            h,
            w,
            slices: 1,
            input: &input,
            target: &target,
            mask: &mask,
        };
        let mut net = FNet::new(arch, 11);
        // Larger last-layer weights so every path carries signal.
        for v in net.params.iter_mut() {
            *v *= 1.5;
        }
        let offs = offsets(&arch);
        let loss = |net: &FNet| -> f64 {
            let layers = arch.layers();
            let p = &net.params;
            let lw = |n: usize| &p[offs[n].0..offs[n].0 + layers[n].weights()];
            let lb = |n: usize| &p[offs[n].1..offs[n].1 + layers[n].cout];
            let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
            let a0 = relu(conv3_f(&layers[0], lw(0), lb(0), &input, h, w, 1));
            let a1 = relu(conv3_f(&layers[1], lw(1), lb(1), &a0, h, w, 2));
            let a2 = relu(conv3_f(&layers[2], lw(2), lb(2), &a1, h2, w2, 1));
            let a3 = relu(deconv2_f(&layers[3], lw(3), lb(3), &a2, h2, w2, h, w));
            let mut cat = a3;
            cat.extend_from_slice(&a0);
            let a4 = relu(conv3_f(&layers[4], lw(4), lb(4), &cat, h, w, 1));
            let z = conv1_f(&layers[5], lw(5), lb(5), &a4, h * w);
            z.iter()
                .zip(&target)
                .map(|(&zi, &ti)| {
                    let y = (zi / (1.0 + zi.abs())) as f64;
                    (y - ti as f64).powi(2)
                })
                .sum()
        };
        let (g, _) = patch_grad(&net, &offs, &set, 0, 0, 0, h, w);
        let mut checked = 0;
        for i in (0..net.params.len()).step_by(7) {
            let e = 1e-3f32;
            let orig = net.params[i];
            net.params[i] = orig + e;
            let lp = loss(&net);
            net.params[i] = orig - e;
            let lm = loss(&net);
            net.params[i] = orig;
            let fd = (lp - lm) / (2.0 * e as f64);
            assert!(
                (fd - g[i] as f64).abs() <= 2e-2 * (1.0 + fd.abs()),
                "param {i}: fd {fd} vs {}",
                g[i]
            );
            checked += 1;
        }
        assert!(checked > 10);
    }
}
