//! Times every block coder alone on the Lorenzo residuals of raw fields: the entropy stage
//! without prediction, trials or the container, so a coder change can be judged by itself.
//!
//! `cargo run --release --example coder_speed -- FILE... [rel=R,R..] [repeat=N] [coder=NAME]`
//!
//! Each field (`NAME_<d0>x..x<dn>.f32|f64`, leading dims merged to 3-D) is quantized on the
//! grid of the relative bound, Lorenzo residuals are taken per block of 2^18 values at
//! most (as the codec splits a chunk of that shape), and each coder encodes and decodes them (best of `repeat`).
//! Prints bits/value and encode / decode MB/s of raw float data.

use std::time::Instant;

use resid::entropy::{BlockCoder, Classes, REGISTRY};
use resid::predict::lorenzo::Lorenzo;
use resid::{field, DType};

#[path = "../tests/common/names.rs"]
mod names;
use names::{as_3d, parse_name};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key).map(str::to_string))
    };
    let rels: Vec<f64> = value("rel=")
        .map(|v| v.split(',').map(|r| r.parse().expect("rel")).collect())
        .unwrap_or_else(|| vec![1e-3, 1e-4]);
    let repeat: usize = value("repeat=").map_or(3, |v| v.parse().expect("repeat"));
    let only = value("coder=");
    for path in args.iter().filter(|a| !a.contains('=')) {
        let (x, dims, size) = read_field(path);
        for &rel in &rels {
            let blocks = residual_blocks(&x, dims, rel);
            let name = std::path::Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy();
            for e in REGISTRY
                .iter()
                .filter(|e| only.as_deref().map_or(true, |o| o == e.name))
            {
                let coder = BlockCoder::from_id(e.id).unwrap();
                let (bits, enc, dec) = time_coder(coder, &blocks, repeat);
                let mb = (x.len() * size) as f64 / 1e6;
                println!(
                    "{name:<48} rel {rel:>7.0e} {:<9} bits/val {:7.3} enc {:7.1} MB/s dec {:7.1} MB/s",
                    e.name,
                    bits / x.len() as f64,
                    mb / enc,
                    mb / dec
                );
            }
        }
    }
}

type Blocks = Vec<(Vec<i32>, [usize; 3])>;

/// (bits, best encode seconds, best decode seconds) over all blocks.
fn time_coder(coder: BlockCoder, blocks: &Blocks, repeat: usize) -> (f64, f64, f64) {
    let (mut enc, mut dec, mut bits) = (f64::MAX, f64::MAX, 0.0);
    for _ in 0..repeat {
        let t = Instant::now();
        let coded: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(r, ext)| coder.encode(r, *ext, Classes::Single))
            .collect();
        enc = enc.min(t.elapsed().as_secs_f64());
        bits = coded.iter().map(|c| c.len() as f64 * 8.0).sum();
        let t = Instant::now();
        for ((r, ext), c) in blocks.iter().zip(&coded) {
            let mut back = vec![0; r.len()];
            coder.decode(c, *ext, Classes::Single, &mut back).unwrap();
            assert!(back == *r, "{} does not round-trip", coder.name());
        }
        dec = dec.min(t.elapsed().as_secs_f64());
    }
    (bits, enc, dec)
}

/// The field's values, its dims merged to 3-D, and the size of one value in bytes.
fn read_field(path: &str) -> (Vec<f64>, [usize; 3], usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file = std::path::Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy();
    let (dtype, shape) = parse_name(&file).expect("NAME_<d0>x..x<dn>.f32|f64");
    let s = as_3d(&shape);
    let mut d = [1usize; 3];
    d[3 - s.len()..].copy_from_slice(&s);
    let x = match dtype {
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
    };
    (x, d, dtype.size())
}

/// Lorenzo residuals of the field on the grid of `rel`, per block as the codec splits a
/// chunk of the field's shape (`field::block_extents`: at most 2^18 values).
fn residual_blocks(x: &[f64], dims: [usize; 3], rel: f64) -> Blocks {
    let finite = x.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let step = 2.0 * rel * (hi - lo).max(f64::MIN_POSITIVE);
    let q: Vec<i32> = x
        .iter()
        .map(|&v| ((if v.is_finite() { v } else { lo } - lo) / step).round() as i32)
        .collect();
    let blocks =
        field::blocks(dims, field::block_extents(dims, field::BLOCK_TARGET)).expect("blocks");
    blocks
        .iter()
        .map(|b| {
            let q = field::gather(&q, dims, b);
            let mut r = vec![0; q.len()];
            Lorenzo.residuals(&q, b.ext, &mut r);
            (r, b.ext)
        })
        .collect()
}
