//! HDF5 files: `resid inspect FILE.h5` (raw chunks read with H5Dread_chunk, headers parsed by
//! `resid::inspect`, nothing decoded, no plugin needed), `resid h5 compress` and
//! `resid h5 decompress`.
//!
//! `h5 compress` / `h5 decompress` check the request with the HDF5 bindings, code every chunk
//! on `--threads` threads ahead of time ([`prefill`]), then run `h5repack` ([`repack`]) with
//! the resid filter added (or removed) and the chunk store of that pass: h5repack copies
//! everything else faithfully (attributes, links, dimension scales and the object references
//! netCDF-4 keeps between them), which a hand-written copy would have to reimplement.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;

use hdf5::filters::Filter;
use hdf5::{Dataset, File, Group, LinkType, LocationType};
use hdf5_sys::h5t::{H5T_class_t, H5T_order_t, H5Tget_class, H5Tget_order};

use h5resid::store::Direction;

use crate::prefill::{self, Plan, TempStore};
use crate::raw::{check_output, inspect_chunk};
use crate::repack::{self, Repack};
use crate::report::{bytes, chunk_fields, shape};
use crate::{Failure, H5CompressArgs, H5DecompressArgs, InspectArgs};

pub const FILTER_ID: u32 = 32900;
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

fn h5err(what: impl std::fmt::Display) -> impl Fn(hdf5::Error) -> Failure {
    move |e| Failure::run(format!("{what}: {e}"))
}

