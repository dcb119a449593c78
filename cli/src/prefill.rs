//! The parallel pass of `resid h5 compress` and `resid h5 decompress`.
//!
//! HDF5 (and so h5repack) runs a dataset's filter pipeline one chunk at a time on one thread.
//! Before h5repack runs, this pass reads every chunk the filter will be handed, in the output's
//! chunk layout, codes it on a pool of `--threads` threads with the filter's own function
//! (`h5resid::filter::run_codec`), and writes the results into a chunk store
//! (`h5resid::store`). h5repack then runs as before with the store named by
//! `RESID_CHUNK_STORE`: the filter returns the stored bytes for each chunk it finds there
//! (keyed by a BLAKE3 hash of the exact input bytes and `cd_values`) and codes any other
//! chunk itself. The output is byte for byte the serial one; a chunk this pass got wrong
//! (another padding, another layout) is only a miss.
//!
//! - compress: the dataset is read in slabs of whole chunks (one `H5Dread` each), and each
//!   chunk is cut out into a buffer of the chunk's shape pre-filled the way HDF5 pads an edge
//!   chunk (the fill value, or zeros when the fill time is "never"), and coded with the
//!   `cd_values` the plugin's `set_local` will compute.
//! - decompress: each stored chunk is read raw (`H5Dread_chunk`) and decoded; datasets whose
//!   pipeline is not resid alone, and chunks stored without the filter, are left to h5repack.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use h5resid::store::{self, Direction, Key, Writer};
use hdf5::Dataset;
use hdf5_sys::h5i::hid_t;
use resid::params::{local_cd_values, ChunkInfo, DType, Params};

use crate::Failure;

/// One dataset's chunks, as the filter will see them.
pub struct Plan {
    pub dataset: Dataset,
    /// The chunk shape (the output's, for compress).
    pub chunks: Vec<usize>,
    /// The full `cd_values` the filter will be handed.
    pub cd: Vec<u32>,
    /// Element size in bytes.
    size: usize,
    /// What HDF5 pads an edge chunk with (compress), as the element's bits.
    pad: u64,
}

impl Plan {
    /// The plan to code `ds` with `params` into chunks of `chunks`.
    pub fn encode(
        ds: Dataset,
        chunks: Vec<usize>,
        params: &Params,
        size: usize,
    ) -> Result<Plan, Failure> {
        let dtype = if size == 4 { DType::F32 } else { DType::F64 };
        let (fill, never) = fill_of(&ds)?;
        // What `set_local` computes: the user's words as h5repack hands them over, the element
        // type, the chunk shape and the fill value.
        let user = Params::from_cd_values(&params.to_cd_values())
            .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?;
        let chunk = ChunkInfo::new(dtype, &chunks)
            .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?
            .with_padding(fill);
        let cd = local_cd_values(&user, &chunk)
            .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?;
        Ok(Plan {
            dataset: ds,
            chunks,
            cd,
            size,
            pad: if never { 0 } else { fill },
        })
    }

    /// The plan to decode `ds`, whose only filter is resid with the full `cd`.
    pub fn decode(ds: Dataset, cd: Vec<u32>) -> Result<Plan, Failure> {
        let chunks = ds.chunk().unwrap_or_default();
        let size = ds
            .dtype()
            .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?
            .size();
        Ok(Plan {
            dataset: ds,
            chunks,
            cd,
            size,
            pad: 0,
        })
    }

    /// Chunks in the grid over the dataset's current shape.
    fn grid(&self) -> Vec<u64> {
        self.dataset
            .shape()
            .iter()
            .zip(&self.chunks)
            .map(|(&d, &c)| d.div_ceil(c.max(1)) as u64)
            .collect()
    }

    fn count(&self) -> u64 {
        self.grid().iter().product()
    }

    fn chunk_bytes(&self) -> usize {
        self.chunks.iter().product::<usize>() * self.size
    }

    /// The offset of every chunk of the grid, in C order.
    fn offsets(&self) -> impl Iterator<Item = Vec<u64>> + '_ {
        let grid = self.grid();
        let n: u64 = grid.iter().product();
        (0..n).map(move |mut i| {
            let mut off = vec![0u64; grid.len()];
            for d in (0..grid.len()).rev() {
                off[d] = (i % grid[d]) * self.chunks[d] as u64;
                i /= grid[d];
            }
            off
        })
    }
}

