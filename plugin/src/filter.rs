//! The three HDF5 filter callbacks: `can_apply`, `set_local` and the filter itself.
//!
//! Shaped after H5Z-ZFP (`src/H5Zzfp.c`): `can_apply` answers 0 (not applicable) for types the
//! codec does not handle, so `h5repack -f UD=32900,1,...` skips them, and -1 only for real
//! errors; `set_local` appends the chunk description to the user's `cd_values`; the filter
//! allocates a fresh buffer, frees HDF5's and returns the new size, or returns 0 and leaves
//! `*buf` alone on failure.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr;

use resid::params::{local_cd_values, parse_local_cd_values, ChunkInfo, DType, Params};
use resid::params::{REQUIRED_WORDS, USER_WORDS};

use crate::guard::guarded;
use crate::h5api::MAX_RANK;
use crate::h5api::{api, H5Api, Herr, Hid, Hsize, Minor, H5D_CHUNKED, H5T_FLOAT, H5T_ORDER_LE};
use crate::FILTER_ID;

/// `H5Z_FLAG_REVERSE`: the filter is called to decode.
pub const H5Z_FLAG_REVERSE: c_uint = 0x0100;

/// Most `cd_values` words the plugin ever reads back: user words, type, rank, dims, padding.
const MAX_CD_WORDS: usize = USER_WORDS + 2 + MAX_RANK + 3;

/// `H5Z_can_apply_func_t`: 1 = the filter can handle this dataset, 0 = not applicable (non-float
/// element type), -1 = error (pushed on the HDF5 error stack).
///
/// # Safety
/// Called by HDF5 only, with ids (and buffers) it owns.
pub unsafe extern "C" fn can_apply(dcpl: Hid, type_id: Hid, _space: Hid) -> c_int {
    guarded("H5Z_resid_can_apply", Minor::Callback, -1, || {
        let api = api()?;
        if float_type(api, type_id)?.is_none() {
            return Ok(0);
        }
        chunk_dims(api, dcpl)?;
        let (_, cd) = user_cd_values(api, dcpl)?;
        Params::from_cd_values(&cd).map_err(|e| format!("resid: {e}"))?;
        Ok(1)
    })
}

/// `H5Z_set_local_func_t`: rewrites the filter's `cd_values` into the full form (user words
/// with defaults filled in, then element type, rank and chunk dims).
///
/// # Safety
/// Called by HDF5 only, with ids (and buffers) it owns.
pub unsafe extern "C" fn set_local(dcpl: Hid, type_id: Hid, _space: Hid) -> Herr {
    guarded("H5Z_resid_set_local", Minor::Callback, -1, || {
        let api = api()?;
        let dtype = float_type(api, type_id)?.ok_or_else(|| {
            "resid: the dataset's element type is not a 4- or 8-byte float".to_string()
        })?;
        let dims = chunk_dims(api, dcpl)?;
        let (flags, cd) = user_cd_values(api, dcpl)?;
        let params = Params::from_cd_values(&cd).map_err(|e| format!("resid: {e}"))?;
        refuse_filters_ahead(api, dcpl)?;
        let chunk = ChunkInfo::new(dtype, &dims)
            .map_err(|e| format!("resid: {e}"))?
            .with_padding(fill_bits(api, dcpl, type_id, dtype));
        let full = local_cd_values(&params, &chunk).map_err(|e| format!("resid: {e}"))?;
        // SAFETY: `full` holds `full.len()` words and outlives the call.
        let rc = unsafe { (api.modify_filter)(dcpl, FILTER_ID, flags, full.len(), full.as_ptr()) };
        if rc < 0 {
            return Err(
                "resid: H5Pmodify_filter failed while storing the chunk description".into(),
            );
        }
        Ok(0)
    })
}

