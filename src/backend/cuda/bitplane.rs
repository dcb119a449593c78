//! The LZ4 path's bit-plane stage (`kernels/bitplane.cu`): zigzag codes transposed into
//! bit-planes on encode, back to residuals on decode.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::cfg;
use super::Cuda;
use crate::backend::device_error;
use crate::error::Result;
use crate::field::Block;

impl Cuda {
    /// Bit-plane transposition of zigzag codes (block-major) into `words`.
    #[allow(clippy::too_many_arguments)]
    pub fn transpose_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        ext: [usize; 3],
        nblocks: usize,
        planes: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        words: &mut CudaSlice<u64>,
    ) -> Result<()> {
        let groups = (ext.iter().product::<usize>()).div_ceil(64);
        let mut b = self.stream.launch_builder(self.f("bitplane_transpose"));
        b.arg(codes).arg(table).arg(planes).arg(word_off).arg(words);
        unsafe {
            b.launch(cfg(
                (groups.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("bitplane_transpose", e))?;
        Ok(())
    }

    /// The inverse transposition with zigzag decoding: words to residuals (block-major).
    #[allow(clippy::too_many_arguments)]
    pub fn untranspose_dev(
        &self,
        words: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        ext: [usize; 3],
        nblocks: usize,
        planes: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        r: &mut CudaSlice<i32>,
    ) -> Result<()> {
        let groups = (ext.iter().product::<usize>()).div_ceil(64);
        let mut b = self.stream.launch_builder(self.f("bitplane_untranspose"));
        b.arg(words).arg(table).arg(planes).arg(word_off).arg(r);
        unsafe {
            b.launch(cfg(
                (groups.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("bitplane_untranspose", e))?;
        Ok(())
    }
}

/// Plane counts from the blocks' OR of codes, and each block's first word.
pub fn plane_layout(blocks: &[Block], ors: &[u32]) -> (Vec<u32>, Vec<u64>, usize) {
    let planes: Vec<u32> = ors.iter().map(|&o| 32 - o.leading_zeros()).collect();
    let mut off = Vec::with_capacity(blocks.len());
    let mut total = 0usize;
    for (b, &p) in blocks.iter().zip(&planes) {
        off.push(total as u64);
        total += b.len().div_ceil(64) * p as usize;
    }
    (planes, off, total)
}
