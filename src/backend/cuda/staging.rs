//! Staged transfers: large uploads and downloads go through two pinned host buffers, the host
//! copying one piece while the other crosses the bus.

use cudarc::driver::{CudaEvent, CudaSlice, PinnedHostSlice};
use rayon::prelude::*;

use super::Cuda;
use crate::backend::device_error;
use crate::error::{ensure, Error, Result};

/// Bytes in each of the two pinned staging buffers of [`Cuda::upload_staged`].
pub const STAGE: usize = 16 << 20;
/// Transfers from this size on go through the staging buffers.
pub const STAGED_MIN: usize = 1 << 20;

impl Cuda {
    /// Runs `f` with the two staging buffers, or returns `None` when they cannot be had
    /// (allocation failed once: transfers then go from pageable memory).
    fn with_staging<R>(
        &self,
        f: impl FnOnce(&mut [PinnedHostSlice<u8>; 2]) -> Result<R>,
    ) -> Option<Result<R>> {
        let mut guard = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        let slots = guard.get_or_insert_with(|| {
            // Not write-combined: the host reads these back on download (GPU.md).
            let alloc = || unsafe { self.ctx.alloc_pinned_with_flags::<u8>(STAGE, 0) };
            match (alloc(), alloc()) {
                (Ok(a), Ok(b)) => Some([a, b]),
                (a, b) => {
                    let e = a.err().or(b.err());
                    log::info!("resid: no pinned staging memory ({e:?}): pageable transfers");
                    None
                }
            }
        });
        slots.as_mut().map(f)
    }

    /// Uploads `data` through the pinned staging buffers: the host copies one piece (all
    /// threads) while the previous one crosses the bus. Pageable transfers run at a fraction
    /// of the bus's speed (GPU.md). Small transfers, and any when the buffers cannot be had,
    /// go through [`Cuda::upload`]. Any plain values (`u8`, `i32`, `f64`, ...).
    pub fn upload_staged<T: Staged>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if std::mem::size_of_val(data) < STAGED_MIN {
            return self.upload(data);
        }
        let per = STAGE / std::mem::size_of::<T>().max(1);
        let staged = self.with_staging(|slots| {
            let mut dst = unsafe { self.stream.alloc::<T>(data.len()) }
                .map_err(|e| device_error("alloc", e))?;
            let bufs = pinned_bufs(slots)?;
            // cudarc's own tracking of the pinned buffers is off (one stream, `probe`), and
            // sub-slices of them are not tracked at all: each transfer records an event, waited
            // for before its buffer is written again.
            let mut done: [Option<CudaEvent>; 2] = [None, None];
            for (k, piece) in data.chunks(per).enumerate() {
                if let Some(ev) = done[k % 2].take() {
                    ev.synchronize().map_err(|e| device_error("staging", e))?;
                }
                let buf = as_values::<T>(&mut bufs[k % 2][..std::mem::size_of_val(piece)])?;
                par_copy(bytemuck::cast_slice_mut(buf), bytemuck::cast_slice(piece));
                let mut view = dst.slice_mut(k * per..k * per + piece.len());
                self.stream
                    .memcpy_htod(&*buf, &mut view)
                    .map_err(|e| device_error("upload", e))?;
                done[k % 2] = Some(self.mark()?);
            }
            // The buffers are free for the next transfer when this returns.
            self.sync()?;
            Ok(dst)
        });
        staged.unwrap_or_else(|| self.upload(data))
    }

    /// Downloads `src` through the pinned staging buffers: one piece crosses the bus while the
    /// host copies out the previous one. Small transfers, and any when the buffers cannot be
    /// had, go through [`Cuda::download`].
    pub fn download_staged<T: Staged>(&self, src: &CudaSlice<T>) -> Result<Vec<T>> {
        if src.len() * std::mem::size_of::<T>() < STAGED_MIN {
            return self.download(src);
        }
        let mut out = vec![T::zeroed(); src.len()];
        self.download_staged_into(src, &mut out)?;
        Ok(out)
    }

    /// [`Cuda::download_staged`] into `out` (exactly `src`'s length).
    pub fn download_staged_into<T: Staged>(&self, src: &CudaSlice<T>, out: &mut [T]) -> Result<()> {
        let n = src.len();
        ensure!(
            out.len() == n,
            Error::SizeMismatch {
                expected: out.len(),
                actual: n
            }
        );
        let plain = |out: &mut [T]| -> Result<()> {
            self.stream
                .memcpy_dtoh(src, out)
                .map_err(|e| device_error("download", e))?;
            self.sync()
        };
        if std::mem::size_of_val(out) < STAGED_MIN {
            return plain(out);
        }
        advise_huge_pages(bytemuck::cast_slice_mut(out));
        let per = STAGE / std::mem::size_of::<T>().max(1);
        let staged = self.with_staging(|slots| {
            let bufs = pinned_bufs(slots)?;
            let pieces = n.div_ceil(per);
            let range = |k: usize| k * per..((k + 1) * per).min(n);
            // Events as in `upload_staged`.
            let issue = |k: usize, buf: &mut [u8]| -> Result<CudaEvent> {
                let r = range(k);
                let bytes = r.len() * std::mem::size_of::<T>();
                self.stream
                    .memcpy_dtoh(&src.slice(r), as_values::<T>(&mut buf[..bytes])?)
                    .map_err(|e| device_error("download", e))?;
                self.mark()
            };
            let mut done: [Option<CudaEvent>; 2] = [Some(issue(0, bufs[0])?), None];
            for k in 0..pieces {
                if k + 1 < pieces {
                    done[(k + 1) % 2] = Some(issue(k + 1, bufs[(k + 1) % 2])?);
                }
                if let Some(ev) = done[k % 2].take() {
                    ev.synchronize().map_err(|e| device_error("staging", e))?;
                }
                let r = range(k);
                let bytes = r.len() * std::mem::size_of::<T>();
                par_copy(bytemuck::cast_slice_mut(&mut out[r]), &bufs[k % 2][..bytes]);
            }
            Ok(())
        });
        staged.unwrap_or_else(|| plain(out))
    }
}

