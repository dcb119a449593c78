//! NVRTC: the kernel modules compiled to CUBINs for the device's architecture, through the
//! on-disk [`kernel_cache`] where it has the image.

use std::ffi::{c_char, c_int, CString};
use std::panic::catch_unwind;
use std::path::Path;

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use rayon::prelude::*;

use super::guard;
use super::kernel_cache;
use super::kernels::{self, Module};
use crate::backend::device_error;
use crate::error::{Error, Result};

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
/// process's first GPU use takes when the cache is empty). What [`Cuda::probe`](super::Cuda::probe) loads.
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

/// NVRTC's message for an empty log, for reports.
pub fn log_or_clean(log: &str) -> &str {
    if log.is_empty() {
        "clean"
    } else {
        log
    }
}
