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

use crate::bytes::{put_varint, Reader};
use crate::error::{ensure, Error, Result};
use crate::field::Element;
use crate::nn::conv::{Arch, QNet, MAX_CHANNELS};
use rayon::prelude::*;

use crate::backend::{offload, Stage};
pub use crate::nn::corrections::{corrections, input, input_planes, slice_inputs, Inputs, Norm};
use crate::nn::corrections::{tiling, Corrector};
use crate::params::Backend;
use crate::quant::{dequantize, Grid};

/// First byte of the section: which enhancer and inputs. Kind 1: NeurLZ with the two
/// in-slice input planes per field (format 1.0). Kind 2: NeurLZ with four per field, the two
/// of kind 1 and the differences to the previous and the next slice of the field.
pub const KIND_NEURLZ: u8 = 1;
pub const KIND_NEURLZ_3D: u8 = 2;

/// The section kind of a model with these inputs.
fn kind(inputs: Inputs) -> u8 {
    match inputs {
        Inputs::Slice => KIND_NEURLZ,
        Inputs::Volume => KIND_NEURLZ_3D,
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
    /// The points that keep their uncorrected value.
    pub outliers: Outliers,
}

impl Model {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(kind(self.inputs));
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
        for i in self.outliers.iter() {
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
        // A bitmap, whatever the count: n / 8 bytes, where a list could take 8 bytes a point.
        let mut outliers = Outliers::new(n);
        let mut next = 0u64;
        for _ in 0..count {
            let i = next
                .checked_add(r.varint("enhancer outliers")?)
                .filter(|&i| i < n as u64)
                .ok_or_else(|| Error::Corrupt("enhancer outlier index out of range".into()))?;
            outliers.insert(i as usize);
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

/// A set of points of a chunk (the enhancer's outliers): one bit a point, and the count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outliers {
    bits: Vec<u64>,
    count: usize,
}

impl Outliers {
    /// No point of a chunk of `n`.
    pub fn new(n: usize) -> Outliers {
        Outliers {
            bits: vec![0; n.div_ceil(64)],
            count: 0,
        }
    }

    /// Adds point `i` (inside the chunk).
    pub fn insert(&mut self, i: usize) {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.count += 1;
        }
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The points, increasing.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(k, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    64 * k + b
                })
            })
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

/// The enhanced value of grid index `q` with correction `corr` (units of `eb / 2^16`).
#[inline]
pub fn enhanced<T: Element>(q: i32, corr: i32, grid: Grid, m: i64) -> T {
    let qf = q as f64 + corr as f64 * (m as f64 / 131072.0);
    T::from_f64(grid.mid + qf * grid.step)
}

/// Writes the enhanced chunk as little-endian bytes into `out` (`T::SIZE` bytes a point,
/// layout of `q`): every point's enhanced value, but the base value `T(mid + q · step)` at
/// the model's outliers. On the CPU the network runs tile by tile and each tile's rows are
/// written as they come ([`Corrector::for_each_row`]), so nothing the size of the chunk is
/// held besides `q` and `out`; the GPU, when it takes the stage, hands back every correction
/// at once (4 bytes a point on the host, `docs/RELIABILITY.md`, "Memory").
pub fn apply_into<T: Element>(
    model: &Model,
    q: &[i32],
    dims: [usize; 3],
    grid: Grid,
    m: i64,
    out: &mut [u8],
) {
    assert_eq!(out.len(), q.len() * T::SIZE, "enhanced chunk's bytes");
    let outliers = &model.outliers;
    let write = |i: usize, corr: &[i32], dst: &mut [u8]| {
        for (j, (&c, d)) in corr.iter().zip(dst.chunks_exact_mut(T::SIZE)).enumerate() {
            let v = if outliers.contains(i + j) {
                dequantize::<T>(q[i + j], grid)
            } else {
                enhanced::<T>(q[i + j], scaled(c, model.scale), grid, m)
            };
            v.put_le(d);
        }
    };
    let run = Corrector {
        inputs: model.inputs,
        net: &model.net,
        norm: &model.norm,
        q,
        dims,
        m,
    };
    let on_gpu = offload(
        Stage::NeurlzInference,
        Backend::Auto,
        q.len(),
        |g| {
            g.neurlz_corrections(run.inputs, run.net, run.norm, q, dims, m)
                .map(Some)
        },
        || None,
    );
    match on_gpu {
        Some(corr) => {
            const PART: usize = 1 << 16;
            out.par_chunks_mut(PART * T::SIZE)
                .enumerate()
                .for_each(|(k, dst)| {
                    let i = k * PART;
                    write(i, &corr[i..i + dst.len() / T::SIZE], dst)
                });
        }
        None => run.for_each_row(tiling(dims[1], dims[2]), out, T::SIZE, write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_are_a_set_of_points_in_order() {
        let n = 200;
        let mut o = Outliers::new(n);
        assert!(o.is_empty() && o.iter().next().is_none());
        let points = [0, 1, 63, 64, 65, 127, 128, 199];
        for &i in points.iter().rev() {
            o.insert(i);
        }
        o.insert(64);
        assert_eq!(o.len(), points.len());
        assert_eq!(o.iter().collect::<Vec<_>>(), points);
        assert!((0..n).all(|i| o.contains(i) == points.contains(&i)));
        assert!(!o.contains(n + 1000));
    }
}
