//! Chunks written by earlier builds must keep decoding to the same bytes.
//!
//! `tests/golden/<name>.rsid` is a chunk, `<name>.out` the bytes it decodes to. Files are
//! added, never rewritten: a new format version adds new files beside the old ones.
//! `RESID_WRITE_GOLDEN=1 cargo test --test golden -- --ignored` writes missing files.

mod common;

use common::{golden_dir as dir, write_missing_goldens};
use resid::{ChunkInfo, Coder, DType, Params};

/// The inputs the golden chunks were made from (format version 1).
fn cases() -> Vec<(&'static str, Vec<u8>, ChunkInfo, Params)> {
    let smooth = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| (i as f64 * 0.05).sin() * 3.0 + (i as f64 * 0.003).cos())
            .collect()
    };
    let mut f32s: Vec<f32> = smooth(6 * 10 * 12).iter().map(|&v| v as f32).collect();
    f32s[5] = f32::NAN;
    f32s[77] = f32::NEG_INFINITY;
    f32s[100] = 1e-40;
    let f32_bytes: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64_bytes: Vec<u8> = smooth(20 * 30)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // Fields that two goldens share: one written before a format addition, one after.
    let interp_field: Vec<u8> = (0..9 * 17 * 33)
        .map(|i| {
            let (z, y, x) = (i / 561, (i / 33) % 17, i % 33);
            (x as f32 * 0.2).sin() * 10.0 + (y as f32 * 0.15).cos() * 5.0 + z as f32
        })
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let md_field: Vec<u8> = (0..24 * 24 * 24)
        .map(|i| {
            let (z, y, x) = ((i / 576) as f32, ((i / 24) % 24) as f32, (i % 24) as f32);
            (0.21 * x + 0.13 * y + 0.07 * z).sin() + (0.11 * x - 0.19 * y + 0.23 * z).cos()
        })
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let oscillating: Vec<u8> = (0..24 * 24 * 24)
        .map(|i| {
            let (z, y, x) = ((i / 576) as f32, ((i / 24) % 24) as f32, (i % 24) as f32);
            // Fast oscillations: a two-tap linear recurrence fits them, Lorenzo does not.
            (0.9 * x + 0.3 * y).sin()
                + 0.5 * (0.7 * y + 0.4 * z).sin()
                + ((i * 7919) % 101) as f32 * 2e-4
        })
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // Slices 0-7 vary slowly, slices 8-15 carry noise of a thousand grid steps.
    let two_regimes: Vec<u8> = (0..16 * 64 * 64)
        .map(|i| {
            let (z, y, x) = (i / 4096, (i / 64) % 64, i % 64);
            let smooth = (0.05 * x as f32).sin() + (0.07 * y as f32).cos();
            let noise = ((i as u64 * 2654435761) % 1000) as f32 * 1e-3;
            smooth + if z >= 8 { noise } else { 0.0 }
        })
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let big: Vec<u8> = (0..64)
        .map(|i| 1e5f32 + (i as f32 * 0.37).sin())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    vec![
        (
            "v1_f32_3d_rel_range",
            f32_bytes.clone(),
            ChunkInfo::new(DType::F32, &[6, 10, 12]).unwrap(),
            Params::rel(1e-3),
        ),
        (
            // The GPU's coder (chunk coder 2, block coder id 3) on Lorenzo blocks, with
            // escaped NaN, infinity and subnormal values.
            "v1_f32_3d_rel_packed",
            f32_bytes.clone(),
            ChunkInfo::new(DType::F32, &[6, 10, 12]).unwrap(),
            Params::rel(1e-3)
                .with_coder(Coder::Packed)
                .with_predictor(resid::PredictorChoice::Lorenzo),
        ),
        (
            // The fast mode's coder (chunk coder 4, block coder id 6) on Lorenzo blocks, with
            // escaped NaN, infinity and subnormal values (their blocks take the feedback path).
            "v1_f32_3d_rel_grouped",
            f32_bytes.clone(),
            ChunkInfo::new(DType::F32, &[6, 10, 12]).unwrap(),
            Params::rel(1e-3)
                .with_coder(Coder::Grouped)
                .with_predictor(resid::PredictorChoice::Lorenzo),
        ),
        (
            // The fast mode on a rough field of several blocks with wide residuals (groups of
            // every width up to 16 bits and more).
            "v1_f32_3d_abs_grouped_blocks",
            two_regimes.clone(),
            ChunkInfo::new(DType::F32, &[16, 64, 64]).unwrap(),
            Params::abs(1e-6)
                .with_coder(Coder::Grouped)
                .with_predictor(resid::PredictorChoice::Lorenzo),
        ),
        (
            "v1_f32_4d_nrmse_lz4",
            f32_bytes,
            ChunkInfo::new(DType::F32, &[2, 3, 10, 12]).unwrap(),
            Params::new(resid::ErrorMode::Nrmse, 1e-4).with_coder(Coder::Lz4),
        ),
        (
            "v1_f64_2d_abs_range",
            f64_bytes,
            ChunkInfo::new(DType::F64, &[20, 30]).unwrap(),
            Params::abs(1e-6),
        ),
        (
            "v1_f32_3d_abs_nglr",
            (0..8 * 20 * 24)
                .map(|i| {
                    let (z, y, x) = (i / 480, (i / 24) % 20, i % 24);
                    ((x as f32 * 0.3).sin() * (y as f32 * 0.2).cos() + z as f32 * 0.1)
                        + ((i * 7919) % 113) as f32 * 1e-3
                })
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ChunkInfo::new(DType::F32, &[8, 20, 24]).unwrap(),
            Params::abs(1e-4).with_predictor(resid::PredictorChoice::Nglr),
        ),
        (
            "v1_f32_3d_rel_interp",
            interp_field.clone(),
            ChunkInfo::new(DType::F32, &[9, 17, 33]).unwrap(),
            Params::rel(1e-2).with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // The same field as written since coder id 2 (far contexts).
            "v1_f32_3d_rel_interp_far",
            interp_field.clone(),
            ChunkInfo::new(DType::F32, &[9, 17, 33]).unwrap(),
            Params::rel(1e-2).with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // Multi-dimensional interpolation (id 4) with the coarse feedback step 11.
            "v1_f32_3d_rel_interp_md",
            md_field.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-2).with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // The same field as written since coder id 2 (far contexts).
            "v1_f32_3d_rel_interp_md_far",
            md_field.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-2).with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // Interpolation with a cubic kernel fitted to the block (directory byte 3).
            "v1_f32_3d_rel_interp_kernel",
            oscillating.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-2).with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // Lorenzo with fitted weights (block predictor id 5), chosen by plain auto.
            "v1_f32_4d_rel_fitted_lorenzo",
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("testdata/wrf_T_4x14x48x48.f32"),
            )
            .unwrap(),
            ChunkInfo::new(DType::F32, &[4, 14, 48, 48]).unwrap(),
            Params::rel(1e-3),
        ),
        (
            // The rANS coder (chunk coder 3): Lorenzo-family blocks, coder id 4, rANS
            // segments.
            "v1_f32_3d_rel_rans",
            oscillating.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-4).with_coder(Coder::Rans),
        ),
        (
            // rANS with far contexts (coder id 5) on interpolated blocks.
            "v1_f32_3d_rel_rans_far",
            md_field.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-4)
                .with_coder(Coder::Rans)
                .with_predictor(resid::PredictorChoice::Interp),
        ),
        (
            // rANS on a block whose halves differ: quiet slices, then noisy ones (segments).
            "v1_f32_3d_rel_rans_segments",
            two_regimes,
            ChunkInfo::new(DType::F32, &[16, 64, 64]).unwrap(),
            Params::abs(1e-3)
                .with_coder(Coder::Rans)
                .with_predictor(resid::PredictorChoice::Lorenzo),
        ),
        (
            // A smooth block under 2 bits per value: the range coder's coding inside a rANS
            // block (first payload byte 0).
            "v1_f32_3d_rel_rans_range",
            interp_field.clone(),
            ChunkInfo::new(DType::F32, &[9, 17, 33]).unwrap(),
            Params::rel(1e-2)
                .with_coder(Coder::Rans)
                .with_predictor(resid::PredictorChoice::Lorenzo),
        ),
        (
            // Predictor word 5 as first written: NGLR blocks with a linear network (WEIGHTS
            // kind 1, output weights of the hidden layer all zero), which decoders may
            // evaluate without the hidden layer.
            "v1_f32_3d_rel_nglr_linear",
            oscillating.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-3).with_predictor(resid::PredictorChoice::AutoLinear),
        ),
        (
            // Predictor word 5 as written since WEIGHTS kind 2: the same field, NGLR blocks
            // with a linear bias over the raw features.
            "v1_f32_3d_rel_nglr_linear_kind2",
            oscillating.clone(),
            ChunkInfo::new(DType::F32, &[24, 24, 24]).unwrap(),
            Params::rel(1e-3).with_predictor(resid::PredictorChoice::AutoLinear),
        ),
        (
            "v1_f32_stored",
            big,
            ChunkInfo::new(DType::F32, &[64]).unwrap(),
            Params::abs(1e-4),
        ),
        (
            // Format version 2: an HDF5 edge chunk (data 5x9 of 8x12, padded with a netCDF-style
            // fill value), its REGION section first, the padding restored exactly.
            "v2_f32_2d_rel_edge_region",
            edge_chunk(),
            ChunkInfo::new(DType::F32, &[8, 12])
                .unwrap()
                .with_padding(EDGE_FILL.to_bits() as u64),
            Params::rel(1e-3),
        ),
        (
            // Format version 3: the wavelet layout, a 2-D f32 field with a sharp front (points
            // the quantized transform leaves out of bound are corrected).
            "v3_f32_2d_rel_wavelet",
            front_field(),
            ChunkInfo::new(DType::F32, &[48, 70]).unwrap(),
            Params::rel(1e-3).with_predictor(resid::PredictorChoice::Wavelet),
        ),
        (
            // The wavelet layout on a 3-D f64 grid of odd extents, levels along all three.
            "v3_f64_3d_abs_wavelet",
            (0..17 * 20 * 33)
                .map(|i| {
                    let (z, y, x) = ((i / 660) as f64, ((i / 33) % 20) as f64, (i % 33) as f64);
                    (0.3 * x + 0.2 * y).sin() * 40.0 + (0.17 * z - 0.1 * x).cos() * 7.0
                })
                .flat_map(|v: f64| v.to_le_bytes())
                .collect(),
            ChunkInfo::new(DType::F64, &[17, 20, 33]).unwrap(),
            Params::abs(1e-4).with_predictor(resid::PredictorChoice::Wavelet),
        ),
    ]
}

