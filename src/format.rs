//! The chunk container: magic, version, header, length-prefixed sections with checksums.
//! `docs/FORMAT.md` is the byte-level specification; this module is its reference reader and
//! writer. All integers are little-endian.

pub use crate::bytes::{put_varint, Reader};
use crate::error::{ensure, Error, Result};
use crate::params::{Coder, DType, ErrorMode, MAX_RANK};

pub mod directory;
pub mod escapes;
pub mod wavelet;

pub const MAGIC: [u8; 4] = *b"RSID";
/// The newest container version this build writes and reads. Version 2 is version 1 with a
/// REGION section (an HDF5 edge chunk's data region); version 3 is version 1 with the
/// wavelet layout ([`Layout::Wavelet`]); every other chunk is written as version 1, which
/// readers of version 1 read.
pub const FORMAT_VERSION: u8 = 3;
/// The version of a chunk with no REGION section.
pub const BASE_VERSION: u8 = 1;
/// The version of a chunk with a REGION section first.
pub const REGION_VERSION: u8 = 2;
/// The version of a wavelet-coded chunk ([`Layout::Wavelet`]).
pub const WAVELET_VERSION: u8 = 3;
/// Largest possible header plus one section header: a stored chunk is never bigger than its
/// data plus this.
pub const MAX_OVERHEAD: usize = 8 + 8 * MAX_RANK + HEADER_TAIL + SECTION_HEADER;
const HEADER_TAIL: usize = 56;
pub const SECTION_HEADER: usize = 16;

/// Size of a stored chunk of `data_len` bytes and rank `rank`.
pub fn stored_len(rank: usize, data_len: usize) -> usize {
    8 + 8 * rank + HEADER_TAIL + SECTION_HEADER + data_len
}

/// How the chunk's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The element bytes as they came (when coding would not make the chunk smaller).
    Stored = 0,
    /// Quantized, predicted and entropy coded.
    Coded = 1,
    /// Transformed by a wavelet, its coefficients quantized and entropy coded, the points
    /// the transform leaves out of bound corrected (WAVELET and ESCAPES sections).
    Wavelet = 2,
}

/// Section ids (`docs/FORMAT.md`, "Sections").
pub mod section {
    pub const STORED: u8 = 0;
    pub const BLOCKS: u8 = 1;
    pub const ESCAPES: u8 = 2;
    /// The NGLR network shared by the chunk's blocks (before BLOCKS).
    pub const WEIGHTS: u8 = 3;
    /// The NeurLZ enhancer: network, normalization and outliers (after ESCAPES).
    pub const ENHANCE: u8 = 4;
    /// An edge chunk's data region and padding value (version 2, first section).
    pub const REGION: u8 = 5;
    /// A wavelet-coded chunk's transform, coefficients and corrections (version 3).
    pub const WAVELET: u8 = 6;
}

/// Everything the header says about a chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Container version: [`BASE_VERSION`], [`REGION_VERSION`] when a REGION section comes
    /// first, [`WAVELET_VERSION`] for the wavelet layout.
    pub version: u8,
    pub layout: Layout,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub mode: ErrorMode,
    pub coder: Coder,
    /// The bound the user asked for, in the units of `mode`.
    pub requested: f64,
    /// The pointwise bound every decoded value meets (0 when stored exactly).
    pub eb: f64,
    /// Value of grid index 0.
    pub mid: f64,
    /// Grid spacing.
    pub step: f64,
    /// Feedback step of the predictors in grid steps (odd; 0 when stored).
    pub feedback: u16,
    /// Block extents along the 3D view (0 when stored).
    pub block: [usize; 3],
    pub sections: u32,
}

