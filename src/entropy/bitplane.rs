//! Context-adaptive coding of zigzag residuals by bit-planes.
//!
//! Each code `z` is sent as its number of significant bit-planes `k` (0 for z = 0), then the
//! planes below the leading one, most significant first.
//!
//! `k` is coded relative to what its causal neighbours suggest. The context `c` is formed from
//! the plane counts `w, n, u` of the west, north and previous-slice neighbours
//! (`c = w + n + u + max(w, n, u)`, at most 124), and the expected count is `e = (c + 2) / 4`.
//! With [`Contexts::Far`] (coder id 2, for interpolated blocks) `c` also reads six neighbours
//! two or four points away, which share the point's parities and so its interpolation level
//! and pass: the adjacent ones belong to other levels, whose residuals differ in scale.
//! The coder sends "is `k = e`?", then "is `k > e`?" (unless `e` is 0 or 31), then the
//! distance from `e` in unary; all
//! these decisions have adaptive probabilities per point class and context, so flat and busy
//! regions get their own statistics and a typical value costs two or three decisions.
//! The two planes under the leading one are coded adaptively per `k`; the lower planes are
//! close to uniform and go to a raw bit stream.
//!
//! Block payload: `u32 LE` length of the range-coded stream, that stream, then the raw bits.

use super::context::{class_of, planes_of, Neighbours};
pub use super::context::{Classes, Contexts};
use super::range::{BitReader, BitSink, BitWriter, CostMeter, Decoder, Encoder, Prob};
use super::zigzag;
use crate::error::{ensure, Error, Result};

/// Neighbourhood contexts per class (`c` never exceeds 124).
const CONTEXTS: usize = 128;
/// Classes of points: interpolated blocks separate the finest level's three passes (x, y, z
/// odd) from the coarse levels, whose residuals are larger; Lorenzo blocks use class 0.
const CLASSES: usize = 4;
/// Unary steps with their own probabilities; further steps share the last one.
const STEPS: usize = 8;
/// Planes coded adaptively below the leading one.
const MODELLED_PLANES: u32 = 2;

/// The adaptive probabilities of one (class, context) pair.
#[derive(Clone, Copy, Default)]
struct KModel {
    equal: Prob,
    above: Prob,
    up: [Prob; STEPS],
    down: [Prob; STEPS],
}

struct Model {
    k: Vec<KModel>,
    /// Per class and k: top plane, then second plane given the top one.
    planes: [[[Prob; 3]; 32]; CLASSES],
}

impl Model {
    fn new() -> Model {
        Model {
            k: vec![KModel::default(); CLASSES * CONTEXTS],
            planes: [[[Prob::default(); 3]; 32]; CLASSES],
        }
    }
}

#[inline]
fn encode_k<S: BitSink>(rc: &mut S, km: &mut KModel, k: u32, e: u32) {
    let equal = (k == e) as u32;
    rc.encode(&mut km.equal, 1 - equal);
    if equal == 1 {
        return;
    }
    let above = (k > e) as u32;
    // At e = 0 the count can only be above, at e = 31 only below: nothing to send.
    if e > 0 && e < 31 {
        rc.encode(&mut km.above, above);
    }
    if above == 1 {
        // k - e - 1 further steps up, the last one implicit at k = 31.
        let d = k - e - 1;
        for j in 0..d.min(31 - e - 1) {
            rc.encode(&mut km.up[(j as usize).min(STEPS - 1)], 1);
        }
        if k < 31 {
            rc.encode(&mut km.up[(d as usize).min(STEPS - 1)], 0);
        }
    } else {
        // e - k - 1 further steps down, the last one implicit at k = 0.
        let d = e - k - 1;
        for j in 0..d {
            rc.encode(&mut km.down[(j as usize).min(STEPS - 1)], 1);
        }
        if k > 0 {
            rc.encode(&mut km.down[(d as usize).min(STEPS - 1)], 0);
        }
    }
}

