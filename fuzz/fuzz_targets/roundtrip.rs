//! Property: compress then decompress meets the bound for every value, keeps NaN, infinities
//! and subnormals bit for bit, and never grows a chunk by more than `MAX_OVERHEAD`.
//!
//! The input is carved (zstd's `fuzz_data_producer` style), one byte per choice so seed files
//! are easy to write (tests/hardening.rs `write_fuzz_corpus`):
//! `ctl` (bit 0 f64, bit 1 lz4, bits 2-3 mode, bits 4-5 value style, bit 6 raw f64 bound,
//! bit 7 a predictor byte follows: cd predictor word `b % 7`, and `b >= 128` picks the packed
//! coder (`b >= 192`: the grouped coder) instead of lz4 when bit 1 is set, the rANS coder
//! instead of range when it is not),
//! rank byte (`1 + b % 4`), one
//! byte per dim (`1 + b % 64`), bound exponent and mantissa bytes (then 8 raw bytes when bit 6
//! is set), then the values (style 0: raw element bytes; otherwise a random walk: scale byte,
//! start byte, one signed step byte per value), then an optional padding byte (see `carve`).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use resid::{ChunkInfo, Coder, DType, Error, ErrorMode, Params, PredictorChoice};

/// Keeps each run fast: at most this many values per chunk.
const MAX_VALUES: usize = 1 << 14;

struct Case {
    chunk: ChunkInfo,
    params: Params,
    data: Vec<u8>,
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

fn carve(u: &mut Unstructured<'_>) -> Result<Case> {
    let ctl: u8 = u.arbitrary()?;
    let dtype = if ctl & 1 == 0 { DType::F32 } else { DType::F64 };
    let mut coder = if ctl & 2 == 0 {
        Coder::Range
    } else {
        Coder::Lz4
    };
    let mode = [
        ErrorMode::Abs,
        ErrorMode::Rel,
        ErrorMode::Nrmse,
        ErrorMode::Psnr,
    ][((ctl >> 2) & 3) as usize];
    let style = (ctl >> 4) & 3;
    let raw_bound = ctl & 0x40 != 0;

    let byte = |u: &mut Unstructured<'_>| -> Result<u8> {
        Ok(if u.is_empty() { 0 } else { u.arbitrary()? })
    };
    let predictor = if ctl & 0x80 != 0 {
        let b = byte(u)?;
        if b >= 128 {
            coder = match coder {
                Coder::Lz4 if b >= 192 => Coder::Grouped,
                Coder::Lz4 => Coder::Packed,
                _ => Coder::Rans,
            };
        }
        PredictorChoice::from_word((b % 7) as u32).expect("words 0-6 are predictors")
    } else {
        PredictorChoice::Auto
    };
    let rank = 1 + byte(u)? as usize % 4;
    let mut shape = Vec::with_capacity(rank);
    let mut n = 1usize;
    for _ in 0..rank {
        let d = (1 + byte(u)? as usize % 64).min(MAX_VALUES / n).max(1);
        n *= d;
        shape.push(d);
    }

    let e = byte(u)?;
    let m = byte(u)?;
    let mant = 1.0 + m as f64 / 256.0;
    let bound = if raw_bound {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = byte(u)?;
        }
        f64::from_bits(u64::from_le_bytes(b))
    } else {
        match mode {
            ErrorMode::Abs => mant * 10f64.powi(e as i32 % 48 - 30),
            ErrorMode::Rel => mant * 10f64.powi(-(e as i32 % 9)),
            ErrorMode::Nrmse => 10f64.powi(-(1 + e as i32 % 8)) * mant / 2.0,
            ErrorMode::Psnr => 10.0 + (e as f64) * 1.2 + m as f64 / 256.0,
        }
    };
    let params = Params::new(mode, bound)
        .with_coder(coder)
        .with_predictor(predictor);

    let size = dtype.size();
    let mut data = Vec::with_capacity(n * size);
    match style {
        // Raw element bits: NaN payloads, infinities, subnormals, huge and tiny magnitudes.
        0 => {
            while data.len() < n * size {
                data.push(byte(u)?);
            }
        }
        // A random walk (smooth data the predictor likes) with occasional raw values.
        _ => {
            let scale = 10f64.powi(byte(u)? as i32 % 41 - 20);
            let mut v = (byte(u)? as i8) as f64 * scale * 100.0;
            for _ in 0..n {
                let step = if u.is_empty() { 1 } else { byte(u)? as i8 };
                if style == 2 && step == i8::MIN {
                    let mut b = [0u8; 8];
                    for x in &mut b {
                        *x = byte(u)?;
                    }
                    push(&mut data, dtype, u64::from_le_bytes(b), None);
                    continue;
                }
                v += step as f64 * scale;
                push(&mut data, dtype, 0, Some(v));
            }
        }
    }
    let mut chunk = ChunkInfo::new(dtype, &shape).expect("carved shape is valid");
    // An optional last byte makes the chunk an HDF5 one padded with zeros: bit 0 on, bits 1-7
    // the number of trailing slabs along the first dimension set to zero. The padding is then
    // left out of the range, which may only tighten the bound checked over the whole chunk.
    let pad = byte(u)?;
    if pad & 1 == 1 {
        chunk = chunk.with_padding(0);
        let slab = n / shape[0] * size;
        let k = (pad >> 1) as usize % shape[0];
        let len = data.len();
        data[len - k * slab..].fill(0);
    }
    Ok(Case {
        chunk,
        params,
        data,
    })
}

