//! Properties of the codec: the bound holds for any shape, bound and value distribution;
//! special values come back bit for bit; damaged chunks give errors, never panics.

use proptest::prelude::*;
use resid::{ChunkInfo, Coder, DType, Error, ErrorMode, Params, PredictorChoice};

/// Every chunk coder, in `cd_values` word 4 order.
const CODERS: [Coder; 5] = [
    Coder::Range,
    Coder::Lz4,
    Coder::Packed,
    Coder::Rans,
    Coder::Grouped,
];

fn to_bytes32(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
fn to_bytes64(x: &[f64]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
fn from_bytes32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn from_bytes64(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The pointwise bound `params` promises for `x` (finite values only).
fn pointwise_bound(x: &[f64], params: &Params, eb_header: f64) -> f64 {
    let finite: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    let range = if finite.is_empty() {
        0.0
    } else {
        finite.iter().cloned().fold(f64::MIN, f64::max)
            - finite.iter().cloned().fold(f64::MAX, f64::min)
    };
    match params.mode {
        ErrorMode::Abs => params.bound,
        ErrorMode::Rel => params.bound * range,
        // Targets on the whole chunk: each value is within the header's bound.
        ErrorMode::Nrmse | ErrorMode::Psnr => eb_header,
    }
}

/// Compresses, decompresses and checks every value; returns the compressed size.
fn check(x: &[f64], dtype: DType, shape: &[usize], params: &Params) -> usize {
    let chunk = ChunkInfo::new(dtype, shape).unwrap();
    let (data, xs): (Vec<u8>, Vec<f64>) = match dtype {
        DType::F32 => {
            let v: Vec<f32> = x.iter().map(|&a| a as f32).collect();
            (to_bytes32(&v), v.iter().map(|&a| a as f64).collect())
        }
        DType::F64 => (to_bytes64(x), x.to_vec()),
    };
    let c = resid::compress(&data, &chunk, params).unwrap();
    assert!(c.len() <= data.len() + resid::format::MAX_OVERHEAD);
    let summary = resid::inspect(&c).unwrap();
    let d = resid::decompress(&c).unwrap();
    assert_eq!(d.len(), data.len());
    let bits_in: Vec<u64>;
    let ys: Vec<f64>;
    let bits_out: Vec<u64>;
    match dtype {
        DType::F32 => {
            let y = from_bytes32(&d);
            bits_in = from_bytes32(&data)
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect();
            bits_out = y.iter().map(|v| v.to_bits() as u64).collect();
            ys = y.iter().map(|&a| a as f64).collect();
        }
        DType::F64 => {
            let y = from_bytes64(&d);
            bits_in = from_bytes64(&data).iter().map(|v| v.to_bits()).collect();
            bits_out = y.iter().map(|v| v.to_bits()).collect();
            ys = y;
        }
    }
    let eb = pointwise_bound(&xs, params, summary.header.eb);
    let mut sse = 0.0;
    for i in 0..xs.len() {
        let special = !xs[i].is_finite() || (xs[i] != 0.0 && xs[i].abs() < min_normal(dtype));
        if special {
            assert_eq!(
                bits_in[i], bits_out[i],
                "special value {} at {i} changed",
                xs[i]
            );
        } else {
            let e = (xs[i] - ys[i]).abs();
            assert!(
                e <= eb,
                "value {i}: |{} - {}| = {e} > {eb} ({params:?})",
                xs[i],
                ys[i]
            );
            sse += e * e;
        }
    }
    if let Some(t) = target_nrmse(params) {
        let finite: Vec<f64> = xs.iter().copied().filter(|v| v.is_finite()).collect();
        let range = finite.iter().cloned().fold(f64::MIN, f64::max)
            - finite.iter().cloned().fold(f64::MAX, f64::min);
        if range > 0.0 {
            let nrmse = (sse / xs.len() as f64).sqrt() / range;
            assert!(nrmse <= t, "NRMSE {nrmse} > target {t}");
        }
    }
    c.len()
}

fn min_normal(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f32::MIN_POSITIVE as f64,
        DType::F64 => f64::MIN_POSITIVE,
    }
}

fn target_nrmse(p: &Params) -> Option<f64> {
    match p.mode {
        ErrorMode::Nrmse => Some(p.bound),
        ErrorMode::Psnr => Some(10f64.powf(-p.bound / 20.0)),
        _ => None,
    }
}

fn smooth(shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| {
            let t = i as f64;
            (t * 0.013).sin() * 50.0 + (t * 0.0007).cos() * 200.0 + (t * 0.31).sin()
        })
        .collect()
}

#[test]
fn smooth_field_all_modes_and_coders() {
    let shape = [13, 17, 19];
    let x = smooth(&shape);
    for dtype in [DType::F32, DType::F64] {
        for coder in CODERS {
            for p in [
                Params::abs(0.01),
                Params::abs(1e-6),
                Params::rel(1e-3),
                Params::rel(1e-7),
                Params::new(ErrorMode::Nrmse, 1e-4),
                Params::new(ErrorMode::Psnr, 60.0),
            ] {
                check(&x, dtype, &shape, &p.with_coder(coder));
            }
        }
    }
}

#[test]
fn compresses_smooth_data() {
    let shape = [32, 64, 64];
    let x = smooth(&shape);
    let size = check(&x, DType::F32, &shape, &Params::rel(1e-3));
    assert!(
        size * 8 < x.len() * 4,
        "{size} bytes: less than 8x on a smooth field"
    );
}

#[test]
fn specials_round_trip_bit_for_bit() {
    let mut x = smooth(&[4, 8, 8]);
    x[3] = f64::NAN;
    x[10] = f64::INFINITY;
    x[11] = f64::NEG_INFINITY;
    x[12] = 1e-42; // subnormal in f32
    x[13] = -0.0;
    x[40] = 1e30; // beyond the grid's reach
    for dtype in [DType::F32, DType::F64] {
        check(&x, dtype, &[4, 8, 8], &Params::rel(1e-3));
        check(&x, dtype, &[4, 8, 8], &Params::abs(1e-2));
    }
    let sub = vec![f64::MIN_POSITIVE / 3.0; 10];
    check(&sub, DType::F64, &[10], &Params::abs(1.0));
}

#[test]
fn all_nan_and_constant_chunks() {
    check(&[f64::NAN; 50], DType::F32, &[50], &Params::rel(1e-2));
    let c = check(&[7.25; 10_000], DType::F32, &[100, 100], &Params::rel(1e-4));
    assert!(c < 200, "constant chunk took {c} bytes");
    check(
        &[7.25; 100],
        DType::F64,
        &[100],
        &Params::new(ErrorMode::Psnr, 80.0),
    );
}

#[test]
fn thin_and_tiny_shapes() {
    for shape in [
        vec![1],
        vec![1, 1, 1],
        vec![2],
        vec![1000, 2],
        vec![2, 1000],
        vec![3, 1, 500],
        vec![2, 2, 2, 2, 2],
        vec![300_000, 1],
    ] {
        let x = smooth(&shape);
        check(&x, DType::F32, &shape, &Params::abs(0.05));
    }
}

#[test]
fn bound_below_float_resolution_stores_exactly() {
    // f32 near 1e5 has an ulp of ~0.0078: an absolute bound of 1e-3 can only be met exactly.
    let x: Vec<f64> = (0..1000).map(|i| 1e5 + (i as f64 * 0.1).sin()).collect();
    let size = check(&x, DType::F32, &[1000], &Params::abs(1e-3));
    assert!(size <= 4000 + resid::format::MAX_OVERHEAD);
}

#[test]
fn multi_block_chunk_and_thread_independence() {
    let shape = [70, 80, 90]; // more than one block
    let x = smooth(&shape);
    let data = to_bytes32(&x.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let p = Params::rel(1e-4);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let a = one.install(|| resid::compress(&data, &chunk, &p).unwrap());
    let b = many.install(|| resid::compress(&data, &chunk, &p).unwrap());
    assert_eq!(a, b, "output depends on the thread count");
    let da = one.install(|| resid::decompress(&a).unwrap());
    let db = many.install(|| resid::decompress(&a).unwrap());
    assert_eq!(da, db);
    check(&x, DType::F32, &shape, &p);
}

#[test]
fn wrong_input_size_is_an_error() {
    let chunk = ChunkInfo::new(DType::F32, &[10]).unwrap();
    assert_eq!(
        resid::compress(&[0u8; 39], &chunk, &Params::abs(1.0)).unwrap_err(),
        Error::SizeMismatch {
            expected: 40,
            actual: 39
        }
    );
    assert!(matches!(
        resid::compress(&[0u8; 40], &chunk, &Params::abs(-1.0)).unwrap_err(),
        Error::BadParams(_)
    ));
}

#[test]
fn damaged_chunks_are_errors() {
    let shape = [20, 30, 40];
    let x = smooth(&shape);
    let data = to_bytes32(&x.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    for coder in CODERS {
        let c = resid::compress(&data, &chunk, &Params::rel(1e-3).with_coder(coder)).unwrap();
        for cut in (0..c.len()).step_by(7) {
            assert!(
                resid::decompress(&c[..cut]).is_err(),
                "truncated to {cut} decoded"
            );
        }
        for pos in (0..c.len()).step_by(5) {
            let mut bad = c.clone();
            bad[pos] ^= 0x10;
            assert!(
                resid::decompress(&bad).is_err(),
                "bit flip at {pos} went unnoticed"
            );
        }
        let mut extra = c.clone();
        extra.push(0);
        assert!(resid::decompress(&extra).is_err());
        assert!(matches!(
            resid::decompress_limited(&c, data.len() - 1).unwrap_err(),
            Error::TooLarge { .. }
        ));
    }
    assert_eq!(
        resid::decompress(b"HDF5....").unwrap_err(),
        Error::WrongMagic
    );
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..12, 1..5)
}

#[derive(Debug, Clone, Copy)]
enum Dist {
    Smooth,
    Noise,
    Spiky,
    Tiny,
    Huge,
}

fn values(shape: &[usize], dist: Dist, seed: u64) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| match dist {
            Dist::Smooth => (i as f64 * 0.1).sin() * 10.0 + rnd() * 0.01,
            Dist::Noise => rnd() * 2.0 - 1.0,
            Dist::Spiky => {
                if rnd() < 0.05 {
                    (rnd() - 0.5) * 1e6
                } else if rnd() < 0.02 {
                    f64::NAN
                } else {
                    rnd()
                }
            }
            Dist::Tiny => (rnd() - 0.5) * 1e-36,
            Dist::Huge => (rnd() - 0.5) * 1e35,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn bound_holds_for_random_inputs(
        shape in shape_strategy(),
        dist in prop::sample::select(vec![Dist::Smooth, Dist::Noise, Dist::Spiky, Dist::Tiny, Dist::Huge]),
        seed in any::<u64>(),
        f64_type in any::<bool>(),
        coder in 0..CODERS.len(),
        mode in 0u32..4,
        exp in -8i32..0,
    ) {
        let x = values(&shape, dist, seed);
        let dtype = if f64_type { DType::F64 } else { DType::F32 };
        let bound = match mode {
            3 => -(exp as f64) * 15.0,
            _ => 10f64.powi(exp),
        };
        let mode = [ErrorMode::Abs, ErrorMode::Rel, ErrorMode::Nrmse, ErrorMode::Psnr][mode as usize];
        let coder = CODERS[coder];
        check(&x, dtype, &shape, &Params::new(mode, bound).with_coder(coder));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = resid::decompress_limited(&bytes, 1 << 20);
        let mut with_magic = b"RSID\x01\x01\x01\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = resid::decompress_limited(&with_magic, 1 << 20);
    }
}

#[test]
fn each_predictor_alone_meets_the_bound() {
    let shape = [9, 21, 33];
    let x = smooth(&shape);
    for pred in [PredictorChoice::Lorenzo, PredictorChoice::Interp] {
        for dtype in [DType::F32, DType::F64] {
            for p in [
                Params::abs(0.3),
                Params::rel(1e-5),
                Params::new(ErrorMode::Psnr, 70.0),
            ] {
                for coder in CODERS {
                    check(&x, dtype, &shape, &p.with_predictor(pred).with_coder(coder));
                }
            }
        }
    }
}

#[test]
fn blocks_choose_their_own_predictor() {
    // Two blocks: the first smooth (interpolation wins), the second g(x) + h(y) with rough g
    // and h, which 2D Lorenzo predicts exactly and interpolation cannot.
    let shape = [4, 512, 512];
    let n: usize = shape.iter().product();
    let rough = |k: usize| ((k as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40) as f64 / 1e4;
    let x: Vec<f64> = (0..n)
        .map(|i| {
            let (y, xx) = ((i / 512) % 512, i % 512);
            // Blocks split the 4x512x512 grid along y.
            if y < 256 {
                ((y as f64) * 0.02).sin() * 100.0 + ((xx as f64) * 0.015).cos() * 80.0
            } else {
                rough(xx) + rough(1000 + y)
            }
        })
        .collect();
    let p = Params::abs(0.05);
    check(&x, DType::F32, &shape, &p);
    let data: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let c = resid::compress(&data, &ChunkInfo::new(DType::F32, &shape).unwrap(), &p).unwrap();
    let preds = resid::inspect(&c).unwrap().block_predictors;
    assert!(preds.len() >= 2, "{preds:?}");
    let mut kinds = preds.clone();
    kinds.sort();
    kinds.dedup();
    assert!(
        kinds.len() >= 2,
        "every block chose the same predictor: {preds:?}"
    );
}

#[test]
fn isotropic_field_uses_multidimensional_interpolation() {
    // Smooth in all three dimensions alike (plane waves in several directions, faint noise): the
    // interpolation that predicts from every dimension at once (id 4) codes it in fewer bits
    // than one dimension at a time (id 2) or Lorenzo (id 1), so the encoder picks it.
    let shape = [48, 48, 48];
    let n: usize = shape.iter().product();
    let x: Vec<f64> = (0..n)
        .map(|i| {
            let (z, y, xx) = ((i / 2304) as f64, ((i / 48) % 48) as f64, (i % 48) as f64);
            (0.21 * xx + 0.13 * y + 0.07 * z).sin()
                + (0.11 * xx - 0.19 * y + 0.23 * z).cos()
                + (0.05 * xx + 0.17 * y - 0.29 * z).sin()
                + ((i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 44) as f64 * 1e-9
        })
        .collect();
    let p = Params::rel(1e-2);
    check(&x, DType::F32, &shape, &p);
    let data: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let c = resid::compress(&data, &ChunkInfo::new(DType::F32, &shape).unwrap(), &p).unwrap();
    let preds = resid::inspect(&c).unwrap().block_predictors;
    assert!(preds.contains(&4), "{preds:?}");
}

/// NRMSE and PSNR targets at moderate rates are coded with error feedback (feedback step 15,
/// as absolute bounds are), the bound tuned from the decoded error: the target holds, is not
/// overshot by much, and the chunk is over 10% smaller than on the target's own LBRC grid
/// (feedback step 1, what the plain Lorenzo predictor codes).
#[test]
fn quality_targets_use_error_feedback() {
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/wmag_turbulence_vorticity_magnitude_91x91x91.f32"),
    )
    .unwrap();
    let x: Vec<f64> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    let shape = [91, 91, 91];
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let range =
        x.iter().cloned().fold(f64::MIN, f64::max) - x.iter().cloned().fold(f64::MAX, f64::min);
    for p in [
        Params::new(ErrorMode::Psnr, 40.0),
        Params::new(ErrorMode::Nrmse, 3e-3),
    ] {
        let c = resid::compress(&raw, &chunk, &p).unwrap();
        assert_eq!(resid::inspect(&c).unwrap().header.feedback, 15, "{p:?}");
        let y: Vec<f64> = resid::decompress(&c)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect();
        let sse: f64 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
        let nrmse = (sse / x.len() as f64).sqrt() / range;
        let t = target_nrmse(&p).unwrap();
        assert!(
            nrmse <= t && nrmse > 0.8 * t,
            "{p:?}: NRMSE {nrmse}, target {t}"
        );
        let lbrc =
            resid::compress(&raw, &chunk, &p.with_predictor(PredictorChoice::Lorenzo)).unwrap();
        assert!(
            c.len() * 10 < lbrc.len() * 9,
            "{p:?}: {} vs LBRC {}",
            c.len(),
            lbrc.len()
        );
    }
}

/// `decompress_into` gives `decompress`'s bytes for every layout (stored, coded with each
/// coder, NeurLZ) and refuses a destination of the wrong size before decoding.
#[test]
fn decompress_into_matches_decompress() {
    let shape = [12usize, 20, 24];
    let x = smooth(&shape);
    let mut x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    x32[7] = f32::NAN;
    let data = to_bytes32(&x32);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let mut cases = vec![
        Params::rel(1e-3),
        Params::abs(1e-2).with_predictor(PredictorChoice::Lorenzo),
        Params::rel(1e-4).with_coder(Coder::Lz4),
        Params::rel(1e-4)
            .with_coder(Coder::Packed)
            .with_predictor(PredictorChoice::Lorenzo),
        Params::rel(1e-4).with_coder(Coder::Packed),
    ];
    let mut strict = Params::rel(1e-3);
    strict.enhancer = resid::Enhancer::Strict;
    strict.enhancer_force = true;
    cases.push(strict);
    let noise: Vec<u8> = (0..data.len() as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (input, p) in cases
        .iter()
        .map(|p| (&data, *p))
        .chain([(&noise, Params::abs(1e-30))])
    {
        let c = resid::compress(input, &chunk, &p).unwrap();
        if std::ptr::eq(input, &noise) {
            let layout = resid::inspect(&c).unwrap().header.layout;
            assert_eq!(layout, resid::format::Layout::Stored);
        }
        let whole = resid::decompress(&c).unwrap();
        let mut into = vec![0xAAu8; whole.len()];
        resid::decompress_into(&c, &mut into).unwrap();
        assert!(into == whole, "{p:?}");
        let mut short = vec![0u8; whole.len() - 4];
        assert!(matches!(
            resid::decompress_into(&c, &mut short),
            Err(Error::TooLarge { .. })
        ));
        let mut long = vec![0u8; whole.len() + 4];
        assert!(matches!(
            resid::decompress_into(&c, &mut long),
            Err(Error::SizeMismatch { .. })
        ));
    }
}
