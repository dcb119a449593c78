//! Table-driven rANS coding of zigzag residuals (block coder ids 4 and 5).
//!
//! A model like the bit-plane range coder's ([`super::bitplane`]), coded by table lookups
//! instead of binary decisions, so a value costs one symbol rather than three to six.
//! Each code `z` becomes one symbol of a 124-letter alphabet: `z` itself below 8, else its
//! plane count with the two planes under the leading one; the planes below those go to a raw
//! bit stream. A point's class and the codes of its causal neighbours (near, or far for
//! interpolated blocks) pick a context; the encoder counts the block's symbols per context,
//! groups the contexts into static frequency tables ([`tables`]), sends each table as 5-bit
//! logarithmic weights, and codes the symbols with two interleaved 32-bit rANS states and
//! 16-bit renormalization.
//! docs/FORMAT.md gives the byte layout.

mod context;
mod tables;

use super::bitplane;
use super::context::{planes_of, Classes, Contexts};
use super::range::{BitReader, BitWriter};
use super::zigzag;
use crate::error::{ensure, Error, Result};
use context::Context;
use tables::{Counts, Hist, Layout, Table, PREC, TOTAL};

/// Below this many bits per value a block is also tried with the range coder, which models
/// sparse and very smooth residuals better than static tables (and is fast there: about one
/// decision per value).
const RANGE_BELOW_BITS: f64 = 2.0;
/// A rANS payload's bytes besides its tables, symbols and raw bits: the segment count, the
/// word count and the two states.
const FIXED_BYTES: f64 = 13.0;
/// rANS states live in `[LOW, LOW << 16)`.
const LOW: u32 = 1 << 16;
/// How many segments along its slowest axis a block may be cut into, each with tables of
/// its own (climate fields' levels differ in their statistics).
const SEGMENTS: [usize; 4] = [1, 2, 4, 8];
/// Values a segment holds at least.
const MIN_SEGMENT: usize = 1 << 13;

/// The segment of slice `z` when `depth` slices are cut into `s` segments.
#[inline(always)]
fn segment(z: usize, s: usize, depth: usize) -> usize {
    z * s / depth
}

/// The symbol of code `z` and how many raw bits follow it.
#[inline(always)]
fn symbol(z: u32) -> (u32, u32) {
    if z < 8 {
        (z, 0)
    } else {
        let k = planes_of(z);
        let raw = k - 3;
        (4 * (k - 2) + ((z >> raw) & 3), raw)
    }
}

/// Raw bits after symbol `s`.
#[inline(always)]
fn raw_bits(s: u32) -> u32 {
    (s / 4).saturating_sub(1)
}

/// The code of symbol `s` with its raw bits `raw`.
#[inline(always)]
fn code_of(s: u32, raw: u32) -> u32 {
    if s < 8 {
        s
    } else {
        ((4 | (s & 3)) << raw_bits(s)) | raw
    }
}

/// Walks a block in order: for each point its table and symbol, `raw(code, bits)` for the
/// bits under the symbol. Every plane count is known before the walk, so no point waits for
/// its west neighbour.
#[inline(always)]
fn model_block(
    r: &[i32],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    mut each: impl FnMut(usize, usize, u32, u32, u32),
) {
    let mut ctx = Context::new(ext, classes, contexts);
    let mut it = r.iter();
    for z in 0..ext[0] {
        for y in 0..ext[1] {
            let start = ctx.at(z, y, 0);
            for (i, v) in (start..start + ext[2]).zip(&mut it) {
                ctx.set(i, zigzag::encode(*v));
            }
        }
    }
    let mut it = r.iter();
    for z in 0..ext[0] {
        for y in 0..ext[1] {
            let start = ctx.at(z, y, 0);
            for (x, i) in (start..start + ext[2]).enumerate() {
                let code = zigzag::encode(*it.next().expect("block length"));
                let t = ctx.slot(z, y, x, i);
                let (s, raw) = symbol(code);
                each(z, t, s, code, raw);
            }
        }
    }
}