#[inline]
fn decode_k(rc: &mut Decoder<'_>, km: &mut KModel, e: u32) -> u32 {
    if rc.decode(&mut km.equal) == 0 {
        return e;
    }
    let above = match e {
        0 => true,
        31.. => false,
        _ => rc.decode(&mut km.above) == 1,
    };
    if above {
        let mut k = e + 1;
        let mut j = 0usize;
        while k < 31 && rc.decode(&mut km.up[j.min(STEPS - 1)]) == 1 {
            k += 1;
            j += 1;
        }
        k
    } else {
        let mut k = e - 1;
        let mut j = 0usize;
        while k > 0 && rc.decode(&mut km.down[j.min(STEPS - 1)]) == 1 {
            k -= 1;
            j += 1;
        }
        k
    }
}

/// The expected plane count for context `c`.
#[inline]
fn expected(c: usize) -> u32 {
    ((c + 2) / 4) as u32
}

/// Codes the residuals of one block (C order, extents `ext`); `classes` splits its points
/// into classes with their own statistics, `contexts` says which neighbours predict a count.
pub fn encode(r: &[i32], ext: [usize; 3], classes: Classes, contexts: Contexts) -> Vec<u8> {
    encode_parts(&[(r, ext)], classes, contexts)
}

/// Codes several boxes of residuals (each C order, its extents) one after the other in one
/// block: one range-coded stream and one adaptive model, which each box goes on learning
/// from where the one before left it; each box's contexts come from its own neighbours.
/// What a small wavelet chunk codes its subbands with.
pub fn encode_parts(
    parts: &[(&[i32], [usize; 3])],
    classes: Classes,
    contexts: Contexts,
) -> Vec<u8> {
    let mut rc = Encoder::new();
    let mut raw = BitWriter::default();
    let mut m = Model::new();
    for &(r, ext) in parts {
        model_block(r, ext, classes, contexts, &mut m, &mut rc, |v, n| {
            raw.put(v, n)
        });
    }
    let stream = rc.finish();
    let bits = raw.finish();
    let mut out = Vec::with_capacity(4 + stream.len() + bits.len());
    out.extend_from_slice(&(stream.len() as u32).to_le_bytes());
    out.extend_from_slice(&stream);
    out.extend_from_slice(&bits);
    out
}

/// The length of what [`encode`] writes, to within a fraction of a percent, from the cost of
/// each modelled decision under the same adaptive model, without running the range coder:
/// what the encoder needs to compare predictors on a block's sample.
pub fn estimate(r: &[i32], ext: [usize; 3], classes: Classes, contexts: Contexts) -> usize {
    estimate_parts(&[(r, ext)], classes, contexts)
}

/// [`estimate`] of what [`encode_parts`] writes.
pub fn estimate_parts(
    parts: &[(&[i32], [usize; 3])],
    classes: Classes,
    contexts: Contexts,
) -> usize {
    let mut meter = CostMeter::default();
    let mut raw = 0u64;
    let mut m = Model::new();
    for &(r, ext) in parts {
        model_block(r, ext, classes, contexts, &mut m, &mut meter, |_, n| {
            raw += n as u64
        });
    }
    4 + meter.bytes() + raw.div_ceil(8) as usize
}

/// Sends every modelled decision of a block to `rc` and its raw bits to `raw(bits, count)`.
#[inline(always)]
fn model_block<S: BitSink>(
    r: &[i32],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    m: &mut Model,
    rc: &mut S,
    mut raw: impl FnMut(u32, u32),
) {
    let mut nb = Neighbours::new(ext);
    let mut it = r.iter();
    for z in 0..ext[0] {
        for y in 0..ext[1] {
            let start = nb.at(z, y, 0);
            for (x, i) in (start..start + ext[2]).enumerate() {
                let code = zigzag::encode(*it.next().expect("block length"));
                let k = planes_of(code).min(31);
                debug_assert!(planes_of(code) <= 31, "residual beyond 2^30");
                let class = class_of(classes, z, y, x);
                let c = nb.context(i, contexts);
                let e = expected(c);
                encode_k(
                    rc,
                    &mut m.k[(class * CONTEXTS + c) & (CLASSES * CONTEXTS - 1)],
                    k,
                    e,
                );
                nb.k[i] = k as u8;
                if k >= 2 {
                    let below = k - 1; // planes under the leading one
                    let pm = &mut m.planes[class][k as usize];
                    let top = (code >> (below - 1)) & 1;
                    rc.encode(&mut pm[0], top);
                    if below >= 2 {
                        let second = (code >> (below - 2)) & 1;
                        rc.encode(&mut pm[1 + top as usize], second);
                    }
                    if below > MODELLED_PLANES {
                        raw(code, below - MODELLED_PLANES);
                    }
                }
            }
        }
    }
}

