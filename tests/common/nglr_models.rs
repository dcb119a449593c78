//! Valid NGLR models with random weights, shared by the tests of NGLR's GPU decode
//! (`tests/nglr_kernel_cpu.rs` on the CPU stand-in, `tests/gpu_learned.rs` on a GPU).

use resid::nn::infer::{Net, B1_MAX, INPUTS};
use resid::nn::linear::Linear;

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
