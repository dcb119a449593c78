//! Human-readable summaries of resid chunks.

use resid::ChunkSummary;

/// `1.23 MB` style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn section_name(id: u8) -> String {
    match id {
        resid::format::section::STORED => "stored".into(),
        resid::format::section::BLOCKS => "blocks".into(),
        resid::format::section::ESCAPES => "escapes".into(),
        resid::format::section::WEIGHTS => "weights (NGLR)".into(),
        resid::format::section::ENHANCE => "enhancer (NeurLZ)".into(),
        resid::format::section::REGION => "region (edge chunk)".into(),
        resid::format::section::WAVELET => "wavelet (CDF 9/7 coefficients, corrections)".into(),
        other => format!("#{other}"),
    }
}

/// Lowercase name of a `Debug`-printed enum value (`Abs` -> `abs`).
pub fn lower(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

pub fn shape(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// `mode=rel bound=0.001 eb=0.0123 coder=range layout=coded sections=blocks:1234,escapes:12`
pub fn chunk_fields(s: &ChunkSummary) -> String {
    let h = &s.header;
    let sections = s
        .sections
        .iter()
        .map(|(id, len)| format!("{}:{len}", section_name(*id)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "mode={} bound={} eb={:.6e} coder={} layout={} sections={}",
        lower(h.mode),
        h.requested,
        h.eb,
        lower(h.coder),
        lower(h.layout),
        if sections.is_empty() {
            "-".into()
        } else {
            sections
        }
    )
}

/// Multi-line description of one standalone chunk (`resid inspect x.rsid`).
pub fn chunk_details(s: &ChunkSummary) -> String {
    let h = &s.header;
    let raw = (h.shape.iter().product::<usize>() * h.dtype.size()) as u64;
    let mut out = String::new();
    out += &format!("type:        {}\n", lower(h.dtype));
    out += &format!("shape:       {}\n", shape(&h.shape));
    out += &format!(
        "size:        {} raw, {} stored, ratio {:.2}\n",
        bytes(raw),
        bytes(s.compressed_len as u64),
        raw as f64 / s.compressed_len.max(1) as f64
    );
    out += &format!(
        "mode:        {} (requested bound {})\n",
        lower(h.mode),
        h.requested
    );
    out += &format!("pointwise:   |x - x'| <= {:e} (eb)\n", h.eb);
    out += &format!("bound over:  {}\n", bound_scope(s));
    out += &format!("coder:       {}\n", lower(h.coder));
    out += &format!("layout:      {}\n", lower(h.layout));
    if h.layout == resid::format::Layout::Wavelet {
        out += &format!(
            "transform:   CDF 9/7 wavelet, mean {:e}, coefficient step {:e}\n",
            h.mid, h.step
        );
    } else {
        out += &format!("grid:        mid {:e}, step {:e}\n", h.mid, h.step);
        out += &format!(
            "block:       {}\n",
            h.block
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("x")
        );
    }
    if !s.block_predictors.is_empty() {
        out += &format!("predictors:  {}\n", predictor_counts(&s.block_predictors));
    }
    for (id, len) in &s.sections {
        out += &format!("section:     {} ({} bytes)\n", section_name(*id), len);
    }
    out
}

/// Which values the bound's range and error were taken over: the whole chunk, or the data
/// box of an HDF5 edge chunk (its padding restored exactly).
fn bound_scope(s: &ChunkSummary) -> String {
    match &s.region {
        None => "the whole chunk".into(),
        Some((extent, pad)) => {
            let pad = match s.header.dtype {
                resid::DType::F32 => f32::from_bits(*pad as u32) as f64,
                resid::DType::F64 => f64::from_bits(*pad),
            };
            format!(
                "the data box {} at the origin (edge chunk; padding {pad:e} kept exactly)",
                shape(extent)
            )
        }
    }
}

/// How many blocks each predictor coded: `lorenzo 3, interp-md 5`.
fn predictor_counts(ids: &[u8]) -> String {
    let name = |id: u8| match resid::predict::registry::name(id) {
        Some(name) => name.to_string(),
        None => format!("#{id}"),
    };
    let mut counts = std::collections::BTreeMap::new();
    for &id in ids {
        *counts.entry(id).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .map(|(id, n)| format!("{} {n}", name(id)))
        .collect::<Vec<_>>()
        .join(", ")
}
