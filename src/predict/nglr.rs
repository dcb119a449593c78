//! NGLR: integer 3D Lorenzo prediction plus a learned causal bias.
//!
//! `pred = L + bias`, where `L` is the Lorenzo prediction ([`super::lorenzo`]) and `bias` is a
//! function of 16 features of the already reconstructed neighbourhood: either a tiny network
//! ([`crate::nn::Net`], WEIGHTS kind 1) over the features each normalized by a per-chunk power
//! of two, or a linear bias over the raw features ([`crate::nn::linear::Linear`], kind 2,
//! evaluated a row at a time by `scan_linear`). The model is fitted on the chunk at
//! compression time (`nn::train`, encode only) and stored in the chunk's WEIGHTS section; all
//! blocks of the chunk share it. Because evaluation is integer arithmetic on the stored
//! weights, encoder and decoder compute the same bias on any machine. The feature set is part
//! of the format (`docs/FORMAT.md`, "NGLR").

use super::lorenzo::predict_at;
use super::{BlockEncoder, Predictor};
use crate::nn::infer::{Packed, INPUTS};
use crate::nn::linear::Linear;
use crate::nn::weights::Model;
use crate::nn::Net;

pub const ID: u8 = 3;

/// The NGLR predictor with its chunk's model.
pub struct Nglr {
    pub model: Model,
    /// A network, laid out for fast inference.
    packed: Option<Packed>,
}

impl Nglr {
    pub fn new(net: Net) -> Nglr {
        Nglr::from_model(Model::Network(net))
    }

    pub fn linear(lin: Linear) -> Nglr {
        Nglr::from_model(Model::Linear(lin))
    }

    pub fn from_model(model: Model) -> Nglr {
        let packed = match &model {
            Model::Network(net) => Some(Packed::new(net)),
            Model::Linear(_) => None,
        };
        Nglr { model, packed }
    }

    /// The bias at an inner point with features `f`.
    #[inline(always)]
    fn bias(&self, f: &[i64; INPUTS]) -> i64 {
        match (&self.packed, &self.model) {
            (Some(p), _) => p.bias(f),
            (None, Model::Linear(lin)) => lin.bias(f),
            (None, Model::Network(net)) => net.bias(f),
        }
    }
}

/// The Lorenzo prediction at an inner point `i` (see [`scan`]), from strides: terms along a
/// dimension of extent 1 are zero, as in [`predict_at`].
#[inline(always)]
fn lorenzo_inner<const AZ: bool, const AY: bool, const AX: bool>(
    q: &[i32],
    i: usize,
    sy: usize,
    sz: usize,
) -> i64 {
    let at = |dz: bool, dy: bool, dx: bool| -> i64 {
        if (dz && !AZ) || (dy && !AY) || (dx && !AX) {
            0
        } else {
            q[i - dz as usize * sz - dy as usize * sy - dx as usize] as i64
        }
    };
    let (t, f) = (true, false);
    at(f, f, t) + at(f, t, f) + at(t, f, f) - at(f, t, t) - at(t, f, t) - at(t, t, f) + at(t, t, t)
}

/// The 16 features at inner point `i` (`docs/FORMAT.md` lists them): neighbours' indices
/// minus the Lorenzo prediction `l`, and neighbours' Lorenzo errors `e`. A feature whose
/// neighbour lies along a dimension of extent 1 is 0.
#[inline(always)]
fn features<const AZ: bool, const AY: bool, const AX: bool>(
    q: &[i32],
    e: &[i32],
    i: usize,
    sy: usize,
    sz: usize,
    l: i64,
) -> [i64; INPUTS] {
    let v = |j: usize| q[j] as i64 - l;
    let mut f = [0i64; INPUTS];
    if AX {
        f[0] = v(i - 1);
        f[7] = v(i - 2);
        f[12] = e[i - 1] as i64;
    }
    if AY {
        f[1] = v(i - sy);
        f[8] = v(i - 2 * sy);
        f[13] = e[i - sy] as i64;
    }
    if AZ {
        f[2] = v(i - sz);
        f[9] = v(i - 2 * sz);
        f[14] = e[i - sz] as i64;
    }
    if AX && AY {
        f[3] = v(i - sy - 1);
        f[10] = v(i - sy + 1);
        f[15] = e[i - sy - 1] as i64;
    }
    if AX && AZ {
        f[4] = v(i - sz - 1);
        f[11] = v(i - sz + 1);
    }
    if AY && AZ {
        f[5] = v(i - sz - sy);
    }
    if AX && AY && AZ {
        f[6] = v(i - sz - sy - 1);
    }
    f
}

