//! NeurLZ training on the GPU (`kernels/conv_train.cu`), encode only: the algorithm of
//! [`conv_train::train`] (same initial weights, the same patches in the same order, the same
//! loss, Adam and learning-rate schedule) with every step on the device. The training set goes
//! up once, the weights come back once. Float results may differ from the CPU's in the last
//! bits (contraction, summation order); only the quantized weights the encoder stores matter.
//!
//! The files: `layers` (each layer's launches), `step` (a training step's launches, in
//! order), `tensor_cores` (which kernels the 3x3 layers run on, and the device check); here,
//! the device's buffers and the training loop.

mod layers;
mod step;
mod tensor_cores;

use std::cell::RefCell;

use cudarc::driver::{CudaEvent, CudaSlice};

use crate::backend::cuda::launch::{blocks_for, Arg};
use crate::backend::cuda::{guard, Cuda};
use crate::backend::{offload, Stage};
use crate::error::{ensure, Error, Result};
use crate::nn::conv::{Arch, MAX_INPUTS};
use crate::nn::conv_train::{self, FNet, Patches, TrainConfig, TrainSet};
use crate::nn::ADAM;
use crate::params::Backend;
use layers::PARTIAL_ROWS;
use step::{StepPlan, GRAD, PARTS, TOTAL};
pub use tensor_cores::{tensor_cores_agree, tensor_cores_usable, Conv3Kernels, CONV_TC_ENV};

/// [`conv_train::train`] on the device chosen for `backend` ([`Stage::NeurlzTraining`]); the CPU
/// trains when no GPU is chosen or the GPU fails (logged).
pub fn train<P: Patches + ?Sized>(
    backend: Backend,
    arch: Arch,
    set: &P,
    cfg: &TrainConfig,
) -> FNet {
    let shape = set.shape();
    let values = shape.slices * shape.h * shape.w * shape.o;
    offload(
        Stage::NeurlzTraining,
        backend,
        values,
        |g| g.train_conv(arch, set, cfg),
        || conv_train::train(arch, set, cfg),
    )
}

/// Device buffers for steps of `batch` patches of `ph x pw`, and what a step launches.
struct Trainer<'a> {
    g: &'a Cuda,
    plan: StepPlan,
    /// The training set on the device, held while the plan uses its addresses.
    _set: [CudaSlice<f32>; 3],
    bufs: Vec<CudaSlice<f32>>,
    /// When set, an event after every launch (for [`Cuda::conv_profile`]).
    marks: RefCell<Option<Vec<(&'static str, CudaEvent)>>>,
}

impl<'a> Trainer<'a> {
    fn new<P: Patches + ?Sized>(
        g: &'a Cuda,
        arch: Arch,
        set: &P,
        batch: usize,
        (ph, pw): (usize, usize),
        kernels: Conv3Kernels,
    ) -> Result<Self> {
        let tc = kernels.on(g)?;
        let shape = set.shape();
        ensure!(
            shape.slices < i32::MAX as usize && shape.h < 1 << 24 && shape.w < 1 << 24,
            Error::Unsupported("cuda: NeurLZ training set too large".into())
        );
        ensure!(
            shape.k == arch.cin
                && shape.o == arch.cout
                && ph <= shape.h
                && pw <= shape.w
                && batch >= 1
                && batch * ph * pw < (i32::MAX as usize) / (4 * MAX_INPUTS),
            Error::Unsupported("cuda: NeurLZ training shapes do not agree".into())
        );
        let (k, o, c) = (arch.cin, arch.cout, arch.width);
        let p = batch * ph * pw;
        let p2 = batch * ph.div_ceil(2) * pw.div_ceil(2);
        let np = arch.params();
        let sizes = [
            k * p,
            o * p,
            o * p,
            2 * c * p,
            2 * c * p2,
            2 * c * p2,
            c * p,
            o * p,
            o * p,
            c * p,
            2 * c * p,
            2 * c * p2,
            2 * c * p2,
            c * p,
            PARTIAL_ROWS * np,
            np,
            1,
            PARTS.max(PARTIAL_ROWS),
        ];
        let bufs = sizes
            .iter()
            .map(|&s| g.zeros::<f32>(s))
            .collect::<Result<Vec<_>>>()?;
        let on_device = upload_set(g, set)?;
        let plan = StepPlan::new(
            arch,
            (shape.h, shape.w),
            batch,
            (ph, pw),
            tc,
            bufs.iter().map(|b| g.ptr(b)).collect(),
            std::array::from_fn(|j| g.ptr(&on_device[j])),
        );
        Ok(Trainer {
            g,
            plan,
            _set: on_device,
            bufs,
            marks: RefCell::new(None),
        })
    }

