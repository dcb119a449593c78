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

use crate::bytes::Reader;
use crate::error::{ensure, Error, Result};

/// Fractional bits of activations: an activation `a` stands for `a / 2^16`.
pub const FRAC: u32 = 16;
/// One in activation units.
pub const ONE: i64 = 1 << FRAC;
/// Activations are clamped to `+-ACT_MAX` (128.0) after every layer, which bounds every
/// accumulator well inside an `i64`.
pub const ACT_MAX: i64 = 1 << 23;
/// Most output channels (fields) a stored network may declare.
pub const MAX_CHANNELS: usize = 16;
/// Most input channels a stored network may declare: up to four input planes for each of
/// [`MAX_CHANNELS`] fields.
pub const MAX_INPUTS: usize = 4 * MAX_CHANNELS;
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
            (1..=MAX_INPUTS).contains(&arch.cin)
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
    /// `cout` planes of raw outputs (before the regulator), each clamped to `+-ACT_MAX`. The
    /// whole slice as one tile ([`super::tile`]; decoders run it tile by tile).
    pub fn infer(&self, input: &[i32], h: usize, w: usize) -> Vec<i32> {
        use super::tile::{self, Act, Span, Window};
        let (wy, wx) = (
            Window::of(Span::new(0, h), h),
            Window::of(Span::new(0, w), w),
        );
        let input = Act {
            data: pad(input, self.arch.cin, h, w),
            ch: self.arch.cin,
            y: wy.input,
            x: wx.input,
        };
        tile::infer(self, input, (wy, wx), (h, w))
    }
}

impl QLayer {
    /// Output channel `o`'s activation from its accumulator (an exact integer in `f64`).
    #[inline]
    pub(super) fn out(&self, acc: f64, o: usize) -> i32 {
        finish(
            exact(acc),
            self.mult[o],
            self.shift[o],
            self.bias[o],
            self.shape.relu,
        )
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

/// Output size of a 3x3 convolution with padding 1.
pub fn out_size(n: usize, stride: usize) -> usize {
    n.div_ceil(stride)
}

/// Every accumulator in this module is a sum of at most `9 x 64` products of an activation
/// (`|a| <= 2^23`) and an `i8` weight (64 = [`MAX_INPUTS`], more than twice [`MAX_WIDTH`]),
/// so below `2^40` in magnitude: `f64` holds each product
/// and each partial sum exactly, in any order. The convolutions therefore accumulate in `f64`
/// (which vectorizes on every x86_64 and aarch64 CPU, unlike 64-bit integer multiplies) and
/// give exactly the integers an `i64` loop gives; `tests::matches_integer_reference` checks.
const EXACT: f64 = (1u64 << 53) as f64;

/// The accumulator as the integer it holds exactly.
#[inline]
fn exact(a: f64) -> i64 {
    debug_assert!(a.abs() < EXACT && a.fract() == 0.0);
    a as i64
}

/// Copies `c` planes of `h x w` into planes of `(h+2) x (w+2)` with a zero border (the
/// integer inference here, the float training in `conv_train`).
pub(super) fn pad<T: Copy + Default>(x: &[T], c: usize, h: usize, w: usize) -> Vec<T> {
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

    /// The network by the format's definition, one output point at a time, in `i64`.
    fn reference(net: &QNet, input: &[i32], h: usize, w: usize) -> Vec<i32> {
        let layer = |l: &QLayer, x: &[i32], h: usize, w: usize| -> (Vec<i32>, usize, usize) {
            let (cin, cout) = (l.shape.cin, l.shape.cout);
            let (ho, wo, taps) = match l.shape.kind {
                Kind::Conv3 { stride } => (out_size(h, stride), out_size(w, stride), 9),
                Kind::Deconv2 => (2 * h, 2 * w, 4),
                Kind::Conv1 => (h, w, 1),
            };
            let mut out = Vec::with_capacity(cout * ho * wo);
            for o in 0..cout {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = 0i64;
                        for i in 0..cin {
                            let at = |yy: i64, xi: i64| -> i64 {
                                if yy < 0 || xi < 0 || yy >= h as i64 || xi >= w as i64 {
                                    0
                                } else {
                                    x[(i * h + yy as usize) * w + xi as usize] as i64
                                }
                            };
                            let wt = |k: usize| l.w[(o * cin + i) * taps + k] as i64;
                            acc += match l.shape.kind {
                                Kind::Conv3 { stride } => (0..9)
                                    .map(|k| {
                                        let yy = (y * stride + k / 3) as i64 - 1;
                                        let xi = (xx * stride + k % 3) as i64 - 1;
                                        wt(k) * at(yy, xi)
                                    })
                                    .sum::<i64>(),
                                Kind::Deconv2 => {
                                    wt(2 * (y % 2) + xx % 2) * at((y / 2) as i64, (xx / 2) as i64)
                                }
                                Kind::Conv1 => wt(0) * at(y as i64, xx as i64),
                            };
                        }
                        out.push(finish(acc, l.mult[o], l.shift[o], l.bias[o], l.shape.relu));
                    }
                }
            }
            (out, ho, wo)
        };
        let l = &net.layers;
        let (a0, _, _) = layer(&l[0], input, h, w);
        let (a1, h2, w2) = layer(&l[1], &a0, h, w);
        let (a2, _, _) = layer(&l[2], &a1, h2, w2);
        let (up, _, _) = layer(&l[3], &a2, h2, w2);
        // The transposed convolution's output is cropped to the slice.
        let c = l[3].shape.cout;
        let mut cat = Vec::with_capacity(2 * c * h * w);
        for ch in 0..c {
            for y in 0..h {
                let row = (ch * 2 * h2 + y) * 2 * w2;
                cat.extend_from_slice(&up[row..row + w]);
            }
        }
        cat.extend_from_slice(&a0);
        let (a4, _, _) = layer(&l[4], &cat, h, w);
        layer(&l[5], &a4, h, w).0
    }

