//! NeurLZ's inference over a chunk, in integer / fixed-point arithmetic: the network's input
//! planes from the reconstructed grid indices, their normalization, and the regulated
//! correction of every point (`crate::enhance::neurlz` describes the model and applies it;
//! the GPU backend computes the same corrections, bit for bit).

use rayon::prelude::*;

use super::conv::{softsign, QNet, ACT_MAX, ONE};
use super::tile::{self, Act, Span, Window};

/// Which input planes the network sees per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// Normalized index and in-slice detail (section kind 1).
    Slice,
    /// Those two and the differences to the neighbouring slices (section kind 2).
    Volume,
}

impl Inputs {
    /// Input planes per field.
    pub fn planes(self) -> usize {
        match self {
            Inputs::Slice => 2,
            Inputs::Volume => 4,
        }
    }
}

/// Per-field input normalization: input = `(q - center) · 2^16 / half`, clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    pub center: i32,
    pub half: u32,
}

/// The network's input for one grid index.
#[inline]
pub fn input(q: i32, n: Norm) -> i32 {
    let v = (q as i64 - n.center as i64) * ONE / n.half as i64;
    v.clamp(-ACT_MAX, ACT_MAX) as i32
}

/// Appends the two input planes of one `h x w` slice of grid indices: the normalized indices,
/// then the detail `(4 q - q_n - q_s - q_w - q_e) · 2^16 / (2 m)` (a missing neighbour at the
/// slice edge counts as `q` itself), clamped to `+-ACT_MAX`.
pub fn input_planes(q: &[i32], h: usize, w: usize, norm: Norm, m: i64, out: &mut Vec<i32>) {
    slice_inputs(Inputs::Slice, q, 0, 0, 1, [1, h, w], norm, m, out);
}

/// Appends the input planes of slice `s` of field `f` (of `per_field` slices) of the 3D view
/// `dims`: [`input_planes`], then for [`Inputs::Volume`] the differences to the previous and
/// the next slice of the field, `clamp(trunc((q_t - q) · 2^16 / (2m)), ±2^23)`, zero where
/// that slice is outside the field.
#[allow(clippy::too_many_arguments)]
pub fn slice_inputs(
    inputs: Inputs,
    q: &[i32],
    f: usize,
    s: usize,
    per_field: usize,
    dims: [usize; 3],
    norm: Norm,
    m: i64,
    out: &mut Vec<i32>,
) {
    let at = Site {
        inputs,
        q,
        f,
        s,
        per_field,
        dims,
        norm,
        m,
    };
    at.window(Span::new(0, dims[1]), Span::new(0, dims[2]), out);
}

/// One slice of one field, as the network's inputs see it.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub inputs: Inputs,
    /// The chunk's grid indices (3D view `dims`).
    pub q: &'a [i32],
    /// The field, the slice in it, and the field's slices.
    pub f: usize,
    pub s: usize,
    pub per_field: usize,
    pub dims: [usize; 3],
    pub norm: Norm,
    pub m: i64,
}

