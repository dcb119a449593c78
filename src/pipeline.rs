//! Chains the stages: `bytes -> field -> quantize -> predict -> code -> container` and back.

use rayon::prelude::*;

use crate::code;
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::format::{self, section, Header, Layout, Reader};
use crate::params::{ChunkInfo, Coder, DType, Params, PredictorChoice};
use crate::predict::{self, interp::Interp, lorenzo::Lorenzo, BlockEncoder, Predictor};
use crate::quant::{self, dequantize, Grid, Plan};

pub fn compress(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Result<Vec<u8>> {
    params.validate()?;
    let expected = chunk.byte_len()?;
    ensure!(
        data.len() == expected,
        Error::SizeMismatch {
            expected,
            actual: data.len()
        }
    );
    match chunk.dtype {
        DType::F32 => compress_typed::<f32>(data, chunk, params),
        DType::F64 => compress_typed::<f64>(data, chunk, params),
    }
}

fn compress_typed<T: Element>(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Result<Vec<u8>> {
    let x: Vec<T> = field::from_bytes(data);
    let coded = quant::plan(&x, params).map(|plan| encode_coded(&x, chunk, params, &plan));
    match coded {
        Some(bytes) if bytes.len() < format::stored_len(chunk.shape.len(), data.len()) => Ok(bytes),
        _ => Ok(encode_stored(data, chunk, params)),
    }
}

fn base_header(chunk: &ChunkInfo, params: &Params) -> Header {
    Header {
        layout: Layout::Stored,
        dtype: chunk.dtype,
        shape: chunk.shape.clone(),
        mode: params.mode,
        coder: params.coder,
        requested: params.bound,
        eb: 0.0,
        mid: 0.0,
        step: 0.0,
        feedback: 0,
        block: [0; 3],
        sections: 1,
    }
}

/// The chunk's bytes as they are, behind a header: the output never grows by more than that.
fn encode_stored(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + format::MAX_OVERHEAD);
    base_header(chunk, params).write(&mut out);
    format::write_section(&mut out, section::STORED, data);
    out
}

fn encode_coded<T: Element>(x: &[T], chunk: &ChunkInfo, params: &Params, plan: &Plan) -> Vec<u8> {
    let dims = field::grid_dims(&chunk.shape);
    let ext = field::block_extents(dims);
    let blocks = field::blocks(dims, ext).expect("extents are positive");
    let q = &plan.quantized.q;

    // Values the grid cannot hold, per block, as indices inside the block (increasing).
    let mut local_escapes: Vec<Vec<usize>> = vec![Vec::new(); blocks.len()];
    let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
    for &i in &plan.quantized.escapes {
        let (b, pos) = field::locate(i, dims, ext);
        let n = (b[0] * counts[1] + b[1]) * counts[2] + b[2];
        let bext = blocks[n].ext;
        local_escapes[n].push((pos[0] * bext[1] + pos[1]) * bext[2] + pos[2]);
    }

    let candidates: &[&dyn Predictor] = match params.predictor {
        PredictorChoice::Auto => &[&Lorenzo, &Interp],
        PredictorChoice::Lorenzo => &[&Lorenzo],
        PredictorChoice::Interp => &[&Interp],
    };
    let coded: Vec<(u8, Vec<u8>, Vec<usize>)> = blocks
        .par_iter()
        .zip(&local_escapes)
        .map(|(b, esc)| {
            let bx: Vec<f64> = field::gather(x, dims, b)
                .iter()
                .map(|v| v.to_f64())
                .collect();
            let bq = field::gather(q, dims, b);
            let mut escaped = vec![false; bq.len()];
            for &li in esc {
                escaped[li] = true;
            }
            let single = T::SIZE == 4;
            let predictor = choose_predictor(
                candidates,
                &bx,
                &bq,
                &escaped,
                b.ext,
                plan,
                params.coder,
                single,
            );
            let id = predictor.id();
            let (codes, escaped) =
                predict_block(predictor, &bx, &bq, &escaped, b.ext, plan, single);
            let global: Vec<usize> = escaped
                .iter()
                .enumerate()
                .filter(|(_, &e)| e)
                .map(|(li, _)| {
                    let (z, y, x) = (
                        li / (b.ext[1] * b.ext[2]),
                        (li / b.ext[2]) % b.ext[1],
                        li % b.ext[2],
                    );
                    ((b.origin[0] + z) * dims[1] + b.origin[1] + y) * dims[2] + b.origin[2] + x
                })
                .collect();
            (
                id,
                code::encode_block(params.coder, &codes, b.ext, id),
                global,
            )
        })
        .collect();
    let mut escapes: Vec<usize> = coded
        .iter()
        .flat_map(|(_, _, e)| e.iter().copied())
        .collect();
    escapes.sort_unstable();

    let mut blocks_payload = Vec::new();
    blocks_payload.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for (id, c, _) in &coded {
        blocks_payload.push(*id);
        blocks_payload.push(code::coder_id(params.coder));
        blocks_payload.extend_from_slice(&[0, 0]);
        blocks_payload.extend_from_slice(&(c.len() as u32).to_le_bytes());
        blocks_payload.extend_from_slice(&crc32fast::hash(c).to_le_bytes());
    }
    for (_, c, _) in &coded {
        blocks_payload.extend_from_slice(c);
    }

    let mut esc_payload = Vec::new();
    esc_payload.extend_from_slice(&(escapes.len() as u64).to_le_bytes());
    let mut prev = None;
    for &i in &escapes {
        format::put_varint(
            &mut esc_payload,
            match prev {
                None => i as u64,
                Some(p) => (i - p - 1) as u64,
            },
        );
        prev = Some(i);
    }
    for &i in &escapes {
        x[i].write_le(&mut esc_payload);
    }

    let header = Header {
        layout: Layout::Coded,
        eb: plan.eb,
        mid: plan.grid.mid,
        step: plan.grid.step,
        feedback: plan.m as u16,
        block: ext,
        sections: 2,
        ..base_header(chunk, params)
    };
    let mut out = Vec::with_capacity(64 + blocks_payload.len() + esc_payload.len());
    header.write(&mut out);
    format::write_section(&mut out, section::BLOCKS, &blocks_payload);
    format::write_section(&mut out, section::ESCAPES, &esc_payload);
    out
}

/// Codes one block with `predictor`: returns the codes and which points ended up escaped.
fn predict_block(
    predictor: &dyn Predictor,
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    plan: &Plan,
    single: bool,
) -> (Vec<i32>, Vec<bool>) {
    let mut blk = BlockEncoder {
        x,
        escaped: escaped.to_vec(),
        grid: plan.grid,
        eb: plan.eb,
        single,
        m: plan.m,
    };
    let mut recon = q.to_vec();
    let mut codes = vec![0i32; q.len()];
    predictor.encode(&mut blk, &mut recon, ext, &mut codes);
    (codes, blk.escaped)
}

/// Blocks up to this many values are tried whole with every candidate predictor; larger ones
/// on a central sample of about an eighth of their volume.
const FULL_TRIAL: usize = 1 << 15;

/// The candidate that codes the block (or a central sample of it) into the fewest bytes,
/// escapes counted.
fn choose_predictor<'a>(
    candidates: &[&'a dyn Predictor],
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    plan: &Plan,
    coder: Coder,
    single: bool,
) -> &'a dyn Predictor {
    if candidates.len() == 1 {
        return candidates[0];
    }
    let n = q.len();
    let sample = if n <= FULL_TRIAL {
        Block {
            origin: [0; 3],
            ext,
        }
    } else {
        let sub = ext.map(|e| e.div_ceil(2));
        Block {
            origin: [0, 1, 2].map(|k| (ext[k] - sub[k]) / 2),
            ext: sub,
        }
    };
    let sx = field::gather(x, ext, &sample);
    let sq = field::gather(q, ext, &sample);
    let se = field::gather(escaped, ext, &sample);
    let size = |p: &dyn Predictor| {
        let (codes, esc) = predict_block(p, &sx, &sq, &se, sample.ext, plan, single);
        let escapes = esc.iter().filter(|&&e| e).count();
        code::encode_block(coder, &codes, sample.ext, p.id()).len() + escapes * (2 + 8)
    };
    *candidates
        .iter()
        .min_by_key(|p| size(**p))
        .expect("at least one predictor")
}

pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let mut r = Reader::new(data);
    let header = Header::read(&mut r)?;
    let n = header.len();
    let out_len = n * header.dtype.size();
    ensure!(
        out_len <= max_len,
        Error::TooLarge {
            needed: out_len,
            limit: max_len
        }
    );
    let out = match header.layout {
        Layout::Stored => {
            ensure!(
                header.sections == 1,
                Error::Corrupt("stored chunk with more than one section".into())
            );
            let (id, payload) = format::read_section(&mut r)?;
            ensure!(
                id == section::STORED && payload.len() == out_len,
                Error::Corrupt("stored section does not match the shape".into())
            );
            payload.to_vec()
        }
        Layout::Coded => match header.dtype {
            DType::F32 => decode_coded::<f32>(&header, &mut r)?,
            DType::F64 => decode_coded::<f64>(&header, &mut r)?,
        },
    };
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes", r.remaining()))
    );
    Ok(out)
}

fn decode_coded<T: Element>(h: &Header, r: &mut Reader<'_>) -> Result<Vec<u8>> {
    ensure!(
        h.sections == 2,
        Error::Corrupt(format!(
            "coded chunk declares {} sections, version 1 has 2",
            h.sections
        ))
    );
    ensure!(
        h.step.is_finite() && h.step > 0.0 && h.mid.is_finite(),
        Error::Corrupt("quantization grid is not finite and positive".into())
    );
    let grid = Grid {
        mid: h.mid,
        step: h.step,
    };
    ensure!(
        h.feedback % 2 == 1,
        Error::Corrupt(format!("feedback step {} is not odd", h.feedback))
    );
    let m = h.feedback as i32;
    let dims = field::grid_dims(&h.shape);
    ensure!(
        (0..3).all(|k| h.block[k] >= 1 && h.block[k] <= dims[k]),
        Error::Corrupt(format!("block extents {:?} for grid {dims:?}", h.block))
    );
    let blocks = field::blocks(dims, h.block)?;

    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::BLOCKS,
        Error::Corrupt(format!("expected the blocks section, found id {id}"))
    );
    let parts = split_blocks(payload, blocks.len())?;
    let decoded: Vec<Result<Vec<T>>> = blocks
        .par_iter()
        .zip(&parts)
        .map(|(b, part)| decode_block::<T>(b, part, grid, m))
        .collect();
    let mut values = vec![T::from_f64(0.0); h.len()];
    for (b, d) in blocks.iter().zip(decoded) {
        field::scatter(&mut values, dims, b, &d?);
    }

    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::ESCAPES,
        Error::Corrupt(format!("expected the escapes section, found id {id}"))
    );
    apply_escapes(payload, &mut values)?;
    Ok(field::to_bytes(&values))
}