impl Header {
    /// Number of values; the shape was checked not to overflow when it was read.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(self.layout as u8);
        out.push(self.dtype as u8);
        out.push(self.shape.len() as u8);
        for &d in &self.shape {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.push(self.mode as u8);
        out.push(self.coder as u8);
        out.extend_from_slice(&self.feedback.to_le_bytes());
        for v in [self.requested, self.eb, self.mid, self.step] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for b in self.block {
            out.extend_from_slice(&(b as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.sections.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Header> {
        let start = r.pos;
        ensure!(r.take(4, "magic")? == MAGIC, Error::WrongMagic);
        let version = r.u8("header")?;
        ensure!(
            (1..=FORMAT_VERSION).contains(&version),
            Error::UnsupportedVersion {
                found: version,
                newest: FORMAT_VERSION
            }
        );
        let layout = match r.u8("header")? {
            0 => Layout::Stored,
            1 => Layout::Coded,
            2 => Layout::Wavelet,
            l => return Err(Error::Corrupt(format!("unknown layout {l}"))),
        };
        ensure!(
            (layout == Layout::Wavelet) == (version == WAVELET_VERSION),
            Error::Corrupt(format!(
                "layout {} in a version-{version} chunk",
                layout as u8
            ))
        );
        let dtype = DType::from_code(r.u8("header")? as u32)
            .map_err(|_| Error::Corrupt("unknown element type".into()))?;
        let rank = r.u8("header")? as usize;
        ensure!(
            (1..=MAX_RANK).contains(&rank),
            Error::Corrupt(format!("rank {rank}"))
        );
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            let d = r.u64("header")?;
            ensure!(d > 0, Error::Corrupt("zero dimension".into()));
            shape.push(usize::try_from(d).map_err(|_| Error::Corrupt("dimension".into()))?);
        }
        shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::Corrupt(format!("shape {shape:?} overflows")))?;
        let mode = match r.u8("header")? {
            0 => ErrorMode::Abs,
            1 => ErrorMode::Rel,
            2 => ErrorMode::Nrmse,
            3 => ErrorMode::Psnr,
            m => return Err(Error::Corrupt(format!("unknown error mode {m}"))),
        };
        let coder = crate::entropy::coder_from_id(r.u8("header")?)?;
        let fb = r.take(2, "header")?;
        let feedback = u16::from_le_bytes([fb[0], fb[1]]);
        let requested = r.f64("header")?;
        let eb = r.f64("header")?;
        let mid = r.f64("header")?;
        let step = r.f64("header")?;
        let mut block = [0usize; 3];
        for b in &mut block {
            *b = r.u32("header")? as usize;
        }
        let sections = r.u32("header")?;
        let end = r.pos;
        let crc = r.u32("header")?;
        ensure!(
            crc == crc32fast::hash(&r.buf[start..end]),
            Error::ChecksumMismatch { what: "header" }
        );
        Ok(Header {
            version,
            layout,
            dtype,
            shape,
            mode,
            coder,
            requested,
            eb,
            mid,
            step,
            feedback,
            block,
            sections,
        })
    }
}

/// The REGION section's payload: rank `u8`, the data box's extent per dimension (`u64`), the
/// padding value's bits (`u64`, the element's bits in the low bytes).
pub fn write_region(out: &mut Vec<u8>, extent: &[usize], pad: u64) {
    out.push(extent.len() as u8);
    for &e in extent {
        out.extend_from_slice(&(e as u64).to_le_bytes());
    }
    out.extend_from_slice(&pad.to_le_bytes());
}

/// Reads a REGION payload of a chunk of `shape` whose elements are `size` bytes: the box's
/// extents and the padding value's bits.
pub fn read_region(payload: &[u8], shape: &[usize], size: usize) -> Result<(Vec<usize>, u64)> {
    let mut r = Reader::new(payload);
    let rank = r.u8("region")? as usize;
    ensure!(
        rank == shape.len(),
        Error::Corrupt(format!(
            "region of rank {rank} in a chunk of rank {}",
            shape.len()
        ))
    );
    let mut extent = Vec::with_capacity(rank);
    for &s in shape {
        let e = r.u64("region")?;
        ensure!(
            e >= 1 && e <= s as u64,
            Error::Corrupt(format!("region extent {e} outside 1..={s}"))
        );
        extent.push(e as usize);
    }
    let pad = r.u64("region")?;
    ensure!(
        size == 8 || pad >> 32 == 0,
        Error::Corrupt("region padding value wider than the element".into())
    );
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes in the region", r.remaining()))
    );
    Ok((extent, pad))
}

/// Appends a section: id, three reserved zero bytes, u64 length, crc32 of the payload, payload.
pub fn write_section(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    write_section_parts(out, id, &[(payload, crc32(payload))]);
}

/// A section whose payload is `parts` end to end, each given with its own CRC-32 (the block
/// directory already holds the blocks'): the section's checksum is combined from them, not
/// computed again over the whole payload.
pub fn write_section_parts(out: &mut Vec<u8>, id: u8, parts: &[(&[u8], u32)]) {
    let len: usize = parts.iter().map(|p| p.0.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for &(bytes, part_crc) in parts {
        crc.combine(&crc32fast::Hasher::new_with_initial_len(
            part_crc,
            bytes.len() as u64,
        ));
    }
    out.reserve(16 + len);
    out.push(id);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for &(bytes, _) in parts {
        out.extend_from_slice(bytes);
    }
}

/// CRC-32 of `bytes`, on all threads for large inputs (pieces hashed apart and combined).
pub fn crc32(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 20;
    if bytes.len() < 4 * PIECE {
        return crc32fast::hash(bytes);
    }
    let pieces: Vec<crc32fast::Hasher> = bytes
        .par_chunks(PIECE)
        .map(|p| {
            let mut h = crc32fast::Hasher::new();
            h.update(p);
            h
        })
        .collect();
    let mut crc = crc32fast::Hasher::new();
    for p in &pieces {
        crc.combine(p);
    }
    crc.finalize()
}

/// Reads the next section, checks its checksum, and returns (id, payload).
pub fn read_section<'a>(r: &mut Reader<'a>) -> Result<(u8, &'a [u8])> {
    let id = r.u8("section header")?;
    ensure!(
        r.take(3, "section header")? == [0, 0, 0],
        Error::ReservedBitsSet
    );
    let len = r.u64("section header")?;
    let crc = r.u32("section header")?;
    let len = usize::try_from(len).map_err(|_| Error::Truncated { what: "section" })?;
    let payload = r.take(len, "section")?;
    ensure!(
        crc32(payload) == crc,
        Error::ChecksumMismatch { what: "section" }
    );
    Ok((id, payload))
}

/// What `inspect` reports about a chunk without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSummary {
    pub header: Header,
    pub compressed_len: usize,
    /// (section id, payload length) in order.
    pub sections: Vec<(u8, usize)>,
    /// Predictor id of each block, in block order (empty when stored).
    pub block_predictors: Vec<u8>,
    /// In an HDF5 edge chunk (REGION section): the extent of the data box the bound was taken
    /// over, and the padding value's bits.
    pub region: Option<(Vec<usize>, u64)>,
}

