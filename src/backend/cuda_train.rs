//! NeurLZ training on the GPU (`kernels/conv_train.cu`), encode only: the algorithm of
//! [`conv_train::train`] (same initial weights, the same patches in the same order, the same
//! loss, Adam and learning-rate schedule) with every step on the device. The training set goes
//! up once, the weights come back once. Float results may differ from the CPU's in the last
//! bits (contraction, summation order); only the quantized weights the encoder stores matter.

use std::cell::RefCell;
use std::sync::OnceLock;

use cudarc::driver::{CudaEvent, CudaSlice};

use super::cuda::{blocks_for, guard, Arg, Cuda};
use crate::error::{ensure, Error, Result};
use crate::nn::conv::{Arch, LayerShape, MAX_INPUTS};
use crate::nn::conv_train::{self, FNet, TrainConfig, TrainSet};
use crate::nn::ADAM;
use crate::params::Backend;

/// [`conv_train::train`] on the backend selected for `backend` (`super::learned_gpu`); the
/// CPU trains when no GPU is selected or the GPU fails (logged).
pub fn train(backend: Backend, arch: Arch, set: &TrainSet<'_>, cfg: &TrainConfig) -> FNet {
    let values = set.slices * set.h * set.w * set.o;
    if let Some(g) = super::learned_gpu(backend, values) {
        match g.train_conv(arch, set, cfg) {
            Ok(net) => return net,
            Err(e) => _ = super::gpu_failed("NeurLZ training", &e, "the CPU trains"),
        }
    }
    conv_train::train(arch, set, cfg)
}

/// Channels one thread computes (`G` in `conv_train.cu`).
const G: usize = 6;

/// Channel groups of `G` covering `c` channels.
fn groups(c: usize) -> usize {
    c.div_ceil(G)
}

/// Fewest chunks a weight gradient is split into (partial sums, then a fixed-order
/// reduction).
const CHUNKS: usize = 64;

/// Rows of the weight gradients' partial sums. A launch writes its parameters' sums into the
/// first rows, as many as it has chunks; the rows it leaves stay zero (each parameter's
/// launch, and so its chunk count, is the same at every step), and `tr_reduce` adds them all.
const PARTIAL_ROWS: usize = 4 * CHUNKS;

/// Chunks of `tr_conv3_bw_tc`: a block of it covers 8 input channels where one of
/// `tr_conv3_bw` covers one, so it takes 4 times the chunks to keep as many blocks running.
const TC_CHUNKS: usize = PARTIAL_ROWS;

/// Chunks of an FMA weight-gradient launch (`tr_conv3_bw`, `tr_deconv2_bw`, `tr_conv1_bw`)
/// with `blocks` blocks a chunk: about 1,024 blocks in all, from [`CHUNKS`] to
/// [`PARTIAL_ROWS`]. With 64 chunks the first layer (2 input channels) ran 128 blocks, fewer
/// than an H200 has SMs.
fn fma_chunks(blocks: usize) -> usize {
    (1024 / blocks.max(1)).clamp(CHUNKS, PARTIAL_ROWS)
}

/// Which kernels run the 3x3 layers' forward pass and input gradient (stride 1) and weight
/// gradients (stride 1 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv3Kernels {
    /// What measured fastest on an H200 (BENCHMARKS.md, "Learned stages (NGLR, NeurLZ)"): the
    /// FMA kernels for the forward pass and input gradient, the tensor cores for the weight
    /// gradients where [`tensor_cores_usable`] says so ([`Conv3Kernels::TcWeightGrads`]), else
    /// the FMA kernels throughout.
    Auto,
    /// `tr_conv3`, `tr_conv3_bx1` and `tr_conv3_bw` (any device).
    Fma,
    /// `tr_conv3` and `tr_conv3_bx1` for the forward pass and input gradient, `tr_conv3_bw_tc`
    /// for the weight gradients (compute capability 8.0 or more).
    TcWeightGrads,
    /// `tr_conv3_tc` and `tr_conv3_bw_tc` (compute capability 8.0 or more).
    TensorCores,
}

/// Where the 3x3 layers use the tensor cores (on the layers where they pay, [`tc_pays`]): the
/// forward pass and input gradient at stride 1 (`tr_conv3_tc`), the weight gradients at
/// either stride (`tr_conv3_bw_tc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct TcUse {
    pass: bool,
    grads: bool,
}

impl Conv3Kernels {
    /// The tensor-core use `self` asks for on `g`; an explicit tensor-core set on a device
    /// below sm_80 is refused.
    fn on(self, g: &Cuda) -> Result<TcUse> {
        let tc = |pass| TcUse { pass, grads: true };
        match self {
            Conv3Kernels::Auto if tensor_cores_usable(g) => Ok(tc(false)),
            Conv3Kernels::Auto | Conv3Kernels::Fma => Ok(TcUse::default()),
            Conv3Kernels::TcWeightGrads | Conv3Kernels::TensorCores => {
                ensure!(
                    g.arch_number() >= 80,
                    Error::Unsupported(format!(
                        "cuda: tensor-core kernels need sm_80 or later, not {}",
                        g.arch()
                    ))
                );
                Ok(tc(self == Conv3Kernels::TensorCores))
            }
        }
    }
}

