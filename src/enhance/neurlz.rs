//! The NeurLZ enhancer, decode side: the stored model (section `ENHANCE`, `docs/FORMAT.md`)
//! and its application to the reconstruction, entirely in integer / fixed-point arithmetic.
//!
//! The network sees the chunk's reconstructed grid indices, 2D slice by 2D slice of the 3D
//! view, as two input channels per field ([`input_planes`]): the indices normalized per field to
//! about `[-1, 1]`, and their local detail (the index minus the mean of its four in-slice
//! neighbours) in units of the bound, both in 16-bit fixed point; section kind 2 adds two
//! more, the differences to the neighbouring slices ([`slice_inputs`]). Its regulated output
//! `softsign(z)`, times the stored scale `s / 2^15`, is a correction in units of the bound
//! `eb`, strictly inside `(-eb, eb)`; the enhanced value is `T(mid + (q + corr · m / 2^17) · step)` (exact in `f64`: `q` has at most
//! 28 significant bits and the correction 17 fractional ones). Listed outliers keep the base
//! value `T(mid + q · step)`; escaped values are overwritten afterwards as usual.
//!
//! With `fields = K > 1` (cross-field mode) the leading extent of the 3D view is `K` fields of
//! `S = n0 / K` slices each; slice `s` of every field is one sample of `K` input channels, and
//! output channel `f` corrects field `f`.

use rayon::prelude::*;

use crate::bytes::{put_varint, Reader};
use crate::error::{ensure, Error, Result};
use crate::field::Element;
use crate::nn::conv::{softsign, Arch, QNet, ACT_MAX, MAX_CHANNELS, ONE};
use crate::quant::Grid;

/// First byte of the section: which enhancer and inputs. Kind 1: NeurLZ with the two
/// in-slice input planes per field (format 1.0). Kind 2: NeurLZ with four per field, the two
/// of kind 1 and the differences to the previous and the next slice of the field.
pub const KIND_NEURLZ: u8 = 1;
pub const KIND_NEURLZ_3D: u8 = 2;

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
    fn kind(self) -> u8 {
        match self {
            Inputs::Slice => KIND_NEURLZ,
            Inputs::Volume => KIND_NEURLZ_3D,
        }
    }
}

/// What the listed outliers guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regulation {
    /// Every value within `eb`: listed points keep the uncorrected value.
    Strict = 1,
    /// Every value within `2 eb` (the list is empty unless rounding to the element type
    /// would push a value past `2 eb`).
    Relaxed = 2,
}

/// Per-field input normalization: input = `(q - center) · 2^16 / half`, clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    pub center: i32,
    pub half: u32,
}

/// Everything the `ENHANCE` section holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub inputs: Inputs,
    pub regulation: Regulation,
    /// Fields along the leading dimension (1 = single-field).
    pub fields: usize,
    /// Corrections are scaled by `scale / 2^15` (1..=2^15).
    pub scale: u16,
    pub norm: Vec<Norm>,
    pub net: QNet,
    /// Flat indices (increasing) of the points that keep their uncorrected value.
    pub outliers: Vec<usize>,
}