/// `H5Z_func_t`: encodes (or, with `H5Z_FLAG_REVERSE`, decodes) one chunk in place.
///
/// # Safety
/// Called by HDF5 only, with ids (and buffers) it owns.
pub unsafe extern "C" fn filter(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    guarded("H5Z_filter_resid", Minor::CantFilter, 0, || {
        if buf.is_null() || buf_size.is_null() || (*buf).is_null() {
            return Err("resid: HDF5 passed a null buffer".into());
        }
        if cd_values.is_null() && cd_nelmts > 0 {
            return Err("resid: HDF5 passed null cd_values".into());
        }
        let cd: &[c_uint] = if cd_nelmts == 0 {
            &[]
        } else {
            // SAFETY: HDF5 passes `cd_nelmts` valid words.
            unsafe { std::slice::from_raw_parts(cd_values, cd_nelmts) }
        };
        // SAFETY: `*buf` holds at least `nbytes` valid bytes (HDF5's contract).
        let input = unsafe { std::slice::from_raw_parts(*buf as *const u8, nbytes) };
        let api = api()?;
        if flags & H5Z_FLAG_REVERSE != 0 {
            // Decode straight into the buffer HDF5 gets back: no copy of the chunk.
            let (_, _, expected) = dataset_chunk(cd)?;
            let new = api.alloc(expected.max(1));
            if new.is_null() {
                return Err(format!("resid: cannot allocate {expected} bytes"));
            }
            // SAFETY: `new` holds at least `expected` bytes, freshly allocated.
            let dst = unsafe { std::slice::from_raw_parts_mut(new as *mut u8, expected) };
            // A chunk decoded ahead of time on all cores (`resid h5 decompress`), or decoded here.
            let decoded = if crate::store::decoded_into(cd, input, dst) {
                Ok(())
            } else {
                decode_chunk_into(cd, input, dst)
            };
            if let Err(e) = decoded {
                // SAFETY: `new` came from HDF5's allocator above and is not handed out.
                unsafe { api.free(new) };
                return Err(e);
            }
            // SAFETY: `buf`/`buf_size` are HDF5's, checked non-null above.
            unsafe {
                api.free(*buf);
                *buf = new;
                *buf_size = expected;
            }
            return Ok(expected);
        }
        // A chunk coded ahead of time on all cores (`resid h5 compress`), or coded here.
        let out = match crate::store::encoded(cd, input) {
            Some(out) => out,
            None => run_codec(false, cd, input)?,
        };
        // SAFETY: `buf`/`buf_size` are HDF5's, checked non-null above.
        unsafe { replace_buffer(api, buf, buf_size, &out)? };
        Ok(out.len())
    })
}

/// The codec step of the filter, with no FFI: `decode` picks the direction.
pub fn run_codec(decode: bool, cd: &[c_uint], input: &[u8]) -> Result<Vec<u8>, String> {
    let (params, chunk, expected) = dataset_chunk(cd)?;
    if decode {
        let mut out = vec![0u8; expected];
        decode_into(&chunk, input, &mut out)?;
        Ok(out)
    } else {
        if input.len() != expected {
            return Err(format!(
                "resid: chunk holds {} bytes, the dataset's chunk shape {:?} of {:?} needs {expected}",
                input.len(),
                chunk.shape,
                chunk.dtype
            ));
        }
        let out = resid::compress(input, &chunk, &params).map_err(|e| {
            format!(
                "resid: cannot encode a chunk: {e} (error code {})",
                e.code()
            )
        })?;
        if out.is_empty() {
            return Err("resid: the encoder returned no bytes".into());
        }
        Ok(out)
    }
}

/// Decodes `input`, one stored chunk, into `out`, which must hold exactly one chunk of the
/// dataset `cd` (the full `set_local` form) describes: the filter's decode step, with no FFI.
pub fn decode_chunk_into(cd: &[c_uint], input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let (_, chunk, expected) = dataset_chunk(cd)?;
    if out.len() != expected {
        return Err(format!(
            "resid: the output buffer holds {} bytes, the dataset's chunk shape {:?} of {:?} \
             needs {expected}",
            out.len(),
            chunk.shape,
            chunk.dtype
        ));
    }
    decode_into(&chunk, input, out)
}

/// The dataset's parameters and chunk from the filter's `cd_values`, and the chunk's size in
/// bytes.
fn dataset_chunk(cd: &[c_uint]) -> Result<(Params, ChunkInfo, usize), String> {
    let (params, chunk) = parse_local_cd_values(cd)
        .map_err(|e| format!("resid: bad filter parameters in the dataset ({e})"))?;
    let expected = chunk.byte_len().map_err(|e| format!("resid: {e}"))?;
    Ok((params, chunk, expected))
}

/// Decodes `input` into `out`, the size of the dataset's chunk `chunk`; the error says which
/// side is wrong.
fn decode_into(chunk: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    resid::decompress_into(input, out).map_err(|e| match e {
        resid::Error::SizeMismatch { actual, .. } => format!(
            "resid: chunk decodes to {actual} bytes, the dataset's chunk shape {:?} needs {}",
            chunk.shape,
            out.len()
        ),
        e => format!(
            "resid: cannot decode a chunk of {} bytes: {e} (error code {})",
            input.len(),
            e.code()
        ),
    })
}

