//! `resid compress` / `resid decompress`: raw float files <-> one self-describing .rsid chunk.

use std::fs;
use std::path::{Path, PathBuf};

use crate::report::{bytes, chunk_details, lower, shape};
use crate::{CompressArgs, DTypeArg, DecompressArgs, Failure};
use resid::{ChunkInfo, DType};

fn dtype_from_ext(p: &Path) -> Option<DTypeArg> {
    match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "f32" => Some(DTypeArg::F32),
        "f64" => Some(DTypeArg::F64),
        _ => None,
    }
}

fn read(p: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(p).map_err(|e| Failure::run(format!("cannot read {}: {e}", p.display())))
}

/// Refuses to overwrite unless --force, and refuses to write over the input.
pub fn check_output(input: &Path, output: &Path, force: bool) -> Result<(), Failure> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(Failure::usage(format!(
                "the output {} is the input file",
                output.display()
            )));
        }
    }
    if output.exists() && !force {
        return Err(Failure::usage(format!(
            "{} exists; pass --force to replace it",
            output.display()
        )));
    }
    Ok(())
}

fn write(p: &Path, data: &[u8]) -> Result<(), Failure> {
    fs::write(p, data).map_err(|e| Failure::run(format!("cannot write {}: {e}", p.display())))
}

pub fn compress(a: &CompressArgs) -> Result<(), Failure> {
    let params = a.codec.params()?;
    let dtype = match (a.dtype, dtype_from_ext(&a.input)) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            return Err(Failure::usage(format!(
                "cannot tell the element type of {}: pass --dtype f32|f64 (or name it .f32/.f64)",
                a.input.display()
            )))
        }
    };
    let info = ChunkInfo::new(dtype.dtype(), &a.shape.0)
        .map_err(|e| Failure::usage(format!("--shape {}: {e}", shape(&a.shape.0))))?;
    let expected = info
        .byte_len()
        .map_err(|e| Failure::usage(format!("--shape: {e}")))?;
    let output = a.output.clone().unwrap_or_else(|| {
        let mut s = a.input.clone().into_os_string();
        s.push(".rsid");
        PathBuf::from(s)
    });
    let meta = fs::metadata(&a.input)
        .map_err(|e| Failure::run(format!("cannot read {}: {e}", a.input.display())))?;
    if meta.len() != expected as u64 {
        let elems = meta.len() / dtype.dtype().size() as u64;
        return Err(Failure::usage(format!(
            "{} holds {} bytes ({} {} values), but --shape {} of {} needs {} bytes",
            a.input.display(),
            meta.len(),
            elems,
            lower(dtype.dtype()),
            shape(&a.shape.0),
            lower(dtype.dtype()),
            expected
        )));
    }
    check_output(&a.input, &output, a.force)?;
    let data = read(&a.input)?;
    let packed = resid::compress(&data, &info, &params)
        .map_err(|e| Failure::run(format!("cannot compress {}: {e}", a.input.display())))?;
    write(&output, &packed)?;
    let s = resid::inspect(&packed).map_err(|e| Failure::run(e.to_string()))?;
    println!(
        "{} -> {}: {} -> {} (ratio {:.2}), {} {}, {} bound {}, eb {:e}",
        a.input.display(),
        output.display(),
        bytes(data.len() as u64),
        bytes(packed.len() as u64),
        data.len() as f64 / packed.len().max(1) as f64,
        lower(info.dtype),
        shape(&info.shape),
        lower(params.mode),
        params.bound,
        s.header.eb
    );
    Ok(())
}

fn to_f64(bytes: &[u8], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

pub fn decompress(a: &DecompressArgs) -> Result<(), Failure> {
    let packed = read(&a.input)?;
    let summary = resid::inspect(&packed).map_err(|e| {
        Failure::run(format!(
            "{} is not a readable resid chunk: {e}",
            a.input.display()
        ))
    })?;
    let h = &summary.header;
    let ext = match h.dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
    };
    let output = match &a.output {
        Some(o) => {
            if let Some(d) = dtype_from_ext(o) {
                if d.dtype() != h.dtype {
                    return Err(Failure::usage(format!(
                        "{} holds {} data; name the output .{ext}, not {}",
                        a.input.display(),
                        lower(h.dtype),
                        o.display()
                    )));
                }
            }
            o.clone()
        }
        None => {
            let stem = if a.input.extension().is_some_and(|e| e == "rsid") {
                a.input.with_extension("")
            } else {
                a.input.clone()
            };
            if dtype_from_ext(&stem).is_some() {
                stem
            } else {
                let mut s = stem.into_os_string();
                s.push(format!(".{ext}"));
                PathBuf::from(s)
            }
        }
    };
    check_output(&a.input, &output, a.force)?;
    let data = resid::decompress(&packed)
        .map_err(|e| Failure::run(format!("cannot decompress {}: {e}", a.input.display())))?;
    write(&output, &data)?;
    println!(
        "{} -> {}: {} {} {}",
        a.input.display(),
        output.display(),
        lower(h.dtype),
        shape(&h.shape),
        bytes(data.len() as u64)
    );
    if let Some(orig) = &a.check {
        let o = read(orig)?;
        if o.len() != data.len() {
            return Err(Failure::usage(format!(
                "--check {}: {} bytes, but the decoded data has {}",
                orig.display(),
                o.len(),
                data.len()
            )));
        }
        let (x, y) = (to_f64(&o, h.dtype), to_f64(&data, h.dtype));
        let mut max = 0f64;
        let mut bad = 0usize;
        for (p, q) in x.iter().zip(&y) {
            if p.is_nan() || q.is_nan() {
                bad += usize::from(p.is_nan() != q.is_nan());
                continue;
            }
            let d = if p == q { 0.0 } else { (p - q).abs() };
            max = max.max(d);
            bad += usize::from(d > h.eb);
        }
        println!(
            "check: max |error| {max:e}, pointwise bound eb {:e}: {}",
            h.eb,
            if bad == 0 {
                "within".to_string()
            } else {
                format!("{bad} values OUTSIDE")
            }
        );
        if bad > 0 {
            return Err(Failure::run(format!(
                "{bad} decoded values break the bound"
            )));
        }
    }
    Ok(())
}

/// `resid inspect x.rsid`.
pub fn inspect_chunk(path: &Path, data: &[u8]) -> Result<(), Failure> {
    let s = resid::inspect(data).map_err(|e| {
        Failure::run(format!(
            "{} is neither an HDF5 file nor a resid chunk: {e}",
            path.display()
        ))
    })?;
    print!("{}:\n{}", path.display(), chunk_details(&s));
    Ok(())
}
