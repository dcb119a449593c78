//! Integer 3D Lorenzo prediction: each index is predicted from the seven neighbours that
//! precede it in C order (`q[x-1] + q[y-1] + q[z-1] - q[x-1,y-1] - ... + q[x-1,y-1,z-1]`).
//! With feedback step 1 the code is the mixed third difference `D_x D_y D_z q`, computed a row
//! at a time, and decoding is three prefix sums. With one or two non-trivial dimensions it is
//! the 1D or 2D Lorenzo predictor.

use super::{BlockEncoder, Predictor};

pub const ID: u8 = 1;

pub struct Lorenzo;

impl Predictor for Lorenzo {
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
        if blk.m == 1 && !blk.escaped.contains(&true) {
            // Lossless on the grid: the quantizer already checked every reconstruction.
            differences(q, ext, codes);
            return;
        }
        let nx = ext[2];
        for_each_row(q, ext, |q, cur, rows| {
            for x in 0..nx {
                let pred = row_prediction(&q[cur..cur + nx], rows, x);
                codes[cur + x] = blk.settle(q, cur + x, pred);
            }
        });
    }

    fn decode(&self, codes: &mut [i32], ext: [usize; 3], m: i32) {
        if m == 1 {
            prefix_sums(codes, ext);
            return;
        }
        let nx = ext[2];
        let m = m as i64;
        for_each_row(codes, ext, |buf, cur, rows| {
            for x in 0..nx {
                let pred = row_prediction(&buf[cur..cur + nx], rows, x);
                buf[cur + x] = (pred + buf[cur + x] as i64 * m) as i32;
            }
        });
    }
}

/// The three earlier rows a Lorenzo prediction reads: (z, y-1), (z-1, y), (z-1, y-1).
pub(super) type Rows = [Vec<i32>; 3];

/// Calls `visit(buf, row_start, earlier_rows)` for each row of the block in C order; rows
/// outside the block are zeros. The earlier rows are copies, so `visit` may write the current
/// row of `buf`.
pub(super) fn for_each_row(
    buf: &mut [i32],
    ext: [usize; 3],
    mut visit: impl FnMut(&mut [i32], usize, &Rows),
) {
    let [nz, ny, nx] = ext;
    let plane = ny * nx;
    let mut rows: Rows = [vec![0; nx], vec![0; nx], vec![0; nx]];
    for z in 0..nz {
        for y in 0..ny {
            let cur = (z * ny + y) * nx;
            let copy = |dst: &mut Vec<i32>, present: bool, start: usize| {
                if present {
                    dst.copy_from_slice(&buf[start..start + nx]);
                } else {
                    dst.fill(0);
                }
            };
            copy(&mut rows[0], y > 0, cur.wrapping_sub(nx));
            copy(&mut rows[1], z > 0, cur.wrapping_sub(plane));
            copy(&mut rows[2], z > 0 && y > 0, cur.wrapping_sub(plane + nx));
            visit(buf, cur, &rows);
        }
    }
}

/// Lorenzo prediction of element `x` of the current row (earlier elements already final).
#[inline(always)]
pub(super) fn row_prediction(cur: &[i32], [up, front, corner]: &Rows, x: usize) -> i64 {
    let mut p = up[x] as i64 + front[x] as i64 - corner[x] as i64;
    if x > 0 {
        p += cur[x - 1] as i64 - up[x - 1] as i64 - front[x - 1] as i64 + corner[x - 1] as i64;
    }
    p
}

/// The feedback-free (step 1) form, in the data-parallel shape the GPU kernels mirror.
impl Lorenzo {
    /// Codes of grid indices `q` with feedback step 1: `r = D_x D_y D_z q`.
    pub fn residuals(&self, q: &[i32], ext: [usize; 3], r: &mut [i32]) {
        differences(q, ext, r);
    }
    /// The inverse of [`Lorenzo::residuals`], in place.
    pub fn reconstruct(&self, r: &mut [i32], ext: [usize; 3]) {
        prefix_sums(r, ext);
    }
    /// Puts the prediction in place of escaped indices (block-local, increasing) so they code 0.
    pub fn fill_escapes(&self, q: &mut [i32], ext: [usize; 3], escapes: &[usize]) {
        for &i in escapes {
            let pos = [i / (ext[1] * ext[2]), (i / ext[2]) % ext[1], i % ext[2]];
            q[i] = predict_at(q, ext, pos) as i32;
        }
    }
}