/// Turns the tensor-core kernels off when set to `0` or `off` (NeurLZ training then runs
/// every layer on the FMA kernels).
pub const CONV_TC_ENV: &str = "RESID_CONV_TC";

/// Whether [`Conv3Kernels::Auto`] takes the tensor cores (for the weight gradients) on `g`: compute capability 8.0 or
/// more, not turned off by [`CONV_TC_ENV`], and the kernels agree with the FMA ones on this
/// device ([`tensor_cores_agree`], run once a process). A disagreement is logged and leaves
/// training on the FMA kernels.
pub fn tensor_cores_usable(g: &Cuda) -> bool {
    static AGREE: OnceLock<bool> = OnceLock::new();
    if g.arch_number() < 80
        || std::env::var(CONV_TC_ENV).is_ok_and(|v| matches!(v.trim(), "0" | "off"))
    {
        return false;
    }
    *AGREE.get_or_init(|| match tensor_cores_agree(g) {
        Ok(true) => true,
        Ok(false) => {
            log::warn!(
                "resid: the tensor-core convolution disagrees with the FMA kernels on {}; \
                 NeurLZ training uses the FMA kernels",
                g.describe()
            );
            false
        }
        Err(e) => {
            log::warn!("resid: the tensor-core convolution check failed ({e}); NeurLZ training uses the FMA kernels");
            false
        }
    })
}

/// The device check's layer: 12 -> 6 channels over 2 planes of 19 x 37 (stride 1, and
/// stride 2 for the weight gradients), and the transposed convolution's weight gradients up to
/// 19 x 37.
const AGREE_SHAPE: (usize, usize, usize, usize, usize) = (2, 19, 37, 12, 6);

/// Runs [`AGREE_SHAPE`]'s layer forward, its input gradient and its weight gradients on both
/// kernel sets and compares: equal to float rounding, or not.
pub fn tensor_cores_agree(g: &Cuda) -> Result<bool> {
    let (b, h, w, cin, cout) = AGREE_SHAPE;
    let n = b * h * w;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut vec = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (x, wt, bias, dout) = (vec(cin * n), vec(cout * cin * 9), vec(cout), vec(cout * n));
    let (x, wt, bias, dout) = (
        g.upload(&x)?,
        g.upload(&wt)?,
        g.upload(&bias)?,
        g.upload(&dout)?,
    );
    let np = cout * cin * 9 + cout;
    let outs = [
        g.zeros::<f32>(cout * n)?,
        g.zeros::<f32>(cout * n)?,
        g.zeros::<f32>(cin * n)?,
        g.zeros::<f32>(cin * n)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
        g.zeros::<f32>(PARTIAL_ROWS * np)?,
    ];
    let addrs = [g.ptr(&x), g.ptr(&wt), g.ptr(&bias), g.ptr(&dout)];
    let launches = agree_launches(addrs, std::array::from_fn(|k| g.ptr(&outs[k])));
    // SAFETY: every buffer has the sizes the kernels read and write for these shapes and lives
    // until the downloads below.
    for (name, grid, args) in launches {
        unsafe { g.launch(name, grid, &args)? };
    }
    let got: Vec<Vec<f32>> = outs.iter().map(|o| g.download(o)).collect::<Result<_>>()?;
    // The weight gradients come in chunks of partial sums: their
    // totals, in chunk order, as tr_reduce adds them.
    let total = |part: &[f32]| -> Vec<f32> {
        (0..np)
            .map(|j| part.iter().skip(j).step_by(np).sum())
            .collect()
    };
    let agree = |fma: &[f32], tc: &[f32]| {
        let scale = fma.iter().fold(0f32, |m, v| m.max(v.abs()));
        scale > 0.0
            && fma
                .iter()
                .zip(tc)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * scale)
    };
    Ok(agree(&got[0], &got[1])
        && agree(&got[2], &got[3])
        && agree(&total(&got[4]), &total(&got[5]))
        && agree(&total(&got[6]), &total(&got[7]))
        && agree(&total(&got[8]), &total(&got[9])))
}

