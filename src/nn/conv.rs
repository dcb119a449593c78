//! The NeurLZ enhancer network: a small skip-connected 2D CNN (U-Net-like, one down/up level),
//! its stored form (int8 weights with per-channel integer scales) and its fixed-point inference.
//!
//! Decode-side code: everything here is integer arithmetic, so a stored network gives the same
//! outputs on every machine and with any thread count. Training (floats) lives in
//! [`super::conv_train`], which only the encoder uses.
//!
//! Layers (`c` = width, `k` = input channels, `o` = output channels), zero padding:
//!
//! | # | layer | in -> out | resolution |
//! |---|---|---|---|
//! | 0 | conv 3x3, stride 1, ReLU | k -> c | full |
//! | 1 | conv 3x3, stride 2, ReLU | c -> 2c | half (`ceil(h/2) x ceil(w/2)`) |
//! | 2 | conv 3x3, stride 1, ReLU | 2c -> 2c | half |
//! | 3 | transposed conv 2x2, stride 2, ReLU (cropped to `h x w`) | 2c -> c | full |
//! | 4 | conv 3x3, stride 1, ReLU, on `[layer 3, layer 0]` (skip) | 2c -> c | full |
//! | 5 | conv 1x1 | c -> o | full |
//!
//! With `k = o = 1`, `c = 6` this is 2,983 parameters.

use crate::error::{ensure, Error, Result};
use crate::format::Reader;

/// Fractional bits of activations: an activation `a` stands for `a / 2^16`.
pub const FRAC: u32 = 16;
/// One in activation units.
pub const ONE: i64 = 1 << FRAC;
/// Activations are clamped to `+-ACT_MAX` (128.0) after every layer, which bounds every
/// accumulator well inside an `i64`.
pub const ACT_MAX: i64 = 1 << 23;
/// Most input/output channels (fields) a stored network may declare.
pub const MAX_CHANNELS: usize = 16;
/// Largest width a stored network may declare.
pub const MAX_WIDTH: usize = 16;

/// The kind of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 3x3 convolution with zero padding 1 and the given stride.
    Conv3 { stride: usize },
    /// 2x2 transposed convolution with stride 2.
    Deconv2,
    /// 1x1 convolution.
    Conv1,
}

impl Kind {
    /// Weights per (output, input) channel pair.
    pub fn taps(self) -> usize {
        match self {
            Kind::Conv3 { .. } => 9,
            Kind::Deconv2 => 4,
            Kind::Conv1 => 1,
        }
    }
}

/// Shape of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    pub kind: Kind,
    pub cin: usize,
    pub cout: usize,
    /// ReLU after the layer (all but the last).
    pub relu: bool,
}

impl LayerShape {
    pub fn weights(&self) -> usize {
        self.cin * self.cout * self.kind.taps()
    }
}

/// The architecture: input channels, width, output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub cin: usize,
    pub width: usize,
    pub cout: usize,
}

impl Arch {
    pub fn layers(&self) -> [LayerShape; 6] {
        let (k, c, o) = (self.cin, self.width, self.cout);
        let l = |kind, cin, cout, relu| LayerShape {
            kind,
            cin,
            cout,
            relu,
        };
        [
            l(Kind::Conv3 { stride: 1 }, k, c, true),
            l(Kind::Conv3 { stride: 2 }, c, 2 * c, true),
            l(Kind::Conv3 { stride: 1 }, 2 * c, 2 * c, true),
            l(Kind::Deconv2, 2 * c, c, true),
            l(Kind::Conv3 { stride: 1 }, 2 * c, c, true),
            l(Kind::Conv1, c, o, false),
        ]
    }

    /// Number of trainable parameters (weights and biases).
    pub fn params(&self) -> usize {
        self.layers().iter().map(|l| l.weights() + l.cout).sum()
    }
}

/// One stored layer: `w` in C order `[out][in][tap]`; the real weight of `w[o][..]` is
/// `w * mult[o] / 2^shift[o]`; the real bias is `bias[o] / 2^16`.
#[derive(Debug, Clone, PartialEq)]
pub struct QLayer {
    pub shape: LayerShape,
    pub w: Vec<i8>,
    pub mult: Vec<u16>,
    pub shift: Vec<u8>,
    pub bias: Vec<i32>,
}

/// Largest per-channel shift a stored layer may use.
pub const MAX_SHIFT: u8 = 62;

/// A stored network.
#[derive(Debug, Clone, PartialEq)]
pub struct QNet {
    pub arch: Arch,
    pub layers: Vec<QLayer>,
}

impl QNet {
    /// Bytes [`QNet::write`] produces (after the three shape bytes written by the caller).
    pub fn stored_len(arch: &Arch) -> usize {
        arch.layers()
            .iter()
            .map(|l| l.cout * (2 + 1 + 4) + l.weights())
            .sum()
    }

