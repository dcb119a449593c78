//! The few HDF5 functions the plugin calls, resolved at run time from the libhdf5 that loaded
//! it (ARCHITECTURE.md invariant 4: the plugin never links libhdf5).
//!
//! h5py loads its bundled HDF5 with `RTLD_LOCAL`, so its symbols are not in the global scope.
//! We therefore look for a loaded libhdf5 among the process's objects (`dl_iterate_phdr`) and
//! reopen that exact path with `RTLD_NOLOAD`, which returns the instance already loaded. When
//! none is found by name (a static build, an unusual file name) we use the global scope, which
//! is right for h5repack, h5dump and C programs linked against libhdf5. hdf5plugin-style
//! callers may instead name the library through [`init_from`] (`init_filter`).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_LAZY};

/// `hid_t` (64-bit since HDF5 1.10).
pub type Hid = i64;
/// `herr_t` / `htri_t`.
pub type Herr = c_int;
/// `hsize_t`.
pub type Hsize = u64;

/// `H5E_DEFAULT`: the library's default error stack.
pub const H5E_DEFAULT: Hid = 0;
/// `H5T_FLOAT` in `H5T_class_t`.
pub const H5T_FLOAT: c_int = 1;
/// `H5T_ORDER_LE` in `H5T_order_t`.
pub const H5T_ORDER_LE: c_int = 0;
/// `H5D_CHUNKED` in `H5D_layout_t`.
pub const H5D_CHUNKED: c_int = 2;
/// `H5S_MAX_RANK`.
pub const MAX_RANK: usize = 32;

type GetChunk = unsafe extern "C" fn(Hid, c_int, *mut Hsize) -> c_int;
type GetLayout = unsafe extern "C" fn(Hid) -> c_int;
type TypeInt = unsafe extern "C" fn(Hid) -> c_int;
type TypeSize = unsafe extern "C" fn(Hid) -> usize;
type GetFilterById2 = unsafe extern "C" fn(
    Hid,
    c_int,
    *mut c_uint,
    *mut usize,
    *mut c_uint,
    usize,
    *mut c_char,
    *mut c_uint,
) -> Herr;
type ModifyFilter = unsafe extern "C" fn(Hid, c_int, c_uint, usize, *const c_uint) -> Herr;
type GetFillValue = unsafe extern "C" fn(Hid, Hid, *mut c_void) -> Herr;
type GetNFilters = unsafe extern "C" fn(Hid) -> c_int;
type GetFilter2 = unsafe extern "C" fn(
    Hid,
    c_uint,
    *mut c_uint,
    *mut usize,
    *mut c_uint,
    usize,
    *mut c_char,
    *mut c_uint,
) -> c_int;
type Epush2 = unsafe extern "C" fn(
    Hid,
    *const c_char,
    *const c_char,
    c_uint,
    Hid,
    Hid,
    Hid,
    *const c_char,
    ...
) -> Herr;
type AllocMemory = unsafe extern "C" fn(usize, u8) -> *mut c_void;
type FreeMemory = unsafe extern "C" fn(*mut c_void) -> Herr;

/// Address of one of HDF5's global `hid_t` variables (`H5E_ERR_CLS_g`, ...). The value is read
/// at each use: the library sets these ids when it initialises.
#[derive(Clone, Copy)]
struct IdVar(*const Hid);
// SAFETY: the pointer targets a global of the loaded libhdf5, which outlives us; we only read it.
unsafe impl Send for IdVar {}
unsafe impl Sync for IdVar {}

impl IdVar {
    fn get(self) -> Hid {
        // SAFETY: the address came from dlsym of a `hid_t` global of the live library.
        unsafe { self.0.read_volatile() }
    }
}

/// Error ids `H5Epush2` needs.
#[derive(Clone, Copy)]
struct ErrIds {
    class: IdVar,
    major: IdVar,
    cant_filter: IdVar,
    callback: IdVar,
}

/// Minor error kinds the plugin reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Minor {
    /// `H5E_CANTFILTER`: the filter callback failed (encode or decode).
    CantFilter,
    /// `H5E_CALLBACK`: `can_apply` or `set_local` refused the dataset.
    Callback,
}

/// The resolved HDF5 functions, cached once per process.
pub struct H5Api {
    /// Where the symbols came from (for messages and tests).
    pub source: String,
    pub get_chunk: GetChunk,
    pub get_layout: Option<GetLayout>,
    pub tget_class: TypeInt,
    pub tget_size: TypeSize,
    pub tget_order: TypeInt,
    pub get_filter_by_id2: GetFilterById2,
    pub modify_filter: ModifyFilter,
    /// `H5Pget_fill_value`: the value HDF5 pads edge chunks with.
    pub get_fill_value: Option<GetFillValue>,
    /// `H5Pget_nfilters` and `H5Pget_filter2`: the filters ahead of resid in the pipeline.
    pub get_nfilters: Option<GetNFilters>,
    pub get_filter2: Option<GetFilter2>,
    epush2: Option<Epush2>,
    err_ids: Option<ErrIds>,
    memory: Option<(AllocMemory, FreeMemory)>,
    // Keeps the handle (and its reference count) alive for the life of the process.
    _lib: Library,
}