/// The Lorenzo prediction of the index at `pos` from the indices before it in C order.
#[inline]
pub(crate) fn predict_at(q: &[i32], ext: [usize; 3], pos: [usize; 3]) -> i64 {
    let [_, ny, nx] = ext;
    let [z, y, x] = pos;
    let at = |dz: usize, dy: usize, dx: usize| -> i64 {
        if z < dz || y < dy || x < dx {
            0
        } else {
            q[((z - dz) * ny + (y - dy)) * nx + (x - dx)] as i64
        }
    };
    at(0, 0, 1) + at(0, 1, 0) + at(1, 0, 0) - at(0, 1, 1) - at(1, 0, 1) - at(1, 1, 0) + at(1, 1, 1)
}

/// `r = D_x D_y D_z q` (zero outside the block), a row at a time.
fn differences(q: &[i32], ext: [usize; 3], r: &mut [i32]) {
    let [nz, ny, nx] = ext;
    let plane = ny * nx;
    let mut d = vec![0i32; nx];
    for z in 0..nz {
        for y in 0..ny {
            let cur = (z * ny + y) * nx;
            d.copy_from_slice(&q[cur..cur + nx]);
            if y > 0 {
                sub_row(&mut d, &q[cur - nx..cur]);
            }
            if z > 0 {
                sub_row(&mut d, &q[cur - plane..cur - plane + nx]);
                if y > 0 {
                    add_row(&mut d, &q[cur - plane - nx..cur - plane]);
                }
            }
            let mut prev = 0i32;
            for (o, &v) in r[cur..cur + nx].iter_mut().zip(&d) {
                *o = v.wrapping_sub(prev);
                prev = v;
            }
        }
    }
}

/// The inverse of [`differences`], in place: each row is its own prefix sum along x plus
/// `up + front - corner`, the rows above it, already decoded.
fn prefix_sums(r: &mut [i32], ext: [usize; 3]) {
    let [nz, ny, nx] = ext;
    let plane = ny * nx;
    let zeros = vec![0i32; nx];
    let mut above = vec![0i32; nx];
    for z in 0..nz {
        for y in 0..ny {
            let cur = (z * ny + y) * nx;
            let (done, rest) = r.split_at_mut(cur);
            let row = &mut rest[..nx];
            let above: &[i32] = match (y > 0, z > 0) {
                (false, false) => &zeros,
                (true, false) => &done[cur - nx..cur],
                (false, true) => &done[cur - plane..cur - plane + nx],
                (true, true) => {
                    let (up, front) = (&done[cur - nx..cur], &done[cur - plane..]);
                    let corner = &done[cur - plane - nx..cur - plane];
                    for (((a, &u), &f), &c) in above.iter_mut().zip(up).zip(front).zip(corner) {
                        *a = u.wrapping_add(f).wrapping_sub(c);
                    }
                    &above
                }
            };
            lanes::scan_add(row, above);
        }
    }
}

