//! The resid chunk codec as a small C ABI, exported by `libh5resid.so` next to the HDF5 plugin
//! entry points, for callers that run chunks on threads of their own (HDF5 runs a dataset's
//! filter pipeline one chunk at a time on one thread). `resid_h5.write` / `resid_h5.read` use
//! it through ctypes; a numcodecs codec can share it. `plugin/include/resid.h` declares it:
//!
//! ```c
//! /* ABI version: 1. Every function is thread-safe; none needs HDF5 to be loaded. */
//! uint32_t    resid_capi_version(void);
//! int         resid_encode_chunk(const uint32_t *cd_values, size_t n_cd,
//!                                const void *in, size_t in_len, void **out, size_t *out_len);
//! int         resid_decode_chunk(const uint32_t *cd_values, size_t n_cd,
//!                                const void *in, size_t in_len, void *out, size_t out_len);
//! void        resid_free(void *p);
//! const char *resid_last_error(void);
//! int         resid_local_cd_values(const uint32_t *user, size_t n_user, uint32_t dtype,
//!                                   size_t rank, const size_t *dims, int has_fill,
//!                                   uint64_t fill_bits, uint32_t *out, size_t *out_len);
//! ```
//!
//! - `cd_values` is the **full** form the filter receives: the user's words followed by what
//!   `set_local` appended (element type, rank, chunk dimensions, then `1` and the fill value's
//!   bits). Read it from the dataset (`H5Pget_filter_by_id2`, h5py's
//!   `dcpl.get_filter_by_id(32900)`) or build it with `resid_local_cd_values`.
//! - `resid_encode_chunk` codes one whole chunk (`in_len` = the product of the chunk dimensions
//!   times the element size; edge chunks padded with the fill value, as HDF5 pads them) and
//!   returns the bytes the filter would store, in `*out` (free it with `resid_free`) and
//!   `*out_len`. A chunk that does not code smaller comes back as the codec's "stored"
//!   container: store what is returned, always.
//! - `resid_decode_chunk` decodes one stored chunk into `out`, which must hold exactly one
//!   chunk (`out_len` bytes as above).
//! - Every function returning `int` returns 0 on success, -1 on failure; then
//!   `resid_last_error()` gives the message (starting with `resid: `, the same text the filter
//!   puts on HDF5's error stack). The string belongs to the calling thread and stays valid until
//!   its next failing call; it is empty when no call on the thread has failed.
//! - `resid_local_cd_values` computes `set_local`'s words: `user` (4 to 8 words), `dtype`
//!   (1 float32, 2 float64), the chunk dimensions (C order), and the fill value's bits (a
//!   float32's in the low 32 bits) when `has_fill` is non-zero. `*out_len` holds the capacity
//!   of `out` on entry and the number of words on return (also when `out` was too small: then
//!   -1; call with `out` = NULL, `*out_len` = 0 to ask for the size).
//! - No panic crosses the boundary: every body runs under [`crate::guard::catch`], and a panic
//!   becomes -1 with "internal error in ..." as the message. Nothing is pushed on HDF5's error
//!   stack (HDF5 may not be loaded at all).
//!
//! The bytes are the filter's: encode and decode call [`filter::run_codec`] and
//! [`filter::decode_chunk_into`], the functions the filter callback itself runs.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CString};

use resid::params::{local_cd_values, ChunkInfo, DType, Params};

use crate::filter;
use crate::guard::{catch, with_prefix};

/// Version of this ABI; bumped on any incompatible change.
pub const CAPI_VERSION: u32 = 1;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let msg = CString::new(with_prefix(msg).replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = msg);
}

/// Runs `body` as an ABI entry point: 0 on success, -1 (message kept) on failure or panic.
fn entry(func: &str, body: impl FnOnce() -> Result<(), String>) -> c_int {
    crate::pin_in_memory();
    crate::init_logging();
    match catch(func, body) {
        Ok(()) => 0,
        Err(msg) => {
            set_last_error(&msg);
            -1
        }
    }
}

/// `n` values from `p`; `p` may be null only when `n` is 0.
///
/// # Safety
/// A non-null `p` must point to `n` readable values that outlive the returned slice.
unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], String> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(format!("resid: {what} is null but its length is {n}"));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Version of this ABI (1).
#[no_mangle]
pub extern "C" fn resid_capi_version() -> u32 {
    CAPI_VERSION
}

