//! HDF5 files: `resid inspect FILE.h5` (raw chunks read with H5Dread_chunk, headers parsed by
//! `resid::inspect`, nothing decoded, no plugin needed) and `resid h5 compress`.
//!
//! `h5 compress` checks the request with the HDF5 bindings, then runs `h5repack` with the
//! resid filter: h5repack copies everything else faithfully (attributes, links, dimension
//! scales and the object references netCDF-4 keeps between them), which a hand-written copy
//! would have to reimplement. The plugin library is handed to h5repack through
//! `HDF5_PLUGIN_PATH` (found beside this executable, or through `RESID_PLUGIN` /
//! `HDF5_PLUGIN_PATH`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hdf5::filters::Filter;
use hdf5::{Dataset, File, Group, LinkType, LocationType};
use hdf5_sys::h5t::{H5T_class_t, H5T_order_t, H5Tget_class, H5Tget_order};

use crate::raw::{check_output, inspect_chunk};
use crate::report::{bytes, chunk_fields, shape};
use crate::{Failure, H5CompressArgs, InspectArgs};

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

fn read_raw_chunk(ds: &Dataset, offset: &[u64], size: usize) -> Result<(u32, Vec<u8>), Failure> {
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

/// Directory holding libh5resid.so for h5repack.
fn plugin_dir() -> Result<PathBuf, Failure> {
    const LIB: &str = "libh5resid.so";
    if let Some(p) = std::env::var_os("RESID_PLUGIN") {
        let p = PathBuf::from(p);
        let dir = if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        if dir.join(LIB).is_file() {
            return Ok(dir);
        }
        return Err(Failure::usage(format!(
            "RESID_PLUGIN={}: no {LIB} there",
            p.display()
        )));
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        // target/release/resid sits beside target/release/libh5resid.so; deps/ for tests.
        for d in [dir.clone(), dir.join(".."), dir.join("../release")] {
            if d.join(LIB).is_file() {
                return Ok(d);
            }
            tried.push(d.display().to_string());
        }
    }
    for d in std::env::var("HDF5_PLUGIN_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
    {
        if Path::new(d).join(LIB).is_file() {
            return Ok(PathBuf::from(d));
        }
        tried.push(d.to_string());
    }
    Err(Failure::usage(format!(
        "{LIB} not found (looked in {}); build it with `cargo build --release -p h5resid` or set RESID_PLUGIN",
        tried.join(", ")
    )))
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

pub fn compress(a: &H5CompressArgs) -> Result<(), Failure> {
    let params = a.codec.params()?;
    if !a.input.is_file() {
        return Err(Failure::usage(format!(
            "{}: no such file",
            a.input.display()
        )));
    }
    if !is_hdf5(&a.input)? {
        return Err(Failure::usage(format!(
            "{} is not an HDF5 file",
            a.input.display()
        )));
    }
    hdf5::silence_errors(true);
    let (selected, layouts) = select_datasets(a)?;
    if selected.is_empty() {
        return Err(Failure::usage(format!(
            "{} has no little-endian float32/float64 dataset to compress",
            a.input.display()
        )));
    }
    check_output(&a.input, &a.output, a.force)?;
    repack(a, &params, &selected, &layouts)?;
    report_compressed(a, &params, &selected)
}

/// A dataset `compress` takes: its name and raw size in bytes.
type Selected = (String, usize);

/// The datasets `compress` takes, and the `h5repack -l` layouts of those that need chunks
/// (contiguous ones, or all with `--chunks`).
fn select_datasets(a: &H5CompressArgs) -> Result<(Vec<Selected>, Vec<String>), Failure> {
    let file = File::open(&a.input).map_err(h5err(format!("cannot open {}", a.input.display())))?;
    let datasets = open_named(&file, &a.datasets)?;
    let mut selected = Vec::new();
    let mut layouts = Vec::new();
    for ds in &datasets {
        let kind = float_kind(ds)?;
        let name = ds.name();
        let explicit = !a.datasets.is_empty();
        match kind {
            Some((true, size)) if ds.ndim() > 0 && ds.size() > 0 => {
                let dims = ds.shape();
                if !ds.is_chunked() || a.chunks.is_some() {
                    let c = chunks_for(a, ds.is_chunked(), &name, &dims, size)?;
                    layouts.push(format!("{name}:CHUNK={}", shape(&c)));
                }
                selected.push((name, ds.size() * size));
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
    Ok((selected, layouts))
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

/// Runs h5repack with the plugin on the selected datasets, showing its progress.
fn repack(
    a: &H5CompressArgs,
    params: &resid::Params,
    selected: &[Selected],
    layouts: &[String],
) -> Result<(), Failure> {
    let dir = plugin_dir()?;
    let words = params.to_cd_values();
    let ud = |name: &str| {
        format!(
            "{name}:UD={FILTER_ID},0,{},{}",
            words.len(),
            words
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let mut cmd = Command::new("h5repack");
    cmd.arg("-v").arg("--enable-error-stack");
    for l in layouts {
        cmd.arg("-l").arg(l);
    }
    for (name, _) in selected {
        cmd.arg("-f").arg(ud(name));
    }
    cmd.arg(&a.input).arg(&a.output);
    cmd.env("HDF5_PLUGIN_PATH", &dir);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if a.output.exists() {
        std::fs::remove_file(&a.output)
            .map_err(|e| Failure::run(format!("cannot replace {}: {e}", a.output.display())))?;
    }
    let mut child = cmd.spawn().map_err(|e| {
        Failure::run(format!(
            "cannot run h5repack ({e}); install it (Debian: apt-get install hdf5-tools)"
        ))
    })?;
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            s += &line;
            s.push('\n');
        }
        s
    });
    follow_progress(a.quiet, selected, child.stdout.take().unwrap());
    let status = child
        .wait()
        .map_err(|e| Failure::run(format!("h5repack: {e}")))?;
    let err = err_thread.join().unwrap_or_default();
    if !status.success() {
        let _ = std::fs::remove_file(&a.output);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let resid_lines: Vec<&str> = tail
            .iter()
            .copied()
            .filter(|l| l.contains("resid"))
            .collect();
        return Err(Failure::run(format!(
            "h5repack failed ({status}):\n{}",
            if resid_lines.is_empty() {
                tail[tail.len().saturating_sub(15)..].join("\n")
            } else {
                resid_lines.join("\n")
            }
        )));
    }
    Ok(())
}

/// A progress bar over h5repack's verbose output: one step per selected dataset it names.
fn follow_progress(quiet: bool, selected: &[Selected], stdout: impl std::io::Read) {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(selected.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos}/{len} datasets {wide_msg}",
        )
        .unwrap(),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let names: Vec<&str> = selected
        .iter()
        .map(|(n, _)| n.trim_start_matches('/'))
        .collect();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains("dset")
            && names.iter().any(|n| {
                line.split_whitespace()
                    .any(|w| w.trim_start_matches('/') == *n)
            })
        {
            bar.inc(1);
        }
        bar.set_message(line.trim().to_string());
    }
    bar.finish_and_clear();
}

/// Checks that every selected dataset of the output carries the filter, and prints the sizes.
fn report_compressed(
    a: &H5CompressArgs,
    params: &resid::Params,
    selected: &[Selected],
) -> Result<(), Failure> {
    let out =
        File::open(&a.output).map_err(h5err(format!("cannot open {}", a.output.display())))?;
    let total: usize = selected.iter().map(|(_, b)| b).sum();
    let mut stored_total = 0u64;
    for (name, raw) in selected {
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
            bytes(*raw as u64),
            bytes(stored),
            *raw as f64 / stored.max(1) as f64,
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
