//! The CPU backend: the crate's own Rust stages, the reference the GPU must match byte for byte.

use rayon::prelude::*;

use super::{DecodeJob, EncodeJob, Encoded, Stages};
use crate::entropy::{self as code, zigzag};
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::params::{Coder, DType};
use crate::predict::lorenzo::{self, Lorenzo};
use crate::predict::registry::contexts;
use crate::quant::{self, dequantize, Grid, Stats};

pub const NAME: &str = "cpu";

/// Runs every stage with the crate's CPU code (rayon over blocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl Stages for Cpu {
    fn name(&self) -> String {
        NAME.into()
    }

    fn stats(&self, data: &[u8], dtype: DType) -> Result<Stats> {
        Ok(match dtype {
            DType::F32 => quant::stats(&field::from_bytes::<f32>(data)),
            DType::F64 => quant::stats(&field::from_bytes::<f64>(data)),
        })
    }

    fn encode(&self, job: &EncodeJob<'_>) -> Result<Encoded> {
        Ok(match job.dtype {
            DType::F32 => encode_typed::<f32>(job),
            DType::F64 => encode_typed::<f64>(job),
        })
    }

    fn decode(&self, job: &DecodeJob<'_>) -> Result<Vec<u8>> {
        match job.dtype {
            DType::F32 => decode_typed::<f32>(job),
            DType::F64 => decode_typed::<f64>(job),
        }
    }
}

fn encode_typed<T: Element>(job: &EncodeJob<'_>) -> Encoded {
    let x: Vec<T> = field::from_bytes(job.data);
    let qz = quant::quantize(&x, job.grid, job.eb, true);
    let mut local: Vec<Vec<usize>> = vec![Vec::new(); job.blocks.len()];
    let counts = [0, 1, 2].map(|k| job.dims[k].div_ceil(job.ext[k]));
    for &i in &qz.escapes {
        let (b, pos) = field::locate(i, job.dims, job.ext);
        let bi = (b[0] * counts[1] + b[1]) * counts[2] + b[2];
        let e = job.blocks[bi].ext;
        local[bi].push((pos[0] * e[1] + pos[1]) * e[2] + pos[2]);
    }
    let coded = job
        .blocks
        .par_iter()
        .zip(&local)
        .map(|(b, esc)| {
            let r = residuals_from_q(field::gather(&qz.q, job.dims, b), b.ext, esc);
            code::encode_block(job.coder, &r, b.ext, contexts(lorenzo::ID))
        })
        .collect();
    Encoded {
        coded,
        escapes: qz.escapes,
    }
}

/// Lorenzo residuals of one block's grid indices, escaped values (block-local indices)
/// replaced by their prediction first, as the pipeline does.
pub fn residuals_from_q(mut q: Vec<i32>, ext: [usize; 3], escapes: &[usize]) -> Vec<i32> {
    Lorenzo.fill_escapes(&mut q, ext, escapes);
    let mut r = vec![0i32; q.len()];
    Lorenzo.residuals(&q, ext, &mut r);
    r
}

/// One block from its values: quantize, residuals, code. Returns the payload and the
/// block-local indices of its escaped values. The GPU backend calls this for blocks that hold
/// escaped values.
pub fn encode_block_values<T: Element>(
    xb: &[T],
    ext: [usize; 3],
    grid: Grid,
    eb: f64,
    coder: Coder,
) -> (Vec<u8>, Vec<usize>) {
    let qz = quant::quantize(xb, grid, eb, true);
    let r = residuals_from_q(qz.q, ext, &qz.escapes);
    (
        code::encode_block(coder, &r, ext, contexts(lorenzo::ID)),
        qz.escapes,
    )
}

fn decode_typed<T: Element>(job: &DecodeJob<'_>) -> Result<Vec<u8>> {
    ensure!(
        job.parts.len() == job.blocks.len(),
        Error::Corrupt("block count".into())
    );
    let decoded: Vec<Result<Vec<T>>> = job
        .blocks
        .par_iter()
        .zip(job.parts)
        .map(|(b, &(coder, bytes, crc))| {
            ensure!(
                crc32fast::hash(bytes) == crc,
                Error::ChecksumMismatch { what: "block" }
            );
            let mut q = decode_residuals(coder, bytes, b)?;
            Lorenzo.reconstruct(&mut q, b.ext);
            Ok(q.iter().map(|&v| dequantize::<T>(v, job.grid)).collect())
        })
        .collect();
    let mut values = vec![T::from_f64(0.0); job.blocks.iter().map(Block::len).sum()];
    for (b, d) in job.blocks.iter().zip(decoded) {
        field::scatter(&mut values, job.dims, b, &d?);
    }
    Ok(field::to_bytes(&values))
}

/// A block's residuals from its payload (the CPU half of a GPU decode on the range path).
pub fn decode_residuals(coder: Coder, bytes: &[u8], b: &Block) -> Result<Vec<i32>> {
    let mut r = vec![0i32; b.len()];
    code::decode_block(
        coder.into(),
        bytes,
        b.ext,
        contexts(lorenzo::ID).classes,
        &mut r,
    )?;
    Ok(r)
}

/// The bit-plane transposition of the lz4 path (`code::lz4`) without the LZ4 step: the plane
/// count and the words.
pub fn transpose(r: &[i32]) -> (u32, Vec<u64>) {
    let codes: Vec<u32> = r.iter().map(|&v| zigzag::encode(v)).collect();
    let planes = 32 - codes.iter().fold(0, |a, &c| a | c).leading_zeros();
    let mut words = Vec::with_capacity(codes.len().div_ceil(64) * planes as usize);
    for group in codes.chunks(64) {
        for p in (0..planes).rev() {
            let mut w = 0u64;
            for (j, &c) in group.iter().enumerate() {
                w |= (((c >> p) & 1) as u64) << j;
            }
            words.push(w);
        }
    }
    (planes, words)
}

/// The lz4 block payload of transposed words: what `code::lz4::encode` writes.
pub fn lz4_payload(planes: u32, words: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let mut out = vec![planes as u8];
    out.extend_from_slice(&lz4_flex::compress_prepend_size(&bytes));
    out
}

/// The words of an lz4 block payload for a block of `n` codes, with the checks of
/// `code::lz4::decode`.
pub fn lz4_words(bytes: &[u8], n: usize) -> Result<(u32, Vec<u64>)> {
    ensure!(bytes.len() >= 5, Error::Truncated { what: "lz4 block" });
    let planes = bytes[0] as u32;
    ensure!(
        planes <= 32,
        Error::Corrupt(format!("lz4 block declares {planes} bit-planes"))
    );
    let expected = n.div_ceil(64) * planes as usize * 8;
    let declared = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    ensure!(
        declared == expected,
        Error::Corrupt(format!(
            "lz4 block declares {declared} bytes, its extent needs {expected}"
        ))
    );
    let raw = lz4_flex::decompress_size_prepended(&bytes[1..])
        .map_err(|e| Error::Corrupt(format!("lz4 block: {e}")))?;
    ensure!(
        raw.len() == expected,
        Error::Corrupt("lz4 block decodes to the wrong size".into())
    );
    let words = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((planes, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_the_lz4_path() {
        for n in [1usize, 63, 64, 65, 1000] {
            let r: Vec<i32> = (0..n as i32).map(|i| (i * 37 % 201) - 100).collect();
            let (p, w) = transpose(&r);
            assert_eq!(lz4_payload(p, &w), code::lz4::encode(&r));
            let (p2, w2) = lz4_words(&code::lz4::encode(&r), n).unwrap();
            assert_eq!((p2, w2), (p, w));
        }
    }
}