/// Encodes one chunk exactly as the filter does. See the module documentation.
///
/// # Safety
/// `cd_values` must hold `n_cd` words and `input` `in_len` bytes (each may be null when its
/// length is 0); `out` and `out_len` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn resid_encode_chunk(
    cd_values: *const u32,
    n_cd: usize,
    input: *const c_void,
    in_len: usize,
    out: *mut *mut c_void,
    out_len: *mut usize,
) -> c_int {
    entry("resid_encode_chunk", || {
        if out.is_null() || out_len.is_null() {
            return Err("resid: out or out_len is null".into());
        }
        // SAFETY: checked non-null; the caller's contract.
        unsafe {
            *out = std::ptr::null_mut();
            *out_len = 0;
        }
        // SAFETY: the caller's contract.
        let cd = unsafe { slice(cd_values, n_cd, "cd_values") }?;
        let input = unsafe { slice(input as *const u8, in_len, "in") }?;
        let enc = filter::run_codec(false, cd, input)?;
        // SAFETY: plain allocation; released by `resid_free`.
        let p = unsafe { libc::malloc(enc.len().max(1)) };
        if p.is_null() {
            return Err(format!("resid: cannot allocate {} bytes", enc.len()));
        }
        // SAFETY: `p` holds `enc.len()` bytes, freshly allocated; `out`/`out_len` checked.
        unsafe {
            std::ptr::copy_nonoverlapping(enc.as_ptr(), p as *mut u8, enc.len());
            *out = p;
            *out_len = enc.len();
        }
        Ok(())
    })
}

/// Decodes one stored chunk into `out`, exactly one chunk's bytes. See the module
/// documentation.
///
/// # Safety
/// `cd_values` must hold `n_cd` words, `input` `in_len` bytes and `out` `out_len` writable
/// bytes not aliasing `input` (each may be null when its length is 0).
#[no_mangle]
pub unsafe extern "C" fn resid_decode_chunk(
    cd_values: *const u32,
    n_cd: usize,
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_len: usize,
) -> c_int {
    entry("resid_decode_chunk", || {
        // SAFETY: the caller's contract.
        let cd = unsafe { slice(cd_values, n_cd, "cd_values") }?;
        let input = unsafe { slice(input as *const u8, in_len, "in") }?;
        if out.is_null() && out_len > 0 {
            return Err(format!("resid: out is null but out_len is {out_len}"));
        }
        let dst: &mut [u8] = if out_len == 0 {
            &mut []
        } else {
            // SAFETY: the caller's contract: `out_len` writable bytes.
            unsafe { std::slice::from_raw_parts_mut(out as *mut u8, out_len) }
        };
        filter::decode_chunk_into(cd, input, dst)
    })
}

/// Frees a buffer returned by `resid_encode_chunk` (null is ignored).
///
/// # Safety
/// `p` must be null or a pointer `resid_encode_chunk` returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn resid_free(p: *mut c_void) {
    // SAFETY: the caller's contract; `p` came from `libc::malloc`.
    unsafe { libc::free(p) }
}

/// The calling thread's last error message (empty when none). See the module documentation.
#[no_mangle]
pub extern "C" fn resid_last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr() as *const c_char)
}

