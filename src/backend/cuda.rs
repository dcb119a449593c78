//! The CUDA backend: the kernels of `kernels/*.cu`, compiled at run time by NVRTC to a CUBIN for
//! the device's architecture, launched through cudarc (driver API, libraries opened at run
//! time). The only module of the crate allowed `unsafe` (kernel launches, raw NVRTC calls).
//!
//! cudarc panics when libcuda or libnvrtc is missing, so presence is checked first and every
//! entry point runs under `catch_unwind`: a failure is an `Err`, and the caller falls back to
//! the CPU.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::{
    sys::CUevent_flags, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};
use rayon::prelude::*;

use super::cuda_context::{self, current_ordinal, pick_device, Caller, DEVICE_ENV};
use super::kernel_cache;
use super::kernels::{self, Module, Param};
use super::{cpu, device_error, DecodeJob, EncodeJob, Encoded, Stages};
use crate::code::{self, packed};
use crate::error::{ensure, Error, Result};
use crate::field::{self, Block, Element};
use crate::params::{ChunkInfo, Coder, DType, Params};
use crate::predict::lorenzo;
use crate::quant::{Grid, Stats};

/// Runs `f`, turning a panic (cudarc's answer to a missing library) into an error, and
/// leaves the calling thread's current CUDA context as it was ([`Caller`]).
pub(crate) fn guard<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let _caller = Caller::save();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(device_error(what, msg))
        }
    }
}

/// Whether libcuda can be opened.
pub fn driver_present() -> bool {
    cuda_context::driver_present()
}

/// Whether libnvrtc can be opened.
pub fn nvrtc_present() -> bool {
    catch_unwind(|| unsafe { nvrtc_sys::is_culib_present() }).unwrap_or(false)
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    guard("nvrtc version", || {
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| device_error("nvrtcVersion", e))?;
        Ok((major, minor))
    })
}

/// The real architectures NVRTC can compile for (`[75, 80, 86, 89, 90, ...]`).
pub fn supported_archs() -> Result<Vec<i32>> {
    guard("nvrtc archs", || {
        let mut n: c_int = 0;
        unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
            .result()
            .map_err(|e| device_error("nvrtcGetNumSupportedArchs", e))?;
        let mut archs = vec![0 as c_int; n.max(0) as usize];
        unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| device_error("nvrtcGetSupportedArchs", e))?;
        Ok(archs)
    })
}

/// The highest architecture both NVRTC and a device of compute capability `cc` support.
pub fn pick_arch(archs: &[i32], cc: i32) -> Option<i32> {
    archs.iter().copied().filter(|&a| a <= cc).max()
}

/// A compiled module: the CUBIN image and NVRTC's log (empty when clean).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// Compiles `m` with [`kernels::options`] for `arch` (`"sm_90"`) to a CUBIN.
pub fn compile(m: &Module, arch: &str) -> Result<Compiled> {
    guard("nvrtc", || {
        let src = CString::new(kernels::source(m)).expect("no NUL in kernel sources");
        let name = CString::new(m.name).expect("no NUL in names");
        let prog = nvrtc::create_program(&src, Some(&name)).map_err(|e| device_error(m.name, e))?;
        let mut opts = kernels::options(m);
        opts.push(format!("--gpu-architecture={arch}"));
        let compiled = unsafe { nvrtc::compile_program(prog, &opts) };
        let log = unsafe { nvrtc::get_program_log(prog) }
            .map(|l| {
                let bytes: Vec<u8> = l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                String::from_utf8_lossy(&bytes).trim().to_string()
            })
            .unwrap_or_default();
        let out = match compiled {
            Ok(()) => {
                let mut size = 0usize;
                let mut cubin = Vec::new();
                let r = unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) }.result();
                let r = r.and_then(|_| {
                    cubin = vec![0u8; size];
                    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char) }
                        .result()
                });
                r.map(|_| Compiled { cubin, log })
                    .map_err(|e| device_error(m.name, e))
            }
            Err(e) => Err(Error::Unsupported(format!(
                "cuda: {} does not compile for {arch} ({e:?}):\n{log}",
                m.name
            ))),
        };
        let _ = unsafe { nvrtc::destroy_program(prog) };
        out
    })
}

/// Every module of [`kernels::MODULES`] for `arch`, as [`compile_cached`] gives them, on all
/// threads (NVRTC programs are independent; the largest module then sets the time a
/// process's first GPU use takes when the cache is empty). What [`Cuda::probe`] loads.
pub fn compile_all(
    arch: &str,
    nvrtc: (i32, i32),
    cache: Option<&Path>,
) -> Vec<Result<(Compiled, bool)>> {
    kernels::MODULES
        .par_iter()
        .map(|m| compile_cached(m, arch, nvrtc, cache))
        .collect()
}

/// The kernel cache's key for `m` compiled for `arch` by NVRTC `nvrtc`.
pub fn cache_key(m: &Module, arch: &str, nvrtc: (i32, i32)) -> kernel_cache::Key {
    kernel_cache::Key {
        module: m.name.to_string(),
        source: kernels::source(m),
        options: kernels::options(m),
        arch: arch.to_string(),
        nvrtc,
    }
}

/// `m`'s image for `arch`: from the kernel cache in `cache` when an entry for exactly this
/// source, options, target and NVRTC is there (`true`), else [`compile_stored`] (`false`).
pub fn compile_cached(
    m: &Module,
    arch: &str,
    nvrtc: (i32, i32),
    cache: Option<&Path>,
) -> Result<(Compiled, bool)> {
    let hit = cache.and_then(|d| kernel_cache::load(d, &cache_key(m, arch, nvrtc)));
    match hit {
        Some(cubin) => Ok((
            Compiled {
                cubin,
                log: String::new(),
            },
            true,
        )),
        None => Ok((compile_stored(m, arch, nvrtc, cache)?, false)),
    }
}

