//! The launches of the training network's layers, built apart from the device (names, grids,
//! raw arguments): the 3x3 convolutions on either kernel set and the transposed convolution's
//! weight gradients.

use crate::backend::cuda::launch::{blocks_for, Arg, Launch};

/// Channels one thread computes (`G` in `conv_train.cu`).
pub(super) const G: usize = 6;

/// Channel groups of `G` covering `c` channels.
pub(super) fn groups(c: usize) -> usize {
    c.div_ceil(G)
}

/// Fewest chunks a weight gradient is split into (partial sums, then a fixed-order
/// reduction).
pub(super) const CHUNKS: usize = 64;

/// Rows of the weight gradients' partial sums. A launch writes its parameters' sums into the
/// first rows, as many as it has chunks; the rows it leaves stay zero (each parameter's
/// launch, and so its chunk count, is the same at every step), and `tr_reduce` adds them all.
pub(super) const PARTIAL_ROWS: usize = 4 * CHUNKS;

/// Chunks of `tr_conv3_bw_tc`: a block of it covers 8 input channels where one of
/// `tr_conv3_bw` covers one, so it takes 4 times the chunks to keep as many blocks running.
pub(super) const TC_CHUNKS: usize = PARTIAL_ROWS;

/// Chunks of an FMA weight-gradient launch (`tr_conv3_bw`, `tr_deconv2_bw`, `tr_conv1_bw`)
/// with `blocks` blocks a chunk: about 1,024 blocks in all, from [`CHUNKS`] to
/// [`PARTIAL_ROWS`]. With 64 chunks the first layer (2 input channels) ran 128 blocks, fewer
/// than an H200 has SMs.
pub(super) fn fma_chunks(blocks: usize) -> usize {
    (1024 / blocks.max(1)).clamp(CHUNKS, PARTIAL_ROWS)
}

/// Where the 3x3 layers use the tensor cores (on the layers where they pay, [`tc_pays`]): the
/// forward pass and input gradient at stride 1 (`tr_conv3_tc`), the weight gradients at
/// either stride (`tr_conv3_bw_tc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) struct TcUse {
    pub(super) pass: bool,
    pub(super) grads: bool,
}

/// The output tile of the tiled 3x3 kernels (`TW` x `TH` in `conv_train.cu`).
const TILE: (usize, usize) = (32, 32);

/// Tiles covering an `h x w` plane.
pub(super) fn tiles(h: usize, w: usize) -> usize {
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
pub(super) fn tc_pays(cin: usize) -> bool {
    cin >= 4
}

/// What `tr_conv3_tc` does after the product: the forward pass's bias and ReLU, or the input
/// gradient's `add` and `post` (device addresses, 0: none).
#[derive(Clone, Copy)]
pub(super) enum TcFinish {
    Forward { bias: u64, relu: bool },
    InputGrad { add: u64, post: u64 },
}

/// `tr_conv3_tc`'s grid and arguments: `cin` channels of `x` (`b` planes of `h x w`) into
/// `cout` channels of `out`, with the layer's taps at `wt` (for the input gradient, `cin` and
/// `cout` are the layer's output and input channels). A block takes 16 output channels when
/// `cout > 8`, else 8.
pub(super) fn conv3_tc(
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
pub(super) struct Conv3Layer {
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) b: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) stride: usize,
    pub(super) relu: bool,
    pub(super) wt: u64,
    pub(super) bias: u64,
    pub(super) tc: TcUse,
}

impl Conv3Layer {
    /// The tensor cores for a forward or input-gradient launch that reads `read` channels,
    /// when `wanted` (`tr_conv3_tc` is stride 1 only).
    fn on_tc(&self, wanted: bool, read: usize) -> bool {
        wanted && self.stride == 1 && tc_pays(read)
    }

    /// The forward pass from `x` into `out` (plus bias, ReLU when the layer has it).
    pub(super) fn forward(&self, x: u64, out: u64) -> Launch {
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
    pub(super) fn input_grad(&self, dout: u64, add: u64, post: u64, dx: u64) -> Launch {
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
    pub(super) fn weight_grad(
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
pub(super) fn deconv2_weight_grad(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::launch::check_args;

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
}
