//! The part of an HDF5 edge chunk that holds the user's data.
//!
//! Where a dataset's shape is not a multiple of its chunk shape, HDF5 hands the filter
//! full-size edge chunks whose part outside the dataset holds the fill value (zeros when the
//! fill time is "never" or no fill value is set). The filter is not told where a chunk sits,
//! so [`Region::find`] reads every trailing slab of the chunk that holds nothing but the
//! padding value as outside the data. A relative, NRMSE or PSNR bound is then taken over the
//! box that remains, and the padding is restored bit for bit on decode. Leaving values out of
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

    /// `x` with every value outside the box replaced by the nearest value inside it (each
    /// coordinate clamped to the box): the padding then costs the predictors nearly nothing,
    /// and the chunk's range is the box's.
    pub fn replicate<T: Copy>(&self, x: &[T]) -> Vec<T> {
        let r = self.shape.len();
        let mut strides = vec![1usize; r];
        for d in (0..r - 1).rev() {
            strides[d] = strides[d + 1] * self.shape[d + 1];
        }
        let mut y = x.to_vec();
        let mut coord = vec![0usize; r];
        for v in y.iter_mut() {
            if coord.iter().zip(&self.extent).any(|(c, e)| c >= e) {
                let src: usize = (0..r)
                    .map(|d| coord[d].min(self.extent[d] - 1) * strides[d])
                    .sum();
                *v = x[src];
            }
            for d in (0..r).rev() {
                coord[d] += 1;
                if coord[d] < self.shape[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        y
    }

    /// Writes the padding value over every element outside the box of `out`, the chunk's
    /// little-endian element bytes (`size` bytes each).
    pub fn restore(&self, out: &mut [u8], size: usize) {
        let pad = self.pad.to_le_bytes();
        let pad = &pad[..size];
        let mut next = 0;
        for run in self.runs() {
            for e in out[next * size..run.start * size].chunks_exact_mut(size) {
                e.copy_from_slice(pad);
            }
            next = run.end;
        }
        for e in out[next * size..].chunks_exact_mut(size) {
            e.copy_from_slice(pad);
        }
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
    fn finds_the_box_restores_and_replicates() {
        let x = edge(0.0);
        let r = Region::find(&x, &[5, 7], 0).unwrap();
        assert_eq!(r.extent, vec![3, 4]);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![0..4, 7..11, 14..18]);
        let y = r.replicate(&x);
        assert_eq!(y[4], x[3]); // row 0, past the box: the row's last value
        assert_eq!(y[34], x[2 * 7 + 3]); // the far corner: the box's
        let mut bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        r.restore(&mut bytes, 4);
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
