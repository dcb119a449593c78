//! Prequantization: values to an integer grid that meets the bound, and back.
//!
//! `q = round((x - mid) / step)` with `step = 2 eb`, and the decoder's value is
//! `T::from_f64(mid + q * step)` ([`dequantize`], the one formula both sides use). The encoder
//! evaluates that formula for every value and escapes any value it does not bring within the
//! bound (NaN, infinities, subnormals, magnitudes beyond [`QMAX`] steps, values an f32 cannot
//! represent closely enough): those are stored exactly in the outlier section.

use rayon::prelude::*;

use crate::field::Element;
use crate::params::{ErrorMode, Params, PredictorChoice};

/// Largest quantization index magnitude. Keeps every Lorenzo residual (a sum of 8 grid values)
/// below 2^30 in magnitude, so its zigzag code has at most 31 bit-planes.
pub const QMAX: f64 = ((1u32 << 27) - 1) as f64;

/// How the grid is laid over the values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Value of index 0.
    pub mid: f64,
    /// Distance between neighbouring indices (twice the quantization bound).
    pub step: f64,
}

/// The decoded value of index `q`. Encoder and decoder both call this, so the encoder's bound
/// check sees exactly the values the decoder will produce.
#[inline]
pub fn dequantize<T: Element>(q: i32, grid: Grid) -> T {
    T::from_f64(dequantize_f64(q, grid))
}

/// The decoded values of grid indices `q` as little-endian bytes into `out` (`T::SIZE` bytes
/// a value): [`dequantize`] over a row. Where the bytes are the values in memory (a
/// little-endian machine, `out` aligned for `T`) the loop writes them as values, as AVX2 code
/// when the CPU has it: the same IEEE operations (a product, a sum, one rounding to `T`), so
/// the same bytes (`dequantize_into_matches_the_plain_loop`).
pub fn dequantize_into<T: Element>(q: &[i32], grid: Grid, out: &mut [u8]) {
    #[cfg(target_endian = "little")]
    if let Ok(values) = bytemuck::try_cast_slice_mut::<u8, T>(out) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            #[allow(unsafe_code)]
            return unsafe { dequantize_values_avx2(q, grid, values) };
        }
        return dequantize_values(q, grid, values);
    }
    for (d, &v) in out.chunks_exact_mut(T::SIZE).zip(q) {
        dequantize::<T>(v, grid).put_le(d);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn dequantize_values_avx2<T: Element>(q: &[i32], grid: Grid, out: &mut [T]) {
    dequantize_values(q, grid, out)
}

#[inline(always)]
fn dequantize_values<T: Element>(q: &[i32], grid: Grid, out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(q) {
        *o = dequantize(v, grid);
    }
}

/// Index `q` on the grid, before rounding to the element type.
#[inline]
pub fn dequantize_f64(q: i32, grid: Grid) -> f64 {
    grid.mid + q as f64 * grid.step
}

/// Feedback step used with absolute and relative bounds: the fine grid has 15 points per
/// bound interval, so the prequantization error is 1/15 of the bound and the predictors'
/// code quantizes like SZ's linear quantizer. [`plan`] gives NRMSE and PSNR targets step 1
/// (plain LBRC), whose error is known exactly from the grid before prediction; the pipeline
/// then also codes them with this step, tuning the bound from the decoded error
/// (`compress::target::encode_for_target`).
pub const FEEDBACK_STEP: i64 = 15;

/// Range statistics of the finite values of a chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    /// Number of finite values.
    pub finite: usize,
}

impl Stats {
    pub fn range(&self) -> f64 {
        if self.finite == 0 {
            0.0
        } else {
            self.max - self.min
        }
    }
}

/// The statistics of no values.
const EMPTY: Stats = Stats {
    min: f64::INFINITY,
    max: f64::NEG_INFINITY,
    finite: 0,
};

/// The statistics of two sets of values together.
fn merge(a: Stats, b: Stats) -> Stats {
    Stats {
        min: a.min.min(b.min),
        max: a.max.max(b.max),
        finite: a.finite + b.finite,
    }
}

pub fn stats<T: Element>(x: &[T]) -> Stats {
    x.par_chunks(1 << 16)
        .map(|c| {
            // The lanes see the values in another order, which only matters for the sign of a
            // zero minimum or maximum (it can end up in the grid's centre): then the ordered
            // fold decides, as it always did.
            let s = lanes_stats_dispatch(c);
            if s.min == 0.0 || s.max == 0.0 {
                ordered_stats(c)
            } else {
                s
            }
        })
        .reduce(|| EMPTY, merge)
}

/// The statistics of `c` folded in the order of its values.
fn ordered_stats<T: Element>(c: &[T]) -> Stats {
    let mut s = EMPTY;
    for &v in c {
        let v = v.to_f64();
        if v.is_finite() {
            s.min = s.min.min(v);
            s.max = s.max.max(v);
            s.finite += 1;
        }
    }
    s
}

