//! Bytes <-> typed values, and the chunk seen as a 3D grid cut into blocks.
//!
//! Any rank maps to three dimensions: rank 1 and 2 get leading dimensions of 1, rank > 3 merges
//! its leading dimensions. Blocks are boxes of that grid that decode independently.

use crate::error::{ensure, Error, Result};

/// A floating-point element type the codec handles (f32, f64), read and written little-endian;
/// also the type a whole-chunk transform of it runs in.
pub trait Element:
    bytemuck::Pod + Send + Sync + PartialEq + crate::transform::cdf97::Sample
{
    const SIZE: usize;
    fn read_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    /// Writes the value's little-endian bytes into `out` (`SIZE` bytes).
    fn put_le(self, out: &mut [u8]);
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// True for values the quantizer never touches: NaN, infinities and subnormals
    /// (they come back bit for bit).
    fn is_special(self) -> bool;
    fn to_bits_u64(self) -> u64;
}

impl Element for f32 {
    const SIZE: usize = 4;
    fn read_le(b: &[u8]) -> f32 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn is_special(self) -> bool {
        // Exponent all ones (NaN, infinities) or zero with a mantissa (subnormals); without
        // branches, so loops over values vectorize.
        let (e, m) = (self.to_bits() & 0x7f80_0000, self.to_bits() & 0x007f_ffff);
        (e == 0x7f80_0000) | ((e == 0) & (m != 0))
    }
    fn to_bits_u64(self) -> u64 {
        self.to_bits() as u64
    }
}

impl Element for f64 {
    const SIZE: usize = 8;
    fn read_le(b: &[u8]) -> f64 {
        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> f64 {
        v
    }
    fn is_special(self) -> bool {
        let bits = self.to_bits();
        let (e, m) = (bits & 0x7ff0_0000_0000_0000, bits & 0x000f_ffff_ffff_ffff);
        (e == 0x7ff0_0000_0000_0000) | ((e == 0) & (m != 0))
    }
    fn to_bits_u64(self) -> u64 {
        self.to_bits()
    }
}

/// Decodes little-endian bytes into values; `bytes.len()` must be a multiple of the size.
pub fn from_bytes<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::read_le).collect()
}

/// The values of little-endian bytes: the bytes themselves, seen as values, on a
/// little-endian machine when they are aligned (HDF5's chunk buffers are), else a decoded
/// copy. Saves the encoder a copy of the chunk (and the page faults of a fresh buffer).
pub fn values<T: Element>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(v) if cfg!(target_endian = "little") => std::borrow::Cow::Borrowed(v),
        _ => std::borrow::Cow::Owned(from_bytes(bytes)),
    }
}

/// Writes values as little-endian bytes into `out` (exactly their size), on all threads.
pub fn write_bytes<T: Element>(values: &[T], out: &mut [u8]) {
    use rayon::prelude::*;
    assert_eq!(out.len(), values.len() * T::SIZE);
    out.par_chunks_mut(T::SIZE << 16)
        .zip(values.par_chunks(1 << 16))
        .for_each(|(o, v)| {
            for (dst, &x) in o.chunks_exact_mut(T::SIZE).zip(v) {
                x.put_le(dst);
            }
        });
}

/// Encodes values as little-endian bytes.
pub fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for &v in values {
        v.write_le(&mut out);
    }
    out
}

/// The 3D view of a chunk shape: `[slowest, middle, fastest]`.
pub fn grid_dims(shape: &[usize]) -> [usize; 3] {
    match shape.len() {
        0 => [1, 1, 1],
        1 => [1, 1, shape[0]],
        2 => [1, shape[0], shape[1]],
        r => [shape[..r - 2].iter().product(), shape[r - 2], shape[r - 1]],
    }
}

/// Blocks hold at most this many values, so large chunks split into work for several threads
/// (and, 64^3 at most, into the GPU's one-pass Lorenzo kernel).
pub const BLOCK_TARGET: usize = 1 << 18;