    /// A network with random weights, many at the extremes.
    fn random_net(arch: Arch, next: &mut impl FnMut() -> u64) -> QNet {
        let layers = arch
            .layers()
            .iter()
            .map(|&shape| QLayer {
                shape,
                w: (0..shape.weights())
                    .map(|_| match next() % 4 {
                        0 => 127,
                        1 => -127,
                        _ => (next() % 255) as i8 as i32 as i8,
                    })
                    .collect(),
                mult: (0..shape.cout)
                    .map(|_| 1 + (next() % 65535) as u16)
                    .collect(),
                shift: (0..shape.cout).map(|_| 10 + (next() % 20) as u8).collect(),
                bias: (0..shape.cout)
                    .map(|_| (next() % (1 << 24)) as i32 - (1 << 23))
                    .collect(),
            })
            .collect();
        QNet { arch, layers }
    }

    /// Every tile of every tiling gives exactly the whole slice's outputs at its points
    /// (`nn::tile`): tiles of one row or column, odd and even sides and offsets, tiles at
    /// the edges and inside, against the point-by-point reference.
    #[test]
    fn tiles_match_the_whole_slice() {
        use super::super::tile::{self, Act, Span, Window};
        let mut seed = 0x0dd_7113_5eed_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut tiles = 0;
        for (cin, width, cout, h, w) in [
            (2, 6, 1, 23, 19),
            (4, 4, 2, 16, 17),
            (2, 6, 1, 1, 29),
            (8, 3, 2, 30, 1),
            (2, 6, 1, 2, 2),
        ] {
            let net = random_net(Arch { cin, width, cout }, &mut next);
            let input: Vec<i32> = (0..cin * h * w)
                .map(|_| (next() % (2 * ACT_MAX as u64 + 1)) as i32 - ACT_MAX as i32)
                .collect();
            let whole = reference(&net, &input, h, w);
            for (th, tw) in [
                (1, 1),
                (1, 5),
                (2, 3),
                (3, 2),
                (4, 7),
                (5, 5),
                (7, 4),
                (64, 64),
            ] {
                for y0 in (0..h).step_by(th) {
                    for x0 in (0..w).step_by(tw) {
                        let (y1, x1) = ((y0 + th).min(h), (x0 + tw).min(w));
                        let wy = Window::of(Span::new(y0, y1), h);
                        let wx = Window::of(Span::new(x0, x1), w);
                        let (iy, ix) = (wy.input, wx.input);
                        let mut data = Vec::with_capacity(cin * iy.len() * ix.len());
                        for c in 0..cin {
                            for y in iy.lo..iy.hi {
                                for x in ix.lo..ix.hi {
                                    let inside =
                                        y >= 0 && x >= 0 && y < h as isize && x < w as isize;
                                    data.push(if inside {
                                        input[(c * h + y as usize) * w + x as usize]
                                    } else {
                                        0
                                    });
                                }
                            }
                        }
                        let act = Act {
                            data,
                            ch: cin,
                            y: iy,
                            x: ix,
                        };
                        let got = tile::infer(&net, act, (wy, wx), (h, w));
                        let n = (y1 - y0) * (x1 - x0);
                        for o in 0..cout {
                            for y in y0..y1 {
                                for x in x0..x1 {
                                    let at = (o * (y1 - y0) + y - y0) * (x1 - x0) + x - x0;
                                    assert_eq!(
                                        got[at],
                                        whole[(o * h + y) * w + x],
                                        "{h}x{w} tile {th}x{tw} at ({y0}, {x0}), point ({y}, {x})"
                                    );
                                }
                            }
                        }
                        assert_eq!(got.len(), cout * n);
                        tiles += 1;
                    }
                }
            }
        }
        assert!(tiles > 300, "{tiles} tiles");
    }

    /// The `f64`-accumulating layers give exactly the integers of the `i64` definition, with
    /// weights and activations at their extremes, odd and even sizes, and the widest layers.
    #[test]
    fn matches_integer_reference() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (cin, width, cout, h, w) in [
            (2, 6, 1, 9, 7),
            (2, 4, 1, 8, 8),
            (8, 16, 4, 5, 11),
            (32, 16, 16, 3, 4),
            (64, 16, 16, 5, 3),
            (2, 6, 1, 1, 1),
            (2, 6, 1, 1, 6),
        ] {
            let net = random_net(Arch { cin, width, cout }, &mut next);
            let input: Vec<i32> = (0..cin * h * w)
                .map(|_| match next() % 3 {
                    0 => ACT_MAX as i32,
                    1 => -(ACT_MAX as i32),
                    _ => (next() % (2 * ACT_MAX as u64 + 1)) as i32 - ACT_MAX as i32,
                })
                .collect();
            assert_eq!(
                net.infer(&input, h, w),
                reference(&net, &input, h, w),
                "{cin} {width} {cout} {h}x{w}"
            );
        }
    }

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
