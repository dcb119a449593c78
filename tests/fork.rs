//! A process forked after resid ran (Python's `multiprocessing` and PyTorch's `DataLoader` fork
//! on Linux) still compresses and decodes: rayon's pool comes across `fork` without its
//! threads, so the child gets worker threads of its own (`resid::pool`), and it leaves the
//! parent's GPU, if any, alone (`backend::device` is `None` there; `tests/gpu.rs` checks that
//! on a GPU machine). Before `resid::pool` the child waited forever.

#![cfg(unix)]

mod forked;

use resid::{ChunkInfo, DType, Params};

#[test]
fn a_forked_child_compresses_and_decodes() {
    let shape = [64usize, 96, 128];
    let x: Vec<u8> = (0..shape.iter().product::<usize>())
        .flat_map(|i| {
            let (z, y, w) = (i / (96 * 128), (i / 128) % 96, i % 128);
            let v = (z as f32 * 0.11).sin() * 40.0 + (y as f32 * 0.07).cos() * (w as f32 * 0.05);
            v.to_le_bytes()
        })
        .collect();
    let chunk = ChunkInfo::new(DType::F32, &shape).unwrap();
    let p = Params::rel(1e-4);
    // The parent starts rayon's pool.
    let coded = resid::compress(&x, &chunk, &p).unwrap();
    let back = resid::decompress(&coded).unwrap();
    assert!(!resid::pool::forked());
    // The child's chunk must equal the parent's (it waited forever before `resid::pool`).
    forked::in_forked_child(|| {
        resid::pool::forked()
            && resid::backend::device().is_none()
            && resid::compress(&x, &chunk, &p).ok().as_ref() == Some(&coded)
            && resid::decompress(&coded).ok().as_ref() == Some(&back)
    })
    .unwrap_or_else(|e| panic!("{e}"));
}
