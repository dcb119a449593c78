//! Residual coding: zigzag, bit-planes, entropy coding. One block in, one byte string out.
//!
//! The block coders form a registry, [`REGISTRY`]: the block directory's coder byte names an
//! entry, which codes and decodes. The range coder models a block's residuals after the
//! predictor that made them (its point classes, and whether far neighbours suit it); the
//! coder knows no predictors: the caller passes that choice in, as the predictor declares it.

pub mod bitplane;
mod context;
pub mod grouped;
pub mod lz4;
pub mod packed;
pub mod range;
pub mod rans;
pub mod zigzag;

pub use context::{Classes, Contexts};

use crate::error::{Error, Result};
use crate::field;
use crate::params::Coder;

/// The most values a block of a chunk coded with `c` holds: the coders with adaptive models
/// (range) or per-block tables (rANS) pay for learning them in every block, so their blocks
/// are larger ([`field::ADAPTIVE_BLOCK_TARGET`]); the others keep [`field::BLOCK_TARGET`],
/// which the GPU's one-pass kernels and the threads of small chunks prefer.
pub fn block_target(c: Coder) -> usize {
    match c {
        Coder::Range | Coder::Rans => field::ADAPTIVE_BLOCK_TARGET,
        Coder::Lz4 | Coder::Packed | Coder::Grouped => field::BLOCK_TARGET,
    }
}

/// Stable id of a chunk's coder in the header (`docs/FORMAT.md`).
pub fn coder_id(c: Coder) -> u8 {
    c as u8
}

/// The chunk's coder from its header byte: one that codes some entry of the [`REGISTRY`].
pub fn coder_from_id(id: u8) -> Result<Coder> {
    REGISTRY
        .iter()
        .map(|e| e.chunk)
        .find(|&c| coder_id(c) == id)
        .ok_or_else(|| Error::Corrupt(format!("unknown coder id {id}")))
}

/// What the range coder's model follows in one predictor's residuals; the predictor declares
/// it, and the caller of [`encode_block`] and the other coding functions passes it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextChoice {
    /// How the block's points split into classes with statistics of their own.
    pub classes: Classes,
    /// The neighbours the encoder reads contexts from when the chunk's coder is the range
    /// coder. The directory's coder byte records the choice, so a decoder follows that byte.
    pub neighbours: Contexts,
}

impl ContextChoice {
    /// One class, adjacent neighbours: what a Lorenzo block uses (and what the backends code).
    pub const PLAIN: ContextChoice = ContextChoice {
        classes: Classes::Single,
        neighbours: Contexts::Near,
    };
}

/// One block coder of the [`REGISTRY`].
pub struct Entry {
    /// The block directory's coder byte (`docs/FORMAT.md`).
    pub id: u8,
    /// Its name in reports.
    pub name: &'static str,
    /// The chunk coder (header byte, `cd_values` word 4) whose blocks it codes.
    pub chunk: Coder,
    /// For a coder with contexts, the neighbours they read: the encoder picks it for blocks
    /// whose predictor asks for those. `None`: any block of the chunk coder.
    pub neighbours: Option<Contexts>,
    pub encode: fn(&[i32], [usize; 3], Classes) -> Vec<u8>,
    /// The length `encode` would give, estimated where that is cheaper than coding.
    pub estimate: fn(&[i32], [usize; 3], Classes) -> usize,
    pub decode: Decode,
}

/// Decodes a payload into a block's residuals (`r`: one per value of the block).
pub type Decode = fn(bytes: &[u8], ext: [usize; 3], classes: Classes, r: &mut [i32]) -> Result<()>;

/// Every block coder, by directory id. A new coder is a module of its own plus a line here.
pub static REGISTRY: [Entry; 7] = [
    Entry {
        id: 0,
        name: "range",
        chunk: Coder::Range,
        neighbours: Some(Contexts::Near),
        encode: |r, ext, c| bitplane::encode(r, ext, c, Contexts::Near),
        estimate: |r, ext, c| bitplane::estimate(r, ext, c, Contexts::Near),
        decode: |b, ext, c, r| bitplane::decode(b, ext, c, Contexts::Near, r),
    },
    Entry {
        id: 1,
        name: "lz4",
        chunk: Coder::Lz4,
        neighbours: None,
        encode: |r, _, _| lz4::encode(r),
        // Simply run: LZ4 is fast.
        estimate: |r, _, _| lz4::encode(r).len(),
        decode: |b, _, _, r| lz4::decode(b, r),
    },
    // Same-parity neighbours: the encoder writes it for interpolated blocks, about 2% smaller
    // on the grade-A fields (5% at rel 1e-2).
    Entry {
        id: 2,
        name: "range-far",
        chunk: Coder::Range,
        neighbours: Some(Contexts::Far),
        encode: |r, ext, c| bitplane::encode(r, ext, c, Contexts::Far),
        estimate: |r, ext, c| bitplane::estimate(r, ext, c, Contexts::Far),
        decode: |b, ext, c, r| bitplane::decode(b, ext, c, Contexts::Far, r),
    },
    // A fixed bit width per group of 32 codes: what the GPU codes.
    Entry {
        id: 3,
        name: "packed",
        chunk: Coder::Packed,
        neighbours: None,
        encode: |r, _, _| packed::encode(r),
        estimate: |r, _, _| packed::encoded_len(r),
        decode: |b, _, _, r| packed::decode(b, r),
    },
    // The bit-plane model coded by table lookups: several times faster, within a percent.
    Entry {
        id: 4,
        name: "rans",
        chunk: Coder::Rans,
        neighbours: Some(Contexts::Near),
        encode: |r, ext, c| rans::encode(r, ext, c, Contexts::Near),
        estimate: |r, ext, c| rans::estimate(r, ext, c, Contexts::Near),
        decode: |b, ext, c, r| rans::decode(b, ext, c, Contexts::Near, r),
    },
    Entry {
        id: 5,
        name: "rans-far",
        chunk: Coder::Rans,
        neighbours: Some(Contexts::Far),
        encode: |r, ext, c| rans::encode(r, ext, c, Contexts::Far),
        estimate: |r, ext, c| rans::estimate(r, ext, c, Contexts::Far),
        decode: |b, ext, c, r| rans::decode(b, ext, c, Contexts::Far, r),
    },
    // Groups of 8 at their own width, the widths as changes: the fast mode's coder.
    Entry {
        id: 6,
        name: "grouped",
        chunk: Coder::Grouped,
        neighbours: None,
        encode: |r, _, _| grouped::encode(r),
        estimate: |r, _, _| grouped::encoded_len(r),
        decode: |b, _, _, r| grouped::decode(b, r),
    },
];

