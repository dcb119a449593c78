//! Helpers shared by the golden-chunk tests (`tests/golden.rs`, `tests/golden_neurlz.rs`).

use std::path::PathBuf;

use resid::{ChunkInfo, Params};

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