/// `dst.copy_from_slice(src)`, on all threads for a large chunk: an encoded chunk is as large
/// as the raw one when it is stored, and 128 MiB take tens of milliseconds to copy (and fault
/// in) on one thread, as long as the GPU takes to encode them. (Decoded chunks are written
/// straight into HDF5's buffer.)
fn copy_out(dst: &mut [u8], src: &[u8]) {
    use rayon::prelude::*;
    if src.len() < 8 << 20 {
        return dst.copy_from_slice(src);
    }
    let parallel = || {
        dst.par_chunks_mut(1 << 20)
            .zip(src.par_chunks(1 << 20))
            .for_each(|(d, s)| d.copy_from_slice(s))
    };
    // Only a forked child that cannot start a thread is refused: copy on this one.
    if resid::pool::run(parallel).is_err() {
        dst.copy_from_slice(src);
    }
}

/// Swaps HDF5's buffer for a fresh one holding `out`. On failure nothing is changed.
unsafe fn replace_buffer(
    api: &H5Api,
    buf: *mut *mut c_void,
    buf_size: *mut usize,
    out: &[u8],
) -> Result<(), String> {
    let new = api.alloc(out.len());
    if new.is_null() {
        return Err(format!("resid: cannot allocate {} bytes", out.len()));
    }
    // SAFETY: `new` holds `out.len()` bytes, freshly allocated.
    let dst = unsafe { std::slice::from_raw_parts_mut(new as *mut u8, out.len()) };
    copy_out(dst, out);
    api.free(*buf);
    *buf = new;
    *buf_size = out.len();
    Ok(())
}

/// `Some(dtype)` for a little-endian 4- or 8-byte float, `None` for types the filter does not
/// apply to, `Err` for floats it cannot handle (big-endian, other sizes) or HDF5 failures.
fn float_type(api: &H5Api, type_id: Hid) -> Result<Option<DType>, String> {
    // SAFETY: plain HDF5 queries on an id HDF5 gave us.
    let class = unsafe { (api.tget_class)(type_id) };
    if class < 0 {
        return Err("resid: H5Tget_class failed on the dataset's type".into());
    }
    if class != H5T_FLOAT {
        return Ok(None);
    }
    let size = unsafe { (api.tget_size)(type_id) };
    let dtype = match size {
        4 => DType::F32,
        8 => DType::F64,
        n => {
            return Err(format!(
                "resid: {n}-byte floats are not supported (only 4- and 8-byte IEEE floats)"
            ))
        }
    };
    let order = unsafe { (api.tget_order)(type_id) };
    if order != H5T_ORDER_LE {
        return Err(
            "resid: big-endian floats are not supported; store the dataset as little-endian \
             (e.g. H5T_IEEE_F32LE, numpy '<f4')"
                .into(),
        );
    }
    Ok(Some(dtype))
}

/// The bits of the dataset's fill value, the value HDF5 pads edge chunks with; 0 (HDF5's
/// default, and what it pads with when the fill time is "never") when it cannot be read.
fn fill_bits(api: &H5Api, dcpl: Hid, type_id: Hid, dtype: DType) -> u64 {
    let Some(get) = api.get_fill_value else {
        return 0;
    };
    let mut value = [0u8; 8];
    // SAFETY: `value` has room for one element of the dataset's type (4 or 8 bytes).
    if unsafe { get(dcpl, type_id, value.as_mut_ptr() as *mut c_void) } < 0 {
        return 0;
    }
    match dtype {
        DType::F32 => u32::from_le_bytes(value[..4].try_into().unwrap()) as u64,
        DType::F64 => u64::from_le_bytes(value),
    }
}

/// Refuses a dataset whose filter pipeline changes the bytes before resid sees them: resid must
/// receive the values themselves (a shuffled chunk codes to nothing smaller, so every chunk
/// would be stored raw). Filters after resid (fletcher32, a lossless compressor) are fine.
fn refuse_filters_ahead(api: &H5Api, dcpl: Hid) -> Result<(), String> {
    let (Some(nfilters), Some(get)) = (api.get_nfilters, api.get_filter2) else {
        return Ok(());
    };
    // SAFETY: HDF5 query on the dcpl HDF5 gave us.
    if unsafe { nfilters(dcpl) } <= 0 {
        return Ok(());
    }
    // The first filter of the pipeline is the one that must be resid.
    let (mut flags, mut nelmts, mut config) = (0 as c_uint, 0usize, 0 as c_uint);
    let mut name = [0 as std::ffi::c_char; 64];
    // SAFETY: no cd_values are requested (count 0); `name` holds 64 bytes.
    let id = unsafe {
        get(
            dcpl,
            0,
            &mut flags,
            &mut nelmts,
            ptr::null_mut(),
            name.len(),
            name.as_mut_ptr(),
            &mut config,
        )
    };
    if id == FILTER_ID || id < 0 {
        return Ok(());
    }
    name[name.len() - 1] = 0;
    // SAFETY: `name` is NUL-terminated (its last byte at the latest).
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy();
    Err(filter_ahead_message(id, &name))
}

