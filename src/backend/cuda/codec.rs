//! The chunk codec on the device: the stages of the other modules in order (upload,
//! statistics, Lorenzo, the coder's stage, download), and the CPU's share (the range coder,
//! LZ4, blocks with escapes).

use cudarc::driver::CudaSlice;
use rayon::prelude::*;

use super::bitplane::plane_layout;
use super::host;
use super::lorenzo::block_table;
use super::packed::PackedLayout;
use super::{guard, Cuda};
use crate::backend::{chunk_plan, verify, DecodeJob, EncodeJob, Encoded};
use crate::entropy::{self as code, packed};
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::params::{ChunkInfo, Coder, DType, Params};
use crate::predict::{lorenzo, registry::contexts};
use crate::quant::{Grid, Stats};

/// One block's values, gathered from the chunk's bytes.
fn gather_values<T: Element>(data: &[u8], dims: [usize; 3], b: &Block) -> Vec<T> {
    let mut out = Vec::with_capacity(b.len());
    for z in 0..b.ext[0] {
        for y in 0..b.ext[1] {
            let start = ((b.origin[0] + z) * dims[1] + b.origin[1] + y) * dims[2] + b.origin[2];
            out.extend(field::from_bytes::<T>(
                &data[start * T::SIZE..(start + b.ext[2]) * T::SIZE],
            ));
        }
    }
    out
}

/// A block with escaped values, redone on the CPU: payload and global escape indices.
fn redo_block<T: Element>(job: &EncodeJob<'_>, b: &Block) -> (Vec<u8>, Vec<usize>) {
    let xb = gather_values::<T>(job.data, job.dims, b);
    let (coded, local) = host::encode_block_values(&xb, b.ext, job.grid, job.eb, job.coder);
    let global = local
        .iter()
        .map(|&li| b.global_index(job.dims, li))
        .collect();
    (coded, global)
}

/// A block's payload and the global indices of its escaped values.
type Part = (Vec<u8>, Vec<usize>);

/// [`redo_block`] for the job's element type.
fn redo(job: &EncodeJob<'_>, b: &Block) -> Part {
    match job.dtype {
        DType::F32 => redo_block::<f32>(job, b),
        DType::F64 => redo_block::<f64>(job, b),
    }
}

impl Cuda {
    /// Encodes `job` from its values already on the device (`x`, freed once quantized).
    fn encode_dev(&self, job: &EncodeJob<'_>, x: CudaSlice<u8>) -> Result<Encoded> {
        let nb = job.blocks.len();
        let n: usize = job.blocks.iter().map(Block::len).sum();
        let (table, offsets) = block_table(job.blocks);
        let table_d = self.upload(&table)?;
        let mut codes = self.zeros::<i32>(n)?;
        let mut ors = self.zeros::<u32>(nb)?;
        let mut escs = self.zeros::<u32>(nb)?;
        let lz4 = job.coder == Coder::Lz4;
        // The device codes zigzag codes into the payloads of the coders it runs (LZ4, packed);
        // the other coders code the residuals themselves, on the host.
        let zigzag = matches!(job.coder, Coder::Lz4 | Coder::Packed);
        self.lorenzo_encode_dev(
            &x, job.dtype, job.dims, job.ext, &table_d, nb, job.grid, job.eb, zigzag, &mut codes,
            &mut ors, &mut escs,
        )?;
        drop(x);
        let ors_h = self.download(&ors)?;
        let escs_h = self.download(&escs)?;
        let parts: Vec<Part> = if job.coder == Coder::Packed {
            self.packed_payloads(job, &codes, &table_d, &escs_h)?
        } else if lz4 {
            self.lz4_payloads(job, &codes, &table_d, &ors_h, &escs_h)?
        } else {
            self.host_payloads(job, &codes, &offsets, &escs_h)?
        };
        let mut escapes = Vec::new();
        let mut coded = Vec::with_capacity(nb);
        for (c, e) in parts {
            coded.push(c);
            escapes.extend(e);
        }
        escapes.sort_unstable();
        Ok(Encoded { coded, escapes })
    }