/// The Lorenzo error of a reconstructed index, saturated to i32.
#[inline]
fn lorenzo_error(q: i32, l: i64) -> i32 {
    (q as i64 - l).clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The inner points of row `(z, y)` of a block `nx` wide: x in `lo..hi` (see [`scan`]).
#[inline(always)]
fn inner_x<const AZ: bool, const AY: bool, const AX: bool>(
    z: usize,
    y: usize,
    nx: usize,
) -> (usize, usize) {
    let inner_row = (!AZ || z >= 2) && (!AY || y >= 2);
    match (inner_row, AX) {
        (false, _) => (0, 0),
        (true, true) => (2, nx - 1),
        (true, false) => (0, nx),
    }
}

/// How many points of a block with extents `ext` are inner (have features; see `scan`).
pub fn inner_count(ext: [usize; 3]) -> usize {
    (0..3)
        .map(|k| match (k, ext[k]) {
            (_, 1) => 1,
            (2, e) => e.saturating_sub(3),
            (_, e) => e.saturating_sub(2),
        })
        .product()
}

/// Visits a block in C order with each point's Lorenzo prediction `l` and, at inner points,
/// its features: `visit(buf, i, l, features)` must leave the reconstructed index in `buf[i]`.
/// A point is inner when along every dimension with more than one point its coordinate is at
/// least 2, and along x also below `nx - 1`.
#[inline(always)]
fn scan<const AZ: bool, const AY: bool, const AX: bool>(
    q: &mut [i32],
    ext: [usize; 3],
    visit: &mut impl FnMut(&mut [i32], usize, i64, Option<&[i64; INPUTS]>),
) {
    let [nz, ny, nx] = ext;
    let (sy, sz) = (nx, ny * nx);
    let mut e = vec![0i32; q.len()];
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let (lo, hi) = inner_x::<AZ, AY, AX>(z, y, nx);
            for x in 0..nx {
                let i = row + x;
                let (l, f) = if (lo..hi).contains(&x) {
                    let l = lorenzo_inner::<AZ, AY, AX>(q, i, sy, sz);
                    (l, Some(features::<AZ, AY, AX>(q, &e, i, sy, sz, l)))
                } else {
                    (predict_at(q, ext, [z, y, x]), None)
                };
                visit(q, i, l, f.as_ref());
                e[i] = lorenzo_error(q[i], l);
            }
        }
    }
}

/// [`scan`] specialized to which dimensions of `ext` have more than one point.
fn scan_block(
    q: &mut [i32],
    ext: [usize; 3],
    mut visit: impl FnMut(&mut [i32], usize, i64, Option<&[i64; INPUTS]>),
) {
    let v = &mut visit;
    match ext.map(|e| e > 1) {
        [true, true, true] => scan::<true, true, true>(q, ext, v),
        [true, true, false] => scan::<true, true, false>(q, ext, v),
        [true, false, true] => scan::<true, false, true>(q, ext, v),
        [true, false, false] => scan::<true, false, false>(q, ext, v),
        [false, true, true] => scan::<false, true, true>(q, ext, v),
        [false, true, false] => scan::<false, true, false>(q, ext, v),
        [false, false, true] => scan::<false, false, true>(q, ext, v),
        [false, false, false] => scan::<false, false, false>(q, ext, v),
    }
}