/// [`compile`], the image then stored in the kernel cache in `cache` (replacing any entry).
pub fn compile_stored(
    m: &Module,
    arch: &str,
    nvrtc: (i32, i32),
    cache: Option<&Path>,
) -> Result<Compiled> {
    let c = compile(m, arch)?;
    if let Some(d) = cache {
        kernel_cache::store(d, &cache_key(m, arch, nvrtc), &c.cubin);
    }
    Ok(c)
}

/// A raw kernel argument for [`Cuda::launch`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A device address (0 = null).
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

/// Checks `args` against kernel `name`'s parameters as its source declares them
/// ([`kernels::kernels_in`]). A launch whose arguments disagree (count or kind) is refused
/// with the reason, where the device would otherwise read garbage.
pub(crate) fn check_args(name: &str, args: &[Arg]) -> Result<()> {
    type Signatures = HashMap<&'static str, Vec<Option<Param>>>;
    static SIGNATURES: OnceLock<Signatures> = OnceLock::new();
    let sigs = SIGNATURES.get_or_init(|| {
        kernels::MODULES
            .iter()
            .flat_map(|m| kernels::kernels_in(m.source))
            .collect()
    });
    let Some(params) = sigs.get(name) else {
        return Err(Error::Unsupported(format!("cuda: no kernel {name}")));
    };
    ensure!(
        params.len() == args.len(),
        Error::Unsupported(format!(
            "cuda: {name} takes {} arguments, given {}",
            params.len(),
            args.len()
        ))
    );
    for (k, (p, a)) in params.iter().zip(args).enumerate() {
        let given = match a {
            Arg::Ptr(_) => Param::Ptr,
            Arg::I32(_) => Param::I32,
            Arg::I64(_) => Param::I64,
            Arg::F32(_) => Param::F32,
            Arg::F64(_) => Param::F64,
        };
        ensure!(
            *p == Some(given),
            Error::Unsupported(format!(
                "cuda: {name}: argument {k} is {given:?}, the kernel takes {}",
                p.map_or("a type resid does not pass".into(), |p| format!("{p:?}"))
            ))
        );
    }
    Ok(())
}

/// Threads per block of [`Cuda::launch`] (the learned stages' kernels assume it).
pub(crate) const THREADS: u32 = 256;

/// Blocks of [`THREADS`] covering `n` items.
pub(crate) fn blocks_for(n: usize) -> usize {
    n.div_ceil(THREADS as usize)
}

/// Bytes in each of the two pinned staging buffers of [`Cuda::upload_staged`].
pub const STAGE: usize = 16 << 20;
/// Transfers from this size on go through the staging buffers.
pub const STAGED_MIN: usize = 1 << 20;

/// What opening the device cost: the probe's wall time and how many of the
/// [`kernels::MODULES`] came from the kernel cache instead of NVRTC.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    pub time: Duration,
    pub cached: usize,
}

