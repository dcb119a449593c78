//! The CDF 9/7 biorthogonal wavelet (JPEG 2000 irreversible, lifting form) over a 3-D grid.
//!
//! Multi-level and separable, in Mallat layout: each transformed dimension ends up with its
//! low-pass half (`ceil(n / 2)` samples) first and its high-pass half (`floor(n / 2)`) after.
//! Whole-sample symmetric extension makes every length work; a length-1 line is left alone.
//!
//! Outputs are scaled by `sqrt(2) / K` (low) and `K / sqrt(2)` (high) instead of JPEG 2000's
//! `1 / K` and `K`, which makes the transform as close to orthonormal as CDF 9/7 gets: one
//! uniform quantization step then costs about the same signal error in every subband.
//!
//! The decoder must rebuild the encoder's bits on every machine, so each line is plain f64
//! arithmetic in a fixed order (no `mul_add`, no intrinsics); lines are independent, so running
//! them on several threads changes nothing.

use rayon::prelude::*;
use std::f64::consts::SQRT_2;
use std::ops::{Add, AddAssign, Mul, MulAssign};

/// The sample type a transform runs in: f32 for float32 chunks (half the memory, twice the
/// lanes), f64 for float64 ones. The weights are the f64 constants below rounded to it.
pub trait Sample:
    Copy
    + Default
    + Send
    + Sync
    + Add<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + MulAssign
    + 'static
{
    /// `v` rounded to the sample type.
    fn of(v: f64) -> Self;
}

impl Sample for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
}

impl Sample for f64 {
    fn of(v: f64) -> f64 {
        v
    }
}

/// Most levels along one dimension.
pub const MAX_LEVELS: u8 = 6;

const ALPHA: f64 = -1.586134342059924;
const BETA: f64 = -0.052980118572961;
const GAMMA: f64 = 0.882911075530934;
const DELTA: f64 = 0.443506852043971;
const K: f64 = 1.230174104914001;
/// Low-pass output scale: unit DC gain times `sqrt(2)`, as an orthonormal transform has.
const LOW: f64 = SQRT_2 / K;
/// High-pass output scale: Nyquist gain `sqrt(2)` instead of JPEG 2000's 2.
const HIGH: f64 = K / SQRT_2;
/// Columns transformed together along dimensions 0 and 1: each piece gathered is eight cache
/// lines, and the lifting loops run over `TILE` independent lanes (on [256, 256, 256], 4 and 8
/// stall on strided misses; 32..256 are within a few percent, 64 the fastest).
const TILE: usize = 64;
/// Widest column strip one parallel task owns along dimensions 0 and 1 (a power-of-two
/// multiple of `TILE`).
const STRIP: usize = 256;
/// Planes from which dimensions 2 and 1 run plane by plane, each plane on one thread.
const PLANES: usize = 16;
/// Elements below which a pass is not split across threads.
const SERIAL: usize = 1 << 15;

/// Levels along each dimension for a grid: halve while the low-pass part is at least 16 long
/// (so a dimension shorter than 16 gets 0 levels), at most [`MAX_LEVELS`]. Short low-pass
/// lines are dominated by their boundary extension and gain little from another level.
pub fn levels_for(ext: [usize; 3]) -> [u8; 3] {
    ext.map(|mut n| {
        let mut l = 0;
        while n >= 16 && l < MAX_LEVELS {
            n = n.div_ceil(2);
            l += 1;
        }
        l
    })
}

/// In place, forward: level 1 transforms each dimension with levels >= 1 over the full extent,
/// putting low-pass first then high-pass along that dimension (Mallat layout); level `l`
/// transforms only the low-pass box left by level `l - 1`, and only along dimensions whose
/// level count is >= `l`. Order within a level: dimension 2 (fastest), then 1, then 0.
pub fn forward<F: Sample>(x: &mut [F], ext: [usize; 3], levels: [u8; 3]) {
    run(x, ext, levels, false);
}

/// Exact reverse order of [`forward`], the inverse lifting steps.
pub fn inverse<F: Sample>(x: &mut [F], ext: [usize; 3], levels: [u8; 3]) {
    run(x, ext, levels, true);
}

/// One subband: a box of the transformed grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subband {
    pub start: [usize; 3],
    pub ext: [usize; 3],
    /// 1 = finest detail level; the final low-pass box gets level = max levels + 1.
    pub level: u8,
}

