//! The part of an HDF5 edge chunk that holds the user's data.
//!
//! Where a dataset's shape is not a multiple of its chunk shape, HDF5 hands the filter
//! full-size edge chunks whose part outside the dataset holds the fill value (zeros when the
//! fill time is "never" or no fill value is set). The filter is not told where a chunk sits,
//! so [`Region::find`] reads every trailing slab of the chunk that holds nothing but the
//! padding value as outside the data. The box that remains is coded as a chunk of its own (so
//! a relative, NRMSE or PSNR bound is taken over it), and the padding is restored bit for bit
//! on decode. Leaving values out of
//! the range and the error can only tighten the bound the user measures (docs/RELIABILITY.md,
//! "Edge chunks"), so an interior chunk whose last rows really hold the fill value is safe.

use std::ops::Range;

use crate::field::Element;

/// A box at the chunk's origin (`extent[d] <= shape[d]` along every dimension, C order); every
/// value outside it holds the padding value `pad` (the element's bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub shape: Vec<usize>,
    pub extent: Vec<usize>,
    pub pad: u64,
}

impl Region {
    /// The data region of a chunk padded with `fill` (or, failing that, with zeros): `None`
    /// when no trailing slab holds only the padding value. Along each dimension the box keeps
    /// at least one index, so a chunk that is all padding keeps one value.
    pub fn find<T: Element>(x: &[T], shape: &[usize], fill: u64) -> Option<Region> {
        debug_assert_eq!(x.len(), shape.iter().product::<usize>());
        let mut candidates = vec![fill];
        if fill != 0 {
            candidates.push(0);
        }
        candidates.into_iter().find_map(|pad| {
            let extent: Vec<usize> = (0..shape.len())
                .map(|d| {
                    let mut k = shape[d];
                    while k > 1 && slab_is(x, shape, d, k - 1, pad) {
                        k -= 1;
                    }
                    k
                })
                .collect();
            (extent != shape).then(|| Region {
                shape: shape.to_vec(),
                extent,
                pad,
            })
        })
    }

    /// The flat index ranges of the box, in order (one per row along the last dimension).
    pub fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let r = self.shape.len();
        let row = self.extent[r - 1];
        let rows: usize = self.extent[..r - 1].iter().product();
        (0..rows).map(move |mut n| {
            // Row `n` of the box, its coordinates from the last outer dimension up.
            let mut start = 0;
            let mut stride = self.shape[r - 1];
            for d in (0..r - 1).rev() {
                start += (n % self.extent[d]) * stride;
                n /= self.extent[d];
                stride *= self.shape[d];
            }
            start..start + row
        })
    }

    /// Number of values in the box.
    pub fn len(&self) -> usize {
        self.extent.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of the box, row after row: the chunk an edge chunk is coded as.
    pub fn gather<T: Copy>(&self, x: &[T]) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        for run in self.runs() {
            out.extend_from_slice(&x[run]);
        }
        out
    }

    /// The whole chunk's little-endian element bytes (`size` bytes each) into `out`: the box's
    /// from `boxed` (as [`Region::gather`] lists them), the padding value everywhere else.
    pub fn scatter(&self, boxed: &[u8], out: &mut [u8], size: usize) {
        let pad = self.pad.to_le_bytes();
        let pad = &pad[..size];
        let fill = |part: &mut [u8]| {
            for e in part.chunks_exact_mut(size) {
                e.copy_from_slice(pad);
            }
        };
        let (mut next, mut from) = (0, 0);
        for run in self.runs() {
            fill(&mut out[next * size..run.start * size]);
            let n = run.len() * size;
            out[run.start * size..run.end * size].copy_from_slice(&boxed[from..from + n]);
            (next, from) = (run.end, from + n);
        }
        fill(&mut out[next * size..]);
    }
}

/// Whether every value at index `i` along dimension `d` has the bits `pad`.
fn slab_is<T: Element>(x: &[T], shape: &[usize], d: usize, i: usize, pad: u64) -> bool {
    let inner: usize = shape[d + 1..].iter().product();
    let outer: usize = shape[..d].iter().product();
    (0..outer).all(|o| {
        let start = (o * shape[d] + i) * inner;
        x[start..start + inner]
            .iter()
            .all(|v| v.to_bits_u64() == pad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5x7 chunk whose data is 3x4 and padding `pad`.
    fn edge(pad: f32) -> Vec<f32> {
        let mut x = vec![pad; 35];
        for i in 0..3 {
            for j in 0..4 {
                x[i * 7 + j] = (i * 10 + j) as f32 + 0.5;
            }
        }
        x
    }

    #[test]
    fn finds_the_box_gathers_and_scatters() {
        let x = edge(0.0);
        let r = Region::find(&x, &[5, 7], 0).unwrap();
        assert_eq!(r.extent, vec![3, 4]);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![0..4, 7..11, 14..18]);
        let boxed = r.gather(&x);
        assert_eq!(boxed.len(), 12);
        assert_eq!((boxed[4], boxed[11]), (x[7], x[2 * 7 + 3]));
        let boxed: Vec<u8> = boxed.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = vec![0xAAu8; 35 * 4];
        r.scatter(&boxed, &mut bytes, 4);
        let back: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back, x);
    }

    #[test]
    fn fill_value_then_zeros() {
        let x = edge(9.96921e36);
        let r = Region::find(&x, &[5, 7], 9.96921e36f32.to_bits() as u64).unwrap();
        assert_eq!(
            (r.extent.clone(), r.pad),
            (vec![3, 4], 9.96921e36f32.to_bits() as u64)
        );
        // The dataset's fill value is not what the chunk holds: zeros are tried too.
        let r = Region::find(&edge(0.0), &[5, 7], 1.5f32.to_bits() as u64).unwrap();
        assert_eq!((r.extent, r.pad), (vec![3, 4], 0));
        // A chunk whose last values are not padding has no region.
        let mut x = edge(0.0);
        x[34] = 1.0;
        assert_eq!(Region::find(&x, &[5, 7], 0), None);
        // A chunk of padding only keeps one value.
        let r = Region::find(&[0.0f64; 6], &[2, 3], 0).unwrap();
        assert_eq!(r.extent, vec![1, 1]);
    }
}
