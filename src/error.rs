//! One error type for the whole codec, with stable numeric codes (as zstd pins its error
//! values) so the plugin can report them and tests can match them.

use std::fmt;

/// Everything that can go wrong while compressing or decompressing a chunk.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A `cd_values` word or a `Params` field is out of range.
    BadParams(String),
    /// The element type or chunk shape cannot be handled.
    Unsupported(String),
    /// The input length does not match what the shape and element type declare.
    SizeMismatch { expected: usize, actual: usize },
    /// The chunk does not start with the resid magic number.
    WrongMagic,
    /// The chunk was written by a newer format version (`found`) than this build reads
    /// (`newest`). The newest version travels in the error so that this module, below the
    /// container, need not know it.
    UnsupportedVersion { found: u8, newest: u8 },
    /// A reserved field is not zero.
    ReservedBitsSet,
    /// The chunk ends before a section it declares.
    Truncated { what: &'static str },
    /// A checksum does not match: the chunk was damaged after it was written.
    ChecksumMismatch { what: &'static str },
    /// A field of the chunk is inconsistent with the rest of it.
    Corrupt(String),
    /// Decoding would need more memory than the caller allows.
    TooLarge { needed: usize, limit: usize },
}

impl Error {
    /// Stable code of this error (never renumbered; new errors get new codes).
    pub fn code(&self) -> u32 {
        match self {
            Error::BadParams(_) => 1,
            Error::Unsupported(_) => 2,
            Error::SizeMismatch { .. } => 3,
            Error::WrongMagic => 4,
            Error::UnsupportedVersion { .. } => 5,
            Error::ReservedBitsSet => 6,
            Error::Truncated { .. } => 7,
            Error::ChecksumMismatch { .. } => 8,
            Error::Corrupt(_) => 9,
            Error::TooLarge { .. } => 10,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadParams(m) => write!(f, "bad parameters: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::SizeMismatch { expected, actual } => {
                write!(f, "size mismatch: expected {expected} bytes, got {actual}")
            }
            Error::WrongMagic => write!(f, "not a resid chunk (wrong magic number)"),
            Error::UnsupportedVersion { found, newest } => write!(
                f,
                "chunk format version {found} is newer than this build reads (max {newest})"
            ),
            Error::ReservedBitsSet => write!(f, "corrupt chunk: reserved field is not zero"),
            Error::Truncated { what } => write!(f, "truncated chunk: {what} is cut short"),
            Error::ChecksumMismatch { what } => {
                write!(f, "corrupt chunk: checksum mismatch in {what}")
            }
            Error::Corrupt(m) => write!(f, "corrupt chunk: {m}"),
            Error::TooLarge { needed, limit } => {
                write!(
                    f,
                    "chunk would decode to {needed} bytes, more than the limit {limit}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Returns `Err(err)` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !($cond) {
            return Err($err);
        }
    };
}
pub(crate) use ensure;