impl Site<'_> {
    /// Appends the input planes ([`slice_inputs`]) over the window `wy x wx` of the slice,
    /// zero where the window is outside it: what a tile of the network ([`tile`]) or a
    /// training patch reads.
    pub fn window(&self, wy: Span, wx: Span, out: &mut Vec<i32>) {
        let [_, h, w] = self.dims;
        let plane = h * w;
        let slice = |t: usize| {
            let at = (self.f * self.per_field + t) * plane;
            &self.q[at..at + plane]
        };
        let cur = slice(self.s);
        let (m, norm) = (self.m, self.norm);
        let detail = |y: usize, x: usize| {
            let c = cur[y * w + x] as i64;
            let at = |yy: usize, xx: usize| cur[yy * w + xx] as i64;
            let n = if y > 0 { at(y - 1, x) } else { c };
            let s = if y + 1 < h { at(y + 1, x) } else { c };
            let wv = if x > 0 { at(y, x - 1) } else { c };
            let e = if x + 1 < w { at(y, x + 1) } else { c };
            let d = (4 * c - n - s - wv - e) * ONE / (2 * m);
            d.clamp(-ACT_MAX, ACT_MAX) as i32
        };
        let beside = |t: Option<usize>, y: usize, x: usize| match t {
            Some(t) => {
                let (a, c) = (slice(t)[y * w + x] as i64, cur[y * w + x] as i64);
                ((a - c) * ONE / (2 * m)).clamp(-ACT_MAX, ACT_MAX) as i32
            }
            None => 0,
        };
        let prev = self.s.checked_sub(1);
        let next = Some(self.s + 1).filter(|&t| t < self.per_field);
        let (ry, rx) = (wy.inside(h), wx.inside(w));
        out.reserve(self.inputs.planes() * wy.len() * wx.len());
        for p in 0..self.inputs.planes() {
            for y in wy.lo..wy.hi {
                if y < ry.lo || y >= ry.hi {
                    out.resize(out.len() + wx.len(), 0);
                    continue;
                }
                let y = y as usize;
                out.resize(out.len() + (rx.lo - wx.lo) as usize, 0);
                let row = rx.lo as usize..rx.hi as usize;
                match p {
                    0 => out.extend(cur[y * w..][row].iter().map(|&v| input(v, norm))),
                    1 => out.extend(row.map(|x| detail(y, x))),
                    2 => out.extend(row.map(|x| beside(prev, y, x))),
                    _ => out.extend(row.map(|x| beside(next, y, x))),
                }
                out.resize(out.len() + (wx.hi - rx.hi) as usize, 0);
            }
        }
    }
}

/// Points of one tile of NeurLZ's inference at most, about: a tile's activations take about
/// 100 bytes a point, so about 7 MB a thread with the halo ([`tiling`]).
pub const TILE_POINTS: usize = 1 << 16;
/// Largest side of a tile (wider when the slice has fewer rows).
pub const TILE_SIDE: usize = 256;

/// `(rows, cols)` of the tiles NeurLZ's inference cuts an `h x w` slice into: bands of at
/// most [`TILE_SIDE`] rows, cut into tiles of at most [`TILE_POINTS`] points (at least
/// [`TILE_SIDE`] columns), both as even as they can be. A slice that small is one tile.
pub fn tiling(h: usize, w: usize) -> (usize, usize) {
    let rows = h.div_ceil(h.div_ceil(TILE_SIDE).max(1)).max(1);
    let most = (TILE_POINTS / rows).max(TILE_SIDE);
    let cols = w.div_ceil(w.div_ceil(most).max(1)).max(1);
    (rows, cols)
}

/// NeurLZ's inference over a chunk: the network, its inputs and normalization per field, the
/// chunk's grid indices in their 3D view, and the feedback step.
#[derive(Debug, Clone, Copy)]
pub struct Corrector<'a> {
    pub inputs: Inputs,
    pub net: &'a QNet,
    pub norm: &'a [Norm],
    pub q: &'a [i32],
    pub dims: [usize; 3],
    pub m: i64,
}

