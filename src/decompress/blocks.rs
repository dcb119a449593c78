//! The block decode: each block's codes (checksum first), then its predictor, on all
//! threads; the NGLR blocks' prediction on the GPU when one is chosen.

use rayon::prelude::*;

use crate::entropy;
use crate::error::{ensure, Error, Result};
use crate::field::Block;
use crate::format::directory::BlockPart;
use crate::predict::{self, nglr, Predictor};

/// The predictor that decodes a block: the chunk's NGLR model, or one made from the block's
/// directory entry.
enum BlockPredictor<'a> {
    Learned(&'a nglr::Nglr),
    Own(Box<dyn Predictor>),
}

impl BlockPredictor<'_> {
    fn get(&self) -> &dyn Predictor {
        match self {
            BlockPredictor::Learned(n) => *n,
            BlockPredictor::Own(p) => p.as_ref(),
        }
    }
}

/// A block's residual codes, its checksum verified, and the predictor that decodes them.
fn block_codes<'a>(
    b: &Block,
    part: &BlockPart<'_>,
    learned: Option<&'a nglr::Nglr>,
) -> Result<(BlockPredictor<'a>, Vec<i32>)> {
    ensure!(
        crc32fast::hash(part.bytes) == part.crc,
        Error::ChecksumMismatch { what: "block" }
    );
    let (predictor, header) = match (part.predictor, learned) {
        (nglr::ID, Some(n)) if part.coarse == 0 && part.kernel == 0 => {
            (BlockPredictor::Learned(n), 0)
        }
        (id, _) => {
            let (p, header) = predict::for_block(id, part.coarse, part.kernel, part.bytes)?;
            (BlockPredictor::Own(p), header)
        }
    };
    let mut q = vec![0i32; b.len()];
    let classes = predict::registry::contexts(part.predictor).classes;
    entropy::decode_block(part.coder, &part.bytes[header..], b.ext, classes, &mut q)?;
    Ok((predictor, q))
}

/// Every block's reconstructed grid indices, handed to `put` with its block and its own
/// `sinks` entry (one a block, in block order). The
/// blocks' codes are decoded on the CPU; the prediction of NGLR blocks, sequential inside a
/// block, runs on the GPU when one is chosen for a chunk of `bytes` decoded bytes
/// (`RESID_BACKEND=cuda`; `auto` from [`crate::backend::Stage::NglrDecode`]'s size on), with
/// the CPU's values bit for bit; on the CPU otherwise, or when the GPU fails (logged). On the
/// CPU each block is put as soon as it is decoded, on the thread that decoded it, so only the
/// blocks in flight are held besides what `put` writes to.
fn decode_blocks<S: Send>(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    m: i32,
    learned: Option<&nglr::Nglr>,
    bytes: usize,
    sinks: Vec<S>,
    put: impl Fn(S, &Block, &[i32]) + Sync,
) -> Result<()> {
    let gpu = learned
        .filter(|_| parts.iter().any(|p| p.predictor == nglr::ID))
        .and_then(|n| {
            let stage = crate::backend::Stage::NglrDecode;
            Some((
                crate::backend::gpu_for(stage, crate::params::Backend::Cpu, bytes)?,
                n,
            ))
        });
    let Some((gpu, model)) = gpu else {
        return (blocks, parts, sinks)
            .into_par_iter()
            .try_for_each(|(b, part, sink)| {
                let (p, mut q) = block_codes(b, part, learned)?;
                p.get().decode(&mut q, b.ext, m);
                put(sink, b, &q);
                Ok(())
            });
    };
    let q = decode_blocks_offloaded(blocks, parts, m, model, |on, codes| {
        gpu.nglr_decode(&model.model, on, codes, m)
    })?;
    (q, blocks, sinks)
        .into_par_iter()
        .for_each(|(q, b, sink)| put(sink, b, &q));
    Ok(())
}

/// [`decode_blocks`] with the NGLR blocks' prediction handed to `offload`, which gets those
/// blocks and their codes one block after another, to be turned into reconstructed indices in
/// place. The other blocks decode on the CPU meanwhile; when `offload` fails (logged), the
/// CPU decodes the NGLR blocks too.
fn decode_blocks_offloaded(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    m: i32,
    model: &nglr::Nglr,
    offload: impl FnOnce(&[Block], &mut [i32]) -> Result<()>,
) -> Result<Vec<Vec<i32>>> {
    let staged: Vec<(bool, Vec<i32>)> = blocks
        .par_iter()
        .zip(parts)
        .map(|(b, part)| {
            let (p, mut q) = block_codes(b, part, Some(model))?;
            let learned = matches!(p, BlockPredictor::Learned(_));
            if !learned {
                p.get().decode(&mut q, b.ext, m);
            }
            Ok((learned, q))
        })
        .collect::<Result<_>>()?;
    let learned: Vec<Block> = blocks
        .iter()
        .zip(&staged)
        .filter(|(_, s)| s.0)
        .map(|(b, _)| *b)
        .collect();
    let mut codes: Vec<i32> = staged
        .iter()
        .filter(|s| s.0)
        .flat_map(|s| s.1.iter().copied())
        .collect();
    let offloaded = match offload(&learned, &mut codes) {
        Ok(()) => true,
        Err(e) => {
            crate::backend::fell_back(crate::backend::Stage::NglrDecode, &e);
            false
        }
    };
    let mut rest = codes.as_slice();
    Ok(staged
        .into_iter()
        .zip(blocks)
        .map(|((learned, mut q), b)| {
            if learned && offloaded {
                let (mine, others) = rest.split_at(q.len());
                q.copy_from_slice(mine);
                rest = others;
            } else if learned {
                model.decode(&mut q, b.ext, m);
            }
            q
        })
        .collect())
}