/// [`scan`] for a linear model: the same predictions, computed a row at a time. The bias is
/// linear in the reconstructed indices (`sum_j w_j (q[n_j] - L) = sum_j w_j q[n_j] - W L`), so
/// its terms that read earlier rows, and the Lorenzo terms that do, are summed for a whole row
/// before the row is visited; each point then adds its west neighbours' terms.
#[inline(always)]
fn scan_linear<const AZ: bool, const AY: bool, const AX: bool>(
    lin: &Linear,
    q: &mut [i32],
    ext: [usize; 3],
    visit: &mut impl FnMut(&mut [i32], usize, i64),
) {
    let [nz, ny, nx] = ext;
    let (sy, sz) = (nx, ny * nx);
    let w = lin.w.map(|v| v as i64);
    // Which value features (0..12) exist, and the total weight of L in them.
    let active = [
        AX,
        AY,
        AZ,
        AX && AY,
        AX && AZ,
        AY && AZ,
        AX && AY && AZ,
        AX,
        AY,
        AZ,
        AX && AY,
        AX && AZ,
    ];
    let wl: i64 = (0..12).filter(|&j| active[j]).map(|j| w[j]).sum();
    let mut e = vec![0i32; q.len()];
    // Per inner point of the row: the bias sum without the west terms, and L without q[w].
    let mut pre = vec![0i64; nx];
    let mut lrow = vec![0i64; nx];
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            let (lo, hi) = inner_x::<AZ, AY, AX>(z, y, nx);
            for x in lo..hi {
                let i = row + x;
                let qa = |j: usize| q[j] as i64;
                let ea = |j: usize| e[j] as i64;
                let mut a = lin.b;
                let mut l = 0i64;
                if AY {
                    a += w[1] * qa(i - sy) + w[8] * qa(i - 2 * sy) + w[13] * ea(i - sy);
                    l += qa(i - sy);
                }
                if AZ {
                    a += w[2] * qa(i - sz) + w[9] * qa(i - 2 * sz) + w[14] * ea(i - sz);
                    l += qa(i - sz);
                }
                if AX && AY {
                    a += w[3] * qa(i - sy - 1) + w[10] * qa(i - sy + 1) + w[15] * ea(i - sy - 1);
                    l -= qa(i - sy - 1);
                }
                if AX && AZ {
                    a += w[4] * qa(i - sz - 1) + w[11] * qa(i - sz + 1);
                    l -= qa(i - sz - 1);
                }
                if AY && AZ {
                    a += w[5] * qa(i - sz - sy);
                    l -= qa(i - sz - sy);
                }
                if AX && AY && AZ {
                    a += w[6] * qa(i - sz - sy - 1);
                    l += qa(i - sz - sy - 1);
                }
                pre[x] = a;
                lrow[x] = l;
            }
            for x in 0..nx {
                let i = row + x;
                let (l, pred) = if (lo..hi).contains(&x) {
                    let mut l = lrow[x];
                    let mut a = pre[x];
                    if AX {
                        let west = q[i - 1] as i64;
                        l += west;
                        a += w[0] * west + w[7] * q[i - 2] as i64 + w[12] * e[i - 1] as i64;
                    }
                    (l, l + lin.finish(a - wl * l))
                } else {
                    let l = predict_at(q, ext, [z, y, x]);
                    (l, l)
                };
                visit(q, i, pred);
                e[i] = lorenzo_error(q[i], l);
            }
        }
    }
}

