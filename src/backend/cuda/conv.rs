//! NeurLZ inference on the GPU (`kernels/neurlz.cu`): the corrections
//! [`crate::nn::corrections::corrections`] computes, bit for bit, for the encoder and the
//! decoder alike. The chunk's grid indices go up once; the slices are run in batches that fit
//! [`BATCH_BYTES`] of activations; the corrections come back once.

use super::launch::{blocks_for, Arg, Launch};
use super::{guard, Cuda};
use crate::backend::{offload, Stage};
use crate::error::{ensure, Error, Result};
use crate::nn::conv::{Kind, LayerShape, QNet};
use crate::nn::corrections::{self as neurlz, Inputs, Norm};
use crate::params::Backend;

/// Output channels one thread computes (`NZG` in `neurlz.cu`).
const NZG: usize = 6;

/// Device memory the activations of one batch of slices may take.
pub const BATCH_BYTES: usize = 1 << 30;

/// [`neurlz::corrections`] on the device chosen for `backend` ([`Stage::NeurlzInference`]);
/// the CPU computes them when no GPU is chosen or the GPU fails (logged). Same values either way.
pub fn corrections(
    backend: Backend,
    inputs: Inputs,
    net: &QNet,
    norm: &[Norm],
    q: &[i32],
    dims: [usize; 3],
    m: i64,
) -> Vec<i32> {
    offload(
        Stage::NeurlzInference,
        backend,
        q.len(),
        |g| g.neurlz_corrections(inputs, net, norm, q, dims, m),
        || neurlz::corrections(inputs, net, norm, q, dims, m),
    )
}

/// A stored network's layers as the kernels read them: per layer, `i32` weights
/// `[cout][cin][taps]`, then per output channel mult, shift and bias; and each layer's start.
pub fn layer_params(net: &QNet) -> (Vec<i32>, Vec<usize>) {
    let mut flat = Vec::new();
    let mut starts = Vec::with_capacity(net.layers.len());
    for l in &net.layers {
        starts.push(flat.len());
        flat.extend(l.w.iter().map(|&v| v as i32));
        flat.extend(l.mult.iter().map(|&v| v as i32));
        flat.extend(l.shift.iter().map(|&v| v as i32));
        flat.extend_from_slice(&l.bias);
    }
    (flat, starts)
}

impl Cuda {
    /// The regulated correction of every point of the chunk `q` (3D view `dims`), as
    /// `neurlz::corrections` computes it.
    pub fn neurlz_corrections(
        &self,
        inputs: Inputs,
        net: &QNet,
        norm: &[Norm],
        q: &[i32],
        dims: [usize; 3],
        m: i64,
    ) -> Result<Vec<i32>> {
        self.neurlz_corrections_in(inputs, net, norm, q, dims, m, BATCH_BYTES)
    }

    /// [`Cuda::neurlz_corrections`] with batches of slices whose activations fit
    /// `batch_bytes` (at least one slice a batch; tests use small values to run many).
    #[allow(clippy::too_many_arguments)]
    pub fn neurlz_corrections_in(
        &self,
        inputs: Inputs,
        net: &QNet,
        norm: &[Norm],
        q: &[i32],
        dims: [usize; 3],
        m: i64,
        batch_bytes: usize,
    ) -> Result<Vec<i32>> {
        // SAFETY: `corrections_inner` launches only over the buffers it allocates, sized for
        // the batch, and downloads (synchronizes) before they are dropped.
        guard("neurlz", || unsafe {
            self.corrections_inner(inputs, net, norm, q, dims, m, batch_bytes)
        })
    }

