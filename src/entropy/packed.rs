//! The GPU-native coder: zigzag codes in groups of 32, each group stored at the bit width of
//! its largest code (the fixed-length design of cuSZp). Groups are independent and carry no
//! coder state, so a GPU codes or decodes all of them at once (one warp a group, bit-planes by
//! ballot) and the CPU runs the same simple loops. It gives up ratio against the range coder
//! (no context modelling) for a coder that runs at memory speed on a GPU.
//!
//! Block payload for `n` codes in `G = ceil(n / 32)` groups:
//! - `G` bytes, each group's width `w` (0..=32), then zero bytes up to a multiple of 4;
//! - for each group in order, `w` little-endian u32 words: word `b` holds bit `b` of the
//!   group's codes, bit `j` of the word for code `j` (codes past `n` are 0).
//!
//! Every payload is a multiple of 4 bytes long, so payloads laid end to end keep their words
//! aligned (what the GPU decoder relies on).

use super::zigzag;
use crate::error::{ensure, Error, Result};

/// Codes a group holds.
pub const GROUP: usize = 32;

/// The width bytes' length with its padding: `G` rounded up to a multiple of 4.
pub fn widths_len(n: usize) -> usize {
    n.div_ceil(GROUP).next_multiple_of(4)
}

/// The bit width of a group of codes (0 for all zeros).
fn width(codes: &[u32; GROUP]) -> u32 {
    32 - codes.iter().fold(0, |a, &c| a | c).leading_zeros()
}

/// The payload of a block of residuals `r` (block order).
pub fn encode(r: &[i32]) -> Vec<u8> {
    lanes::encode(r)
}

/// [`encode`], writing each group's planes with `planes`.
#[inline(always)]
fn encode_with(r: &[i32], planes: impl Fn(&[u32; GROUP], u32, &mut Vec<u8>)) -> Vec<u8> {
    let groups = r.len().div_ceil(GROUP);
    let head = widths_len(r.len());
    let mut out = vec![0u8; head];
    out.reserve(groups * 8);
    for (g, chunk) in r.chunks(GROUP).enumerate() {
        let mut codes = [0u32; GROUP];
        for (c, &v) in codes.iter_mut().zip(chunk) {
            *c = zigzag::encode(v);
        }
        let w = width(&codes);
        out[g] = w as u8;
        planes(&codes, w, &mut out);
    }
    out
}

/// The payload's length for `r` without writing it (what the encoder's trials compare).
pub fn encoded_len(r: &[i32]) -> usize {
    let words: usize = r
        .chunks(GROUP)
        .map(|chunk| {
            let or = chunk.iter().fold(0u32, |a, &v| a | zigzag::encode(v));
            (32 - or.leading_zeros()) as usize
        })
        .sum();
    widths_len(r.len()) + 4 * words
}

/// Checks a payload for a block of `n` codes: widths at most 32, zero padding, and the length
/// the widths call for. Returns the total number of words.
pub fn check(bytes: &[u8], n: usize) -> Result<usize> {
    let groups = n.div_ceil(GROUP);
    let head = widths_len(n);
    ensure!(
        bytes.len() >= head,
        Error::Truncated {
            what: "packed block"
        }
    );
    let mut words = 0usize;
    for &w in &bytes[..groups] {
        ensure!(
            w <= 32,
            Error::Corrupt(format!("packed block declares a {w}-bit group"))
        );
        words += w as usize;
    }
    ensure!(
        bytes[groups..head].iter().all(|&p| p == 0),
        Error::Corrupt("packed block padding is not zero".into())
    );
    let expected = head + 4 * words;
    ensure!(
        bytes.len() == expected,
        Error::Corrupt(format!(
            "packed block is {} bytes, its widths need {expected}",
            bytes.len()
        ))
    );
    Ok(words)
}

/// Decodes a payload into `r` (length = block size).
pub fn decode(bytes: &[u8], r: &mut [i32]) -> Result<()> {
    check(bytes, r.len())?;
    lanes::decode(bytes, r);
    Ok(())
}

/// [`decode`] of a checked payload, reading each group's codes with `codes`.
#[inline(always)]
fn decode_with(bytes: &[u8], r: &mut [i32], codes: impl Fn(&[u8]) -> [u32; GROUP]) {
    let mut pos = widths_len(r.len());
    for (g, out) in r.chunks_mut(GROUP).enumerate() {
        let w = 4 * bytes[g] as usize;
        let codes = codes(&bytes[pos..pos + w]);
        pos += w;
        for (o, &c) in out.iter_mut().zip(&codes) {
            *o = zigzag::decode(c);
        }
    }
}

