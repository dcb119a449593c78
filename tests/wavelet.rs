//! The wavelet path (format version 3, `docs/FORMAT.md`, "Wavelet layout"): the bound over
//! every shape and type it takes, the cases it leaves to the blocks, the auto words' trial,
//! thread independence, and clean errors on damaged chunks.

mod common;

use common::{bytes32, bytes64};
use resid::format::{self, Header, Layout, Reader};
use resid::{ChunkInfo, DType, Error, ErrorMode, Params, PredictorChoice};

fn wavelet(p: Params) -> Params {
    p.with_predictor(PredictorChoice::Wavelet)
}

/// A smooth 2-D vorticity-like field: a few large eddies and finer waves.
fn eddies(n1: usize, n2: usize) -> Vec<f32> {
    (0..n1 * n2)
        .map(|i| {
            let (y, x) = ((i / n2) as f64, (i % n2) as f64);
            let v = (x * 0.031).sin() * (y * 0.027).cos() * 5.0
                + (0.011 * (x + 2.0 * y)).sin() * 3.0
                + 0.4 * (x * 0.21 + y * 0.17).sin();
            v as f32
        })
        .collect()
}

/// Deterministic noise in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

/// Compresses, decodes, checks every value against the bound the user asked for; returns the
/// chunk and its header.
fn round_trip(x: &[f64], dtype: DType, shape: &[usize], p: &Params) -> (Vec<u8>, Header) {
    let data = match dtype {
        DType::F32 => bytes32(&x.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        DType::F64 => bytes64(x),
    };
    let chunk = ChunkInfo::new(dtype, shape).unwrap();
    let c = resid::compress(&data, &chunk, p).unwrap();
    let d = resid::decompress(&c).unwrap();
    assert_eq!(d.len(), data.len());
    let finite = x.iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let eb = match p.mode {
        ErrorMode::Abs => p.bound,
        ErrorMode::Rel => p.bound * (hi - lo),
        // A target over the whole chunk, not a pointwise bound.
        ErrorMode::Nrmse | ErrorMode::Psnr => f64::INFINITY,
    };
    for i in 0..x.len() {
        let (orig, got) = match dtype {
            DType::F32 => {
                let o = f32::from_le_bytes(data[4 * i..4 * i + 4].try_into().unwrap());
                let g = f32::from_le_bytes(d[4 * i..4 * i + 4].try_into().unwrap());
                (o as f64, g as f64)
            }
            DType::F64 => (
                x[i],
                f64::from_le_bytes(d[8 * i..8 * i + 8].try_into().unwrap()),
            ),
        };
        if orig.is_nan() {
            assert!(got.is_nan(), "point {i}");
        } else if orig.is_infinite() {
            assert_eq!(orig, got, "point {i}");
        } else {
            assert!(
                (orig - got).abs() <= eb,
                "point {i}: {orig} -> {got}, bound {eb}"
            );
        }
    }
    let header = Header::read(&mut Reader::new(&c)).unwrap();
    (c, header)
}

#[test]
fn wavelet_word_holds_the_bound_on_every_shape() {
    let eddy: Vec<f64> = eddies(200, 300).iter().map(|&v| v as f64).collect();
    let rough: Vec<f64> = noise(20 * 33 * 47, 1)
        .iter()
        .zip(eddies(20 * 33, 47))
        .map(|(n, e)| e as f64 + 0.2 * n)
        .collect();
    let line: Vec<f64> = (0..5000).map(|i| (i as f64 * 0.01).sin() * 1e6).collect();
    for (x, dtype, shape, p) in [
        (&eddy, DType::F32, vec![200, 300], Params::rel(1e-2)),
        (&eddy, DType::F32, vec![200, 300], Params::rel(1e-3)),
        (&eddy, DType::F64, vec![200, 300], Params::rel(1e-5)),
        (&rough, DType::F64, vec![20, 33, 47], Params::abs(1e-3)),
        (&rough, DType::F32, vec![20, 33, 47], Params::rel(1e-4)),
        (&rough, DType::F32, vec![2, 10, 33, 47], Params::rel(1e-2)),
        (&line, DType::F32, vec![5000], Params::rel(1e-3)),
        (&line, DType::F64, vec![5000], Params::abs(0.5)),
    ] {
        let (_, h) = round_trip(x, dtype, &shape, &wavelet(p));
        assert_eq!(h.layout, Layout::Wavelet, "{shape:?} {p:?}");
        assert_eq!(h.version, format::WAVELET_VERSION);
    }
}

#[test]
fn some_values_are_corrected_and_all_stay_within_the_bound() {
    // Sharp fronts: the quantized transform rings around them, so some points need a
    // correction, and the bound still holds after it.
    let x: Vec<f64> = (0..128 * 128)
        .map(|i| {
            let (y, x) = (i / 128, i % 128);
            if (x as i64 - 64).abs() + (y as i64 - 50).abs() < 30 {
                10.0
            } else {
                (x as f64 * 0.05).sin()
            }
        })
        .collect();
    let (c, h) = round_trip(&x, DType::F32, &[128, 128], &wavelet(Params::rel(1e-3)));
    assert_eq!(h.layout, Layout::Wavelet);
    let s = resid::inspect(&c).unwrap();
    assert_eq!(
        s.sections.iter().map(|s| s.0).collect::<Vec<_>>(),
        [format::section::WAVELET, format::section::ESCAPES]
    );
}

#[test]
fn chunks_the_transform_cannot_take_are_coded_as_blocks() {
    let eddy: Vec<f64> = eddies(64, 64).iter().map(|&v| v as f64).collect();
    let mut holes = eddy.clone();
    holes[100] = f64::NAN;
    holes[2000] = f64::INFINITY;
    let small: Vec<f64> = eddy[..4 * 5].to_vec();
    for (x, shape, p) in [
        // Not finite: the transform would spread them.
        (&holes, vec![64, 64], Params::rel(1e-3)),
        // Every dimension under 16: no level to transform.
        (&small, vec![4, 5], Params::rel(1e-3)),
        // A target, not a pointwise bound.
        (&eddy, vec![64, 64], Params::new(ErrorMode::Psnr, 60.0)),
    ] {
        let (_, h) = round_trip(x, DType::F32, &shape, &wavelet(p));
        assert_eq!(h.layout, Layout::Coded, "{shape:?} {p:?}");
    }
}

#[test]
fn auto_takes_the_wavelet_only_where_it_is_smaller() {
    let eddy: Vec<f64> = eddies(512, 512).iter().map(|&v| v as f64).collect();
    let p = Params::rel(1e-2);
    let (auto, h) = round_trip(&eddy, DType::F32, &[512, 512], &p);
    assert_eq!(h.layout, Layout::Wavelet);
    let (blocks, h) = round_trip(
        &eddy,
        DType::F32,
        &[512, 512],
        &p.with_predictor(PredictorChoice::Interp),
    );
    assert_eq!(h.layout, Layout::Coded);
    assert!(
        auto.len() < blocks.len(),
        "{} >= {}",
        auto.len(),
        blocks.len()
    );
    // White noise: nothing for a transform to gather, the blocks win.
    let white = noise(256 * 256, 7);
    let (_, h) = round_trip(&white, DType::F32, &[256, 256], &Params::rel(1e-3));
    assert_eq!(h.layout, Layout::Coded);
}

#[test]
fn auto_leaves_chunks_under_4096_values_to_the_blocks() {
    // Large eddies in a 32x64 chunk at rel 1e-1: the wavelet trial's coding would be the
    // smaller (auto took it before chunks this small were left out), but a chunk under 4096
    // values is left to the blocks; the wavelet word still codes it.
    let (h0, w0) = (32, 64);
    let x: Vec<f64> = (0..h0 * w0)
        .map(|i| {
            let (y, x) = ((i / w0) as f64 * 3.0, (i % w0) as f64 * 3.0);
            (x * 0.031).sin() * (y * 0.027).cos() * 5.0 + (0.011 * (x + 2.0 * y)).sin() * 3.0
        })
        .collect();
    let p = Params::rel(1e-1);
    let (auto, h) = round_trip(&x, DType::F32, &[h0, w0], &p);
    assert_eq!(h.layout, Layout::Coded);
    let (forced, h) = round_trip(&x, DType::F32, &[h0, w0], &wavelet(p));
    assert_eq!(h.layout, Layout::Wavelet);
    assert!(
        forced.len() < auto.len(),
        "{} >= {}",
        forced.len(),
        auto.len()
    );
}

#[test]
fn same_chunk_and_values_with_any_thread_count() {
    let x: Vec<f32> = eddies(300, 400);
    let data = bytes32(&x);
    let chunk = ChunkInfo::new(DType::F32, &[300, 400]).unwrap();
    let p = wavelet(Params::rel(1e-3));
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, many) = (pool(1), pool(4));
    let a = one.install(|| resid::compress(&data, &chunk, &p).unwrap());
    let b = many.install(|| resid::compress(&data, &chunk, &p).unwrap());
    assert_eq!(a, b, "output depends on the thread count");
    let da = one.install(|| resid::decompress(&a).unwrap());
    let db = many.install(|| resid::decompress(&a).unwrap());
    assert_eq!(da, db);
}

