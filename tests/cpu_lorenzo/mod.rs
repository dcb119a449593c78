//! The GPU tests' reference: a chunk's Lorenzo stages (statistics, prequantization with
//! escapes, residuals, coding, and back) run job by job on the CPU, from the crate's own
//! building blocks. The library's CPU path (the pipeline) fuses them with planning and the
//! chunk's layout, so it cannot hand back one job's payloads or pre-escape values to compare.

use rayon::prelude::*;

use resid::backend::{DecodeJob, EncodeJob, Encoded};
use resid::entropy as code;
use resid::field::{self, Block, Element};
use resid::predict::lorenzo::{self, Lorenzo};
use resid::predict::registry::contexts;
use resid::quant::{self, dequantize, Stats};
use resid::{DType, Error, Result};

/// The CPU's side of every CPU == GPU comparison (rayon over blocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl Cpu {
    pub fn stats(&self, data: &[u8], dtype: DType) -> Result<Stats> {
        Ok(match dtype {
            DType::F32 => quant::stats(&field::from_bytes::<f32>(data)),
            DType::F64 => quant::stats(&field::from_bytes::<f64>(data)),
        })
    }

    pub fn encode(&self, job: &EncodeJob<'_>) -> Result<Encoded> {
        Ok(match job.dtype {
            DType::F32 => encode_typed::<f32>(job),
            DType::F64 => encode_typed::<f64>(job),
        })
    }

    /// The chunk's values (escaped positions hold placeholders), as the GPU's `decode`.
    pub fn decode(&self, job: &DecodeJob<'_>) -> Result<Vec<u8>> {
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
            // Escaped values are replaced by their prediction first, as the pipeline does.
            let mut q = field::gather(&qz.q, job.dims, b);
            Lorenzo.fill_escapes(&mut q, b.ext, esc);
            let mut r = vec![0i32; q.len()];
            Lorenzo.residuals(&q, b.ext, &mut r);
            code::encode_block(job.coder, &r, b.ext, contexts(lorenzo::ID))
        })
        .collect();
    Encoded {
        coded,
        escapes: qz.escapes,
    }
}

fn decode_typed<T: Element>(job: &DecodeJob<'_>) -> Result<Vec<u8>> {
    if job.parts.len() != job.blocks.len() {
        return Err(Error::Corrupt("block count".into()));
    }
    let decoded: Vec<Result<Vec<T>>> = job
        .blocks
        .par_iter()
        .zip(job.parts)
        .map(|(b, &(coder, bytes, crc))| {
            if crc32fast::hash(bytes) != crc {
                return Err(Error::ChecksumMismatch { what: "block" });
            }
            let mut q = vec![0i32; b.len()];
            code::decode_block(
                coder.into(),
                bytes,
                b.ext,
                contexts(lorenzo::ID).classes,
                &mut q,
            )?;
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
