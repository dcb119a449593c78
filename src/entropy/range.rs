//! A binary adaptive range coder (the carry-propagating design of LZMA's coder) and a plain
//! bit packer for bits that are not worth modelling.
//!
//! Probabilities are 16-bit estimates of a zero bit that move towards each coded bit by 1/32
//! of the distance. The decoder reads past the end of its input as zero bytes, so a damaged
//! stream decodes to wrong values (caught by the block checksum), never to a panic.

const PROB_BITS: u32 = 16;
const PROB_ONE: u32 = 1 << PROB_BITS;
const ADAPT_SHIFT: u32 = 5;
const TOP: u32 = 1 << 24;

/// An adaptive probability that the next bit is 0, in 1/65536 (it stays within
/// [31, 65505], so neither symbol ever gets probability zero).
#[derive(Debug, Clone, Copy)]
pub struct Prob(u16);

impl Default for Prob {
    fn default() -> Prob {
        Prob((PROB_ONE / 2) as u16)
    }
}

impl Prob {
    /// Moves towards the coded bit. Without a branch: the bits a coder sees are close to
    /// random, so a branch on them mispredicts often (the same arithmetic either way).
    #[inline(always)]
    fn update(&mut self, bit: u32) {
        let p = self.0 as u32;
        let one = 0u32.wrapping_sub(bit & 1);
        let up = (PROB_ONE - p) >> ADAPT_SHIFT;
        let down = p >> ADAPT_SHIFT;
        self.0 = (p + (up & !one) - (down & one)) as u16;
    }
}

pub struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::new(),
        }
    }

    #[inline(always)]
    pub fn encode(&mut self, p: &mut Prob, bit: u32) {
        let bound = (self.range >> PROB_BITS) * p.0 as u32;
        // bit 0: range = bound; bit 1: low += bound, range -= bound (branch-free).
        let one = 0u32.wrapping_sub(bit & 1);
        self.low += (bound & one) as u64;
        self.range = bound.wrapping_add(self.range.wrapping_sub(bound.wrapping_mul(2)) & one);
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

pub struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Decoder<'a> {
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            input,
            pos: 1, // the encoder's first byte is always 0
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | d.next_byte() as u32;
        }
        d
    }

    #[inline]
    fn next_byte(&mut self) -> u8 {
        let b = self.input.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    #[inline(always)]
    pub fn decode(&mut self, p: &mut Prob) -> u32 {
        let bound = (self.range >> PROB_BITS) * p.0 as u32;
        // code < bound: a 0 (range = bound); else a 1 (code and range less bound).
        let bit = (self.code >= bound) as u32;
        let one = 0u32.wrapping_sub(bit);
        self.code -= bound & one;
        self.range = bound.wrapping_add(self.range.wrapping_sub(bound.wrapping_mul(2)) & one);
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next_byte() as u32;
        }
        bit
    }
}

/// Where the bit-plane coder sends its modelled decisions: the range [`Encoder`], or a
/// [`CostMeter`] that only adds up what they would cost.
pub trait BitSink {
    fn encode(&mut self, p: &mut Prob, bit: u32);
}

impl BitSink for Encoder {
    #[inline]
    fn encode(&mut self, p: &mut Prob, bit: u32) {
        Encoder::encode(self, p, bit)
    }
}

/// `-log2((i + 0.5) / 4096)` in 1/2^16 bits for `i < 4096`: the cost of a decision whose
/// probability is `i` in 1/4096 steps.
fn cost_table() -> &'static [u32; 4096] {
    static TABLE: std::sync::OnceLock<[u32; 4096]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|i| (-((i as f64 + 0.5) / 4096.0).log2() * 65536.0).round() as u32)
    })
}

/// Adds up the cost of modelled decisions as the range coder would pay it (to within a
/// fraction of a percent), updating the probabilities the same way, without coding: how
/// the encoder sizes a predictor's trial on a block sample cheaply.
pub struct CostMeter {
    /// In 1/2^16 bits.
    cost: u64,
    table: &'static [u32; 4096],
}

impl Default for CostMeter {
    fn default() -> CostMeter {
        CostMeter {
            cost: 0,
            table: cost_table(),
        }
    }
}

impl CostMeter {
    /// The cost so far, in bytes (rounded up).
    pub fn bytes(&self) -> usize {
        (self.cost >> 16).div_ceil(8) as usize
    }
}

impl BitSink for CostMeter {
    #[inline]
    fn encode(&mut self, p: &mut Prob, bit: u32) {
        let p0 = p.0 as usize >> 4;
        let q = if bit == 0 { p0 } else { 4095 - p0 };
        self.cost += self.table[q] as u64;
        p.update(bit);
    }
}

