//! Compresses raw fields (`NAME_<d0>x<d1>...<.f32|.f64>`) at several relative bounds and prints
//! bits per value, max error / bound, PSNR and single-chunk throughput.
//!
//! `cargo run --release --example eval -- FILE... [lz4|packed|rans|grouped] [interp|lorenzo|nglr|auto-nglr|auto-linear] [budget=N] [rel=R,R..]
//! [enh=strict|relaxed] [enh-budget=N] [enh-force] [psnr=P,P..] [repeat=N]`
//!
//! `psnr=` runs PSNR targets (dB) instead of relative bounds. `repeat=N` times the best of
//! N encodes and N decodes (default 1).

use std::time::Instant;

use resid::{ChunkInfo, Coder, DType, Enhancer, ErrorMode, Params, PredictorChoice};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let coder = if args.iter().any(|a| a == "lz4") {
        Coder::Lz4
    } else if args.iter().any(|a| a == "packed") {
        Coder::Packed
    } else if args.iter().any(|a| a == "rans") {
        Coder::Rans
    } else if args.iter().any(|a| a == "grouped") {
        Coder::Grouped
    } else {
        Coder::Range
    };
    let predictor = if args.iter().any(|a| a == "interp") {
        PredictorChoice::Interp
    } else if args.iter().any(|a| a == "lorenzo") {
        PredictorChoice::Lorenzo
    } else if args.iter().any(|a| a == "auto-linear") {
        PredictorChoice::AutoLinear
    } else if args.iter().any(|a| a == "auto-nglr") {
        PredictorChoice::AutoNglr
    } else if args.iter().any(|a| a == "nglr") {
        PredictorChoice::Nglr
    } else if args.iter().any(|a| a == "wavelet") {
        PredictorChoice::Wavelet
    } else {
        PredictorChoice::Auto
    };
    let budget: u8 = args
        .iter()
        .find_map(|a| a.strip_prefix("budget="))
        .map_or(0, |b| b.parse().unwrap());
    let enhancer = match args.iter().find_map(|a| a.strip_prefix("enh=")) {
        Some("strict") => Enhancer::Strict,
        Some("relaxed") => Enhancer::Relaxed,
        Some(other) => panic!("enh={other}: strict or relaxed"),
        None => Enhancer::Off,
    };
    let enhancer_budget: u8 = args
        .iter()
        .find_map(|a| a.strip_prefix("enh-budget="))
        .map_or(0, |b| b.parse().unwrap());
    let enhancer_force = args.iter().any(|a| a == "enh-force");
    let repeat: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("repeat="))
        .map_or(1, |r| r.parse::<usize>().unwrap().max(1));
    let rels: Vec<f64> = args
        .iter()
        .find_map(|a| a.strip_prefix("rel="))
        .map_or(vec![1e-2, 1e-3, 1e-4, 1e-5], |r| {
            r.split(',').map(|v| v.parse().unwrap()).collect()
        });
    let psnrs: Vec<f64> = args
        .iter()
        .find_map(|a| a.strip_prefix("psnr="))
        .map_or(vec![], |r| {
            r.split(',').map(|v| v.parse().unwrap()).collect()
        });
    for path in args.iter().filter(|a| a.contains('_') && !a.contains('=')) {
        let name = path.rsplit('/').next().unwrap();
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let dtype = if ext == "f64" { DType::F64 } else { DType::F32 };
        let shape: Vec<usize> = stem
            .rsplit('_')
            .next()
            .unwrap()
            .split('x')
            .map(|d| d.parse().unwrap())
            .collect();
        let data = std::fs::read(path).unwrap();
        let chunk = ChunkInfo::new(dtype, &shape).unwrap();
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
        let (mn, mx) = x
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |a, &v| (a.0.min(v), a.1.max(v)));
        // Each run: its label (the relative bound or the PSNR target) and its parameters.
        let runs: Vec<(String, Params)> = if psnrs.is_empty() {
            rels.iter()
                .map(|&rel| (format!("rel  {rel:>6.0e}"), Params::abs(rel * (mx - mn))))
                .collect()
        } else {
            psnrs
                .iter()
                .map(|&t| (format!("psnr {t:>6}"), Params::new(ErrorMode::Psnr, t)))
                .collect()
        };
        for (label, p) in runs {
            let p = p
                .with_coder(coder)
                .with_predictor(predictor)
                .with_nglr_budget(budget);
            let p = Params {
                enhancer,
                enhancer_budget,
                enhancer_force,
                ..p
            };
            let (mut te, mut td) = (f64::MAX, f64::MAX);
            let mut c = Vec::new();
            for _ in 0..repeat {
                let t = Instant::now();
                c = resid::compress(&data, &chunk, &p).unwrap();
                te = te.min(t.elapsed().as_secs_f64());
            }
            // The pointwise bound the chunk records (for PSNR targets, the grid's).
            let eb = resid::inspect(&c).map_or(f64::NAN, |s| s.header.eb);
            let mut d = Vec::new();
            for _ in 0..repeat {
                let t = Instant::now();
                d = resid::decompress(&c).unwrap();
                td = td.min(t.elapsed().as_secs_f64());
            }
            let y: Vec<f64> = match dtype {
                DType::F32 => d
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                DType::F64 => d
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            };
            let mut maxe: f64 = 0.0;
            let mut sse = 0.0;
            for (a, b) in x.iter().zip(&y) {
                let e = (a - b).abs();
                maxe = maxe.max(e);
                sse += e * e;
            }
            let psnr = 20.0 * ((mx - mn) / (sse / x.len() as f64).sqrt()).log10();
            let mb = data.len() as f64 / 1e6;
            println!(
                "{:<48} {label} bits/val {:>7.3} ratio {:>8.2} maxerr/eb {:.4} psnr {:>6.2} enc {:>6.1} MB/s dec {:>6.1} MB/s",
                name, c.len() as f64 * 8.0 / x.len() as f64, data.len() as f64 / c.len() as f64,
                maxe / eb, psnr, mb / te, mb / td
            );
            if let Ok(sum) = resid::inspect(&c) {
                let n = sum.block_predictors.iter().filter(|&&p| p == 3).count();
                if n > 0 {
                    println!("    nglr blocks {n}/{}", sum.block_predictors.len());
                }
            }
        }
    }
}