/// What to tell a user whose filter `id` (`name`) comes before resid.
pub fn filter_ahead_message(id: c_int, name: &str) -> String {
    let what = match id {
        1 => "deflate (gzip)".to_string(),
        2 => "shuffle".to_string(),
        3 => "fletcher32".to_string(),
        4 => "szip".to_string(),
        5 => "n-bit".to_string(),
        6 => "scale-offset".to_string(),
        _ if name.is_empty() => format!("filter {id}"),
        _ => format!("{name} (filter {id})"),
    };
    let advice = match id {
        2 => "drop shuffle (h5py: shuffle=False; h5repack: no SHUF): resid does its own \
              bit-plane work"
            .to_string(),
        _ => "put resid first: filters after it (fletcher32, a lossless compressor) are fine"
            .to_string(),
    };
    format!(
        "resid: the {what} filter comes before resid in this dataset's filter pipeline, so \
         resid would receive changed bytes instead of the values; {advice}"
    )
}

/// The chunk dimensions of `dcpl`, or an error when the layout is not chunked.
fn chunk_dims(api: &H5Api, dcpl: Hid) -> Result<Vec<usize>, String> {
    let not_chunked = "resid: the dataset is not chunked; the filter needs a chunked layout";
    if let Some(get_layout) = api.get_layout {
        // SAFETY: HDF5 query on the dcpl HDF5 gave us.
        if unsafe { get_layout(dcpl) } != H5D_CHUNKED {
            return Err(not_chunked.into());
        }
    }
    let mut dims = [0 as Hsize; MAX_RANK];
    // SAFETY: `dims` holds MAX_RANK entries.
    let rank = unsafe { (api.get_chunk)(dcpl, MAX_RANK as c_int, dims.as_mut_ptr()) };
    if rank <= 0 {
        return Err(not_chunked.into());
    }
    let rank = (rank as usize).min(MAX_RANK);
    dims[..rank]
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("resid: chunk dimension {d} too large")))
        .collect()
}

/// The filter's flags and the user's words (the first `USER_WORDS` when set_local already
/// appended the chunk description).
fn user_cd_values(api: &H5Api, dcpl: Hid) -> Result<(c_uint, Vec<c_uint>), String> {
    let mut flags: c_uint = 0;
    let mut n: usize = MAX_CD_WORDS;
    let mut cd = vec![0 as c_uint; MAX_CD_WORDS];
    // SAFETY: `cd` has room for `n` words; the name buffer is not requested.
    let rc = unsafe {
        (api.get_filter_by_id2)(
            dcpl,
            FILTER_ID,
            &mut flags,
            &mut n,
            cd.as_mut_ptr(),
            0,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err("resid: H5Pget_filter_by_id2 cannot read the filter's cd_values".into());
    }
    cd.truncate(n.min(USER_WORDS));
    if cd.len() < REQUIRED_WORDS {
        // Let the codec's parser word the message.
        Params::from_cd_values(&cd).map_err(|e| format!("resid: {e}"))?;
    }
    Ok((flags, cd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use resid::params::f64_to_words;

    fn cd_for(dtype: DType, shape: &[usize], bound: f64) -> Vec<u32> {
        let p = Params::abs(bound);
        local_cd_values(&p, &ChunkInfo::new(dtype, shape).unwrap()).unwrap()
    }

    #[test]
    fn encode_decode_through_run_codec() {
        let cd = cd_for(DType::F32, &[3, 4], 1e-3);
        let data: Vec<u8> = (0..12)
            .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
            .collect();
        let enc = run_codec(false, &cd, &data).unwrap();
        let dec = run_codec(true, &cd, &enc).unwrap();
        assert_eq!(dec.len(), data.len());
        for (a, b) in data.chunks(4).zip(dec.chunks(4)) {
            let (a, b) = (
                f32::from_le_bytes(a.try_into().unwrap()),
                f32::from_le_bytes(b.try_into().unwrap()),
            );
            assert!((a - b).abs() as f64 <= 1e-3);
        }
    }

    #[test]
    fn errors_are_prefixed() {
        let cd = cd_for(DType::F64, &[8], 0.1);
        let e = run_codec(false, &cd, &[0u8; 10]).unwrap_err();
        assert!(e.starts_with("resid: chunk holds 10 bytes"), "{e}");
        let e = run_codec(true, &cd, b"garbage!garbage!garbage!").unwrap_err();
        assert!(e.starts_with("resid: cannot decode"), "{e}");
        let (h, l) = f64_to_words(0.1);
        let e = run_codec(true, &[1, 0, h, l], b"x").unwrap_err();
        assert!(e.contains("chunk description"), "{e}");
    }
}