/// Every subband exactly once, the boxes tiling the grid: first the final low-pass box, then
/// the detail bands from the coarsest level to the finest. Within a level the bands follow
/// their high-pass pattern ascending (bit `d` set when dimension `d` is high-pass; only
/// dimensions transformed at that level, the all-low pattern skipped), so encoder and decoder
/// agree on the order. Zero-sized boxes are never returned.
pub fn subbands(ext: [usize; 3], levels: [u8; 3]) -> Vec<Subband> {
    let boxes = level_boxes(ext, levels);
    let top = boxes.len() - 1;
    let mut out = Vec::new();
    let mut push = |start: [usize; 3], ext: [usize; 3], level: u8| {
        if !ext.contains(&0) {
            out.push(Subband { start, ext, level });
        }
    };
    push([0; 3], boxes[top], top as u8 + 1);
    for l in (1..=top).rev() {
        let (outer, low) = (boxes[l - 1], boxes[l]);
        // A pattern naming a dimension left alone at this level (low == outer) is empty.
        for p in 1..8usize {
            let high = |d: usize| p >> d & 1 == 1;
            let start = [0, 1, 2].map(|d| if high(d) { low[d] } else { 0 });
            let ext = [0, 1, 2].map(|d| if high(d) { outer[d] - low[d] } else { low[d] });
            push(start, ext, l as u8);
        }
    }
    out
}

/// `boxes[l]` is the low-pass box left after level `l` (`boxes[0]` the whole grid).
fn level_boxes(ext: [usize; 3], levels: [u8; 3]) -> Vec<[usize; 3]> {
    assert!(
        levels.iter().all(|&l| l <= MAX_LEVELS),
        "more than MAX_LEVELS levels"
    );
    let top = usize::from(levels.into_iter().max().unwrap_or(0));
    let mut boxes = vec![ext];
    for l in 1..=top {
        let mut m = boxes[l - 1];
        for d in (0..3).filter(|&d| usize::from(levels[d]) >= l) {
            m[d] = m[d].div_ceil(2);
        }
        boxes.push(m);
    }
    boxes
}

/// Both directions: levels upwards along dimensions 2, 1, 0, or exactly backwards.
fn run<F: Sample>(x: &mut [F], ext: [usize; 3], levels: [u8; 3], inverse: bool) {
    let product: usize = ext.iter().product();
    assert_eq!(x.len(), product, "grid length does not match extent");
    let boxes = level_boxes(ext, levels);
    if product == 0 {
        return;
    }
    let mut order: Vec<usize> = (1..boxes.len()).collect();
    if inverse {
        order.reverse();
    }
    for l in order {
        let m = boxes[l - 1];
        let on = |d: usize| usize::from(levels[d]) >= l;
        let mut planar: Vec<usize> = [2, 1].into_iter().filter(|&d| on(d)).collect();
        if inverse {
            planar.reverse();
            if on(0) {
                pass(x, ext, m, 0, true);
            }
        }
        if m[0] >= PLANES {
            // Dimensions 2 and 1 plane by plane, while each plane is in cache.
            let (e, pm) = ([1, ext[1], ext[2]], [1, m[1], m[2]]);
            let planes = x.par_chunks_mut(ext[1] * ext[2]).take(m[0]);
            planes.for_each(|p| planar.iter().for_each(|&d| pass(p, e, pm, d, inverse)));
        } else {
            planar.iter().for_each(|&d| pass(x, ext, m, d, inverse));
        }
        if !inverse && on(0) {
            pass(x, ext, m, 0, false);
        }
    }
}

/// Transforms every line along `dim` of the box `m` (anchored at the origin) of the grid.
fn pass<F: Sample>(x: &mut [F], ext: [usize; 3], m: [usize; 3], dim: usize, inverse: bool) {
    let n = m[dim];
    if n < 2 || m.contains(&0) {
        return;
    }
    let planes = x.chunks_mut(ext[1] * ext[2]).take(m[0]);
    if dim == 2 {
        let mut rows: Vec<&mut [F]> = planes
            .flat_map(|p| p.chunks_mut(ext[2]).take(m[1]).map(|r| &mut r[..n]))
            .collect();
        rows.par_iter_mut()
            .with_min_len((SERIAL / n).max(1))
            .for_each_init(
                || vec![F::default(); n],
                |buf, row| row_line(row, buf, inverse),
            );
        return;
    }
    // Strips of adjacent columns, narrower when there would be under 64; each task holds one
    // strip's pieces in line order.
    let outer = if dim == 0 { m[1] } else { m[0] };
    let mut width = STRIP;
    while width > TILE && outer * m[2].div_ceil(width) < 64 {
        width /= 2;
    }
    let strips = m[2].div_ceil(width);
    let mut tasks: Vec<Vec<&mut [F]>> =
        (0..outer * strips).map(|_| Vec::with_capacity(n)).collect();
    for (i0, plane) in planes.enumerate() {
        for (i1, row) in plane.chunks_mut(ext[2]).take(m[1]).enumerate() {
            let o = if dim == 0 { i1 } else { i0 };
            for (c, piece) in row[..m[2]].chunks_mut(width).enumerate() {
                tasks[o * strips + c].push(piece);
            }
        }
    }
    tasks
        .par_iter_mut()
        .with_min_len((SERIAL / (n * m[2].min(width))).max(1))
        .for_each_init(
            || vec![F::default(); n * TILE],
            |buf, strip| strip_lines(strip, buf, inverse),
        );
}

