//! Golden chunks with the NeurLZ enhancer: they must keep decoding to the same bytes (the
//! fixed-point inference is part of the format). Same convention as `tests/golden.rs`: files
//! are added, never rewritten; `RESID_WRITE_GOLDEN=1 cargo test --release --test golden_neurlz
//! -- --ignored` writes missing ones.

mod common;

use common::{golden_dir as dir, write_missing_goldens};
use resid::enhance::neurlz;
use resid::format::section;
use resid::{ChunkInfo, DType, Enhancer, Params};

fn field(n0: usize, n1: usize, n2: usize, phase: f64) -> Vec<u8> {
    common::bytes32(&common::wave_field(n0, n1, n2, phase))
}

fn cases() -> Vec<(&'static str, Vec<u8>, ChunkInfo, Params)> {
    let mut stacked = field(4, 48, 48, 0.0);
    stacked.extend(field(4, 48, 48, 0.7));
    vec![
        (
            "v1_f32_neurlz_strict",
            field(8, 64, 64, 0.3),
            ChunkInfo::new(DType::F32, &[8, 64, 64]).unwrap(),
            Params::rel(1e-2)
                .with_enhancer(Enhancer::Strict)
                .with_enhancer_budget(1)
                .with_enhancer_force(true),
        ),
        (
            "v1_f32_neurlz_relaxed_cross",
            stacked,
            ChunkInfo::new(DType::F32, &[2, 4, 48, 48]).unwrap(),
            Params::rel(2e-2)
                .with_enhancer(Enhancer::RelaxedCross)
                .with_enhancer_budget(1)
                .with_enhancer_force(true),
        ),
        // Section kind 2: the neighbouring slices are inputs too.
        (
            "v1_f32_neurlz_volume_strict",
            field(6, 40, 56, 0.5),
            ChunkInfo::new(DType::F32, &[6, 40, 56]).unwrap(),
            Params::rel(1e-2)
                .with_enhancer(Enhancer::Strict)
                .with_enhancer_budget(1)
                .with_enhancer_force(true),
        ),
        (
            "v1_f32_neurlz_volume_relaxed_cross",
            {
                let mut v = field(3, 48, 48, 0.2);
                v.extend(field(3, 48, 48, 0.9));
                v
            },
            ChunkInfo::new(DType::F32, &[2, 3, 48, 48]).unwrap(),
            Params::rel(2e-2)
                .with_enhancer(Enhancer::RelaxedCross)
                .with_enhancer_budget(1)
                .with_enhancer_force(true),
        ),
    ]
}

/// The section kind each golden chunk was written with: format 1.0 wrote kind 1 only.
fn kind(name: &str) -> u8 {
    if name.contains("volume") {
        neurlz::KIND_NEURLZ_3D
    } else {
        neurlz::KIND_NEURLZ
    }
}

#[test]
fn golden_enhanced_chunks_decode_to_the_same_bytes() {
    for (name, _, _, _) in cases() {
        let chunk = std::fs::read(dir().join(format!("{name}.rsid"))).unwrap();
        let expected = std::fs::read(dir().join(format!("{name}.out"))).unwrap();
        let s = resid::inspect(&chunk).unwrap();
        let &(id, len) = s.sections.last().unwrap();
        assert_eq!(id, section::ENHANCE, "{name}");
        assert_eq!(chunk[chunk.len() - len], kind(name), "{name}");
        assert_eq!(resid::decompress(&chunk).unwrap(), expected, "{name}");
    }
}

#[test]
#[ignore]
fn write_golden() {
    write_missing_goldens(cases());
}
