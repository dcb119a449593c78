//! The NeurLZ network ([`super::conv`]) over one tile of a slice: the rows and columns of
//! each layer that the tile's outputs depend on (its receptive field, padding included), and
//! the layers computed over those windows only. A tile's outputs are exactly those of the
//! whole slice at the same points: every layer reads the values the whole-slice network
//! reads (real neighbours across the tile's edges, zero padding only at the slice's edges),
//! and every accumulator is the same exact integer (`super::conv`, "EXACT"). So a decoder
//! holds the activations of one tile per thread, not of one slice.
//!
//! Along each dimension of `n` points (`n2 = ceil(n / 2)` at half resolution), for the
//! outputs `t`: layer 4 reads `[layer 3, layer 0]` over `t` widened by one (the padding
//! where that passes the edge); layer 3 (the 2x2 transposed convolution) reads layer 2 at
//! half the real points of that; layer 2 reads layer 1 over those widened by one; layer 1
//! (stride 2) reads layer 0 over `[2 lo - 1, 2 hi)` of layer 1's real points; layer 0 reads
//! the inputs over its real points widened by one. [`Window::of`] computes these spans.

use super::conv::{Kind, QLayer, QNet};
use super::wide::taps9;

/// A half-open range of rows (or columns) of a plane, in the plane's coordinates; it may
/// reach past either end, where the plane's zero padding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: isize,
    pub hi: isize,
}

impl Span {
    /// `lo..hi` of a plane's points.
    pub fn new(lo: usize, hi: usize) -> Span {
        Span {
            lo: lo as isize,
            hi: hi as isize,
        }
    }