/// One contiguous line (one lane).
fn row_line<F: Sample>(row: &mut [F], buf: &mut [F], inverse: bool) {
    let ns = row.len().div_ceil(2);
    let buf = &mut buf[..row.len()];
    if inverse {
        buf.copy_from_slice(row);
    } else {
        let (s, d) = buf.split_at_mut(ns);
        s.iter_mut()
            .zip(row.iter().step_by(2))
            .for_each(|(s, v)| *s = *v);
        d.iter_mut()
            .zip(row.iter().skip(1).step_by(2))
            .for_each(|(d, v)| *d = *v);
    }
    let (s, d) = buf.split_at_mut(ns);
    if inverse {
        synthesize(s, d, 1);
        row.iter_mut()
            .step_by(2)
            .zip(&*s)
            .for_each(|(v, s)| *v = *s);
        row.iter_mut()
            .skip(1)
            .step_by(2)
            .zip(&*d)
            .for_each(|(v, d)| *v = *d);
    } else {
        analyze(s, d, 1);
        row.copy_from_slice(buf);
    }
}

/// The lines of one strip (`strip[i]` holds position `i` of every line), `TILE` lanes at a time.
fn strip_lines<F: Sample>(strip: &mut [&mut [F]], buf: &mut [F], inverse: bool) {
    let (n, ns) = (strip.len(), strip.len().div_ceil(2));
    let width = strip[0].len();
    // Position i of a line sits at slot i / 2 of the low or high half of the lifting buffer.
    let slot = |i: usize| if i & 1 == 0 { i / 2 } else { ns + i / 2 };
    for t in (0..width).step_by(TILE) {
        let w = TILE.min(width - t);
        let buf = &mut buf[..n * w];
        for (i, p) in strip.iter().enumerate() {
            let k = if inverse { i } else { slot(i) };
            buf[k * w..(k + 1) * w].copy_from_slice(&p[t..t + w]);
        }
        let (s, d) = buf.split_at_mut(ns * w);
        if inverse {
            synthesize(s, d, w);
        } else {
            analyze(s, d, w);
        }
        for (i, p) in strip.iter_mut().enumerate() {
            let k = if inverse { slot(i) } else { i };
            p[t..t + w].copy_from_slice(&buf[k * w..(k + 1) * w]);
        }
    }
}

/// Forward lifting of `w` interleaved lines: `s` holds their even samples, `d` their odd ones
/// (lane `l` of position `i` at `i * w + l`); afterwards `s` is low-pass and `d` high-pass.
fn analyze<F: Sample>(s: &mut [F], d: &mut [F], w: usize) {
    predict(d, s, w, F::of(ALPHA));
    update(s, d, w, F::of(BETA));
    predict(d, s, w, F::of(GAMMA));
    update(s, d, w, F::of(DELTA));
    let (low, high) = (F::of(LOW), F::of(HIGH));
    s.iter_mut().for_each(|v| *v *= low);
    d.iter_mut().for_each(|v| *v *= high);
}

/// Inverse of [`analyze`]: the same steps backwards with negated weights (`a + (-c) y` is
/// exactly `a - c y` in IEEE arithmetic).
fn synthesize<F: Sample>(s: &mut [F], d: &mut [F], w: usize) {
    let (low, high) = (F::of(K / SQRT_2), F::of(SQRT_2 / K));
    s.iter_mut().for_each(|v| *v *= low);
    d.iter_mut().for_each(|v| *v *= high);
    update(s, d, w, F::of(-DELTA));
    predict(d, s, w, F::of(-GAMMA));
    update(s, d, w, F::of(-BETA));
    predict(d, s, w, F::of(-ALPHA));
}