fn push(out: &mut Vec<u8>, dtype: DType, bits: u64, v: Option<f64>) {
    match (dtype, v) {
        (DType::F32, Some(v)) => out.extend_from_slice(&(v as f32).to_le_bytes()),
        (DType::F32, None) => out.extend_from_slice(&(bits as u32).to_le_bytes()),
        (DType::F64, Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (DType::F64, None) => out.extend_from_slice(&bits.to_le_bytes()),
    }
}

fn values(data: &[u8], dtype: DType) -> Vec<(u64, f64)> {
    match dtype {
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| {
                let v = f32::from_le_bytes(c.try_into().unwrap());
                (v.to_bits() as u64, v as f64)
            })
            .collect(),
        DType::F64 => data
            .chunks_exact(8)
            .map(|c| {
                let v = f64::from_le_bytes(c.try_into().unwrap());
                (v.to_bits(), v)
            })
            .collect(),
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(case) = carve(&mut Unstructured::new(input)) else {
        return;
    };
    let Case {
        chunk,
        params,
        data,
    } = case;
    let c = match resid::compress(&data, &chunk, &params) {
        Ok(c) => c,
        Err(Error::BadParams(_)) => {
            assert!(params.validate().is_err());
            return;
        }
        Err(e) => panic!("compress failed: {e}"),
    };
    assert!(c.len() <= data.len() + resid::format::MAX_OVERHEAD);
    let summary = resid::inspect(&c).expect("own chunk inspects");
    assert_eq!(summary.header.shape, chunk.shape);
    let d = resid::decompress_limited(&c, data.len()).expect("own chunk decodes");
    assert_eq!(d.len(), data.len());
    if data.len() > 1 {
        assert!(matches!(
            resid::decompress_limited(&c, data.len() - 1),
            Err(Error::TooLarge { .. })
        ));
    }

    let x = values(&data, chunk.dtype);
    let y = values(&d, chunk.dtype);
    let finite: Vec<f64> = x.iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
    let range = if finite.is_empty() {
        0.0
    } else {
        finite.iter().cloned().fold(f64::MIN, f64::max)
            - finite.iter().cloned().fold(f64::MAX, f64::min)
    };
    let eb = match params.mode {
        ErrorMode::Abs => params.bound,
        ErrorMode::Rel => params.bound * range,
        ErrorMode::Nrmse | ErrorMode::Psnr => summary.header.eb,
    };
    let (mut sse, mut n) = (0.0, 0usize);
    for (i, (&(xb, xv), &(yb, yv))) in x.iter().zip(&y).enumerate() {
        if special(xb, chunk.dtype) {
            assert_eq!(xb, yb, "value {i}: special {xv:e} came back as {yv:e}");
            // A subnormal is finite: it counts in the NRMSE's mean, with error 0.
            n += xv.is_finite() as usize;
        } else {
            let err = (xv - yv).abs();
            assert!(
                err <= eb,
                "value {i}: |{xv:e} - {yv:e}| = {err:e} > bound {eb:e} ({params:?})"
            );
            if xv.is_finite() {
                sse += err * err;
                n += 1;
            }
        }
    }
    if range > 0.0 && range.is_finite() {
        let target = match params.mode {
            ErrorMode::Nrmse => Some(params.bound),
            ErrorMode::Psnr => Some(10f64.powf(-params.bound / 20.0)),
            _ => None,
        };
        if let Some(t) = target {
            // Over the finite values, as a user measures it.
            let nrmse = (sse / n.max(1) as f64).sqrt() / range;
            assert!(nrmse <= t * (1.0 + 1e-9), "NRMSE {nrmse:e} > target {t:e}");
        }
    }
});
