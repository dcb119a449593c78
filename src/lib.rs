//! resid: error-bounded lossy compression of floating-point chunks.
//!
//! Data flows one way: `bytes -> field -> quantize -> predict -> entropy -> container` and back.
//! [`compress`] and [`decompress`] are the whole interface the HDF5 plugin needs; every chunk
//! carries its own element type, shape and bound, so it decodes with no outside information.
//! The byte layout is specified in `docs/FORMAT.md`.

// Unsafe code is denied everywhere except the CUDA modules `backend::cuda::{bitplane, compile,
// context, conv, launch, lorenzo, nglr, packed, probe, staging, stats, train}` (driver and
// NVRTC calls, the caller's current context, kernel launches over raw device addresses),
// `nn::simd` (SSE2 intrinsics for NGLR inference) and `nn::wide` (AVX2 kernels behind a
// run-time feature check), which allow it at module level, `entropy::packed::lanes` and
// `predict::lorenzo::lanes` (SSE2 loads and stores), and the quantizer's AVX2 passes
// (`quant::index_pass`, `quant::lanes_stats_dispatch`: the same loops compiled for AVX2 behind
// a run-time check).
#![deny(unsafe_code)]
// Bound checks are written `!(a <= b)` on purpose: the negation also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod backend;
pub mod bytes;
mod compress;
mod decompress;
pub mod enhance;
pub mod entropy;
pub mod error;
pub mod field;
pub mod format;
pub mod nn;
pub mod params;
pub mod pool;
pub mod predict;
pub mod quant;
pub mod region;
mod select;
pub mod transform;

pub use error::{Error, Result};

/// The environment variable that sets which of the codec's `log` messages the plugin and the
/// `resid` command print on stderr (`off`, `error`, `warn` (their default), `info`, `debug`).
pub const LOG_ENV: &str = "RESID_LOG";
pub use format::ChunkSummary;
pub use params::{Backend, ChunkInfo, Coder, DType, Enhancer, ErrorMode, Params, PredictorChoice};

/// Compresses one chunk: `data` holds `chunk.shape` elements of `chunk.dtype`, little-endian.
///
/// Every decoded value is within the bound `params` asks for (see [`ErrorMode`]); values that
/// cannot be bounded (NaN, infinities, huge magnitudes) are stored exactly. The output is never
/// more than [`format::MAX_OVERHEAD`] bytes larger than `data`.
pub fn compress(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Result<Vec<u8>> {
    let work = || compress::compress(data, chunk, params);
    // The CPU-only predictors' trials run dozens of parallel loops per chunk: on a worker the
    // default writes 16x64x64 chunks in 1.21 s instead of 1.34 s (seven fields). Plain
    // Lorenzo runs a few, and a hand-off costs it more than it saves (the packed coder: 0.069
    // s against 0.044 s); NGLR and NeurLZ may train on the GPU, which follows the CUDA context
    // current on the caller's thread (docs/GPU.md), so they stay there too.
    let trials_on_cpu = matches!(
        params.predictor,
        PredictorChoice::Auto | PredictorChoice::Interp | PredictorChoice::Wavelet
    ) && params.enhancer == Enhancer::Off;
    match trials_on_cpu {
        true => pool::run_on_worker(work)?,
        false => pool::run(work)?,
    }
}

/// Decompresses one chunk written by [`compress`] into its little-endian element bytes.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>> {
    pool::run(|| decompress::decompress(data, usize::MAX))?
}

/// Like [`decompress`], but refuses a chunk that declares more than `max_len` output bytes
/// before allocating anything (the plugin passes the chunk size HDF5 expects).
pub fn decompress_limited(data: &[u8], max_len: usize) -> Result<Vec<u8>> {
    pool::run(|| decompress::decompress(data, max_len))?
}

/// Decompresses one chunk into `out`, which must be exactly the chunk's decoded size
/// ([`inspect`] tells it; `Error::TooLarge` or `Error::SizeMismatch` otherwise, before
/// anything is decoded). Saves
/// the copy [`decompress`] makes when the caller owns the destination (the HDF5 filter).
pub fn decompress_into(data: &[u8], out: &mut [u8]) -> Result<()> {
    pool::run(|| decompress::decompress_into(data, out))?
}

/// Reads a chunk's header without decoding it (element type, shape, bound, sizes).
pub fn inspect(data: &[u8]) -> Result<ChunkSummary> {
    format::summary(data)
}
