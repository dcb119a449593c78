//! The WAVELET section (`docs/FORMAT.md`, "WAVELET"): the transform and its levels, one
//! payload per subband (the quantized coefficients, range coded as a block), and the
//! corrections of the points the quantized transform leaves out of bound.

use crate::error::{ensure, Error, Result};
use crate::transform::cdf97::{self, Subband};

use super::{put_varint, Reader};

/// The transform id of the CDF 9/7 wavelet (`transform::cdf97`).
pub const CDF97: u8 = 1;

/// A WAVELET payload, read and checked against the chunk's grid.
pub struct Wavelet<'a> {
    /// Levels along each dimension of the 3D view.
    pub levels: [u8; 3],
    /// The subbands in [`cdf97::subbands`] order, each with its coded coefficients.
    pub bands: Vec<(Subband, &'a [u8])>,
    /// The corrections, as [`write_corrections`] wrote them.
    pub corrections: &'a [u8],
}

/// The payload: transform id, three levels, a varint length per subband and one for the
/// corrections, then those byte strings in the same order.
pub fn write(levels: [u8; 3], bands: &[Vec<u8>], corrections: &[u8]) -> Vec<u8> {
    let len = bands.iter().map(Vec::len).sum::<usize>() + corrections.len();
    let mut out = Vec::with_capacity(4 + 5 * (bands.len() + 1) + len);
    out.push(CDF97);
    out.extend_from_slice(&levels);
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
    let boxes = cdf97::subbands(dims, levels);
    // Every length takes at least a byte: refuse a count the payload cannot hold first.
    ensure!(
        boxes.len() < r.remaining(),
        Error::Truncated { what: "wavelet" }
    );
    let mut lens = Vec::with_capacity(boxes.len() + 1);
    for _ in 0..=boxes.len() {
        let len = r.varint("wavelet lengths")?;
        ensure!(
            len <= r.remaining() as u64,
            Error::Truncated { what: "wavelet" }
        );
        lens.push(len as usize);
    }
    let mut bands = Vec::with_capacity(boxes.len());
    for (b, &len) in boxes.into_iter().zip(&lens) {
        bands.push((b, r.take(len, "wavelet subband")?));
    }
    let corrections = r.take(lens[lens.len() - 1], "wavelet corrections")?;
    ensure!(
        r.remaining() == 0,
        Error::Corrupt(format!("{} trailing bytes in the wavelet", r.remaining()))
    );
    Ok(Wavelet {
        levels,
        bands,
        corrections,
    })
}

/// The corrections of increasing flat indices: a varint count, then per point the varint gap
/// from the previous point (the index itself for the first) and its zigzagged step count.
pub fn write_corrections(points: &[(usize, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 3 * points.len());
    put_varint(&mut out, points.len() as u64);
    let mut next = 0usize;
    for &(i, k) in points {
        put_varint(&mut out, (i - next) as u64);
        put_varint(&mut out, ((k << 1) ^ (k >> 63)) as u64);
        next = i + 1;
    }
    out
}

/// Calls `put(index, steps)` for each correction of a chunk of `n` values (indices checked
/// against `n`, steps within `max_steps` either way).
pub fn for_each_correction(
    bytes: &[u8],
    n: usize,
    max_steps: i64,
    mut put: impl FnMut(usize, i64),
) -> Result<()> {
    let mut r = Reader::new(bytes);
    let count = r.varint("wavelet corrections")?;
    // Each correction takes at least two bytes.
    ensure!(
        count <= n as u64 && count.saturating_mul(2) <= r.remaining() as u64,
        Error::Corrupt(format!("{count} wavelet corrections in a chunk of {n}"))
    );
    let mut next = 0u64;
    for _ in 0..count {
        let i = next
            .checked_add(r.varint("correction index")?)
            .filter(|&i| i < n as u64)
            .ok_or_else(|| Error::Corrupt("correction index out of range".into()))?;
        let z = r.varint("correction")?;
        let k = (z >> 1) as i64 ^ -((z & 1) as i64);
        ensure!(
            k.abs() <= max_steps,
            Error::Corrupt(format!("correction of {k} steps"))
        );
        put(i as usize, k);
        next = i + 1;
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the wavelet corrections".into())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrections_round_trip_and_refuse_damage() {
        let points = [(0usize, 1i64), (5, -1), (6, 300), (1000, -70000)];
        let bytes = write_corrections(&points);
        let mut got = Vec::new();
        for_each_correction(&bytes, 1001, 1 << 20, |i, k| got.push((i, k))).unwrap();
        assert_eq!(got, points);
        assert!(for_each_correction(&bytes, 1000, 1 << 20, |_, _| ()).is_err());
        assert!(for_each_correction(&bytes, 1001, 1000, |_, _| ()).is_err());
        assert!(for_each_correction(&bytes[..bytes.len() - 1], 1001, 1 << 20, |_, _| ()).is_err());
    }

    #[test]
    fn payload_round_trip_and_refuse_damage() {
        let dims = [1, 40, 33];
        let levels = cdf97::levels_for(dims);
        let boxes = cdf97::subbands(dims, levels);
        let bands: Vec<Vec<u8>> = (0..boxes.len()).map(|i| vec![i as u8; i % 3]).collect();
        let bytes = write(levels, &bands, &[9, 9]);
        let w = read(&bytes, dims).unwrap();
        assert_eq!(w.levels, levels);
        assert_eq!(w.corrections, &[9, 9]);
        for ((b, got), (want_box, want)) in w.bands.iter().zip(boxes.iter().zip(&bands)) {
            assert_eq!((b, *got), (want_box, &want[..]));
        }
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut], dims).is_err(), "cut at {cut}");
        }
        let mut deep = bytes.clone();
        deep[2] = 7;
        assert!(read(&deep, dims).is_err());
    }
}