/// The most segments a block of extents `ext` may be cut into.
fn finest(ext: [usize; 3]) -> usize {
    let n: usize = ext.iter().product();
    SEGMENTS
        .into_iter()
        .filter(|&s| s <= ext[0] && s * MIN_SEGMENT <= n)
        .max()
        .unwrap_or(1)
}

/// The block's symbol counts per context in each of its finest segments; `point(z, slot,
/// symbol, code, raw bits)` sees every point.
fn count(
    r: &[i32],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    mut point: impl FnMut(usize, u32, u32, u32),
) -> Vec<Counts> {
    let f = finest(ext);
    let mut fine: Vec<Counts> = (0..f).map(|_| Counts::new()).collect();
    let of_slice: Vec<usize> = (0..ext[0]).map(|z| segment(z, f, ext[0])).collect();
    model_block(r, ext, classes, contexts, |z, t, s, code, bits| {
        fine[of_slice[z]].add(t, s, 1);
        point(t, s, code, bits);
    });
    fine
}

/// The cheapest cut into segments (trying 1, 2, 4, ... while finer ones pay): their layouts
/// and the bytes of tables and symbols.
fn plan_segments(fine: &[Counts]) -> (Vec<Layout>, f64) {
    let f = fine.len();
    let mut best: Option<(Vec<Layout>, f64)> = None;
    for s in SEGMENTS.into_iter().filter(|&s| s <= f) {
        let layouts: Vec<Layout> = (0..s)
            .map(|g| match &fine[g * f / s..(g + 1) * f / s] {
                [one] => Layout::fit(one),
                group => {
                    let mut c = Counts::new();
                    group.iter().for_each(|x| c.absorb(x));
                    Layout::fit(&c)
                }
            })
            .collect();
        let bytes = layouts.iter().map(Layout::coded_bytes).sum::<f64>();
        match &best {
            // Finer cuts pay less and less: stop at the first that does not.
            Some(b) if bytes >= b.1 => break,
            _ => best = Some((layouts, bytes)),
        }
    }
    best.expect("one segment is always allowed")
}

/// Codes the residuals of one block (C order, extents `ext`); `classes` splits its points
/// into classes with tables of their own, `contexts` says which neighbours select a table.
/// A block that codes into fewer than [`RANGE_BELOW_BITS`] per value is also range coded,
/// and the smaller coding is kept (behind a 0 byte where the segment count would be).
pub fn encode(r: &[i32], ext: [usize; 3], classes: Classes, contexts: Contexts) -> Vec<u8> {
    let mut raw = BitWriter::default();
    let mut points: Vec<(u16, u8)> = Vec::with_capacity(r.len());
    let fine = count(r, ext, classes, contexts, |t, s, code, bits| {
        points.push((t as u16, s as u8));
        raw.put(code, bits);
    });
    let (layouts, symbol_bytes) = plan_segments(&fine);
    let rans_bytes = symbol_bytes + FIXED_BYTES + raw.bytes() as f64;
    if smaller_range(r, ext, classes, contexts, rans_bytes).is_some() {
        let mut range = vec![0u8];
        range.extend(bitplane::encode(r, ext, classes, contexts));
        return range;
    }
    encode_rans(ext, points, raw, &layouts)
}

/// The rANS coding of a block's `points` (context, symbol) and `raw` bits, with the tables
/// of each segment's `layouts`.
fn encode_rans(
    ext: [usize; 3],
    mut points: Vec<(u16, u8)>,
    raw: BitWriter,
    layouts: &[Layout],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(points.len() / 2 + 64);
    out.push(layouts.len() as u8);
    let mut tables = Vec::new();
    let mut maps = Vec::new();
    for layout in layouts {
        let base = tables.len();
        tables.extend(layout.write(&mut out));
        maps.push(layout.slot_tables().map(|t| (base + t as usize) as u16));
    }
    // From each point's context to its segment's table.
    let plane = (ext[1] * ext[2]).max(1);
    for (z, slice) in points.chunks_mut(plane).enumerate() {
        let map = &maps[segment(z, maps.len(), ext[0])];
        for p in slice {
            p.0 = map[p.0 as usize];
        }
    }
    let words = code_symbols(&points, &tables);
    out.extend_from_slice(&((words.len() - 4) as u32).to_le_bytes());
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&raw.finish());
    out
}

