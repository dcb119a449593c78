//! `libh5resid.so`: the resid codec as an HDF5 dynamically loaded filter (id 32900).
//!
//! HDF5 finds this library through `HDF5_PLUGIN_PATH`, calls [`H5PLget_plugin_type`] and
//! [`H5PLget_plugin_info`], and registers the returned `H5Z_class2_t`. The library does not
//! link libhdf5: the few HDF5 functions the callbacks need are resolved at run time from the
//! libhdf5 that loaded it (see [`h5api`]), so one build serves h5py's bundled HDF5, the system
//! HDF5 tools and C programs alike.
//!
//! - `lib.rs`: the entry points and the filter class.
//! - [`h5api`]: the libloading table of HDF5 functions.
//! - [`filter`]: `can_apply`, `set_local` and the filter callback.
//! - [`guard`]: `catch_unwind` and error reporting through `H5Epush2`.
//! - [`capi`]: a small C ABI (`resid_encode_chunk`, `resid_decode_chunk`, ...) that codes one
//!   chunk exactly as the filter does, without HDF5, for callers that run chunks on threads of
//!   their own (`resid_h5.write` / `resid_h5.read`).
//! - [`store`]: chunks coded ahead of time on all cores (`resid h5 compress` / `decompress`),
//!   which the filter returns instead of coding them again; a miss is coded as usual.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

pub mod capi;
pub mod filter;
pub mod guard;
pub mod h5api;
pub mod store;

use h5api::{Herr, Hid};

/// The filter id (in the range HDF5 leaves for unregistered filters, 32768-65535).
pub const FILTER_ID: c_int = 32900;

/// `H5PL_TYPE_FILTER`.
const H5PL_TYPE_FILTER: c_int = 0;

/// `H5Z_class2_t`, laid out as HDF5 1.10 through 2.0 declare it.
#[repr(C)]
pub struct H5ZClass2 {
    pub version: c_int,
    pub id: c_int,
    pub encoder_present: c_uint,
    pub decoder_present: c_uint,
    pub name: *const c_char,
    pub can_apply: Option<unsafe extern "C" fn(Hid, Hid, Hid) -> c_int>,
    pub set_local: Option<unsafe extern "C" fn(Hid, Hid, Hid) -> Herr>,
    pub filter: Option<
        unsafe extern "C" fn(
            c_uint,
            usize,
            *const c_uint,
            usize,
            *mut usize,
            *mut *mut c_void,
        ) -> usize,
    >,
}

// SAFETY: the class is immutable and only holds pointers to static data and functions.
unsafe impl Sync for H5ZClass2 {}

/// Name HDF5 shows for the filter (e.g. in h5dump's `FILTERS` block).
pub const FILTER_NAME: &[u8] = b"resid: error-bounded lossy compression (see README)\0";

/// The filter class handed to HDF5.
pub static H5Z_RESID: H5ZClass2 = H5ZClass2 {
    version: 1, // H5Z_CLASS_T_VERS
    id: FILTER_ID,
    encoder_present: 1,
    decoder_present: 1,
    name: FILTER_NAME.as_ptr() as *const c_char,
    can_apply: Some(filter::can_apply),
    set_local: Some(filter::set_local),
    filter: Some(filter::filter),
};

/// Plugin entry point: this library provides a filter.
#[no_mangle]
pub extern "C" fn H5PLget_plugin_type() -> c_int {
    H5PL_TYPE_FILTER
}

/// Plugin entry point: the filter class.
#[no_mangle]
pub extern "C" fn H5PLget_plugin_info() -> *const c_void {
    pin_in_memory();
    init_logging();
    &H5Z_RESID as *const H5ZClass2 as *const c_void
}

/// Sends the codec's `log` messages to stderr, as `[LEVEL] resid: ...`: warnings (a GPU that
/// failed mid-run, a bad `RESID_BACKEND`) by default; `RESID_LOG=info` adds which backend runs
/// and why (no GPU, kernels cached), `debug` more, `off` none. A host whose own logger is
/// set keeps it.
pub(crate) fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        use std::io::Write;
        let _ = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .parse_env(env_logger::Env::new().filter(resid::LOG_ENV))
            .format(|buf, r| writeln!(buf, "[{}] {}", r.level(), r.args()))
            .try_init();
    });
}

/// Keeps this library loaded until the process ends.
///
/// The codec runs large chunks on a pool of worker threads that outlive each call. HDF5
/// `dlclose`s plugins when it shuts down (at `H5close` or process exit), which would unmap code
/// those idle threads still sit in and crash the process. Reopening ourselves with
/// `RTLD_NODELETE` makes that `dlclose` leave the mapping in place.
pub(crate) fn pin_in_memory() {
    static PINNED: std::sync::Once = std::sync::Once::new();
    PINNED.call_once(|| {
        // SAFETY: dladdr only reads the loader's tables for an address inside this library;
        // dlopen with RTLD_NOLOAD returns a handle to the already-loaded object (or null).
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let here = pin_in_memory as *const c_void;
            if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
                libc::dlopen(
                    info.dli_fname,
                    libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                );
            }
        }
    });
}

/// hdf5plugin-compatible initialiser: resolve the HDF5 API from `libname` (a library linked
/// to the HDF5 in use, e.g. h5py's `h5z` extension module) instead of searching the process.
/// Returns 0 on success, -1 otherwise (also when the API was already resolved).
///
/// # Safety
/// `libname` must be null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn init_filter(libname: *const c_char) -> c_int {
    if libname.is_null() {
        return -1;
    }
    pin_in_memory();
    let name = CStr::from_ptr(libname);
    match std::panic::catch_unwind(|| h5api::init_from(name)) {
        Ok(true) => 0,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_is_filled_in() {
        assert_eq!(H5PLget_plugin_type(), 0);
        let c = unsafe { &*(H5PLget_plugin_info() as *const H5ZClass2) };
        assert_eq!(
            (c.version, c.id, c.encoder_present, c.decoder_present),
            (1, 32900, 1, 1)
        );
        let name = unsafe { CStr::from_ptr(c.name) }.to_str().unwrap();
        assert!(name.starts_with("resid:"));
        assert!(c.can_apply.is_some() && c.set_local.is_some() && c.filter.is_some());
    }

    #[test]
    fn class_layout_matches_c() {
        // int, int, unsigned, unsigned, then four pointers.
        assert_eq!(std::mem::size_of::<H5ZClass2>(), 16 + 4 * 8);
    }
}