impl Corrector<'_> {
    /// The regulated corrections of slice `s` of every field over the tile `ty x tx` (inside
    /// the slice): `fields` planes of `ty.len() x tx.len()`.
    pub fn tile(&self, s: usize, ty: Span, tx: Span) -> Vec<i32> {
        let [_, h, w] = self.dims;
        let (wy, wx) = (Window::of(ty, h), Window::of(tx, w));
        let per_field = self.dims[0] / self.norm.len();
        let mut data = Vec::new();
        for (f, &norm) in self.norm.iter().enumerate() {
            let at = Site {
                inputs: self.inputs,
                q: self.q,
                f,
                s,
                per_field,
                dims: self.dims,
                norm,
                m: self.m,
            };
            at.window(wy.input, wx.input, &mut data);
        }
        let input = Act {
            data,
            ch: self.net.arch.cin,
            y: wy.input,
            x: wx.input,
        };
        let mut z = tile::infer(self.net, input, (wy, wx), (h, w));
        z.iter_mut().for_each(|v| *v = softsign(*v));
        z
    }

    /// Runs the network over the chunk band by band ([`tiling`]: `(rows, cols)`), the bands on
    /// all threads, and hands the corrections to `sink` one row of a tile of a field at a
    /// time: `sink(i, corr, dst)` with `i` the flat index of the row's first point, `corr` its
    /// corrections and `dst` its part of `dst` (`per` items a point, in the layout of `q`).
    /// A thread holds one tile's activations at a time. A unit of work is one band of one
    /// slice of every field, or, when a slice is one band, about [`TILE_POINTS`] points of
    /// whole slices (so that chunks of many small slices do not list a unit a slice).
    pub fn for_each_row<D: Send>(
        &self,
        (rows, cols): (usize, usize),
        dst: &mut [D],
        per: usize,
        sink: impl Fn(usize, &[i32], &mut [D]) + Sync,
    ) {
        let [n0, h, w] = self.dims;
        let fields = self.norm.len();
        let per_field = n0 / fields;
        let plane = h * w;
        assert_eq!(
            dst.len(),
            n0 * plane * per,
            "destination of the corrections"
        );
        let bands = h.div_ceil(rows);
        // Whole slices a unit of work holds (1 when a slice has several bands).
        let group = if bands == 1 {
            (TILE_POINTS / plane).max(1)
        } else {
            1
        };
        let units = per_field.div_ceil(group) * bands;
        // Each unit's parts of `dst`, one a field, in field order.
        let mut work: Vec<Vec<&mut [D]>> = (0..units).map(|_| Vec::with_capacity(fields)).collect();
        for field in dst.chunks_mut(per_field * plane * per) {
            if bands == 1 {
                for (k, part) in field.chunks_mut(group * plane * per).enumerate() {
                    work[k].push(part);
                }
                continue;
            }
            for (s, slice) in field.chunks_mut(plane * per).enumerate() {
                for (b, band) in slice.chunks_mut(rows * w * per).enumerate() {
                    work[s * bands + b].push(band);
                }
            }
        }
        work.into_par_iter().enumerate().for_each(|(k, mut parts)| {
            let (s0, y0) = (k / bands * group, k % bands * rows);
            let ty = Span::new(y0, (y0 + rows).min(h));
            let (th, base) = (ty.len(), y0 * w);
            for s in s0..(s0 + group).min(per_field) {
                // Where slice s's rows start in each part.
                let at = (s - s0) * plane;
                for x0 in (0..w).step_by(cols) {
                    let tx = Span::new(x0, (x0 + cols).min(w));
                    let tw = tx.len();
                    let z = self.tile(s, ty, tx);
                    for (f, out) in parts.iter_mut().enumerate() {
                        for y in 0..th {
                            let i = (f * per_field + s) * plane + base + y * w + x0;
                            let corr = &z[(f * th + y) * tw..(f * th + y + 1) * tw];
                            let d = (at + y * w + x0) * per;
                            sink(i, corr, &mut out[d..d + tw * per]);
                        }
                    }
                }
            }
        });
    }

    /// The regulated correction of every point (units of `eb / 2^16`, layout of `q`).
    pub fn corrections(&self) -> Vec<i32> {
        let mut corr = vec![0i32; self.q.len()];
        let [_, h, w] = self.dims;
        self.for_each_row(tiling(h, w), &mut corr, 1, |_, c, d| d.copy_from_slice(c));
        corr
    }
}