/// A symbol as the encoder codes it: frequency and start, and a reciprocal of the frequency
/// that divides without a division instruction.
struct EncSymbol {
    freq: u32,
    start: u32,
    /// `ceil(2^(32 + shift) / freq)` with `shift = ceil(log2 freq)`: then
    /// `floor(x / freq) = floor(x * rcp / 2^(32 + shift))` for every 32-bit `x`.
    rcp: u64,
    shift: u32,
}

impl EncSymbol {
    fn new(freq: u32, start: u32) -> EncSymbol {
        let shift = 32 - freq.max(1).saturating_sub(1).leading_zeros();
        let rcp = ((1u128 << (32 + shift)).div_ceil(freq.max(1) as u128)) as u64;
        EncSymbol {
            freq,
            start,
            rcp,
            shift,
        }
    }

    /// The state after coding this symbol into `x` (renormalized already).
    #[inline(always)]
    fn push(&self, x: u32) -> u32 {
        let q = ((x as u128 * self.rcp as u128) >> (32 + self.shift)) as u32;
        (q << PREC) + (x - q * self.freq) + self.start
    }
}

/// The rANS words of the points (table, symbol), coded last to first, in the order the
/// encoder emits them; ends with the final states of stream 1, then stream 0 (as two 16-bit
/// halves each, high first), so the reversed list starts with the states.
fn code_symbols(points: &[(u16, u8)], tables: &[(Hist, Hist)]) -> Vec<u16> {
    let symbols: Vec<Vec<EncSymbol>> = tables
        .iter()
        .map(|(freq, start)| {
            freq.iter()
                .zip(start)
                .map(|(&f, &st)| EncSymbol::new(f, st))
                .collect()
        })
        .collect();
    let mut words: Vec<u16> = Vec::with_capacity(points.len() / 2 + 4);
    let mut state = [LOW; 2];
    for (i, &(t, s)) in points.iter().enumerate().rev() {
        let sym = &symbols[t as usize][s as usize];
        let x = &mut state[i & 1];
        if *x as u64 >= (sym.freq as u64) << (32 - PREC) {
            words.push(*x as u16);
            *x >>= 16;
        }
        *x = sym.push(*x);
    }
    for x in [state[1], state[0]] {
        words.push(x as u16);
        words.push((x >> 16) as u16);
    }
    words
}

/// The length [`encode`] writes, to within a few bytes: the segments and tables it would
/// choose, each symbol's cost under them, and the raw bits (or the range coder's estimate
/// where that is smaller). What the encoder's trials compare. A sample of a block pays for
/// its tables in full, as a block of its size would: amortizing them over the block made
/// the trials favour predictors with more point classes, which then coded larger.
pub fn estimate(r: &[i32], ext: [usize; 3], classes: Classes, contexts: Contexts) -> usize {
    let mut raw = 0u64;
    let fine = count(r, ext, classes, contexts, |_, _, _, bits| {
        raw += bits as u64
    });
    let bytes = (plan_segments(&fine).1 + FIXED_BYTES + raw.div_ceil(8) as f64).ceil() as usize;
    smaller_range(r, ext, classes, contexts, bytes as f64).unwrap_or(bytes)
}

/// The range coder's estimated size of a block (its 0 byte included) when the block's rANS
/// coding, `rans_bytes`, is under [`RANGE_BELOW_BITS`] per value and the range coding is
/// smaller; the estimate is within a fraction of a percent of the coding.
fn smaller_range(
    r: &[i32],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    rans_bytes: f64,
) -> Option<usize> {
    if 8.0 * rans_bytes >= RANGE_BELOW_BITS * r.len() as f64 {
        return None;
    }
    let range = 1 + bitplane::estimate(r, ext, classes, contexts);
    ((range as f64) < rans_bytes).then_some(range)
}

