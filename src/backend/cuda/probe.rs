//! Opening the device: the caller's or the chosen device, a context and stream, and every
//! kernel module compiled (or taken from the kernel cache) and loaded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use cudarc::driver::CudaContext;
use cudarc::nvrtc::Ptx;

use super::compile::{
    compile_all, compile_stored, nvrtc_present, nvrtc_version, pick_arch, supported_archs,
};
use super::context::{current_ordinal, driver_present, pick_device, DEVICE_ENV};
use super::{guard, kernel_cache, kernels, Cuda, Startup};
use crate::backend::device_error;
use crate::error::{ensure, Error, Result};

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
}
