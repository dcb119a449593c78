//! The decode driver: a chunk's header, then its one layout (stored, coded, or an edge
//! chunk's data box behind a REGION section), into the caller's buffer or one of its own.
//! Nothing here depends on encode-only code (`compress/`, `select/`).

mod blocks;
mod coded;
pub(crate) mod wavelet;

pub(crate) use blocks::decode_grid;

use crate::error::{ensure, Error, Result};
use crate::field::Element;
use crate::format::{self, escapes, section, Header, Layout, Reader};
use crate::params::DType;
use crate::region::Region;

pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>> {
    let header = Header::read(&mut Reader::new(data))?;
    let out_len = header.len() * header.dtype.size();
    ensure!(
        out_len <= max_len,
        Error::TooLarge {
            needed: out_len,
            limit: max_len
        }
    );
    // Refuse a declared size the machine cannot hold as an error, not an allocation abort.
    Vec::<u8>::new()
        .try_reserve_exact(out_len)
        .map_err(|_| Error::TooLarge {
            needed: out_len,
            limit: max_len,
        })?;
    let mut out = Output::Owned(Vec::new(), out_len);
    decode_chunk(data, &mut out)?;
    match out {
        Output::Owned(v, _) => Ok(v),
        Output::Into(_) => unreachable!("made as Owned above"),
    }
}

/// Decodes a chunk into `out`, which must be exactly its decoded size (the GPU writes straight
/// into it, and a caller such as the HDF5 filter saves a copy of the chunk).
pub fn decompress_into(data: &[u8], out: &mut [u8]) -> Result<()> {
    decode_chunk(data, &mut Output::Into(out))
}

/// Where a decoded chunk goes: the caller's buffer, or one allocated only when the decoder
/// writes its result, so that it is not held while the decoder's own buffers are.
enum Output<'a> {
    Into(&'a mut [u8]),
    /// The buffer (empty until needed) and its length.
    Owned(Vec<u8>, usize),
}

impl Output<'_> {
    fn len(&self) -> usize {
        match self {
            Output::Into(s) => s.len(),
            Output::Owned(_, n) => *n,
        }
    }

    fn buf(&mut self) -> &mut [u8] {
        match self {
            Output::Into(s) => s,
            Output::Owned(v, n) => {
                if v.len() != *n {
                    // Zeroed by the allocator (calloc): first touched by the decoder's writes.
                    *v = vec![0u8; *n];
                }
                v
            }
        }
    }
}

fn decode_chunk(data: &[u8], out: &mut Output<'_>) -> Result<()> {
    let mut r = Reader::new(data);
    let header = Header::read(&mut r)?;
    let out_len = header.len() * header.dtype.size();
    ensure!(
        out_len <= out.len(),
        Error::TooLarge {
            needed: out_len,
            limit: out.len()
        }
    );
    ensure!(
        out_len == out.len(),
        Error::SizeMismatch {
            expected: out.len(),
            actual: out_len
        }
    );
    match header.layout {
        Layout::Stored => {
            ensure!(
                header.sections == 1,
                Error::Corrupt("stored chunk with more than one section".into())
            );
            let (id, payload) = format::read_section(&mut r)?;
            ensure!(
                id == section::STORED && payload.len() == out_len,
                Error::Corrupt("stored section does not match the shape".into())
            );
            out.buf().copy_from_slice(payload);
        }
        Layout::Coded => match read_region(header, &mut r)? {
            (header, None) => decode_typed(&header, &mut r, out)?,
            // An edge chunk: its data box, coded as a chunk of its own, then the padding.
            (boxed, Some(region)) => {
                let mut values = Output::Owned(Vec::new(), boxed.len() * boxed.dtype.size());
                decode_typed(&boxed, &mut r, &mut values)?;
                region.scatter(values.buf(), out.buf(), boxed.dtype.size());
            }
        },
        Layout::Wavelet => match header.dtype {
            DType::F32 => wavelet::decode_wavelet::<f32>(&header, &mut r, out)?,
            DType::F64 => wavelet::decode_wavelet::<f64>(&header, &mut r, out)?,
        },
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes", r.remaining()))
    );
    Ok(())
}

fn decode_typed(h: &Header, r: &mut Reader<'_>, out: &mut Output<'_>) -> Result<()> {
    match h.dtype {
        DType::F32 => coded::decode_coded::<f32>(h, r, out),
        DType::F64 => coded::decode_coded::<f64>(h, r, out),
    }
}

/// The REGION section of a version-2 coded chunk (it comes first), and the header of the
/// chunk of the data box that follows it (the box's shape, one section fewer).
fn read_region(header: Header, r: &mut Reader<'_>) -> Result<(Header, Option<Region>)> {
    if header.version != format::REGION_VERSION {
        return Ok((header, None));
    }
    ensure!(
        header.sections >= 3,
        Error::Corrupt(format!(
            "version-2 chunk declares {} sections",
            header.sections
        ))
    );
    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::REGION,
        Error::Corrupt(format!("expected the region section, found id {id}"))
    );
    let (extent, pad) = format::read_region(payload, &header.shape, header.dtype.size())?;
    let region = Region {
        shape: header.shape.clone(),
        extent,
        pad,
    };
    let header = Header {
        version: format::BASE_VERSION,
        shape: region.extent.clone(),
        sections: header.sections - 1,
        ..header
    };
    Ok((header, Some(region)))
}

/// Writes the escaped values' exact bytes over the decoded bytes.
pub(super) fn escapes_into<T: Element>(esc: &[u8], bytes: &mut [u8]) -> Result<()> {
    escapes::for_each(esc, bytes.len() / T::SIZE, T::SIZE, |i, raw| {
        bytes[i * T::SIZE..(i + 1) * T::SIZE].copy_from_slice(raw)
    })
}

/// The ESCAPES section, next in the chunk.
pub(super) fn read_escapes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let (id, payload) = format::read_section(r)?;
    ensure!(
        id == section::ESCAPES,
        Error::Corrupt(format!("expected the escapes section, found id {id}"))
    );
    Ok(payload)
}