/// The reconstructed grid indices of the whole chunk (what the NeurLZ enhancer reads).
pub(crate) fn decode_grid(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    dims: [usize; 3],
    m: i32,
    learned: Option<&nglr::Nglr>,
    bytes: usize,
) -> Result<Vec<i32>> {
    let mut q = vec![0i32; dims[0] * dims[1] * dims[2]];
    decode_scattered(
        blocks,
        parts,
        dims,
        m,
        learned,
        bytes,
        (&mut q, 1),
        |d, s| d.copy_from_slice(s),
    )?;
    Ok(q)
}

/// Every block's reconstructed indices put in place in `out`, the chunk's 3D view `dims`
/// with `per` items a point (every point is in one block): `write(dst, src)` turns a row of
/// `src.len()` indices into the `per * src.len()` items of `dst`, straight into `out` (no
/// block of items besides it). `out` is first cut into each block's rows, so every block is
/// written by the thread that decoded it, as soon as it is decoded, with no lock: the decode
/// holds `out` and the blocks in flight, not every block.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_scattered<R: Send>(
    blocks: &[Block],
    parts: &[BlockPart<'_>],
    dims: [usize; 3],
    m: i32,
    learned: Option<&nglr::Nglr>,
    bytes: usize,
    (out, per): (&mut [R], usize),
    write: impl Fn(&mut [R], &[i32]) + Sync,
) -> Result<()> {
    assert_eq!(out.len(), dims[0] * dims[1] * dims[2] * per);
    let rows = block_rows(out, blocks, dims, per);
    decode_blocks(blocks, parts, m, learned, bytes, rows, |rows, b, q| {
        for (dst, src) in rows.into_iter().zip(q.chunks_exact(b.ext[2])) {
            write(dst, src);
        }
    })
}