    /// Per layer: per output channel `u16 mult`, `u8 shift`, `i32 bias`; then the `i8` weights.
    pub fn write(&self, out: &mut Vec<u8>) {
        for l in &self.layers {
            for o in 0..l.shape.cout {
                out.extend_from_slice(&l.mult[o].to_le_bytes());
                out.push(l.shift[o]);
                out.extend_from_slice(&l.bias[o].to_le_bytes());
            }
            out.extend(l.w.iter().map(|&v| v as u8));
        }
    }

    pub fn read(arch: Arch, r: &mut Reader<'_>) -> Result<QNet> {
        ensure!(
            (1..=MAX_CHANNELS).contains(&arch.cin)
                && (1..=MAX_CHANNELS).contains(&arch.cout)
                && (1..=MAX_WIDTH).contains(&arch.width),
            Error::Corrupt(format!("enhancer network shape {arch:?}"))
        );
        let mut layers = Vec::with_capacity(6);
        for shape in arch.layers() {
            let mut mult = Vec::with_capacity(shape.cout);
            let mut shift = Vec::with_capacity(shape.cout);
            let mut bias = Vec::with_capacity(shape.cout);
            for _ in 0..shape.cout {
                let m = r.take(2, "enhancer weights")?;
                mult.push(u16::from_le_bytes([m[0], m[1]]));
                let s = r.u8("enhancer weights")?;
                ensure!(
                    s <= MAX_SHIFT,
                    Error::Corrupt(format!("enhancer weight shift {s} > {MAX_SHIFT}"))
                );
                shift.push(s);
                bias.push(r.u32("enhancer weights")? as i32);
            }
            let w = r
                .take(shape.weights(), "enhancer weights")?
                .iter()
                .map(|&b| b as i8)
                .collect();
            layers.push(QLayer {
                shape,
                w,
                mult,
                shift,
                bias,
            });
        }
        Ok(QNet { arch, layers })
    }

    /// Runs the network on one slice: `input` is `cin` planes of `h x w` activations; returns
    /// `cout` planes of raw outputs (before the regulator), each clamped to `+-ACT_MAX`.
    pub fn infer(&self, input: &[i32], h: usize, w: usize) -> Vec<i32> {
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let l = &self.layers;
        let a0 = conv3(&l[0], input, h, w, 1);
        let a1 = conv3(&l[1], &a0, h, w, 2);
        let a2 = conv3(&l[2], &a1, h2, w2, 1);
        let mut cat = deconv2(&l[3], &a2, h2, w2, h, w);
        cat.extend_from_slice(&a0);
        let a4 = conv3(&l[4], &cat, h, w, 1);
        conv1(&l[5], &a4, h * w)
    }
}

/// Scales an accumulator by a channel's integer scale, adds the bias, applies the activation.
#[inline]
fn finish(acc: i64, mult: u16, shift: u8, bias: i32, relu: bool) -> i32 {
    let round = (1i64 << shift) >> 1;
    let v = ((acc * mult as i64 + round) >> shift) + bias as i64;
    let v = if relu { v.max(0) } else { v };
    v.clamp(-ACT_MAX, ACT_MAX) as i32
}

/// Copies `c` planes of `h x w` into planes of `(h+2) x (w+2)` with a zero border.
fn pad<T: Copy + Default>(x: &[T], c: usize, h: usize, w: usize) -> Vec<T> {
    let (hp, wp) = (h + 2, w + 2);
    let mut p = vec![T::default(); c * hp * wp];
    for ch in 0..c {
        for y in 0..h {
            let src = &x[(ch * h + y) * w..(ch * h + y + 1) * w];
            let dst = (ch * hp + y + 1) * wp + 1;
            p[dst..dst + w].copy_from_slice(src);
        }
    }
    p
}

/// Output size of a 3x3 convolution with padding 1.
pub fn out_size(n: usize, stride: usize) -> usize {
    n.div_ceil(stride)
}

fn conv3(l: &QLayer, x: &[i32], h: usize, w: usize, stride: usize) -> Vec<i32> {
    let (cin, cout) = (l.shape.cin, l.shape.cout);
    let (ho, wo) = (out_size(h, stride), out_size(w, stride));
    let wp = w + 2;
    let p = pad(x, cin, h, w);
    let plane = (h + 2) * wp;
    let mut out = vec![0i32; cout * ho * wo];
    let mut acc = vec![0i64; ho * wo];
    for o in 0..cout {
        acc.iter_mut().for_each(|a| *a = 0);
        for i in 0..cin {
            let src = &p[i * plane..(i + 1) * plane];
            for k in 0..9 {
                let wt = l.w[(o * cin + i) * 9 + k] as i64;
                if wt == 0 {
                    continue;
                }
                let (ky, kx) = (k / 3, k % 3);
                for y in 0..ho {
                    let row = &src[(y * stride + ky) * wp + kx..];
                    let dst = &mut acc[y * wo..(y + 1) * wo];
                    if stride == 1 {
                        for (a, &v) in dst.iter_mut().zip(&row[..wo]) {
                            *a += v as i64 * wt;
                        }
                    } else {
                        for (x, a) in dst.iter_mut().enumerate() {
                            *a += row[x * stride] as i64 * wt;
                        }
                    }
                }
            }
        }
        for (d, &a) in out[o * ho * wo..(o + 1) * ho * wo].iter_mut().zip(&acc) {
            *d = finish(a, l.mult[o], l.shift[o], l.bias[o], l.shape.relu);
        }
    }
    out
}