/// The larger blocks of the coders that learn their statistics per block (range, rANS):
/// every block starts its models afresh, which costs most at loose bounds and on smooth
/// fields. 2^19 (2 MiB of f32, so a 4 MiB chunk still gives two threads work) against 2^18
/// gave -0.9% BD-rate on the 34 benchmark fields (eraint z -16%, the Kolmogorov stack -3%; at
/// most +0.8%), 2^20 -1.2% (BENCHMARKS.md, "Larger blocks").
pub const ADAPTIVE_BLOCK_TARGET: usize = 1 << 19;

/// Block extents for a grid: halve the largest extent (slowest first on ties) until a block
/// holds at most `target` values ([`BLOCK_TARGET`] or [`ADAPTIVE_BLOCK_TARGET`]).
pub fn block_extents(dims: [usize; 3], target: usize) -> [usize; 3] {
    let mut b = dims;
    while b[0] * b[1] * b[2] > target {
        let mut i = 0;
        for k in 1..3 {
            if b[k] > b[i] {
                i = k;
            }
        }
        b[i] = b[i].div_ceil(2);
    }
    b
}

/// One block: its origin and extent in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub origin: [usize; 3],
    pub ext: [usize; 3],
}

impl Block {
    pub fn len(&self) -> usize {
        self.ext[0] * self.ext[1] * self.ext[2]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The grid index (C order over `dims`) of the block's `local` index (C order within it).
    pub fn global_index(&self, dims: [usize; 3], local: usize) -> usize {
        let (z, y, x) = (
            local / (self.ext[1] * self.ext[2]),
            (local / self.ext[2]) % self.ext[1],
            local % self.ext[2],
        );
        ((self.origin[0] + z) * dims[1] + self.origin[1] + y) * dims[2] + self.origin[2] + x
    }

    /// The grid index (C order over `dims`) of the first point of each of the block's rows,
    /// in order: the block's rows are `start..start + ext[2]` of the grid.
    pub fn row_starts(&self, dims: [usize; 3]) -> impl Iterator<Item = usize> + '_ {
        (0..self.ext[0]).flat_map(move |z| {
            (0..self.ext[1]).map(move |y| {
                ((self.origin[0] + z) * dims[1] + self.origin[1] + y) * dims[2] + self.origin[2]
            })
        })
    }
}

/// A subband of a wavelet transform is a box of the grid like a block.
impl From<crate::transform::cdf97::Subband> for Block {
    fn from(b: crate::transform::cdf97::Subband) -> Block {
        Block {
            origin: b.start,
            ext: b.ext,
        }
    }
}

/// The blocks of a grid, in C order of the block grid.
pub fn blocks(dims: [usize; 3], ext: [usize; 3]) -> Result<Vec<Block>> {
    ensure!(
        ext.iter().all(|&e| e > 0),
        Error::Corrupt(format!("block extent {ext:?} has a zero"))
    );
    let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
    let mut out = Vec::with_capacity(counts.iter().product());
    for bz in 0..counts[0] {
        for by in 0..counts[1] {
            for bx in 0..counts[2] {
                let origin = [bz * ext[0], by * ext[1], bx * ext[2]];
                let e = [0, 1, 2].map(|k| ext[k].min(dims[k] - origin[k]));
                out.push(Block { origin, ext: e });
            }
        }
    }
    Ok(out)
}

/// Copies a block's values out of the grid (C order within the block).
pub fn gather<T: Copy>(grid: &[T], dims: [usize; 3], b: &Block) -> Vec<T> {
    gather_map(grid, dims, b, |v| v)
}

/// [`gather`] with each value mapped by `f` as it is copied (one pass, one allocation).
pub fn gather_map<T: Copy, U>(
    grid: &[T],
    dims: [usize; 3],
    b: &Block,
    f: impl Fn(T) -> U,
) -> Vec<U> {
    let mut out = Vec::with_capacity(b.len());
    for z in 0..b.ext[0] {
        for y in 0..b.ext[1] {
            let start = ((b.origin[0] + z) * dims[1] + b.origin[1] + y) * dims[2] + b.origin[2];
            out.extend(grid[start..start + b.ext[2]].iter().map(|&v| f(v)));
        }
    }
    out
}

/// Writes a block's values back into the grid.
pub fn scatter<T: Copy>(grid: &mut [T], dims: [usize; 3], b: &Block, values: &[T]) {
    scatter_items(grid, dims, b, values, 1);
}