/// One entry of the block directory, with its payload.
struct BlockPart<'a> {
    predictor: u8,
    coder: Coder,
    bytes: &'a [u8],
    crc: u32,
}

fn split_blocks(payload: &[u8], expected: usize) -> Result<Vec<BlockPart<'_>>> {
    let mut r = Reader::new(payload);
    let count = r.u32("block directory")? as usize;
    ensure!(
        count == expected,
        Error::Corrupt(format!("{count} blocks, the grid has {expected}"))
    );
    let dir = r.take(
        count.checked_mul(12).ok_or(Error::Truncated {
            what: "block directory",
        })?,
        "block directory",
    )?;
    let mut parts = Vec::with_capacity(count);
    for e in dir.chunks_exact(12) {
        ensure!(e[2] == 0 && e[3] == 0, Error::ReservedBitsSet);
        let len = u32::from_le_bytes(e[4..8].try_into().unwrap()) as usize;
        parts.push(BlockPart {
            predictor: e[0],
            coder: code::coder_from_id(e[1])?,
            bytes: r.take(len, "block")?,
            crc: u32::from_le_bytes(e[8..12].try_into().unwrap()),
        });
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the last block".into())
    );
    Ok(parts)
}

fn decode_block<T: Element>(b: &Block, part: &BlockPart<'_>, grid: Grid, m: i32) -> Result<Vec<T>> {
    ensure!(
        crc32fast::hash(part.bytes) == part.crc,
        Error::ChecksumMismatch { what: "block" }
    );
    let predictor = predict::by_id(part.predictor)?;
    let mut q = vec![0i32; b.len()];
    code::decode_block(part.coder, part.bytes, b.ext, part.predictor, &mut q)?;
    predictor.decode(&mut q, b.ext, m);
    Ok(q.iter().map(|&v| dequantize::<T>(v, grid)).collect())
}

fn apply_escapes<T: Element>(payload: &[u8], values: &mut [T]) -> Result<()> {
    let mut r = Reader::new(payload);
    let count = r.u64("escapes")?;
    ensure!(
        count <= values.len() as u64,
        Error::Corrupt(format!(
            "{count} escaped values in a chunk of {}",
            values.len()
        ))
    );
    let count = count as usize;
    // Each index takes at least one byte and each value T::SIZE: refuse before allocating.
    ensure!(
        count.saturating_mul(1 + T::SIZE) <= r.remaining(),
        Error::Truncated { what: "escapes" }
    );
    let mut idx = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let i = next
            .checked_add(r.varint("escape index")?)
            .filter(|&i| i < values.len() as u64)
            .ok_or_else(|| Error::Corrupt("escape index out of range".into()))?;
        idx.push(i as usize);
        next = i + 1;
    }
    let raw = r.take(count * T::SIZE, "escaped values")?;
    for (&i, b) in idx.iter().zip(raw.chunks_exact(T::SIZE)) {
        values[i] = T::read_le(b);
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the escaped values".into())
    );
    Ok(())
}
