//! The fast path: zigzag codes transposed into bit-planes (64 codes per plane word, empty
//! high planes dropped), then LZ4. Planes above the block's largest code vanish and mostly-zero
//! planes compress to little, at a fraction of the range coder's cost.
//!
//! Block payload: `u8` plane count `P`, then the `lz4_flex` size-prepended compression of
//! `ceil(n / 64) * P` little-endian u64 words (for each group of 64 codes, planes from the
//! highest down).

use super::zigzag;
use crate::error::{ensure, Error, Result};

pub fn encode(r: &[i32]) -> Vec<u8> {
    let codes: Vec<u32> = r.iter().map(|&v| zigzag::encode(v)).collect();
    let planes = 32 - codes.iter().fold(0, |a, &c| a | c).leading_zeros();
    let mut words = Vec::with_capacity(codes.len().div_ceil(64) * planes as usize * 8);
    for group in codes.chunks(64) {
        for p in (0..planes).rev() {
            let mut w = 0u64;
            for (j, &c) in group.iter().enumerate() {
                w |= (((c >> p) & 1) as u64) << j;
            }
            words.extend_from_slice(&w.to_le_bytes());
        }
    }
    let mut out = vec![planes as u8];
    out.extend_from_slice(&lz4_flex::compress_prepend_size(&words));
    out
}

pub fn decode(bytes: &[u8], r: &mut [i32]) -> Result<()> {
    ensure!(!bytes.is_empty(), Error::Truncated { what: "lz4 block" });
    let planes = bytes[0] as u32;
    ensure!(
        planes <= 32,
        Error::Corrupt(format!("lz4 block declares {planes} bit-planes"))
    );
    let expected = r.len().div_ceil(64) * planes as usize * 8;
    ensure!(bytes.len() >= 5, Error::Truncated { what: "lz4 block" });
    let declared = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    ensure!(
        declared == expected,
        Error::Corrupt(format!(
            "lz4 block declares {declared} bytes, its extent needs {expected}"
        ))
    );
    let words = lz4_flex::decompress_size_prepended(&bytes[1..])
        .map_err(|e| Error::Corrupt(format!("lz4 block: {e}")))?;
    ensure!(
        words.len() == expected,
        Error::Corrupt("lz4 block decodes to the wrong size".into())
    );
    let mut w = words.chunks_exact(8);
    for group in r.chunks_mut(64) {
        let mut codes = [0u32; 64];
        for p in (0..planes).rev() {
            let word = u64::from_le_bytes(w.next().expect("sized above").try_into().unwrap());
            for (j, c) in codes.iter_mut().enumerate() {
                *c |= (((word >> j) & 1) as u32) << p;
            }
        }
        for (o, &c) in group.iter_mut().zip(&codes) {
            *o = zigzag::decode(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let r: Vec<i32> = (0..1000).map(|i| (i * 37 % 201) - 100).collect();
        let bytes = super::encode(&r);
        let mut back = vec![0; r.len()];
        super::decode(&bytes, &mut back).unwrap();
        assert_eq!(back, r);
        let zeros = super::encode(&[0; 100]);
        let mut back = vec![7; 100];
        super::decode(&zeros, &mut back).unwrap();
        assert!(back.iter().all(|&v| v == 0));
    }
}