/// The full `cd_values` `set_local` stores for a dataset. See the module documentation.
///
/// # Safety
/// `user` must hold `n_user` words and `dims` `rank` values; `out_len` must be valid for reads
/// and writes and `out` hold `*out_len` writable words (may be null when that is 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn resid_local_cd_values(
    user: *const u32,
    n_user: usize,
    dtype: u32,
    rank: usize,
    dims: *const usize,
    has_fill: c_int,
    fill_bits: u64,
    out: *mut u32,
    out_len: *mut usize,
) -> c_int {
    entry("resid_local_cd_values", || {
        if out_len.is_null() {
            return Err("resid: out_len is null".into());
        }
        // SAFETY: the caller's contract.
        let user = unsafe { slice(user, n_user, "user") }?;
        let dims = unsafe { slice(dims, rank, "dims") }?;
        let cap = unsafe { *out_len };
        let params = Params::from_cd_values(user).map_err(|e| format!("resid: {e}"))?;
        let dtype = DType::from_code(dtype).map_err(|e| format!("resid: {e}"))?;
        let mut chunk = ChunkInfo::new(dtype, dims).map_err(|e| format!("resid: {e}"))?;
        if has_fill != 0 {
            chunk = chunk.with_padding(fill_bits);
        }
        let cd = local_cd_values(&params, &chunk).map_err(|e| format!("resid: {e}"))?;
        // SAFETY: checked non-null above.
        unsafe { *out_len = cd.len() };
        if cap < cd.len() || out.is_null() {
            return Err(format!(
                "resid: out holds {cap} words, the cd_values need {}",
                cd.len()
            ));
        }
        // SAFETY: `out` holds `cap >= cd.len()` words.
        unsafe { std::ptr::copy_nonoverlapping(cd.as_ptr(), out, cd.len()) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        unsafe { CStr::from_ptr(resid_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn local(user: &[u32], dtype: u32, dims: &[usize], fill: Option<u64>) -> Vec<u32> {
        let mut n = 0usize;
        let rc = unsafe {
            resid_local_cd_values(
                user.as_ptr(),
                user.len(),
                dtype,
                dims.len(),
                dims.as_ptr(),
                fill.is_some() as c_int,
                fill.unwrap_or(0),
                std::ptr::null_mut(),
                &mut n,
            )
        };
        assert_eq!(rc, -1);
        let mut cd = vec![0u32; n];
        let rc = unsafe {
            resid_local_cd_values(
                user.as_ptr(),
                user.len(),
                dtype,
                dims.len(),
                dims.as_ptr(),
                fill.is_some() as c_int,
                fill.unwrap_or(0),
                cd.as_mut_ptr(),
                &mut n,
            )
        };
        assert_eq!(rc, 0, "{}", last_error());
        cd
    }

    #[test]
    fn same_bytes_as_the_filter() {
        let (hi, lo) = resid::params::f64_to_words(1e-3);
        let user = [1, 1, hi, lo];
        let cd = local(&user, 1, &[5, 7], Some((-999.0f32).to_bits() as u64));
        let expected = local_cd_values(
            &Params::from_cd_values(&user).unwrap(),
            &ChunkInfo::new(DType::F32, &[5, 7])
                .unwrap()
                .with_padding((-999.0f32).to_bits() as u64),
        )
        .unwrap();
        assert_eq!(cd, expected);
        let mut data: Vec<f32> = (0..35).map(|i| (i as f32 * 0.3).sin()).collect();
        data[30..].fill(-999.0); // the last row: padding
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (mut p, mut n) = (std::ptr::null_mut(), 0usize);
        let rc = unsafe {
            resid_encode_chunk(
                cd.as_ptr(),
                cd.len(),
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                &mut p,
                &mut n,
            )
        };
        assert_eq!(rc, 0, "{}", last_error());
        let enc = unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec();
        unsafe { resid_free(p) };
        assert_eq!(enc, filter::run_codec(false, &cd, &bytes).unwrap());
        let mut back = vec![0u8; bytes.len()];
        let rc = unsafe {
            resid_decode_chunk(
                cd.as_ptr(),
                cd.len(),
                enc.as_ptr() as *const c_void,
                enc.len(),
                back.as_mut_ptr() as *mut c_void,
                back.len(),
            )
        };
        assert_eq!(rc, 0, "{}", last_error());
        assert_eq!(back, filter::run_codec(true, &cd, &enc).unwrap());
    }

    #[test]
    fn errors_are_kept_per_thread() {
        let cd = local(&[1, 0, 0x3f50_624d, 0xd2f1_a9fc], 2, &[8], None);
        let mut back = [0u8; 64];
        let rc = unsafe {
            resid_decode_chunk(
                cd.as_ptr(),
                cd.len(),
                b"garbage".as_ptr() as *const c_void,
                7,
                back.as_mut_ptr() as *mut c_void,
                back.len(),
            )
        };
        assert_eq!(rc, -1);
        assert!(
            last_error().starts_with("resid: cannot decode"),
            "{}",
            last_error()
        );
        let rc = unsafe {
            resid_decode_chunk(
                cd.as_ptr(),
                cd.len(),
                b"garbage".as_ptr() as *const c_void,
                7,
                back.as_mut_ptr() as *mut c_void,
                63,
            )
        };
        assert_eq!(rc, -1);
        assert!(last_error().contains("needs 64"), "{}", last_error());
        // Another thread has its own (empty) message.
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
        let (mut p, mut n) = (std::ptr::null_mut(), 0usize);
        let rc = unsafe { resid_encode_chunk(cd.as_ptr(), 3, std::ptr::null(), 0, &mut p, &mut n) };
        assert_eq!(rc, -1);
        assert!(p.is_null() && n == 0);
        assert!(
            last_error().starts_with("resid: bad filter parameters"),
            "{}",
            last_error()
        );
        let rc = unsafe {
            resid_encode_chunk(cd.as_ptr(), cd.len(), std::ptr::null(), 4, &mut p, &mut n)
        };
        assert_eq!(rc, -1);
        assert!(last_error().contains("in is null"), "{}", last_error());
        assert_eq!(resid_capi_version(), 1);
    }

    #[test]
    fn panics_do_not_cross() {
        assert_eq!(entry("t", || panic!("boom")), -1);
        assert_eq!(last_error(), "resid: internal error in t: boom");
    }
}
