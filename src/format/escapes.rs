//! The ESCAPES section (`docs/FORMAT.md`, "ESCAPES"): the values the grid cannot bring within
//! the bound, by flat C-order index (varint gaps), then their raw element bytes; and where
//! those indices fall in the chunk's blocks, which code them as escaped points.

use crate::error::{ensure, Error, Result};
use crate::field::{self, Block};

use super::{put_varint, Reader};

/// The ESCAPES payload for the increasing chunk indices `escapes`, whose element bytes (of
/// `size` bytes each) are taken from the chunk's `data`.
pub fn write(escapes: &[usize], data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(escapes.len() as u64).to_le_bytes());
    let mut prev = None;
    for &i in escapes {
        put_varint(
            &mut out,
            match prev {
                None => i as u64,
                Some(p) => (i - p - 1) as u64,
            },
        );
        prev = Some(i);
    }
    for &i in escapes {
        out.extend_from_slice(&data[i * size..(i + 1) * size]);
    }
    out
}

/// Reads an ESCAPES payload of a chunk of `n` values of `size` bytes, calling
/// `put(index, value bytes)` for each escaped value (indices checked against `n`).
pub fn for_each(
    payload: &[u8],
    n: usize,
    size: usize,
    mut put: impl FnMut(usize, &[u8]),
) -> Result<()> {
    let mut r = Reader::new(payload);
    let count = r.u64("escapes")?;
    ensure!(
        count <= n as u64,
        Error::Corrupt(format!("{count} escaped values in a chunk of {n}"))
    );
    let count = count as usize;
    // Each index takes at least one byte and each value `size`: refuse before allocating.
    ensure!(
        count.saturating_mul(1 + size) <= r.remaining(),
        Error::Truncated { what: "escapes" }
    );
    let mut idx = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let i = next
            .checked_add(r.varint("escape index")?)
            .filter(|&i| i < n as u64)
            .ok_or_else(|| Error::Corrupt("escape index out of range".into()))?;
        idx.push(i as usize);
        next = i + 1;
    }
    let raw = r.take(count * size, "escaped values")?;
    for (&i, b) in idx.iter().zip(raw.chunks_exact(size)) {
        put(i, b);
    }
    ensure!(
        r.remaining() == 0,
        Error::Corrupt("bytes after the escaped values".into())
    );
    Ok(())
}

/// The chunk indices `escapes` (of a 3D view `dims` cut into `blocks` of extents `ext`), per
/// block, as indices inside the block (increasing when `escapes` is).
pub fn per_block(
    escapes: &[usize],
    dims: [usize; 3],
    ext: [usize; 3],
    blocks: &[Block],
) -> Vec<Vec<usize>> {
    let mut local: Vec<Vec<usize>> = vec![Vec::new(); blocks.len()];
    let counts = [0, 1, 2].map(|k| dims[k].div_ceil(ext[k]));
    for &i in escapes {
        let (b, pos) = field::locate(i, dims, ext);
        let n = (b[0] * counts[1] + b[1]) * counts[2] + b[2];
        let bext = blocks[n].ext;
        local[n].push((pos[0] * bext[1] + pos[1]) * bext[2] + pos[2]);
    }
    local
}

/// The chunk indices of block `b`'s escaped points (`escaped`: block-local flags), the
/// inverse of [`per_block`].
pub fn in_chunk(b: &Block, dims: [usize; 3], escaped: &[bool]) -> Vec<usize> {
    escaped
        .iter()
        .enumerate()
        .filter(|(_, &e)| e)
        .map(|(li, _)| b.global_index(dims, li))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escapes written and read back land on their indices with their bytes; per-block
    /// indices map back to the chunk's.
    #[test]
    fn escapes_round_trip() {
        let data: Vec<u8> = (0..40u8).collect();
        let idx = [0, 3, 4, 9];
        let payload = write(&idx, &data, 4);
        let mut got = Vec::new();
        for_each(&payload, 10, 4, |i, b| got.push((i, b.to_vec()))).unwrap();
        let want: Vec<(usize, Vec<u8>)> = idx
            .iter()
            .map(|&i| (i, data[4 * i..4 * i + 4].to_vec()))
            .collect();
        assert_eq!(got, want);
        assert!(for_each(&payload, 9, 4, |_, _| {}).is_err());
        for cut in 0..payload.len() {
            assert!(for_each(&payload[..cut], 10, 4, |_, _| {}).is_err());
        }

        let (dims, ext) = ([3, 5, 7], [2, 3, 4]);
        let blocks = field::blocks(dims, ext).unwrap();
        let all: Vec<usize> = (0..105).step_by(4).collect();
        let local = per_block(&all, dims, ext, &blocks);
        let mut back: Vec<usize> = blocks
            .iter()
            .zip(&local)
            .flat_map(|(b, l)| {
                let mut flags = vec![false; b.len()];
                l.iter().for_each(|&i| flags[i] = true);
                in_chunk(b, dims, &flags)
            })
            .collect();
        back.sort_unstable();
        assert_eq!(back, all);
    }
}
