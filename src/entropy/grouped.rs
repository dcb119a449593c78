//! The fast mode's coder: zigzag codes in groups of 8, each group stored at the bit width of
//! its largest code, the widths as Exp-Golomb codes of their change from group to group.
//!
//! Small groups follow the residuals' local scale closely (a group of 32, the packed coder's,
//! pays for its largest code 32 times), and neighbouring groups have similar widths, so a
//! width costs one to three bits instead of a byte. There is no coder state: decoding is bit
//! extraction, several times faster than the context-modelled coders, and on the benchmark's
//! Lorenzo residuals 2-15% above their order-0 entropy (packed: 20-120%; BENCHMARKS.md).
//!
//! Block payload for `n` codes in `G = ceil(n / 8)` groups (docs/FORMAT.md, "Grouped"):
//! - `W`, u32 little-endian: the width stream's length in bytes;
//! - the width stream: for each group `g`, `e = zigzag(w_g - w_{g-1})` (`w_{-1} = 0`,
//!   `0 <= w_g <= 32`) as an order-0 Exp-Golomb code: with `x = e + 1` and `k = floor(log2 x)`,
//!   `k` zero bits, a one bit, then the `k` bits of `x` below its leading one;
//! - the value stream: for each group in order, its codes (8, or what is left in the last
//!   group), each in `w_g` bits.
//!
//! Bits are written from the least significant bit of each byte up, a value's low bit first.
//! Each stream ends at the byte its last bit is in, its remaining bits zero.

use super::zigzag;
use crate::error::{ensure, Error, Result};

/// Codes a group holds.
pub const GROUP: usize = 8;

/// The bit width of a code (0 for 0).
#[inline(always)]
fn width_of(c: u32) -> u32 {
    32 - c.leading_zeros()
}

/// The Exp-Golomb code of the width change `prev -> w` (-32..=32, zigzagged) as the stream
/// holds it, and its length: with `x = e + 1` and `k = floor(log2 x)`, `k` zeros, a one, then
/// `x`'s `k` bits below its leading one, that is `(x's low bits << 1 | 1) << k` in `2k + 1` bits.
#[inline(always)]
fn change(w: u32, prev: u32) -> (u32, u32) {
    let x = zigzag::encode(w as i32 - prev as i32) + 1;
    let k = width_of(x) - 1;
    (((x & ((1 << k) - 1)) << 1 | 1) << k, 2 * k + 1)
}

/// Appends bits to a byte vector, low bits first. Fewer than 8 bits wait in `acc` between
/// writes: each write stores the whole 8-byte accumulator and keeps its complete bytes.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> BitWriter {
        BitWriter {
            out: Vec::with_capacity(bytes + 8),
            acc: 0,
            bits: 0,
        }
    }

    /// Writes the low `n` bits of `v` (`n <= 56`, `v < 2^n`).
    #[inline(always)]
    fn put(&mut self, v: u64, n: u32) {
        self.acc |= v << self.bits;
        self.bits += n;
        let len = self.out.len();
        let whole = self.bits / 8;
        self.out.extend_from_slice(&self.acc.to_le_bytes());
        self.out.truncate(len + whole as usize);
        self.acc = if whole == 8 {
            0
        } else {
            self.acc >> (8 * whole)
        };
        self.bits -= 8 * whole;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.bits > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Reads bits from a stream, low bits first; past its end it reads zeros, and [`Self::end`]
/// tells whether the reads went past it.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    pos: usize,
}

impl BitReader<'_> {
    /// The next 57 bits or more, unconsumed, at the reader's position.
    #[inline(always)]
    fn peek(&self) -> u64 {
        let at = self.pos / 8;
        let word = match self.bytes.get(at..at + 8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut b = [0u8; 8];
                let rest = self.bytes.get(at..).unwrap_or(&[]);
                b[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(b)
            }
        };
        word >> (self.pos % 8)
    }

    /// Whether the reads ended in the stream's last byte, its remaining bits zero.
    fn end(&self) -> bool {
        let used = self.pos.div_ceil(8);
        used == self.bytes.len()
            && (self.pos % 8 == 0 || self.bytes[used - 1] >> (self.pos % 8) == 0)
    }
}

/// How many codes of each width (index) one 64-bit read holds for sure (57 bits: the read
/// starts up to 7 bits into its first byte); a table, as a division per group cost more than
/// the rest of its decoding.
const PER_READ: [u8; 33] = {
    let mut t = [0u8; 33];
    let mut w = 1;
    while w <= 32 {
        t[w] = (57 / w) as u8;
        w += 1;
    }
    t
};