/// Reads 16-bit words in order; past the end, zeros.
struct Words<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Words<'_> {
    #[inline(always)]
    fn next(&mut self) -> u32 {
        let w = match self.bytes.get(self.pos..self.pos + 2) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]) as u32,
            None => 0,
        };
        self.pos += 2;
        w
    }
}

/// Reads the segment count and each segment's tables: every table (the placeholder first),
/// each segment's map from context to table, and the length read.
fn read_segments(bytes: &[u8], depth: usize) -> Result<(Vec<Table>, Vec<Vec<u16>>, usize)> {
    let s = *bytes.first().ok_or(Error::Truncated {
        what: "rANS segments",
    })? as usize;
    ensure!(
        (1..=SEGMENTS[SEGMENTS.len() - 1]).contains(&s) && s <= depth.max(1),
        Error::Corrupt(format!("{s} rANS segments for a block of depth {depth}"))
    );
    let mut tables = vec![tables::placeholder()];
    let mut maps = Vec::with_capacity(s);
    let mut pos = 1;
    for _ in 0..s {
        let (map, len) = tables::read(&bytes[pos..], &mut tables)?;
        maps.push(map);
        pos += len;
    }
    Ok((tables, maps, pos))
}

/// Decodes what [`encode`] wrote into `r` (whose length is the block size).
pub fn decode(
    bytes: &[u8],
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
    r: &mut [i32],
) -> Result<()> {
    ensure!(
        r.len() == ext.iter().product::<usize>(),
        Error::Corrupt("block longer than its extent".into())
    );
    if bytes.first() == Some(&0) {
        return bitplane::decode(&bytes[1..], ext, classes, contexts, r);
    }
    let (tables, maps, pos) = read_segments(bytes, ext[0])?;
    let truncated = || Error::Truncated {
        what: "rANS stream",
    };
    let head = bytes.get(pos..pos + 4).ok_or_else(truncated)?;
    let n_words = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let stream = bytes
        .get(pos + 4..pos + 4 + 2 * (n_words + 4))
        .ok_or_else(truncated)?;
    let mut raw = BitReader::new(&bytes[pos + 4 + stream.len()..]);
    let mut words = Words {
        bytes: stream,
        pos: 0,
    };
    let mut state = [0u32; 2];
    for x in &mut state {
        *x = (words.next() << 16) | words.next();
    }
    let mut ctx = Context::new(ext, classes, contexts);
    let mut out = r.iter_mut();
    let mut p = 0usize;
    for z in 0..ext[0] {
        let map = &maps[segment(z, maps.len(), ext[0])];
        for y in 0..ext[1] {
            let start = ctx.at(z, y, 0);
            for (x, i) in (start..start + ext[2]).enumerate() {
                let t = ctx.slot(z, y, x, i);
                let table = &tables[map[t] as usize];
                let st = &mut state[p & 1];
                p += 1;
                let slot = *st & (TOTAL - 1);
                let (s, f, first) = table.at(slot);
                *st = f
                    .wrapping_mul(*st >> PREC)
                    .wrapping_add(slot)
                    .wrapping_sub(first);
                if *st < LOW {
                    *st = (*st << 16) | words.next();
                }
                let code = code_of(s, raw.get(raw_bits(s)));
                ctx.set(i, code);
                if let Some(o) = out.next() {
                    *o = zigzag::decode(code);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tables::ALPHABET;
    use super::*;

    fn noise(n: usize, spread: u64, seed: u64) -> Vec<i32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s % (2 * spread + 1)) as i32 - spread as i32;
                if (i / 50) % 3 == 0 {
                    v / 4
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn the_reciprocal_divides_exactly() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for f in 1..=TOTAL {
            let sym = EncSymbol::new(f, 0);
            for x in [
                0u32,
                1,
                f - 1,
                f,
                f + 1,
                u32::MAX,
                u32::MAX - 1,
                u32::MAX / f * f,
            ] {
                assert_eq!(sym.push(x), ((x / f) << PREC) + x % f, "{x} / {f}");
            }
            for _ in 0..64 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let x = s as u32;
                assert_eq!(sym.push(x), ((x / f) << PREC) + x % f, "{x} / {f}");
            }
        }
    }

    #[test]
    fn symbols_cover_every_code() {
        for z in (0..1u64 << 32)
            .step_by(9_973)
            .chain([0, 7, 8, 9, u32::MAX as u64])
        {
            let z = z as u32;
            let (s, raw) = symbol(z);
            assert!((s as usize) < ALPHABET, "{z}");
            assert_eq!(raw, raw_bits(s), "{z}");
            let low = if raw == 0 { 0 } else { z & ((1 << raw) - 1) };
            assert_eq!(code_of(s, low), z);
        }
    }

    #[test]
    fn round_trips_mixed_magnitudes_classes_and_contexts() {
        let ext = [3, 17, 29];
        let n = ext.iter().product();
        let r: Vec<i32> = (0..n as i64)
            .map(|i| match i % 7 {
                0 => 0,
                1 => -1,
                2 => ((i * 2654435761) % 2001 - 1000) as i32,
                3 => i32::MAX - i as i32,
                4 => i32::MIN,
                _ => (i % 5) as i32 - 2,
            })
            .collect();
        for classes in [Classes::Single, Classes::Passes, Classes::OddCoordinates] {
            for contexts in [Contexts::Near, Contexts::Far] {
                let bytes = encode(&r, ext, classes, contexts);
                let mut back = vec![0; n];
                decode(&bytes, ext, classes, contexts, &mut back).unwrap();
                assert_eq!(back, r, "{classes:?} {contexts:?}");
            }
        }
    }

    #[test]
    fn small_thin_and_constant_blocks_round_trip() {
        for ext in [[1, 1, 1], [1, 1, 7], [2, 3, 1], [5, 1, 4], [4, 6, 5]] {
            let n = ext.iter().product();
            for r in [vec![0; n], vec![-3; n], noise(n, 40, n as u64)] {
                let bytes = encode(&r, ext, Classes::Passes, Contexts::Far);
                let mut back = vec![0; n];
                decode(&bytes, ext, Classes::Passes, Contexts::Far, &mut back).unwrap();
                assert_eq!(back, r, "{ext:?}");
            }
        }
    }

    #[test]
    fn estimate_is_within_a_percent_of_the_coding() {
        let ext = [8, 40, 50];
        for spread in [2u64, 9, 300, 100_000] {
            let r = noise(8 * 40 * 50, spread, spread);
            for classes in [Classes::Single, Classes::Passes] {
                let coded = encode(&r, ext, classes, Contexts::Near).len() as f64;
                let est = estimate(&r, ext, classes, Contexts::Near) as f64;
                assert!(
                    (est - coded).abs() <= 0.01 * coded + 16.0,
                    "spread {spread} {classes:?}: {est} vs {coded}"
                );
            }
        }
    }

    #[test]
    fn zeros_cost_almost_nothing() {
        let bytes = encode(
            &vec![0; 100_000],
            [1, 100, 1000],
            Classes::Single,
            Contexts::Near,
        );
        assert!(bytes.len() < 40, "{} bytes for 100k zeros", bytes.len());
    }

    #[test]
    fn damaged_payloads_give_errors_or_values_never_panics() {
        let ext = [4, 20, 30];
        let r = noise(2400, 60, 7);
        let bytes = encode(&r, ext, Classes::Single, Contexts::Near);
        let mut back = vec![0; 2400];
        for cut in 0..bytes.len() {
            let _ = decode(
                &bytes[..cut],
                ext,
                Classes::Single,
                Contexts::Near,
                &mut back,
            );
        }
        let mut s = 99u64;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let at = (s >> 33) as usize % b.len();
            b[at] ^= 1 << ((s >> 20) & 7);
            let _ = decode(&b, ext, Classes::Single, Contexts::Near, &mut back);
        }
        assert!(decode(&[], ext, Classes::Single, Contexts::Near, &mut back).is_err());
    }
}