/// The regulated correction of every point (units of `eb / 2^16`, layout of `q`): the
/// network over every slice, tile by tile ([`Corrector::corrections`]).
pub fn corrections(
    inputs: Inputs,
    net: &QNet,
    norm: &[Norm],
    q: &[i32],
    dims: [usize; 3],
    m: i64,
) -> Vec<i32> {
    Corrector {
        inputs,
        net,
        norm,
        q,
        dims,
        m,
    }
    .corrections()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::{Arch, QLayer};

    fn rng(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    fn random_net(arch: Arch, next: &mut impl FnMut() -> u64) -> QNet {
        let layers = arch
            .layers()
            .iter()
            .map(|&shape| QLayer {
                shape,
                w: (0..shape.weights())
                    .map(|_| (next() % 255) as i8 as i32 as i8)
                    .collect(),
                mult: (0..shape.cout)
                    .map(|_| 1 + (next() % 65535) as u16)
                    .collect(),
                shift: (0..shape.cout).map(|_| 14 + (next() % 8) as u8).collect(),
                bias: (0..shape.cout)
                    .map(|_| (next() % (1 << 18)) as i32 - (1 << 17))
                    .collect(),
            })
            .collect();
        QNet { arch, layers }
    }

    /// The corrections of one whole slice at a time, as the decoder computed them before
    /// tiles: the inputs of the slice, the network over it, the regulator.
    fn by_slices(c: &Corrector<'_>) -> Vec<i32> {
        let [n0, h, w] = c.dims;
        let fields = c.norm.len();
        let per_field = n0 / fields;
        let mut out = vec![0; c.q.len()];
        for s in 0..per_field {
            let mut inp = Vec::new();
            for (f, &nf) in c.norm.iter().enumerate() {
                slice_inputs(c.inputs, c.q, f, s, per_field, c.dims, nf, c.m, &mut inp);
            }
            let z = c.net.infer(&inp, h, w);
            for f in 0..fields {
                let at = (f * per_field + s) * h * w;
                for (d, &v) in out[at..at + h * w].iter_mut().zip(&z[f * h * w..]) {
                    *d = softsign(v);
                }
            }
        }
        out
    }

    /// Tiles of every shape (one row, one column, odd sides, the default tiling of a slice
    /// larger than one tile) give the whole-slice corrections bit for bit, with one field or
    /// several, in-slice or volume inputs, and every row reaches the sink once.
    #[test]
    fn tiled_corrections_match_whole_slices() {
        let mut next = rng(0x7e57_c0de_1234_5678);
        for (inputs, fields, dims) in [
            (Inputs::Slice, 1, [2, 37, 29]),
            (Inputs::Volume, 1, [3, 20, 41]),
            (Inputs::Slice, 2, [4, 9, 13]),
            (Inputs::Volume, 3, [6, 11, 8]),
            (Inputs::Slice, 1, [1, 1, 700]),
            (Inputs::Slice, 1, [1, 300, 520]),
            (Inputs::Volume, 2, [600, 3, 2]),
        ] {
            let arch = Arch {
                cin: inputs.planes() * fields,
                width: 4,
                cout: fields,
            };
            let net = random_net(arch, &mut next);
            let n = dims.iter().product::<usize>();
            let q: Vec<i32> = (0..n)
                .map(|i| {
                    (i % dims[2]) as i32 * 3 - (i / dims[2] % 7) as i32 * 5 + (next() % 9) as i32
                })
                .collect();
            let norm: Vec<Norm> = (0..fields)
                .map(|f| Norm {
                    center: 40 + f as i32,
                    half: 90,
                })
                .collect();
            let c = Corrector {
                inputs,
                net: &net,
                norm: &norm,
                q: &q,
                dims,
                m: 3,
            };
            let whole = by_slices(&c);
            assert!(whole.iter().any(|&v| v != 0));
            let [_, h, w] = dims;
            let tilings = [(1, 1), (1, 7), (3, 5), (4, 4), (h, w), tiling(h, w)];
            for t in tilings {
                let mut got = vec![i32::MIN; n];
                let rows = std::sync::atomic::AtomicUsize::new(0);
                c.for_each_row(t, &mut got, 1, |i, corr, dst| {
                    assert_eq!(dst.len(), corr.len());
                    assert!(i % w + corr.len() <= w, "a row stays in its row");
                    assert_eq!(
                        whole[i..i + corr.len()],
                        *corr,
                        "{dims:?} tiles {t:?} at {i}"
                    );
                    rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    dst.copy_from_slice(corr);
                });
                assert_eq!(got, whole, "{dims:?} tiles {t:?}");
                assert_eq!(
                    rows.into_inner(),
                    dims[0] * h * w.div_ceil(t.1),
                    "{dims:?} tiles {t:?}"
                );
            }
            assert_eq!(c.corrections(), whole);
        }
        assert_eq!(tiling(300, 520), (150, 260));
        assert_eq!(tiling(1, 700), (1, 700));
        assert_eq!(tiling(4096, 4096), (256, 256));
        assert_eq!(tiling(64, 64), (64, 64));
    }
}
