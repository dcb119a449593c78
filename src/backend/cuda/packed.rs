//! The packed coder's stage (`kernels/packed.cu`): a fixed bit width per group of 32 codes,
//! coded and decoded on the device.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::launch::cfg;
use super::Cuda;
use crate::backend::device_error;
use crate::entropy::packed;
use crate::error::Result;
use crate::field::Block;

impl Cuda {
    /// The packed coder's group widths of zigzag codes (block-major): `widths[group_off[b] + g]`.
    pub fn packed_widths_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        widths: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_widths"));
        b.arg(codes).arg(table).arg(group_off).arg(widths);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_widths", e))?;
        Ok(())
    }

    /// Per block, the exclusive prefix sum of the widths found at `widths + width_off[b]`:
    /// each group's first word in its block (`first[group_off[b] + g]`) and the block's total.
    #[allow(clippy::too_many_arguments)]
    pub fn packed_scan_dev(
        &self,
        widths: &CudaSlice<u8>,
        width_off: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        nblocks: usize,
        group_off: &CudaSlice<u64>,
        first: &mut CudaSlice<u32>,
        total: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_scan"));
        b.arg(widths)
            .arg(width_off)
            .arg(table)
            .arg(group_off)
            .arg(first)
            .arg(total);
        unsafe { b.launch(cfg((nblocks as u32, 1, 1), (1024, 1, 1))) }
            .map_err(|e| device_error("packed_scan", e))?;
        Ok(())
    }

    /// The packed words of every block, block `b`'s from word `word_off[b]` of `words` (bytes,
    /// little-endian u32 words).
    #[allow(clippy::too_many_arguments)]
    pub fn packed_write_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        widths: &CudaSlice<u8>,
        first: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        words: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_write"));
        b.arg(codes)
            .arg(table)
            .arg(group_off)
            .arg(widths)
            .arg(first)
            .arg(word_off)
            .arg(words);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_write", e))?;
        Ok(())
    }

    /// Residuals (block-major) from packed payloads laid end to end in `payload`, block `b`'s
    /// at byte `pay_off[b]` and its words at byte `words_at[b]`; `first` from
    /// [`Cuda::packed_scan_dev`] over the same payloads.
    #[allow(clippy::too_many_arguments)]
    pub fn packed_read_dev(
        &self,
        payload: &CudaSlice<u8>,
        pay_off: &CudaSlice<u64>,
        words_at: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        first: &CudaSlice<u32>,
        r: &mut CudaSlice<i32>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_read"));
        b.arg(payload)
            .arg(pay_off)
            .arg(words_at)
            .arg(table)
            .arg(group_off)
            .arg(first)
            .arg(r);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_read", e))?;
        Ok(())
    }
}

/// Where each block's groups of the packed coder start in the chunk-wide group arrays.
#[derive(Debug, Clone)]
pub struct PackedLayout {
    /// Per block, its first group.
    pub group_off: Vec<u64>,
    /// Groups in all.
    pub groups: usize,
    /// The most groups of one block.
    pub max_groups: usize,
    pub nblocks: usize,
}

impl PackedLayout {
    pub fn of(blocks: &[Block]) -> PackedLayout {
        let mut group_off = Vec::with_capacity(blocks.len());
        let (mut groups, mut max_groups) = (0usize, 0usize);
        for b in blocks {
            group_off.push(groups as u64);
            let g = b.len().div_ceil(packed::GROUP);
            groups += g;
            max_groups = max_groups.max(g);
        }
        PackedLayout {
            group_off,
            groups,
            max_groups,
            nblocks: blocks.len(),
        }
    }

    /// One warp a group: (ceil(max groups / 8), blocks) CTAs of 256 threads.
    fn warp_grid(&self) -> LaunchConfig {
        cfg(
            (
                self.max_groups.div_ceil(8).max(1) as u32,
                self.nblocks as u32,
                1,
            ),
            (256, 1, 1),
        )
    }
}
