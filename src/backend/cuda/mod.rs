//! The CUDA backend: the kernels of `kernels/*.cu`, compiled at run time by NVRTC to a CUBIN for
//! the device's architecture, launched through cudarc (driver API, libraries opened at run
//! time). With `nn::simd`, the only modules of the crate allowed `unsafe` (kernel launches, raw
//! NVRTC calls); this file, `codec`, `kernels` and `kernel_cache` need none.
//!
//! cudarc panics when libcuda or libnvrtc is missing, so presence is checked first and every
//! entry point runs under `catch_unwind`: a failure is an `Err`, and the caller falls back to
//! the CPU.
//!
//! The files: `compile` (NVRTC and the [`kernel_cache`], the sources in [`kernels`]), `probe`
//! (opening the device), [`context`] (the caller's current context), `launch` (checked raw
//! launches), `staging` (pinned transfers); one file per stage of the chunk codec (`stats`,
//! `lorenzo`, `bitplane`, `packed`), with `codec` running them over a chunk; and the learned
//! stages, [`conv`], [`nglr`], [`train`].

#[allow(unsafe_code)]
mod bitplane;
mod codec;
#[allow(unsafe_code)]
mod compile;
#[allow(unsafe_code)]
pub mod context;
#[allow(unsafe_code)]
pub mod conv;
mod host;
pub mod kernel_cache;
pub mod kernels;
#[allow(unsafe_code)]
mod launch;
#[allow(unsafe_code)]
mod lorenzo;
#[allow(unsafe_code)]
pub mod nglr;
#[allow(unsafe_code)]
mod packed;
#[allow(unsafe_code)]
mod probe;
#[allow(unsafe_code)]
mod staging;
#[allow(unsafe_code)]
mod stats;
#[allow(unsafe_code)]
pub mod train;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::driver::{
    sys::CUevent_flags, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream,
    PinnedHostSlice,
};

pub use bitplane::plane_layout;
pub use compile::{
    cache_key, compile, compile_all, compile_cached, compile_stored, log_or_clean, nvrtc_present,
    nvrtc_version, pick_arch, supported_archs, Compiled,
};
pub use context::driver_present;
pub use lorenzo::block_table;
pub use packed::PackedLayout;
pub use staging::{advise_huge_pages, Staged, STAGE, STAGED_MIN};

use crate::backend::device_error;
use crate::error::Result;
use context::Caller;

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

    /// Copies `v` into `d` from element `at` on.
    pub fn upload_into<T: cudarc::driver::DeviceRepr>(
        &self,
        v: &[T],
        d: &mut CudaSlice<T>,
        at: usize,
    ) -> Result<()> {
        crate::error::ensure!(
            at.checked_add(v.len()).is_some_and(|end| end <= d.len()),
            crate::error::Error::Unsupported("cuda: upload past the end of a buffer".into())
        );
        let mut view = d.slice_mut(at..at + v.len());
        self.stream
            .memcpy_htod(v, &mut view)
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

    pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(|e| device_error("alloc", e))
    }
}