static API: OnceLock<Result<H5Api, String>> = OnceLock::new();

/// The HDF5 API of the library that loaded the plugin, resolved on first use.
pub fn api() -> Result<&'static H5Api, String> {
    API.get_or_init(resolve).as_ref().map_err(Clone::clone)
}

/// Resolves the API from a named library (hdf5plugin's `init_filter` passes a module that is
/// linked to the right libhdf5). Returns false when the API was already resolved elsewhere or
/// the library cannot be used.
pub fn init_from(path: &CStr) -> bool {
    let mut ok = false;
    API.get_or_init(|| {
        // SAFETY: opening a library that the caller says is loaded (or loadable) and HDF5-linked.
        let lib = unsafe { Library::open(Some(path.to_string_lossy().as_ref()), RTLD_LAZY) };
        let r = lib
            .map_err(|e| e.to_string())
            .and_then(|lib| H5Api::from_library(lib, path.to_string_lossy().into_owned()));
        ok = r.is_ok();
        r
    });
    ok
}

fn resolve() -> Result<H5Api, String> {
    let mut why = Vec::new();
    for path in loaded_objects().iter().filter(|p| is_core_hdf5(p)) {
        // SAFETY: RTLD_NOLOAD only returns a handle to an object that is already loaded.
        match unsafe { Library::open(Some(path.as_str()), libc::RTLD_NOLOAD | RTLD_LAZY) } {
            Ok(lib) => match H5Api::from_library(lib, path.clone()) {
                Ok(api) => return Ok(api),
                Err(e) => why.push(e),
            },
            Err(e) => why.push(format!("{path}: {e}")),
        }
    }
    match H5Api::from_library(Library::this(), "global scope".into()) {
        Ok(api) => Ok(api),
        Err(e) => {
            why.push(e);
            Err(format!(
                "resid: cannot find the HDF5 library in this process ({})",
                why.join("; ")
            ))
        }
    }
}

/// Paths of every object loaded in this process, in load order.
pub fn loaded_objects() -> Vec<String> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info struct and our own Vec as data.
        let out = &mut *(data as *mut Vec<String>);
        let name = (*info).dlpi_name;
        if !name.is_null() {
            let s = CStr::from_ptr(name).to_string_lossy();
            if !s.is_empty() {
                out.push(s.into_owned());
            }
        }
        0
    }
    let mut out: Vec<String> = Vec::new();
    // SAFETY: the callback only reads the info it is given and appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut out as *mut Vec<String> as *mut c_void) };
    out
}

/// True for the core HDF5 C library, whatever its packaging calls it: `libhdf5.so.310`
/// (upstream, conda), `libhdf5_serial.so.103` / `libhdf5_openmpi.so` (Debian),
/// `libhdf5-9e18f0c6.so.320.0.0` (wheels repaired by auditwheel, h5py). False for the
/// high-level, C++ and Fortran libraries and for plugins.
pub fn is_core_hdf5(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split('.').next().unwrap_or(base);
    // auditwheel appends "-<hash>" to the stem.
    let stem = stem.split('-').next().unwrap_or(stem);
    let Some(rest) = stem.strip_prefix("libhdf5") else {
        return false;
    };
    if !base[stem.len()..].starts_with(".so") && !base[stem.len()..].starts_with('-') {
        return false;
    }
    match rest.strip_prefix('_') {
        None => rest.is_empty(),
        // A build flavour (serial, openmpi, mpich), not a companion library.
        Some(flavour) => {
            !flavour.is_empty()
                && flavour.chars().all(|c| c.is_ascii_alphanumeric())
                && !matches!(flavour, "hl" | "cpp" | "fortran" | "hl_cpp" | "tools")
        }
    }
}

