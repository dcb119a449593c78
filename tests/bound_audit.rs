//! Bound audit (issue #8): every field of the shared data set (`../shared/data`, or the
//! directory in `RESID_DATA`), each as one chunk, at relative bounds 1e-2..1e-6, absolute
//! bounds (fractions of the field's range, and a fixed 1e-3 that is below half an ulp for
//! large-magnitude f32 fields), NRMSE and PSNR targets, with both coders: every decoded value
//! within the bound, NaN/Inf/subnormals bit for bit, the NRMSE/PSNR target met. Auto with
//! NGLR and auto with a linear bias (cd predictor words 4 and 5) are audited too, at rel
//! 1e-2..1e-4 with the range coder, and the wavelet word (6) at every relative and absolute
//! bound.
//! Skips (with a message) when the data set is absent, as on CI.
//!
//! `cargo test --release --test bound_audit -- --nocapture` prints the worst error/bound per
//! field and mode. `RESID_AUDIT_QUICK=1` runs one bound per mode.

mod common;

use common::{data_dir, parse_name};
use resid::{ChunkInfo, Coder, DType, ErrorMode, Params, PredictorChoice};

fn values(bytes: &[u8], dtype: DType) -> Vec<(u64, f64)> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| {
                let v = f32::from_le_bytes(c.try_into().unwrap());
                (v.to_bits() as u64, v as f64)
            })
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let v = f64::from_le_bytes(c.try_into().unwrap());
                (v.to_bits(), v)
            })
            .collect(),
    }
}

fn special(bits: u64, dtype: DType) -> bool {
    match dtype {
        DType::F32 => {
            let v = f32::from_bits(bits as u32);
            !v.is_finite() || v.is_subnormal()
        }
        DType::F64 => {
            let v = f64::from_bits(bits);
            !v.is_finite() || v.is_subnormal()
        }
    }
}

struct Outcome {
    /// max |x - x'| / pointwise bound over the non-special values (0 when the bound is 0).
    worst: f64,
    /// achieved NRMSE / target (NRMSE and PSNR modes).
    target_ratio: Option<f64>,
    ratio: f64,
    problems: Vec<String>,
}

fn audit(bytes: &[u8], chunk: &ChunkInfo, x: &[(u64, f64)], range: f64, p: &Params) -> Outcome {
    let mut problems = Vec::new();
    let c = match resid::compress(bytes, chunk, p) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                worst: f64::NAN,
                target_ratio: None,
                ratio: 0.0,
                problems: vec![format!("compress failed: {e}")],
            }
        }
    };
    let header_eb = resid::inspect(&c).map(|s| s.header.eb).unwrap_or(f64::NAN);
    let d = match resid::decompress_limited(&c, bytes.len()) {
        Ok(d) => d,
        Err(e) => {
            return Outcome {
                worst: f64::NAN,
                target_ratio: None,
                ratio: 0.0,
                problems: vec![format!("decompress failed: {e}")],
            }
        }
    };
    let y = values(&d, chunk.dtype);
    let eb = match p.mode {
        ErrorMode::Abs => p.bound,
        ErrorMode::Rel => p.bound * range,
        ErrorMode::Nrmse | ErrorMode::Psnr => header_eb,
    };
    let (mut worst, mut sse, mut bad) = (0f64, 0f64, 0usize);
    for (i, (&(xb, xv), &(yb, yv))) in x.iter().zip(&y).enumerate() {
        if special(xb, chunk.dtype) {
            if xb != yb {
                bad += 1;
                if bad <= 3 {
                    problems.push(format!("value {i}: special {xb:#x} came back as {yb:#x}"));
                }
            }
            continue;
        }
        let err = (xv - yv).abs();
        sse += err * err;
        // Written so a NaN error also counts as out of bound.
        if err.partial_cmp(&eb) != Some(std::cmp::Ordering::Less)
            && err.partial_cmp(&eb) != Some(std::cmp::Ordering::Equal)
        {
            bad += 1;
            if bad <= 3 {
                problems.push(format!(
                    "value {i}: |{xv:e} - {yv:e}| = {err:e} > bound {eb:e}"
                ));
            }
        }
        if eb > 0.0 {
            worst = worst.max(err / eb);
        } else if err > 0.0 {
            worst = f64::INFINITY;
        }
    }
    if bad > 3 {
        problems.push(format!("... {bad} values out of bound in all"));
    }
    let target = match p.mode {
        ErrorMode::Nrmse => Some(p.bound),
        ErrorMode::Psnr => Some(10f64.powf(-p.bound / 20.0)),
        _ => None,
    };
    let target_ratio = target.filter(|_| range > 0.0).map(|t| {
        let nrmse = (sse / x.len() as f64).sqrt() / range;
        if nrmse > t * (1.0 + 1e-9) {
            problems.push(format!("NRMSE {nrmse:e} > target {t:e}"));
        }
        nrmse / t
    });
    Outcome {
        worst,
        target_ratio,
        ratio: bytes.len() as f64 / c.len() as f64,
        problems,
    }
}