    /// Every block's packed payload, coded on the device from the zigzag `codes` (blocks with
    /// escapes, `escs_h[i] > 0`, redone on the CPU).
    fn packed_payloads(
        &self,
        job: &EncodeJob<'_>,
        codes: &CudaSlice<i32>,
        table_d: &CudaSlice<u64>,
        escs_h: &[u32],
    ) -> Result<Vec<Part>> {
        let nb = job.blocks.len();
        let layout = PackedLayout::of(job.blocks);
        let goff_d = self.upload(&layout.group_off)?;
        let mut widths = self.zeros::<u8>(layout.groups)?;
        self.packed_widths_dev(codes, table_d, &layout, &goff_d, &mut widths)?;
        let mut first = self.zeros::<u32>(layout.groups)?;
        let mut totals = self.zeros::<u32>(nb)?;
        self.packed_scan_dev(
            &widths,
            &goff_d,
            table_d,
            nb,
            &goff_d,
            &mut first,
            &mut totals,
        )?;
        let totals_h = self.download(&totals)?;
        let mut word_off = Vec::with_capacity(nb);
        let mut all_words = 0usize;
        for &t in &totals_h[..nb] {
            word_off.push(all_words as u64);
            all_words += t as usize;
        }
        let woff_d = self.upload(&word_off)?;
        let mut words = self.zeros::<u8>(4 * all_words)?;
        self.packed_write_dev(
            codes, table_d, &layout, &goff_d, &widths, &first, &woff_d, &mut words,
        )?;
        let widths_h = self.download_staged(&widths)?;
        let words_h = self.download_staged(&words)?;
        Ok((0..nb)
            .into_par_iter()
            .map(|i| {
                let b = &job.blocks[i];
                if escs_h[i] > 0 {
                    return redo(job, b);
                }
                let g0 = layout.group_off[i] as usize;
                let (w0, t) = (4 * word_off[i] as usize, 4 * totals_h[i] as usize);
                let head = packed::widths_len(b.len());
                let mut p = Vec::with_capacity(head + t);
                p.extend_from_slice(&widths_h[g0..g0 + b.len().div_ceil(packed::GROUP)]);
                p.resize(head, 0);
                p.extend_from_slice(&words_h[w0..w0 + t]);
                (p, Vec::new())
            })
            .collect())
    }

    /// Every block's LZ4 payload from the zigzag `codes`, transposed into bit-planes on the
    /// device (`ors_h`: each block's OR of codes) and compressed on the CPU (blocks with
    /// escapes redone there).
    fn lz4_payloads(
        &self,
        job: &EncodeJob<'_>,
        codes: &CudaSlice<i32>,
        table_d: &CudaSlice<u64>,
        ors_h: &[u32],
        escs_h: &[u32],
    ) -> Result<Vec<Part>> {
        let nb = job.blocks.len();
        let (planes, woff, total) = plane_layout(job.blocks, ors_h);
        let planes_d = self.upload(&planes)?;
        let woff_d = self.upload(&woff)?;
        let mut words = self.zeros::<u64>(total)?;
        self.transpose_dev(codes, table_d, job.ext, nb, &planes_d, &woff_d, &mut words)?;
        let words_h = self.download_staged(&words)?;
        Ok((0..nb)
            .into_par_iter()
            .map(|i| {
                let b = &job.blocks[i];
                if escs_h[i] > 0 {
                    return redo(job, b);
                }
                let len = b.len().div_ceil(64) * planes[i] as usize;
                let w = &words_h[woff[i] as usize..woff[i] as usize + len];
                (host::lz4_payload(planes[i], w), Vec::new())
            })
            .collect())
    }

    /// Every block's payload coded on the CPU (the range coder) from the residuals `codes`,
    /// block `i`'s from `offsets[i]` (blocks with escapes redone there).
    fn host_payloads(
        &self,
        job: &EncodeJob<'_>,
        codes: &CudaSlice<i32>,
        offsets: &[usize],
        escs_h: &[u32],
    ) -> Result<Vec<Part>> {
        let nb = job.blocks.len();
        let r = self.download_staged(codes)?;
        Ok((0..nb)
            .into_par_iter()
            .map(|i| {
                let b = &job.blocks[i];
                if escs_h[i] > 0 {
                    return redo(job, b);
                }
                let rb = &r[offsets[i]..offsets[i] + b.len()];
                (
                    code::encode_block(job.coder, rb, b.ext, contexts(lorenzo::ID)),
                    Vec::new(),
                )
            })
            .collect())
    }

