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

/// A box at the chunk's origin (`extent[d] <= shape[d]` along every dimension, C order); every
/// value outside it holds the padding value `pad` (the element's bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub shape: Vec<usize>,
    pub extent: Vec<usize>,
    pub pad: u64,
}

impl Region {
    /// The data region of a chunk padded with `fill` (or, failing that, with zeros), read
    /// from its little-endian element bytes (`size` bytes each): `None` when no trailing slab
    /// holds only the padding value. Along each dimension the box keeps at least one index, so
    /// a chunk that is all padding keeps one value. Works on the bytes as HDF5 handed them, so
    /// an interior chunk costs a few comparisons and no copy.
    pub fn find(data: &[u8], size: usize, shape: &[usize], fill: u64) -> Option<Region> {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>() * size);
        let mut candidates = vec![fill];
        if fill != 0 {
            candidates.push(0);
        }
        candidates.into_iter().find_map(|pad| {
            let bytes = pad.to_le_bytes();
            let extent: Vec<usize> = (0..shape.len())
                .map(|d| {
                    let mut k = shape[d];
                    while k > 1 && slab_is(data, size, shape, d, k - 1, &bytes[..size]) {
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

    /// The element bytes (`size` each) of the box, row after row: the chunk an edge chunk is
    /// coded as.
    pub fn gather(&self, data: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * size);
        for run in self.runs() {
            out.extend_from_slice(&data[run.start * size..run.end * size]);
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

/// Whether every element (`size` bytes) at index `i` along dimension `d` has the bytes `pad`.
fn slab_is(data: &[u8], size: usize, shape: &[usize], d: usize, i: usize, pad: &[u8]) -> bool {
    let inner: usize = shape[d + 1..].iter().product();
    let outer: usize = shape[..d].iter().product();
    (0..outer).all(|o| {
        let start = (o * shape[d] + i) * inner;
        data[start * size..(start + inner) * size]
            .chunks_exact(size)
            .all(|e| e == pad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The little-endian bytes of a 5x7 `f32` chunk whose data is 3x4 and padding `pad`.
    fn edge(pad: f32) -> Vec<u8> {
        let mut x = vec![pad; 35];
        for i in 0..3 {
            for j in 0..4 {
                x[i * 7 + j] = (i * 10 + j) as f32 + 0.5;
            }
        }
        bytes(&x)
    }

    fn bytes(x: &[f32]) -> Vec<u8> {
        x.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn finds_the_box_gathers_and_scatters() {
        let x = edge(0.0);
        let r = Region::find(&x, 4, &[5, 7], 0).unwrap();
        assert_eq!(r.extent, vec![3, 4]);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![0..4, 7..11, 14..18]);
        let boxed = r.gather(&x, 4);
        assert_eq!(boxed.len(), 12 * 4);
        assert_eq!(boxed[4 * 4..5 * 4], x[7 * 4..8 * 4]);
        assert_eq!(boxed[11 * 4..], x[17 * 4..18 * 4]);
        let mut out = vec![0xAAu8; 35 * 4];
        r.scatter(&boxed, &mut out, 4);
        assert_eq!(out, x);
    }

    #[test]
    fn fill_value_then_zeros() {
        let fill = 9.96921e36f32.to_bits() as u64;
        let r = Region::find(&edge(9.96921e36), 4, &[5, 7], fill).unwrap();
        assert_eq!((r.extent.clone(), r.pad), (vec![3, 4], fill));
        // The dataset's fill value is not what the chunk holds: zeros are tried too.
        let r = Region::find(&edge(0.0), 4, &[5, 7], 1.5f32.to_bits() as u64).unwrap();
        assert_eq!((r.extent, r.pad), (vec![3, 4], 0));
        // A chunk whose last values are not padding has no region.
        let mut x = edge(0.0);
        x[34 * 4..].copy_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(Region::find(&x, 4, &[5, 7], 0), None);
        // A chunk of padding only keeps one value.
        let r = Region::find(&[0u8; 6 * 8], 8, &[2, 3], 0).unwrap();
        assert_eq!(r.extent, vec![1, 1]);
    }
}