    /// [`Cuda::launch`], timed when profiling.
    ///
    /// # Safety
    /// As [`Cuda::launch`].
    unsafe fn launch(
        &self,
        name: &'static str,
        grid: (usize, usize, usize),
        args: &[Arg],
    ) -> Result<()> {
        self.g.launch(name, grid, args)?;
        if let Some(m) = self.marks.borrow_mut().as_mut() {
            m.push((name, self.g.mark()?));
        }
        Ok(())
    }

    fn p(&self, i: usize) -> u64 {
        self.plan.bufs[i]
    }

    /// The summed gradient of the batch at `picks` (device, 3 `i32` a patch) for the weights
    /// at `params` (device) into `bufs[GRAD]`, the points that counted into `bufs[TOTAL]`.
    ///
    /// # Safety
    /// `picks` holds `3 batch` `i32` and `params` the network's weights, on the device.
    unsafe fn grad(&self, picks: u64, params: u64) -> Result<()> {
        for (name, grid, args) in self.plan.grad(picks, params)? {
            self.launch(name, grid, &args)?;
        }
        Ok(())
    }
}

/// Rows of a training set [`upload_set`] computes on the host at a time: about this many
/// points, whatever the slice.
const UPLOAD_POINTS: usize = 1 << 18;

/// The training set on the device as the kernels read it (`[slice][plane][y][x]` inputs,
/// targets, masks), computed and sent band of rows by band of rows: the host holds one band
/// (`k + 2 o` floats a point of `UPLOAD_POINTS`), never the whole set.
fn upload_set<P: Patches + ?Sized>(g: &Cuda, set: &P) -> Result<[CudaSlice<f32>; 3]> {
    let sh = set.shape();
    let n = sh.slices * sh.h * sh.w;
    let planes = [sh.k, sh.o, sh.o];
    let mut on_device = [
        g.zeros::<f32>(sh.k * n)?,
        g.zeros::<f32>(sh.o * n)?,
        g.zeros::<f32>(sh.o * n)?,
    ];
    let rows = (UPLOAD_POINTS / sh.w.max(1)).clamp(1, sh.h.max(1));
    for s in 0..sh.slices {
        for y0 in (0..sh.h).step_by(rows) {
            let rh = rows.min(sh.h - y0);
            let band = set.patch(s, y0, 0, rh, sh.w);
            for ((dst, src), &ch) in on_device.iter_mut().zip(&band).zip(&planes) {
                ensure!(
                    src.len() == ch * rh * sh.w,
                    Error::Unsupported("cuda: NeurLZ training set sizes".into())
                );
                // Plane c of the band: rows y0.. of plane c of slice s.
                for (c, part) in src.chunks_exact(rh * sh.w).enumerate() {
                    let at = ((s * ch + c) * sh.h + y0) * sh.w;
                    g.upload_into(part, dst, at)?;
                }
            }
        }
    }
    Ok(on_device)
}

/// Patches as the kernels read them: `(slice, y0, x0)` as three `i32`.
fn picks_i32(picks: &[(usize, usize, usize)]) -> Vec<i32> {
    picks
        .iter()
        .flat_map(|&(s, y, x)| [s as i32, y as i32, x as i32])
        .collect()
}

impl Cuda {
    /// [`conv_train::train`] on the GPU.
    pub fn train_conv<P: Patches + ?Sized>(
        &self,
        arch: Arch,
        set: &P,
        cfg: &TrainConfig,
    ) -> Result<FNet> {
        self.train_conv_with(arch, set, cfg, Conv3Kernels::Auto)
    }