/// `out` (the chunk's 3D view `dims`, `per` items a point) cut into the rows of each block, in
/// block order, each block's rows in order. The blocks tile the grid (`field::blocks`), all
/// of one extent but the last along each axis.
fn block_rows<'a, R>(
    out: &'a mut [R],
    blocks: &[Block],
    dims: [usize; 3],
    per: usize,
) -> Vec<Vec<&'a mut [R]>> {
    let mut rows: Vec<Vec<&mut [R]>> = blocks
        .iter()
        .map(|b| Vec::with_capacity(b.ext[0] * b.ext[1]))
        .collect();
    let Some(first) = blocks.first() else {
        return rows;
    };
    let ext = first.ext;
    let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
    for (r, row) in out.chunks_mut(dims[2] * per).enumerate() {
        let (z, y) = (r / dims[1], r % dims[1]);
        let first = (z / ext[0] * counts[1] + y / ext[1]) * counts[2];
        for (k, piece) in row.chunks_mut(ext[2] * per).enumerate() {
            rows[first + k].push(piece);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field;
    use crate::format::{self, directory, section, Header, Reader};
    use crate::params::{ChunkInfo, DType, Params, PredictorChoice};
    use crate::predict::lorenzo;

    /// A rough f32 field of two blocks (40 x 100 x 100), coded with `predictor` at one
    /// absolute bound.
    fn coded(predictor: PredictorChoice) -> Vec<u8> {
        let mut s = 0x9e37_79b9u64;
        let data: Vec<u8> = (0..800_000)
            .flat_map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (y, x) = ((i / 100) % 100, i % 100);
                let v = (x as f32 * 0.13).sin() * (y as f32 * 0.05).cos() * 20.0
                    + (s >> 40) as f32 / (1u64 << 24) as f32;
                v.to_le_bytes()
            })
            .collect();
        let chunk = ChunkInfo::new(DType::F32, &[80, 100, 100]).unwrap();
        crate::compress(&data, &chunk, &Params::abs(0.01).with_predictor(predictor)).unwrap()
    }

    /// The chunk's feedback step, NGLR model (if any) and blocks section.
    fn sections(bytes: &[u8]) -> (i32, Option<nglr::Nglr>, &[u8]) {
        let mut r = Reader::new(bytes);
        let h = Header::read(&mut r).unwrap();
        let (mut id, mut payload) = format::read_section(&mut r).unwrap();
        let mut model = None;
        if id == section::WEIGHTS {
            model = Some(nglr::Nglr::from_model(
                crate::nn::weights::Model::read(payload).unwrap(),
            ));
            (id, payload) = format::read_section(&mut r).unwrap();
        }
        assert_eq!(id, section::BLOCKS);
        (h.feedback as i32, model, payload)
    }

    /// Each block's rows of the output are the grid's points of that block, in order, with
    /// their `per` items; edge blocks included.
    #[test]
    fn block_rows_are_the_blocks_points() {
        let dims = [5, 7, 9];
        let blocks = field::blocks(dims, [2, 3, 4]).unwrap();
        let per = 2;
        let mut out: Vec<usize> = (0..5 * 7 * 9 * per).collect();
        let rows = block_rows(&mut out, &blocks, dims, per);
        assert_eq!(rows.len(), blocks.len());
        for (b, rows) in blocks.iter().zip(rows) {
            let got: Vec<usize> = rows.iter().flat_map(|r| r.iter().copied()).collect();
            let want: Vec<usize> = (0..b.len())
                .flat_map(|li| {
                    let g = b.global_index(dims, li);
                    [per * g, per * g + 1]
                })
                .collect();
            assert_eq!(got, want, "{b:?}");
        }
    }

    /// The NGLR blocks' prediction handed to an offload (the GPU's place) comes back into the
    /// right blocks, among blocks the CPU decodes; a failing offload leaves it to the CPU.
    #[test]
    fn offloaded_nglr_blocks_come_back_in_place() {
        let (a, b) = (
            coded(PredictorChoice::Nglr),
            coded(PredictorChoice::Lorenzo),
        );
        let (m, model, pa) = sections(&a);
        let model = model.expect("an NGLR chunk has a weights section");
        let (_, none, pb) = sections(&b);
        assert!(none.is_none());
        let dims = [80, 100, 100];
        let blocks = field::blocks(
            dims,
            field::block_extents(dims, field::ADAPTIVE_BLOCK_TARGET),
        )
        .unwrap();
        assert_eq!(blocks.len(), 2);
        let (na, nb) = (
            directory::read(pa, 2).unwrap(),
            directory::read(pb, 2).unwrap(),
        );
        assert!(na.iter().all(|p| p.predictor == nglr::ID));
        assert!(nb.iter().all(|p| p.predictor == lorenzo::ID));
        let cpu = |parts: &[BlockPart<'_>]| -> Vec<Vec<i32>> {
            blocks
                .iter()
                .zip(parts)
                .map(|(b, part)| {
                    let (p, mut q) = block_codes(b, part, Some(&model)).unwrap();
                    p.get().decode(&mut q, b.ext, m);
                    q
                })
                .collect()
        };
        // The CPU's own decode, what the offload must reproduce.
        let offload = |on: &[Block], codes: &mut [i32]| {
            let mut at = 0;
            for b in on {
                model.decode(&mut codes[at..at + b.len()], b.ext, m);
                at += b.len();
            }
            assert_eq!(at, codes.len());
            Ok(())
        };
        let [a0, a1] = <[BlockPart<'_>; 2]>::try_from(na).ok().unwrap();
        let [b0, b1] = <[BlockPart<'_>; 2]>::try_from(nb).ok().unwrap();
        for (parts, learned) in [
            (vec![a0.clone(), b1.clone()], [true, false]),
            (vec![b0.clone(), a1.clone()], [false, true]),
            (vec![a0, a1], [true, true]),
        ] {
            let want = cpu(&parts);
            let mut seen = Vec::new();
            let got = decode_blocks_offloaded(&blocks, &parts, m, &model, |on, codes| {
                seen = on.to_vec();
                offload(on, codes)
            })
            .unwrap();
            assert_eq!(got, want);
            let expected: Vec<Block> = (0..2).filter(|&k| learned[k]).map(|k| blocks[k]).collect();
            assert_eq!(seen, expected);
            let failing = |_: &[Block], _: &mut [i32]| Err(Error::Unsupported("test".into()));
            let got = decode_blocks_offloaded(&blocks, &parts, m, &model, failing).unwrap();
            assert_eq!(got, want);
            // What the offload leaves is what the blocks get: only the NGLR blocks differ.
            let shifted = decode_blocks_offloaded(&blocks, &parts, m, &model, |on, codes| {
                offload(on, codes)?;
                codes.iter_mut().for_each(|v| *v += 1);
                Ok(())
            })
            .unwrap();
            for k in 0..2 {
                let moved: Vec<i32> = want[k].iter().map(|v| v + learned[k] as i32).collect();
                assert_eq!(shifted[k], moved, "block {k}");
            }
        }
    }
}