/// A smooth 48x70 field with a raised diamond: sharp edges the transform rings around.
fn front_field() -> Vec<u8> {
    (0..48 * 70)
        .map(|i| {
            let (y, x): (i32, i32) = (i / 70, i % 70);
            if (x - 35).abs() + (y - 20).abs() < 12 {
                10.0
            } else {
                (x as f32 * 0.05).sin() + (y as f32 * 0.08).cos()
            }
        })
        .flat_map(|v: f32| v.to_le_bytes())
        .collect()
}

/// netCDF's default `float` fill value.
const EDGE_FILL: f32 = 9.96921e36;

/// An 8x12 chunk whose first 5x9 values are data and the rest the fill value.
fn edge_chunk() -> Vec<u8> {
    (0..8 * 12)
        .map(|i| {
            let (y, x) = (i / 12, i % 12);
            if y < 5 && x < 9 {
                280.0 + (x as f32 * 0.4).sin() * 3.0 + y as f32 * 0.7
            } else {
                EDGE_FILL
            }
        })
        .flat_map(|v: f32| v.to_le_bytes())
        .collect()
}

#[test]
fn golden_chunks_decode_to_the_same_bytes() {
    let mut seen = 0;
    for (name, _, _, _) in cases() {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        let expected = std::fs::read(dir().join(format!("{name}.out"))).unwrap();
        assert_eq!(resid::decompress(&chunk).unwrap(), expected, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 23);
}

#[test]
fn edge_golden_is_version_2_with_its_region() {
    let chunk = std::fs::read(dir().join("v2_f32_2d_rel_edge_region.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert_eq!(s.header.version, 2);
    assert_eq!(s.sections[0].0, resid::format::section::REGION, "{s:?}");
    assert_eq!(
        s.region,
        Some((vec![5, 9], EDGE_FILL.to_bits() as u64)),
        "{s:?}"
    );
    // The bound is relative to the data's range (about 13), not to the fill value's.
    assert!(s.header.eb < 0.02, "{s:?}");
}

#[test]
fn wavelet_goldens_are_version_3_with_corrections() {
    for (name, rank, ds) in [
        ("v3_f32_2d_rel_wavelet", 2, resid::DType::F32),
        ("v3_f64_3d_abs_wavelet", 3, resid::DType::F64),
    ] {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        let s = resid::inspect(&chunk).unwrap();
        assert_eq!(s.header.version, 3, "{name}");
        assert_eq!(s.header.layout, resid::format::Layout::Wavelet, "{name}");
        assert_eq!(s.header.dtype, ds, "{name}");
        let ids: Vec<u8> = s.sections.iter().map(|s| s.0).collect();
        use resid::format::section::{ESCAPES, WAVELET};
        assert_eq!(ids, [WAVELET, ESCAPES], "{name}");
        // The WAVELET payload: id, levels, then the lengths; the corrections come last and
        // start with their count.
        let payload = &chunk[64 + 8 * rank + 16..][..s.sections[0].1];
        assert_eq!(payload[0], resid::format::wavelet::CDF97, "{name}");
        assert_eq!(
            payload[4],
            resid::format::wavelet::Grouping::Shared as u8,
            "{name}"
        );
        let dims = if rank == 2 { [1, 48, 70] } else { [17, 20, 33] };
        let w = resid::format::wavelet::read(payload, dims).unwrap();
        let mut count = 0;
        resid::format::wavelet::for_each_correction(
            w.corrections,
            dims.iter().product(),
            |_, _| count += 1,
        )
        .unwrap();
        if rank == 2 {
            assert!(count > 0, "{name}: the front needs corrections");
        }
    }
}

/// A wavelet chunk large enough for one range-coder block per subband (grouping 0): its
/// decoded bytes (about 1 MB) are kept as their CRC-32, not as a file.
const SUBBANDS_GOLDEN: &str = "v3_f32_2d_rel_wavelet_subbands";
const SUBBANDS_GOLDEN_CRC: u32 = 0xd8ec8219;

fn subbands_field() -> (Vec<u8>, ChunkInfo) {
    let (n1, n2) = (520, 520);
    let v: Vec<u8> = (0..n1 * n2)
        .map(|i| {
            let (y, x) = ((i / n2) as f32, (i % n2) as f32);
            (x * 0.031).sin() * (y * 0.027).cos() * 5.0 + (0.011 * (x + 2.0 * y)).sin() * 3.0
        })
        .flat_map(|v: f32| v.to_le_bytes())
        .collect();
    (v, ChunkInfo::new(DType::F32, &[n1, n2]).unwrap())
}

#[test]
fn wavelet_subbands_golden_decodes_to_the_same_bytes() {
    let path = dir().join(format!("{SUBBANDS_GOLDEN}.rsid"));
    if std::env::var_os("RESID_WRITE_GOLDEN").is_some() && !path.exists() {
        let (data, chunk) = subbands_field();
        let p = Params::rel(1e-2).with_predictor(resid::PredictorChoice::Wavelet);
        std::fs::write(&path, resid::compress(&data, &chunk, &p).unwrap()).unwrap();
    }
    let chunk = std::fs::read(&path).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert_eq!(s.header.layout, resid::format::Layout::Wavelet);
    let payload = &chunk[64 + 8 * 2 + 16..][..s.sections[0].1];
    assert_eq!(payload[4], resid::format::wavelet::Grouping::Subbands as u8);
    let d = resid::decompress(&chunk).unwrap();
    let crc = resid::format::crc32(&d);
    if std::env::var_os("RESID_WRITE_GOLDEN").is_some() {
        eprintln!("{SUBBANDS_GOLDEN}: decoded CRC-32 {crc:#010x}");
    }
    assert_eq!(crc, SUBBANDS_GOLDEN_CRC, "{SUBBANDS_GOLDEN}");
}

#[test]
fn linear_nglr_golden_has_a_linear_network() {
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_nglr_linear.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert!(s.block_predictors.contains(&3), "{s:?}");
    assert_eq!(s.sections[0].0, resid::format::section::WEIGHTS, "{s:?}");
    // The WEIGHTS payload follows the 64 + 8 * rank byte header and its 16-byte section header.
    let payload = &chunk[64 + 8 * 3 + 16..][..s.sections[0].1];
    let resid::nn::weights::Model::Network(net) = resid::nn::weights::Model::read(payload).unwrap()
    else {
        panic!("kind 1 expected");
    };
    assert_eq!(net.hidden, 1);
    assert!(net.w2.iter().all(|&w| w == 0), "{net:?}");
    assert!(net.v.iter().any(|&v| v != 0), "{net:?}");
}

#[test]
fn linear_nglr_kind2_golden_has_a_linear_bias() {
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_nglr_linear_kind2.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert!(s.block_predictors.contains(&3), "{s:?}");
    assert_eq!(s.sections[0].0, resid::format::section::WEIGHTS, "{s:?}");
    let payload = &chunk[64 + 8 * 3 + 16..][..s.sections[0].1];
    assert_eq!(payload[0], resid::nn::weights::KIND_LINEAR);
    let resid::nn::weights::Model::Linear(lin) = resid::nn::weights::Model::read(payload).unwrap()
    else {
        panic!("kind 2 expected");
    };
    assert!(lin.w.iter().any(|&w| w != 0), "{lin:?}");
}

#[test]
fn interp_md_golden_uses_id_4_with_a_coarse_step() {
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_interp_md.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert_eq!(s.block_predictors, [4]);
    // The directory entry follows the 64 + 8 * rank byte header, the 16-byte section header
    // and the u32 block count: predictor id, coder id, coarse feedback step, kernel (0 before
    // kernels were fitted).
    let entry = &chunk[64 + 8 * 3 + 16 + 4..][..4];
    assert_eq!(entry, [4, 0, 11, 0]);
}

#[test]
fn interpolation_goldens_use_coder_2_since_far_contexts() {
    for name in ["v1_f32_3d_rel_interp_far", "v1_f32_3d_rel_interp_md_far"] {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        let s = resid::inspect(&chunk).unwrap();
        assert!(
            s.block_predictors.iter().all(|&p| p == 2 || p == 4),
            "{name}: {s:?}"
        );
        // The first directory entry: predictor id, coder id, coarse step, kernel.
        let entry = &chunk[64 + 8 * 3 + 16 + 4..][..4];
        assert_eq!(entry[1], 2, "{name}: {entry:?}");
    }
}

#[test]
fn packed_golden_uses_coder_3() {
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_packed.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert_eq!(s.header.coder, Coder::Packed);
    assert_eq!(s.block_predictors, [1], "{s:?}");
    let entry = &chunk[64 + 8 * 3 + 16 + 4..][..12];
    assert_eq!(entry[..4], [1, 3, 0, 0]);
    // The payload: one width byte per 32 values, padded to 4 bytes, then 4 bytes per width.
    let len = u32::from_le_bytes(entry[4..8].try_into().unwrap()) as usize;
    let payload = &chunk[64 + 8 * 3 + 16 + 4 + 12..][..len];
    let groups = (6 * 10 * 12usize).div_ceil(32);
    let words: usize = payload[..groups].iter().map(|&w| w as usize).sum();
    assert_eq!(len, groups.next_multiple_of(4) + 4 * words);
}

#[test]
fn kernel_golden_has_a_fitted_cubic() {
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_interp_kernel.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert!(
        s.block_predictors.iter().all(|&p| p == 2 || p == 4),
        "{s:?}"
    );
    // Directory byte 3 holds k - 5 for the finest and the coarser levels as signed nibbles:
    // this field wants steeper cubics than the classic k = 5 at both.
    let entry = &chunk[64 + 8 * 3 + 16 + 4..][..4];
    let (fine, coarse) = (entry[3] & 0xf, entry[3] >> 4);
    assert!(
        (1..8).contains(&fine) && (1..8).contains(&coarse),
        "{entry:?}"
    );
}

#[test]
fn fitted_lorenzo_golden_has_weights_summing_to_one() {
    let chunk = std::fs::read(dir().join("v1_f32_4d_rel_fitted_lorenzo.rsid")).unwrap();
    let s = resid::inspect(&chunk).unwrap();
    assert_eq!(s.block_predictors, [5], "{s:?}");
    // One block: the directory entry (after the 64 + 8 * rank byte header, rank 4 here, the
    // section header and the block count), then its payload, which opens with the weights.
    let entry = 64 + 8 * 4 + 16 + 4;
    assert_eq!(chunk[entry], 5);
    let w: Vec<i32> = chunk[entry + 12..entry + 26]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as i32)
        .collect();
    assert_eq!(w.iter().sum::<i32>(), 4096, "{w:?}");
    assert_ne!(w, [4096, 4096, 4096, -4096, -4096, -4096, 4096]);
}

#[test]
#[ignore]
fn write_golden() {
    write_missing_goldens(cases());
}

/// The first block of a golden chunk of rank `rank`: (predictor id, coder id, payload).
fn first_block(chunk: &[u8], rank: usize) -> (u8, u8, &[u8]) {
    let dir = 64 + 8 * rank + 16;
    let count = u32::from_le_bytes(chunk[dir..dir + 4].try_into().unwrap()) as usize;
    let entry = &chunk[dir + 4..dir + 16];
    let len = u32::from_le_bytes(entry[4..8].try_into().unwrap()) as usize;
    let start = dir + 4 + 12 * count;
    (entry[0], entry[1], &chunk[start..start + len])
}

#[test]
fn grouped_goldens_cover_its_paths() {
    for name in ["v1_f32_3d_rel_grouped", "v1_f32_3d_abs_grouped_blocks"] {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        assert_eq!(resid::inspect(&chunk).unwrap().header.coder, Coder::Grouped);
        let (p, c, payload) = first_block(&chunk, 3);
        assert_eq!((p, c), (1, 6), "{name}");
        // The rough chunk is one block whose groups take many widths, and change width by
        // large steps (the Exp-Golomb codes of several lengths).
        if name.ends_with("blocks") {
            let mut r = vec![0i32; 16 * 64 * 64];
            resid::entropy::grouped::decode(payload, &mut r).unwrap();
            let widths: Vec<u32> = r
                .chunks(8)
                .map(|g| {
                    let or = g
                        .iter()
                        .fold(0u32, |a, &v| a | ((v << 1) ^ (v >> 31)) as u32);
                    32 - or.leading_zeros()
                })
                .collect();
            let distinct: std::collections::BTreeSet<u32> = widths.iter().copied().collect();
            let jump = widths.windows(2).map(|p| p[0].abs_diff(p[1])).max();
            eprintln!("{name}: widths {distinct:?}, largest change {jump:?}");
            assert!(distinct.len() >= 10, "{name}: widths {distinct:?}");
            assert!(jump >= Some(7), "{name}: largest change {jump:?}");
        }
    }
}

#[test]
fn rans_goldens_cover_its_paths() {
    // (golden, predictor id, coder id, the rANS payload's segment byte: 0 = range coded)
    for (name, predictor, coder, segments) in [
        ("v1_f32_3d_rel_rans_far", 4, 5, 1),
        ("v1_f32_3d_rel_rans_segments", 1, 4, 8),
        ("v1_f32_3d_rel_rans_range", 1, 4, 0),
    ] {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        assert_eq!(resid::inspect(&chunk).unwrap().header.coder, Coder::Rans);
        let (p, c, payload) = first_block(&chunk, 3);
        assert_eq!((p, c, payload[0]), (predictor, coder, segments), "{name}");
    }
    // Fitted Lorenzo: its weights open the payload, the rANS coding follows.
    let chunk = std::fs::read(dir().join("v1_f32_3d_rel_rans.rsid")).unwrap();
    let (p, c, _) = first_block(&chunk, 3);
    assert_eq!((p, c), (5, 4));
}
