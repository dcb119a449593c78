//! Residual coding: zigzag, bit-planes, entropy coding. One block in, one byte string out.

pub mod bitplane;
pub mod lz4;
pub mod range;
pub mod zigzag;

use crate::error::{Error, Result};
use crate::params::Coder;

/// Stable id of a coder in the block directory (`docs/FORMAT.md`).
pub fn coder_id(c: Coder) -> u8 {
    c as u8
}

pub fn coder_from_id(id: u8) -> Result<Coder> {
    match id {
        0 => Ok(Coder::Range),
        1 => Ok(Coder::Lz4),
        _ => Err(Error::Corrupt(format!("unknown coder id {id}"))),
    }
}

/// Codes one block of residuals made by predictor `predictor` (its id).
pub fn encode_block(coder: Coder, r: &[i32], ext: [usize; 3], predictor: u8) -> Vec<u8> {
    match coder {
        Coder::Range => bitplane::encode(r, ext, bitplane::Classes::of(predictor)),
        Coder::Lz4 => lz4::encode(r),
    }
}

/// Decodes one block of residuals into `r` (length = block size).
pub fn decode_block(
    coder: Coder,
    bytes: &[u8],
    ext: [usize; 3],
    predictor: u8,
    r: &mut [i32],
) -> Result<()> {
    match coder {
        Coder::Range => bitplane::decode(bytes, ext, bitplane::Classes::of(predictor), r),
        Coder::Lz4 => lz4::decode(bytes, r),
    }
}
