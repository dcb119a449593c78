//! NGLR: integer 3D Lorenzo prediction plus a learned causal bias.
//!
//! `pred = L + bias`, where `L` is the Lorenzo prediction ([`super::lorenzo`]) and `bias` is
//! the output of a tiny network ([`crate::nn::Net`], fixed-point only) over features of the
//! already reconstructed neighbourhood, each normalized by a per-chunk power of two. The
//! network is fitted on the chunk at compression time (`nn::train`, encode only) and stored
//! in the chunk's WEIGHTS section; all blocks of the chunk share it. Because evaluation is
//! integer arithmetic on the stored weights, encoder and decoder compute the same bias on any
//! machine. The feature set is part of the format (`docs/FORMAT.md`, "NGLR").

use super::lorenzo::predict_at;
use super::{BlockEncoder, Predictor};
use crate::nn::infer::{Packed, INPUTS};
use crate::nn::Net;

pub const ID: u8 = 3;

/// The NGLR predictor with its chunk's network.
pub struct Nglr {
    pub net: Net,
    /// The same network, laid out for fast inference.
    packed: Packed,
}

impl Nglr {
    pub fn new(net: Net) -> Nglr {
        let packed = Packed::new(&net);
        Nglr { net, packed }
    }
}

/// A block's geometry: strides and which dimensions have more than one point.
#[derive(Clone, Copy)]
struct Geom {
    ext: [usize; 3],
    sz: usize,
    sy: usize,
    act: [bool; 3],
}

impl Geom {
    fn new(ext: [usize; 3]) -> Geom {
        Geom {
            ext,
            sz: ext[1] * ext[2],
            sy: ext[2],
            act: ext.map(|e| e > 1),
        }
    }
    /// Whether the network is evaluated at `(z, y, x)`: along every dimension with more than
    /// one point the coordinate is at least 2, and along x also below `nx - 1`.
    #[inline]
    fn inner(&self, z: usize, y: usize, x: usize) -> bool {
        (!self.act[0] || z >= 2)
            && (!self.act[1] || y >= 2)
            && (!self.act[2] || (x >= 2 && x + 1 < self.ext[2]))
    }
}

/// The 16 features at inner point `i` (`docs/FORMAT.md` lists them): neighbours' indices
/// minus the Lorenzo prediction `l`, and neighbours' Lorenzo errors `e`. A feature whose
/// neighbour lies along a dimension of extent 1 is 0.
#[inline]
fn features(q: &[i32], e: &[i32], i: usize, g: &Geom, l: i64) -> [i64; INPUTS] {
    let v = |j: usize| q[j] as i64 - l;
    let (sy, sz) = (g.sy, g.sz);
    let [az, ay, ax] = g.act;
    let mut f = [0i64; INPUTS];
    if ax {
        f[0] = v(i - 1);
        f[7] = v(i - 2);
        f[12] = e[i - 1] as i64;
    }
    if ay {
        f[1] = v(i - sy);
        f[8] = v(i - 2 * sy);
        f[13] = e[i - sy] as i64;
    }
    if az {
        f[2] = v(i - sz);
        f[9] = v(i - 2 * sz);
        f[14] = e[i - sz] as i64;
    }
    if ax && ay {
        f[3] = v(i - sy - 1);
        f[10] = v(i - sy + 1);
        f[15] = e[i - sy - 1] as i64;
    }
    if ax && az {
        f[4] = v(i - sz - 1);
        f[11] = v(i - sz + 1);
    }
    if ay && az {
        f[5] = v(i - sz - sy);
    }
    if ax && ay && az {
        f[6] = v(i - sz - sy - 1);
    }
    f
}

/// The Lorenzo error of a reconstructed index, saturated to i32.
#[inline]
fn lorenzo_error(q: i32, l: i64) -> i32 {
    (q as i64 - l).clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

impl Nglr {
    /// Visits a block in C order: `visit(buf, i, pred)` must leave the reconstructed index
    /// in `buf[i]`.
    #[inline]
    fn traverse(
        &self,
        q: &mut [i32],
        ext: [usize; 3],
        mut visit: impl FnMut(&mut [i32], usize, i64),
    ) {
        let g = Geom::new(ext);
        let mut e = vec![0i32; q.len()];
        let [nz, ny, nx] = ext;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let i = (z * ny + y) * nx + x;
                    let l = predict_at(q, ext, [z, y, x]);
                    let bias = if g.inner(z, y, x) {
                        self.packed.bias(&features(q, &e, i, &g, l))
                    } else {
                        0
                    };
                    visit(q, i, l + bias);
                    e[i] = lorenzo_error(q[i], l);
                }
            }
        }
    }
}

impl Predictor for Nglr {
    fn id(&self) -> u8 {
        ID
    }

    fn encode(
        &self,
        blk: &mut BlockEncoder<'_>,
        q: &mut [i32],
        ext: [usize; 3],
        codes: &mut [i32],
    ) {
        self.traverse(q, ext, |q, i, pred| codes[i] = blk.settle(q, i, pred));
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        self.traverse(codes, ext, |q, i, pred| {
            q[i] = pred.wrapping_add(q[i] as i64 * m as i64) as i32
        });
    }
}

/// Training pairs from one block (encode only): features on the reconstruction `recon` of a
/// Lorenzo pass, and the target `q0 - L` (prequantized index minus the Lorenzo prediction
/// from the reconstruction), at inner points that are not escaped.
pub fn training_pairs(
    recon: &[i32],
    q0: &[i32],
    escaped: &[bool],
    ext: [usize; 3],
    f: &mut Vec<[i64; INPUTS]>,
    t: &mut Vec<i64>,
) {
    let g = Geom::new(ext);
    let mut e = vec![0i32; recon.len()];
    let [nz, ny, nx] = ext;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                let l = predict_at(recon, ext, [z, y, x]);
                if g.inner(z, y, x) && !escaped[i] {
                    f.push(features(recon, &e, i, &g, l));
                    t.push(q0[i] as i64 - l);
                }
                e[i] = lorenzo_error(recon[i], l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::testing::round_trip;

    fn net() -> Net {
        Net {
            hidden: 4,
            in_shift: [2; INPUTS],
            out_shift: 2,
            e1: 12,
            e2: 12,
            w1: (0..4 * INPUTS as i32)
                .map(|i| (i * 1237 % 9000 - 4500) as i16)
                .collect(),
            b1: vec![1 << 19, 0, -(1 << 18), 1 << 17],
            w2: vec![2000, -1500, 1000, 700],
            v: std::array::from_fn(|i| (i as i16 - 8) * 300),
            b2: 1 << 12,
        }
    }

    #[test]
    fn round_trips_every_rank_and_feedback() {
        let p = Nglr::new(net());
        for ext in [
            [1, 1, 1],
            [1, 1, 17],
            [1, 9, 13],
            [5, 6, 7],
            [40, 1, 3],
            [6, 7, 1],
        ] {
            let n: usize = ext.iter().product();
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f64 * 0.37 + (i as f64 * 0.01).sin() * 100.0)
                .collect();
            for m in [1, 3, 15] {
                round_trip(&p, &x, ext, m, 0.5);
            }
        }
    }
}