    pub fn len(self) -> usize {
        (self.hi - self.lo).max(0) as usize
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The part inside a plane of `n` points (empty, at the nearer end, when none is).
    pub fn inside(self, n: usize) -> Span {
        let lo = self.lo.clamp(0, n as isize);
        Span {
            lo,
            hi: self.hi.clamp(lo, n as isize),
        }
    }

    /// Widened by `k` on both sides.
    fn widen(self, k: isize) -> Span {
        Span {
            lo: self.lo - k,
            hi: self.hi + k,
        }
    }

    fn hull(self, o: Span) -> Span {
        Span {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    /// Where point `p` of the plane sits in this span (the caller knows it does).
    #[inline]
    fn at(self, p: isize) -> usize {
        debug_assert!(p >= self.lo && p < self.hi, "{p} outside {self:?}");
        (p - self.lo) as usize
    }
}

/// The windows of one dimension: what each layer of a tile computes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The tile's outputs (layers 4 and 5).
    pub out: Span,
    /// Layers 3 and 0 as layer 4 reads them (`out` widened by one).
    pub cat: Span,
    /// Layer 2 (half resolution), as layer 3 reads it: real points only.
    pub a2: Span,
    /// Layer 1 (half resolution), as layer 2 reads it.
    pub a1: Span,
    /// Layer 0, as layers 1 and 4 read it.
    pub a0: Span,
    /// The network's inputs, as layer 0 reads them.
    pub input: Span,
}

impl Window {
    /// The windows for the outputs `out` (inside `0..n`, not empty) of a plane of `n`.
    pub fn of(out: Span, n: usize) -> Window {
        debug_assert!(!out.is_empty() && out.lo >= 0 && out.hi <= n as isize);
        let n2 = n.div_ceil(2);
        let cat = out.widen(1);
        let c = cat.inside(n);
        let a2 = Span {
            lo: c.lo / 2,
            hi: (c.hi - 1) / 2 + 1,
        };
        let a1 = a2.widen(1);
        let r1 = a1.inside(n2);
        let a0 = cat.hull(Span {
            lo: 2 * r1.lo - 1,
            hi: 2 * r1.hi,
        });
        let input = a0.inside(n).widen(1);
        Window {
            out,
            cat,
            a2,
            a1,
            a0,
            input,
        }
    }
}

/// `ch` planes of a layer held over the window `y x x` of its `h x w` plane; zero where the
/// window is outside the plane.
pub struct Act {
    pub data: Vec<i32>,
    pub ch: usize,
    pub y: Span,
    pub x: Span,
}

impl Act {
    fn plane(&self, c: usize) -> &[i32] {
        let n = self.y.len() * self.x.len();
        &self.data[c * n..(c + 1) * n]
    }
}

/// The network's outputs (`cout` planes, before the regulator) over the tile
/// `wy.out x wx.out` of a `h x w` slice; `input` holds the `cin` input planes over
/// `wy.input x wx.input` (zero outside the slice).
pub fn infer(
    net: &QNet,
    input: Act,
    (wy, wx): (Window, Window),
    (h, w): (usize, usize),
) -> Vec<i32> {
    debug_assert!(input.y == wy.input && input.x == wx.input);
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let l = &net.layers;
    let a0 = conv3(&l[0], &[&input], 1, (wy.a0, wx.a0), (h, w));
    drop(input);
    let a1 = conv3(&l[1], &[&a0], 2, (wy.a1, wx.a1), (h2, w2));
    let a2 = conv3(&l[2], &[&a1], 1, (wy.a2, wx.a2), (h2, w2));
    drop(a1);
    let a3 = deconv2(&l[3], &a2, (wy.cat, wx.cat), (h, w));
    drop(a2);
    let a4 = conv3(&l[4], &[&a3, &a0], 1, (wy.out, wx.out), (h, w));
    drop((a3, a0));
    conv1(&l[5], &a4)
}

/// A 3x3 convolution over the window `oy x ox` of its `ho x wo` output plane, reading the
/// input channels of `srcs` in order (layer 4 reads two); only the points inside the output
/// plane are computed, the rest of the window is the zero padding.
fn conv3(
    l: &QLayer,
    srcs: &[&Act],
    stride: usize,
    (oy, ox): (Span, Span),
    (ho, wo): (usize, usize),
) -> Act {
    debug_assert!(matches!(l.shape.kind, Kind::Conv3 { .. }));
    let cout = l.shape.cout;
    let (ry, rx) = (oy.inside(ho), ox.inside(wo));
    let wn = oy.len() * ox.len();
    let mut out = vec![0i32; cout * wn];
    let (rh, rw) = (ry.len(), rx.len());
    if rh > 0 && rw > 0 {
        let s = stride as isize;
        let cin: usize = srcs.iter().map(|a| a.ch).sum();
        debug_assert_eq!(cin, l.shape.cin);
        // One output channel at a time: one window of accumulators.
        let mut acc = vec![0f64; rh * rw];
        let mut cols = vec![0i32; if stride == 1 { 0 } else { 9 * rw }];
        for o in 0..cout {
            acc.iter_mut().for_each(|a| *a = 0.0);
            let channels = srcs.iter().flat_map(|a| (0..a.ch).map(move |c| (*a, c)));
            for (i, (src, c)) in channels.enumerate() {
                let wk: [f64; 9] = std::array::from_fn(|k| l.w[(o * cin + i) * 9 + k] as f64);
                if wk.iter().all(|&v| v == 0.0) {
                    continue;
                }
                let plane = src.plane(c);
                let sw = src.x.len();
                for (yy, y) in (ry.lo..ry.hi).enumerate() {
                    // Tap (ky, kx) of output (y, x) reads input (s y - 1 + ky, s x - 1 + kx).
                    let start = |k: usize| {
                        let row = src.y.at(s * y - 1 + (k / 3) as isize);
                        row * sw + src.x.at(s * rx.lo - 1 + (k % 3) as isize)
                    };
                    let taps: [&[i32]; 9] = if stride == 1 {
                        std::array::from_fn(|k| &plane[start(k)..start(k) + rw])
                    } else {
                        // Stride 2 reads every other input column; gathering them first
                        // keeps the inner loop contiguous.
                        for (k, col) in cols.chunks_exact_mut(rw).enumerate() {
                            let row = &plane[start(k)..];
                            for (xx, v) in col.iter_mut().enumerate() {
                                *v = row[stride * xx];
                            }
                        }
                        std::array::from_fn(|k| &cols[k * rw..(k + 1) * rw])
                    };
                    taps9(&mut acc[yy * rw..(yy + 1) * rw], &wk, &taps);
                }
            }
            store(
                l,
                o,
                &acc,
                &mut out[o * wn..(o + 1) * wn],
                (oy, ox),
                (ry, rx),
            );
        }
    }
    Act {
        data: out,
        ch: cout,
        y: oy,
        x: ox,
    }
}

/// The 2x2 transposed convolution with stride 2 over the window `oy x ox` of its `h x w`
/// output plane: output `(y, x)` is tap `(y % 2, x % 2)` of input `(y / 2, x / 2)`.
fn deconv2(l: &QLayer, src: &Act, (oy, ox): (Span, Span), (h, w): (usize, usize)) -> Act {
    let (cin, cout) = (l.shape.cin, l.shape.cout);
    let (ry, rx) = (oy.inside(h), ox.inside(w));
    let wn = oy.len() * ox.len();
    let mut out = vec![0i32; cout * wn];
    let (rh, rw) = (ry.len(), rx.len());
    let mut acc = vec![0f64; rh * rw];
    let sw = src.x.len();
    for o in 0..cout {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for i in 0..cin {
            let plane = src.plane(i);
            let wk: [f64; 4] = std::array::from_fn(|k| l.w[(o * cin + i) * 4 + k] as f64);
            for (yy, y) in (ry.lo..ry.hi).enumerate() {
                let row = &plane[src.y.at(y / 2) * sw..];
                let (w0, w1) = (wk[2 * (y % 2) as usize], wk[2 * (y % 2) as usize + 1]);
                let dst = &mut acc[yy * rw..(yy + 1) * rw];
                for (d, x) in dst.iter_mut().zip(rx.lo..rx.hi) {
                    let v = row[src.x.at(x / 2)] as f64;
                    *d += v * if x % 2 == 0 { w0 } else { w1 };
                }
            }
        }
        store(
            l,
            o,
            &acc,
            &mut out[o * wn..(o + 1) * wn],
            (oy, ox),
            (ry, rx),
        );
    }
    Act {
        data: out,
        ch: cout,
        y: oy,
        x: ox,
    }
}

/// Output channel `o`'s accumulators `acc` (the points of `ry x rx` inside the plane, row by
/// row), rescaled by the layer into `dst`, the channel's plane over the window `oy x ox`.
fn store(
    l: &QLayer,
    o: usize,
    acc: &[f64],
    dst: &mut [i32],
    (oy, ox): (Span, Span),
    (ry, rx): (Span, Span),
) {
    let rw = rx.len();
    for (yy, y) in (ry.lo..ry.hi).enumerate() {
        let row = oy.at(y) * ox.len() + ox.at(rx.lo);
        for (d, &a) in dst[row..row + rw].iter_mut().zip(&acc[yy * rw..]) {
            *d = l.out(a, o);
        }
    }
}

/// The 1x1 convolution, over the window of its input (the tile, all inside the slice).
fn conv1(l: &QLayer, x: &Act) -> Vec<i32> {
    let (cin, cout) = (l.shape.cin, l.shape.cout);
    let n = x.y.len() * x.x.len();
    let mut out = vec![0i32; cout * n];
    let mut acc = vec![0f64; n];
    for o in 0..cout {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for i in 0..cin {
            let wt = l.w[o * cin + i] as f64;
            for (a, &v) in acc.iter_mut().zip(x.plane(i)) {
                *a += v as f64 * wt;
            }
        }
        for (d, &a) in out[o * n..(o + 1) * n].iter_mut().zip(&acc) {
            *d = l.out(a, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_inside_a_plane() {
        let s = |lo, hi| Span { lo, hi };
        assert_eq!(s(-2, 5).inside(4), s(0, 4));
        assert_eq!(s(1, 3).inside(4), s(1, 3));
        assert_eq!(s(6, 9).inside(4), s(4, 4));
        assert_eq!(s(-5, -1).inside(4), s(0, 0));
        assert!(s(6, 9).inside(4).is_empty());
        // The windows of a tile: layer 0 covers what layers 1 and 4 read, the inputs what
        // layer 0 reads, at the plane's edges and inside it.
        for n in [1, 2, 3, 7, 8, 300] {
            for lo in 0..n {
                for hi in lo + 1..=n.min(lo + 9) {
                    let w = Window::of(Span::new(lo, hi), n);
                    assert!(w.a0.lo <= w.cat.lo && w.a0.hi >= w.cat.hi);
                    let r1 = w.a1.inside(n.div_ceil(2));
                    assert!(w.a0.lo < 2 * r1.lo && w.a0.hi >= 2 * r1.hi);
                    let r0 = w.a0.inside(n);
                    assert!(w.input.lo == r0.lo - 1 && w.input.hi == r0.hi + 1);
                    assert!(w.a0.len() <= hi - lo + 12, "{n} {lo}..{hi}: {w:?}");
                }
            }
        }
    }
}
