//! The choice of the 3x3 layers' kernels, and the check, once a process, that the
//! tensor-core kernels agree with the FMA ones on the device.

use std::sync::OnceLock;

use super::layers::{deconv2_weight_grad, Conv3Layer, TcUse, PARTIAL_ROWS};
use crate::backend::cuda::launch::Launch;
use crate::backend::cuda::Cuda;
use crate::error::{ensure, Error, Result};

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

impl Conv3Kernels {
    /// The tensor-core use `self` asks for on `g`; an explicit tensor-core set on a device
    /// below sm_80 is refused.
    pub(super) fn on(self, g: &Cuda) -> Result<TcUse> {
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

/// Runs `AGREE_SHAPE`'s layer forward, its input gradient and its weight gradients on both
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

#[cfg(test)]
mod tests {
    use super::super::layers::{fma_chunks, TC_CHUNKS};
    use super::*;
    use crate::backend::cuda::launch::check_args;

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
}