/// The chunk with its header replaced by `edit` of it (checksum recomputed).
fn with_header(c: &[u8], edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut r = Reader::new(c);
    let mut h = Header::read(&mut r).unwrap();
    edit(&mut h);
    let mut out = Vec::new();
    h.write(&mut out);
    out.extend_from_slice(&c[r.pos..]);
    out
}

#[test]
fn damaged_wavelet_chunks_are_clean_errors() {
    let x: Vec<f32> = eddies(40, 50);
    let chunk = ChunkInfo::new(DType::F32, &[40, 50]).unwrap();
    let c = resid::compress(&bytes32(&x), &chunk, &wavelet(Params::rel(1e-3))).unwrap();
    assert_eq!(resid::inspect(&c).unwrap().header.layout, Layout::Wavelet);
    for cut in 0..c.len() {
        assert!(resid::decompress(&c[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..c.len() {
        let mut bad = c.clone();
        bad[i] ^= 0x20;
        assert!(resid::decompress(&bad).is_err(), "byte {i} flipped");
    }
    let corrupt = |c: &[u8]| match resid::decompress(c) {
        Err(Error::Corrupt(m)) => m,
        other => panic!("expected a corrupt-chunk error, got {other:?}"),
    };
    let m = corrupt(&with_header(&c, |h| h.version = format::BASE_VERSION));
    assert!(m.contains("layout 2 in a version-1 chunk"), "{m}");
    let m = corrupt(&with_header(&c, |h| h.feedback = 1));
    assert!(m.contains("feedback"), "{m}");
    let m = corrupt(&with_header(&c, |h| h.step = f64::NAN));
    assert!(m.contains("not finite"), "{m}");
    let m = corrupt(&with_header(&c, |h| h.sections = 3));
    assert!(m.contains("sections"), "{m}");
    // Another shape with a valid checksum: other subbands, or the same ones read with other
    // extents; an error or values, never a panic.
    for shape in [vec![50, 40], vec![40, 10], vec![2000], vec![8, 5, 50]] {
        let _ = resid::decompress(&with_header(&c, |h| h.shape = shape));
    }
}

#[test]
fn older_readers_refuse_the_version_cleanly() {
    // What a version-2 reader sees: a version it does not know.
    let x: Vec<f32> = eddies(40, 50);
    let chunk = ChunkInfo::new(DType::F32, &[40, 50]).unwrap();
    let c = resid::compress(&bytes32(&x), &chunk, &wavelet(Params::rel(1e-3))).unwrap();
    assert_eq!(c[4], 3);
    let mut newer = c.clone();
    newer[4] = format::FORMAT_VERSION + 1;
    assert_eq!(
        resid::decompress(&newer).unwrap_err(),
        Error::UnsupportedVersion {
            found: format::FORMAT_VERSION + 1,
            newest: format::FORMAT_VERSION
        }
    );
}
