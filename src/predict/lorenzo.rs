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

/// The inverse of [`differences`], in place: a prefix sum along x, then the rows above.
fn prefix_sums(r: &mut [i32], ext: [usize; 3]) {
    let [nz, ny, nx] = ext;
    let plane = ny * nx;
    for z in 0..nz {
        for y in 0..ny {
            let cur = (z * ny + y) * nx;
            let (done, rest) = r.split_at_mut(cur);
            let row = &mut rest[..nx];
            let mut acc = 0i32;
            for v in row.iter_mut() {
                acc = acc.wrapping_add(*v);
                *v = acc;
            }
            if y > 0 {
                add_row(row, &done[cur - nx..cur]);
            }
            if z > 0 {
                add_row(row, &done[cur - plane..cur - plane + nx]);
                if y > 0 {
                    sub_row(row, &done[cur - plane - nx..cur - plane]);
                }
            }
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