/// [`scan_linear`] specialized to which dimensions of `ext` have more than one point.
fn scan_linear_block(
    lin: &Linear,
    q: &mut [i32],
    ext: [usize; 3],
    mut visit: impl FnMut(&mut [i32], usize, i64),
) {
    let v = &mut visit;
    match ext.map(|e| e > 1) {
        [true, true, true] => scan_linear::<true, true, true>(lin, q, ext, v),
        [true, true, false] => scan_linear::<true, true, false>(lin, q, ext, v),
        [true, false, true] => scan_linear::<true, false, true>(lin, q, ext, v),
        [true, false, false] => scan_linear::<true, false, false>(lin, q, ext, v),
        [false, true, true] => scan_linear::<false, true, true>(lin, q, ext, v),
        [false, true, false] => scan_linear::<false, true, false>(lin, q, ext, v),
        [false, false, true] => scan_linear::<false, false, true>(lin, q, ext, v),
        [false, false, false] => scan_linear::<false, false, false>(lin, q, ext, v),
    }
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
        if let Model::Linear(lin) = &self.model {
            return scan_linear_block(lin, q, ext, visit);
        }
        scan_block(q, ext, |q, i, l, f| {
            let bias = f.map_or(0, |f| self.bias(f));
            visit(q, i, l + bias)
        });
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
    let mut q = recon.to_vec();
    scan_block(&mut q, ext, |_, i, l, feat| {
        if let Some(feat) = feat.filter(|_| !escaped[i]) {
            f.push(*feat);
            t.push(q0[i] as i64 - l);
        }
    });
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

    /// Block shapes covering every class of active dimensions, thin and wide.
    const SHAPES: [[usize; 3]; 11] = [
        [1, 1, 1],
        [1, 1, 3],
        [1, 1, 17],
        [1, 9, 13],
        [5, 6, 7],
        [40, 1, 3],
        [6, 7, 1],
        [3, 1, 1],
        [4, 5, 2],
        [3, 3, 4],
        [7, 9, 11],
    ];

    /// The features of inner point `(z, y, x)` straight from the format's definition, with
    /// bounds-checked neighbours (zero outside the block or along a dimension of extent 1).
    fn reference(q: &[i32], e: &[i32], ext: [usize; 3], p: [usize; 3]) -> (i64, [i64; INPUTS]) {
        let at = |a: &[i32], d: [isize; 3]| -> Option<i64> {
            let c: Vec<isize> = (0..3).map(|k| p[k] as isize - d[k]).collect();
            let ok =
                (0..3).all(|k| c[k] >= 0 && (c[k] as usize) < ext[k] && (d[k] == 0 || ext[k] > 1));
            ok.then(|| {
                a[((c[0] as usize * ext[1]) + c[1] as usize) * ext[2] + c[2] as usize] as i64
            })
        };
        let l = predict_at(q, ext, p);
        let v = |d: [isize; 3]| at(q, d).map_or(0, |n| n - l);
        let er = |d: [isize; 3]| at(e, d).unwrap_or(0);
        let f = [
            v([0, 0, 1]),
            v([0, 1, 0]),
            v([1, 0, 0]),
            v([0, 1, 1]),
            v([1, 0, 1]),
            v([1, 1, 0]),
            v([1, 1, 1]),
            v([0, 0, 2]),
            v([0, 2, 0]),
            v([2, 0, 0]),
            v([0, 1, -1]),
            v([1, 0, -1]),
            er([0, 0, 1]),
            er([0, 1, 0]),
            er([1, 0, 0]),
            er([0, 1, 1]),
        ];
        (l, f)
    }

    #[test]
    fn scan_matches_the_reference_features_for_every_shape() {
        for ext in SHAPES {
            let n: usize = ext.iter().product();
            let q0: Vec<i32> = (0..n).map(|i| ((i * 7919) % 2001) as i32 - 1000).collect();
            let mut q = q0.clone();
            let mut e = vec![0i32; n];
            let mut seen = 0;
            scan_block(&mut q, ext, |q, i, l, f| {
                let p = [i / (ext[1] * ext[2]), (i / ext[2]) % ext[1], i % ext[2]];
                assert_eq!(l, predict_at(q, ext, p), "{ext:?} {p:?}");
                let inner =
                    (0..3).all(|k| ext[k] == 1 || p[k] >= 2) && (ext[2] == 1 || p[2] + 1 < ext[2]);
                assert_eq!(f.is_some(), inner, "{ext:?} {p:?}");
                if let Some(f) = f {
                    assert_eq!((l, *f), reference(q, &e, ext, p), "{ext:?} {p:?}");
                    seen += 1;
                }
                e[i] = lorenzo_error(q[i], l);
            });
            assert_eq!(q, q0);
            assert_eq!(seen, inner_count(ext), "{ext:?}");
        }
    }

    #[test]
    fn round_trips_every_rank_and_feedback() {
        for p in [Nglr::new(net()), Nglr::linear(linear())] {
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

    fn linear() -> Linear {
        Linear {
            w: std::array::from_fn(|i| (i as i32 * 7919 % 4001 - 2000) * 37),
            b: -(1 << 20) + 12345,
            shift: 17,
        }
    }

    /// The row-at-a-time linear scan gives exactly the predictions of the per-point
    /// definition (Lorenzo plus the linear bias of the features), on every shape, with codes
    /// small and large enough to wrap.
    #[test]
    fn linear_scan_matches_the_feature_definition() {
        let lin = linear();
        for ext in SHAPES {
            let n: usize = ext.iter().product();
            for big in [false, true] {
                let codes: Vec<i32> = (0..n)
                    .map(|i| {
                        let c = ((i * 7919) % 201) as i32 - 100;
                        if big && i % 5 == 0 {
                            c.wrapping_mul(21_474_836)
                        } else {
                            c
                        }
                    })
                    .collect();
                for m in [1, 15] {
                    let mut fast = codes.clone();
                    Nglr::linear(lin.clone()).decode(&mut fast, ext, m);
                    let mut slow = codes.clone();
                    scan_block(&mut slow, ext, |q, i, l, f| {
                        let pred = l + f.map_or(0, |f| lin.bias(f));
                        q[i] = pred.wrapping_add(q[i] as i64 * m as i64) as i32;
                    });
                    assert_eq!(fast, slow, "{ext:?} m {m} big {big}");
                }
            }
        }
    }
}