/// [`scatter`] of `per` items a point (a value's bytes, say).
pub fn scatter_items<T: Copy>(
    grid: &mut [T],
    dims: [usize; 3],
    b: &Block,
    values: &[T],
    per: usize,
) {
    let row = b.ext[2] * per;
    for (src, start) in values.chunks_exact(row).zip(b.row_starts(dims)) {
        grid[start * per..start * per + row].copy_from_slice(src);
    }
}

/// Splits a flat grid index into its block and the position inside it.
pub fn locate(index: usize, dims: [usize; 3], ext: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let pos = [
        index / (dims[1] * dims[2]),
        (index / dims[2]) % dims[1],
        index % dims[2],
    ];
    (
        [0, 1, 2].map(|k| pos[k] / ext[k]),
        [0, 1, 2].map(|k| pos[k] % ext[k]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values_are_nan_infinities_and_subnormals() {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-45] {
            assert!(v.is_special(), "{v:e}");
        }
        for v in [0.0f32, -0.0, f32::MIN_POSITIVE, f32::MAX, -1.5, 1e-37] {
            assert!(!v.is_special(), "{v:e}");
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-310, -5e-324] {
            assert!(v.is_special(), "{v:e}");
        }
        for v in [0.0f64, -0.0, f64::MIN_POSITIVE, f64::MAX, 1e-40, -2.5] {
            assert!(!v.is_special(), "{v:e}");
        }
    }

    #[test]
    fn values_borrow_aligned_bytes_and_copy_the_rest() {
        let v: Vec<f64> = vec![1.5, -2.25, f64::NAN, 1e-310];
        let bytes = to_bytes(&v);
        let seen = values::<f64>(&bytes);
        assert_eq!(
            seen.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // One byte in: misaligned for f32, so a copy, with the same values.
        let mut shifted = vec![0u8; 1];
        shifted.extend(to_bytes(&[3.5f32, -0.0, f32::INFINITY]));
        let seen = values::<f32>(&shifted[1..]);
        assert!(matches!(seen, std::borrow::Cow::Owned(_)));
        assert_eq!(
            seen.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [3.5f32, -0.0, f32::INFINITY].map(f32::to_bits)
        );
    }

    #[test]
    fn grid_dims_merge_leading() {
        assert_eq!(grid_dims(&[7]), [1, 1, 7]);
        assert_eq!(grid_dims(&[3, 7]), [1, 3, 7]);
        assert_eq!(grid_dims(&[2, 3, 4, 5]), [6, 4, 5]);
    }

    #[test]
    fn blocks_tile_the_grid() {
        let dims = [37, 150, 301];
        let ext = block_extents(dims, BLOCK_TARGET);
        assert!(ext.iter().product::<usize>() <= BLOCK_TARGET);
        let grid: Vec<u32> = (0..dims.iter().product::<usize>() as u32).collect();
        let mut back = vec![0u32; grid.len()];
        let bl = blocks(dims, ext).unwrap();
        assert_eq!(bl.iter().map(Block::len).sum::<usize>(), grid.len());
        for b in &bl {
            scatter(&mut back, dims, b, &gather(&grid, dims, b));
        }
        assert_eq!(back, grid);
    }

    #[test]
    fn global_index_inverts_locate() {
        let dims = [37, 150, 301];
        let ext = block_extents(dims, BLOCK_TARGET);
        let bl = blocks(dims, ext).unwrap();
        let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
        for i in (0..dims.iter().product::<usize>()).step_by(977) {
            let (b, pos) = locate(i, dims, ext);
            let blk = &bl[(b[0] * counts[1] + b[1]) * counts[2] + b[2]];
            let local = (pos[0] * blk.ext[1] + pos[1]) * blk.ext[2] + pos[2];
            assert_eq!(blk.global_index(dims, local), i);
        }
    }

    #[test]
    fn small_grid_is_one_block() {
        assert_eq!(block_extents([10, 20, 30], BLOCK_TARGET), [10, 20, 30]);
        assert_eq!(block_extents([256, 256, 256], BLOCK_TARGET), [64, 64, 64]);
        assert_eq!(
            block_extents([256, 256, 256], ADAPTIVE_BLOCK_TARGET),
            [64, 64, 128]
        );
    }
}
