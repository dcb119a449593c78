//! NeurLZ's inference over a chunk, in integer / fixed-point arithmetic: the network's input
//! planes from the reconstructed grid indices, their normalization, and the regulated
//! correction of every point (`crate::enhance::neurlz` describes the model and applies it;
//! the GPU backend computes the same corrections, bit for bit).

use rayon::prelude::*;

use super::conv::{softsign, QNet, ACT_MAX, ONE};

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
    out.extend(q.iter().map(|&v| input(v, norm)));
    for y in 0..h {
        for x in 0..w {
            let c = q[y * w + x] as i64;
            let at = |yy: usize, xx: usize| q[yy * w + xx] as i64;
            let n = if y > 0 { at(y - 1, x) } else { c };
            let s = if y + 1 < h { at(y + 1, x) } else { c };
            let wv = if x > 0 { at(y, x - 1) } else { c };
            let e = if x + 1 < w { at(y, x + 1) } else { c };
            let d = (4 * c - n - s - wv - e) * ONE / (2 * m);
            out.push(d.clamp(-ACT_MAX, ACT_MAX) as i32);
        }
    }
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
    let plane = dims[1] * dims[2];
    let slice = |t: usize| &q[(f * per_field + t) * plane..(f * per_field + t + 1) * plane];
    let cur = slice(s);
    input_planes(cur, dims[1], dims[2], norm, m, out);
    if inputs == Inputs::Volume {
        for t in [s.checked_sub(1), Some(s + 1).filter(|&t| t < per_field)] {
            match t {
                Some(t) => out.extend(slice(t).iter().zip(cur).map(|(&a, &c)| {
                    ((a as i64 - c as i64) * ONE / (2 * m)).clamp(-ACT_MAX, ACT_MAX) as i32
                })),
                None => out.resize(out.len() + plane, 0),
            }
        }
    }
}

/// The regulated correction of every point (units of `eb / 2^16`, layout of `q`).
pub fn corrections(
    inputs: Inputs,
    net: &QNet,
    norm: &[Norm],
    q: &[i32],
    dims: [usize; 3],
    m: i64,
) -> Vec<i32> {
    let fields = norm.len();
    let per_field = dims[0] / fields;
    let plane = dims[1] * dims[2];
    let sample = |s: usize| {
        let mut inp = Vec::with_capacity(inputs.planes() * fields * plane);
        for (f, &nf) in norm.iter().enumerate() {
            slice_inputs(inputs, q, f, s, per_field, dims, nf, m, &mut inp);
        }
        let mut z = net.infer(&inp, dims[1], dims[2]);
        z.iter_mut().for_each(|v| *v = softsign(*v));
        z
    };
    let mut corr = vec![0i32; q.len()];
    if fields == 1 {
        // Sample s is slice s: written in place, no second copy of the chunk.
        corr.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(s, dst)| dst.copy_from_slice(&sample(s)));
        return corr;
    }
    let outs: Vec<Vec<i32>> = (0..per_field).into_par_iter().map(sample).collect();
    for (s, z) in outs.iter().enumerate() {
        for f in 0..fields {
            let dst = (f * per_field + s) * plane;
            corr[dst..dst + plane].copy_from_slice(&z[f * plane..(f + 1) * plane]);
        }
    }
    corr
}
