//! NGLR (predictor 3): round trips within the bound, identical decodes with any thread count,
//! clean errors for a damaged weights section.

use resid::format::section;
use resid::{ChunkInfo, DType, Error, Params, PredictorChoice};

fn nglr(rel: f64, x: &[f64]) -> Params {
    let (mn, mx) = x
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |a, &v| (a.0.min(v), a.1.max(v)));
    Params::abs(rel * (mx - mn)).with_predictor(PredictorChoice::Nglr)
}

fn f32_bytes(x: &[f64]) -> Vec<u8> {
    x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()
}

/// A rough 3D field: smooth waves plus deterministic noise.
fn rough(shape: [usize; 3]) -> Vec<f64> {
    let mut s = 0x1234_5678u64;
    (0..shape.iter().product::<usize>())
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (z, y, x) = (
                i / (shape[1] * shape[2]),
                (i / shape[2]) % shape[1],
                i % shape[2],
            );
            (x as f64 * 0.11).sin() * (y as f64 * 0.07).cos() * 10.0
                + z as f64 * 0.05
                + (s >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

/// Compresses with forced NGLR, checks the weights section is there and every value is
/// within the bound; returns the chunk.
fn round_trip(data: &[u8], chunk: &ChunkInfo, p: &Params) -> Vec<u8> {
    let c = resid::compress(data, chunk, p).unwrap();
    let s = resid::inspect(&c).unwrap();
    assert_eq!(s.sections[0].0, section::WEIGHTS, "{:?}", s.sections);
    assert!(s.block_predictors.iter().all(|&b| b == 3));
    let d = resid::decompress(&c).unwrap();
    let (x, y): (Vec<f64>, Vec<f64>) = match chunk.dtype {
        DType::F32 => (
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            d.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
        ),
        DType::F64 => (
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            d.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
    };
    for (i, (a, b)) in x.iter().zip(&y).enumerate() {
        assert!(
            (a - b).abs() <= p.bound,
            "point {i}: {a} vs {b}, bound {}",
            p.bound
        );
    }
    c
}

#[test]
fn random_fields_round_trip() {
    for shape in [[24, 30, 40], [1, 70, 90], [1, 1, 5000], [3, 4, 700]] {
        let x = rough(shape);
        let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
        for rel in [1e-2, 1e-4] {
            round_trip(&f32_bytes(&x), &chunk, &nglr(rel, &x));
        }
        let x64: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunk = ChunkInfo::new(DType::F64, &shape).unwrap();
        round_trip(&x64, &chunk, &nglr(1e-6, &x).with_nglr_budget(2));
    }
}

/// Real fields: `testdata/` always, `../shared/data` grade-A fields when present.
#[test]
fn real_fields_round_trip() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("testdata/wrf_T_4x14x48x48.f32"),
        root.join("testdata/miranda_density_slice_128x128.f64"),
    ];
    let shared = root.join("../shared/data/vorticity3d_41x128x128.f32");
    if shared.exists() {
        files.push(shared);
    }
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let shape: Vec<usize> = stem
            .rsplit('_')
            .next()
            .unwrap()
            .split('x')
            .map(|d| d.parse().unwrap())
            .collect();
        let dtype = if ext == "f64" { DType::F64 } else { DType::F32 };
        let data = std::fs::read(&path).unwrap();
        let x: Vec<f64> = match dtype {
            DType::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            DType::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        };
        let chunk = ChunkInfo::new(dtype, &shape).unwrap();
        for rel in [1e-4, 1e-5] {
            round_trip(&data, &chunk, &nglr(rel, &x));
        }
    }
}

#[test]
fn decode_is_identical_with_any_thread_count() {
    // Several blocks (2^19 values each at most) so the threads share the work.
    let shape = [20, 150, 200];
    let x = rough(shape);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let c = round_trip(&f32_bytes(&x), &chunk, &nglr(1e-4, &x));
    assert!(resid::inspect(&c).unwrap().block_predictors.len() > 1);
    let with = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(|| resid::decompress(&c).unwrap())
    };
    let one = with(1);
    assert_eq!(one, with(4));
    // Encoding is deterministic too: a fixed seed, and the closed-form fit sums its normal
    // equations in fixed runs whatever the thread count.
    let encode = |n: usize, p: &Params| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(|| resid::compress(&f32_bytes(&x), &chunk, p).unwrap())
    };
    assert_eq!(encode(1, &nglr(1e-4, &x)), c);
    let linear = nglr(1e-3, &x).with_predictor(PredictorChoice::AutoLinear);
    assert_eq!(encode(1, &linear), encode(3, &linear));
}