/// Reads `out.len()` codes of `w` bits and stores their residuals: as many codes from one
/// 64-bit read as its 57 sure bits hold (all 8 up to 7 bits wide).
#[inline(always)]
fn unpack(vs: &mut BitReader<'_>, w: u32, out: &mut [i32]) {
    if w == 0 {
        out.fill(0);
        return;
    }
    let mask = (1u64 << w) - 1;
    let take = |word: u64, out: &mut [i32]| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = zigzag::decode(((word >> (i as u32 * w)) & mask) as u32);
        }
    };
    // A whole group of codes up to 14 bits wide, the common case: one read of eight codes or
    // two of four (a third faster than reading as many as fit each time).
    if let Ok(group) = <&mut [i32; GROUP]>::try_from(&mut *out) {
        if w <= 7 {
            take(vs.peek(), group);
            vs.pos += 8 * w as usize;
            return;
        }
        if w <= 14 {
            for half in group.chunks_mut(4) {
                take(vs.peek(), half);
                vs.pos += 4 * w as usize;
            }
            return;
        }
    }
    for part in out.chunks_mut(PER_READ[w as usize] as usize) {
        take(vs.peek(), part);
        vs.pos += w as usize * part.len();
    }
}

/// The payload of a block of residuals `r` (block order).
pub fn encode(r: &[i32]) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { encode_avx2(r) };
    }
    encode_with(r)
}

/// [`encode_with`] compiled for AVX2 (the same integer operations, so the same bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn encode_avx2(r: &[i32]) -> Vec<u8> {
    encode_with(r)
}

#[inline(always)]
fn encode_with(r: &[i32]) -> Vec<u8> {
    let mut w_out = BitWriter::with_capacity(r.len() / GROUP + 8);
    let mut v_out = BitWriter::with_capacity(r.len() + 8);
    let mut prev = 0;
    for group in r.chunks(GROUP) {
        let mut codes = [0u32; GROUP];
        for (c, &v) in codes.iter_mut().zip(group) {
            *c = zigzag::encode(v);
        }
        let w = width_of(codes.iter().fold(0, |a, &c| a | c));
        let (code, len) = change(w, prev);
        w_out.put(code as u64, len);
        // Codes up to 14 bits wide in one or two writes of eight or four (`unpack`'s reads).
        let word = |codes: &[u32]| {
            let mut v = 0u64;
            for (i, &c) in codes.iter().enumerate() {
                v |= (c as u64) << (i as u32 * w);
            }
            v
        };
        if group.len() == GROUP && w <= 7 {
            v_out.put(word(&codes), 8 * w);
        } else if group.len() == GROUP && w <= 14 {
            v_out.put(word(&codes[..4]), 4 * w);
            v_out.put(word(&codes[4..]), 4 * w);
        } else if w > 0 {
            for &c in &codes[..group.len()] {
                v_out.put(c as u64, w);
            }
        }
        prev = w;
    }
    let (w_bytes, v_bytes) = (w_out.finish(), v_out.finish());
    let mut out = Vec::with_capacity(4 + w_bytes.len() + v_bytes.len());
    out.extend_from_slice(&(w_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&w_bytes);
    out.extend_from_slice(&v_bytes);
    out
}

/// The payload's length for `r` without writing it (what the encoder's trials compare).
pub fn encoded_len(r: &[i32]) -> usize {
    let (mut w_bits, mut v_bits, mut prev) = (0usize, 0usize, 0);
    for g in r.chunks(GROUP) {
        let w = width_of(g.iter().fold(0, |a, &v| a | zigzag::encode(v)));
        w_bits += change(w, prev).1 as usize;
        v_bits += w as usize * g.len();
        prev = w;
    }
    4 + w_bits.div_ceil(8) + v_bits.div_ceil(8)
}

/// Decodes a payload into `r` (length = block size).
pub fn decode(bytes: &[u8], r: &mut [i32]) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        return unsafe { decode_avx2(bytes, r) };
    }
    decode_with(bytes, r)
}

/// [`decode_with`] compiled for AVX2 (the same integer operations, so the same residuals).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn decode_avx2(bytes: &[u8], r: &mut [i32]) -> Result<()> {
    decode_with(bytes, r)
}