impl H5Api {
    fn from_library(lib: Library, source: String) -> Result<H5Api, String> {
        // SAFETY: each symbol is given the C type HDF5 1.10 through 2.0 declare for it.
        unsafe {
            let func = |name: &str| -> Result<*mut c_void, String> {
                let cname = format!("{name}\0");
                lib.get::<*mut c_void>(cname.as_bytes())
                    .map(|s| *s)
                    .map_err(|e| format!("{source}: {name} not found ({e})"))
            };
            macro_rules! req {
                ($name:literal, $ty:ty) => {
                    std::mem::transmute::<*mut c_void, $ty>(func($name)?)
                };
            }
            macro_rules! opt {
                ($name:literal, $ty:ty) => {
                    func($name)
                        .ok()
                        .map(|p| std::mem::transmute::<*mut c_void, $ty>(p))
                };
            }
            let var = |name: &str| func(name).ok().map(|p| IdVar(p as *const Hid));
            let err_ids = match (
                var("H5E_ERR_CLS_g"),
                var("H5E_PLINE_g"),
                var("H5E_CANTFILTER_g"),
                var("H5E_CALLBACK_g"),
            ) {
                (Some(class), Some(major), Some(cant_filter), Some(callback)) => Some(ErrIds {
                    class,
                    major,
                    cant_filter,
                    callback,
                }),
                _ => None,
            };
            let memory = match (
                opt!("H5allocate_memory", AllocMemory),
                opt!("H5free_memory", FreeMemory),
            ) {
                (Some(a), Some(f)) => Some((a, f)),
                _ => None,
            };
            Ok(H5Api {
                get_chunk: req!("H5Pget_chunk", GetChunk),
                get_layout: opt!("H5Pget_layout", GetLayout),
                tget_class: req!("H5Tget_class", TypeInt),
                tget_size: req!("H5Tget_size", TypeSize),
                tget_order: req!("H5Tget_order", TypeInt),
                get_filter_by_id2: req!("H5Pget_filter_by_id2", GetFilterById2),
                modify_filter: req!("H5Pmodify_filter", ModifyFilter),
                get_fill_value: opt!("H5Pget_fill_value", GetFillValue),
                get_nfilters: opt!("H5Pget_nfilters", GetNFilters),
                get_filter2: opt!("H5Pget_filter2", GetFilter2),
                epush2: opt!("H5Epush2", Epush2),
                err_ids,
                memory,
                source,
                _lib: lib,
            })
        }
    }

    /// Pushes `msg` on HDF5's default error stack (major `H5E_PLINE`). Returns false when the
    /// library offers no way to do so.
    pub fn push_error(&self, file: &str, func: &str, line: u32, minor: Minor, msg: &str) -> bool {
        let (Some(push), Some(ids)) = (self.epush2, self.err_ids) else {
            return false;
        };
        let min = match minor {
            Minor::CantFilter => ids.cant_filter,
            Minor::Callback => ids.callback,
        };
        let (file, func, msg) = (c_message(file), c_message(func), c_message(msg));
        // SAFETY: H5Epush2 with a "%s" format and one C string argument; all pointers live.
        let rc = unsafe {
            push(
                H5E_DEFAULT,
                file.as_ptr(),
                func.as_ptr(),
                line,
                ids.class.get(),
                ids.major.get(),
                min.get(),
                b"%s\0".as_ptr() as *const c_char,
                msg.as_ptr(),
            )
        };
        rc >= 0
    }

    /// Allocates `len` bytes the way HDF5 will free them.
    pub fn alloc(&self, len: usize) -> *mut c_void {
        match self.memory {
            // SAFETY: H5allocate_memory(size, clear = false).
            Some((a, _)) => unsafe { a(len, 0) },
            None => unsafe { libc::malloc(len) },
        }
    }

    /// Frees a buffer HDF5 handed to the filter.
    ///
    /// # Safety
    /// `p` must come from HDF5's allocator (or be null).
    pub unsafe fn free(&self, p: *mut c_void) {
        match self.memory {
            Some((_, f)) => {
                f(p);
            }
            None => libc::free(p),
        }
    }
}

/// `msg` as a C string (interior NULs replaced).
pub fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_core_library() {
        for p in [
            "/usr/lib/x86_64-linux-gnu/libhdf5_serial.so.103",
            "/opt/venv/lib/python3.11/site-packages/h5py.libs/libhdf5-9e18f0c6.so.320.0.0",
            "/opt/conda/lib/libhdf5.so.310",
            "libhdf5.so",
            "/usr/lib/x86_64-linux-gnu/libhdf5_openmpi.so.103",
        ] {
            assert!(is_core_hdf5(p), "{p}");
        }
        for p in [
            "/usr/lib/x86_64-linux-gnu/libhdf5_serial_hl.so.100",
            "/opt/venv/lib/python3.11/site-packages/h5py.libs/libhdf5_hl-69da89c9.so.320.0.0",
            "/opt/conda/lib/libhdf5_hl.so.310",
            "/usr/lib/libhdf5_cpp.so",
            "/usr/lib/libhdf5_fortran.so",
            "/usr/lib/libhdf5hl_fortran.so",
            "/usr/lib/libhdf5_hl_cpp.so",
            "/plugins/libh5resid.so",
            "/libhdf5/dir/libfoo.so",
            "/usr/lib/libhdf5.a",
            "",
        ] {
            assert!(!is_core_hdf5(p), "{p}");
        }
    }

    #[test]
    fn lists_loaded_objects() {
        let objs = loaded_objects();
        assert!(objs.iter().any(|p| p.contains("libc.so")), "{objs:?}");
    }

    #[test]
    fn messages_never_hold_nul() {
        assert_eq!(c_message("a\0b").to_bytes(), b"a\\0b");
    }
}
