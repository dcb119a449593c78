//! The FFI boundary: every callback body runs inside [`guarded`], which catches panics and turns
//! any failure into an HDF5 error-stack entry (ARCHITECTURE.md invariant 3: nothing unwinds into C).
//! The C ABI of [`crate::capi`], which may run with no HDF5 loaded, uses [`catch`] alone and keeps
//! the message for `resid_last_error`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};

use crate::h5api::{self, Minor};

/// Prefix of every message the plugin puts on the HDF5 error stack.
pub const PREFIX: &str = "resid: ";

/// Runs `body`; on `Err(msg)` or a panic, reports the failure under `func` and returns `fail`.
#[track_caller]
pub fn guarded<T>(
    func: &'static str,
    minor: Minor,
    fail: T,
    body: impl FnOnce() -> Result<T, String>,
) -> T {
    let loc = Location::caller();
    match catch(func, body) {
        Ok(v) => v,
        Err(msg) => {
            report(func, minor, &msg, loc);
            fail
        }
    }
}

/// Runs `body`, turning a panic into `Err` ("internal error in `func`: ..."). Reports nothing.
pub fn catch<T>(func: &str, body: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => Err(format!(
            "internal error in {func}: {}",
            panic_text(&*payload)
        )),
    }
}

/// Puts `msg` (prefixed with "resid: ") on HDF5's error stack, or on stderr when no HDF5 error
/// API could be found. Never panics.
pub fn report(func: &str, minor: Minor, msg: &str, loc: &Location<'_>) {
    let msg = with_prefix(msg);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let pushed = match h5api::api() {
            Ok(api) => api.push_error(loc.file(), func, loc.line(), minor, &msg),
            Err(_) => false,
        };
        if !pushed {
            eprintln!("{msg}");
        }
    }));
}

/// `msg` with the "resid: " prefix, added once.
pub fn with_prefix(msg: &str) -> String {
    if msg.starts_with(PREFIX) {
        msg.to_owned()
    } else {
        format!("{PREFIX}{msg}")
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_added_once() {
        assert_eq!(with_prefix("bad"), "resid: bad");
        assert_eq!(with_prefix("resid: bad"), "resid: bad");
    }

    #[test]
    fn panics_become_the_failure_value() {
        let v = guarded("test", Minor::CantFilter, 0usize, || panic!("boom"));
        assert_eq!(v, 0);
        let v = guarded("test", Minor::CantFilter, 0usize, || Err("nope".into()));
        assert_eq!(v, 0);
        assert_eq!(guarded("test", Minor::CantFilter, 0usize, || Ok(7)), 7);
    }

    #[test]
    fn catch_turns_panics_into_errors() {
        let e = catch("f", || -> Result<(), String> { panic!("boom") }).unwrap_err();
        assert_eq!(e, "internal error in f: boom");
        assert_eq!(catch("f", || Ok(3)), Ok(3));
    }
}