/// HDF5 files start with the signature at offset 0, 512, 1024, ... (after a user block).
fn is_hdf5(path: &Path) -> Result<bool, Failure> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)
        .map_err(|e| Failure::run(format!("cannot read {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut off = 0u64;
    let mut sig = [0u8; 8];
    while off + 8 <= len {
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(&mut sig))
            .map_err(|e| Failure::run(format!("cannot read {}: {e}", path.display())))?;
        if &sig == HDF5_SIGNATURE {
            return Ok(true);
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    Ok(false)
}

/// (float, little-endian, element size) of a dataset's type.
fn float_kind(ds: &Dataset) -> Result<Option<(bool, usize)>, Failure> {
    let t = ds
        .dtype()
        .map_err(h5err(format!("{}: cannot read the type", ds.name())))?;
    let id = t.id();
    // SAFETY: `id` is a valid datatype id held by `t` for the duration of the calls.
    let (class, order) = hdf5::sync::sync(|| unsafe { (H5Tget_class(id), H5Tget_order(id)) });
    if class != H5T_class_t::H5T_FLOAT || !matches!(t.size(), 4 | 8) {
        return Ok(None);
    }
    Ok(Some((order == H5T_order_t::H5T_ORDER_LE, t.size())))
}

/// Every dataset reachable from `g` through hard links, each object once, as (path, dataset).
fn all_datasets(
    g: &Group,
    out: &mut Vec<Dataset>,
    seen: &mut Vec<(u64, String)>,
) -> Result<(), Failure> {
    let names = g
        .iter_visit_default(Vec::new(), |_, name, info, names: &mut Vec<String>| {
            if info.link_type == LinkType::Hard {
                names.push(name.to_owned());
            }
            true
        })
        .map_err(h5err(format!("cannot list {}", g.name())))?;
    for name in names {
        let info = g
            .loc_info_by_name(&name)
            .map_err(h5err(format!("{}/{name}", g.name())))?;
        let key = (info.fileno, format!("{:?}", info.token));
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        match info.loc_type {
            LocationType::Group => {
                let sub = g.group(&name).map_err(h5err(&name))?;
                all_datasets(&sub, out, seen)?;
            }
            LocationType::Dataset => out.push(g.dataset(&name).map_err(h5err(&name))?),
            _ => {}
        }
    }
    Ok(())
}

fn open_named(file: &File, names: &[String]) -> Result<Vec<Dataset>, Failure> {
    if names.is_empty() {
        let mut out = Vec::new();
        all_datasets(file, &mut out, &mut Vec::new())?;
        return Ok(out);
    }
    names
        .iter()
        .map(|n| {
            file.dataset(n).map_err(|e| {
                Failure::usage(format!("no dataset `{n}` in {}: {e}", file.filename()))
            })
        })
        .collect()
}

/// The resid filter's position in the pipeline and its cd_values, when it has one.
fn resid_filter(ds: &Dataset) -> Option<(usize, Vec<u32>)> {
    ds.filters()
        .into_iter()
        .enumerate()
        .find_map(|(i, f)| match f {
            Filter::User(id, cd) if id as u32 == FILTER_ID => Some((i, cd)),
            _ => None,
        })
}

/// The stored bytes of the chunk at `offset` (`size` of them) and its filter mask.
pub(crate) fn read_raw_chunk(
    ds: &Dataset,
    offset: &[u64],
    size: usize,
) -> Result<(u32, Vec<u8>), Failure> {
    let mut buf = vec![0u8; size];
    let mut mask: u32 = 0;
    let id = ds.id();
    // SAFETY: `offset` has one entry per dimension, `buf` holds the chunk's stored size.
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dread_chunk(
            id,
            hdf5_sys::h5p::H5P_DEFAULT,
            offset.as_ptr(),
            &mut mask,
            buf.as_mut_ptr().cast(),
        )
    });
    if rc < 0 {
        return Err(Failure::run(format!(
            "{}: cannot read the chunk at {offset:?}",
            ds.name()
        )));
    }
    Ok((mask, buf))
}

pub fn inspect(a: &InspectArgs) -> Result<(), Failure> {
    if !is_hdf5(&a.input)? {
        if !a.datasets.is_empty() {
            return Err(Failure::usage(format!(
                "--dataset given, but {} is not an HDF5 file",
                a.input.display()
            )));
        }
        let data = std::fs::read(&a.input)
            .map_err(|e| Failure::run(format!("cannot read {}: {e}", a.input.display())))?;
        return inspect_chunk(&a.input, &data);
    }
    hdf5::silence_errors(true);
    let file = File::open(&a.input).map_err(h5err(format!("cannot open {}", a.input.display())))?;
    let datasets = open_named(&file, &a.datasets)?;
    let mut found = 0;
    let mut failed = 0;
    for ds in &datasets {
        let Some((pos, cd)) = resid_filter(ds) else {
            if !a.datasets.is_empty() {
                println!("{}: not stored with resid (filter {FILTER_ID})", ds.name());
            }
            continue;
        };
        found += 1;
        let last = ds.filters().len() == pos + 1;
        let dtype_size = ds.dtype().map(|t| t.size()).unwrap_or(0);
        let chunk = ds.chunk().unwrap_or_default();
        let chunk_bytes = (chunk.iter().product::<usize>() * dtype_size) as u64;
        let n = ds.num_chunks().unwrap_or(0);
        let storage = ds.storage_size();
        let raw_total = (ds.size() * dtype_size) as u64;
        println!(
            "{}: {} float{}{}, chunks {}, {n} chunks stored, {} -> {} (ratio {:.2}), cd_values {:?}",
            ds.name(),
            shape(&ds.shape()),
            dtype_size * 8,
            if ds.is_resizable() { " (extendible)" } else { "" },
            shape(&chunk),
            bytes(raw_total),
            bytes(storage),
            raw_total as f64 / storage.max(1) as f64,
            cd
        );
        if !last {
            println!("  resid is not the last filter of the pipeline: stored chunks are not resid chunks");
            continue;
        }
        let limit = a.chunks.unwrap_or(usize::MAX);
        let mut modes: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..n {
            let Some(info) = ds.chunk_info(i) else {
                println!("  chunk #{i}: no chunk information");
                failed += 1;
                continue;
            };
            let (mask, raw) = read_raw_chunk(ds, &info.offset, info.size as usize)?;
            let line = if mask & (1 << pos) != 0 {
                "stored without the filter (optional filter skipped)".to_string()
            } else {
                match resid::inspect(&raw) {
                    Ok(s) => {
                        *modes
                            .entry(
                                chunk_fields(&s)
                                    .split(' ')
                                    .take(2)
                                    .collect::<Vec<_>>()
                                    .join(" "),
                            )
                            .or_default() += 1;
                        format!(
                            "{} -> {} B (ratio {:.2}) {}",
                            chunk_bytes,
                            raw.len(),
                            chunk_bytes as f64 / raw.len().max(1) as f64,
                            chunk_fields(&s)
                        )
                    }
                    Err(e) => {
                        failed += 1;
                        format!("CORRUPT: {e}")
                    }
                }
            };
            if i < limit {
                println!("  chunk {:?}: {line}", info.offset);
            }
        }
        if n > limit {
            println!("  ... {} more chunks", n - limit);
        }
        for (m, count) in modes {
            println!("  {count} chunks: {m}");
        }
    }
    if found == 0 && a.datasets.is_empty() {
        println!(
            "{}: no dataset uses the resid filter ({FILTER_ID})",
            a.input.display()
        );
    }
    if failed > 0 {
        return Err(Failure::run(format!("{failed} chunks could not be read")));
    }
    Ok(())
}

fn default_chunks(dims: &[usize], size: usize) -> Vec<usize> {
    let mut c: Vec<usize> = dims.iter().map(|&d| d.max(1)).collect();
    let total = |c: &[usize]| c.iter().product::<usize>() * size;
    if total(&c) <= 64 << 20 {
        return c;
    }
    while total(&c) > 4 << 20 {
        let (i, _) = c.iter().enumerate().max_by_key(|(_, &d)| d).unwrap();
        c[i] = c[i].div_ceil(2);
    }
    c
}

/// Refuses an input that is missing or not HDF5, before any work.
fn check_input(input: &Path) -> Result<(), Failure> {
    if !input.is_file() {
        return Err(Failure::usage(format!("{}: no such file", input.display())));
    }
    if !is_hdf5(input)? {
        return Err(Failure::usage(format!(
            "{} is not an HDF5 file",
            input.display()
        )));
    }
    Ok(())
}

/// `--threads`, or every core this process may use.
fn threads(asked: Option<NonZeroUsize>) -> usize {
    asked
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get)
}

