//! NGLR's network fit on the GPU (`kernels/nglr_train.cu`), encode only: the Adam phase of
//! [`train::fit`] (same starting weights, the same sample orders, loss and schedule) in one
//! kernel launch, a block that keeps the weights in shared memory. The samples go up once,
//! the weights come back once. Float results may differ from the CPU's in the last bits; the
//! quantized network is what the encoder stores and codes with.

use super::cuda::{guard, Arg, Cuda};
use crate::error::{ensure, Error, Result};
use crate::nn::infer::{Net, INPUTS, MAX_HIDDEN};
use crate::nn::train::{self, AdamProblem, Config};
use crate::nn::ADAM;
use crate::params::Backend;

/// Largest batch the kernel takes (`NG_MAXB` in `nglr_train.cu`).
pub const MAX_BATCH: usize = 128;

/// Under `auto`, the GPU fits from this many sample visits (samples x epochs) on: the fit
/// at the default budget (32 Ki samples, 8 epochs) takes 0.04 s on the CPU and 0.013 s on an
/// H200, less than a process's first use of the device costs (NVRTC compiles the kernels);
/// from the largest budgets (255 Ki samples: 0.54 against 0.12 s) it pays.
pub const AUTO_MIN_VISITS: usize = 1 << 20;

/// [`train::fit`] with its Adam phase on the backend selected for `backend`
/// (`super::gpu_for_work`, by [`AUTO_MIN_VISITS`]); the CPU runs it when no GPU is
/// selected or the GPU fails (logged).
pub fn fit(backend: Backend, f: &[[i64; INPUTS]], t: &[i64], cfg: &Config) -> Option<Net> {
    let gpu = super::gpu_for_work(backend, f.len() * cfg.epochs, AUTO_MIN_VISITS);
    train::fit_with(f, t, cfg, |p| {
        if let Some(g) = gpu {
            match g.nglr_adam(p) {
                Ok(params) => return params,
                Err(e) => _ = super::gpu_failed("NGLR training", &e, "the CPU trains"),
            }
        }
        train::adam(p)
    })
}

impl Cuda {
    /// [`train::adam`] on the GPU.
    pub fn nglr_adam(&self, p: &AdamProblem) -> Result<Vec<f32>> {
        guard("nglr training", || {
            let n = p.xs.len();
            ensure!(
                (1..=MAX_HIDDEN).contains(&p.hidden)
                    && (1..=MAX_BATCH).contains(&p.batch)
                    && p.ts.len() == n
                    && p.orders.len() == p.epochs * n
                    && p.params.len() == p.offsets().3 + 1
                    && n < i32::MAX as usize
                    && p.epochs < i32::MAX as usize,
                Error::Unsupported(
                    "cuda: NGLR training problem outside the kernel's limits".into()
                )
            );
            let flat: Vec<f32> = p.xs.iter().flatten().copied().collect();
            let xs = self.upload(&flat)?;
            let ts = self.upload(&p.ts)?;
            let orders = self.upload(&p.orders)?;
            let params = self.upload(&p.params)?;
            let (b1, b2, eps) = ADAM;
            // SAFETY: every buffer holds what the kernel reads (n samples of INPUTS, n targets,
            // epochs x n indices below n, the parameters) and lives until the download.
            unsafe {
                self.launch(
                    "nglr_adam",
                    (1, 1, 1),
                    &[
                        Arg::Ptr(self.ptr(&xs)),
                        Arg::Ptr(self.ptr(&ts)),
                        Arg::Ptr(self.ptr(&orders)),
                        Arg::I32(n as i32),
                        Arg::I32(p.epochs as i32),
                        Arg::I32(p.batch as i32),
                        Arg::I32(p.hidden as i32),
                        Arg::Ptr(self.ptr(&params)),
                        Arg::F32(p.c),
                        Arg::F32(p.hmax),
                        Arg::F32(p.lr),
                        Arg::F32(b1),
                        Arg::F32(b2),
                        Arg::F32(eps),
                    ],
                )?;
            }
            let out = self.download(&params)?;
            ensure!(
                out.iter().all(|v| v.is_finite()),
                Error::Unsupported("cuda: NGLR training diverged".into())
            );
            Ok(out)
        })
    }
}
