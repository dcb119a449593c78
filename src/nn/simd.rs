//! The NGLR first layer with SSE2 packed multiply-adds (x86_64 only; elsewhere the portable
//! loop in `infer` runs). SSE2 is part of the x86_64 baseline, so every CPU this code runs on
//! has these instructions; the results are exact integers, identical to the portable loop.

// The only unsafe code outside `backend::cuda`: calling SSE2 intrinsics (target-feature
// functions) and unaligned 16-byte loads and stores within slices whose bounds are checked.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

/// First-layer weights in the order `pmaddwd` reads them: for each quad of hidden units and
/// each pair of inputs `(2k, 2k+1)`, the eight weights `w[j][2k], w[j][2k+1]` of the quad's
/// four units `j` in turn.
pub type Quads = Vec<[i16; 8]>;

/// Lays out `w1` (`hidden x 16`, row-major) for [`first_layer`], padding the hidden units
/// to a multiple of four with zero weights.
pub fn quads(w1: &[i16], hidden: usize) -> Quads {
    let n = hidden.div_ceil(4);
    let mut q = vec![[0i16; 8]; n * 8];
    for j in 0..hidden {
        for k in 0..8 {
            let v = &mut q[(j / 4) * 8 + k];
            v[2 * (j % 4)] = w1[j * 16 + 2 * k];
            v[2 * (j % 4) + 1] = w1[j * 16 + 2 * k + 1];
        }
    }
    q
}

/// `out[j] = sum_i w[j][i] x[i]` for every (padded) hidden unit `j`. Weights are at most
/// 32767 in magnitude and inputs at most 2^14, so a product is below 2^29 and the four that
/// one i32 lane adds up (two `pmaddwd` pairs) stay below 2^31; the lanes are then widened to
/// i64. `out.len()` must be `4 * quads.len() / 8`.
#[inline]
pub fn first_layer(quads: &[[i16; 8]], x: &[i16; 16], out: &mut [i64]) {
    debug_assert_eq!(
        out.len() * 2,
        quads.len(),
        "four outputs per eight weight vectors"
    );
    // SAFETY: SSE2 is enabled on every x86_64 target, and `first_layer_sse2` only touches
    // memory through the slices it is given, within their lengths.
    unsafe { first_layer_sse2(quads, x, out) }
}

#[target_feature(enable = "sse2")]
#[inline]
fn first_layer_sse2(quads: &[[i16; 8]], x: &[i16; 16], out: &mut [i64]) {
    let xp: [__m128i; 8] = std::array::from_fn(|k| {
        let lo = x[2 * k] as u16 as u32;
        let hi = x[2 * k + 1] as u16 as u32;
        _mm_set1_epi32((lo | hi << 16) as i32)
    });
    for (w, o) in quads.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let mut lo = _mm_setzero_si128();
        let mut hi = _mm_setzero_si128();
        for k in (0..8).step_by(2) {
            // SAFETY: each `w[k]` is 16 bytes; unaligned loads are allowed.
            let (w0, w1) = unsafe {
                (
                    _mm_loadu_si128(w[k].as_ptr().cast()),
                    _mm_loadu_si128(w[k + 1].as_ptr().cast()),
                )
            };
            let s = _mm_add_epi32(_mm_madd_epi16(w0, xp[k]), _mm_madd_epi16(w1, xp[k + 1]));
            let sign = _mm_srai_epi32(s, 31);
            lo = _mm_add_epi64(lo, _mm_unpacklo_epi32(s, sign));
            hi = _mm_add_epi64(hi, _mm_unpackhi_epi32(s, sign));
        }
        let mut sums = [0i64; 4];
        // SAFETY: `sums` is 32 bytes, two unaligned 16-byte stores.
        unsafe {
            _mm_storeu_si128(sums.as_mut_ptr().cast(), lo);
            _mm_storeu_si128(sums.as_mut_ptr().add(2).cast(), hi);
        }
        o.copy_from_slice(&sums);
    }
}