    /// [`Cuda::train_conv`] with the 3x3 layers on `kernels`.
    pub fn train_conv_with<P: Patches + ?Sized>(
        &self,
        arch: Arch,
        set: &P,
        cfg: &TrainConfig,
        kernels: Conv3Kernels,
    ) -> Result<FNet> {
        guard("neurlz training", || {
            let ps = conv_train::patch_size(set, cfg);
            let batch = cfg.batch.max(1);
            let tr = Trainer::new(self, arch, set, batch, ps, kernels)?;
            let mut net = FNet::new(arch, cfg.seed);
            let np = net.params.len();
            let params = self.upload(&net.params)?;
            let m1 = self.zeros::<f32>(np)?;
            let m2 = self.zeros::<f32>(np)?;
            let picks = self.upload(&picks_i32(&conv_train::schedule(set, cfg)))?;
            let (pp, picks_p) = (self.ptr(&params), self.ptr(&picks));
            let (b1, b2, eps) = ADAM;
            for step in 0..cfg.steps {
                let t = (step + 1) as i32;
                // SAFETY: `picks` holds `steps x batch` patches, `params`, `m1`, `m2` and the
                // trainer's buffers live until the download below.
                unsafe {
                    tr.grad(picks_p + (12 * batch * step) as u64, pp)?;
                    self.launch(
                        "tr_adam",
                        (blocks_for(np), 1, 1),
                        &[
                            Arg::Ptr(pp),
                            Arg::Ptr(tr.p(GRAD)),
                            Arg::Ptr(self.ptr(&m1)),
                            Arg::Ptr(self.ptr(&m2)),
                            Arg::I32(np as i32),
                            Arg::Ptr(tr.p(TOTAL)),
                            Arg::F32(conv_train::lr_at(cfg, step)),
                            Arg::F32(b1),
                            Arg::F32(b2),
                            Arg::F32(1.0 - b1.powi(t)),
                            Arg::F32(1.0 - b2.powi(t)),
                            Arg::F32(eps),
                        ],
                    )?;
                }
            }
            net.params = self.download(&params)?;
            ensure!(
                net.params.iter().all(|v| v.is_finite()),
                Error::Unsupported("cuda: NeurLZ training diverged".into())
            );
            Ok(net)
        })
    }

    /// Milliseconds each launch of one gradient step takes, in launch order (so layer by
    /// layer: forward, then backward from the output), for a batch of `batch` patches of
    /// `patch x patch` of `set` (the benchmark's breakdown).
    pub fn conv_profile(
        &self,
        arch: Arch,
        set: &TrainSet<'_>,
        batch: usize,
        patch: usize,
        kernels: Conv3Kernels,
    ) -> Result<Vec<(&'static str, f32)>> {
        guard("neurlz profile", || {
            let cfg = TrainConfig {
                steps: 1,
                batch,
                patch,
                ..TrainConfig::default()
            };
            let ps = conv_train::patch_size(set, &cfg);
            let tr = Trainer::new(self, arch, set, batch, ps, kernels)?;
            let net = FNet::new(arch, cfg.seed);
            let params = self.upload(&net.params)?;
            let picks = self.upload(&picks_i32(&conv_train::schedule(set, &cfg)))?;
            // SAFETY: `picks` holds one step's patches; every buffer lives until the sync.
            unsafe { tr.grad(self.ptr(&picks), self.ptr(&params))? };
            *tr.marks.borrow_mut() = Some(vec![("start", self.mark()?)]);
            unsafe { tr.grad(self.ptr(&picks), self.ptr(&params))? };
            self.sync()?;
            let marks = tr.marks.borrow_mut().take().unwrap_or_default();
            marks
                .windows(2)
                .map(|w| {
                    let ms = w[0].1.elapsed_ms(&w[1].1);
                    Ok((
                        w[1].0,
                        ms.map_err(|e| crate::backend::device_error("event", e))?,
                    ))
                })
                .collect()
        })
    }

    /// [`conv_train::batch_grad`] on the GPU with `kernels` (for the tests that compare the
    /// two).
    pub fn conv_batch_grad(
        &self,
        net: &FNet,
        set: &TrainSet<'_>,
        picks: &[(usize, usize, usize)],
        ps: (usize, usize),
        kernels: Conv3Kernels,
    ) -> Result<(Vec<f32>, f32)> {
        guard("neurlz gradient", || {
            let tr = Trainer::new(self, net.arch, set, picks.len(), ps, kernels)?;
            let params = self.upload(&net.params)?;
            let pd = self.upload(&picks_i32(picks))?;
            // SAFETY: `pd` holds the batch's patches; every buffer lives until the downloads.
            unsafe { tr.grad(self.ptr(&pd), self.ptr(&params))? };
            let g = self.download(&tr.bufs[GRAD])?;
            let total = self.download(&tr.bufs[TOTAL])?[0];
            Ok((g, total))
        })
    }
}