/// How one block's residuals are coded: an entry of the [`REGISTRY`], the block directory's
/// coder byte.
#[derive(Clone, Copy)]
pub struct BlockCoder(&'static Entry);

impl PartialEq for BlockCoder {
    fn eq(&self, other: &BlockCoder) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for BlockCoder {}

impl std::fmt::Debug for BlockCoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCoder({})", self.0.name)
    }
}

impl BlockCoder {
    pub fn id(self) -> u8 {
        self.0.id
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn from_id(id: u8) -> Result<BlockCoder> {
        REGISTRY
            .iter()
            .find(|e| e.id == id)
            .map(BlockCoder)
            .ok_or_else(|| Error::Corrupt(format!("unknown coder id {id}")))
    }

    /// What the encoder uses, when the chunk's coder is `coder`, for a block whose predictor
    /// declares `choice`: the chunk coder's entry with the neighbours it asks for, if any.
    pub fn for_block(coder: Coder, choice: ContextChoice) -> BlockCoder {
        let fits = |e: &Entry| e.neighbours.map_or(true, |n| n == choice.neighbours);
        REGISTRY
            .iter()
            .find(|e| e.chunk == coder && fits(e))
            .map(BlockCoder)
            .expect("every chunk coder has a block coder for either neighbours")
    }

    /// The chunk coder whose plain blocks ([`ContextChoice::PLAIN`], what the backends code)
    /// this coder codes; `None` when it codes only blocks of other choices.
    pub fn plain_of(self) -> Option<Coder> {
        (BlockCoder::from(self.0.chunk) == self).then_some(self.0.chunk)
    }

    pub fn encode(self, r: &[i32], ext: [usize; 3], classes: Classes) -> Vec<u8> {
        (self.0.encode)(r, ext, classes)
    }

    pub fn estimate(self, r: &[i32], ext: [usize; 3], classes: Classes) -> usize {
        (self.0.estimate)(r, ext, classes)
    }

    pub fn decode(
        self,
        bytes: &[u8],
        ext: [usize; 3],
        classes: Classes,
        r: &mut [i32],
    ) -> Result<()> {
        (self.0.decode)(bytes, ext, classes, r)
    }
}

impl From<Coder> for BlockCoder {
    /// The block coder of a plain block (what the backends code).
    fn from(c: Coder) -> BlockCoder {
        BlockCoder::for_block(c, ContextChoice::PLAIN)
    }
}

/// Codes one block of residuals whose predictor declares `choice`, with the block coder
/// [`BlockCoder::for_block`] picks.
pub fn encode_block(coder: Coder, r: &[i32], ext: [usize; 3], choice: ContextChoice) -> Vec<u8> {
    BlockCoder::for_block(coder, choice).encode(r, ext, choice.classes)
}

/// The length [`encode_block`] would give, estimated without coding for the range coders
/// (LZ4 is simply run, the packed length counted).
pub fn estimate_block(coder: Coder, r: &[i32], ext: [usize; 3], choice: ContextChoice) -> usize {
    BlockCoder::for_block(coder, choice).estimate(r, ext, choice.classes)
}

/// Decodes one block of residuals into `r` (length = block size); `classes` are those its
/// predictor declares (the neighbours follow the block coder).
pub fn decode_block(
    coder: BlockCoder,
    bytes: &[u8],
    ext: [usize; 3],
    classes: Classes,
    r: &mut [i32],
) -> Result<()> {
    coder.decode(bytes, ext, classes, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ids_are_unique_and_every_chunk_coder_has_plain_and_far_blocks() {
        for (k, e) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[..k].iter().all(|o| o.id != e.id), "{}", e.name);
            assert_eq!(BlockCoder::from_id(e.id).unwrap().name(), e.name);
        }
        let far = ContextChoice {
            neighbours: Contexts::Far,
            ..ContextChoice::PLAIN
        };
        // The ids the encoder has always written (docs/FORMAT.md).
        for (coder, plain, with_far) in [
            (Coder::Range, 0, 2),
            (Coder::Lz4, 1, 1),
            (Coder::Packed, 3, 3),
            (Coder::Rans, 4, 5),
            (Coder::Grouped, 6, 6),
        ] {
            assert_eq!(BlockCoder::from(coder).id(), plain);
            assert_eq!(BlockCoder::for_block(coder, far).id(), with_far);
            assert_eq!(BlockCoder::from(coder).plain_of(), Some(coder));
        }
        assert_eq!(BlockCoder::from_id(2).unwrap().plain_of(), None);
        assert!(BlockCoder::from_id(7).is_err());
        for c in [
            Coder::Range,
            Coder::Lz4,
            Coder::Packed,
            Coder::Rans,
            Coder::Grouped,
        ] {
            assert_eq!(coder_from_id(coder_id(c)), Ok(c));
        }
        assert!(coder_from_id(5).is_err());
    }
}
