//! Bounds as the user measures them: an HDF5 edge chunk's padding is left out of the range and
//! the error its bound is taken over (and restored exactly), and NRMSE / PSNR targets are met
//! over the finite values.

mod common;

use common::bytes32 as to_bytes;
use resid::format::section;
use resid::{ChunkInfo, DType, ErrorMode, Params};

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A 10x40x40 chunk whose data is 10x23x31 (temperatures near 250 K), padded with `fill`.
fn edge_chunk(fill: f32) -> (Vec<f32>, Vec<usize>) {
    let x = (0..10 * 40 * 40)
        .map(|i| {
            let (z, y, x) = (i / 1600, (i / 40) % 40, i % 40);
            if y < 23 && x < 31 {
                250.0 + 20.0 * (x as f32 * 0.21).sin() * (y as f32 * 0.13).cos() + z as f32
            } else {
                fill
            }
        })
        .collect();
    (x, vec![10, 40, 40])
}

/// Max error over the data box 10x23x31, and whether every padding value came back bit for bit.
fn check(x: &[f32], y: &[f32]) -> (f64, f64, f64, bool) {
    let (mut lo, mut hi, mut worst, mut sse, mut n) = (f64::MAX, f64::MIN, 0f64, 0f64, 0usize);
    let mut padding_exact = true;
    for i in 0..x.len() {
        let (yy, xx) = ((i / 40) % 40, i % 40);
        if yy < 23 && xx < 31 {
            let (a, b) = (x[i] as f64, y[i] as f64);
            lo = lo.min(a);
            hi = hi.max(a);
            worst = worst.max((a - b).abs());
            sse += (a - b) * (a - b);
            n += 1;
        } else {
            padding_exact &= x[i].to_bits() == y[i].to_bits();
        }
    }
    (
        worst,
        hi - lo,
        (sse / n as f64).sqrt() / (hi - lo),
        padding_exact,
    )
}

#[test]
fn relative_bound_is_taken_over_the_data_box() {
    for fill in [0.0, 9.96921e36, f32::NAN, -999.0] {
        let (x, shape) = edge_chunk(fill);
        let chunk = ChunkInfo::new(DType::F32, &shape)
            .unwrap()
            .with_padding(fill.to_bits() as u64);
        for bound in [1e-2, 1e-3, 1e-5] {
            let c = resid::compress(&to_bytes(&x), &chunk, &Params::rel(bound)).unwrap();
            let y = from_bytes(&resid::decompress(&c).unwrap());
            let (worst, range, _, exact) = check(&x, &y);
            assert!(
                worst <= bound * range,
                "fill {fill}, rel {bound}: max error {worst} > {}",
                bound * range
            );
            assert!(exact, "fill {fill}: padding changed");
            let s = resid::inspect(&c).unwrap();
            assert_eq!(s.region, Some((vec![10, 23, 31], fill.to_bits() as u64)));
            assert_eq!(s.header.version, 2);
        }
    }
}

#[test]
fn without_the_padding_value_the_padding_counts() {
    // The library API with no padding value: the whole chunk is the data (as before), and the
    // chunk is format version 1.
    let (x, shape) = edge_chunk(0.0);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let c = resid::compress(&to_bytes(&x), &chunk, &Params::rel(1e-3)).unwrap();
    let s = resid::inspect(&c).unwrap();
    assert_eq!((s.header.version, s.region), (1, None));
    assert!(s.header.eb > 0.25, "{:?}", s.header); // 1e-3 of the range 0..~290
}

#[test]
fn padding_that_is_also_zero_is_found_when_the_fill_value_differs() {
    // HDF5 pads with zeros when the fill time is "never", whatever the fill value.
    let (x, shape) = edge_chunk(0.0);
    let chunk = ChunkInfo::new(DType::F32, &shape)
        .unwrap()
        .with_padding(1.5f32.to_bits() as u64);
    let c = resid::compress(&to_bytes(&x), &chunk, &Params::rel(1e-3)).unwrap();
    let y = from_bytes(&resid::decompress(&c).unwrap());
    let (worst, range, _, exact) = check(&x, &y);
    assert!(worst <= 1e-3 * range && exact);
}