    /// # Safety
    /// Raw launches: see [`Cuda::launch`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn corrections_inner(
        &self,
        inputs: Inputs,
        net: &QNet,
        norm: &[Norm],
        q: &[i32],
        dims: [usize; 3],
        m: i64,
        batch_bytes: usize,
    ) -> Result<Vec<i32>> {
        let fields = norm.len();
        let (h, w) = (dims[1], dims[2]);
        let hw = h * w;
        let k = inputs.planes();
        let arch = net.arch;
        let c = arch.width;
        ensure!(
            fields >= 1
                && dims[0] % fields == 0
                && q.len() == dims[0] * hw
                && arch.cin == k * fields
                && arch.cout == fields
                && net.layers.len() == 6
                && m >= 1,
            Error::Unsupported("cuda: NeurLZ shapes do not agree".into())
        );
        ensure!(
            hw < i32::MAX as usize && h < i32::MAX as usize / 2,
            Error::Unsupported("cuda: NeurLZ slice too large".into())
        );
        let per_field = dims[0] / fields;
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let hw2 = h2 * w2;
        // Activations of one sample: inputs, [layer 3, layer 0], layers 1 and 2, layer 4, out.
        let per = (arch.cin + 2 * c + c + fields) * hw + 4 * c * hw2;
        let batch = (batch_bytes / 4 / per).clamp(1, per_field.min(65535));
        let qd = self.upload_staged(q)?;
        let (flat, starts) = layer_params(net);
        let pd = self.upload(&flat)?;
        let nd: Vec<i64> = norm
            .iter()
            .flat_map(|n| [n.center as i64, n.half as i64])
            .collect();
        let normd = self.upload(&nd)?;
        let xd = self.zeros::<i32>(batch * arch.cin * hw)?;
        let catd = self.zeros::<i32>(batch * 2 * c * hw)?;
        let a1d = self.zeros::<i32>(batch * 2 * c * hw2)?;
        let a2d = self.zeros::<i32>(batch * 2 * c * hw2)?;
        let a4d = self.zeros::<i32>(batch * c * hw)?;
        let zd = self.zeros::<i32>(batch * fields * hw)?;
        let corrd = self.zeros::<i32>(q.len())?;
        let run = Inference {
            layers: arch.layers(),
            starts: &starts,
            shape: (k, c, fields, per_field),
            plane: (h, w),
            m,
            params: self.ptr(&pd),
            q: self.ptr(&qd),
            norm: self.ptr(&normd),
            x: self.ptr(&xd),
            cat: self.ptr(&catd),
            a1: self.ptr(&a1d),
            a2: self.ptr(&a2d),
            a4: self.ptr(&a4d),
            z: self.ptr(&zd),
            corr: self.ptr(&corrd),
        };
        let mut s0 = 0;
        while s0 < per_field {
            let sb = batch.min(per_field - s0);
            for (name, grid, args) in run.batch(s0, sb) {
                self.launch(name, grid, &args)?;
            }
            s0 += sb;
        }
        // The download synchronizes: every buffer above is still alive.
        self.download_staged(&corrd)
    }
}

/// What the launches of every batch share: the network's layers and where each layer's
/// parameters start, the shapes, and the device addresses of the buffers.
struct Inference<'a> {
    layers: [LayerShape; 6],
    starts: &'a [usize],
    /// Input planes a field, network width, fields, slices a field.
    shape: (usize, usize, usize, usize),
    /// A slice's `h x w`.
    plane: (usize, usize),
    m: i64,
    /// The network's parameters, the grid indices and the norms.
    params: u64,
    q: u64,
    norm: u64,
    /// The batch's activations: inputs, [layer 3, layer 0], layers 1, 2 and 4, outputs.
    x: u64,
    cat: u64,
    a1: u64,
    a2: u64,
    a4: u64,
    z: u64,
    /// The chunk's corrections.
    corr: u64,
}

