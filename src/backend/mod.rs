//! Compute backends: which stages of a chunk run on a GPU (issue #6), and how.
//!
//! The CPU path is the crate's own code (the pipeline, the predictors, the learned stages);
//! [`cuda::Cuda`] runs hand-written kernels (`kernels/*.cu`), compiled at run time by NVRTC,
//! that must give the same bytes. The Lorenzo stages of a chunk ([`EncodeJob`],
//! [`DecodeJob`]): range statistics, the fused prequantize + escape + Lorenzo residual (+ zigzag
//! and bit-plane transposition for the lz4 path) over every block, and the inverse on decode.
//! With the packed coder (`entropy::packed`) the GPU also codes and decodes the residuals, so a
//! chunk crosses the bus once each way; the range coder and LZ4 are sequential and stay on the
//! CPU. The learned stages: NeurLZ's fixed-point inference ([`cuda::conv`], the CPU's
//! corrections bit for bit), its training and NGLR's fit ([`cuda::train`], [`cuda::nglr`],
//! encode only, floats), and NGLR's prediction ([`cuda::nglr`], integer: the CPU's
//! reconstruction, codes and escapes bit for bit).
//!
//! Selection: `Params.backend` (auto / cpu / cuda), overridden by the environment variable
//! `RESID_BACKEND=cpu|cuda|auto`. `auto` uses the GPU when one is usable and the stage's work
//! reaches its threshold ([`Stage::auto_min`], one table for every stage); `cuda` uses it for
//! any size. [`offload`] runs a stage there and falls back to the CPU; when no device is usable
//! (no driver, no NVRTC, no GPU, a failing kernel), the CPU does the work and `log` says why,
//! once. Compiled kernels are kept on disk between processes ([`cuda::kernel_cache`]).

pub mod cuda;
mod offload;

pub use offload::{fell_back, gpu_for, offload, Stage};

// `pipeline` names NGLR's GPU stage by this path.
pub use cuda::nglr as cuda_nglr;

use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::field::{self, Block};
use crate::params::{Backend, ChunkInfo, Coder, DType, ErrorMode, Params};
use crate::quant::{Grid, Stats};

/// The environment variable that overrides `Params.backend`.
pub const ENV: &str = "RESID_BACKEND";

/// One chunk's encode work, Lorenzo on every block.
#[derive(Debug, Clone, Copy)]
pub struct EncodeJob<'a> {
    /// The chunk's values, little-endian bytes of `dtype`.
    pub data: &'a [u8],
    pub dtype: DType,
    pub dims: [usize; 3],
    pub ext: [usize; 3],
    pub blocks: &'a [Block],
    pub grid: Grid,
    pub eb: f64,
    pub coder: Coder,
}

/// What the encoder writes for a chunk: every block's payload (Lorenzo residuals coded by the
/// job's coder) and the sorted flat indices of the escaped values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub coded: Vec<Vec<u8>>,
    pub escapes: Vec<usize>,
}

/// One chunk's decode work: every block's coder, payload and CRC-32 (every block coded with
/// Lorenzo), to the values before escapes are applied. The GPU verifies the checksums, as the
/// CPU decoder does.
#[derive(Debug, Clone, Copy)]
pub struct DecodeJob<'a> {
    pub parts: &'a [(Coder, &'a [u8], u32)],
    pub dtype: DType,
    pub dims: [usize; 3],
    pub ext: [usize; 3],
    pub blocks: &'a [Block],
    pub grid: Grid,
}

/// A chunk's block geometry.
pub struct Geometry {
    pub dims: [usize; 3],
    pub ext: [usize; 3],
    pub blocks: Vec<Block>,
}

impl Geometry {
    pub fn job<'a>(
        &'a self,
        data: &'a [u8],
        dtype: DType,
        grid: Grid,
        eb: f64,
        coder: Coder,
    ) -> EncodeJob<'a> {
        EncodeJob {
            data,
            dtype,
            dims: self.dims,
            ext: self.ext,
            blocks: &self.blocks,
            grid,
            eb,
            coder,
        }
    }
}

/// The grid, bound and block geometry of a chunk with statistics `st`, or `None` where the
/// kernels' grid does not apply ([`crate::quant::lbrc_grid`]).
pub fn chunk_plan(
    st: &Stats,
    chunk: &ChunkInfo,
    params: &Params,
) -> Result<Option<(Grid, f64, Geometry)>> {
    let Some((grid, eb)) = crate::quant::lbrc_grid(st, params, chunk.dtype == DType::F32) else {
        return Ok(None);
    };
    let dims = field::grid_dims(&chunk.shape);
    let ext = field::block_extents(dims, crate::entropy::block_target(params.coder));
    let blocks = field::blocks(dims, ext)?;
    Ok(Some((grid, eb, Geometry { dims, ext, blocks })))
}

/// The backend asked for: `RESID_BACKEND` when set to a known name, else `requested`.
pub fn requested(requested: Backend) -> Backend {
    match std::env::var(ENV).ok().as_deref().map(str::trim) {
        Some("cpu") => Backend::Cpu,
        Some("cuda") | Some("gpu") => Backend::Cuda,
        Some("auto") => Backend::Auto,
        Some("") | None => requested,
        Some(other) => {
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| {
                log::warn!("resid: {ENV}={other:?} is not cpu, cuda or auto: using cd_values");
            });
            requested
        }
    }
}

