//! Which device runs each stage the GPU can take, and the one way a stage goes there: choose
//! by the backend asked for and the stage's size threshold, run on the GPU, and on a failure
//! say so once and let the CPU do the work. Every choice gives the same bytes either way
//! (training aside, whose stored weights are what count), so only speed depends on it.

use std::sync::Arc;

use super::cuda::Cuda;
use super::{device, device_or_why, requested};
use crate::error::{Error, Result};
use crate::params::Backend;

/// A stage the GPU can run, each with its own size threshold under `auto`
/// ([`Stage::auto_min`]) and its own unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Statistics, prequantization, Lorenzo and the coder's GPU share of a whole chunk (LBRC:
    /// predictor word 1, absolute or relative bound). Work: the chunk's bytes.
    LorenzoEncode,
    /// The inverse, for a chunk of Lorenzo blocks. Work: the decoded bytes.
    LorenzoDecode,
    /// NGLR's network fit, its Adam phase. Work: sample visits (samples x epochs).
    NglrFit,
    /// NGLR's prediction and coding of the blocks it codes whole. Work: the chunk's bytes.
    NglrEncode,
    /// NGLR's prediction of its blocks when decoding. Work: the decoded bytes.
    NglrDecode,
    /// NeurLZ's fixed-point inference (encoder and decoder). Work: the chunk's values.
    NeurlzInference,
    /// NeurLZ's network training. Work: the training set's values.
    NeurlzTraining,
}

impl Stage {
    /// Under `auto`, the least work that goes to the GPU; smaller work stays on the CPU, where
    /// transfers, launches and a process's first use of the device would cost more than the
    /// GPU saves. The one table of these thresholds; where each was measured (H100 / H200,
    /// 16 CPU threads):
    ///
    /// | stage | from | evidence |
    /// | --- | ---: | --- |
    /// | Lorenzo encode, decode | 16 MiB | not swept: BENCHMARKS.md "GPU" times 128 and 512 MiB chunks only (512 MiB: compress 64 against 676 ms, decompress 69 against 450 ms); docs/GPU.md "Choosing the GPU" |
    /// | NGLR fit | 2^20 visits | BENCHMARKS.md "Learned stages (NGLR, NeurLZ)": the default budget (32 Ki samples x 8 epochs) fits in 0.04 s on the CPU, 0.013 s on the GPU, less than opening the device; the largest, 0.54 against 0.12 s |
    /// | NGLR encode | 4 MiB | the same section: 4 / 16 / 64 MiB chunks in 0.079 / 0.091 / 0.203 s against 0.118 / 0.104 / 0.332 s; docs/GPU.md "The learned stages" |
    /// | NGLR decode | 16 MiB | the same runs: 0.041 against 0.047-0.055 s at 16 MiB, a tie at 64 MiB, the CPU ahead at 4 MiB (its codes are decoded on the CPU either way) |
    /// | NeurLZ inference, training | 65,536 values | not swept: the same section's 512^3 rows (inference 2.9-3.6 GB/s against 59-70 MB/s; default training 0.06 against 0.7-0.9 s); docs/GPU.md "The learned stages" |
    pub const fn auto_min(self) -> usize {
        match self {
            Stage::LorenzoEncode | Stage::LorenzoDecode => 16 << 20,
            Stage::NglrFit => 1 << 20,
            Stage::NglrEncode => 4 << 20,
            Stage::NglrDecode => 16 << 20,
            Stage::NeurlzInference | Stage::NeurlzTraining => 1 << 16,
        }
    }

    /// What a failure names, and what the CPU does instead.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Stage::LorenzoEncode => ("encode", "the CPU redoes the chunk"),
            Stage::LorenzoDecode => ("decode", "the CPU redoes the chunk"),
            Stage::NglrFit => ("NGLR training", "the CPU trains"),
            Stage::NglrEncode => ("NGLR encode", "the CPU codes the chunk"),
            Stage::NglrDecode => ("NGLR decode", "the CPU decodes the blocks"),
            Stage::NeurlzInference => ("NeurLZ inference", "the CPU runs it"),
            Stage::NeurlzTraining => ("NeurLZ training", "the CPU trains"),
        }
    }
}

/// The device for `stage` over `work` under `backend` (`RESID_BACKEND` first): always for
/// `cuda`, from [`Stage::auto_min`] on for `auto`, never for `cpu`; `None` also when no device
/// is usable. For the stages whose fallback is not one closure ([`offload`]).
pub fn gpu_for(stage: Stage, backend: Backend, work: usize) -> Option<Arc<Cuda>> {
    match requested(backend) {
        Backend::Cpu => None,
        Backend::Cuda => device_or_why()
            .map_err(|why| {
                // Asked for by name: say so where it cannot be had (auto only logs at info).
                static TOLD: std::sync::Once = std::sync::Once::new();
                TOLD.call_once(|| {
                    log::warn!(
                        "resid: the CUDA backend was asked for, but no GPU is usable ({why}); \
                         the CPU does the work"
                    )
                });
            })
            .ok(),
        Backend::Auto if work >= stage.auto_min() => device(),
        Backend::Auto => None,
    }
}

/// `stage` over `work` under `backend`: `on_gpu` when the GPU is chosen ([`gpu_for`]) and
/// succeeds, else `on_cpu` (a GPU failure is logged by [`fell_back`]).
pub fn offload<R>(
    stage: Stage,
    backend: Backend,
    work: usize,
    on_gpu: impl FnOnce(&Cuda) -> Result<R>,
    on_cpu: impl FnOnce() -> R,
) -> R {
    if let Some(g) = gpu_for(stage, backend, work) {
        match on_gpu(&g) {
            Ok(r) => return r,
            Err(e) => _ = fell_back(stage, &e),
        }
    }
    on_cpu()
}

/// Reports that `stage` failed on the GPU, the CPU taking over: a warning the first time in a
/// process, later ones at debug level, since a full device or a broken driver fails every
/// chunk alike. Returns whether it warned.
pub fn fell_back(stage: Stage, e: &Error) -> bool {
    let (what, then) = stage.words();
    gpu_failed(what, e, then)
}

fn gpu_failed(what: &str, e: &Error, then: &str) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let first = !WARNED.swap(true, Ordering::Relaxed);
    if first {
        log::warn!(
            "resid: GPU {what} failed ({e}); {then} (later GPU failures of this process are \
             logged at debug level)"
        );
    } else {
        log::debug!("resid: GPU {what} failed ({e}); {then}");
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_gpu_failure_warns() {
        let e = Error::Unsupported("cuda: test".into());
        assert!(fell_back(Stage::LorenzoEncode, &e));
        assert!(!fell_back(Stage::NglrDecode, &e));
    }

    #[test]
    fn without_a_device_the_cpu_closure_runs() {
        // RESID_BACKEND may ask for the GPU, but only a usable one runs the GPU closure.
        let cases = [
            (Stage::LorenzoEncode, Backend::Cpu, usize::MAX),
            (Stage::NglrFit, Backend::Auto, 0),
            (Stage::NeurlzTraining, Backend::Cuda, 1),
        ];
        for (stage, backend, work) in cases {
            let r = offload(stage, backend, work, |_| Ok(1), || 2);
            assert!(r == 2 || device().is_some());
        }
    }
}
