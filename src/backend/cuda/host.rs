//! The CPU's share of the GPU codec: blocks with escaped values redone on the CPU, and the
//! LZ4 step around the GPU's bit-plane transposition (the range coder and LZ4 are sequential).

use crate::entropy as code;
use crate::error::{ensure, Error, Result};
use crate::field::Element;
use crate::params::Coder;
use crate::predict::lorenzo::{self, Lorenzo};
use crate::predict::registry::contexts;
use crate::quant::{self, Grid};

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

/// The lz4 block payload of transposed words: what `entropy::lz4::encode` writes.
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
/// `entropy::lz4::decode`.
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
    use crate::entropy::zigzag;

    /// The bit-plane transposition of the lz4 path (`entropy::lz4`) without the LZ4 step: the plane
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