/// A group's codes to bit-planes and back. On x86-64 eight codes at a time with AVX2 where the
/// CPU has it (checked once a block), else four at a time with SSE2, which every x86-64 CPU
/// has; elsewhere one at a time. The words are the same (test `lanes_match_the_scalar_loops`).
#[cfg(target_arch = "x86_64")]
// Unsafe only to call SSE2 and AVX2 intrinsics (AVX2 behind a run-time check) and for
// unaligned loads and stores within the group's 32 codes.
#[allow(unsafe_code)]
mod lanes {
    use super::GROUP;
    use std::arch::x86_64::*;

    pub(super) fn encode(r: &[i32]) -> Vec<u8> {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { encode_avx2(r) };
        }
        super::encode_with(r, planes)
    }

    pub(super) fn decode(bytes: &[u8], r: &mut [i32]) {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { decode_avx2(bytes, r) };
        }
        super::decode_with(bytes, r, codes)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn encode_avx2(r: &[i32]) -> Vec<u8> {
        // SAFETY: this function runs only where the CPU has AVX2.
        super::encode_with(r, |c, w, out| unsafe { planes_avx2(c, w, out) })
    }

    #[target_feature(enable = "avx2")]
    unsafe fn decode_avx2(bytes: &[u8], r: &mut [i32]) {
        // SAFETY: this function runs only where the CPU has AVX2.
        super::decode_with(bytes, r, |p| unsafe { codes_avx2(p) })
    }

    /// [`planes`] eight codes a vector: bit `b` of each to its sign bit, eight signs a movemask.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn planes_avx2(codes: &[u32; GROUP], w: u32, out: &mut Vec<u8>) {
        // SAFETY: the loads read `codes` within its 32 values.
        let v: [__m256i; 4] = std::array::from_fn(|k| unsafe {
            _mm256_loadu_si256(codes.as_ptr().add(8 * k).cast())
        });
        for b in 0..w {
            let up = _mm_cvtsi32_si128(31 - b as i32);
            let mut word = 0u32;
            for (k, &x) in v.iter().enumerate() {
                let signs = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sll_epi32(x, up)));
                word |= (signs as u32) << (8 * k);
            }
            out.extend_from_slice(&word.to_le_bytes());
        }
    }

    /// [`codes`] eight codes a vector: each lane shifts the plane word right by its own index.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn codes_avx2(planes: &[u8]) -> [u32; GROUP] {
        let mut codes = [0u32; GROUP];
        let index: [__m256i; 4] = std::array::from_fn(|k| {
            let j = 8 * k as i32;
            _mm256_setr_epi32(j, j + 1, j + 2, j + 3, j + 4, j + 5, j + 6, j + 7)
        });
        let one = _mm256_set1_epi32(1);
        let mut acc = [_mm256_setzero_si256(); 4];
        for (b, word) in planes.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            let all = _mm256_set1_epi32(word as i32);
            let at = _mm_cvtsi32_si128(b as i32);
            for (a, &j) in acc.iter_mut().zip(&index) {
                let bit = _mm256_and_si256(_mm256_srlv_epi32(all, j), one);
                *a = _mm256_or_si256(*a, _mm256_sll_epi32(bit, at));
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: the stores write `codes` within its 32 values.
            unsafe { _mm256_storeu_si256(codes.as_mut_ptr().add(8 * k).cast(), *a) };
        }
        codes
    }

    /// Appends planes `0..w` of `codes` (word `b`: bit `j` is bit `b` of code `j`).
    pub(super) fn planes(codes: &[u32; GROUP], w: u32, out: &mut Vec<u8>) {
        // SAFETY: SSE2 is part of x86-64; the loads read `codes` within its 32 values.
        unsafe {
            let v: [__m128i; 8] =
                std::array::from_fn(|k| _mm_loadu_si128(codes.as_ptr().add(4 * k).cast()));
            for b in 0..w {
                // Bit `b` of each code to its sign bit, then four signs a movemask.
                let up = _mm_cvtsi32_si128(31 - b as i32);
                let mut word = 0u32;
                for (k, &x) in v.iter().enumerate() {
                    let signs = _mm_movemask_ps(_mm_castsi128_ps(_mm_sll_epi32(x, up)));
                    word |= (signs as u32) << (4 * k);
                }
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// The codes of a group from its plane words (`planes.len()` = 4 x width).
    pub(super) fn codes(planes: &[u8]) -> [u32; GROUP] {
        let mut codes = [0u32; GROUP];
        // SAFETY: SSE2 is part of x86-64; the stores write `codes` within its 32 values.
        unsafe {
            let lane_bit: [__m128i; 8] = std::array::from_fn(|k| {
                _mm_setr_epi32(1 << (4 * k), 2 << (4 * k), 4 << (4 * k), 8 << (4 * k))
            });
            let mut acc = [_mm_setzero_si128(); 8];
            for (b, word) in planes.chunks_exact(4).enumerate() {
                let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                let all = _mm_set1_epi32(word as i32);
                let bit = _mm_set1_epi32((1u32 << b) as i32);
                for (a, &m) in acc.iter_mut().zip(&lane_bit) {
                    // Lanes whose bit of the word is set get bit `b`.
                    let set = _mm_cmpeq_epi32(_mm_and_si128(all, m), m);
                    *a = _mm_or_si128(*a, _mm_and_si128(set, bit));
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm_storeu_si128(codes.as_mut_ptr().add(4 * k).cast(), *a);
            }
        }
        codes
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod lanes {
    use super::scalar::{codes, planes};

    pub(super) fn encode(r: &[i32]) -> Vec<u8> {
        super::encode_with(r, planes)
    }

    pub(super) fn decode(bytes: &[u8], r: &mut [i32]) {
        super::decode_with(bytes, r, codes)
    }
}

/// The plain loops: what [`lanes`] computes, one code at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod scalar {
    use super::GROUP;

    pub(super) fn planes(codes: &[u32; GROUP], w: u32, out: &mut Vec<u8>) {
        for b in 0..w {
            let word = codes
                .iter()
                .enumerate()
                .fold(0u32, |w, (j, &c)| w | (((c >> b) & 1) << j));
            out.extend_from_slice(&word.to_le_bytes());
        }
    }

    pub(super) fn codes(planes: &[u8]) -> [u32; GROUP] {
        let mut codes = [0u32; GROUP];
        for (b, word) in planes.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            for (j, c) in codes.iter_mut().enumerate() {
                *c |= ((word >> j) & 1) << b;
            }
        }
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_any_length() {
        for n in [0usize, 1, 31, 32, 33, 100, 1000, 4097] {
            let r: Vec<i32> = (0..n as i64)
                .map(|i| ((i * 7919 % 2001) - 1000) as i32 * if i % 97 == 0 { 70_000 } else { 1 })
                .collect();
            let bytes = encode(&r);
            assert_eq!(bytes.len(), encoded_len(&r));
            assert_eq!(bytes.len() % 4, 0);
            let mut back = vec![7; n];
            decode(&bytes, &mut back).unwrap();
            assert_eq!(back, r, "n = {n}");
        }
    }

    #[test]
    fn lanes_match_the_scalar_loops() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for w in 0..=32u32 {
            for _ in 0..20 {
                let codes: [u32; GROUP] = std::array::from_fn(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if w == 32 {
                        s as u32
                    } else {
                        (s as u32) & ((1u32 << w) - 1)
                    }
                });
                let (mut a, mut b) = (Vec::new(), Vec::new());
                lanes::planes(&codes, w, &mut a);
                scalar::planes(&codes, w, &mut b);
                assert_eq!(a, b, "width {w}");
                assert_eq!(lanes::codes(&a), codes, "width {w}");
                assert_eq!(scalar::codes(&a), codes, "width {w}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut c = Vec::new();
                    // SAFETY: the CPU has AVX2 (checked just above).
                    #[allow(unsafe_code)]
                    unsafe {
                        lanes::planes_avx2(&codes, w, &mut c);
                        assert_eq!(lanes::codes_avx2(&a), codes, "width {w}");
                    }
                    assert_eq!(c, b, "width {w}");
                }
            }
        }
    }

    #[test]
    fn extremes_take_32_bits() {
        let r = [i32::MIN, i32::MAX, 0, -1];
        let bytes = encode(&r);
        assert_eq!(bytes[0], 32);
        assert_eq!(bytes.len(), 4 + 32 * 4);
        let mut back = [0; 4];
        decode(&bytes, &mut back).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn layout_is_the_documented_one() {
        // Codes 0, 1 (zigzag of -1), 2 (of 1), 3 (of -2): width 2; plane 0 = codes 1 and 3,
        // plane 1 = codes 2 and 3.
        let bytes = encode(&[0, -1, 1, -2]);
        assert_eq!(bytes, [2, 0, 0, 0, 0b1010, 0, 0, 0, 0b1100, 0, 0, 0]);
        // All zeros: widths only.
        assert_eq!(encode(&[0; 40]), [0, 0, 0, 0]);
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        let r: Vec<i32> = (0..70).map(|i| i - 35).collect();
        let good = encode(&r);
        let mut out = vec![0; 70];
        let mut wide = good.clone();
        wide[1] = 33;
        let e = decode(&wide, &mut out).unwrap_err().to_string();
        assert!(e.contains("33-bit group"), "{e}");
        let mut pad = good.clone();
        pad[3] = 1;
        let e = decode(&pad, &mut out).unwrap_err().to_string();
        assert!(e.contains("padding"), "{e}");
        let e = decode(&good[..good.len() - 4], &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("widths need"), "{e}");
        let e = decode(&good[..2], &mut out).unwrap_err().to_string();
        assert!(e.contains("packed block"), "{e}");
        let mut longer = good.clone();
        longer.extend([0; 4]);
        assert!(decode(&longer, &mut out).is_err());
    }
}
