//! Running `h5repack` with the resid plugin: it copies everything the CLI does not change
//! faithfully (attributes, links, dimension scales and the object references netCDF-4 keeps
//! between them), which a hand-written copy would have to reimplement. The plugin library is
//! handed to it through `HDF5_PLUGIN_PATH` (found beside this executable, or through
//! `RESID_PLUGIN` / `HDF5_PLUGIN_PATH`), and the chunk store of the parallel pass, when there is
//! one, through `RESID_CHUNK_STORE`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Failure;

/// Directory holding libh5resid.so for h5repack.
pub fn plugin_dir() -> Result<PathBuf, Failure> {
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

/// One h5repack run.
pub struct Repack<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub quiet: bool,
    /// The `-l` and `-f` arguments.
    pub args: Vec<String>,
    /// The datasets the progress bar counts, as h5repack names them.
    pub names: Vec<String>,
    /// The chunk store the filter consults.
    pub store: Option<&'a Path>,
    /// Bytes of the largest dataset h5repack codes.
    pub largest: u64,
}

/// What `H5TOOLS_BUFSIZE` (MiB) h5repack gets, when the user has not set it: enough to copy
/// the largest dataset with one `H5Dread` and one `H5Dwrite`, when that fits in a quarter of
/// the available memory. Above its default 128 MiB h5repack copies in hyperslabs through a
/// one-dimensional buffer, which costs HDF5 about 10 CPU seconds per GiB (measured with
/// HDF5 1.10 on 64^3 chunks), as long as coding them.
fn bufsize_mib(largest: u64) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    if std::env::var_os("H5TOOLS_BUFSIZE").is_some() || largest < 120 * MIB {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let want = largest.div_ceil(MIB) + 1;
    (want * MIB <= available_kib * 1024 / 4).then_some(want)
}

/// Runs h5repack, showing its progress; returns how many chunks the filter did not find in
/// the chunk store (and so coded itself).
pub fn run(job: &Repack) -> Result<u64, Failure> {
    let dir = plugin_dir()?;
    let mut cmd = Command::new("h5repack");
    cmd.arg("-v").arg("--enable-error-stack");
    cmd.args(&job.args).arg(job.input).arg(job.output);
    cmd.env("HDF5_PLUGIN_PATH", &dir);
    if let Some(mib) = bufsize_mib(job.largest) {
        cmd.env("H5TOOLS_BUFSIZE", mib.to_string());
    }
    match job.store {
        Some(p) => cmd.env(h5resid::store::ENV, p),
        None => cmd.env_remove(h5resid::store::ENV),
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if job.output.exists() {
        std::fs::remove_file(job.output)
            .map_err(|e| Failure::run(format!("cannot replace {}: {e}", job.output.display())))?;
    }
    let mut child = cmd.spawn().map_err(|e| {
        Failure::run(format!(
            "cannot run h5repack ({e}); install it (Debian: apt-get install hdf5-tools)"
        ))
    })?;
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let (mut s, mut misses) = (String::new(), 0u64);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with(h5resid::store::MISS) {
                misses += 1;
                continue;
            }
            s += &line;
            s.push('\n');
        }
        (s, misses)
    });
    follow_progress(job.quiet, &job.names, child.stdout.take().unwrap());
    let status = child
        .wait()
        .map_err(|e| Failure::run(format!("h5repack: {e}")))?;
    let (err, misses) = err_thread.join().unwrap_or_default();
    if !status.success() {
        let _ = std::fs::remove_file(job.output);
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
    Ok(misses)
}

/// A progress bar over h5repack's verbose output: one step per selected dataset it names.
fn follow_progress(quiet: bool, names: &[String], stdout: impl std::io::Read) {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(names.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos}/{len} datasets {wide_msg}",
        )
        .unwrap(),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let names: Vec<&str> = names.iter().map(|n| n.trim_start_matches('/')).collect();
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