/// Plain values the staged transfers move as bytes (`u8`, `i32`, `f64`, ...): any bit pattern
/// is a value, and a value's size divides [`STAGE`].
pub trait Staged:
    bytemuck::Pod + Default + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
impl<T> Staged for T where
    T: bytemuck::Pod + Default + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}

/// A staging buffer's bytes as values of `T` (the buffers are page-aligned, so this fails
/// only for a length that is not a whole number of values).
fn as_values<T: Staged>(b: &mut [u8]) -> Result<&mut [T]> {
    bytemuck::try_cast_slice_mut(b)
        .map_err(|e| Error::Unsupported(format!("cuda: staging buffer as values: {e:?}")))
}

/// The two staging buffers as plain slices (pinned memory all the same, which the driver
/// transfers at full speed).
fn pinned_bufs(slots: &mut [PinnedHostSlice<u8>; 2]) -> Result<[&mut [u8]; 2]> {
    let [a, b] = slots;
    Ok([
        a.as_mut_slice().map_err(|e| device_error("staging", e))?,
        b.as_mut_slice().map_err(|e| device_error("staging", e))?,
    ])
}

/// Asks for huge pages on the part of `out` that spans whole 2 MiB pages. A fresh output buffer
/// (HDF5's, for every chunk read) otherwise takes a page fault every 4 KiB while the decoded
/// values are copied in, which bounds the GPU decoder's speed. Advice only: nothing changes
/// where transparent huge pages are off.
pub fn advise_huge_pages(out: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    let start = out.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + out.len()) / HUGE * HUGE;
    if end > first {
        // SAFETY: the range lies inside `out`; MADV_HUGEPAGE changes no contents.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

/// `dst.copy_from_slice(src)` on every thread, 1 MiB a task.
fn par_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(1 << 20)
        .zip(src.par_chunks(1 << 20))
        .for_each(|(d, s)| d.copy_from_slice(s));
}