#[inline(always)]
fn decode_with(bytes: &[u8], r: &mut [i32]) -> Result<()> {
    let corrupt = |what: &str| Error::Corrupt(format!("grouped block: {what}"));
    ensure!(
        bytes.len() >= 4,
        corrupt("shorter than its width stream's length")
    );
    let w_len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    ensure!(
        w_len <= bytes.len() - 4,
        corrupt("width stream longer than the payload")
    );
    let (w_bytes, v_bytes) = bytes[4..].split_at(w_len);
    let mut ws = BitReader {
        bytes: w_bytes,
        pos: 0,
    };
    let mut vs = BitReader {
        bytes: v_bytes,
        pos: 0,
    };
    // The widths first (a stream read past its end reads zeros, which makes no valid code or
    // leaves the reader past the end: both refused), then the codes, whose stream length the
    // widths fix.
    let mut widths = Vec::with_capacity(r.len().div_ceil(GROUP));
    let (mut prev, mut bits) = (0u32, 0usize);
    for out in r.chunks(GROUP) {
        // Exp-Golomb: k zeros (k <= 6: a change of at most 32 either way), a one, k bits.
        let peek = ws.peek();
        let k = peek.trailing_zeros();
        ensure!(k <= 6, corrupt("width change out of range"));
        let x = (1 << k) | ((peek >> (k + 1)) as u32 & ((1 << k) - 1));
        ws.pos += 2 * k as usize + 1;
        let w = prev as i32 + zigzag::decode(x - 1);
        ensure!((0..=32).contains(&w), corrupt("group width out of range"));
        prev = w as u32;
        widths.push(prev as u8);
        bits += prev as usize * out.len();
    }
    ensure!(
        ws.end(),
        corrupt("width stream not ended by the codes, or padding bits set")
    );
    ensure!(
        bits.div_ceil(8) == v_bytes.len(),
        corrupt("value stream length does not match the widths")
    );
    for (out, &w) in r.chunks_mut(GROUP).zip(&widths) {
        unpack(&mut vs, w as u32, out);
    }
    ensure!(vs.end(), corrupt("padding bits set"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residuals(n: usize, seed: u64) -> Vec<i32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let scale = [0u32, 1, 3, 40, 1 << 12, 1 << 20][(i / 37) % 6];
                let v = (s % (2 * scale as u64 + 1)) as i64 - scale as i64;
                v as i32
            })
            .collect()
    }

    #[test]
    fn round_trip_any_length_and_width() {
        for n in [0usize, 1, 7, 8, 9, 31, 100, 1000, 4099] {
            let mut r = residuals(n, 0x9e37_79b9_7f4a_7c15 ^ n as u64);
            if n > 3 {
                r[1] = i32::MIN;
                r[2] = i32::MAX;
            }
            let bytes = encode(&r);
            assert_eq!(bytes.len(), encoded_len(&r), "n = {n}");
            let mut back = vec![7; n];
            decode(&bytes, &mut back).unwrap();
            assert_eq!(back, r, "n = {n}");
            // The plain build of the loops (what a CPU without AVX2 runs) agrees.
            assert_eq!(encode_with(&r), bytes, "n = {n}");
            let mut plain = vec![7; n];
            decode_with(&bytes, &mut plain).unwrap();
            assert_eq!(plain, r, "n = {n}");
        }
    }

    /// The documented layout, byte by byte, on a small block.
    #[test]
    fn layout_is_the_documented_one() {
        // Group 0: codes 0 1 2 0 0 0 0 3 (zigzag of 0 -1 1 0 0 0 0 -2), width 2; group 1:
        // one code 0, width 0.
        let r = [0, -1, 1, 0, 0, 0, 0, -2, 0];
        let bytes = encode(&r);
        // Width changes +2 (e = 4, x = 101b, k = 2: bits 0 0 1, then x's low bits 01 low bit
        // first: 1 0) and -2 (e = 3, x = 100b: 0 0 1 0 0), low bits first: 00110 00100.
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[4..6], &[0b1000_1100, 0b0000_0000]);
        // Values at width 2, low bit first: 00 10 01 00 | 00 00 00 11; the last group has none.
        assert_eq!(&bytes[6..], &[0b0010_0100, 0b1100_0000]);
        let mut back = [9; 9];
        decode(&bytes, &mut back).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        let r = residuals(300, 7);
        let bytes = encode(&r);
        let mut out = vec![0; 300];
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        // A width stream length past the payload, and a width change of more than 32.
        let mut bad = bytes.clone();
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bad, &mut out).is_err());
        let mut bad = bytes.clone();
        bad[4] = 0;
        bad[5] = 0;
        assert!(decode(&bad, &mut out).is_err());
        // Fewer codes than the payload holds.
        assert!(decode(&bytes, &mut out[..200]).is_err());
    }
}
