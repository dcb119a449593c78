//! Helpers shared by the fuzz targets: a counting global allocator (so a target can check what
//! a call allocated) and a checksum fixer (so the fuzzer gets past the CRCs into the decoders).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their peak (over all threads).
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            add(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            add(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            add(new);
        }
        q
    }
}

fn add(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

/// Runs `f` and returns its result with the peak number of bytes allocated while it ran
/// (above what was live when it started).
pub fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}
fn put_crc(d: &mut [u8], at: usize, from: usize, to: usize) {
    if to <= d.len() && from <= to && at + 4 <= d.len() {
        let c = crc32fast::hash(&d[from..to]);
        d[at..at + 4].copy_from_slice(&c.to_le_bytes());
    }
}

/// Rewrites every checksum of a (possibly damaged) resid chunk so it matches the bytes it
/// covers: header, sections and the block directory's per-block CRCs (docs/FORMAT.md).
/// Best effort: stops where the layout no longer makes sense. Never panics.
pub fn fix_checksums(d: &mut [u8]) {
    if d.len() < 8 {
        return;
    }
    let rank = d[7] as usize;
    let header_end = 8 + 8 * rank + 52;
    put_crc(d, header_end, 0, header_end);
    let mut pos = header_end + 4;
    let Some(sections) = u32_at(d, header_end - 4) else {
        return;
    };
    for _ in 0..sections.min(16) {
        let Some(len) = u64_at(d, pos + 4) else {
            return;
        };
        let start = pos + 16;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= d.len())
        else {
            return;
        };
        if d[pos] == 1 {
            fix_block_directory(&mut d[start..end]);
        }
        put_crc(d, pos + 12, start, end);
        pos = end;
    }
}

fn fix_block_directory(p: &mut [u8]) {
    let Some(count) = u32_at(p, 0) else {
        return;
    };
    let count = count as usize;
    let Some(mut at) = count.checked_mul(12).and_then(|n| n.checked_add(4)) else {
        return;
    };
    for e in 0..count {
        let entry = 4 + 12 * e;
        let Some(len) = u32_at(p, entry + 4) else {
            return;
        };
        let Some(end) = at.checked_add(len as usize).filter(|&e| e <= p.len()) else {
            return;
        };
        put_crc(p, entry + 8, at, end);
        at = end;
    }
}

/// Peak bytes `decompress_limited(data, limit)` may allocate per byte of `limit` (plus 1 MiB
/// and 4x the input). A well-formed chunk needs about 3x: the decoded values, the decoded
/// blocks and the output bytes are alive at once.
pub const DECODE_ALLOC_FACTOR: usize = 4;
