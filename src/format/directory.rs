//! The BLOCKS section (`docs/FORMAT.md`, "BLOCKS"): a count, the block directory (12 bytes
//! per block) and the payloads in block order. Written by `compress/`, read by `decompress/`
//! and [`super::summary`].

use crate::entropy::BlockCoder;
use crate::error::{ensure, Error, Result};

use super::{section, Reader};

/// Bytes per directory entry.
pub const ENTRY: usize = 12;

/// One entry of the block directory, with its payload.
#[derive(Clone)]
pub struct BlockPart<'a> {
    pub predictor: u8,
    /// Coarse-level feedback step of an interpolated block (directory byte 2; 0: none).
    pub coarse: u8,
    /// Cubic kernel of an interpolated block (directory byte 3; 0 otherwise).
    pub kernel: u8,
    pub coder: BlockCoder,
    pub bytes: &'a [u8],
    /// CRC-32 of `bytes`.
    pub crc: u32,
}

/// Appends the BLOCKS section of `parts`: the payloads' checksums serve both the directory
/// and the section's own (combined, not computed again).
pub fn write_section(out: &mut Vec<u8>, parts: &[BlockPart<'_>]) {
    let mut directory = Vec::with_capacity(4 + ENTRY * parts.len());
    directory.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        directory.extend_from_slice(&[p.predictor, p.coder.id(), p.coarse, p.kernel]);
        directory.extend_from_slice(&(p.bytes.len() as u32).to_le_bytes());
        directory.extend_from_slice(&p.crc.to_le_bytes());
    }
    let dir_crc = crc32fast::hash(&directory);
    let pieces: Vec<(&[u8], u32)> = std::iter::once((&directory[..], dir_crc))
        .chain(parts.iter().map(|p| (p.bytes, p.crc)))
        .collect();
    super::write_section_parts(out, section::BLOCKS, &pieces);
}

/// The length of the section [`write_section`] writes, its header included.
pub fn section_len(parts: &[BlockPart<'_>]) -> usize {
    let payloads: usize = parts.iter().map(|p| p.bytes.len()).sum();
    super::SECTION_HEADER + 4 + ENTRY * parts.len() + payloads
}

/// Reads a BLOCKS payload of a chunk whose grid has `expected` blocks; the payloads' lengths
/// must add up to the rest of the section exactly (their checksums are checked when decoded).
pub fn read(payload: &[u8], expected: usize) -> Result<Vec<BlockPart<'_>>> {
    let mut r = Reader::new(payload);
    let count = r.u32("block directory")? as usize;
    ensure!(
        count == expected,
        Error::Corrupt(format!("{count} blocks, the grid has {expected}"))
    );
    let dir = r.take(
        count.checked_mul(ENTRY).ok_or(Error::Truncated {
            what: "block directory",
        })?,
        "block directory",
    )?;
    let mut parts = Vec::with_capacity(count);
    for e in dir.chunks_exact(ENTRY) {
        let len = u32::from_le_bytes(e[4..8].try_into().unwrap()) as usize;
        parts.push(BlockPart {
            predictor: e[0],
            coarse: e[2],
            kernel: e[3],
            coder: BlockCoder::from_id(e[1])?,
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

/// The predictor id of each block, read from the directory alone (what `inspect` reports).
pub fn predictor_ids(payload: &[u8]) -> Result<Vec<u8>> {
    let mut d = Reader::new(payload);
    let count = d.u32("block directory")? as usize;
    ensure!(
        count.saturating_mul(ENTRY) <= d.remaining(),
        Error::Truncated {
            what: "block directory"
        }
    );
    Ok(d.take(count * ENTRY, "block directory")?
        .chunks_exact(ENTRY)
        .map(|e| e[0])
        .collect())
}
