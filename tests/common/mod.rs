//! Helpers shared by the integration tests (`mod common;`): the golden chunks
//! (`tests/golden.rs`, `tests/golden_neurlz.rs`), the shared data set and its file names, field
//! bytes and a synthetic field. Each test crate uses some of them.
#![allow(dead_code)]

use std::path::PathBuf;

mod names;
// Each test crate uses some of these helpers.
#[allow(unused_imports)]
pub use names::{as_3d, parse_name};

use resid::{ChunkInfo, Params};

/// The shared data set of real fields: `RESID_DATA`, else `../shared/data` beside the
/// repository (it may not exist: the tests that read it skip with a message, as on CI).
pub fn data_dir() -> PathBuf {
    std::env::var_os("RESID_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// Little-endian bytes of `x`.
pub fn bytes32(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of `x`.
pub fn bytes64(x: &[f64]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A smooth `[n0, n1, n2]` f32 field with some fine structure (sines; `phase` shifts it), the
/// NeurLZ tests' field.
pub fn wave_field(n0: usize, n1: usize, n2: usize, phase: f64) -> Vec<f32> {
    let mut v = Vec::with_capacity(n0 * n1 * n2);
    for z in 0..n0 {
        for y in 0..n1 {
            for x in 0..n2 {
                let (z, y, x) = (z as f64, y as f64, x as f64);
                let s = (x * 0.11 + phase).sin() * (y * 0.07).cos() * 3.0
                    + (0.05 * (x + y) + 0.3 * z).sin()
                    + 0.3 * ((x * 0.9 + phase).sin() * (y * 0.8).sin());
                v.push(s as f32);
            }
        }
    }
    v
}

/// `tests/golden/`: `<name>.rsid` is a chunk, `<name>.out` the bytes it decodes to.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Writes the golden files of the cases that have none yet (existing files are never
/// rewritten). Does nothing unless `RESID_WRITE_GOLDEN` is set.
pub fn write_missing_goldens(cases: Vec<(&'static str, Vec<u8>, ChunkInfo, Params)>) {
    if std::env::var_os("RESID_WRITE_GOLDEN").is_none() {
        return;
    }
    for (name, data, chunk, params) in cases {
        let path = golden_dir().join(format!("{name}.rsid"));
        if path.exists() {
            continue;
        }
        let c = resid::compress(&data, &chunk, &params).unwrap();
        std::fs::write(&path, &c).unwrap();
        std::fs::write(
            golden_dir().join(format!("{name}.out")),
            resid::decompress(&c).unwrap(),
        )
        .unwrap();
    }
}
