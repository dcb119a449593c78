//! The NeurLZ convolutions' inner loops, compiled twice on x86_64: for the baseline (SSE2)
//! and for AVX2, picked at run time. Both builds run the same operations in the same order
//! (no fused multiply-add, the same eight lanes in [`dot`]), so their results are identical
//! to the bit; the AVX2 build only does eight lanes per instruction instead of four.

// Calling a `#[target_feature]` function is unsafe: the caller must know the CPU has the
// feature. Each call below is guarded by `is_x86_feature_detected!`.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// `dst[i] += a * x[i]` over the shorter of the two.
#[inline]
pub fn axpy(dst: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { axpy_avx2(dst, a, x) };
    }
    axpy_any(dst, a, x)
}

/// `sum a[i] b[i]` over the shorter of the two, in eight independent lanes (so that it
/// vectorizes: one running sum is a dependency chain the compiler may not reorder), then
/// the lanes in order, then the tail.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_any(a, b)
}

/// `sum a[i] b[i]` in `f64` over the shorter of the two, in eight independent lanes, then
/// the lanes in order, then the tail (the same order in every build).
#[inline]
pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { dot64_avx2(a, b) };
    }
    dot64_any(a, b)
}

/// `dst[x] += sum_k w[k] taps[k][x]` for the nine taps of a 3x3 convolution, in `f64` (the
/// integer taps are converted exactly). Callers keep every term an exact integer below 2^53,
/// so the order does not matter.
#[inline]
pub fn taps9(dst: &mut [f64], w: &[f64; 9], taps: &[&[i32]; 9]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { taps9_avx2(dst, w, taps) };
    }
    taps9_any(dst, w, taps)
}

#[inline(always)]
fn axpy_any(dst: &mut [f32], a: f32, x: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(x) {
        *d += a * v;
    }
}

#[inline(always)]
fn dot_any(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// The eight-lane dot product of [`dot`] and [`dot64`], for either float type.
#[inline(always)]
fn dot_lanes<T>(a: &[T], b: &[T]) -> T
where
    T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + std::iter::Sum,
{
    let n = a.len().min(b.len());
    let (a, b) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let tail: T = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    let mut lanes = [T::default(); 8];
    for (x, y) in a.zip(b) {
        for j in 0..8 {
            lanes[j] = lanes[j] + x[j] * y[j];
        }
    }
    lanes.iter().copied().sum::<T>() + tail
}

#[inline(always)]
fn dot64_any(a: &[f64], b: &[f64]) -> f64 {
    dot_lanes(a, b)
}

#[inline(always)]
fn taps9_any(dst: &mut [f64], w: &[f64; 9], taps: &[&[i32]; 9]) {
    let n = taps.iter().fold(dst.len(), |n, t| n.min(t.len()));
    let dst = &mut dst[..n];
    let t: [&[i32]; 9] = std::array::from_fn(|k| &taps[k][..n]);
    for x in 0..n {
        dst[x] += w[0] * t[0][x] as f64
            + w[1] * t[1][x] as f64
            + w[2] * t[2][x] as f64
            + w[3] * t[3][x] as f64
            + w[4] * t[4][x] as f64
            + w[5] * t[5][x] as f64
            + w[6] * t[6][x] as f64
            + w[7] * t[7][x] as f64
            + w[8] * t[8][x] as f64;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_avx2(dst: &mut [f32], a: f32, x: &[f32]) {
    axpy_any(dst, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_any(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot64_avx2(a: &[f64], b: &[f64]) -> f64 {
    dot64_any(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn taps9_avx2(dst: &mut [f64], w: &[f64; 9], taps: &[&[i32]; 9]) {
    taps9_any(dst, w, taps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched kernels give exactly the portable results (on a CPU with AVX2 this
    /// compares the two builds).
    #[test]
    fn same_bits_as_portable() {
        let mut s = 7u32;
        let mut r = move || {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for n in [0, 1, 7, 8, 9, 31, 100, 1001] {
            let a: Vec<f32> = (0..n).map(|_| r()).collect();
            let b: Vec<f32> = (0..n).map(|_| r() * 1e3).collect();
            assert_eq!(dot(&a, &b).to_bits(), dot_any(&a, &b).to_bits());
            let (a64, b64): (Vec<f64>, Vec<f64>) = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64, y as f64 * 0.1))
                .unzip();
            assert_eq!(dot64(&a64, &b64).to_bits(), dot64_any(&a64, &b64).to_bits());
            let (mut d1, mut d2) = (b.clone(), b.clone());
            axpy(&mut d1, 0.37, &a);
            axpy_any(&mut d2, 0.37, &a);
            assert_eq!(d1, d2);
            let rows: Vec<Vec<i32>> = (0..9)
                .map(|_| (0..n).map(|_| (r() * 2e6).round() as i32).collect())
                .collect();
            let taps: [&[i32]; 9] = std::array::from_fn(|k| rows[k].as_slice());
            let w: [f64; 9] = std::array::from_fn(|k| k as f64 - 4.0);
            let (mut e1, mut e2) = (vec![1.0; n], vec![1.0; n]);
            taps9(&mut e1, &w, &taps);
            taps9_any(&mut e2, &w, &taps);
            assert_eq!(e1, e2);
        }
    }
}