pub fn compress(a: &H5CompressArgs) -> Result<(), Failure> {
    let params = a.codec.params()?;
    check_input(&a.input)?;
    hdf5::silence_errors(true);
    let file = File::open(&a.input).map_err(h5err(format!("cannot open {}", a.input.display())))?;
    let selected = select_datasets(a, &file)?;
    if selected.is_empty() {
        return Err(Failure::usage(format!(
            "{} has no little-endian float32/float64 dataset to compress",
            a.input.display()
        )));
    }
    check_output(&a.input, &a.output, a.force)?;
    let threads = threads(a.threads);
    let raw: Vec<u64> = selected
        .iter()
        .map(|s| (s.dataset.size() * s.size) as u64)
        .collect();
    let store = TempStore::new(&a.output, raw.iter().sum());
    let pass = parallel_pass(Direction::Encode, threads, a.quiet, &store, || {
        selected
            .iter()
            .map(|s| Plan::encode(s.dataset.clone(), s.chunks.clone(), &params, s.size))
            .collect()
    })?;
    drop(file);
    let words = params.to_cd_values();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    let mut args = Vec::new();
    for s in &selected {
        if let Some(l) = &s.layout {
            args.extend(["-l".to_string(), l.clone()]);
        }
    }
    for s in &selected {
        let ud = format!(
            "{}:UD={FILTER_ID},0,{},{}",
            s.name,
            words.len(),
            words.join(",")
        );
        args.extend(["-f".to_string(), ud]);
    }
    let misses = repack::run(&Repack {
        input: &a.input,
        output: &a.output,
        quiet: a.quiet,
        args,
        names: selected.iter().map(|s| s.name.clone()).collect(),
        store: pass.as_ref().map(|_| store.path()),
        largest: raw.iter().copied().max().unwrap_or(0),
    })?;
    drop(store);
    report_compressed(a, &params, &selected)?;
    report_pass(pass, threads, misses);
    Ok(())
}

