//! The Lorenzo stage (`kernels/lorenzo.cu`): the fused prequantize + escape + Lorenzo residual
//! of every block on encode, the inverse Lorenzo and dequantization on decode; and the block
//! table every chunk kernel reads.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::kernels;
use super::launch::cfg;
use super::Cuda;
use crate::backend::device_error;
use crate::error::{ensure, Error, Result};
use crate::field::Block;
use crate::params::DType;
use crate::quant::Grid;

impl Cuda {
    /// The fused encode kernel over device data: residuals (zigzag codes when `zigzag`) in
    /// block-major order, each block's OR of codes, each block's escape count.
    #[allow(clippy::too_many_arguments)]
    pub fn lorenzo_encode_dev(
        &self,
        x: &CudaSlice<u8>,
        dtype: DType,
        dims: [usize; 3],
        ext: [usize; 3],
        table: &CudaSlice<u64>,
        nblocks: usize,
        grid: Grid,
        eb: f64,
        zigzag: bool,
        codes: &mut CudaSlice<i32>,
        block_or: &mut CudaSlice<u32>,
        block_esc: &mut CudaSlice<u32>,
    ) -> Result<()> {
        ensure!(
            nblocks <= 65535,
            Error::Unsupported("cuda: more than 65535 blocks".into())
        );
        let tiles_x = ext[2].div_ceil(kernels::TILE_X) as u32;
        let tiles = tiles_x as usize * ext[1].div_ceil(kernels::TILE_Y);
        ensure!(
            tiles < i32::MAX as usize,
            Error::Unsupported("cuda: block too wide".into())
        );
        let f = self.f(match dtype {
            DType::F32 => "lorenzo_encode_f32",
            DType::F64 => "lorenzo_encode_f64",
        });
        let (d1, d2) = (dims[1] as u64, dims[2] as u64);
        let inv = 1.0 / grid.step;
        let zz: i32 = zigzag.into();
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(&d1)
            .arg(&d2)
            .arg(table)
            .arg(&tiles_x)
            .arg(&grid.mid)
            .arg(&inv)
            .arg(&grid.step)
            .arg(&eb)
            .arg(&zz)
            .arg(codes)
            .arg(block_or)
            .arg(block_esc);
        unsafe {
            b.launch(cfg(
                (tiles as u32, nblocks as u32, 1),
                (kernels::TILE_X as u32, kernels::TILE_Y as u32, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_encode", e))?;
        Ok(())
    }

    /// Whether every block of extent at most `ext` takes the one-pass decode.
    pub fn one_pass(ext: [usize; 3]) -> bool {
        ext[1] * ext[2] <= kernels::PLANE_MAX && ext[1] * (ext[2] | 1) <= kernels::PLANE_PAD
    }

    /// Inverse Lorenzo + dequantization: residuals (block-major, overwritten by the multi-pass
    /// path) to values (device bytes of `dtype`, grid order). `force_multi` picks the
    /// three-pass path even where the one-pass kernel applies (for tests and benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn lorenzo_decode_dev(
        &self,
        r: &mut CudaSlice<i32>,
        table: &CudaSlice<u64>,
        dims: [usize; 3],
        ext: [usize; 3],
        nblocks: usize,
        grid: Grid,
        dtype: DType,
        out: &mut CudaSlice<u8>,
        force_multi: bool,
    ) -> Result<()> {
        ensure!(
            nblocks <= 65535,
            Error::Unsupported("cuda: more than 65535 blocks".into())
        );
        let (d1, d2) = (dims[1] as u64, dims[2] as u64);
        let sfx = match dtype {
            DType::F32 => "f32",
            DType::F64 => "f64",
        };
        if Self::one_pass(ext) && !force_multi {
            let f = self.f(&format!("lorenzo_decode_planes_{sfx}"));
            let mut b = self.stream.launch_builder(f);
            b.arg(&*r)
                .arg(table)
                .arg(&d1)
                .arg(&d2)
                .arg(&grid.mid)
                .arg(&grid.step)
                .arg(out);
            unsafe { b.launch(cfg((nblocks as u32, 1, 1), (kernels::DEC_THREADS, 1, 1))) }
                .map_err(|e| device_error("lorenzo_decode_planes", e))?;
            return Ok(());
        }
        let rows = ext[0] * ext[1];
        let mut b = self.stream.launch_builder(self.f("lorenzo_scan_x"));
        b.arg(&mut *r).arg(table);
        unsafe {
            b.launch(cfg(
                (rows.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_x", e))?;
        let cols = ext[0] * ext[2];
        let mut b = self.stream.launch_builder(self.f("lorenzo_scan_y"));
        b.arg(&mut *r).arg(table);
        unsafe {
            b.launch(cfg(
                (cols.div_ceil(256) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_y", e))?;
        let plane = ext[1] * ext[2];
        let f = self.f(&format!("lorenzo_scan_z_{sfx}"));
        let mut b = self.stream.launch_builder(f);
        b.arg(&*r)
            .arg(table)
            .arg(&d1)
            .arg(&d2)
            .arg(&grid.mid)
            .arg(&grid.step)
            .arg(out);
        unsafe {
            b.launch(cfg(
                (plane.div_ceil(256) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_z", e))?;
        Ok(())
    }
}

/// The block table the kernels read (`BlockDesc` in `common.cuh`): origin, extent and
/// block-major offset of every block, 8 u64 each; and the offsets.
pub fn block_table(blocks: &[Block]) -> (Vec<u64>, Vec<usize>) {
    let mut t = Vec::with_capacity(blocks.len() * 8);
    let mut offsets = Vec::with_capacity(blocks.len());
    let mut off = 0usize;
    for b in blocks {
        offsets.push(off);
        t.extend(b.origin.iter().chain(&b.ext).map(|&v| v as u64));
        t.extend([off as u64, 0]);
        off += b.len();
    }
    (t, offsets)
}
