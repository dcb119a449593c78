//! One training step's launches, in order: the batch gathered, the forward pass, the loss,
//! the backward pass and the gradients' reduction.

use std::cell::RefCell;

use super::layers::{deconv2_weight_grad, fma_chunks, groups, Conv3Layer, TcUse, PARTIAL_ROWS};
use crate::backend::cuda::launch::{blocks_for, Arg, Launch};
use crate::error::Result;
use crate::nn::conv::{Arch, LayerShape};
use crate::nn::conv_train;

/// What one training step launches, apart from the device: the shapes, the kernel set and
/// the device addresses of the buffers. The tests build it without a GPU and check every
/// launch's arguments against its kernel.
pub(super) struct StepPlan {
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
    pub(super) bufs: Vec<u64>,
    set: [u64; 3],
}

/// What [`StepPlan::push_grad`] gives each launch to.
type LaunchFn<'a> = dyn Fn(&'static str, (usize, usize, usize), &[Arg]) -> Result<()> + 'a;

/// Indices into `Trainer::bufs`.
pub(super) const X: usize = 0;
pub(super) const T: usize = 1;
pub(super) const M: usize = 2;
pub(super) const CAT: usize = 3;
pub(super) const A1: usize = 4;
pub(super) const A2: usize = 5;
pub(super) const A4: usize = 6;
pub(super) const Z: usize = 7;
pub(super) const DZ: usize = 8;
pub(super) const D4: usize = 9;
pub(super) const DCAT: usize = 10;
pub(super) const D2: usize = 11;
pub(super) const D1: usize = 12;
pub(super) const D0: usize = 13;
pub(super) const PARTIAL: usize = 14;
pub(super) const GRAD: usize = 15;
pub(super) const TOTAL: usize = 16;
pub(super) const SUM_PARTS: usize = 17;

/// Blocks of the first stage of the counted points' sum (`tr_sum`, when the output layer is
/// not fused).
pub(super) const PARTS: usize = 64;

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

impl StepPlan {
    /// The plan for `arch` on a training set of `dims` slices, `batch` patches of `ph x pw`,
    /// the buffers at `bufs` (as [`Trainer::new`] allocates them) and the set at `set`.
    pub(super) fn new(
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
    pub(super) fn grad(&self, picks: u64, params: u64) -> Result<Vec<Launch>> {
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
        self.push_gather(picks, launch)?;
        self.push_forward(params, launch)?;
        self.push_backward(params, launch)
    }

    /// The weights of layer `l` in the network at `params` (device address).
    fn wt_at(&self, params: u64, l: usize) -> u64 {
        params + 4 * self.offs[l].0 as u64
    }

    /// The biases of layer `l` in the network at `params` (device address).
    fn bias_at(&self, params: u64, l: usize) -> u64 {
        params + 4 * self.offs[l].1 as u64
    }

    /// Layer `l` (3x3) over planes of `hh x ww` at `stride`, weights at `params`.
    fn layer(&self, params: u64, l: usize, (hh, ww): (usize, usize), stride: usize) -> Conv3Layer {
        let s = &self.layers[l];
        Conv3Layer {
            cin: s.cin,
            cout: s.cout,
            b: self.batch,
            h: hh,
            w: ww,
            stride,
            relu: s.relu,
            wt: self.wt_at(params, l),
            bias: self.bias_at(params, l),
            tc: self.tc,
        }
    }

    /// `tr_sum_final` over `parts` partial counts of the points that count.
    fn sum_final(&self, parts: usize, launch: &LaunchFn<'_>) -> Result<()> {
        let i = |v: usize| Arg::I32(v as i32);
        launch(
            "tr_sum_final",
            (1, 1, 1),
            &[
                Arg::Ptr(self.p(SUM_PARTS)),
                i(parts),
                Arg::Ptr(self.p(TOTAL)),
            ],
        )
    }

    /// The batch's patches at `picks` gathered, and the points that count counted where the
    /// output layer is not fused (the fused one counts them).
    fn push_gather(&self, picks: u64, launch: &LaunchFn<'_>) -> Result<()> {
        let (k, o, b) = (self.k, self.o, self.batch);
        let (h, w) = (self.ph, self.pw);
        let n = h * w;
        let p = b * n;
        let i = |v: usize| Arg::I32(v as i32);
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
        if !fused_output_layer(self.c, o) {
            launch(
                "tr_sum",
                (PARTS, 1, 1),
                &[
                    Arg::Ptr(self.p(M)),
                    Arg::I64((o * p) as i64),
                    Arg::Ptr(self.p(SUM_PARTS)),
                ],
            )?;
            self.sum_final(PARTS, launch)?;
        }
        Ok(())
    }

    /// The forward pass of the network at `params`, then the loss and the output layer's
    /// gradients (`tr_out` with the count where [`fused_output_layer`], else
    /// [`StepPlan::push_output_layer`]).
    fn push_forward(&self, params: u64, launch: &LaunchFn<'_>) -> Result<()> {
        let (o, c, b) = (self.o, self.c, self.batch);
        let (h, w) = (self.ph, self.pw);
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let n2 = h2 * w2;
        let p = b * h * w;
        let i = |v: usize| Arg::I32(v as i32);
        let wt = |l: usize| Arg::Ptr(self.wt_at(params, l));
        let bias = |l: usize| Arg::Ptr(self.bias_at(params, l));
        let cat = self.p(CAT);
        let a0 = cat + 4 * (c * p) as u64;
        let (a1, a2, a4) = (self.p(A1), self.p(A2), self.p(A4));
        let run = |(name, grid, args): Launch| launch(name, grid, &args);
        let conv3 = |l: usize, x: u64, hh: usize, ww: usize, stride: usize, out: u64| {
            run(self.layer(params, l, (hh, ww), stride).forward(x, out))
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
        if fused_output_layer(c, o) {
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
                Arg::Ptr(self.p(D4)),
            ];
            args.extend(self.sum_args(5));
            args.push(Arg::Ptr(self.p(SUM_PARTS)));
            launch("tr_out", (PARTIAL_ROWS, 1, 1), &args)?;
            self.sum_final(PARTIAL_ROWS, launch)
        } else {
            self.push_output_layer(params, launch)
        }
    }

    /// The backward pass from the output layer's input gradient: weight gradients (partial
    /// sums) and input gradients, layer 4 to 0, then the partial sums reduced into `GRAD`.
    fn push_backward(&self, params: u64, launch: &LaunchFn<'_>) -> Result<()> {
        let (c, b) = (self.c, self.batch);
        let (h, w) = (self.ph, self.pw);
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let n2 = h2 * w2;
        let p = b * h * w;
        let i = |v: usize| Arg::I32(v as i32);
        let wt = |l: usize| Arg::Ptr(self.wt_at(params, l));
        let cat = self.p(CAT);
        let a0 = cat + 4 * (c * p) as u64;
        let (a1, a2) = (self.p(A1), self.p(A2));
        let (d4, dcat) = (self.p(D4), self.p(DCAT));
        let (d2, d1, d0) = (self.p(D2), self.p(D1), self.p(D0));
        let run = |(name, grid, args): Launch| launch(name, grid, &args);
        let layer =
            |l: usize, hh: usize, ww: usize, stride: usize| self.layer(params, l, (hh, ww), stride);
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

#[cfg(test)]
mod tests {
    use super::super::layers::tc_pays;
    use super::*;
    use crate::backend::cuda::launch::check_args;

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
