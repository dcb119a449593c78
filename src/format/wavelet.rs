//! The WAVELET section (`docs/FORMAT.md`, "WAVELET"): the transform and its levels, one
//! payload per subband (the quantized coefficients, range coded as a block), and the
//! corrections of the points the quantized transform leaves out of bound.

use crate::entropy::{bitplane, Classes, Contexts};
use crate::error::{ensure, Error, Result};
use crate::transform::cdf97::{self, Subband};

use super::{put_varint, Reader};

/// The transform id of the CDF 9/7 wavelet (`transform::cdf97`).
pub const CDF97: u8 = 1;

/// How the coefficients are cut into range-coder blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One block per subband, in [`cdf97::subbands`] order: large chunks, whose subbands
    /// code on all threads.
    Subbands = 0,
    /// One block holding every subband in order, one adaptive model carried from each to the
    /// next (each subband's contexts from its own neighbours): small chunks, where a model per
    /// subband would spend much of its bits learning.
    Shared = 1,
}

/// A WAVELET payload, read and checked against the chunk's grid.
pub struct Wavelet<'a> {
    /// Levels along each dimension of the 3D view.
    pub levels: [u8; 3],
    /// The subbands in [`cdf97::subbands`] order.
    pub bands: Vec<Subband>,
    pub grouping: Grouping,
    /// The range-coder blocks: one per subband, or one for all ([`Grouping`]).
    pub blocks: Vec<&'a [u8]>,
    /// The corrections, as [`write_corrections`] wrote them.
    pub corrections: &'a [u8],
}

/// How many range-coder blocks `grouping` codes `bands` subbands in.
pub fn block_count(bands: usize, grouping: Grouping) -> usize {
    match grouping {
        Grouping::Subbands => bands,
        Grouping::Shared => 1,
    }
}

/// The payload: transform id, three levels, the grouping, a varint length per block
/// ([`block_count`]) and one for the corrections, then those byte strings in the same order.
pub fn write(
    levels: [u8; 3],
    grouping: Grouping,
    bands: &[Vec<u8>],
    corrections: &[u8],
) -> Vec<u8> {
    let len = bands.iter().map(Vec::len).sum::<usize>() + corrections.len();
    let mut out = Vec::with_capacity(5 + 5 * (bands.len() + 1) + len);
    out.push(CDF97);
    out.extend_from_slice(&levels);
    out.push(grouping as u8);
    for b in bands {
        put_varint(&mut out, b.len() as u64);
    }
    put_varint(&mut out, corrections.len() as u64);
    for b in bands {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(corrections);
    out
}

/// Whether `levels` can transform a grid of `dims`: at most [`cdf97::MAX_LEVELS`] each, and
/// every level along a dimension splits a part at least 2 long.
pub fn levels_fit(dims: [usize; 3], levels: [u8; 3]) -> bool {
    (0..3).all(|k| {
        let l = levels[k];
        l <= cdf97::MAX_LEVELS && (l == 0 || dims[k].div_ceil(1 << (l - 1)) >= 2)
    })
}

/// Reads a WAVELET payload of a chunk whose 3D view is `dims`.
pub fn read(payload: &[u8], dims: [usize; 3]) -> Result<Wavelet<'_>> {
    let mut r = Reader::new(payload);
    let id = r.u8("wavelet")?;
    ensure!(
        id == CDF97,
        Error::Corrupt(format!("unknown wavelet transform {id}"))
    );
    let raw = r.take(3, "wavelet levels")?;
    let levels = [raw[0], raw[1], raw[2]];
    ensure!(
        levels_fit(dims, levels),
        Error::Corrupt(format!("wavelet levels {levels:?} for grid {dims:?}"))
    );
    let grouping = match r.u8("wavelet grouping")? {
        0 => Grouping::Subbands,
        1 => Grouping::Shared,
        g => return Err(Error::Corrupt(format!("unknown wavelet grouping {g}"))),
    };
    let bands = cdf97::subbands(dims, levels);
    let count = block_count(bands.len(), grouping);
    // Every length takes at least a byte: refuse a count the payload cannot hold first.
    ensure!(count < r.remaining(), Error::Truncated { what: "wavelet" });
    let mut lens = Vec::with_capacity(count + 1);
    for _ in 0..=count {
        let len = r.varint("wavelet lengths")?;
        ensure!(
            len <= r.remaining() as u64,
            Error::Truncated { what: "wavelet" }
        );
        lens.push(len as usize);
    }
    let mut blocks = Vec::with_capacity(count);
    for &len in &lens[..count] {
        blocks.push(r.take(len, "wavelet block")?);
    }
    let corrections = r.take(lens[lens.len() - 1], "wavelet corrections")?;
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes in the wavelet", r.remaining()))
    );
    Ok(Wavelet {
        levels,
        bands,
        grouping,
        blocks,
        corrections,
    })
}

/// Most values a wavelet-coded chunk holds: a correction's gap is range coded as a residual,
/// within the coder's range.
pub const MAX_VALUES: usize = 1 << 28;

/// Most steps a correction moves a value, either way (the coder's range, as for gaps).
pub const MAX_STEPS: i64 = (1 << 28) - 1;