/// Decodes what [`encode`] wrote into `r` (whose length is the block size).
pub fn decode(
    bytes: &[u8],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    r: &mut [i32],
) -> Result<()> {
    decode_parts(bytes, &mut [(ext, r)], classes, contexts)
}

/// Decodes what [`encode_parts`] wrote into the boxes `parts` (their extents and residuals,
/// each as long as its box).
pub fn decode_parts(
    bytes: &[u8],
    parts: &mut [([usize; 3], &mut [i32])],
    classes: Classes,
    contexts: Contexts,
) -> Result<()> {
    ensure!(
        bytes.len() >= 4,
        Error::Truncated {
            what: "range-coded block"
        }
    );
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    ensure!(
        len <= bytes.len() - 4,
        Error::Truncated {
            what: "range-coded block"
        }
    );
    let mut rc = Decoder::new(&bytes[4..4 + len]);
    let mut raw = BitReader::new(&bytes[4 + len..]);
    let mut m = Model::new();
    for (ext, r) in parts.iter_mut() {
        decode_box(&mut rc, &mut raw, &mut m, *ext, classes, contexts, r)?;
    }
    Ok(())
}

/// One box of a block: its residuals in C order, the model carried on.
#[inline(always)]
fn decode_box(
    rc: &mut Decoder<'_>,
    raw: &mut BitReader<'_>,
    m: &mut Model,
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    r: &mut [i32],
) -> Result<()> {
    let mut nb = Neighbours::new(ext);
    let mut out = r.iter_mut();
    for z in 0..ext[0] {
        for y in 0..ext[1] {
            let start = nb.at(z, y, 0);
            for (x, i) in (start..start + ext[2]).enumerate() {
                let class = class_of(classes, z, y, x);
                let c = nb.context(i, contexts);
                let k = decode_k(
                    rc,
                    &mut m.k[(class * CONTEXTS + c) & (CLASSES * CONTEXTS - 1)],
                    expected(c),
                );
                nb.k[i] = k as u8;
                let code = if k >= 2 {
                    let below = k - 1;
                    let pm = &mut m.planes[class][k as usize];
                    let top = rc.decode(&mut pm[0]);
                    let mut v = 2 | top;
                    if below >= 2 {
                        v = (v << 1) | rc.decode(&mut pm[1 + top as usize]);
                    }
                    if below > MODELLED_PLANES {
                        let n = below - MODELLED_PLANES;
                        v = (v << n) | raw.get(n);
                    }
                    v
                } else {
                    k
                };
                match out.next() {
                    Some(o) => *o = zigzag::decode(code),
                    None => return Err(Error::Corrupt("block longer than its extent".into())),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_mixed_magnitudes() {
        let ext = [3, 17, 29];
        let n = ext.iter().product();
        let r: Vec<i32> = (0..n as i64)
            .map(|i| match i % 7 {
                0 => 0,
                1 => -1,
                2 => ((i * 2654435761) % 2001 - 1000) as i32,
                3 => i32::MAX / 2 - i as i32,
                4 => -(1 << 30),
                _ => (i % 5) as i32 - 2,
            })
            .collect();
        for classes in [Classes::Single, Classes::Passes, Classes::OddCoordinates] {
            for contexts in [Contexts::Near, Contexts::Far] {
                let bytes = encode(&r, ext, classes, contexts);
                let mut back = vec![0; n];
                decode(&bytes, ext, classes, contexts, &mut back).unwrap();
                assert_eq!(back, r, "{classes:?} {contexts:?}");
            }
        }
    }

    #[test]
    fn parts_share_one_model_and_round_trip() {
        let a: Vec<i32> = (0..3 * 5 * 7).map(|i| (i % 9) - 4).collect();
        let b: Vec<i32> = (0..40).map(|i| (i * i) % 1000 - 500).collect();
        let parts = [(&a[..], [3, 5, 7]), (&b[..], [1, 1, 40])];
        let bytes = encode_parts(&parts, Classes::Single, Contexts::Near);
        assert!(estimate_parts(&parts, Classes::Single, Contexts::Near).abs_diff(bytes.len()) < 8);
        let (mut ra, mut rb) = (vec![0; a.len()], vec![0; b.len()]);
        let mut out = [([3, 5, 7], &mut ra[..]), ([1, 1, 40], &mut rb[..])];
        decode_parts(&bytes, &mut out, Classes::Single, Contexts::Near).unwrap();
        assert_eq!((ra, rb), (a.clone(), b));
        // One part is exactly a block.
        assert_eq!(
            encode_parts(&[(&a[..], [3, 5, 7])], Classes::Single, Contexts::Near),
            encode(&a, [3, 5, 7], Classes::Single, Contexts::Near)
        );
    }

    #[test]
    fn every_plane_count_round_trips() {
        let ext = [1, 4, 64];
        // Codes with every plane count 0..=31, low bits varied.
        let r: Vec<i32> = (0..256u32)
            .map(|i| {
                let k = i * 7 % 32;
                let z = if k == 0 {
                    0
                } else {
                    (1 << (k - 1)) | (i & ((1 << (k - 1)) - 1))
                };
                zigzag::decode(z)
            })
            .collect();
        for contexts in [Contexts::Near, Contexts::Far] {
            let bytes = encode(&r, ext, Classes::Single, contexts);
            let mut back = vec![0; r.len()];
            decode(&bytes, ext, Classes::Single, contexts, &mut back).unwrap();
            assert_eq!(back, r);
        }
    }

    /// Every extent from 1 to 6 along each dimension round-trips with the far contexts, whose
    /// neighbours reach four points back along x and two along y and z.
    #[test]
    fn far_contexts_round_trip_small_and_thin_blocks() {
        for nz in 1..=6 {
            for ny in 1..=6 {
                for nx in 1..=6 {
                    let ext = [nz, ny, nx];
                    let n = nz * ny * nx;
                    let r: Vec<i32> = (0..n as i32).map(|i| (i * 37 % 11) - 5).collect();
                    let bytes = encode(&r, ext, Classes::Passes, Contexts::Far);
                    let mut back = vec![0; n];
                    decode(&bytes, ext, Classes::Passes, Contexts::Far, &mut back).unwrap();
                    assert_eq!(back, r, "{ext:?}");
                }
            }
        }
    }

    /// The estimate follows the coded length closely for sparse, dense and large residuals.
    #[test]
    fn estimate_is_within_a_percent_of_the_coding() {
        let ext = [8, 40, 50];
        let n = 8 * 40 * 50;
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for spread in [2u64, 9, 300, 100_000] {
            let r: Vec<i32> = (0..n)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let v = (s % (2 * spread + 1)) as i32 - spread as i32;
                    // Smoother in some rows, so contexts matter.
                    if (i / 50) % 3 == 0 {
                        v / 2
                    } else {
                        v
                    }
                })
                .collect();
            for classes in [Classes::Single, Classes::Passes] {
                for contexts in [Contexts::Near, Contexts::Far] {
                    let coded = encode(&r, ext, classes, contexts).len() as f64;
                    let est = estimate(&r, ext, classes, contexts) as f64;
                    assert!(
                        (est - coded).abs() <= 0.01 * coded + 8.0,
                        "spread {spread} {classes:?} {contexts:?}: {est} vs {coded}"
                    );
                }
            }
        }
    }

    #[test]
    fn zeros_cost_almost_nothing() {
        let ext = [1, 100, 1000];
        let bytes = encode(&vec![0; 100_000], ext, Classes::Single, Contexts::Near);
        assert!(bytes.len() < 200, "{} bytes for 100k zeros", bytes.len());
    }
}