#[test]
fn nrmse_and_psnr_targets_hold_over_the_data_box() {
    let (x, shape) = edge_chunk(0.0);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap().with_padding(0);
    for (mode, bound, nrmse) in [
        (ErrorMode::Nrmse, 1e-3, 1e-3),
        (ErrorMode::Nrmse, 1e-5, 1e-5),
        (ErrorMode::Psnr, 60.0, 1e-3),
    ] {
        let c = resid::compress(&to_bytes(&x), &chunk, &Params::new(mode, bound)).unwrap();
        let y = from_bytes(&resid::decompress(&c).unwrap());
        let (_, _, e, exact) = check(&x, &y);
        assert!(e <= nrmse, "{mode:?} {bound}: NRMSE {e} > {nrmse}");
        assert!(e > nrmse / 8.0, "{mode:?} {bound}: NRMSE {e}: bits wasted");
        assert!(exact);
    }
}

#[test]
fn nrmse_target_is_met_over_the_finite_values() {
    // A smooth chunk with every fifth value NaN: the RMSE is over the finite values, so the
    // exactly-kept NaNs do not dilute it.
    let x: Vec<f32> = (0..64 * 64)
        .map(|i| {
            if i % 5 == 0 {
                f32::NAN
            } else {
                ((i % 64) as f32 * 0.1).sin() + ((i / 64) as f32 * 0.07).cos()
            }
        })
        .collect();
    let chunk = ChunkInfo::new(DType::F32, &[64, 64]).unwrap();
    for t in [1e-2, 1e-3, 1e-4] {
        let c = resid::compress(&to_bytes(&x), &chunk, &Params::new(ErrorMode::Nrmse, t)).unwrap();
        let y = from_bytes(&resid::decompress(&c).unwrap());
        let fin: Vec<(f64, f64)> = x
            .iter()
            .zip(&y)
            .filter(|(a, _)| a.is_finite())
            .map(|(&a, &b)| (a as f64, b as f64))
            .collect();
        let lo = fin.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let hi = fin.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        let mse = fin.iter().map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / fin.len() as f64;
        let e = mse.sqrt() / (hi - lo);
        assert!(e <= t, "NRMSE {e} > {t} over the finite values");
        assert!(x
            .iter()
            .zip(&y)
            .all(|(a, b)| a.is_finite() || a.to_bits() == b.to_bits()));
    }
}

#[test]
fn an_interior_chunk_with_trailing_fill_values_only_gets_tighter() {
    // The last rows of an interior chunk really equal the fill value (0): they are left out of
    // the range, which makes the bound tighter, and come back exactly.
    let mut x: Vec<f32> = (0..32 * 32)
        .map(|i| 5.0 + (i as f32 * 0.05).sin())
        .collect();
    x[0] = 100.0; // the range's top, inside the box
    for v in &mut x[30 * 32..] {
        *v = 0.0;
    }
    let chunk = ChunkInfo::new(DType::F32, &[32, 32])
        .unwrap()
        .with_padding(0);
    let c = resid::compress(&to_bytes(&x), &chunk, &Params::rel(1e-3)).unwrap();
    let y = from_bytes(&resid::decompress(&c).unwrap());
    let range = 100.0 - 0.0;
    for (a, b) in x.iter().zip(&y) {
        assert!(((a - b).abs() as f64) <= 1e-3 * range);
    }
    assert!(x[30 * 32..].iter().zip(&y[30 * 32..]).all(|(a, b)| a == b));
}

#[test]
fn a_damaged_region_section_is_a_clean_error() {
    let (x, shape) = edge_chunk(0.0);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap().with_padding(0);
    let c = resid::compress(&to_bytes(&x), &chunk, &Params::rel(1e-3)).unwrap();
    let s = resid::inspect(&c).unwrap();
    assert_eq!(s.sections[0], (section::REGION, 1 + 3 * 8 + 8));
    // The region's first extent, past its rank byte and the section header.
    let at = 8 + 8 * 3 + 56 + 16 + 1;
    let mut bad = c.clone();
    bad[at..at + 8].copy_from_slice(&41u64.to_le_bytes());
    let e = resid::decompress(&bad).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    // A version-1 reader's view: the version byte lowered, header checksum fixed.
    let mut v1 = c.clone();
    v1[4] = 1;
    let crc = crc32fast::hash(&v1[..60 + 8 * 3]);
    v1[60 + 8 * 3..64 + 8 * 3].copy_from_slice(&crc.to_le_bytes());
    let e = resid::decompress(&v1).unwrap_err();
    assert!(e.to_string().contains("found id 5"), "{e}");
}