/// The parallel pass's line of the report.
/// The parallel pass over the chunks `plans` lists, filling `store`, when more than one
/// thread is asked for (`None`: h5repack codes every chunk itself).
fn parallel_pass(
    dir: Direction,
    threads: usize,
    quiet: bool,
    store: &TempStore,
    plans: impl FnOnce() -> Result<Vec<Plan>, Failure>,
) -> Result<Option<prefill::Summary>, Failure> {
    if threads <= 1 {
        return Ok(None);
    }
    prefill::run(dir, &plans()?, threads, quiet, store).map(Some)
}

fn report_pass(pass: Option<prefill::Summary>, threads: usize, misses: u64) {
    if let Some(p) = pass {
        println!(
            "parallel pass: {} chunks on {threads} threads in {:.1} s ({} stored), {misses} store misses",
            p.chunks, p.seconds, p.stored
        );
    }
}

/// A dataset `compress` takes.
struct Selected {
    dataset: Dataset,
    name: String,
    /// Element size in bytes.
    size: usize,
    /// The output's chunk shape.
    chunks: Vec<usize>,
    /// The `h5repack -l` layout, for datasets that need new chunks.
    layout: Option<String>,
}

/// The datasets `compress` takes, with the `h5repack -l` layouts of those that need chunks
/// (contiguous ones, or all with `--chunks`).
fn select_datasets(a: &H5CompressArgs, file: &File) -> Result<Vec<Selected>, Failure> {
    let datasets = open_named(file, &a.datasets)?;
    let mut selected = Vec::new();
    for ds in datasets {
        let kind = float_kind(&ds)?;
        let name = ds.name();
        let explicit = !a.datasets.is_empty();
        match kind {
            Some((true, size)) if ds.ndim() > 0 && ds.size() > 0 => {
                let dims = ds.shape();
                let (chunks, layout) = if !ds.is_chunked() || a.chunks.is_some() {
                    let c = chunks_for(a, ds.is_chunked(), &name, &dims, size)?;
                    let l = format!("{name}:CHUNK={}", shape(&c));
                    (c, Some(l))
                } else {
                    (ds.chunk().unwrap_or_default(), None)
                };
                selected.push(Selected {
                    dataset: ds,
                    name,
                    size,
                    chunks,
                    layout,
                });
            }
            Some((false, _)) if explicit => {
                return Err(Failure::usage(format!(
                    "{name} is big-endian: resid takes little-endian float32/float64 only"
                )))
            }
            _ if explicit => {
                return Err(Failure::usage(format!(
                    "{name} is not a non-empty float32/float64 array; resid cannot compress it"
                )))
            }
            _ => {}
        }
    }
    Ok(selected)
}

/// The chunk shape `--chunks` asks for (clipped to a contiguous dataset's dims), or a default.
fn chunks_for(
    a: &H5CompressArgs,
    chunked: bool,
    name: &str,
    dims: &[usize],
    size: usize,
) -> Result<Vec<usize>, Failure> {
    Ok(match a.chunks.as_ref().map(|c| &c.0) {
        Some(c) if c.len() != dims.len() => {
            return Err(Failure::usage(format!(
                "--chunks {} has rank {}, but {name} has rank {} ({})",
                shape(c),
                c.len(),
                dims.len(),
                shape(dims)
            )))
        }
        Some(c) if !chunked => c.iter().zip(dims).map(|(&c, &d)| c.min(d.max(1))).collect(),
        Some(c) => c.clone(),
        None => default_chunks(dims, size),
    })
}