impl Inference<'_> {
    /// The launches that take slices `s0..s0 + sb` of every field through the network into
    /// their corrections, in order.
    fn batch(&self, s0: usize, sb: usize) -> Vec<Launch> {
        let (k, c, fields, per_field) = self.shape;
        let (h, w) = self.plane;
        let hw = h * w;
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let (hi, wi, h2i, w2i) = (h as i32, w as i32, h2 as i32, w2 as i32);
        let layers = &self.layers;
        let lp = |n: usize| Arg::Ptr(self.params + 4 * self.starts[n] as u64);
        let relu = |n: usize| Arg::I32(layers[n].relu as i32);
        let si = Arg::I32(sb as i32);
        let mut out: Vec<Launch> = Vec::new();
        // Layer 0 writes the second half of `cat`.
        let a0p = self.cat + 4 * (c * sb * hw) as u64;
        out.push((
            "nz_inputs",
            (blocks_for(hw), fields, sb),
            vec![
                Arg::Ptr(self.q),
                Arg::I32(k as i32),
                Arg::I32(fields as i32),
                Arg::I32(per_field as i32),
                Arg::I32(s0 as i32),
                si,
                Arg::I32(hi),
                Arg::I32(wi),
                Arg::Ptr(self.norm),
                Arg::I64(self.m),
                Arg::Ptr(self.x),
            ],
        ));
        let conv3 = |n: usize, x: u64, h: i32, w: i32, out: u64| -> Launch {
            let l = layers[n];
            let Kind::Conv3 { stride } = l.kind else {
                unreachable!("layer {n} is a 3x3 convolution")
            };
            let (ho, wo) = ((h as usize).div_ceil(stride), (w as usize).div_ceil(stride));
            (
                "nz_conv3",
                (blocks_for(ho * wo), l.cout.div_ceil(NZG), sb),
                vec![
                    Arg::Ptr(x),
                    Arg::I32(l.cin as i32),
                    si,
                    Arg::I32(h),
                    Arg::I32(w),
                    Arg::I32(stride as i32),
                    lp(n),
                    Arg::I32(l.cout as i32),
                    relu(n),
                    Arg::Ptr(out),
                ],
            )
        };
        out.push(conv3(0, self.x, hi, wi, a0p));
        out.push(conv3(1, a0p, hi, wi, self.a1));
        out.push(conv3(2, self.a1, h2i, w2i, self.a2));
        out.push((
            "nz_deconv2",
            (blocks_for(hw), layers[3].cout.div_ceil(NZG), sb),
            vec![
                Arg::Ptr(self.a2),
                Arg::I32(layers[3].cin as i32),
                si,
                Arg::I32(h2i),
                Arg::I32(w2i),
                Arg::I32(hi),
                Arg::I32(wi),
                lp(3),
                Arg::I32(layers[3].cout as i32),
                relu(3),
                Arg::Ptr(self.cat),
            ],
        ));
        out.push(conv3(4, self.cat, hi, wi, self.a4));
        out.push((
            "nz_conv1",
            (blocks_for(hw), fields.div_ceil(NZG), sb),
            vec![
                Arg::Ptr(self.a4),
                Arg::I32(layers[5].cin as i32),
                si,
                Arg::I64(hw as i64),
                lp(5),
                Arg::I32(fields as i32),
                relu(5),
                Arg::Ptr(self.z),
            ],
        ));
        out.push((
            "nz_correct",
            (blocks_for(hw), fields, sb),
            vec![
                Arg::Ptr(self.z),
                Arg::I32(per_field as i32),
                Arg::I32(s0 as i32),
                si,
                Arg::I64(hw as i64),
                Arg::Ptr(self.corr),
            ],
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::launch::check_args;
    use crate::nn::conv::Arch;

    /// A batch's launches pass the arguments their kernels declare, in the network's order.
    #[test]
    fn batch_launches_match_the_kernels() {
        for (k, fields, width) in [(2, 1, 4), (3, 2, 6)] {
            let arch = Arch {
                cin: k * fields,
                width,
                cout: fields,
            };
            let starts = [0, 100, 200, 300, 400, 500];
            let run = Inference {
                layers: arch.layers(),
                starts: &starts,
                shape: (k, width, fields, 7),
                plane: (17, 33),
                m: 3,
                params: 1 << 32,
                q: 2 << 32,
                norm: 3 << 32,
                x: 4 << 32,
                cat: 5 << 32,
                a1: 6 << 32,
                a2: 7 << 32,
                a4: 8 << 32,
                z: 9 << 32,
                corr: 10 << 32,
            };
            let launches = run.batch(2, 5);
            let names: Vec<&str> = launches.iter().map(|l| l.0).collect();
            assert_eq!(
                names,
                [
                    "nz_inputs",
                    "nz_conv3",
                    "nz_conv3",
                    "nz_conv3",
                    "nz_deconv2",
                    "nz_conv3",
                    "nz_conv1",
                    "nz_correct"
                ]
            );
            for (name, grid, args) in &launches {
                check_args(name, args).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(grid.2, 5, "{name}");
            }
        }
    }
}