    /// Decodes `job` to the values on the device (bytes of the chunk's type).
    fn decode_dev(&self, job: &DecodeJob<'_>) -> Result<CudaSlice<u8>> {
        let nb = job.blocks.len();
        ensure!(job.parts.len() == nb, Error::Corrupt("block count".into()));
        verify(job.parts)?;
        let n: usize = job.blocks.iter().map(Block::len).sum();
        let (table, offsets) = block_table(job.blocks);
        let table_d = self.upload(&table)?;
        let all_lz4 = job.parts.iter().all(|p| p.0 == Coder::Lz4);
        let all_packed = job.parts.iter().all(|p| p.0 == Coder::Packed);
        let mut r_d = if all_packed {
            self.packed_residuals(job, &table_d, n)?
        } else if all_lz4 {
            self.lz4_residuals(job, &table_d, n)?
        } else {
            self.host_residuals(job, &offsets, n)?
        };
        let mut out = self.zeros::<u8>(n * job.dtype.size())?;
        self.lorenzo_decode_dev(
            &mut r_d, &table_d, job.dims, job.ext, nb, job.grid, job.dtype, &mut out, false,
        )?;
        Ok(out)
    }

    /// The `n` residuals (block-major, on the device) of packed payloads, decoded there.
    fn packed_residuals(
        &self,
        job: &DecodeJob<'_>,
        table_d: &CudaSlice<u64>,
        n: usize,
    ) -> Result<CudaSlice<i32>> {
        let nb = job.blocks.len();
        // Checked on the host (widths, padding, lengths), so the kernels read only inside
        // the payloads.
        job.blocks
            .par_iter()
            .zip(job.parts)
            .try_for_each(|(b, p)| packed::check(p.1, b.len()).map(|_| ()))?;
        let mut pay_off = Vec::with_capacity(nb);
        let mut words_at = Vec::with_capacity(nb);
        let mut all = Vec::with_capacity(job.parts.iter().map(|p| p.1.len()).sum());
        for (b, p) in job.blocks.iter().zip(job.parts) {
            pay_off.push(all.len() as u64);
            words_at.push((all.len() + packed::widths_len(b.len())) as u64);
            all.extend_from_slice(p.1);
        }
        let layout = PackedLayout::of(job.blocks);
        let payload_d = self.upload_staged(if all.is_empty() { &[0u8][..] } else { &all })?;
        let pay_off_d = self.upload(&pay_off)?;
        let words_at_d = self.upload(&words_at)?;
        let goff_d = self.upload(&layout.group_off)?;
        let mut first = self.zeros::<u32>(layout.groups)?;
        let mut totals = self.zeros::<u32>(nb)?;
        self.packed_scan_dev(
            &payload_d,
            &pay_off_d,
            table_d,
            nb,
            &goff_d,
            &mut first,
            &mut totals,
        )?;
        let mut r_d = self.zeros::<i32>(n)?;
        self.packed_read_dev(
            &payload_d,
            &pay_off_d,
            &words_at_d,
            table_d,
            &layout,
            &goff_d,
            &first,
            &mut r_d,
        )?;
        Ok(r_d)
    }

    /// The `n` residuals (block-major, on the device) of LZ4 payloads: decompressed on the CPU,
    /// the bit-planes transposed back on the device.
    fn lz4_residuals(
        &self,
        job: &DecodeJob<'_>,
        table_d: &CudaSlice<u64>,
        n: usize,
    ) -> Result<CudaSlice<i32>> {
        let nb = job.blocks.len();
        let words: Vec<Result<(u32, Vec<u64>)>> = job
            .blocks
            .par_iter()
            .zip(job.parts)
            .map(|(b, p)| host::lz4_words(p.1, b.len()))
            .collect();
        let mut planes = Vec::with_capacity(nb);
        let mut woff = Vec::with_capacity(nb);
        let mut all = Vec::new();
        for w in words {
            let (p, w) = w?;
            planes.push(p);
            woff.push(all.len() as u64);
            all.extend_from_slice(&w);
        }
        let words_d = self.upload(if all.is_empty() { &[0u64][..] } else { &all })?;
        let planes_d = self.upload(&planes)?;
        let woff_d = self.upload(&woff)?;
        let mut r_d = self.zeros::<i32>(n)?;
        self.untranspose_dev(&words_d, table_d, job.ext, nb, &planes_d, &woff_d, &mut r_d)?;
        Ok(r_d)
    }