/// `row[i] = row[0] + .. + row[i] + above[i]` (wrapping). On x86-64 four at a time with SSE2
/// (a prefix sum inside each group of four by two shifted adds, carried from group to group),
/// which every x86-64 CPU has; elsewhere one at a time. The same sums (test
/// `scan_add_is_the_running_sum`).
#[cfg(target_arch = "x86_64")]
// Unsafe only for unaligned 16-byte loads and stores within the rows' groups of four.
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    pub(super) fn scan_add(row: &mut [i32], above: &[i32]) {
        let mut rows = row.chunks_exact_mut(4);
        let mut aboves = above.chunks_exact(4);
        // SAFETY (every block here): SSE2 is part of x86-64.
        let mut carry = unsafe { _mm_setzero_si128() };
        for (g, a) in (&mut rows).zip(&mut aboves) {
            // SAFETY: also `g` and `a` hold four i32 each (chunks_exact): unaligned loads and
            // a store within them.
            unsafe {
                let mut x = _mm_loadu_si128(g.as_ptr().cast());
                x = _mm_add_epi32(x, _mm_slli_si128::<4>(x));
                x = _mm_add_epi32(x, _mm_slli_si128::<8>(x));
                x = _mm_add_epi32(x, carry);
                carry = _mm_shuffle_epi32::<0xff>(x);
                let y = _mm_add_epi32(x, _mm_loadu_si128(a.as_ptr().cast()));
                _mm_storeu_si128(g.as_mut_ptr().cast(), y);
            }
        }
        let acc = unsafe { _mm_cvtsi128_si32(carry) };
        super::scalar::scan_from(acc, rows.into_remainder(), aboves.remainder());
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod lanes {
    pub(super) fn scan_add(row: &mut [i32], above: &[i32]) {
        super::scalar::scan_from(0, row, above);
    }
}

mod scalar {
    /// The running sum of `row` from `acc` on, plus `above`, one at a time.
    pub(super) fn scan_from(mut acc: i32, row: &mut [i32], above: &[i32]) {
        for (o, &a) in row.iter_mut().zip(above) {
            acc = acc.wrapping_add(*o);
            *o = acc.wrapping_add(a);
        }
    }
}

#[inline]
fn add_row(dst: &mut [i32], src: &[i32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = d.wrapping_add(s);
    }
}

#[inline]
fn sub_row(dst: &mut [i32], src: &[i32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = d.wrapping_sub(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::testing::round_trip;

    fn field(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 + (i as f64 * 0.01).sin() * 100.0)
            .collect()
    }

    #[test]
    fn round_trips_every_rank_and_feedback() {
        for ext in [[1, 1, 1], [1, 1, 17], [1, 9, 13], [5, 6, 7], [40, 1, 3]] {
            let x = field(ext.iter().product());
            for m in [1, 3, 15] {
                round_trip(&Lorenzo, &x, ext, m, 0.5);
            }
        }
    }

    #[test]
    fn differences_match_pointwise_prediction() {
        let ext = [4, 5, 6];
        let q: Vec<i32> = (0..120).map(|i| (i * i % 97) - 40).collect();
        let mut r = vec![0; 120];
        differences(&q, ext, &mut r);
        for i in 0..120 {
            let pos = [i / 30, (i / 6) % 5, i % 6];
            assert_eq!(r[i] as i64, q[i] as i64 - predict_at(&q, ext, pos));
        }
        prefix_sums(&mut r, ext);
        assert_eq!(r, q);
    }

    /// The grouped prefix sum is the plain running sum at every length around the group of 8,
    /// wrapping included.
    #[test]
    fn scan_add_is_the_running_sum() {
        for n in [0i32, 1, 7, 8, 9, 16, 17, 31, 64, 100] {
            let row: Vec<i32> = (0..n)
                .map(|i| i.wrapping_mul(0x3b9a_ca07) ^ (i << 20))
                .collect();
            let above: Vec<i32> = (0..n).map(|i| i * 7 - 300).collect();
            let mut got = row.clone();
            lanes::scan_add(&mut got, &above);
            let mut acc = 0i32;
            let want: Vec<i32> = row
                .iter()
                .zip(&above)
                .map(|(&v, &a)| {
                    acc = acc.wrapping_add(v);
                    acc.wrapping_add(a)
                })
                .collect();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn linear_field_has_zero_interior_codes() {
        let ext = [4, 5, 6];
        let q: Vec<i32> = (0..120)
            .map(|i| {
                let (z, y, x) = (i / 30, (i / 6) % 5, i % 6);
                3 * z + 5 * y - 2 * x + 1
            })
            .collect();
        let mut r = vec![0; 120];
        differences(&q, ext, &mut r);
        for z in 1..4 {
            for y in 1..5 {
                for x in 1..6 {
                    assert_eq!(r[(z * 5 + y) * 6 + x], 0);
                }
            }
        }
    }
}