/// [`lanes_stats`], as AVX2 code on x86-64 CPUs that have it (min and max are exact, so the
/// same statistics). Compiled on its own, the loop keeps its vector form whatever the caller
/// inlines around it (folded into rayon's reduce it once took twice the time).
fn lanes_stats_dispatch<T: Element>(c: &[T]) -> Stats {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { lanes_stats_avx2(c) };
    }
    lanes_stats_plain(c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn lanes_stats_avx2<T: Element>(c: &[T]) -> Stats {
    lanes_stats(c)
}

#[inline(never)]
fn lanes_stats_plain<T: Element>(c: &[T]) -> Stats {
    lanes_stats(c)
}

/// The statistics of `c` over four independent lanes of comparisons (no NaN can reach them:
/// a value that is not finite enters as an infinity that changes nothing), so the loop
/// vectorizes; equal to [`ordered_stats`] but for the sign of a zero result.
#[inline(always)]
fn lanes_stats<T: Element>(c: &[T]) -> Stats {
    const L: usize = 4;
    let (mut lo, mut hi, mut n) = ([f64::INFINITY; L], [f64::NEG_INFINITY; L], [0usize; L]);
    let mut quads = c.chunks_exact(L);
    for quad in &mut quads {
        for k in 0..L {
            let v = quad[k].to_f64();
            let finite = v.is_finite();
            let a = if finite { v } else { f64::INFINITY };
            let b = if finite { v } else { f64::NEG_INFINITY };
            lo[k] = if a < lo[k] { a } else { lo[k] };
            hi[k] = if b > hi[k] { b } else { hi[k] };
            n[k] += finite as usize;
        }
    }
    (0..L).fold(ordered_stats(quads.remainder()), |s, k| {
        merge(
            s,
            Stats {
                min: lo[k],
                max: hi[k],
                finite: n[k],
            },
        )
    })
}

/// Indices of one chunk plus the values that must be stored exactly.
#[derive(Debug, Clone, Default)]
pub struct Quantized {
    pub q: Vec<i32>,
    /// Sorted flat indices of escaped values (their `q` entries are placeholders).
    pub escapes: Vec<usize>,
    /// Sum of squared errors of the quantized values (0 unless asked for and checked).
    pub sse: f64,
}

/// Whether the decoded value `v` of original `x` is within `eb`: in f64 and, for f32 data,
/// also when the difference is taken in f32 arithmetic, as tools such as `h5diff -d` do (a
/// difference of values of opposite sign can round up in f32).
#[inline]
pub fn within(x: f64, v: f64, eb: f64, single: bool) -> bool {
    if single {
        let v = v as f32;
        // `&`, not `&&`: no branch, so the quantizer's loop vectorizes.
        ((x - v as f64).abs() <= eb) & (((x as f32 - v).abs() as f64) <= eb)
    } else {
        (x - v).abs() <= eb
    }
}

/// Quantizes `x` onto `grid`, escaping every value whose decoded value is further than `eb`
/// from it. With `check` false only values the grid cannot hold at all are escaped (the
/// predictors check each reconstruction themselves when they code with feedback).
pub fn quantize<T: Element>(x: &[T], grid: Grid, eb: f64, check: bool) -> Quantized {
    quantize_bounded(x, grid, eb, check, check, usize::MAX).expect("no escape limit")
}

/// The grid index of `v` and whether it stays (false: escaped): a finite, normal value within
/// [`QMAX`] steps whose decoded value is within `eb` of it when `check`.
#[inline(always)]
fn index_of<T: Element>(v: T, grid: Grid, inv: f64, eb: f64, check: bool) -> (i32, bool) {
    index_of_as::<T, false>(v, grid, inv, eb, check)
}

/// [`index_of`]; `WIDE` as in [`round_half_away`]. Both give the same index: the values they
/// differ on (NaN, out of range) are masked to 0 by `ok`.
#[inline(always)]
fn index_of_as<T: Element, const WIDE: bool>(
    v: T,
    grid: Grid,
    inv: f64,
    eb: f64,
    check: bool,
) -> (i32, bool) {
    let xf = v.to_f64();
    let y = (xf - grid.mid) * inv;
    // round(y) is within QMAX exactly when |y| < QMAX + 1/2 (halves go away from zero);
    // `!(a < b)` also catches NaN.
    let ok = !v.is_special() & (y.abs() < QMAX + 0.5);
    // Computed for every value, then selected.
    let qi = round_half_away::<WIDE>(y) & -(ok as i32);
    let fits = !check | within(xf, dequantize_f64(qi, grid), eb, T::SIZE == 4);
    (qi, ok & fits)
}

/// `y` rounded to the nearest integer, halves away from zero, for |y| < 2^31 (other values
/// give some integer, which the callers mask): add the largest double below one half, with
/// y's sign, and truncate (LLVM's own expansion of `round`; no libm call). `WIDE`: truncate
/// with `f64::trunc` and read the integer from the bits of `t + 1.5 * 2^52` (exact for
/// integers below 2^51), which compiles to vector instructions where AVX is on. `as i32`
/// saturates, and LLVM does that one lane at a time; it is kept without AVX, where `trunc`
/// is a library call.
#[inline(always)]
fn round_half_away<const WIDE: bool>(y: f64) -> i32 {
    let r = y + 0.499_999_999_999_999_94_f64.copysign(y);
    if WIDE {
        (r.trunc() + 6_755_399_441_055_744.0).to_bits() as u32 as i32
    } else {
        r as i32
    }
}

/// Writes the grid index of every value of `c` into `qc` (0 where it escapes) and counts
/// the escapes: the quantizer's one pass without branches. On x86-64 CPUs with AVX2 it runs
/// as AVX2 code (four doubles a lane instead of two): the same IEEE operations in the same
/// order, no fused multiply-add, so the same indices (`quantize_matches_the_plain_loop`).
fn index_pass<T: Element>(
    qc: &mut [i32],
    c: &[T],
    grid: Grid,
    inv: f64,
    eb: f64,
    check: bool,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { index_pass_avx2(qc, c, grid, inv, eb, check) };
    }
    index_pass_plain::<T, false>(qc, c, grid, inv, eb, check)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn index_pass_avx2<T: Element>(
    qc: &mut [i32],
    c: &[T],
    grid: Grid,
    inv: f64,
    eb: f64,
    check: bool,
) -> usize {
    index_pass_plain::<T, true>(qc, c, grid, inv, eb, check)
}

#[inline(always)]
fn index_pass_plain<T: Element, const WIDE: bool>(
    qc: &mut [i32],
    c: &[T],
    grid: Grid,
    inv: f64,
    eb: f64,
    check: bool,
) -> usize {
    let mut bad = 0usize;
    for (qo, &v) in qc.iter_mut().zip(c) {
        let (qi, good) = index_of_as::<T, WIDE>(v, grid, inv, eb, check);
        *qo = if good { qi } else { 0 };
        bad += !good as usize;
    }
    bad
}

/// Rounds every `c[i] * inv` to the nearest integer (halves away from zero) into `q`, the
/// quantizer of the wavelet path's coefficients; `false` when one is not within `limit` (or
/// not a number), its index then 0. One pass without branches, as [`index_pass`], with the
/// same AVX2 dispatch and the same indices on every CPU (`round_indices_match_round`).
pub fn round_indices<T: Element>(c: &[T], inv: f64, limit: f64, q: &mut [i32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { round_pass_avx2(c, inv, limit, q) };
    }
    round_pass::<T, false>(c, inv, limit, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn round_pass_avx2<T: Element>(c: &[T], inv: f64, limit: f64, q: &mut [i32]) -> bool {
    round_pass::<T, true>(c, inv, limit, q)
}

/// [`round_indices`]; `WIDE` as in [`round_half_away`] (`limit` must stay below 2^31).
#[inline(always)]
fn round_pass<T: Element, const WIDE: bool>(c: &[T], inv: f64, limit: f64, q: &mut [i32]) -> bool {
    let mut bad = 0u32;
    for (qo, &v) in q.iter_mut().zip(c) {
        let y = v.to_f64() * inv;
        // round(y) is within `limit` exactly when |y| < limit + 1/2; `!(a < b)` catches NaN.
        let ok = y.abs() < limit + 0.5;
        *qo = round_half_away::<WIDE>(y) & -(ok as i32);
        bad |= !ok as u32;
    }
    bad == 0
}

/// [`quantize`], giving up (`None`) when more than `max_escapes` values escape: the caller then
/// stores the chunk as it is, without holding an index for every value. The SSE is summed
/// only when `sse` and `check` (NRMSE and PSNR targets read it; a plain Lorenzo chunk under an
/// absolute or relative bound checks its values but needs no SSE).
pub fn quantize_bounded<T: Element>(
    x: &[T],
    grid: Grid,
    eb: f64,
    check: bool,
    sse: bool,
    max_escapes: usize,
) -> Option<Quantized> {
    const PART: usize = 1 << 16;
    let inv = 1.0 / grid.step;
    let mut q = vec![0i32; x.len()];
    // Per part: escaped offsets within the part (u32 keeps the worst case small) and the SSE.
    let parts: Vec<(Vec<u32>, f64)> = q
        .par_chunks_mut(PART)
        .zip(x.par_chunks(PART))
        .map(|(qc, c)| {
            // One pass without branches or a running sum (it vectorizes); the escapes, rare,
            // and the SSE, in index order as ever, in passes of their own.
            let bad = index_pass(qc, c, grid, inv, eb, check);
            let mut esc = Vec::with_capacity(bad);
            if bad > 0 {
                for (i, &v) in c.iter().enumerate() {
                    if !index_of(v, grid, inv, eb, check).1 {
                        esc.push(i as u32);
                    }
                }
            }
            let mut sum = 0.0;
            if check && sse {
                let mut next = esc.iter().peekable();
                for (i, (&qi, &v)) in qc.iter().zip(c).enumerate() {
                    if next.peek() == Some(&&(i as u32)) {
                        next.next();
                        continue;
                    }
                    let err = v.to_f64() - T::from_f64(dequantize_f64(qi, grid)).to_f64();
                    sum += err * err;
                }
            }
            (esc, sum)
        })
        .collect();
    let total: usize = parts.iter().map(|(e, _)| e.len()).sum();
    if total > max_escapes {
        return None;
    }
    let mut out = Quantized {
        q,
        escapes: Vec::with_capacity(total),
        sse: 0.0,
    };
    for (p, (esc, sse)) in parts.into_iter().enumerate() {
        out.escapes
            .extend(esc.iter().map(|&i| p * PART + i as usize));
        out.sse += sse;
    }
    Some(out)
}

/// The grid and the pointwise bound chosen for a chunk, with its quantized indices.
#[derive(Debug, Clone)]
pub struct Plan {
    pub grid: Grid,
    /// The pointwise bound every decoded value meets.
    pub eb: f64,
    /// Feedback step of the predictors, in grid steps (odd).
    pub m: i64,
    pub quantized: Quantized,
}

/// Chooses the grid for `params` and quantizes. Returns `None` when no grid meets the target
/// (the caller then stores the chunk exactly).
pub fn plan<T: Element>(x: &[T], params: &Params) -> Option<Plan> {
    let st = stats(x);
    let range = st.range();
    let target_nrmse = target_nrmse(params);
    let (mid, mut eb) = centre_and_bound(&st, params)?;
    // Plain Lorenzo is the paper's LBRC (lossless coding of the grid, the form the GPU kernels
    // run); NRMSE / PSNR targets need the exact error budget of the grid (the pipeline then
    // tries feedback grids, whose error it measures by decoding).
    let m = if target_nrmse.is_some() || params.predictor == PredictorChoice::Lorenzo {
        1
    } else {
        FEEDBACK_STEP
    };
    let make = |eb: f64| plan_with(x, || st, mid, eb, m, target_nrmse.is_some());
    let Some(t) = target_nrmse else {
        return make(eb);
    };
    // Over the finite values (specials are kept exactly), as a user computes it.
    let n = st.finite.max(1) as f64;
    for _ in 0..16 {
        let p = make(eb)?;
        let nrmse = if range > 0.0 {
            (p.quantized.sse / n).sqrt() / range
        } else {
            0.0
        };
        if nrmse <= t {
            return Some(p);
        }
        eb *= 0.98 * t / nrmse;
    }
    None
}

/// The grid's centre (the middle of the finite range) and the pointwise bound a chunk with
/// statistics `st` starts from under `params` (for NRMSE / PSNR targets, the bound of a grid
/// whose uniform error meets the target); `None` when the bound is not usable.
fn centre_and_bound(st: &Stats, params: &Params) -> Option<(f64, f64)> {
    let range = st.range();
    let mid = if st.finite == 0 {
        0.0
    } else {
        st.min + range / 2.0
    };
    let eb = match params.mode {
        ErrorMode::Abs => params.bound,
        ErrorMode::Rel => params.bound * range,
        // Uniform quantization error has RMSE step/sqrt(12) = eb/sqrt(3).
        ErrorMode::Nrmse | ErrorMode::Psnr => target_nrmse(params)? * range * 3f64.sqrt(),
    }
    .min(f64::MAX / 4.0);
    (eb >= 0.0).then_some((mid, eb))
}

/// The pointwise bound an absolute or relative bound sets for a chunk with statistics `st`;
/// `None` for NRMSE / PSNR targets and for an unusable bound.
pub fn pointwise_bound(st: &Stats, params: &Params) -> Option<f64> {
    if target_nrmse(params).is_some() {
        return None;
    }
    centre_and_bound(st, params).map(|(_, eb)| eb)
}

/// The grid with no feedback and the pointwise bound [`plan`] chooses for an absolute or
/// relative bound with plain Lorenzo (LBRC), from the chunk's statistics alone, so that the GPU
/// kernels quantize onto the same grid. `None` for NRMSE / PSNR targets (their search decodes,
/// on the CPU) and for an unusable bound.
pub fn lbrc_grid(st: &Stats, params: &Params, single: bool) -> Option<(Grid, f64)> {
    if target_nrmse(params).is_some() {
        return None;
    }
    let (mid, eb) = centre_and_bound(st, params)?;
    let step = lbrc_step(st, mid, eb, single);
    Some((Grid { mid, step }, eb))
}

/// The plan on the grid centred at `mid` for bound `eb` and feedback step `m`; `None` when so
/// many values escape that storing the chunk as it is would be smaller.
pub fn plan_on<T: Element>(x: &[T], mid: f64, eb: f64, m: i64) -> Option<Plan> {
    plan_with(x, || stats(x), mid, eb, m, false)
}

/// [`plan_on`], the chunk's statistics from `st` (asked for by the grid with no feedback only),
/// the SSE summed when `sse` (see [`quantize_bounded`]).
fn plan_with<T: Element>(
    x: &[T],
    st: impl FnOnce() -> Stats,
    mid: f64,
    eb: f64,
    m: i64,
    sse: bool,
) -> Option<Plan> {
    // Each escaped value costs its bytes plus an index: past this many, storing the chunk as
    // it is is smaller.
    let max_escapes = x.len() * T::SIZE / (T::SIZE + 1);
    // The feedback grids keep their own margin and no alignment: they were measured without
    // it (their sizes moved by under 1% both ways with it).
    let step = if m == 1 {
        lbrc_step(&st(), mid, eb, T::SIZE == 4)
    } else if eb > 0.0 {
        2.0 * (eb - rounding_margin(x, eb, m)) / m as f64
    } else {
        1.0
    };
    let grid = Grid { mid, step };
    Some(Plan {
        grid,
        eb,
        m,
        quantized: quantize_bounded(x, grid, eb, m == 1, sse, max_escapes)?,
    })
}

/// The step of the grid with no feedback (LBRC, and the GPU's: [`lbrc_grid`]) for bound `eb`
/// around `mid`: 2 eb less [`lbrc_margin`], then
/// [`aligned_step`]. A zero bound (constant chunk under a relative target) still needs a
/// usable step: every value then sits exactly on index 0 or is escaped.
pub fn lbrc_step(st: &Stats, mid: f64, eb: f64, single: bool) -> f64 {
    if eb > 0.0 {
        aligned_step(2.0 * (eb - lbrc_margin(st, eb, single)), mid, st)
    } else {
        1.0
    }
}

/// `step` shrunk so that the chunk's minimum lies a whole number of steps from the grid's
/// centre `mid` (and so, with the centre halfway, its maximum too): the values at either end
/// of the range then decode to themselves. A relative bound of 10^-k gave that by itself
/// (half the range is 1/(4 · 10^-k) steps of 2 eb), which [`lbrc_margin`] undid: CESM
/// PRECT, whose dry cells all sit at the minimum 0, lost 1.9 dB of PSNR at rel 1e-4 with
/// Lorenzo. Left as it is when the range holds fewer than 64 steps each side (the shrink would
/// cost more than 1/64 of the step) or there is no range.
pub fn aligned_step(step: f64, mid: f64, st: &Stats) -> f64 {
    let half = mid - st.min;
    if st.finite == 0 || !(half > 0.0) || !(step > 0.0) {
        return step;
    }
    let k = (half / step).ceil();
    if (64.0..=1e15).contains(&k) {
        (half / k).min(step)
    } else {
        step
    }
}

/// How much of the bound the grid with no feedback (`m = 1`: LBRC, the GPU's grid) leaves for
/// the decoder's rounding to `f32`: half an ulp of the largest magnitude a value decodes to,
/// `(max |x| + eb) 2^-24`, rounded up. Without it, a value within half an ulp of a cell's edge
/// escaped: on a smooth 512^3 `f32` field at rel 1e-4, 4,213 values in 363 of its 512 blocks,
/// each of which the GPU path then recoded on the CPU. From the range statistics alone, so
/// the GPU computes the same grid. 0 for `f64`, and when it would take more than 1/64 of the
/// bound (about 0.02 bit a value): a tight bound keeps its grid and escapes the rare value.
pub fn lbrc_margin(st: &Stats, eb: f64, single: bool) -> f64 {
    if !single || st.finite == 0 || !(eb > 0.0) {
        return 0.0;
    }
    let mag = st.min.abs().max(st.max.abs()) + eb;
    let margin = mag * 2f64.powi(-24) * (1.0 + 2f64.powi(-20));
    if margin <= eb / 64.0 {
        margin
    } else {
        0.0
    }
}

/// How much of the bound a feedback grid (`m > 1`) leaves for the decoder's last rounding,
/// to `f32`: half an `f32` ulp (`2^-24` of the magnitude) of the chunk's 90th-percentile
/// magnitude, from a sample of up to 4096 values. The feedback spends all that the grid
/// allows, so a value whose rounding went the wrong way escaped (10 bytes each: 6% of CESM
/// TS's chunk at rel 1e-5). A margin for the very largest values would cost more grid than it
/// saves escapes on fields whose magnitudes spread (WRF T at rel 1e-6). 0 for `f64`, for
/// feedback step 1 (the grid alone, LBRC) and when the margin would take more than a quarter
/// of the bound.
fn rounding_margin<T: Element>(x: &[T], eb: f64, m: i64) -> f64 {
    if T::SIZE != 4 || m == 1 || x.is_empty() {
        return 0.0;
    }
    let stride = x.len().div_ceil(4096);
    let mut mags: Vec<f64> = x
        .iter()
        .step_by(stride)
        .map(|v| v.to_f64().abs())
        .filter(|a| a.is_finite())
        .collect();
    if mags.is_empty() {
        return 0.0;
    }
    let k = mags.len() * 9 / 10;
    let (_, q90, _) = mags.select_nth_unstable_by(k, f64::total_cmp);
    let margin = *q90 * 2f64.powi(-24);
    if margin < eb / 4.0 {
        margin
    } else {
        0.0
    }
}

/// `plan`'s grid loosened by `factor`: same centre and feedback step, bound `factor · plan.eb`.
pub fn loosened<T: Element>(x: &[T], plan: &Plan, factor: f64) -> Option<Plan> {
    let eb = plan.eb * factor;
    (eb.is_finite() && eb > 0.0).then_some(())?;
    plan_on(x, plan.grid.mid, eb, plan.m)
}

/// The NRMSE an NRMSE or PSNR target asks for (`None` for a pointwise bound).
pub fn target_nrmse(params: &Params) -> Option<f64> {
    match params.mode {
        ErrorMode::Abs | ErrorMode::Rel => None,
        ErrorMode::Nrmse => Some(params.bound),
        ErrorMode::Psnr => Some(10f64.powf(-params.bound / 20.0)),
    }
}

/// Sum of the squared errors of `y` against `x`, over the finite errors.
pub fn sse<T: Element>(x: &[T], y: &[T]) -> f64 {
    x.iter().zip(y).fold(0.0, |s, (a, b)| {
        let e = a.to_f64() - b.to_f64();
        if e.is_finite() {
            s + e * e
        } else {
            s
        }
    })
}

/// [`sse`] against values given as little-endian bytes (`T::SIZE` a value), the same sum.
pub fn sse_bytes<T: Element>(x: &[T], y: &[u8]) -> f64 {
    x.iter()
        .zip(y.chunks_exact(T::SIZE))
        .fold(0.0, |s, (a, b)| {
            let e = a.to_f64() - T::read_le(b).to_f64();
            if e.is_finite() {
                s + e * e
            } else {
                s
            }
        })
}

/// Root-mean-square error of `y` against `x` over the finite values of `x`, divided by their
/// range (0 for a constant chunk): what NRMSE and PSNR targets measure.
pub fn nrmse<T: Element>(x: &[T], y: &[T]) -> f64 {
    let st = stats(x);
    let range = st.range();
    if !(range > 0.0) {
        return 0.0;
    }
    (sse(x, y) / st.finite.max(1) as f64).sqrt() / range
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of 64-bit words (xorshift64) for the tests' inputs.
    fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn stats_match_the_plain_fold() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        let odd = [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            1e-40,
            f32::MAX,
            -f32::MAX,
        ];
        for n in [0usize, 1, 3, 4, 5, 63, 1000, 70_000, 200_003] {
            for zeros in [false, true] {
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let v = next();
                        let o = odd[(v >> 8) as usize % odd.len()];
                        if v % 53 == 0 && !(zeros && o < 0.0) {
                            o
                        } else if zeros {
                            // The minimum is a zero, of either sign: the ordered fold decides.
                            let z = ((v >> 40) % 5) as f32;
                            if z == 0.0 && (v >> 20) & 1 == 1 {
                                -0.0
                            } else {
                                z
                            }
                        } else {
                            ((v >> 11) as f64 / (1u64 << 53) as f64 * 300.0 + 1.0) as f32
                        }
                    })
                    .collect();
                // What `stats` computed before the lanes: the ordered fold of each part.
                let plain = x
                    .par_chunks(1 << 16)
                    .map(ordered_stats)
                    .reduce(|| EMPTY, merge);
                let (a, b) = (stats(&x), plain);
                assert_eq!(
                    (a.min.to_bits(), a.max.to_bits(), a.finite),
                    (b.min.to_bits(), b.max.to_bits(), b.finite),
                    "n = {n}, zeros {zeros}"
                );
            }
        }
    }

    /// The quantizer's loop as first written (one pass, `f64::round`, escapes pushed as met).
    fn plain<T: Element>(x: &[T], grid: Grid, eb: f64, check: bool) -> (Vec<i32>, Vec<usize>, f64) {
        let inv = 1.0 / grid.step;
        let (mut q, mut esc, mut sse, mut part) = (vec![0; x.len()], Vec::new(), 0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            if i % (1 << 16) == 0 {
                sse += part; // parts of 2^16 values are summed, then added in order
                part = 0.0;
            }
            let xf = v.to_f64();
            let qf = ((xf - grid.mid) * inv).round();
            let ok = !v.is_special() && qf.abs() <= QMAX;
            let qi = if ok { qf as i32 } else { 0 };
            let d = dequantize_f64(qi, grid);
            if ok && (!check || within(xf, d, eb, T::SIZE == 4)) {
                let err = xf - T::from_f64(d).to_f64();
                q[i] = qi;
                part += if check { err * err } else { 0.0 };
            } else {
                esc.push(i);
            }
        }
        (q, esc, sse + part)
    }

    /// The row writer gives the plain per-value bytes, aligned or not, f32 and f64.
    #[test]
    fn dequantize_into_matches_the_plain_loop() {
        fn check<T: Element>(grid: Grid) {
            let q: Vec<i32> = (0..203)
                .map(|i: i32| i.wrapping_mul(0x2c1b_3c6d) >> 4)
                .collect();
            let want: Vec<u8> = q
                .iter()
                .flat_map(|&v| {
                    let mut b = vec![0u8; T::SIZE];
                    dequantize::<T>(v, grid).put_le(&mut b);
                    b
                })
                .collect();
            // Backed by u64s, so offset 0 is aligned for T and offset 1 is not.
            let mut store = vec![0u64; want.len() / 8 + 2];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut store);
            for offset in [0, 1] {
                let out = &mut bytes[offset..offset + want.len()];
                dequantize_into::<T>(&q, grid, out);
                assert_eq!(out, &want[..], "offset {offset}");
            }
        }
        for grid in [
            Grid {
                mid: 0.0,
                step: 1.0,
            },
            Grid {
                mid: 271.3,
                step: 2.0 * 1.7e-3 / 15.0,
            },
            Grid {
                mid: -1e30,
                step: 3.3e22,
            },
        ] {
            check::<f32>(grid);
            check::<f64>(grid);
        }
    }

    #[test]
    fn quantize_matches_the_plain_loop() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            1e-40,
            3e38,
            -3e38,
            0.0,
            -0.0,
        ];
        let x: Vec<f32> = (0..200_000)
            .map(|_| {
                let r = next();
                if r % 97 == 0 {
                    specials[(r >> 8) as usize % specials.len()]
                } else {
                    ((r >> 11) as f64 / (1u64 << 53) as f64 * 2000.0 - 1000.0) as f32
                }
            })
            .collect();
        let wide: Vec<f64> = x.iter().map(|&v| v as f64 * 1.000_000_1).collect();
        for (mid, step) in [(0.0, 1e-3), (3.5, 2e-5), (-7.0, 0.37), (0.0, 1e-9)] {
            let grid = Grid { mid, step };
            for check in [false, true] {
                let eb = step / 2.0;
                let got = quantize(&x, grid, eb, check);
                assert_eq!(
                    (got.q, got.escapes, got.sse),
                    plain(&x, grid, eb, check),
                    "f32 {step} {check}"
                );
                let got = quantize(&wide, grid, eb, check);
                let want = plain(&wide, grid, eb, check);
                assert_eq!(got.escapes, want.1, "f64 escapes {step} {check}");
                assert_eq!(got.q, want.0, "f64 q {step} {check}");
                assert_eq!(got.sse, want.2, "f64 sse {step} {check}");
            }
        }
    }

    #[test]
    fn round_indices_match_round() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        let mut x: Vec<f64> = (0..100_000)
            .map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 4e3)
            .collect();
        // Halves, both signs, and the limit's edges.
        x.extend([
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -0.0,
            999.5,
            -999.5,
            1000.49,
            0.49999999999999994,
        ]);
        for inv in [1.0, 0.37, 3.0] {
            let mut q = vec![0; x.len()];
            let ok = round_indices(&x, inv, 1e3, &mut q);
            let mut want_ok = true;
            for (i, (&v, &q)) in x.iter().zip(&q).enumerate() {
                let r = (v * inv).round();
                let fits = r.abs() <= 1e3;
                want_ok &= fits;
                assert_eq!(q, if fits { r as i32 } else { 0 }, "{i}: {v} * {inv}");
            }
            assert_eq!(ok, want_ok, "{inv}");
            let f: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut qf = vec![0; f.len()];
            round_indices(&f, inv, 1e3, &mut qf);
            for (&v, &q) in f.iter().zip(&qf) {
                let r = (v as f64 * inv).round();
                assert_eq!(q, if r.abs() <= 1e3 { r as i32 } else { 0 });
            }
        }
        let mut q = [7; 3];
        assert!(!round_indices(&[1.0, f64::NAN, 2.0], 1.0, 10.0, &mut q));
        assert_eq!(q, [1, 0, 2]);
        assert!(!round_indices(&[f64::INFINITY], 1.0, 10.0, &mut q[..1]));
    }

    #[test]
    fn f32_difference_rounding_counts() {
        // Find values of opposite sign whose exact difference is within the bound but whose
        // f32 difference rounds above it (what h5diff -d computes); `within` must refuse them.
        let eb = 0.05f64;
        let mut found = 0;
        for i in 1..20000 {
            let x = (i as f32) * 2.5e-6;
            let v = x as f64 - eb;
            let v32 = v as f32;
            let exact = (x as f64 - v32 as f64).abs();
            let single = (x - v32).abs() as f64;
            if exact <= eb && single > eb {
                assert!(!within(x as f64, v, eb, true));
                found += 1;
            } else if exact <= eb && single <= eb {
                assert!(within(x as f64, v, eb, true));
            }
        }
        assert!(found > 0, "no rounding case in the sweep");
    }

    /// The LBRC grid of an f32 chunk has room for the decoder's rounding (no escapes on a
    /// smooth field whose values sit anywhere in their cells) and keeps the minimum, where a
    /// precipitation field's dry cells sit, on the grid.
    #[test]
    fn lbrc_grid_has_no_rounding_escapes_and_keeps_the_minimum() {
        let n = 64 * 64 * 64;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let v = ((i as f32) * 0.001).sin() * 3.0 + ((i / 64) as f32 * 0.01).cos() + 0.5;
                v.max(0.0) // many values exactly at the minimum 0
            })
            .collect();
        let zeros = x.iter().filter(|&&v| v == 0.0).count();
        assert!(zeros > n / 10);
        for rel in [1e-3, 1e-4, 1e-5] {
            let p = Params::rel(rel).with_predictor(PredictorChoice::Lorenzo);
            let plan = plan(&x, &p).unwrap();
            assert!(plan.quantized.escapes.is_empty(), "rel {rel}");
            let st = stats(&x);
            let r = plan.grid.step / plan.eb;
            // At most 1/64 of eb for the rounding, then at most 1/64 of the step to align.
            assert!(
                r < 2.0 && r > 2.0 * (1.0 - 1.0 / 64.0) * (1.0 - 1.0 / 64.0),
                "rel {rel}: step {r} eb"
            );
            let k = (plan.grid.mid - st.min) / plan.grid.step;
            assert!(
                (k - k.round()).abs() < 1e-9,
                "rel {rel}: minimum {k} steps off the centre"
            );
            for (&v, &q) in x.iter().zip(&plan.quantized.q) {
                if v == 0.0 {
                    assert!(dequantize::<f32>(q, plan.grid).abs() < 1e-12);
                }
            }
        }
        // A step that already divides half the range stays; too few steps: unchanged.
        let st = Stats {
            min: 0.0,
            max: 8.0,
            finite: 2,
        };
        assert_eq!(aligned_step(0.04, 4.0, &st), 0.04);
        assert_eq!(aligned_step(0.041, 4.0, &st), 4.0 / 98.0);
        assert_eq!(aligned_step(0.5, 4.0, &st), 0.5);
    }

    #[test]
    fn feedback_grid_leaves_room_for_f32_rounding() {
        // Surface temperatures, 210-320 K, rough, at rel 1e-5: a bound of about 30 f32 ulps
        // there. Coded with feedback (auto), errors that use the whole bound plus the last
        // rounding to f32 escaped about 0.5% of the values.
        let n = 16 * 64 * 64;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let (z, y, xx) = ((i / 4096) as f32, ((i / 64) % 64) as f32, (i % 64) as f32);
                let rough = ((i * 7919 + 13) % 1009) as f32 / 1009.0 - 0.5;
                265.0 + 50.0 * (0.05 * y + 0.1 * z).sin() + 3.0 * (0.3 * xx).cos() + 2.0 * rough
            })
            .collect();
        let p = Params::rel(1e-5);
        let plan = plan(&x, &p).unwrap();
        assert_eq!(plan.m, FEEDBACK_STEP);
        let full = 2.0 * plan.eb / plan.m as f64;
        assert!(plan.grid.step < full && plan.grid.step >= 0.75 * full);
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let info = crate::ChunkInfo::new(crate::DType::F32, &[16, 64, 64]).unwrap();
        let c = crate::compress(&bytes, &info, &p).unwrap();
        let s = crate::inspect(&c).unwrap();
        let esc = s
            .sections
            .iter()
            .find(|(id, _)| *id == crate::format::section::ESCAPES);
        // The escape section: a count, then one varint and 4 bytes per escaped value.
        assert!(esc.map_or(0, |e| e.1) < 8 + n / 2000 * 5, "{s:?}");
        let back = crate::decompress(&c).unwrap();
        for (a, b) in x.iter().zip(back.chunks_exact(4)) {
            let b = f32::from_le_bytes(b.try_into().unwrap());
            assert!(((*a as f64) - b as f64).abs() <= plan.eb);
        }
    }

    #[test]
    fn quantize_meets_bound_and_escapes_specials() {
        let x = [1.0f32, 1.001, f32::NAN, f32::INFINITY, 1e-40, 5.0, -3.25];
        let grid = Grid {
            mid: 1.0,
            step: 0.02,
        };
        let qz = quantize(&x, grid, 0.01, true);
        assert_eq!(qz.escapes, vec![2, 3, 4]);
        for (i, &v) in x.iter().enumerate() {
            if !qz.escapes.contains(&i) {
                let back: f32 = dequantize(qz.q[i], grid);
                assert!((v as f64 - back as f64).abs() <= 0.01);
            }
        }
    }

    #[test]
    fn bound_below_half_ulp_escapes() {
        // f32 near 1e5 has an ulp of 0.0078: a bound of 1e-3 can only be met exactly.
        let x = [100000.01f32, 100000.02, 100000.03];
        let qz = quantize(
            &x,
            Grid {
                mid: 100000.0,
                step: 2e-3,
            },
            1e-3,
            true,
        );
        for (i, &v) in x.iter().enumerate() {
            if !qz.escapes.contains(&i) {
                let back: f32 = dequantize(
                    qz.q[i],
                    Grid {
                        mid: 100000.0,
                        step: 2e-3,
                    },
                );
                assert!((v as f64 - back as f64).abs() <= 1e-3);
            }
        }
    }

    #[test]
    fn nrmse_target_is_met() {
        let x: Vec<f64> = (0..10000).map(|i| (i as f64 * 0.01).sin()).collect();
        for t in [1e-2, 1e-3, 1e-5] {
            let p = plan(&x, &Params::new(ErrorMode::Nrmse, t)).unwrap();
            let n = (p.quantized.sse / x.len() as f64).sqrt() / 2.0;
            assert!(n <= t, "nrmse {n} > {t}");
            assert!(n > t / 4.0, "nrmse {n} far below target {t}: bits wasted");
        }
    }

    #[test]
    fn constant_chunk_relative_bound() {
        let x = vec![3.5f32; 100];
        let p = plan(&x, &Params::rel(1e-3)).unwrap();
        assert!(p.quantized.escapes.is_empty());
        assert!(p.quantized.q.iter().all(|&q| q == 0));
    }
}