/// The process's CUDA device, probed once (driver and NVRTC present, a device, every kernel
/// compiled and loaded). `None`, with one log message, when any of that fails.
pub fn device() -> Option<Arc<cuda::Cuda>> {
    device_or_why().ok()
}

/// [`device`], or why there is none.
///
/// A process forked after its parent probed has none: CUDA does not survive `fork`, and the
/// parent's context, stream and buffers are not the child's (`pool` gives the child threads).
pub fn device_or_why() -> std::result::Result<Arc<cuda::Cuda>, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    /// The process that probed (0: none yet) and the one that said it cannot use the GPU.
    static PROBED_BY: AtomicU32 = AtomicU32::new(0);
    static TOLD: AtomicU32 = AtomicU32::new(0);
    static DEVICE: OnceLock<std::result::Result<Arc<cuda::Cuda>, String>> = OnceLock::new();
    let pid = std::process::id();
    let by = PROBED_BY.load(Ordering::Acquire);
    if by != 0 && by != pid {
        let why = format!("process {pid} was forked from {by}, which had opened the GPU");
        if TOLD.swap(pid, Ordering::AcqRel) != pid {
            log::info!("resid: {why}; the CPU backend does the work here");
        }
        return Err(why);
    }
    DEVICE
        .get_or_init(|| {
            PROBED_BY.store(pid, Ordering::Release);
            match cuda::Cuda::probe() {
                Ok(c) => {
                    let s = c.startup();
                    log::info!(
                        "resid: GPU backend on {} (ready in {:.2} s, {} of {} kernel modules \
                         cached)",
                        c.describe(),
                        s.time.as_secs_f64(),
                        s.cached,
                        cuda::kernels::MODULES.len()
                    );
                    Ok(Arc::new(c))
                }
                Err(e) => {
                    log::info!("resid: no usable GPU ({e}); the CPU backend does the work");
                    Err(e.to_string())
                }
            }
        })
        .clone()
}

/// The GPU's share of the pipeline's encoder: `Some((grid, eb, encoded))` when the GPU is
/// chosen for this chunk ([`Stage::LorenzoEncode`]) and ran it, `None` when the CPU pipeline
/// should run it instead (CPU chosen, a predictor or mode the kernels do not cover, or a device
/// error, logged).
pub fn gpu_encode(data: &[u8], chunk: &ChunkInfo, params: &Params) -> Option<(Grid, f64, Encoded)> {
    if params.predictor != crate::params::PredictorChoice::Lorenzo
        || matches!(params.mode, ErrorMode::Nrmse | ErrorMode::Psnr)
    {
        return None;
    }
    let on_gpu = |g: &cuda::Cuda| g.encode_chunk(data, chunk, params);
    offload(
        Stage::LorenzoEncode,
        params.backend,
        data.len(),
        on_gpu,
        || None,
    )
}

/// Checks every block's CRC-32, as the CPU decoder does.
pub(crate) fn verify(parts: &[(Coder, &[u8], u32)]) -> Result<()> {
    use rayon::prelude::*;
    parts.par_iter().try_for_each(|&(_, bytes, crc)| {
        if crc32fast::hash(bytes) == crc {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch { what: "block" })
        }
    })
}

pub(crate) fn device_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Unsupported(format!("cuda: {what}: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_plan() {
        let fields: Vec<Vec<f32>> = vec![
            (0..1000).map(|i| (i as f32 * 0.37).sin() * 10.0).collect(),
            vec![3.5; 64],
            vec![f32::NAN, 1.0, -0.0, 0.0, f32::INFINITY],
            vec![f32::NAN; 8],
            vec![-0.0, 0.0, -0.0],
        ];
        for x in &fields {
            for p in [Params::abs(1e-3), Params::rel(1e-4), Params::abs(5.0)] {
                // No plan: too many values escape and the chunk is stored as it is.
                let Some(plan) = crate::quant::plan(x, &p) else {
                    assert!(x.iter().filter(|v| !v.is_finite()).count() * 5 > x.len() * 4);
                    continue;
                };
                let (g, eb) = crate::quant::lbrc_grid(&crate::quant::stats(x), &p, true).unwrap();
                assert_eq!(plan.grid.mid.to_bits(), g.mid.to_bits());
                // The kernels cover the feedback-free grid (m = 1), the same step as plan's
                // then: 2 eb less a margin for the last f32 rounding, at most 1/64 of eb, less
                // at most 1/64 to put the minimum on the grid (`quant::aligned_step`). A
                // feedback grid's step is 2 eb / m less a margin, at most a quarter of it.
                assert_eq!(plan.eb.to_bits(), eb.to_bits());
                let lbrc =
                    crate::quant::plan(x, &p.with_predictor(crate::PredictorChoice::Lorenzo));
                assert_eq!(lbrc.unwrap().grid.step.to_bits(), g.step.to_bits());
                if eb > 0.0 {
                    let least = 2.0 * (1.0 - 1.0 / 64.0) * (1.0 - 1.0 / 64.0) * eb;
                    assert!(g.step <= 2.0 * eb && g.step >= least);
                    let full = 2.0 * eb / plan.m as f64;
                    assert!(plan.grid.step <= full && plan.grid.step >= 0.75 * full);
                }
            }
        }
    }
}