/// The corrections of increasing flat indices `points` (index, steps; at most half the
/// chunk's values, each step count within [`MAX_STEPS`], indices below [`MAX_VALUES`]): a
/// varint count `C`; when `C > 0`, a varint length and a range-coded block of the `C` gaps
/// (the index for the first point, `index - previous - 1` after), then a range-coded block of
/// the `C` step counts (both one point class, near contexts, extents `[1, 1, C]`).
pub fn write_corrections(points: &[(usize, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, points.len() as u64);
    if points.is_empty() {
        return out;
    }
    let (gaps, steps) = columns(points);
    let ext = [1, 1, points.len()];
    let gaps = bitplane::encode(&gaps, ext, Classes::Single, Contexts::Near);
    let steps = bitplane::encode(&steps, ext, Classes::Single, Contexts::Near);
    put_varint(&mut out, gaps.len() as u64);
    out.extend_from_slice(&gaps);
    out.extend_from_slice(&steps);
    out
}

/// The length of [`write_corrections`]' output, estimated without running the range coder.
pub fn corrections_estimate(points: &[(usize, i64)]) -> usize {
    if points.is_empty() {
        return 1;
    }
    let (gaps, steps) = columns(points);
    let ext = [1, 1, points.len()];
    let est = |v: &[i32]| bitplane::estimate(v, ext, Classes::Single, Contexts::Near);
    10 + est(&gaps) + est(&steps)
}

/// The gaps and step counts of `points`, as the coder's residuals.
fn columns(points: &[(usize, i64)]) -> (Vec<i32>, Vec<i32>) {
    let mut next = 0usize;
    let gaps = points
        .iter()
        .map(|&(i, _)| {
            let g = i - next;
            next = i + 1;
            g as i32
        })
        .collect();
    (gaps, points.iter().map(|&(_, k)| k as i32).collect())
}

/// Calls `put(index, steps)` for each correction of a chunk of `n` values, in index order
/// (indices checked against `n`, steps against [`MAX_STEPS`]).
pub fn for_each_correction(bytes: &[u8], n: usize, mut put: impl FnMut(usize, i64)) -> Result<()> {
    let mut r = Reader::new(bytes);
    let count = r.varint("wavelet corrections")?;
    // At most half the values: the two columns then hold at most a chunk's bytes.
    ensure!(
        count <= (n / 2) as u64,
        Error::Corrupt(format!("{count} wavelet corrections in a chunk of {n}"))
    );
    let count = count as usize;
    if count == 0 {
        ensure!(
            r.remaining() == 0,
            Error::Corrupt("bytes after the wavelet corrections".into())
        );
        return Ok(());
    }
    let len = r.varint("wavelet corrections")?;
    ensure!(
        len <= r.remaining() as u64,
        Error::Truncated {
            what: "wavelet corrections"
        }
    );
    let gap_bytes = r.take(len as usize, "wavelet corrections")?;
    let step_bytes = r.take(r.remaining(), "wavelet corrections")?;
    let ext = [1, 1, count];
    let mut gaps = vec![0i32; count];
    bitplane::decode(gap_bytes, ext, Classes::Single, Contexts::Near, &mut gaps)?;
    let mut steps = vec![0i32; count];
    bitplane::decode(step_bytes, ext, Classes::Single, Contexts::Near, &mut steps)?;
    let mut next = 0u64;
    for (&g, &k) in gaps.iter().zip(&steps) {
        let i = u64::try_from(g)
            .ok()
            .and_then(|g| next.checked_add(g))
            .filter(|&i| i < n as u64)
            .ok_or_else(|| Error::Corrupt("correction index out of range".into()))?;
        ensure!(
            (k as i64).abs() <= MAX_STEPS,
            Error::Corrupt(format!("correction of {k} steps"))
        );
        put(i as usize, k as i64);
        next = i + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrections_round_trip_and_refuse_damage() {
        let points = [
            (0usize, 1i64),
            (5, -1),
            (6, 300),
            (1000, -70000),
            (1001, MAX_STEPS),
        ];
        let bytes = write_corrections(&points);
        let mut got = Vec::new();
        for_each_correction(&bytes, 2004, |i, k| got.push((i, k))).unwrap();
        assert_eq!(got, points);
        assert!(corrections_estimate(&points).abs_diff(bytes.len()) < 12);
        // An index past the chunk, more corrections than half the values.
        assert!(for_each_correction(&bytes, 1001, |_, _| ()).is_err());
        assert!(for_each_correction(&bytes, 9, |_, _| ()).is_err());
        let none = write_corrections(&[]);
        assert_eq!(none, [0]);
        for_each_correction(&none, 10, |_, _| panic!("no corrections")).unwrap();
        assert!(for_each_correction(&[0, 1], 10, |_, _| ()).is_err());
        for cut in 0..bytes.len() {
            // A cut stream decodes to other values or fails; it never panics.
            let _ = for_each_correction(&bytes[..cut], 2004, |_, _| ());
        }
    }

    #[test]
    fn payload_round_trip_and_refuse_damage() {
        let dims = [1, 40, 33];
        let levels = cdf97::levels_for(dims);
        let shared = write(levels, Grouping::Shared, &[vec![7; 5]], &[9]);
        let w = read(&shared, dims).unwrap();
        assert_eq!(w.grouping, Grouping::Shared);
        assert_eq!(w.blocks, [&[7u8; 5][..]]);
        assert_eq!(w.bands, cdf97::subbands(dims, levels));
        let mut unknown = shared.clone();
        unknown[4] = 2;
        assert!(read(&unknown, dims).is_err());
        let boxes = cdf97::subbands(dims, levels);
        let bands: Vec<Vec<u8>> = (0..boxes.len()).map(|i| vec![i as u8; i % 3]).collect();
        let bytes = write(levels, Grouping::Subbands, &bands, &[9, 9]);
        let w = read(&bytes, dims).unwrap();
        assert_eq!(w.levels, levels);
        assert_eq!(w.corrections, &[9, 9]);
        assert_eq!(w.bands, boxes);
        for (got, want) in w.blocks.iter().zip(&bands) {
            assert_eq!(*got, &want[..]);
        }
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut], dims).is_err(), "cut at {cut}");
        }
        let mut deep = bytes.clone();
        deep[2] = 7;
        assert!(read(&deep, dims).is_err());
    }
}