fn deconv2(l: &QLayer, x: &[i32], h2: usize, w2: usize, h: usize, w: usize) -> Vec<i32> {
    let (cin, cout) = (l.shape.cin, l.shape.cout);
    let mut out = vec![0i32; cout * h * w];
    let mut acc = vec![0i64; h * w];
    for o in 0..cout {
        acc.iter_mut().for_each(|a| *a = 0);
        for i in 0..cin {
            let src = &x[i * h2 * w2..(i + 1) * h2 * w2];
            for k in 0..4 {
                let wt = l.w[(o * cin + i) * 4 + k] as i64;
                let (dy, dx) = (k / 2, k % 2);
                for y in 0..h2 {
                    let oy = 2 * y + dy;
                    if oy >= h {
                        continue;
                    }
                    for xx in 0..w2 {
                        let ox = 2 * xx + dx;
                        if ox < w {
                            acc[oy * w + ox] += src[y * w2 + xx] as i64 * wt;
                        }
                    }
                }
            }
        }
        for (d, &a) in out[o * h * w..(o + 1) * h * w].iter_mut().zip(&acc) {
            *d = finish(a, l.mult[o], l.shift[o], l.bias[o], l.shape.relu);
        }
    }
    out
}

fn conv1(l: &QLayer, x: &[i32], n: usize) -> Vec<i32> {
    let (cin, cout) = (l.shape.cin, l.shape.cout);
    let mut out = vec![0i32; cout * n];
    let mut acc = vec![0i64; n];
    for o in 0..cout {
        acc.iter_mut().for_each(|a| *a = 0);
        for i in 0..cin {
            let wt = l.w[o * cin + i] as i64;
            for (a, &v) in acc.iter_mut().zip(&x[i * n..(i + 1) * n]) {
                *a += v as i64 * wt;
            }
        }
        for (d, &a) in out[o * n..(o + 1) * n].iter_mut().zip(&acc) {
            *d = finish(a, l.mult[o], l.shift[o], l.bias[o], l.shape.relu);
        }
    }
    out
}

/// The output regulator in fixed point: `softsign(z) = z / (1 + |z|)` of an activation, in
/// units of `2^-16`, strictly inside `(-2^16, 2^16)`. (A sigmoid-shaped curve, `2 sigma - 1`
/// in shape, chosen because it is exact in integer arithmetic.)
#[inline]
pub fn softsign(z: i32) -> i32 {
    let z = z as i64;
    ((z * ONE) / (ONE + z.abs())) as i32
}

/// Quantizes one float weight tensor row (one output channel) to `i8` with an integer scale:
/// returns `(weights, mult, shift)` with `real ~= w * mult / 2^shift`.
pub fn quantize_channel(w: &[f32]) -> (Vec<i8>, u16, u8) {
    let maxabs = w.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    if !(maxabs > 1e-30) {
        return (vec![0; w.len()], 0, 0);
    }
    let scale = maxabs / 127.0;
    // mult in [2^14, 2^15): scale = mult / 2^shift.
    let mut shift: i32 = 14 - scale.log2().floor() as i32;
    shift = shift.clamp(0, MAX_SHIFT as i32);
    let mult = (scale * (2f64).powi(shift)).round().clamp(1.0, 65535.0);
    let real_scale = mult / (2f64).powi(shift);
    let q = w
        .iter()
        .map(|&v| (v as f64 / real_scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, mult as u16, shift as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_sized() {
        let a = Arch {
            cin: 1,
            width: 6,
            cout: 1,
        };
        assert_eq!(a.params(), 2983);
    }

    #[test]
    fn softsign_is_bounded_and_odd() {
        for z in [-ACT_MAX as i32, -70000, -1, 0, 1, 65536, ACT_MAX as i32] {
            let s = softsign(z);
            assert!(s.abs() < 1 << 16);
            assert_eq!(softsign(-z), -s);
        }
        assert_eq!(softsign(65536), 32768);
    }

    #[test]
    fn quantized_channel_is_close() {
        let w = [0.3f32, -0.02, 0.0011, -0.29];
        let (q, m, s) = quantize_channel(&w);
        let sc = m as f64 / (2f64).powi(s as i32);
        for (a, b) in w.iter().zip(&q) {
            assert!((*a as f64 - *b as f64 * sc).abs() <= sc / 2.0 + 1e-9);
        }
    }
}
