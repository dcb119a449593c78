//! Living inside someone else's CUDA process. resid runs in host applications that may use
//! CUDA themselves (a GPU simulation code calling `H5Dwrite`, PyTorch or CuPy beside h5py), so
//! it must leave their CUDA state as it found it and work on their device:
//!
//! - cudarc makes resid's context current on the calling thread at every call; [`Caller`]
//!   notes the thread's current context when resid's GPU work begins and puts it back when
//!   the work ends (the CUDA libraries' rule: a library call does not change the caller's
//!   current context);
//! - [`pick_device`] chooses the device: `RESID_CUDA_DEVICE` when set, else the device of the
//!   context current on the thread that first uses resid's GPU path (as cuBLAS and cuFFT work
//!   on the current device), else device 0.

use std::sync::OnceLock;

use cudarc::driver::{result, sys};

use crate::error::{Error, Result};

/// The environment variable that names the device (an ordinal among the visible devices).
pub const DEVICE_ENV: &str = "RESID_CUDA_DEVICE";

/// Whether libcuda can be opened; looked up once, since each look is a `dlopen`.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        std::panic::catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
    })
}

/// The calling thread's current context, null when it has none or the driver has not been
/// initialized; `None` when that cannot be known.
fn current() -> Option<sys::CUcontext> {
    let mut ctx = std::ptr::null_mut();
    match unsafe { sys::cuCtxGetCurrent(&mut ctx) } {
        sys::CUresult::CUDA_SUCCESS => Some(ctx),
        sys::CUresult::CUDA_ERROR_NOT_INITIALIZED => Some(std::ptr::null_mut()),
        _ => None,
    }
}

/// The caller's current context, saved for the length of one piece of resid's GPU work and
/// made current again on drop (null included: a thread that had none is left with none).
pub struct Caller {
    saved: Option<sys::CUcontext>,
}

impl Caller {
    pub fn save() -> Caller {
        let saved = if driver_present() {
            std::panic::catch_unwind(current).ok().flatten()
        } else {
            None
        };
        Caller { saved }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        let Some(saved) = self.saved else { return };
        let _ = std::panic::catch_unwind(|| {
            if current().is_some_and(|now| now != saved) {
                let _ = unsafe { sys::cuCtxSetCurrent(saved) };
            }
        });
    }
}

/// The ordinal, among `count` devices, of the device of the calling thread's current context,
/// when it has one.
pub fn current_ordinal(count: usize) -> Option<usize> {
    current().filter(|c| !c.is_null())?;
    let mut dev: sys::CUdevice = 0;
    if unsafe { sys::cuCtxGetDevice(&mut dev) } != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    (0..count).find(|&i| result::device::get(i as i32).ok() == Some(dev))
}

/// The device to open among `count` visible ones: `setting` (the value of
/// [`DEVICE_ENV`]) when given, else the caller's device `caller`, else 0. An ordinal that
/// names no device is an error, so the CPU takes over with a message that says why.
pub fn pick_device(setting: Option<&str>, caller: Option<usize>, count: usize) -> Result<usize> {
    match setting.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => match s.parse::<usize>() {
            Ok(i) if i < count => Ok(i),
            _ => Err(Error::Unsupported(format!(
                "cuda: {DEVICE_ENV}={s} names no device (ordinals 0..{count} are visible)"
            ))),
        },
        None => Ok(caller.filter(|&i| i < count).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_is_the_setting_then_the_callers_then_zero() {
        assert_eq!(pick_device(None, None, 4).unwrap(), 0);
        assert_eq!(pick_device(None, Some(3), 4).unwrap(), 3);
        assert_eq!(pick_device(Some(""), Some(2), 4).unwrap(), 2);
        assert_eq!(pick_device(Some(" 1 "), Some(3), 4).unwrap(), 1);
        for bad in ["4", "-1", "gpu1", "1.0"] {
            let e = pick_device(Some(bad), Some(0), 4).unwrap_err().to_string();
            assert!(
                e.contains(&format!("RESID_CUDA_DEVICE={bad} names no device")),
                "{e}"
            );
            assert!(e.contains("0..4"), "{e}");
        }
    }

    #[test]
    fn without_a_driver_nothing_is_saved_or_restored() {
        if driver_present() {
            return;
        }
        assert!(Caller::save().saved.is_none());
    }
}
