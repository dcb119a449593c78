//! Valid NGLR models with random weights and encoder inputs, shared by the tests of NGLR's GPU
//! kernels
//! (`tests/nglr_kernel_cpu.rs` on the CPU stand-in, `tests/gpu_learned.rs` on a GPU).

use resid::backend::cuda::nglr::{encode_on_cpu, Coding};
use resid::field::Block;
use resid::nn::infer::{Net, B1_MAX, INPUTS};
use resid::nn::linear::Linear;
use resid::nn::weights::Model;
use resid::predict::nglr::Nglr;
use resid::quant::Grid;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as i64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A valid network with `hidden` units: weights over their whole range, shifts where the
/// features and hidden units matter; `linear_only` zeroes the output layer's hidden weights.
pub fn net(rng: &mut Rng, hidden: usize, linear_only: bool) -> Net {
    let w = |rng: &mut Rng| rng.range(-32767, 32767) as i16;
    let net = Net {
        hidden,
        in_shift: std::array::from_fn(|_| rng.range(0, 14) as u8),
        out_shift: rng.range(0, 8) as u8,
        e1: rng.range(6, 16) as u8,
        e2: rng.range(8, 16) as u8,
        w1: (0..hidden * INPUTS).map(|_| w(rng)).collect(),
        b1: (0..hidden)
            .map(|_| rng.range(-(B1_MAX as i64) / 64, B1_MAX as i64 / 64) as i32)
            .collect(),
        w2: (0..hidden)
            .map(|_| if linear_only { 0 } else { w(rng) })
            .collect(),
        v: std::array::from_fn(|_| w(rng) / 8),
        b2: rng.range(-(1 << 20), 1 << 20) as i32,
    };
    net.validate().unwrap();
    net
}

pub fn linear(rng: &mut Rng) -> Linear {
    let lin = Linear {
        w: std::array::from_fn(|_| rng.range(-(1 << 18), 1 << 18) as i32),
        b: rng.range(-(1 << 30), 1 << 30),
        shift: rng.range(14, 22) as u8,
    };
    lin.validate().unwrap();
    lin
}

/// An encoder's input on `blocks` (one after another): a smooth field with noise (rounded to
/// f32 when `single`) on a grid `coarse` times the feedback grid's step (above 1, some
/// reconstructions miss the bound and are escaped), every 401st point escaped beforehand.
pub fn encode_input(
    rng: &mut Rng,
    blocks: &[Block],
    m: i64,
    single: bool,
    coarse: f64,
) -> (Coding, Vec<f64>, Vec<i32>, Vec<bool>) {
    let eb = 0.05;
    let grid = Grid {
        mid: 0.13,
        step: 2.0 * eb / m as f64 * coarse,
    };
    let mut x = Vec::new();
    for b in blocks {
        for i in 0..b.len() {
            let (z, y, xx) = (
                i / (b.ext[1] * b.ext[2]),
                (i / b.ext[2]) % b.ext[1],
                i % b.ext[2],
            );
            let v = (xx as f64 * 0.3).sin() * (y as f64 * 0.2).cos() * 5.0
                + z as f64 * 0.07
                + rng.range(-1000, 1000) as f64 * 2e-4;
            x.push(if single { v as f32 as f64 } else { v });
        }
    }
    let escaped: Vec<bool> = (0..x.len()).map(|i| i % 401 == 7).collect();
    let q = x
        .iter()
        .zip(&escaped)
        .map(|(v, &e)| {
            if e {
                0
            } else {
                ((v - grid.mid) / grid.step).round() as i32
            }
        })
        .collect();
    let coding = Coding {
        grid,
        eb,
        single,
        m,
    };
    (coding, x, q, escaped)
}

/// The CPU encoder's codes, reconstruction and escapes of `blocks` (one after another).
pub fn cpu_encode(
    model: &Model,
    blocks: &[Block],
    coding: &Coding,
    x: &[f64],
    q: &[i32],
    escaped: &[bool],
) -> (Vec<i32>, Vec<i32>, Vec<bool>) {
    let p = Nglr::from_model(model.clone());
    let (mut recon, mut esc) = (q.to_vec(), escaped.to_vec());
    let codes = encode_on_cpu(&p, blocks, coding, x, &mut recon, &mut esc);
    (codes, recon, esc)
}