pub fn summary(data: &[u8]) -> Result<ChunkSummary> {
    let mut r = Reader::new(data);
    let header = Header::read(&mut r)?;
    let mut sections = Vec::new();
    let mut block_predictors = Vec::new();
    let mut region = None;
    for _ in 0..header.sections {
        let (id, payload) = read_section(&mut r)?;
        sections.push((id, payload.len()));
        if id == section::REGION {
            region = Some(read_region(payload, &header.shape, header.dtype.size())?);
        }
        if id == section::BLOCKS {
            block_predictors.extend(directory::predictor_ids(payload)?);
        }
    }
    Ok(ChunkSummary {
        header,
        compressed_len: data.len(),
        sections,
        block_predictors,
        region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: BASE_VERSION,
            layout: Layout::Coded,
            dtype: DType::F32,
            shape: vec![3, 4, 5],
            mode: ErrorMode::Rel,
            coder: Coder::Range,
            requested: 1e-3,
            eb: 0.5,
            mid: 2.0,
            step: 1.0,
            feedback: 15,
            block: [3, 4, 5],
            sections: 2,
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let mut buf = Vec::new();
        header().write(&mut buf);
        assert_eq!(buf.len(), 8 + 8 * 3 + HEADER_TAIL);
        assert_eq!(Header::read(&mut Reader::new(&buf)).unwrap(), header());
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert_eq!(
            Header::read(&mut Reader::new(&bad)).unwrap_err(),
            Error::ChecksumMismatch { what: "header" }
        );
        let mut newer = buf.clone();
        newer[4] = FORMAT_VERSION + 1;
        assert_eq!(
            Header::read(&mut Reader::new(&newer)).unwrap_err(),
            Error::UnsupportedVersion {
                found: FORMAT_VERSION + 1,
                newest: FORMAT_VERSION
            }
        );
        for cut in 0..buf.len() {
            assert!(Header::read(&mut Reader::new(&buf[..cut])).is_err());
        }
    }

    #[test]
    fn varints() {
        let mut out = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, v);
        }
        let mut r = Reader::new(&out);
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint("test").unwrap(), v);
        }
    }
}