/// `d[i] += c (s[i] + s[i + 1])`, where `s[ns]` mirrors to `s[ns - 1]` (even lengths).
fn predict<F: Sample>(d: &mut [F], s: &[F], w: usize, c: F) {
    let m = d.len().min(s.len() - w);
    lift(&mut d[..m], &s[..m], &s[w..w + m], c);
    if d.len() == s.len() {
        let j = d.len() - w;
        lift(&mut d[j..], &s[j..], &s[j..], c);
    }
}

/// `s[i] += c (d[i - 1] + d[i])`, where `d[-1]` mirrors to `d[0]` and `d[nd]` to `d[nd - 1]`
/// (odd lengths).
fn update<F: Sample>(s: &mut [F], d: &[F], w: usize, c: F) {
    let nd = d.len();
    lift(&mut s[..w], &d[..w], &d[..w], c);
    lift(&mut s[w..nd], &d[..nd - w], &d[w..], c);
    if s.len() > nd {
        lift(&mut s[nd..], &d[nd - w..], &d[nd - w..], c);
    }
}

/// `out += c (a + b)` element by element: the one arithmetic kernel, fixed order per element.
#[inline(always)]
fn lift<F: Sample>(out: &mut [F], a: &[F], b: &[F], c: F) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o += c * (*a + *b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes, each with hand-picked levels deep enough to run some lines down to length 1.
    #[rustfmt::skip]
    const CASES: [([usize; 3], [u8; 3]); 11] = [
        ([1, 1, 1], [0, 0, 0]), ([1, 1, 2], [0, 0, 1]), ([1, 1, 17], [0, 0, 4]),
        ([1, 33, 17], [0, 5, 3]), ([5, 16, 16], [2, 1, 3]), ([17, 31, 64], [4, 2, 6]),
        ([40, 40, 40], [1, 3, 2]), ([3, 2, 7], [6, 6, 6]), ([70, 1, 3], [3, 0, 1]),
        ([9, 300, 45], [1, 6, 2]), ([20, 0, 3], [1, 0, 0]),
    ];

    fn cases() -> impl Iterator<Item = ([usize; 3], [u8; 3])> {
        CASES
            .into_iter()
            .flat_map(|(e, l)| [(e, levels_for(e)), (e, l)])
    }

    /// Uniform in [-1, 1), splitmix64.
    fn noise(len: usize, seed: u64) -> Vec<f64> {
        let mut z = seed;
        let mut next = move || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let v = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((v ^ (v >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        };
        (0..len).map(|_| next()).collect()
    }

    fn energy(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum()
    }

    fn same_bits(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    #[test]
    fn reconstructs() {
        for (seed, (ext, levels)) in cases().enumerate() {
            let orig: Vec<f64> = noise(ext.iter().product(), seed as u64)
                .iter()
                .map(|v| 1e3 * v + 250.0)
                .collect();
            let mut x = orig.clone();
            forward(&mut x, ext, levels);
            inverse(&mut x, ext, levels);
            let tol = 1e-9 * 1250.0; // relative to the data's magnitude, at most 1250
            let ok = x.iter().zip(&orig).all(|(a, b)| (a - b).abs() < tol);
            assert!(ok, "{ext:?} {levels:?}");
        }
    }

    #[test]
    fn subbands_tile_the_grid() {
        for (ext, levels) in cases() {
            let mut hits = vec![0u8; ext.iter().product()];
            for b in subbands(ext, levels) {
                assert!(!b.ext.contains(&0), "{ext:?}: empty {b:?}");
                for i0 in b.start[0]..b.start[0] + b.ext[0] {
                    for i1 in b.start[1]..b.start[1] + b.ext[1] {
                        let at = (i0 * ext[1] + i1) * ext[2] + b.start[2];
                        hits[at..at + b.ext[2]].iter_mut().for_each(|h| *h += 1);
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "{ext:?} {levels:?}");
        }
        let b: Vec<_> = subbands([40, 40, 40], [2, 2, 1])
            .into_iter()
            .map(|b| (b.start, b.ext, b.level))
            .collect();
        assert_eq!(b.len(), 11);
        assert_eq!(b[0], ([0; 3], [10, 10, 20], 3));
        assert_eq!(b[1], ([10, 0, 0], [10, 10, 20], 2));
        assert_eq!(b[4], ([20, 0, 0], [20; 3], 1));
        assert_eq!(b[10], ([20, 20, 20], [20, 20, 20], 1));
    }

    #[test]
    fn levels_follow_the_rule() {
        assert_eq!(levels_for([1, 1, 1]), [0, 0, 0]);
        // 100 -> 50 -> 25 -> 13: three halvings, then 13 < 16 stops.
        assert_eq!(levels_for([1, 100, 15]), [0, 3, 0]);
        assert_eq!(levels_for([4096, 1, 1]), [6, 0, 0]);
        assert_eq!(levels_for([16, 31, 32]), [1, 2, 2]);
    }

    #[test]
    fn same_bits_on_any_axis_and_thread_count() {
        let line = noise(37, 7);
        let mut out = Vec::new();
        for ext in [[37, 1, 1], [1, 37, 1], [1, 1, 37]] {
            let mut x = line.clone();
            forward(&mut x, ext, [2; 3]);
            out.push(x);
        }
        assert!(same_bits(&out[0], &out[1]) && same_bits(&out[0], &out[2]));
        let ext = [40, 50, 60];
        let mut a = noise(ext.iter().product(), 9);
        let mut b = a.clone();
        forward(&mut a, ext, levels_for(ext));
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        one.install(|| forward(&mut b, ext, levels_for(ext)));
        assert!(same_bits(&a, &b));
    }

    #[test]
    fn smooth_field_lands_in_low_pass() {
        let ext = [40, 40, 40];
        let mut x: Vec<f64> = (0..64000)
            .map(|i| {
                let (a, c) = ((i / 1600) as f64 * 0.11, (i % 40) as f64 * 0.13);
                a.sin() * ((i / 40 % 40) as f64 * 0.07).cos() + (a + c).cos()
            })
            .collect();
        forward(&mut x, ext, levels_for(ext));
        let low = subbands(ext, levels_for(ext))[0];
        let mut e = 0.0;
        for i0 in 0..low.ext[0] {
            for i1 in 0..low.ext[1] {
                let at = (i0 * ext[1] + i1) * ext[2];
                e += energy(&x[at..at + low.ext[2]]);
            }
        }
        assert!(e > 0.99 * energy(&x), "{}", e / energy(&x));
    }

    // Measured: coefficient / signal energy of white noise 1.075 for [40, 40, 40] at [2, 2, 2]
    // levels and 1.020 for [1, 1, 4096] at 6 levels.
    #[test]
    fn near_orthonormal_on_noise() {
        for ext in [[40, 40, 40], [1, 1, 4096]] {
            let mut x = noise(ext.iter().product(), 3);
            let e = energy(&x);
            forward(&mut x, ext, levels_for(ext));
            let r = energy(&x) / e;
            assert!((0.9..1.1).contains(&r), "{ext:?}: {r}");
        }
    }

    // Measured squared norms of the synthesis of a unit impulse, [1, 1, 64] at 3 levels; the
    // interior is flat, only each band's end positions feel the symmetric extension:
    //   low (level 4) first 0.616, interior 0.997..1.075, last 1.701
    //   level 3       first 1.010, interior 1.028..1.146, last 1.411
    //   level 2       first 1.024, interior 0.956..1.067, last 1.213
    //   level 1       first 1.253, interior 1.034..1.124, last 0.884
    // (at 4096 long, 6 levels: interior 0.956..1.199, ends 0.542..1.784).
    #[test]
    fn unit_impulses_cost_about_one() {
        let (ext, levels) = ([1, 1, 64], levels_for([1, 1, 64]));
        for b in subbands(ext, levels) {
            let norms: Vec<f64> = (b.start[2]..b.start[2] + b.ext[2])
                .map(|i| {
                    let mut x = vec![0.0; 64];
                    x[i] = 1.0;
                    inverse(&mut x, ext, levels);
                    energy(&x)
                })
                .collect();
            let within = |r: std::ops::Range<f64>, v: &[f64]| v.iter().all(|e| r.contains(e));
            let inner = &norms[1..norms.len() - 1];
            assert!(
                within(0.9..1.2, inner) && within(0.6..1.75, &norms),
                "{b:?}: {norms:?}"
            );
        }
    }

    /// `cargo test --release --lib cdf97_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn cdf97_speed() {
        let ext = [256, 256, 256];
        let mut x = noise(ext.iter().product(), 1);
        let mb = (x.len() * 8) as f64 / 1e6;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            forward(&mut x, ext, levels_for(ext));
            let f = t.elapsed().as_secs_f64();
            inverse(&mut x, ext, levels_for(ext));
            let i = t.elapsed().as_secs_f64() - f;
            eprintln!("forward {:.0} MB/s, inverse {:.0} MB/s", mb / f, mb / i);
        }
    }
}