/// [`tensor_cores_agree`]'s launches: the layer's input, taps, biases and output gradient at
/// `x, wt, bias, dout`, its results at `outs` (forward, input gradient, weight gradients; the
/// FMA kernels' first of each pair).
fn agree_launches([x, wt, bias, dout]: [u64; 4], outs: [u64; 10]) -> Vec<Launch> {
    let (b, h, w, cin, cout) = AGREE_SHAPE;
    let fma = Conv3Layer {
        cin,
        cout,
        b,
        h,
        w,
        stride: 1,
        relu: false,
        wt,
        bias,
        tc: TcUse::default(),
    };
    let tc = Conv3Layer {
        tc: TcUse {
            pass: true,
            grads: true,
        },
        ..fma
    };
    let sums = (0, cout * cin * 9, cout * cin * 9 + cout);
    let (fma2, tc2) = (
        Conv3Layer { stride: 2, ..fma },
        Conv3Layer { stride: 2, ..tc },
    );
    let mut launches = vec![
        fma.forward(x, outs[0]),
        tc.forward(x, outs[1]),
        fma.input_grad(dout, 0, 0, outs[2]),
        tc.input_grad(dout, 0, 0, outs[3]),
        fma.weight_grad(x, dout, sums, outs[4]),
        tc.weight_grad(x, dout, sums, outs[5]),
        // At stride 2 (the output gradient's first quarter).
        fma2.weight_grad(x, dout, sums, outs[6]),
        tc2.weight_grad(x, dout, sums, outs[7]),
    ];
    // The transposed convolution cin -> cout up to h x w (cropped: h and w are odd).
    let shape = (b, h.div_ceil(2), w.div_ceil(2), h, w);
    // Rows as long as the 3x3 layer's, as `tensor_cores_agree` adds them.
    let sums = (0, cout * cin * 4, cout * cin * 9 + cout);
    for (tc, out) in [(false, outs[8]), (true, outs[9])] {
        launches.push(deconv2_weight_grad(
            (x, cin),
            shape,
            (dout, cout),
            sums,
            out,
            tc,
        ));
    }
    launches
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

/// What one training step launches, apart from the device: the shapes, the kernel set and
/// the device addresses of the buffers. The tests build it without a GPU and check every
/// launch's arguments against its kernel.
struct StepPlan {
    layers: [LayerShape; 6],
    offs: Vec<(usize, usize)>,
    np: usize,
    k: usize,
    o: usize,
    c: usize,
    batch: usize,
    ph: usize,
    pw: usize,
    /// The training set's slices (`h x w`).
    dims: (usize, usize),
    /// Where the 3x3 layers use the tensor cores.
    tc: TcUse,
    /// Device addresses of `Trainer::bufs` (by the indices below) and of the training set's
    /// inputs, targets and mask.
    bufs: Vec<u64>,
    set: [u64; 3],
}

/// A kernel launch: its name, grid and arguments.
type Launch = (&'static str, (usize, usize, usize), Vec<Arg>);

/// What [`StepPlan::push_grad`] gives each launch to.
type LaunchFn<'a> = dyn Fn(&'static str, (usize, usize, usize), &[Arg]) -> Result<()> + 'a;

/// Indices into `Trainer::bufs`.
const X: usize = 0;
const T: usize = 1;
const M: usize = 2;
const CAT: usize = 3;
const A1: usize = 4;
const A2: usize = 5;
const A4: usize = 6;
const Z: usize = 7;
const DZ: usize = 8;
const D4: usize = 9;
const DCAT: usize = 10;
const D2: usize = 11;
const D1: usize = 12;
const D0: usize = 13;
const PARTIAL: usize = 14;
const GRAD: usize = 15;
const TOTAL: usize = 16;
const SUM_PARTS: usize = 17;

/// Blocks of the first stage of the counted points' sum (`tr_sum`, when the output layer is
/// not fused).
const PARTS: usize = 64;

/// The largest output layer `tr_out` takes (`OUT_MAX` outputs of `OUT_WIDTH` inputs in
/// `conv_train.cu`): the encoder's networks (one or two fields, width 4 or 6).
const OUT_MAX: usize = 2;
const OUT_WIDTH: usize = 8;

/// Whether one `tr_out` launch runs the output layer of a network `c` wide with `o` outputs
/// (its forward pass, the loss gradient, its gradients and the count of points that count),
/// where four kernels and `tr_sum` took 0.11 ms of a 0.97 ms step on an H100 (BENCHMARKS.md).
fn fused_output_layer(c: usize, o: usize) -> bool {
    c <= OUT_WIDTH && o <= OUT_MAX
}

/// The output tile of the tiled 3x3 kernels (`TW` x `TH` in `conv_train.cu`).
const TILE: (usize, usize) = (32, 32);

/// Tiles covering an `h x w` plane.
fn tiles(h: usize, w: usize) -> usize {
    w.div_ceil(TILE.0) * h.div_ceil(TILE.1)
}

/// `tr_conv3_tc`'s output tile (`TC_TW` x `TC_TH`).
const TC_TILE: (usize, usize) = (32, 16);

/// Whether the tensor-core kernels beat the FMA ones on a layer whose input (forward, weight
/// gradients) or output gradient (input gradient) has `cin` channels. They read channels 8 at a
/// time (padded), the FMA kernels one at a time: from sm_90 instruction counts
/// (`scripts/kernel-sass`), `tr_conv3_tc` takes about 400 instructions a point and chunk of 8
/// against `tr_conv3`'s 120 a point and channel, so the tensor cores pay from 4 channels (the
/// first layer's 2 stay on FMA).
fn tc_pays(cin: usize) -> bool {
    cin >= 4
}

/// What `tr_conv3_tc` does after the product: the forward pass's bias and ReLU, or the input
/// gradient's `add` and `post` (device addresses, 0: none).
#[derive(Clone, Copy)]
enum TcFinish {
    Forward { bias: u64, relu: bool },
    InputGrad { add: u64, post: u64 },
}

/// `tr_conv3_tc`'s grid and arguments: `cin` channels of `x` (`b` planes of `h x w`) into
/// `cout` channels of `out`, with the layer's taps at `wt` (for the input gradient, `cin` and
/// `cout` are the layer's output and input channels). A block takes 16 output channels when
/// `cout > 8`, else 8.
fn conv3_tc(
    x: u64,
    cin: usize,
    (b, h, w): (usize, usize, usize),
    wt: u64,
    cout: usize,
    finish: TcFinish,
    out: u64,
) -> ((usize, usize, usize), Vec<Arg>) {
    let i = |v: usize| Arg::I32(v as i32);
    let (bias, relu, flip, add, post) = match finish {
        TcFinish::Forward { bias, relu } => (bias, relu, false, 0, 0),
        TcFinish::InputGrad { add, post } => (0, false, true, add, post),
    };
    let per = if cout > 8 { 16 } else { 8 };
    let grid = (
        w.div_ceil(TC_TILE.0) * h.div_ceil(TC_TILE.1),
        cout.div_ceil(per),
        b,
    );
    let args = vec![
        Arg::Ptr(x),
        i(cin),
        i(b),
        i(h),
        i(w),
        Arg::Ptr(wt),
        Arg::Ptr(bias),
        i(cout),
        i(relu as usize),
        i(flip as usize),
        Arg::Ptr(add),
        Arg::Ptr(post),
        Arg::Ptr(out),
    ];
    (grid, args)
}

/// One 3x3 layer's launches on either kernel set: `cin -> cout` channels, `b` planes of
/// `h x w` in, at `stride`, taps at `wt` and biases at `bias` (device addresses). Where `tc`
/// asks, the tensor-core kernels run where they can (stride 1; weight gradients at either
/// stride) and pay ([`tc_pays`]).
#[derive(Clone, Copy)]
struct Conv3Layer {
    cin: usize,
    cout: usize,
    b: usize,
    h: usize,
    w: usize,
    stride: usize,
    relu: bool,
    wt: u64,
    bias: u64,
    tc: TcUse,
}

impl Conv3Layer {
    /// The tensor cores for a forward or input-gradient launch that reads `read` channels,
    /// when `wanted` (`tr_conv3_tc` is stride 1 only).
    fn on_tc(&self, wanted: bool, read: usize) -> bool {
        wanted && self.stride == 1 && tc_pays(read)
    }

    /// The forward pass from `x` into `out` (plus bias, ReLU when the layer has it).
    fn forward(&self, x: u64, out: u64) -> Launch {
        let Conv3Layer {
            cin,
            cout,
            b,
            h,
            w,
            stride,
            ..
        } = *self;
        if self.on_tc(self.tc.pass, cin) {
            let finish = TcFinish::Forward {
                bias: self.bias,
                relu: self.relu,
            };
            let (grid, args) = conv3_tc(x, cin, (b, h, w), self.wt, cout, finish, out);
            return ("tr_conv3_tc", grid, args);
        }
        let i = |v: usize| Arg::I32(v as i32);
        let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
        let args = vec![
            Arg::Ptr(x),
            i(cin),
            i(b),
            i(h),
            i(w),
            i(stride),
            Arg::Ptr(self.wt),
            Arg::Ptr(self.bias),
            i(cout),
            i(self.relu as usize),
            Arg::Ptr(out),
        ];
        ("tr_conv3", (tiles(ho, wo), groups(cout), b), args)
    }

    /// The input gradient from the output gradient `dout` into `dx`, plus `add`, masked by
    /// `post` (0: none).
    fn input_grad(&self, dout: u64, add: u64, post: u64, dx: u64) -> Launch {
        let Conv3Layer {
            cin,
            cout,
            b,
            h,
            w,
            stride,
            ..
        } = *self;
        if self.on_tc(self.tc.pass, cout) {
            // A forward pass over the output gradient with the taps flipped and transposed.
            let finish = TcFinish::InputGrad { add, post };
            let (grid, args) = conv3_tc(dout, cout, (b, h, w), self.wt, cin, finish, dx);
            return ("tr_conv3_tc", grid, args);
        }
        let i = |v: usize| Arg::I32(v as i32);
        let args = vec![
            Arg::Ptr(dout),
            i(cout),
            i(b),
            i(h),
            i(w),
            Arg::Ptr(self.wt),
            i(cin),
            Arg::Ptr(add),
            Arg::Ptr(post),
            Arg::Ptr(dx),
        ];
        if stride == 1 {
            return ("tr_conv3_bx1", (tiles(h, w), groups(cin), b), args);
        }
        debug_assert_eq!(stride, 2);
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let grid = (blocks_for(ho.div_ceil(2) * wo), groups(cin), b);
        ("tr_conv3_bx2", grid, args)
    }

    /// The weight and bias gradients from input `x` and output gradient `dout`, as partial
    /// sums into `partial` at `(wbase, bbase, np)`: [`TC_CHUNKS`] chunks on the tensor cores,
    /// else [`fma_chunks`].
    fn weight_grad(
        &self,
        x: u64,
        dout: u64,
        (wbase, bbase, np): (usize, usize, usize),
        partial: u64,
    ) -> Launch {
        let Conv3Layer {
            cin,
            cout,
            b,
            h,
            w,
            stride,
            ..
        } = *self;
        let i = |v: usize| Arg::I32(v as i32);
        let mut args = vec![
            Arg::Ptr(x),
            i(cin),
            i(b),
            i(h),
            i(w),
            i(stride),
            Arg::Ptr(dout),
            i(cout),
        ];
        args.extend([i(wbase), i(bbase), i(np), Arg::Ptr(partial)]);
        // Either stride: the stride-2 layer's weight gradients took 0.093 ms of a 0.91 ms
        // step on the FMA kernel (H100, BENCHMARKS.md).
        if self.tc.grads && tc_pays(cin) {
            let grid = (cin.div_ceil(8) * cout.div_ceil(8), TC_CHUNKS, 1);
            return ("tr_conv3_bw_tc", grid, args);
        }
        let blocks = cin * groups(cout);
        ("tr_conv3_bw", (blocks, fma_chunks(blocks), 1), args)
    }
}

/// The 2x2 transposed convolution's weight and bias gradients from its input `x` (`cin`
/// channels of `b` planes of `h2 x w2`) and output gradient `dout` (`cout` channels of `h x w`),
/// as partial sums into `partial` at `(wbase, bbase, np)`: on the tensor cores when `tc`
/// (`tr_deconv2_bw_tc`, 16 input channels a block, [`TC_CHUNKS`] chunks; the FMA kernel took
/// 0.079 ms of a 0.86 ms step on an H100, BENCHMARKS.md), else two input channels a block on
/// FMA (`tr_deconv2_bw`, [`fma_chunks`]).
fn deconv2_weight_grad(
    (x, cin): (u64, usize),
    (b, h2, w2, h, w): (usize, usize, usize, usize, usize),
    (dout, cout): (u64, usize),
    (wbase, bbase, np): (usize, usize, usize),
    partial: u64,
    tc: bool,
) -> Launch {
    let i = |v: usize| Arg::I32(v as i32);
    let args = vec![
        Arg::Ptr(x),
        i(cin),
        i(b),
        i(h2),
        i(w2),
        i(h),
        i(w),
        Arg::Ptr(dout),
        i(cout),
        i(wbase),
        i(bbase),
        i(np),
        Arg::Ptr(partial),
    ];
    if tc {
        let grid = (cin.div_ceil(16) * cout.div_ceil(8), TC_CHUNKS, 1);
        return ("tr_deconv2_bw_tc", grid, args);
    }
    let blocks = cin.div_ceil(2) * groups(cout);
    ("tr_deconv2_bw", (blocks, fma_chunks(blocks), 1), args)
}

impl<'a> Trainer<'a> {
    fn new(
        g: &'a Cuda,
        arch: Arch,
        set: &TrainSet<'_>,
        batch: usize,
        (ph, pw): (usize, usize),
        kernels: Conv3Kernels,
    ) -> Result<Self> {
        let tc = kernels.on(g)?;
        ensure!(
            set.slices < i32::MAX as usize && set.h < 1 << 24 && set.w < 1 << 24,
            Error::Unsupported("cuda: NeurLZ training set too large".into())
        );
        ensure!(
            set.k == arch.cin
                && set.o == arch.cout
                && ph <= set.h
                && pw <= set.w
                && batch >= 1
                && batch * ph * pw < (i32::MAX as usize) / (4 * MAX_INPUTS),
            Error::Unsupported("cuda: NeurLZ training shapes do not agree".into())
        );
        let n = set.slices * set.h * set.w;
        ensure!(
            set.input.len() == set.k * n
                && set.target.len() == set.o * n
                && set.mask.len() == set.o * n,
            Error::Unsupported("cuda: NeurLZ training set sizes".into())
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
        let on_device = [
            g.upload_staged(set.input)?,
            g.upload_staged(set.target)?,
            g.upload_staged(set.mask)?,
        ];
        let plan = StepPlan::new(
            arch,
            (set.h, set.w),
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

impl StepPlan {
    /// The plan for `arch` on a training set of `dims` slices, `batch` patches of `ph x pw`,
    /// the buffers at `bufs` (as [`Trainer::new`] allocates them) and the set at `set`.
    fn new(
        arch: Arch,
        dims: (usize, usize),
        batch: usize,
        (ph, pw): (usize, usize),
        tc: TcUse,
        bufs: Vec<u64>,
        set: [u64; 3],
    ) -> StepPlan {
        StepPlan {
            layers: arch.layers(),
            offs: conv_train::offsets(&arch),
            np: arch.params(),
            k: arch.cin,
            o: arch.cout,
            c: arch.width,
            batch,
            ph,
            pw,
            dims,
            tc,
            bufs,
            set,
        }
    }

    fn p(&self, i: usize) -> u64 {
        self.bufs[i]
    }

    /// Where layer `l`'s gradient sums go in the partial rows: its weights' and biases'
    /// offsets, and the row length.
    fn sums(&self, l: usize) -> (usize, usize, usize) {
        (self.offs[l].0, self.offs[l].1, self.np)
    }

    /// [`StepPlan::sums`] and the partial rows as the FMA weight-gradient kernels and `tr_out`
    /// take them (`wbase, bbase, np, partial`).
    fn sum_args(&self, l: usize) -> [Arg; 4] {
        let (wbase, bbase, np) = self.sums(l);
        let i = |v: usize| Arg::I32(v as i32);
        [i(wbase), i(bbase), i(np), Arg::Ptr(self.p(PARTIAL))]
    }

    /// The launches of one gradient step ([`Trainer::grad`]), in order.
    fn grad(&self, picks: u64, params: u64) -> Result<Vec<Launch>> {
        let out = RefCell::new(Vec::new());
        let launch = |name: &'static str, grid: (usize, usize, usize), args: &[Arg]| {
            out.borrow_mut().push((name, grid, args.to_vec()));
            Ok(())
        };
        self.push_grad(picks, params, &launch)?;
        Ok(out.into_inner())
    }

    /// [`StepPlan::grad`]'s launches, each given to `launch`.
    fn push_grad(&self, picks: u64, params: u64, launch: &LaunchFn<'_>) -> Result<()> {
        let (k, o, c, b) = (self.k, self.o, self.c, self.batch);
        let (h, w) = (self.ph, self.pw);
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let (n, n2) = (h * w, h2 * w2);
        let p = b * n;
        let i = |v: usize| Arg::I32(v as i32);
        let wt_at = |l: usize| params + 4 * self.offs[l].0 as u64;
        let bias_at = |l: usize| params + 4 * self.offs[l].1 as u64;
        let wt = |l: usize| Arg::Ptr(wt_at(l));
        let bias = |l: usize| Arg::Ptr(bias_at(l));
        let cat = self.p(CAT);
        let a0 = cat + 4 * (c * p) as u64;
        let (a1, a2, a4) = (self.p(A1), self.p(A2), self.p(A4));
        let set = |j: usize| Arg::Ptr(self.set[j]);
        launch(
            "tr_gather",
            (blocks_for(n), k.max(o), b),
            &[
                set(0),
                set(1),
                set(2),
                i(k),
                i(o),
                i(self.dims.0),
                i(self.dims.1),
                Arg::Ptr(picks),
                i(b),
                i(h),
                i(w),
                Arg::Ptr(self.p(X)),
                Arg::Ptr(self.p(T)),
                Arg::Ptr(self.p(M)),
            ],
        )?;
        let fused_out = fused_output_layer(c, o);
        let sum_final = |parts: usize| {
            launch(
                "tr_sum_final",
                (1, 1, 1),
                &[
                    Arg::Ptr(self.p(SUM_PARTS)),
                    i(parts),
                    Arg::Ptr(self.p(TOTAL)),
                ],
            )
        };
        if !fused_out {
            launch(
                "tr_sum",
                (PARTS, 1, 1),
                &[
                    Arg::Ptr(self.p(M)),
                    Arg::I64((o * p) as i64),
                    Arg::Ptr(self.p(SUM_PARTS)),
                ],
            )?;
            sum_final(PARTS)?;
        }
        // Forward.
        let run = |(name, grid, args): Launch| launch(name, grid, &args);
        // Layer l (3x3) over planes of hh x ww at `stride`.
        let layer = |l: usize, hh: usize, ww: usize, stride: usize| {
            let s = &self.layers[l];
            Conv3Layer {
                cin: s.cin,
                cout: s.cout,
                b,
                h: hh,
                w: ww,
                stride,
                relu: s.relu,
                wt: wt_at(l),
                bias: bias_at(l),
                tc: self.tc,
            }
        };
        let conv3 = |l: usize, x: u64, hh: usize, ww: usize, stride: usize, out: u64| {
            run(layer(l, hh, ww, stride).forward(x, out))
        };
        conv3(0, self.p(X), h, w, 1, a0)?;
        conv3(1, a0, h, w, 2, a1)?;
        conv3(2, a1, h2, w2, 1, a2)?;
        launch(
            "tr_deconv2",
            (blocks_for(n2), groups(c), b),
            &[
                Arg::Ptr(a2),
                i(2 * c),
                i(b),
                i(h2),
                i(w2),
                i(h),
                i(w),
                wt(3),
                bias(3),
                i(c),
                i(1),
                Arg::Ptr(cat),
            ],
        )?;
        conv3(4, cat, h, w, 1, a4)?;
        let (d4, dcat) = (self.p(D4), self.p(DCAT));
        let (d2, d1, d0) = (self.p(D2), self.p(D1), self.p(D0));
        if fused_out {
            // The output layer, the loss and the output layer's gradients, and the count.
            let mut args = vec![
                Arg::Ptr(a4),
                i(c),
                Arg::I64(p as i64),
                wt(5),
                bias(5),
                i(o),
                Arg::Ptr(self.p(T)),
                Arg::Ptr(self.p(M)),
                Arg::Ptr(d4),
            ];
            args.extend(self.sum_args(5));
            args.push(Arg::Ptr(self.p(SUM_PARTS)));
            launch("tr_out", (PARTIAL_ROWS, 1, 1), &args)?;
            sum_final(PARTIAL_ROWS)?;
        } else {
            self.push_output_layer(params, launch)?;
        }
        // Backward: weight gradients (partial sums) and input gradients, layer 4 to 0.
        let conv3_bw = |l: usize, x: u64, hh: usize, ww: usize, stride: usize, dout: u64| {
            run(layer(l, hh, ww, stride).weight_grad(x, dout, self.sums(l), self.p(PARTIAL)))
        };
        #[allow(clippy::too_many_arguments)]
        let conv3_bx =
            |l: usize,
             dout: u64,
             hh: usize,
             ww: usize,
             stride: usize,
             add: u64,
             post: u64,
             dx: u64| { run(layer(l, hh, ww, stride).input_grad(dout, add, post, dx)) };
        conv3_bw(4, cat, h, w, 1, d4)?;
        // [d3, d0 skip], each masked by its activation ([layer 3, layer 0] = cat).
        conv3_bx(4, d4, h, w, 1, 0, cat, dcat)?;
        run(deconv2_weight_grad(
            (a2, 2 * c),
            (b, h2, w2, h, w),
            (dcat, c),
            self.sums(3),
            self.p(PARTIAL),
            self.tc.grads,
        ))?;
        launch(
            "tr_deconv2_bx",
            (blocks_for(n2), groups(2 * c), b),
            &[
                Arg::Ptr(dcat),
                i(c),
                i(b),
                i(h),
                i(w),
                wt(3),
                i(2 * c),
                i(h2),
                i(w2),
                Arg::Ptr(a2),
                Arg::Ptr(d2),
            ],
        )?;
        conv3_bw(2, a1, h2, w2, 1, d2)?;
        conv3_bx(2, d2, h2, w2, 1, 0, a1, d1)?;
        conv3_bw(1, a0, h, w, 2, d1)?;
        let skip = dcat + 4 * (c * p) as u64;
        conv3_bx(1, d1, h, w, 2, skip, a0, d0)?;
        conv3_bw(0, self.p(X), h, w, 1, d0)?;
        launch(
            "tr_reduce",
            (self.np.div_ceil(32), 1, 1),
            &[
                Arg::Ptr(self.p(PARTIAL)),
                i(PARTIAL_ROWS),
                i(self.np),
                Arg::Ptr(self.p(GRAD)),
            ],
        )
    }

    /// The output layer's forward pass, loss gradient and backward pass as four kernels
    /// (`tr_conv1`, `tr_loss`, `tr_conv1_bw`, `tr_conv1_bx`), for the networks
    /// [`fused_output_layer`] leaves out.
    fn push_output_layer(&self, params: u64, launch: &LaunchFn<'_>) -> Result<()> {
        let (o, c, b) = (self.o, self.c, self.batch);
        let n = self.ph * self.pw;
        let p = b * n;
        let i = |v: usize| Arg::I32(v as i32);
        let wt = Arg::Ptr(params + 4 * self.offs[5].0 as u64);
        let bias = Arg::Ptr(params + 4 * self.offs[5].1 as u64);
        let (a4, dz, d4) = (self.p(A4), self.p(DZ), self.p(D4));
        launch(
            "tr_conv1",
            (blocks_for(n), groups(o), b),
            &[
                Arg::Ptr(a4),
                i(c),
                i(b),
                Arg::I64(n as i64),
                wt,
                bias,
                i(o),
                i(0),
                Arg::Ptr(self.p(Z)),
            ],
        )?;
        launch(
            "tr_loss",
            (blocks_for(o * p), 1, 1),
            &[
                Arg::Ptr(self.p(Z)),
                Arg::Ptr(self.p(T)),
                Arg::Ptr(self.p(M)),
                Arg::I64((o * p) as i64),
                Arg::Ptr(dz),
            ],
        )?;
        let mut args = vec![
            Arg::Ptr(a4),
            i(c),
            i(b),
            i(self.ph),
            i(self.pw),
            Arg::Ptr(dz),
            i(o),
        ];
        args.extend(self.sum_args(5));
        let blocks = c * groups(o);
        launch("tr_conv1_bw", (blocks, fma_chunks(blocks), 1), &args)?;
        launch(
            "tr_conv1_bx",
            (blocks_for(n), groups(c), b),
            &[
                Arg::Ptr(dz),
                i(o),
                i(b),
                Arg::I64(n as i64),
                wt,
                i(c),
                Arg::Ptr(a4),
                Arg::Ptr(d4),
            ],
        )
    }
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
    pub fn train_conv(&self, arch: Arch, set: &TrainSet<'_>, cfg: &TrainConfig) -> Result<FNet> {
        self.train_conv_with(arch, set, cfg, Conv3Kernels::Auto)
    }

    /// [`Cuda::train_conv`] with the 3x3 layers on `kernels`.
    pub fn train_conv_with(
        &self,
        arch: Arch,
        set: &TrainSet<'_>,
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
                    Ok((w[1].0, ms.map_err(|e| super::device_error("event", e))?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::check_args;

    /// The argument lists built without a device agree with the kernels' declarations.
    #[test]
    fn tensor_core_launches_match_the_kernels() {
        let fwd = TcFinish::Forward {
            bias: 16,
            relu: true,
        };
        let grad = TcFinish::InputGrad { add: 0, post: 32 };
        for finish in [fwd, grad] {
            let (grid, args) = conv3_tc(8, 12, (3, 64, 40), 24, 6, finish, 40);
            assert_eq!(grid, (2 * 4, 1, 3));
            check_args("tr_conv3_tc", &args).unwrap();
        }
        assert_eq!(
            conv3_tc(8, 6, (1, 17, 33), 24, 12, grad, 40).0,
            (2 * 2, 1, 1)
        );
        assert_eq!(conv3_tc(8, 6, (1, 16, 32), 24, 17, grad, 40).0, (1, 2, 1));
        // A list one short, or with a kind swapped, is refused with the reason.
        let (_, mut args) = conv3_tc(8, 12, (3, 64, 40), 24, 6, fwd, 40);
        args[1] = Arg::I64(12);
        let e = check_args("tr_conv3_tc", &args).unwrap_err().to_string();
        assert!(e.contains("argument 1 is I64"), "{e}");
        args.pop();
        let e = check_args("tr_conv3_tc", &args).unwrap_err().to_string();
        assert!(e.contains("takes 13 arguments, given 12"), "{e}");
        assert!(check_args("tr_no_such", &[]).is_err());
    }

    /// The device check's launches pass the arguments their kernels declare: the FMA kernels
    /// and the tensor-core ones, in pairs.
    #[test]
    fn device_check_launches_match_the_kernels() {
        let launches = agree_launches([1 << 32, 2 << 32, 3 << 32, 4 << 32], [5 << 32; 10]);
        let names: Vec<&str> = launches.iter().map(|l| l.0).collect();
        assert_eq!(
            names,
            [
                "tr_conv3",
                "tr_conv3_tc",
                "tr_conv3_bx1",
                "tr_conv3_tc",
                "tr_conv3_bw",
                "tr_conv3_bw_tc",
                "tr_conv3_bw",
                "tr_conv3_bw_tc",
                "tr_deconv2_bw",
                "tr_deconv2_bw_tc"
            ]
        );
        for (name, _, args) in &launches {
            check_args(name, args).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(launches[4].1 .1, fma_chunks(launches[4].1 .0));
        assert_eq!(launches[5].1 .1, TC_CHUNKS);
    }

    /// Every launch of a training step, with either kernel set and the networks' shapes,
    /// passes the arguments its kernel declares, on a grid the device takes; the tensor-core
    /// kernels replace the FMA ones on the layers where they pay.
    #[test]
    fn every_training_launch_matches_its_kernel() {
        for (cin, width, cout) in [(2, 6, 1), (4, 4, 2), (6, 6, 3), (32, 6, 16)] {
            let arch = Arch { cin, width, cout };
            let uses = [(false, false), (false, true), (true, true)];
            for tc in uses.map(|(pass, grads)| TcUse { pass, grads }) {
                for (batch, ps) in [(256, (64, 64)), (3, (7, 5)), (5, (17, 33))] {
                    let bufs = (1..=18).map(|j| j << 32).collect();
                    let set = [19 << 32, 20 << 32, 21 << 32];
                    let plan = StepPlan::new(arch, (100, 100), batch, ps, tc, bufs, set);
                    let launches = plan.grad(22 << 32, 23 << 32).unwrap();
                    for (name, grid, args) in &launches {
                        check_args(name, args).unwrap_or_else(|e| panic!("{e} ({arch:?})"));
                        assert!(grid.0 >= 1 && grid.1 >= 1 && grid.1 <= 65535 && grid.2 <= 65535);
                    }
                    let used = |k: &str| launches.iter().any(|l| l.0 == k);
                    assert_eq!(used("tr_conv3_tc"), tc.pass, "{arch:?}");
                    assert_eq!(used("tr_conv3_bw_tc"), tc.grads, "{arch:?}");
                    assert_eq!(used("tr_conv3_bx1"), !tc.pass, "{arch:?}");
                    // The encoder's output layers in one kernel, the others in four.
                    let fused = fused_output_layer(width, cout);
                    assert_eq!(used("tr_out"), fused, "{arch:?}");
                    for k in [
                        "tr_sum",
                        "tr_conv1",
                        "tr_loss",
                        "tr_conv1_bw",
                        "tr_conv1_bx",
                    ] {
                        assert_eq!(used(k), !fused, "{k} {arch:?}");
                    }
                    assert!(used("tr_sum_final"));
                    // The stride-2 layer's forward pass and input gradient, and with 2
                    // inputs the first layer, stay on FMA; the weight gradients of every
                    // layer of 4 or more inputs go to the tensor cores.
                    assert!(used("tr_conv3") && used("tr_conv3_bx2"));
                    assert_eq!(used("tr_conv3_bw"), !tc.grads || !tc_pays(cin), "{arch:?}");
                    assert_eq!(used("tr_deconv2_bw_tc"), tc.grads, "{arch:?}");
                    assert_eq!(used("tr_deconv2_bw"), !tc.grads, "{arch:?}");
                    let reduce = launches.last().unwrap();
                    assert_eq!(reduce.0, "tr_reduce");
                    assert!(matches!(reduce.2[1], Arg::I32(n) if n as usize == PARTIAL_ROWS));
                }
            }
        }
    }
}