/// The GPU backend: one device, its stream and every kernel, loaded.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    device: String,
    arch: i32,
    nvrtc: (i32, i32),
    startup: Startup,
    /// Two page-locked buffers, allocated on first use and kept (32 MiB of pinned memory),
    /// through which large transfers go: `None` inside when they could not be allocated.
    staging: Mutex<Option<Option<[PinnedHostSlice<u8>; 2]>>>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Cuda {
    /// Opens device 0 and loads every kernel, compiled or taken from the kernel cache
    /// ([`kernel_cache::dir`]); an error says what is missing.
    pub fn probe() -> Result<Cuda> {
        Cuda::probe_with(kernel_cache::dir().as_deref())
    }

    /// [`Cuda::probe`] with the kernel cache in `cache` (`None`: compile everything).
    pub fn probe_with(cache: Option<&Path>) -> Result<Cuda> {
        let start = Instant::now();
        if !cfg!(target_endian = "little") {
            return Err(Error::Unsupported("cuda: big-endian host".into()));
        }
        if !driver_present() {
            return Err(Error::Unsupported("cuda: libcuda not found".into()));
        }
        if !nvrtc_present() {
            return Err(Error::Unsupported("cuda: libnvrtc not found".into()));
        }
        guard("probe", || {
            let count = CudaContext::device_count().map_err(|e| device_error("devices", e))?;
            ensure!(count > 0, Error::Unsupported("cuda: no device".into()));
            let count = count as usize;
            let setting = std::env::var(DEVICE_ENV).ok();
            // Nothing has made resid's context current yet: the current one is the caller's.
            let ordinal = pick_device(setting.as_deref(), current_ordinal(count), count)?;
            let ctx = CudaContext::new(ordinal).map_err(|e| device_error("context", e))?;
            let (ma, mi) = ctx
                .compute_capability()
                .map_err(|e| device_error("compute capability", e))?;
            let nvrtc = nvrtc_version()?;
            let arch = pick_arch(&supported_archs()?, ma * 10 + mi).ok_or_else(|| {
                Error::Unsupported(format!("cuda: NVRTC {nvrtc:?} cannot target sm_{ma}{mi}"))
            })?;
            // One stream: cudarc's cross-stream event tracking is not needed.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let sm = format!("sm_{arch}");
            let images = compile_all(&sm, nvrtc, cache);
            let mut funcs = HashMap::new();
            let mut cached = 0;
            for (m, image) in kernels::MODULES.iter().zip(images) {
                let (c, hit) = image?;
                if !c.log.is_empty() {
                    log::debug!("resid: NVRTC {}: {}", m.name, c.log);
                }
                let module = match ctx.load_module(Ptx::from_binary(c.cubin)) {
                    Ok(module) => {
                        cached += usize::from(hit);
                        module
                    }
                    // A cached image the driver refuses (an entry written by a damaged
                    // NVRTC install, say): compile afresh and replace it.
                    Err(e) if hit => {
                        log::debug!(
                            "resid: kernel cache: {} refused ({e:?}); recompiling",
                            m.name
                        );
                        let c = compile_stored(m, &sm, nvrtc, cache)?;
                        ctx.load_module(Ptx::from_binary(c.cubin))
                            .map_err(|e| device_error(m.name, e))?
                    }
                    Err(e) => return Err(device_error(m.name, e)),
                };
                for &k in m.kernels {
                    let f = module.load_function(k).map_err(|e| device_error(k, e))?;
                    funcs.insert(k, f);
                }
            }
            let device = ctx.name().unwrap_or_else(|_| "?".into());
            Ok(Cuda {
                ctx,
                stream,
                funcs,
                device,
                arch,
                nvrtc,
                startup: Startup {
                    time: start.elapsed(),
                    cached,
                },
                staging: Mutex::new(None),
            })
        })
    }

    /// How long [`Cuda::probe`] took and how many modules came from the kernel cache.
    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// The architecture the kernels were compiled for (`sm_90`).
    pub fn arch(&self) -> String {
        format!("sm_{}", self.arch)
    }

    /// [`Cuda::arch`] as a number (`90`).
    pub fn arch_number(&self) -> i32 {
        self.arch
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (device {}, kernels for sm_{}, NVRTC {}.{})",
            self.device,
            self.ctx.ordinal(),
            self.arch,
            self.nvrtc.0,
            self.nvrtc.1
        )
    }

    fn f(&self, name: &str) -> &CudaFunction {
        &self.funcs[name]
    }

    /// The device address of `s` (for kernels that take many buffers, or offsets into one;
    /// cudarc's tracking is off, the stream orders every use).
    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        use cudarc::driver::DevicePtr;
        s.device_ptr(&self.stream).0
    }

    /// Launches kernel `name` on a grid of [`THREADS`]-thread blocks with raw arguments.
    ///
    /// # Safety
    /// Every [`Arg::Ptr`] is null (where the kernel allows it) or the address of a live device
    /// buffer holding everything the kernel reads or writes through it, until the stream has
    /// run the kernel (a download or [`Cuda::sync`] after the last launch).
    pub(crate) unsafe fn launch(
        &self,
        name: &str,
        grid: (usize, usize, usize),
        args: &[Arg],
    ) -> Result<()> {
        ensure!(
            grid.0 <= u32::MAX as usize && grid.1 <= 65535 && grid.2 <= 65535,
            Error::Unsupported(format!("cuda: {name}: grid {grid:?} too large"))
        );
        check_args(name, args)?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut b = self.stream.launch_builder(self.f(name));
        for a in args {
            match a {
                Arg::Ptr(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
            };
        }
        let dims = (grid.0 as u32, grid.1 as u32, grid.2 as u32);
        unsafe { b.launch(cfg(dims, (THREADS, 1, 1))) }.map_err(|e| device_error(name, e))?;
        Ok(())
    }

    /// A timing event recorded now on the stream.
    pub fn mark(&self) -> Result<CudaEvent> {
        let ev = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| device_error("event", e))?;
        ev.record(&self.stream)
            .map_err(|e| device_error("event", e))?;
        Ok(ev)
    }

    pub fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", e))
    }

    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(v)
            .map_err(|e| device_error("upload", e))
    }

    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        d: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(d)
            .map_err(|e| device_error("download", e))
    }

    /// Runs `f` with the two staging buffers, or returns `None` when they cannot be had
    /// (allocation failed once: transfers then go from pageable memory).
    fn with_staging<R>(
        &self,
        f: impl FnOnce(&mut [PinnedHostSlice<u8>; 2]) -> Result<R>,
    ) -> Option<Result<R>> {
        let mut guard = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        let slots = guard.get_or_insert_with(|| {
            // Not write-combined: the host reads these back on download (GPU.md).
            let alloc = || unsafe { self.ctx.alloc_pinned_with_flags::<u8>(STAGE, 0) };
            match (alloc(), alloc()) {
                (Ok(a), Ok(b)) => Some([a, b]),
                (a, b) => {
                    let e = a.err().or(b.err());
                    log::info!("resid: no pinned staging memory ({e:?}): pageable transfers");
                    None
                }
            }
        });
        slots.as_mut().map(f)
    }

    /// Uploads `data` through the pinned staging buffers: the host copies one piece (all
    /// threads) while the previous one crosses the bus. Pageable transfers run at a fraction
    /// of the bus's speed (GPU.md). Small transfers, and any when the buffers cannot be had,
    /// go through [`Cuda::upload`]. Any plain values (`u8`, `i32`, `f64`, ...).
    pub fn upload_staged<T: Staged>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if std::mem::size_of_val(data) < STAGED_MIN {
            return self.upload(data);
        }
        let per = STAGE / std::mem::size_of::<T>().max(1);
        let staged = self.with_staging(|slots| {
            let mut dst = unsafe { self.stream.alloc::<T>(data.len()) }
                .map_err(|e| device_error("alloc", e))?;
            let bufs = pinned_bufs(slots)?;
            // cudarc's own tracking of the pinned buffers is off (one stream, `probe`), and
            // sub-slices of them are not tracked at all: each transfer records an event, waited
            // for before its buffer is written again.
            let mut done: [Option<CudaEvent>; 2] = [None, None];
            for (k, piece) in data.chunks(per).enumerate() {
                if let Some(ev) = done[k % 2].take() {
                    ev.synchronize().map_err(|e| device_error("staging", e))?;
                }
                let buf = as_values::<T>(&mut bufs[k % 2][..std::mem::size_of_val(piece)])?;
                par_copy(bytemuck::cast_slice_mut(buf), bytemuck::cast_slice(piece));
                let mut view = dst.slice_mut(k * per..k * per + piece.len());
                self.stream
                    .memcpy_htod(&*buf, &mut view)
                    .map_err(|e| device_error("upload", e))?;
                done[k % 2] = Some(self.mark()?);
            }
            // The buffers are free for the next transfer when this returns.
            self.sync()?;
            Ok(dst)
        });
        staged.unwrap_or_else(|| self.upload(data))
    }

    /// Downloads `src` through the pinned staging buffers: one piece crosses the bus while the
    /// host copies out the previous one. Small transfers, and any when the buffers cannot be
    /// had, go through [`Cuda::download`].
    pub fn download_staged<T: Staged>(&self, src: &CudaSlice<T>) -> Result<Vec<T>> {
        if src.len() * std::mem::size_of::<T>() < STAGED_MIN {
            return self.download(src);
        }
        let mut out = vec![T::zeroed(); src.len()];
        self.download_staged_into(src, &mut out)?;
        Ok(out)
    }

    /// [`Cuda::download_staged`] into `out` (exactly `src`'s length).
    pub fn download_staged_into<T: Staged>(&self, src: &CudaSlice<T>, out: &mut [T]) -> Result<()> {
        let n = src.len();
        ensure!(
            out.len() == n,
            Error::SizeMismatch {
                expected: out.len(),
                actual: n
            }
        );
        let plain = |out: &mut [T]| -> Result<()> {
            self.stream
                .memcpy_dtoh(src, out)
                .map_err(|e| device_error("download", e))?;
            self.sync()
        };
        if std::mem::size_of_val(out) < STAGED_MIN {
            return plain(out);
        }
        advise_huge_pages(bytemuck::cast_slice_mut(out));
        let per = STAGE / std::mem::size_of::<T>().max(1);
        let staged = self.with_staging(|slots| {
            let bufs = pinned_bufs(slots)?;
            let pieces = n.div_ceil(per);
            let range = |k: usize| k * per..((k + 1) * per).min(n);
            // Events as in `upload_staged`.
            let issue = |k: usize, buf: &mut [u8]| -> Result<CudaEvent> {
                let r = range(k);
                let bytes = r.len() * std::mem::size_of::<T>();
                self.stream
                    .memcpy_dtoh(&src.slice(r), as_values::<T>(&mut buf[..bytes])?)
                    .map_err(|e| device_error("download", e))?;
                self.mark()
            };
            let mut done: [Option<CudaEvent>; 2] = [Some(issue(0, bufs[0])?), None];
            for k in 0..pieces {
                if k + 1 < pieces {
                    done[(k + 1) % 2] = Some(issue(k + 1, bufs[(k + 1) % 2])?);
                }
                if let Some(ev) = done[k % 2].take() {
                    ev.synchronize().map_err(|e| device_error("staging", e))?;
                }
                let r = range(k);
                let bytes = r.len() * std::mem::size_of::<T>();
                par_copy(bytemuck::cast_slice_mut(&mut out[r]), &bufs[k % 2][..bytes]);
            }
            Ok(())
        });
        staged.unwrap_or_else(|| plain(out))
    }

    pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(|e| device_error("alloc", e))
    }

    /// Range statistics of the values in `x` (device bytes of `dtype`).
    pub fn stats_dev(&self, x: &CudaSlice<u8>, dtype: DType) -> Result<Stats> {
        let n = (x.len() / dtype.size()) as u64;
        let out = self.upload(&[u64::MAX, 0u64, 0u64])?;
        let f = self.f(match dtype {
            DType::F32 => "stats_f32",
            DType::F64 => "stats_f64",
        });
        let blocks = (n.div_ceil(256)).clamp(1, 132 * 16) as u32;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&out);
        unsafe { b.launch(cfg((blocks, 1, 1), (256, 1, 1))) }
            .map_err(|e| device_error("stats", e))?;
        let h = self.download(&out)?;
        let key = |k: u64| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k });
        Ok(if h[2] == 0 {
            Stats {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                finite: 0,
            }
        } else {
            Stats {
                min: key(h[0]),
                max: key(h[1]),
                finite: h[2] as usize,
            }
        })
    }

    /// The fused encode kernel over device data: residuals (zigzag codes when `zigzag`) in
    /// block-major order, each block's OR of codes, each block's escape count.
    #[allow(clippy::too_many_arguments)]
    pub fn lorenzo_encode_dev(
        &self,
        x: &CudaSlice<u8>,
        dtype: DType,
        dims: [usize; 3],
        ext: [usize; 3],
        table: &CudaSlice<u64>,
        nblocks: usize,
        grid: Grid,
        eb: f64,
        zigzag: bool,
        codes: &mut CudaSlice<i32>,
        block_or: &mut CudaSlice<u32>,
        block_esc: &mut CudaSlice<u32>,
    ) -> Result<()> {
        ensure!(
            nblocks <= 65535,
            Error::Unsupported("cuda: more than 65535 blocks".into())
        );
        let tiles_x = ext[2].div_ceil(kernels::TILE_X) as u32;
        let tiles = tiles_x as usize * ext[1].div_ceil(kernels::TILE_Y);
        ensure!(
            tiles < i32::MAX as usize,
            Error::Unsupported("cuda: block too wide".into())
        );
        let f = self.f(match dtype {
            DType::F32 => "lorenzo_encode_f32",
            DType::F64 => "lorenzo_encode_f64",
        });
        let (d1, d2) = (dims[1] as u64, dims[2] as u64);
        let inv = 1.0 / grid.step;
        let zz: i32 = zigzag.into();
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(&d1)
            .arg(&d2)
            .arg(table)
            .arg(&tiles_x)
            .arg(&grid.mid)
            .arg(&inv)
            .arg(&grid.step)
            .arg(&eb)
            .arg(&zz)
            .arg(codes)
            .arg(block_or)
            .arg(block_esc);
        unsafe {
            b.launch(cfg(
                (tiles as u32, nblocks as u32, 1),
                (kernels::TILE_X as u32, kernels::TILE_Y as u32, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_encode", e))?;
        Ok(())
    }

    /// Bit-plane transposition of zigzag codes (block-major) into `words`.
    #[allow(clippy::too_many_arguments)]
    pub fn transpose_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        ext: [usize; 3],
        nblocks: usize,
        planes: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        words: &mut CudaSlice<u64>,
    ) -> Result<()> {
        let groups = (ext.iter().product::<usize>()).div_ceil(64);
        let mut b = self.stream.launch_builder(self.f("bitplane_transpose"));
        b.arg(codes).arg(table).arg(planes).arg(word_off).arg(words);
        unsafe {
            b.launch(cfg(
                (groups.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("bitplane_transpose", e))?;
        Ok(())
    }

    /// The inverse transposition with zigzag decoding: words to residuals (block-major).
    #[allow(clippy::too_many_arguments)]
    pub fn untranspose_dev(
        &self,
        words: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        ext: [usize; 3],
        nblocks: usize,
        planes: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        r: &mut CudaSlice<i32>,
    ) -> Result<()> {
        let groups = (ext.iter().product::<usize>()).div_ceil(64);
        let mut b = self.stream.launch_builder(self.f("bitplane_untranspose"));
        b.arg(words).arg(table).arg(planes).arg(word_off).arg(r);
        unsafe {
            b.launch(cfg(
                (groups.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("bitplane_untranspose", e))?;
        Ok(())
    }

    /// Whether every block of extent at most `ext` takes the one-pass decode.
    pub fn one_pass(ext: [usize; 3]) -> bool {
        ext[1] * ext[2] <= kernels::PLANE_MAX && ext[1] * (ext[2] | 1) <= kernels::PLANE_PAD
    }

    /// Inverse Lorenzo + dequantization: residuals (block-major, overwritten by the multi-pass
    /// path) to values (device bytes of `dtype`, grid order). `force_multi` picks the
    /// three-pass path even where the one-pass kernel applies (for tests and benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn lorenzo_decode_dev(
        &self,
        r: &mut CudaSlice<i32>,
        table: &CudaSlice<u64>,
        dims: [usize; 3],
        ext: [usize; 3],
        nblocks: usize,
        grid: Grid,
        dtype: DType,
        out: &mut CudaSlice<u8>,
        force_multi: bool,
    ) -> Result<()> {
        ensure!(
            nblocks <= 65535,
            Error::Unsupported("cuda: more than 65535 blocks".into())
        );
        let (d1, d2) = (dims[1] as u64, dims[2] as u64);
        let sfx = match dtype {
            DType::F32 => "f32",
            DType::F64 => "f64",
        };
        if Self::one_pass(ext) && !force_multi {
            let f = self.f(&format!("lorenzo_decode_planes_{sfx}"));
            let mut b = self.stream.launch_builder(f);
            b.arg(&*r)
                .arg(table)
                .arg(&d1)
                .arg(&d2)
                .arg(&grid.mid)
                .arg(&grid.step)
                .arg(out);
            unsafe { b.launch(cfg((nblocks as u32, 1, 1), (kernels::DEC_THREADS, 1, 1))) }
                .map_err(|e| device_error("lorenzo_decode_planes", e))?;
            return Ok(());
        }
        let rows = ext[0] * ext[1];
        let mut b = self.stream.launch_builder(self.f("lorenzo_scan_x"));
        b.arg(&mut *r).arg(table);
        unsafe {
            b.launch(cfg(
                (rows.div_ceil(8) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_x", e))?;
        let cols = ext[0] * ext[2];
        let mut b = self.stream.launch_builder(self.f("lorenzo_scan_y"));
        b.arg(&mut *r).arg(table);
        unsafe {
            b.launch(cfg(
                (cols.div_ceil(256) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_y", e))?;
        let plane = ext[1] * ext[2];
        let f = self.f(&format!("lorenzo_scan_z_{sfx}"));
        let mut b = self.stream.launch_builder(f);
        b.arg(&*r)
            .arg(table)
            .arg(&d1)
            .arg(&d2)
            .arg(&grid.mid)
            .arg(&grid.step)
            .arg(out);
        unsafe {
            b.launch(cfg(
                (plane.div_ceil(256) as u32, nblocks as u32, 1),
                (256, 1, 1),
            ))
        }
        .map_err(|e| device_error("lorenzo_scan_z", e))?;
        Ok(())
    }
}

impl Cuda {
    /// The packed coder's group widths of zigzag codes (block-major): `widths[group_off[b] + g]`.
    pub fn packed_widths_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        widths: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_widths"));
        b.arg(codes).arg(table).arg(group_off).arg(widths);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_widths", e))?;
        Ok(())
    }

    /// Per block, the exclusive prefix sum of the widths found at `widths + width_off[b]`:
    /// each group's first word in its block (`first[group_off[b] + g]`) and the block's total.
    #[allow(clippy::too_many_arguments)]
    pub fn packed_scan_dev(
        &self,
        widths: &CudaSlice<u8>,
        width_off: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        nblocks: usize,
        group_off: &CudaSlice<u64>,
        first: &mut CudaSlice<u32>,
        total: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_scan"));
        b.arg(widths)
            .arg(width_off)
            .arg(table)
            .arg(group_off)
            .arg(first)
            .arg(total);
        unsafe { b.launch(cfg((nblocks as u32, 1, 1), (1024, 1, 1))) }
            .map_err(|e| device_error("packed_scan", e))?;
        Ok(())
    }

    /// The packed words of every block, block `b`'s from word `word_off[b]` of `words` (bytes,
    /// little-endian u32 words).
    #[allow(clippy::too_many_arguments)]
    pub fn packed_write_dev(
        &self,
        codes: &CudaSlice<i32>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        widths: &CudaSlice<u8>,
        first: &CudaSlice<u32>,
        word_off: &CudaSlice<u64>,
        words: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_write"));
        b.arg(codes)
            .arg(table)
            .arg(group_off)
            .arg(widths)
            .arg(first)
            .arg(word_off)
            .arg(words);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_write", e))?;
        Ok(())
    }

    /// Residuals (block-major) from packed payloads laid end to end in `payload`, block `b`'s
    /// at byte `pay_off[b]` and its words at byte `words_at[b]`; `first` from
    /// [`Cuda::packed_scan_dev`] over the same payloads.
    #[allow(clippy::too_many_arguments)]
    pub fn packed_read_dev(
        &self,
        payload: &CudaSlice<u8>,
        pay_off: &CudaSlice<u64>,
        words_at: &CudaSlice<u64>,
        table: &CudaSlice<u64>,
        layout: &PackedLayout,
        group_off: &CudaSlice<u64>,
        first: &CudaSlice<u32>,
        r: &mut CudaSlice<i32>,
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(self.f("packed_read"));
        b.arg(payload)
            .arg(pay_off)
            .arg(words_at)
            .arg(table)
            .arg(group_off)
            .arg(first)
            .arg(r);
        unsafe { b.launch(layout.warp_grid()) }.map_err(|e| device_error("packed_read", e))?;
        Ok(())
    }
}

/// Where each block's groups of the packed coder start in the chunk-wide group arrays.
#[derive(Debug, Clone)]
pub struct PackedLayout {
    /// Per block, its first group.
    pub group_off: Vec<u64>,
    /// Groups in all.
    pub groups: usize,
    /// The most groups of one block.
    pub max_groups: usize,
    pub nblocks: usize,
}

impl PackedLayout {
    pub fn of(blocks: &[Block]) -> PackedLayout {
        let mut group_off = Vec::with_capacity(blocks.len());
        let (mut groups, mut max_groups) = (0usize, 0usize);
        for b in blocks {
            group_off.push(groups as u64);
            let g = b.len().div_ceil(packed::GROUP);
            groups += g;
            max_groups = max_groups.max(g);
        }
        PackedLayout {
            group_off,
            groups,
            max_groups,
            nblocks: blocks.len(),
        }
    }

    /// One warp a group: (ceil(max groups / 8), blocks) CTAs of 256 threads.
    fn warp_grid(&self) -> LaunchConfig {
        cfg(
            (
                self.max_groups.div_ceil(8).max(1) as u32,
                self.nblocks as u32,
                1,
            ),
            (256, 1, 1),
        )
    }
}

/// The two staging buffers as plain slices (pinned memory all the same, which the driver
/// transfers at full speed).
/// Plain values the staged transfers move as bytes (`u8`, `i32`, `f64`, ...): any bit pattern
/// is a value, and a value's size divides [`STAGE`].
pub trait Staged:
    bytemuck::Pod + Default + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
impl<T> Staged for T where
    T: bytemuck::Pod + Default + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}

/// A staging buffer's bytes as values of `T` (the buffers are page-aligned, so this fails
/// only for a length that is not a whole number of values).
fn as_values<T: Staged>(b: &mut [u8]) -> Result<&mut [T]> {
    bytemuck::try_cast_slice_mut(b)
        .map_err(|e| Error::Unsupported(format!("cuda: staging buffer as values: {e:?}")))
}

fn pinned_bufs(slots: &mut [PinnedHostSlice<u8>; 2]) -> Result<[&mut [u8]; 2]> {
    let [a, b] = slots;
    Ok([
        a.as_mut_slice().map_err(|e| device_error("staging", e))?,
        b.as_mut_slice().map_err(|e| device_error("staging", e))?,
    ])
}

/// Asks for huge pages on the part of `out` that spans whole 2 MiB pages. A fresh output buffer
/// (HDF5's, for every chunk read) otherwise takes a page fault every 4 KiB while the decoded
/// values are copied in, which bounds the GPU decoder's speed. Advice only: nothing changes
/// where transparent huge pages are off.
pub fn advise_huge_pages(out: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    let start = out.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + out.len()) / HUGE * HUGE;
    if end > first {
        // SAFETY: the range lies inside `out`; MADV_HUGEPAGE changes no contents.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

/// `dst.copy_from_slice(src)` on every thread, 1 MiB a task.
fn par_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(1 << 20)
        .zip(src.par_chunks(1 << 20))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: 0,
    }
}

/// The block table the kernels read (`BlockDesc` in `common.cuh`): origin, extent and
/// block-major offset of every block, 8 u64 each; and the offsets.
pub fn block_table(blocks: &[Block]) -> (Vec<u64>, Vec<usize>) {
    let mut t = Vec::with_capacity(blocks.len() * 8);
    let mut offsets = Vec::with_capacity(blocks.len());
    let mut off = 0usize;
    for b in blocks {
        offsets.push(off);
        t.extend(b.origin.iter().chain(&b.ext).map(|&v| v as u64));
        t.extend([off as u64, 0]);
        off += b.len();
    }
    (t, offsets)
}

/// Plane counts from the blocks' OR of codes, and each block's first word.
pub fn plane_layout(blocks: &[Block], ors: &[u32]) -> (Vec<u32>, Vec<u64>, usize) {
    let planes: Vec<u32> = ors.iter().map(|&o| 32 - o.leading_zeros()).collect();
    let mut off = Vec::with_capacity(blocks.len());
    let mut total = 0usize;
    for (b, &p) in blocks.iter().zip(&planes) {
        off.push(total as u64);
        total += b.len().div_ceil(64) * p as usize;
    }
    (planes, off, total)
}

/// One block's values, gathered from the chunk's bytes.
fn gather_values<T: Element>(data: &[u8], dims: [usize; 3], b: &Block) -> Vec<T> {
    let mut out = Vec::with_capacity(b.len());
    for z in 0..b.ext[0] {
        for y in 0..b.ext[1] {
            let start = ((b.origin[0] + z) * dims[1] + b.origin[1] + y) * dims[2] + b.origin[2];
            out.extend(field::from_bytes::<T>(
                &data[start * T::SIZE..(start + b.ext[2]) * T::SIZE],
            ));
        }
    }
    out
}

/// A block with escaped values, redone on the CPU: payload and global escape indices.
fn redo_block<T: Element>(job: &EncodeJob<'_>, b: &Block) -> (Vec<u8>, Vec<usize>) {
    let xb = gather_values::<T>(job.data, job.dims, b);
    let (coded, local) = cpu::encode_block_values(&xb, b.ext, job.grid, job.eb, job.coder);
    let global = local
        .iter()
        .map(|&li| b.global_index(job.dims, li))
        .collect();
    (coded, global)
}

impl Cuda {
    /// Encodes `job` from its values already on the device (`x`, freed once quantized).
    fn encode_dev(&self, job: &EncodeJob<'_>, x: CudaSlice<u8>) -> Result<Encoded> {
        let nb = job.blocks.len();
        let n: usize = job.blocks.iter().map(Block::len).sum();
        let (table, offsets) = block_table(job.blocks);
        let table_d = self.upload(&table)?;
        let mut codes = self.zeros::<i32>(n)?;
        let mut ors = self.zeros::<u32>(nb)?;
        let mut escs = self.zeros::<u32>(nb)?;
        let lz4 = job.coder == Coder::Lz4;
        let zigzag = job.coder != Coder::Range;
        self.lorenzo_encode_dev(
            &x, job.dtype, job.dims, job.ext, &table_d, nb, job.grid, job.eb, zigzag, &mut codes,
            &mut ors, &mut escs,
        )?;
        drop(x);
        let ors_h = self.download(&ors)?;
        let escs_h = self.download(&escs)?;
        let redo = |b: &Block| match job.dtype {
            DType::F32 => redo_block::<f32>(job, b),
            DType::F64 => redo_block::<f64>(job, b),
        };
        let parts: Vec<(Vec<u8>, Vec<usize>)> = if job.coder == Coder::Packed {
            let layout = PackedLayout::of(job.blocks);
            let goff_d = self.upload(&layout.group_off)?;
            let mut widths = self.zeros::<u8>(layout.groups)?;
            self.packed_widths_dev(&codes, &table_d, &layout, &goff_d, &mut widths)?;
            let mut first = self.zeros::<u32>(layout.groups)?;
            let mut totals = self.zeros::<u32>(nb)?;
            self.packed_scan_dev(
                &widths,
                &goff_d,
                &table_d,
                nb,
                &goff_d,
                &mut first,
                &mut totals,
            )?;
            let totals_h = self.download(&totals)?;
            let mut word_off = Vec::with_capacity(nb);
            let mut all_words = 0usize;
            for &t in &totals_h[..nb] {
                word_off.push(all_words as u64);
                all_words += t as usize;
            }
            let woff_d = self.upload(&word_off)?;
            let mut words = self.zeros::<u8>(4 * all_words)?;
            self.packed_write_dev(
                &codes, &table_d, &layout, &goff_d, &widths, &first, &woff_d, &mut words,
            )?;
            let widths_h = self.download_staged(&widths)?;
            let words_h = self.download_staged(&words)?;
            (0..nb)
                .into_par_iter()
                .map(|i| {
                    let b = &job.blocks[i];
                    if escs_h[i] > 0 {
                        return redo(b);
                    }
                    let g0 = layout.group_off[i] as usize;
                    let (w0, t) = (4 * word_off[i] as usize, 4 * totals_h[i] as usize);
                    let head = packed::widths_len(b.len());
                    let mut p = Vec::with_capacity(head + t);
                    p.extend_from_slice(&widths_h[g0..g0 + b.len().div_ceil(packed::GROUP)]);
                    p.resize(head, 0);
                    p.extend_from_slice(&words_h[w0..w0 + t]);
                    (p, Vec::new())
                })
                .collect()
        } else if lz4 {
            let (planes, woff, total) = plane_layout(job.blocks, &ors_h);
            let planes_d = self.upload(&planes)?;
            let woff_d = self.upload(&woff)?;
            let mut words = self.zeros::<u64>(total)?;
            self.transpose_dev(
                &codes, &table_d, job.ext, nb, &planes_d, &woff_d, &mut words,
            )?;
            let words_h = self.download_staged(&words)?;
            (0..nb)
                .into_par_iter()
                .map(|i| {
                    let b = &job.blocks[i];
                    if escs_h[i] > 0 {
                        return redo(b);
                    }
                    let len = b.len().div_ceil(64) * planes[i] as usize;
                    let w = &words_h[woff[i] as usize..woff[i] as usize + len];
                    (cpu::lz4_payload(planes[i], w), Vec::new())
                })
                .collect()
        } else {
            let r = self.download_staged(&codes)?;
            (0..nb)
                .into_par_iter()
                .map(|i| {
                    let b = &job.blocks[i];
                    if escs_h[i] > 0 {
                        return redo(b);
                    }
                    let rb = &r[offsets[i]..offsets[i] + b.len()];
                    (
                        code::encode_block(job.coder, rb, b.ext, lorenzo::ID),
                        Vec::new(),
                    )
                })
                .collect()
        };
        let mut escapes = Vec::new();
        let mut coded = Vec::with_capacity(nb);
        for (c, e) in parts {
            coded.push(c);
            escapes.extend(e);
        }
        escapes.sort_unstable();
        Ok(Encoded { coded, escapes })
    }

    /// Decodes `job` to the values on the device (bytes of the chunk's type).
    fn decode_dev(&self, job: &DecodeJob<'_>) -> Result<CudaSlice<u8>> {
        let nb = job.blocks.len();
        ensure!(job.parts.len() == nb, Error::Corrupt("block count".into()));
        super::verify(job.parts)?;
        let n: usize = job.blocks.iter().map(Block::len).sum();
        let (table, offsets) = block_table(job.blocks);
        let table_d = self.upload(&table)?;
        let all_lz4 = job.parts.iter().all(|p| p.0 == Coder::Lz4);
        let all_packed = job.parts.iter().all(|p| p.0 == Coder::Packed);
        let mut r_d = if all_packed {
            // Checked on the host (widths, padding, lengths), so the kernels read only inside
            // the payloads.
            job.blocks
                .par_iter()
                .zip(job.parts)
                .try_for_each(|(b, p)| packed::check(p.1, b.len()).map(|_| ()))?;
            let mut pay_off = Vec::with_capacity(nb);
            let mut words_at = Vec::with_capacity(nb);
            let mut all = Vec::with_capacity(job.parts.iter().map(|p| p.1.len()).sum());
            for (b, p) in job.blocks.iter().zip(job.parts) {
                pay_off.push(all.len() as u64);
                words_at.push((all.len() + packed::widths_len(b.len())) as u64);
                all.extend_from_slice(p.1);
            }
            let layout = PackedLayout::of(job.blocks);
            let payload_d = self.upload_staged(if all.is_empty() { &[0u8][..] } else { &all })?;
            let pay_off_d = self.upload(&pay_off)?;
            let words_at_d = self.upload(&words_at)?;
            let goff_d = self.upload(&layout.group_off)?;
            let mut first = self.zeros::<u32>(layout.groups)?;
            let mut totals = self.zeros::<u32>(nb)?;
            self.packed_scan_dev(
                &payload_d,
                &pay_off_d,
                &table_d,
                nb,
                &goff_d,
                &mut first,
                &mut totals,
            )?;
            let mut r_d = self.zeros::<i32>(n)?;
            self.packed_read_dev(
                &payload_d,
                &pay_off_d,
                &words_at_d,
                &table_d,
                &layout,
                &goff_d,
                &first,
                &mut r_d,
            )?;
            r_d
        } else if all_lz4 {
            let words: Vec<Result<(u32, Vec<u64>)>> = job
                .blocks
                .par_iter()
                .zip(job.parts)
                .map(|(b, p)| cpu::lz4_words(p.1, b.len()))
                .collect();
            let mut planes = Vec::with_capacity(nb);
            let mut woff = Vec::with_capacity(nb);
            let mut all = Vec::new();
            for w in words {
                let (p, w) = w?;
                planes.push(p);
                woff.push(all.len() as u64);
                all.extend_from_slice(&w);
            }
            let words_d = self.upload(if all.is_empty() { &[0u64][..] } else { &all })?;
            let planes_d = self.upload(&planes)?;
            let woff_d = self.upload(&woff)?;
            let mut r_d = self.zeros::<i32>(n)?;
            self.untranspose_dev(
                &words_d, &table_d, job.ext, nb, &planes_d, &woff_d, &mut r_d,
            )?;
            r_d
        } else {
            let mut r = vec![0i32; n];
            let mut slices: Vec<&mut [i32]> = Vec::with_capacity(nb);
            let mut rest = &mut r[..];
            for (i, b) in job.blocks.iter().enumerate() {
                debug_assert_eq!(offsets[i], n - rest.len());
                let (head, tail) = rest.split_at_mut(b.len());
                slices.push(head);
                rest = tail;
            }
            slices
                .into_par_iter()
                .zip(job.blocks.par_iter().zip(job.parts))
                .try_for_each(|(dst, (b, &(coder, bytes, _)))| {
                    code::decode_block(coder.into(), bytes, b.ext, lorenzo::ID, dst)
                })?;
            self.upload_staged(&r)?
        };
        let mut out = self.zeros::<u8>(n * job.dtype.size())?;
        self.lorenzo_decode_dev(
            &mut r_d, &table_d, job.dims, job.ext, nb, job.grid, job.dtype, &mut out, false,
        )?;
        Ok(out)
    }
}

impl Stages for Cuda {
    fn name(&self) -> String {
        format!("cuda: {}", self.describe())
    }

    fn stats(&self, data: &[u8], dtype: DType) -> Result<Stats> {
        guard("stats", || {
            let x = self.upload_staged(data)?;
            self.stats_dev(&x, dtype)
        })
    }

    fn encode(&self, job: &EncodeJob<'_>) -> Result<Encoded> {
        guard("encode", || {
            self.encode_dev(job, self.upload_staged(job.data)?)
        })
    }

    /// The chunk is uploaded once, for the statistics and the encode.
    fn encode_chunk(
        &self,
        data: &[u8],
        chunk: &ChunkInfo,
        params: &Params,
    ) -> Result<Option<(Grid, f64, Encoded)>> {
        guard("encode", || {
            let x = self.upload_staged(data)?;
            let st = self.stats_dev(&x, chunk.dtype)?;
            let Some((grid, eb, geo)) = super::chunk_plan(&st, chunk, params)? else {
                return Ok(None);
            };
            let job = geo.job(data, chunk.dtype, grid, eb, params.coder);
            Ok(Some((grid, eb, self.encode_dev(&job, x)?)))
        })
    }

    fn decode(&self, job: &DecodeJob<'_>) -> Result<Vec<u8>> {
        guard("decode", || {
            let n: usize = job.blocks.iter().map(Block::len).sum();
            let mut v = self.download_staged(&self.decode_dev(job)?)?;
            v.truncate(n * job.dtype.size());
            Ok(v)
        })
    }

    /// Downloads straight into `out`.
    fn decode_into(&self, job: &DecodeJob<'_>, out: &mut [u8]) -> Result<()> {
        guard("decode", || {
            let dev = self.decode_dev(job)?;
            if out.is_empty() {
                return Ok(()); // the device buffer holds a placeholder byte
            }
            self.download_staged_into(&dev, out)
        })
    }
}

/// NVRTC's message for an empty log, for reports.
pub fn log_or_clean(log: &str) -> &str {
    if log.is_empty() {
        "clean"
    } else {
        log
    }
}