/// Packs raw bits, least significant first.
#[derive(Default)]
pub struct BitWriter {
    acc: u64,
    fill: u32,
    out: Vec<u8>,
}

impl BitWriter {
    /// Appends the low `n` bits of `v` (`n <= 32`).
    #[inline]
    pub fn put(&mut self, v: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.acc |= ((v as u64) & ((1u64 << n) - 1)) << self.fill;
        self.fill += n;
        while self.fill >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.fill -= 8;
        }
    }

    /// Bytes written so far, a partial last byte counted.
    pub fn bytes(&self) -> usize {
        self.out.len() + self.fill.div_ceil(8) as usize
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.fill > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Reads what [`BitWriter`] wrote; past the end it reads zeros.
pub struct BitReader<'a> {
    input: &'a [u8],
    pos: usize,
    acc: u64,
    fill: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(input: &'a [u8]) -> BitReader<'a> {
        BitReader {
            input,
            pos: 0,
            acc: 0,
            fill: 0,
        }
    }

    /// Reads `n <= 32` bits.
    #[inline]
    pub fn get(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.fill < n {
            if let Some(b) = self.input.get(self.pos..self.pos + 8) {
                // Eight bytes at once; the bits of a byte only partly taken are the same
                // bits the next refill ORs in at the same place.
                let w = u64::from_le_bytes(b.try_into().expect("eight bytes"));
                let take = (64 - self.fill) / 8;
                self.acc |= w << self.fill;
                self.pos += take as usize;
                self.fill += 8 * take;
            }
        }
        while self.fill < n {
            let b = self.input.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            self.acc |= (b as u64) << self.fill;
            self.fill += 8;
        }
        let v = (self.acc & ((1u64 << n) - 1)) as u32;
        self.acc >>= n;
        self.fill -= n;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_bits_round_trip_and_compress() {
        let bits: Vec<u32> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) % 100 < 5) as u32)
            .collect();
        let mut e = Encoder::new();
        let mut p = Prob::default();
        for &b in &bits {
            e.encode(&mut p, b);
        }
        let bytes = e.finish();
        // Entropy of a 5% source is 0.286 bits per bit.
        assert!(
            bytes.len() * 8 < bits.len() * 32 / 100,
            "{} bytes",
            bytes.len()
        );
        let mut d = Decoder::new(&bytes);
        let mut p = Prob::default();
        for &b in &bits {
            assert_eq!(d.decode(&mut p), b);
        }
    }

    /// The branch-free update and coding steps give the arithmetic of the plain branches
    /// (the bytes of every range-coded chunk depend on it).
    #[test]
    fn branch_free_steps_match_the_plain_branches() {
        for p0 in 0..=u16::MAX {
            for bit in [0u32, 1] {
                let mut p = Prob(p0);
                p.update(bit);
                let want = if bit == 0 {
                    p0 + ((PROB_ONE - p0 as u32) >> ADAPT_SHIFT) as u16
                } else {
                    p0 - (p0 >> ADAPT_SHIFT)
                };
                assert_eq!(p.0, want, "p {p0} bit {bit}");
            }
        }
        // The coded bytes: the encoder beside the plain-branch step on its own fields.
        let bits: Vec<u32> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 9) % 7 / 5)
            .collect();
        let mut e = Encoder::new();
        let mut plain = Encoder::new();
        let (mut p, mut q) = (Prob::default(), Prob::default());
        for &bit in &bits {
            e.encode(&mut p, bit);
            let bound = (plain.range >> PROB_BITS) * q.0 as u32;
            if bit == 0 {
                plain.range = bound;
                q.0 += ((PROB_ONE - q.0 as u32) >> ADAPT_SHIFT) as u16;
            } else {
                plain.low += bound as u64;
                plain.range -= bound;
                q.0 -= q.0 >> ADAPT_SHIFT;
            }
            while plain.range < TOP {
                plain.range <<= 8;
                plain.shift_low();
            }
        }
        let bytes = e.finish();
        assert_eq!(bytes, plain.finish());
        let mut d = Decoder::new(&bytes);
        let mut p = Prob::default();
        assert!(bits.iter().all(|&b| d.decode(&mut p) == b));
    }

    #[test]
    fn raw_bits_round_trip() {
        let mut w = BitWriter::default();
        for i in 0..1000u32 {
            w.put(i * 37, i % 33);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for i in 0..1000u32 {
            let n = i % 33;
            let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            assert_eq!(r.get(n), (i * 37) & mask);
        }
    }

    #[test]
    fn decoder_survives_garbage() {
        let mut d = Decoder::new(&[0xFF, 0x12]);
        let mut p = Prob::default();
        for _ in 0..1000 {
            d.decode(&mut p);
        }
    }
}