    /// The `n` residuals (block-major, uploaded) of payloads decoded on the CPU (any coder),
    /// block `i`'s from `offsets[i]`.
    fn host_residuals(
        &self,
        job: &DecodeJob<'_>,
        offsets: &[usize],
        n: usize,
    ) -> Result<CudaSlice<i32>> {
        let nb = job.blocks.len();
        let mut r = vec![0i32; n];
        let mut slices: Vec<&mut [i32]> = Vec::with_capacity(nb);
        let mut rest = &mut r[..];
        for (i, b) in job.blocks.iter().enumerate() {
            debug_assert_eq!(offsets[i], n - rest.len());
            let (head, tail) = rest.split_at_mut(b.len());
            slices.push(head);
            rest = tail;
        }
        slices
            .into_par_iter()
            .zip(job.blocks.par_iter().zip(job.parts))
            .try_for_each(|(dst, (b, &(coder, bytes, _)))| {
                code::decode_block(
                    coder.into(),
                    bytes,
                    b.ext,
                    contexts(lorenzo::ID).classes,
                    dst,
                )
            })?;
        self.upload_staged(&r)
    }
}

/// A chunk's Lorenzo stages, each giving the CPU pipeline's bytes.
impl Cuda {
    /// Range statistics of the finite values (as `quant::stats`).
    pub fn stats(&self, data: &[u8], dtype: DType) -> Result<Stats> {
        guard("stats", || {
            let x = self.upload_staged(data)?;
            self.stats_dev(&x, dtype)
        })
    }

    /// Every block's payload and the escaped values' sorted flat indices.
    pub fn encode(&self, job: &EncodeJob<'_>) -> Result<Encoded> {
        guard("encode", || {
            self.encode_dev(job, self.upload_staged(job.data)?)
        })
    }

    /// Statistics, grid and encode of a whole chunk, uploaded once; `None` when the grid is
    /// not the kernels' (NRMSE / PSNR targets, or no usable bound).
    pub fn encode_chunk(
        &self,
        data: &[u8],
        chunk: &ChunkInfo,
        params: &Params,
    ) -> Result<Option<(Grid, f64, Encoded)>> {
        guard("encode", || {
            let x = self.upload_staged(data)?;
            let st = self.stats_dev(&x, chunk.dtype)?;
            let Some((grid, eb, geo)) = chunk_plan(&st, chunk, params)? else {
                return Ok(None);
            };
            let job = geo.job(data, chunk.dtype, grid, eb, params.coder);
            Ok(Some((grid, eb, self.encode_dev(&job, x)?)))
        })
    }

    /// The chunk's values as little-endian bytes (escaped positions hold placeholders); the
    /// blocks' checksums are verified.
    pub fn decode(&self, job: &DecodeJob<'_>) -> Result<Vec<u8>> {
        guard("decode", || {
            let n: usize = job.blocks.iter().map(Block::len).sum();
            let mut v = self.download_staged(&self.decode_dev(job)?)?;
            v.truncate(n * job.dtype.size());
            Ok(v)
        })
    }

    /// [`Cuda::decode`] straight into `out`, which holds exactly the chunk's bytes.
    pub fn decode_into(&self, job: &DecodeJob<'_>, out: &mut [u8]) -> Result<()> {
        guard("decode", || {
            let dev = self.decode_dev(job)?;
            if out.is_empty() {
                return Ok(()); // the device buffer holds a placeholder byte
            }
            self.download_staged_into(&dev, out)
        })
    }
}