/// The dataset's fill value as bits (0 when it cannot be read: what the plugin's `set_local`
/// uses then) and whether its fill time is "never" (HDF5 then pads with zeros).
fn fill_of(ds: &Dataset) -> Result<(u64, bool), Failure> {
    let dcpl = ds
        .dcpl()
        .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?;
    let dtype = ds
        .dtype()
        .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?;
    let mut value = [0u8; 8];
    let (pid, tid) = (dcpl.id(), dtype.id());
    // SAFETY: `value` holds one element of the dataset's type (4 or 8 bytes).
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5p::H5Pget_fill_value(pid, tid, value.as_mut_ptr().cast())
    });
    let bits = match (rc >= 0, dtype.size()) {
        (false, _) => 0,
        (true, 4) => u32::from_le_bytes(value[..4].try_into().unwrap()) as u64,
        (true, _) => u64::from_le_bytes(value),
    };
    Ok((
        bits,
        dcpl.fill_time() == hdf5::plist::dataset_create::FillTime::Never,
    ))
}

/// A chunk to code: which plan, where, and its bytes as the filter will receive them.
struct Job {
    plan: usize,
    input: Vec<u8>,
}

/// The store file of one run, removed when dropped: in `/dev/shm` (memory: no write-back to
/// a disk) when the store can take up to `bytes` there, within a quarter of the available
/// memory, else beside the output.
pub struct TempStore(PathBuf);