/// Checks that every selected dataset of the output carries the filter, and prints the sizes.
fn report_compressed(
    a: &H5CompressArgs,
    params: &resid::Params,
    selected: &[Selected],
) -> Result<(), Failure> {
    let out =
        File::open(&a.output).map_err(h5err(format!("cannot open {}", a.output.display())))?;
    let total: usize = selected.iter().map(|s| s.dataset.size() * s.size).sum();
    let mut stored_total = 0u64;
    for s in selected {
        let (name, raw) = (&s.name, s.dataset.size() * s.size);
        let ds = out
            .dataset(name)
            .map_err(h5err(format!("{}: {name}", a.output.display())))?;
        if resid_filter(&ds).is_none() {
            return Err(Failure::run(format!(
                "{name}: h5repack did not apply the filter"
            )));
        }
        let stored = ds.storage_size();
        stored_total += stored;
        println!(
            "{name}: {} -> {} (ratio {:.2}), chunks {}",
            bytes(raw as u64),
            bytes(stored),
            raw as f64 / stored.max(1) as f64,
            shape(&ds.chunk().unwrap_or_default())
        );
    }
    println!(
        "{} -> {}: {} float datasets, {} -> {} (ratio {:.2}), {} bound {}",
        a.input.display(),
        a.output.display(),
        selected.len(),
        bytes(total as u64),
        bytes(stored_total),
        total as f64 / stored_total.max(1) as f64,
        crate::report::lower(params.mode),
        params.bound
    );
    Ok(())
}

pub fn decompress(a: &H5DecompressArgs) -> Result<(), Failure> {
    check_input(&a.input)?;
    hdf5::silence_errors(true);
    let file = File::open(&a.input).map_err(h5err(format!("cannot open {}", a.input.display())))?;
    let explicit = !a.datasets.is_empty();
    let mut chosen = Vec::new();
    for ds in open_named(&file, &a.datasets)? {
        match resid_filter(&ds) {
            Some((_, cd)) => chosen.push((ds, cd)),
            None if explicit => {
                return Err(Failure::usage(format!(
                    "{} is not stored with resid (filter {FILTER_ID})",
                    ds.name()
                )))
            }
            None => {}
        }
    }
    if chosen.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no dataset uses the resid filter ({FILTER_ID})",
            a.input.display()
        )));
    }
    check_output(&a.input, &a.output, a.force)?;
    let threads = threads(a.threads);
    let sizes: Vec<(String, u64, u64)> = chosen
        .iter()
        .map(|(ds, _)| {
            let size = ds.dtype().map(|t| t.size()).unwrap_or(0);
            (ds.name(), ds.storage_size(), (ds.size() * size) as u64)
        })
        .collect();
    let store = TempStore::new(&a.output, sizes.iter().map(|s| s.2).sum());
    let pass = parallel_pass(Direction::Decode, threads, a.quiet, &store, || {
        // Only where resid is the whole pipeline are the stored bytes what the filter decodes.
        chosen
            .into_iter()
            .filter(|(ds, _)| ds.filters().len() == 1)
            .map(|(ds, cd)| Plan::decode(ds, cd))
            .collect()
    })?;
    drop(file);
    let mut args = Vec::new();
    for (name, ..) in &sizes {
        args.extend(["-f".to_string(), format!("{name}:NONE")]);
    }
    let misses = repack::run(&Repack {
        input: &a.input,
        output: &a.output,
        quiet: a.quiet,
        args,
        names: sizes.iter().map(|s| s.0.clone()).collect(),
        store: pass.as_ref().map(|_| store.path()),
        largest: sizes.iter().map(|s| s.2).max().unwrap_or(0),
    })?;
    drop(store);
    report_decompressed(a, &sizes)?;
    report_pass(pass, threads, misses);
    Ok(())
}

/// Checks that no decompressed dataset of the output keeps the filter, and prints the sizes.
fn report_decompressed(a: &H5DecompressArgs, sizes: &[(String, u64, u64)]) -> Result<(), Failure> {
    let out =
        File::open(&a.output).map_err(h5err(format!("cannot open {}", a.output.display())))?;
    let (mut stored_total, mut raw_total) = (0, 0);
    for (name, stored, raw) in sizes {
        let ds = out
            .dataset(name)
            .map_err(h5err(format!("{}: {name}", a.output.display())))?;
        if resid_filter(&ds).is_some() {
            return Err(Failure::run(format!(
                "{name}: h5repack did not remove the filter"
            )));
        }
        stored_total += stored;
        raw_total += raw;
        println!("{name}: {} -> {}", bytes(*stored), bytes(ds.storage_size()));
    }
    println!(
        "{} -> {}: {} resid datasets, {} -> {}",
        a.input.display(),
        a.output.display(),
        sizes.len(),
        bytes(stored_total),
        bytes(raw_total)
    );
    Ok(())
}