#[test]
fn bounds_hold_on_the_shared_data_set() {
    let dir = data_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "bound_audit: skipped: no data set at {} (set RESID_DATA to run it)",
            dir.display()
        );
        return;
    };
    let mut files: Vec<(String, DType, Vec<usize>)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let (dt, shape) = parse_name(&name)?;
            Some((name, dt, shape))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let quick = std::env::var_os("RESID_AUDIT_QUICK").is_some();
    let rels: &[f64] = if quick {
        &[1e-4]
    } else {
        &[1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    };
    let abs_fracs: &[f64] = if quick { &[1e-3] } else { &[1e-2, 1e-4, 1e-6] };
    let nrmses: &[f64] = if quick { &[1e-4] } else { &[1e-3, 1e-5] };
    let psnrs: &[f64] = if quick { &[60.0] } else { &[40.0, 80.0] };

    let start = std::time::Instant::now();
    let mut violations = Vec::new();
    let mut runs = 0;
    for (name, dtype, shape) in &files {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let chunk = ChunkInfo::new(*dtype, shape).unwrap();
        if bytes.len() != chunk.byte_len().unwrap() {
            eprintln!("bound_audit: {name}: size does not match its name, skipped");
            continue;
        }
        let x = values(&bytes, *dtype);
        let finite: Vec<f64> = x.iter().map(|v| v.1).filter(|v| v.is_finite()).collect();
        let range = if finite.is_empty() {
            0.0
        } else {
            finite.iter().cloned().fold(f64::MIN, f64::max)
                - finite.iter().cloned().fold(f64::MAX, f64::min)
        };
        let mut params: Vec<Params> = Vec::new();
        params.extend(rels.iter().map(|&r| Params::rel(r)));
        params.extend(
            abs_fracs
                .iter()
                .filter(|_| range > 0.0)
                .map(|&f| Params::abs(f * range)),
        );
        params.push(Params::abs(1e-3));
        params.extend(nrmses.iter().map(|&t| Params::new(ErrorMode::Nrmse, t)));
        params.extend(psnrs.iter().map(|&t| Params::new(ErrorMode::Psnr, t)));
        let mut line = format!("{name:<55}");
        // Auto with NGLR and auto with a linear bias (predictor words 4 and 5, range coder) at
        // the loose and middle bounds they are made for; their runs count in the range
        // coder's column.
        let nglr_rels: &[f64] = if quick { &[1e-3] } else { &[1e-2, 1e-3, 1e-4] };
        let mut with_nglr: Vec<Params> = [PredictorChoice::AutoNglr, PredictorChoice::AutoLinear]
            .into_iter()
            .flat_map(|c| {
                nglr_rels
                    .iter()
                    .map(move |&r| Params::rel(r).with_predictor(c))
            })
            .collect();
        // The wavelet word (6) at every pointwise bound: every chunk it can takes the wavelet
        // layout, whose corrections and escapes must hold the bound as the blocks do.
        with_nglr.extend(
            params
                .iter()
                .filter(|p| matches!(p.mode, ErrorMode::Abs | ErrorMode::Rel))
                .map(|p| p.with_predictor(PredictorChoice::Wavelet)),
        );
        for coder in [Coder::Range, Coder::Lz4, Coder::Rans, Coder::Grouped] {
            let mut worst = 0f64;
            let extra = if coder == Coder::Range {
                &with_nglr[..]
            } else {
                &[]
            };
            for p in params.iter().chain(extra) {
                let p = p.with_coder(coder);
                let o = audit(&bytes, &chunk, &x, range, &p);
                runs += 1;
                worst = worst.max(o.worst);
                if let Some(t) = o.target_ratio {
                    worst = worst.max(t);
                }
                let _ = o.ratio;
                for pr in o.problems {
                    violations.push(format!(
                        "{name} {:?} {:e} {coder:?}: {pr}\n  reproduce: compress testdata-style \
                         file {} with Params::new(ErrorMode::{:?}, {:e}).with_coder(Coder::{coder:?}) \
                         .with_predictor(PredictorChoice::{:?}) as one chunk of shape {shape:?}",
                        p.mode,
                        p.bound,
                        dir.join(name).display(),
                        p.mode,
                        p.bound,
                        p.predictor
                    ));
                }
            }
            line += &format!("  {coder:?}: worst err/bound {worst:.4}");
        }
        eprintln!("{line}");
    }
    eprintln!(
        "bound_audit: {} fields, {runs} compress/decompress runs in {:.1} s, {} violations",
        files.len(),
        start.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