#[test]
fn damaged_weights_give_clean_errors() {
    let shape = [10, 30, 40];
    let x = rough(shape);
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let c = round_trip(&f32_bytes(&x), &chunk, &nglr(1e-3, &x));
    let header = 64 + 8 * 3;
    assert_eq!(c[header], section::WEIGHTS);
    // A flipped payload byte: the section checksum catches it.
    let mut bad = c.clone();
    bad[header + 16 + 20] ^= 0x40;
    assert_eq!(
        resid::decompress(&bad).unwrap_err(),
        Error::ChecksumMismatch { what: "section" }
    );
    // A payload that passes its checksum but breaks the network's limits.
    let len = u64::from_le_bytes(c[header + 4..header + 12].try_into().unwrap()) as usize;
    let mut payload = c[header + 16..header + 16 + len].to_vec();
    payload[4] = 200; // e1 > 30
    let mut forged = c[..header].to_vec();
    resid::format::write_section(&mut forged, section::WEIGHTS, &payload);
    forged.extend_from_slice(&c[header + 16 + len..]);
    assert!(matches!(
        resid::decompress(&forged).unwrap_err(),
        Error::Corrupt(_)
    ));
    // Truncated anywhere: an error, never a panic.
    for cut in (0..c.len()).step_by(97) {
        assert!(resid::decompress(&c[..cut]).is_err());
    }
    // An NGLR block without the weights section.
    let mut stripped = c[..header].to_vec();
    stripped.extend_from_slice(&c[header + 16 + len..]);
    let sections_at = header - 8;
    stripped[sections_at..sections_at + 4].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc(&stripped[..header - 4]);
    stripped[header - 4..header].copy_from_slice(&crc.to_le_bytes());
    assert!(resid::decompress(&stripped).is_err());
}

/// CRC-32 (ISO-HDLC), bitwise, so the test needs no dependency.
fn crc(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Predictor words 4 (auto with NGLR) and 5 (auto with a linear bias): never larger than auto
/// (the weights are dropped when they do not pay), within the bound, and on the turbulence
/// field at 1e-3 NGLR blocks win.
#[test]
fn learned_auto_modes_never_code_larger_than_auto() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data =
        std::fs::read(root.join("testdata/wmag_turbulence_vorticity_magnitude_91x91x91.f32"))
            .unwrap();
    let x: Vec<f64> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    let chunk = ChunkInfo::new(DType::F32, &[91, 91, 91]).unwrap();
    for (rel, mode) in [1e-2, 1e-3, 1e-4].into_iter().flat_map(|r| {
        [
            (r, PredictorChoice::AutoNglr),
            (r, PredictorChoice::AutoLinear),
        ]
    }) {
        let base = nglr(rel, &x);
        let auto =
            resid::compress(&data, &chunk, &base.with_predictor(PredictorChoice::Auto)).unwrap();
        let p = base.with_predictor(mode);
        let c = resid::compress(&data, &chunk, &p).unwrap();
        assert!(
            c.len() <= auto.len(),
            "rel {rel} {mode:?}: {} > {}",
            c.len(),
            auto.len()
        );
        let s = resid::inspect(&c).unwrap();
        let uses = s.block_predictors.contains(&3);
        assert_eq!(uses, s.sections[0].0 == section::WEIGHTS, "{s:?}");
        if rel == 1e-3 {
            assert!(uses && (c.len() as f64) < 0.97 * auto.len() as f64, "{s:?}");
        }
        let d = resid::decompress(&c).unwrap();
        let eb = p.bound;
        for (a, b) in x.iter().zip(d.chunks_exact(4)) {
            let v = f32::from_le_bytes(b.try_into().unwrap()) as f64;
            assert!((a - v).abs() <= eb, "rel {rel}: |{a} - {v}| > {eb}");
        }
    }
}

/// The same on the CESM fields of `../shared/data` at rel 1e-2, where the network's trials on
/// block samples overestimated its saving when the fallback was trusted below a 10% estimated
/// win (2-4% larger than plain auto). Skipped without `../shared/data`.
#[test]
fn learned_auto_modes_never_larger_on_cesm_at_loose_bounds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "cesm_camfv_PRECT_10x192x288.f32",
        "cesm_camfv_TS_10x192x288.f32",
    ] {
        let Ok(data) = std::fs::read(root.join("../shared/data").join(name)) else {
            eprintln!("skipped: ../shared/data/{name} not found");
            return;
        };
        let x: Vec<f64> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect();
        let chunk = ChunkInfo::new(DType::F32, &[10, 192, 288]).unwrap();
        let base = nglr(1e-2, &x);
        let auto =
            resid::compress(&data, &chunk, &base.with_predictor(PredictorChoice::Auto)).unwrap();
        for mode in [PredictorChoice::AutoNglr, PredictorChoice::AutoLinear] {
            let c = resid::compress(&data, &chunk, &base.with_predictor(mode)).unwrap();
            assert!(
                c.len() <= auto.len(),
                "{name} {mode:?}: {} > {}",
                c.len(),
                auto.len()
            );
        }
    }
}