impl TempStore {
    pub fn new(output: &Path, bytes: u64) -> TempStore {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = format!(".{name}.resid-store-{}", std::process::id());
        let shm = Path::new("/dev/shm");
        if fits_in_memory(shm, bytes) {
            return TempStore(shm.join(file));
        }
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        TempStore(dir.join(file))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Whether `dir` is a memory file system with room for twice `bytes`, and `bytes` is at most a
/// quarter of the memory available.
fn fits_in_memory(dir: &Path, bytes: u64) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is NUL-terminated and `st` is a plain C struct statvfs fills in.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return false;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    dir.is_dir() && free / 2 >= bytes && available / 4 >= bytes
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the pass did.
pub struct Summary {
    pub chunks: u64,
    pub stored: usize,
    pub seconds: f64,
}

/// Codes every chunk of `plans` in `dir` on `threads` threads into the store `store`.
pub fn run(
    dir: Direction,
    plans: &[Plan],
    threads: usize,
    quiet: bool,
    store: &TempStore,
) -> Result<Summary, Failure> {
    let start = Instant::now();
    let total: u64 = plans.iter().map(Plan::count).sum();
    let bar = progress_bar(quiet, total, dir);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("resid-{i}"))
        .build()
        .map_err(|e| Failure::run(format!("cannot start {threads} threads: {e}")))?;
    let writer = Writer::create(store.path()).map_err(|e| store_error(store, e))?;
    // In flight at once: enough to keep every thread busy, at most about 512 MiB of input.
    let largest = plans
        .iter()
        .map(Plan::chunk_bytes)
        .max()
        .unwrap_or(1)
        .max(1);
    let limit = ((512 << 20) / largest).clamp(threads, 2 * threads);
    let cds: Vec<&[u32]> = plans.iter().map(|p| &p.cd[..]).collect();
    let work = |job: &Job| -> Option<(Key, Vec<u8>)> {
        let cd = cds[job.plan];
        // A chunk that fails here is left to h5repack, which fails on it with the
        // filter's message, as without this pass.
        let out = h5resid::filter::run_codec(dir == Direction::Decode, cd, &job.input).ok()?;
        Some((store::key(dir, cd, &job.input), out))
    };
    let (tx, rx) = mpsc::sync_channel::<Option<(Key, Vec<u8>)>>(limit);
    let (slot_tx, slot_rx) = mpsc::sync_channel::<()>(limit);
    let (writer, read) = std::thread::scope(|s| {
        let bar = &bar;
        let written = s.spawn(move || {
            let mut writer = Ok(writer);
            for coded in rx {
                let _ = slot_rx.recv();
                if let (Ok(w), Some((key, value))) = (&mut writer, coded) {
                    if let Err(e) = w.add(key, &value) {
                        writer = Err(e);
                    }
                }
                bar.inc(1);
            }
            writer
        });
        let read = pool.in_place_scope(|scope| {
            let mut submit = |job: Job| {
                // Waits while `limit` chunks are in flight.
                let _ = slot_tx.send(());
                let tx = tx.clone();
                let work = &work;
                scope.spawn(move |_| {
                    let _ = tx.send(work(&job));
                });
            };
            read_chunks(dir, plans, &mut submit, bar)
        });
        drop(tx);
        (written.join(), read)
    });
    read?;
    let writer = writer
        .map_err(|_| Failure::run("the chunk store writer stopped"))?
        .map_err(|e| store_error(store, e))?;
    let stored = writer.len();
    writer.finish().map_err(|e| store_error(store, e))?;
    bar.finish_and_clear();
    Ok(Summary {
        chunks: total,
        stored,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn store_error(store: &TempStore, e: std::io::Error) -> Failure {
    Failure::run(format!(
        "cannot write the chunk store {}: {e} (--threads 1 runs without it)",
        store.path().display()
    ))
}

fn progress_bar(quiet: bool, total: u64, dir: Direction) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    let what = match dir {
        Direction::Encode => "coded",
        Direction::Decode => "decoded",
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{pos}}/{{len}} chunks {what} {{wide_bar}} {{eta}}"
        ))
        .unwrap(),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Source bytes `compress` reads at once: a slab of whole chunks.
const SLAB_BYTES: u64 = 256 << 20;

/// Reads every chunk of `plans` on this thread and hands each to `submit`; chunks the pass
/// leaves to h5repack (not stored, stored without the filter) only move the bar.
fn read_chunks(
    dir: Direction,
    plans: &[Plan],
    submit: &mut dyn FnMut(Job),
    bar: &indicatif::ProgressBar,
) -> Result<(), Failure> {
    for (i, plan) in plans.iter().enumerate() {
        if dir == Direction::Encode {
            read_slabs(plan, &mut |input| submit(Job { plan: i, input }))?;
            continue;
        }
        for offset in plan.offsets() {
            match read_stored(plan, &offset)? {
                Some(input) => submit(Job { plan: i, input }),
                None => bar.inc(1),
            }
        }
    }
    Ok(())
}

/// Calls `f` for every index of a box of `shape`, in C order.
fn for_each_index(shape: &[u64], mut f: impl FnMut(&[u64])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0u64; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Every chunk of `plan` as the filter receives it on write (the dataset's values in the box
/// the chunk covers, the rest padded as HDF5 pads it), in C order of the chunk grid. The
/// dataset is read in slabs one chunk thick in the first `k` dimensions and whole in the
/// others (`k` the fewest that keeps a slab within [`SLAB_BYTES`]): one `H5Dread` per slab
/// instead of one per chunk, which from a contiguous dataset reads far less.
fn read_slabs(plan: &Plan, f: &mut dyn FnMut(Vec<u8>)) -> Result<(), Failure> {
    let ds = &plan.dataset;
    let dims: Vec<u64> = ds.shape().iter().map(|&d| d as u64).collect();
    let chunks: Vec<u64> = plan.chunks.iter().map(|&c| c as u64).collect();
    let rank = dims.len();
    let size = plan.size as u64;
    let k = (1..=rank)
        .find(|&k| {
            chunks[..k].iter().product::<u64>() * dims[k..].iter().product::<u64>() * size
                <= SLAB_BYTES
        })
        .unwrap_or(rank);
    let grid: Vec<u64> = dims
        .iter()
        .zip(&chunks)
        .map(|(d, c)| d.div_ceil(*c))
        .collect();
    let tid = ds
        .dtype()
        .map_err(|e| Failure::run(format!("{}: {e}", ds.name())))?;
    let (did, tid) = (ds.id(), tid.id());
    let pad = plan.pad.to_le_bytes();
    let mut failed = None;
    let mut buf = Vec::new();
    for_each_index(&grid[..k], |slab| {
        if failed.is_some() {
            return;
        }
        let mut offset: Vec<u64> = slab.iter().zip(&chunks).map(|(g, c)| g * c).collect();
        offset.resize(rank, 0);
        let count: Vec<u64> = (0..rank)
            .map(|d| {
                if d < k {
                    chunks[d].min(dims[d] - offset[d])
                } else {
                    dims[d]
                }
            })
            .collect();
        // One buffer for every slab: faulting in fresh pages costs as much as the read.
        buf.resize((count.iter().product::<u64>() * size) as usize, 0);
        // SAFETY: every id is valid for the call; `buf` holds the whole box `count`.
        let ok = hdf5::sync::sync(|| unsafe {
            read_hyperslab(did, tid, &offset, &count, &count, &mut buf)
        });
        if !ok {
            failed = Some(offset);
            return;
        }
        for_each_index(&grid[k..], |inner| {
            let mut at = offset.clone();
            for (d, g) in inner.iter().enumerate() {
                at[k + d] = g * chunks[k + d];
            }
            let mut chunk = vec![0u8; plan.chunk_bytes()];
            if plan.pad != 0 {
                for v in chunk.chunks_exact_mut(plan.size) {
                    v.copy_from_slice(&pad[..plan.size]);
                }
            }
            let rel: Vec<u64> = at.iter().zip(&offset).map(|(a, o)| a - o).collect();
            let part: Vec<u64> = (0..rank).map(|d| chunks[d].min(dims[d] - at[d])).collect();
            copy_box(&buf, &count, &rel, &mut chunk, &chunks, &part, plan.size);
            f(chunk);
        });
    });
    match failed {
        Some(offset) => Err(Failure::run(format!(
            "{}: cannot read the values at {offset:?}",
            ds.name()
        ))),
        None => Ok(()),
    }
}

/// Copies the box `part` at `rel` of `src` (a C-ordered array of shape `src_shape`) into the
/// leading corner of `dst` (shape `dst_shape`), elements of `size` bytes.
fn copy_box(
    src: &[u8],
    src_shape: &[u64],
    rel: &[u64],
    dst: &mut [u8],
    dst_shape: &[u64],
    part: &[u64],
    size: usize,
) {
    let rank = part.len();
    let strides = |shape: &[u64]| {
        let mut s = vec![1u64; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            s[d] = s[d + 1] * shape[d + 1];
        }
        s
    };
    let (ss, ds) = (strides(src_shape), strides(dst_shape));
    let run = part[rank - 1] as usize * size;
    for_each_index(&part[..rank - 1], |idx| {
        let mut from = rel[rank - 1];
        let mut to = 0;
        for d in 0..rank - 1 {
            from += (rel[d] + idx[d]) * ss[d];
            to += idx[d] * ds[d];
        }
        let (from, to) = (from as usize * size, to as usize * size);
        dst[to..to + run].copy_from_slice(&src[from..from + run]);
    });
}

/// `H5Dread` of the box `offset` + `count` of dataset `did` into the leading corner of `buf`,
/// a C-ordered array of shape `whole`, with memory type `tid`. False on any HDF5 failure.
///
/// # Safety
/// `did` and `tid` must be valid ids; `buf` must hold `whole`'s product elements of `tid`.
unsafe fn read_hyperslab(
    did: hid_t,
    tid: hid_t,
    offset: &[u64],
    count: &[u64],
    whole: &[u64],
    buf: &mut [u8],
) -> bool {
    use hdf5_sys::h5d::{H5Dget_space, H5Dread};
    use hdf5_sys::h5p::H5P_DEFAULT;
    use hdf5_sys::h5s::H5Sselect_hyperslab;
    use hdf5_sys::h5s::{H5S_seloper_t::H5S_SELECT_SET, H5Sclose, H5Screate_simple};
    let rank = whole.len() as i32;
    let zeros = vec![0u64; whole.len()];
    let file = H5Dget_space(did);
    let mem = H5Screate_simple(rank, whole.as_ptr(), std::ptr::null());
    let ok = file >= 0
        && mem >= 0
        && H5Sselect_hyperslab(
            file,
            H5S_SELECT_SET,
            offset.as_ptr(),
            std::ptr::null(),
            count.as_ptr(),
            std::ptr::null(),
        ) >= 0
        && H5Sselect_hyperslab(
            mem,
            H5S_SELECT_SET,
            zeros.as_ptr(),
            std::ptr::null(),
            count.as_ptr(),
            std::ptr::null(),
        ) >= 0
        && H5Dread(did, tid, mem, file, H5P_DEFAULT, buf.as_mut_ptr().cast()) >= 0;
    for s in [file, mem] {
        if s >= 0 {
            H5Sclose(s);
        }
    }
    ok
}

/// The stored bytes of the chunk at `offset`, or `None` when it is not stored or was stored
/// without the filter (h5repack handles those as it always does).
fn read_stored(plan: &Plan, offset: &[u64]) -> Result<Option<Vec<u8>>, Failure> {
    let ds = &plan.dataset;
    let (mut mask, mut addr, mut size) = (0u32, 0u64, 0u64);
    let did = ds.id();
    // SAFETY: `offset` has one entry per dimension; the outputs are plain integers.
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dget_chunk_info_by_coord(
            did,
            offset.as_ptr(),
            &mut mask,
            &mut addr,
            &mut size,
        )
    });
    if rc < 0 {
        return Err(Failure::run(format!(
            "{}: cannot find the chunk at {offset:?}",
            ds.name()
        )));
    }
    if addr == u64::MAX || mask & 1 != 0 {
        return Ok(None);
    }
    let (mask, buf) = crate::h5::read_raw_chunk(ds, offset, size as usize)?;
    Ok((mask & 1 == 0).then_some(buf))
}