impl Model {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.inputs.kind());
        out.push(self.regulation as u8);
        out.push(self.fields as u8);
        out.push(self.net.arch.width as u8);
        out.extend_from_slice(&self.scale.to_le_bytes());
        for n in &self.norm {
            out.extend_from_slice(&n.center.to_le_bytes());
            out.extend_from_slice(&n.half.to_le_bytes());
        }
        self.net.write(out);
        out.extend_from_slice(&(self.outliers.len() as u64).to_le_bytes());
        let mut prev: Option<usize> = None;
        for &i in &self.outliers {
            put_varint(out, prev.map_or(i, |p| i - p - 1) as u64);
            prev = Some(i);
        }
    }

    /// Reads and validates the section of a chunk with 3D view `dims`.
    pub fn read(payload: &[u8], dims: [usize; 3]) -> Result<Model> {
        let n = dims[0] * dims[1] * dims[2];
        let mut r = Reader::new(payload);
        let inputs = match r.u8("enhancer")? {
            KIND_NEURLZ => Inputs::Slice,
            KIND_NEURLZ_3D => Inputs::Volume,
            kind => return Err(Error::Corrupt(format!("unknown enhancer kind {kind}"))),
        };
        let regulation = match r.u8("enhancer")? {
            1 => Regulation::Strict,
            2 => Regulation::Relaxed,
            g => return Err(Error::Corrupt(format!("unknown enhancer regulation {g}"))),
        };
        let fields = r.u8("enhancer")? as usize;
        ensure!(
            (1..=MAX_CHANNELS).contains(&fields) && dims[0] % fields == 0,
            Error::Corrupt(format!(
                "enhancer declares {fields} fields over a leading extent of {}",
                dims[0]
            ))
        );
        let width = r.u8("enhancer")? as usize;
        let s = r.take(2, "enhancer")?;
        let scale = u16::from_le_bytes([s[0], s[1]]);
        ensure!(
            (1..=FULL_SCALE).contains(&scale),
            Error::Corrupt(format!("enhancer scale {scale} outside 1..={FULL_SCALE}"))
        );
        let mut norm = Vec::with_capacity(fields);
        for _ in 0..fields {
            let center = r.u32("enhancer")? as i32;
            let half = r.u32("enhancer")?;
            ensure!(
                half > 0,
                Error::Corrupt("enhancer normalization is zero".into())
            );
            norm.push(Norm { center, half });
        }
        let arch = Arch {
            cin: inputs.planes() * fields,
            width,
            cout: fields,
        };
        let net = QNet::read(arch, &mut r)?;
        let count = r.u64("enhancer outliers")?;
        ensure!(
            count <= n as u64 && count as usize <= r.remaining(),
            Error::Corrupt(format!("{count} enhancer outliers in a chunk of {n}"))
        );
        let mut outliers = Vec::with_capacity(count as usize);
        let mut next = 0u64;
        for _ in 0..count {
            let i = next
                .checked_add(r.varint("enhancer outliers")?)
                .filter(|&i| i < n as u64)
                .ok_or_else(|| Error::Corrupt("enhancer outlier index out of range".into()))?;
            outliers.push(i as usize);
            next = i + 1;
        }
        ensure!(
            r.remaining() == 0,
            Error::Corrupt("bytes after the enhancer outliers".into())
        );
        Ok(Model {
            inputs,
            regulation,
            fields,
            scale,
            norm,
            net,
            outliers,
        })
    }
}

/// The scale that leaves corrections as they are.
pub const FULL_SCALE: u16 = 1 << 15;

/// A correction scaled by `scale / 2^15` (arithmetic shift: rounds toward minus infinity).
#[inline]
pub fn scaled(corr: i32, scale: u16) -> i32 {
    ((corr as i64 * scale as i64) >> 15) as i32
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

/// The enhanced value of grid index `q` with correction `corr` (units of `eb / 2^16`).
#[inline]
pub fn enhanced<T: Element>(q: i32, corr: i32, grid: Grid, m: i64) -> T {
    let qf = q as f64 + corr as f64 * (m as f64 / 131072.0);
    T::from_f64(grid.mid + qf * grid.step)
}

/// Replaces `values` (the base reconstruction of the grid indices `q`) by the enhanced values,
/// except at the model's outliers.
pub fn apply<T: Element>(
    model: &Model,
    q: &[i32],
    dims: [usize; 3],
    grid: Grid,
    m: i64,
    values: &mut [T],
) {
    let corr = crate::backend::cuda::conv::corrections(
        crate::params::Backend::Auto,
        model.inputs,
        &model.net,
        &model.norm,
        q,
        dims,
        m,
    );
    let mut out = model.outliers.iter().peekable();
    for (i, v) in values.iter_mut().enumerate() {
        if out.peek() == Some(&&i) {
            out.next();
            continue;
        }
        *v = enhanced(q[i], scaled(corr[i], model.scale), grid, m);
    }
}
