//! Integer 3D Lorenzo prediction: the residual is the mixed third difference
//! `r = D_x D_y D_z q`, so decoding is three prefix sums. With one or two non-trivial dimensions
//! it is the 1D or 2D Lorenzo predictor.

use super::{clamp_index, Predictor};

pub const ID: u8 = 1;

pub struct Lorenzo;

impl Predictor for Lorenzo {
    fn id(&self) -> u8 {
        ID
    }

    fn residuals(&self, q: &[i32], ext: [usize; 3], r: &mut [i32]) {
        let [nz, ny, nx] = ext;
        let plane = ny * nx;
        let mut d = vec![0i32; nx];
        for z in 0..nz {
            for y in 0..ny {
                let cur = (z * ny + y) * nx;
                let row = &q[cur..cur + nx];
                d.copy_from_slice(row);
                if y > 0 {
                    sub_row(&mut d, &q[cur - nx..cur]);
                }
                if z > 0 {
                    sub_row(&mut d, &q[cur - plane..cur - plane + nx]);
                    if y > 0 {
                        add_row(&mut d, &q[cur - plane - nx..cur - plane]);
                    }
                }
                let out = &mut r[cur..cur + nx];
                let mut prev = 0i32;
                for (o, &v) in out.iter_mut().zip(&d) {
                    *o = v.wrapping_sub(prev);
                    prev = v;
                }
            }
        }
    }

    fn reconstruct(&self, r: &mut [i32], ext: [usize; 3]) {
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

    fn fill_escapes(&self, q: &mut [i32], ext: [usize; 3], escapes: &[usize]) {
        for &i in escapes {
            let pos = [i / (ext[1] * ext[2]), (i / ext[2]) % ext[1], i % ext[2]];
            q[i] = clamp_index(predict_at(q, ext, pos));
        }
    }
}

/// The Lorenzo prediction of the value at `pos` from the values before it in C order.
fn predict_at(q: &[i32], ext: [usize; 3], pos: [usize; 3]) -> i64 {
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

    fn check(ext: [usize; 3]) {
        let n = ext.iter().product();
        let q: Vec<i32> = (0..n as i64)
            .map(|i| ((i * 7919) % 1000 - 500) as i32 + (i as i32 / 3))
            .collect();
        let mut r = vec![0; n];
        Lorenzo.residuals(&q, ext, &mut r);
        // Each residual equals the value minus its pointwise prediction.
        for i in 0..n {
            let pos = [i / (ext[1] * ext[2]), (i / ext[2]) % ext[1], i % ext[2]];
            assert_eq!(r[i] as i64, q[i] as i64 - predict_at(&q, ext, pos));
        }
        Lorenzo.reconstruct(&mut r, ext);
        assert_eq!(r, q);
    }

    #[test]
    fn round_trips_every_rank() {
        check([1, 1, 1]);
        check([1, 1, 17]);
        check([1, 9, 13]);
        check([5, 6, 7]);
        check([40, 1, 3]);
    }

    #[test]
    fn linear_field_has_zero_interior_residuals() {
        let ext = [4, 5, 6];
        let q: Vec<i32> = (0..120)
            .map(|i| {
                let (z, y, x) = (i / 30, (i / 6) % 5, i % 6);
                3 * z + 5 * y - 2 * x + 1
            })
            .collect();
        let mut r = vec![0; 120];
        Lorenzo.residuals(&q, ext, &mut r);
        for z in 1..4 {
            for y in 1..5 {
                for x in 1..6 {
                    assert_eq!(r[(z * 5 + y) * 6 + x], 0);
                }
            }
        }
    }
}
