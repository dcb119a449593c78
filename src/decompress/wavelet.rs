//! A wavelet-coded chunk (`docs/FORMAT.md`, "Wavelet layout"): the subbands' quantized
//! coefficients, the inverse CDF 9/7 transform, the corrections, the escapes. The encoder
//! (`compress/wavelet.rs`) runs [`synthesize`] and [`corrected`] itself, so what it checks
//! against the bound is what this decoder computes.

use rayon::prelude::*;

use crate::entropy::{bitplane, Classes, Contexts};
use crate::error::{ensure, Error, Result};
use crate::field::{self, Element};
use crate::format::{self, section, wavelet, Header, Reader};
use crate::transform::cdf97;

use super::{escapes_into, read_escapes, Output};

/// The value of a quantized coefficient: the product in f64, rounded to the element type.
#[inline]
pub(crate) fn dequantize<T: Element>(q: i32, step: f64) -> T {
    T::of(q as f64 * step)
}

/// The inverse transform of dequantized coefficients `g` (in place, in the element type), plus
/// the chunk's mean rounded to it.
pub(crate) fn synthesize<T: Element>(g: &mut [T], dims: [usize; 3], levels: [u8; 3], mid: f64) {
    cdf97::inverse(g, dims, levels);
    let mid = T::of(mid);
    g.par_iter_mut().for_each(|v| *v += mid);
}

/// A synthesized value moved by `k` steps of twice the bound (a correction), in f64, rounded
/// to the element type.
#[inline]
pub(crate) fn corrected<T: Element>(v: T, k: i64, eb: f64) -> T {
    T::from_f64(v.to_f64() + k as f64 * (2.0 * eb))
}

pub(super) fn decode_wavelet<T: Element>(
    h: &Header,
    r: &mut Reader<'_>,
    out: &mut Output<'_>,
) -> Result<()> {
    ensure!(
        h.sections == 2,
        Error::Corrupt(format!(
            "wavelet chunk declares {} sections, holds 2",
            h.sections
        ))
    );
    ensure!(
        h.step.is_finite() && h.step > 0.0 && h.mid.is_finite() && h.eb.is_finite() && h.eb > 0.0,
        Error::Corrupt("wavelet step, mean or bound is not finite and positive".into())
    );
    ensure!(
        h.feedback == 0 && h.block == [0; 3],
        Error::Corrupt("wavelet chunk with a feedback step or block extents".into())
    );
    let dims = field::grid_dims(&h.shape);
    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::WAVELET,
        Error::Corrupt(format!("expected the wavelet section, found id {id}"))
    );
    let w = wavelet::read(payload, dims)?;
    let n = h.len();
    ensure!(
        n <= wavelet::MAX_VALUES,
        Error::Corrupt(format!("wavelet chunk of {n} values"))
    );
    let mut g: Vec<T> = Vec::new();
    g.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        needed: n * T::SIZE,
        limit: out.len(),
    })?;
    g.resize(n, T::default());
    decode_bands(&mut g, dims, &w, h.step)?;
    synthesize(&mut g, dims, w.levels, h.mid);
    wavelet::for_each_correction(w.corrections, n, |i, k| g[i] = corrected(g[i], k, h.eb))?;
    field::write_bytes(&g, out.buf());
    drop(g);
    escapes_into::<T>(read_escapes(r)?, out.buf())
}

/// Decodes every subband into the grid `g`, dequantized: a block per subband on all threads,
/// or all in one block ([`wavelet::Grouping`]). The coefficients of all bands are held at once
/// (4 bytes a value) before they go into the grid.
fn decode_bands<T: Element>(
    g: &mut [T],
    dims: [usize; 3],
    w: &wavelet::Wavelet<'_>,
    step: f64,
) -> Result<()> {
    let (near, single) = (Contexts::Near, Classes::Single);
    let coefficients: Vec<Vec<i32>> = match w.grouping {
        wavelet::Grouping::Subbands => w
            .bands
            .par_iter()
            .zip(&w.blocks)
            .map(|(b, bytes)| {
                let mut q = vec![0i32; b.ext.iter().product()];
                bitplane::decode(bytes, b.ext, single, near, &mut q)?;
                Ok(q)
            })
            .collect::<Result<_>>()?,
        wavelet::Grouping::Shared => {
            let mut all: Vec<Vec<i32>> = w
                .bands
                .iter()
                .map(|b| vec![0i32; b.ext.iter().product()])
                .collect();
            let mut parts: Vec<([usize; 3], &mut [i32])> = w
                .bands
                .iter()
                .zip(all.iter_mut())
                .map(|(b, q)| (b.ext, &mut q[..]))
                .collect();
            bitplane::decode_parts(w.blocks[0], &mut parts, single, near)?;
            all
        }
    };
    for (b, q) in w.bands.iter().zip(coefficients) {
        for (row, q) in field::Block::from(*b)
            .row_starts(dims)
            .zip(q.chunks_exact(b.ext[2]))
        {
            for (v, &q) in g[row..row + b.ext[2]].iter_mut().zip(q) {
                *v = dequantize(q, step);
            }
        }
    }
    Ok(())
}
