//! The rANS coder's frequency tables: how the encoder groups a block's contexts into tables
//! and sends them, and how the decoder reads them back (docs/FORMAT.md, "rANS blocks").
//!
//! Each class's context buckets are split into runs of adjacent buckets, one table per run.
//! The encoder starts from one run per used bucket and merges the neighbouring pair that
//! saves the most bits (table cost against the entropy a shared table adds) until no merge
//! saves anything, so a small or uniform block sends few tables and a large one many.

use super::super::range::{BitReader, BitWriter};
use crate::error::{ensure, Error, Result};

/// Symbols: codes 0..8, then four per plane count 4..=32.
pub(super) const ALPHABET: usize = 124;
/// Frequencies of a table sum to `1 << PREC`.
pub(super) const PREC: u32 = 11;
pub(super) const TOTAL: u32 = 1 << PREC;
/// Context buckets per class.
pub(super) const BUCKETS: usize = 48;
/// Point classes (see `class` in the coder): one for Lorenzo blocks; seven parity
/// patterns and three coarse levels for interpolated ones.
const CLASSES: usize = 10;
/// Runs (tables) a class may keep, so a block never has more than 255 tables.
const MAX_RUNS: usize = 25;
/// Contexts of a block: `class * BUCKETS + bucket`.
pub(super) const SLOTS: usize = CLASSES * BUCKETS;
/// The weight of a 5-bit table entry `q`: `round(16 * 2^((q - 1) / 2))`, 0 for an absent
/// symbol. Adjacent weights differ by a factor of sqrt 2, so a symbol's probability is
/// known to within 19% (about 0.01 bits per symbol of coding loss).
const WEIGHT: [u64; 32] = [
    0, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096, 5793,
    8192, 11585, 16384, 23170, 32768, 46341, 65536, 92682, 131072, 185364, 262144, 370728, 524288,
];

/// Symbol counts of one context or table.
pub(super) type Hist = [u32; ALPHABET];

/// The frequencies (summing to [`TOTAL`]) of a table with weights `q[s - lo]` for symbols
/// `lo..lo + q.len()`: each present symbol gets `max(1, floor(w * TOTAL / sum w))`, and the
/// difference to `TOTAL` goes to (or comes from) the most frequent symbols, lowest first.
fn normalize(lo: usize, q: &[u8], freq: &mut Hist) -> Result<()> {
    let sum: u64 = q.iter().map(|&v| WEIGHT[v as usize & 31]).sum();
    ensure!(
        sum > 0 && lo + q.len() <= ALPHABET,
        Error::Corrupt("rANS table without symbols or past the alphabet".into())
    );
    freq.fill(0);
    let mut total = 0u32;
    for (s, &v) in q.iter().enumerate() {
        let w = WEIGHT[v as usize & 31];
        if w > 0 {
            let f = ((w * TOTAL as u64 / sum) as u32).max(1);
            freq[lo + s] = f;
            total += f;
        }
    }
    while total != TOTAL {
        // The first most frequent symbol.
        let (m, &fm) = freq
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|&(_, f)| *f)
            .expect("alphabet is not empty");
        if total < TOTAL {
            freq[m] += TOTAL - total;
            total = TOTAL;
        } else {
            let take = (total - TOTAL).min(fm - 1);
            ensure!(
                take > 0,
                Error::Corrupt("rANS table cannot be normalized".into())
            );
            freq[m] -= take;
            total -= take;
        }
    }
    Ok(())
}

/// The symbols `counts` uses, `lo..hi` (empty at 0 when none).
fn used(counts: &Hist) -> (usize, usize) {
    let lo = counts.iter().position(|&c| c > 0).unwrap_or(0);
    let hi = counts.iter().rposition(|&c| c > 0).map_or(lo, |h| h + 1);
    (lo, hi)
}

/// The used symbol range of `counts` and its 5-bit weights.
fn quantize(counts: &Hist) -> (usize, Vec<u8>) {
    let (lo, hi) = used(counts);
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let q = counts[lo..hi]
        .iter()
        .map(|&c| match c {
            0 => 0,
            _ => (31.0 + 2.0 * (c as f64 / max).log2())
                .round()
                .clamp(1.0, 31.0) as u8,
        })
        .collect();
    (lo, q)
}

/// The bytes a table takes in the table section (first symbol, length, weights) plus its
/// run's end.
fn table_bytes(counts: &Hist) -> usize {
    let (lo, hi) = used(counts);
    3 + (5 * (hi - lo)).div_ceil(8)
}

/// `c log2 c`, from a table for small counts.
#[inline]
fn xlog2x(c: u32) -> f64 {
    static SMALL: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let small = SMALL.get_or_init(|| {
        (0..1024u32)
            .map(|c| {
                if c == 0 {
                    0.0
                } else {
                    c as f64 * (c as f64).log2()
                }
            })
            .collect()
    });
    match small.get(c as usize) {
        Some(&v) => v,
        None => c as f64 * (c as f64).log2(),
    }
}

/// Bits to code `counts` with a table of their own, the table included.
fn cost_bits(counts: &Hist) -> f64 {
    let (lo, hi) = used(counts);
    let (mut n, mut sum) = (0u32, [0.0; 4]);
    for quad in counts[lo..hi].chunks(4) {
        for (k, &c) in quad.iter().enumerate() {
            n += c;
            sum[k] += xlog2x(c);
        }
    }
    xlog2x(n) - (sum[0] + sum[1]) - (sum[2] + sum[3]) + 8.0 * table_bytes(counts) as f64
}

/// A block's (or a segment's) symbol counts per context, kept only for contexts it uses.
pub(super) struct Counts {
    index: Vec<u16>,
    hists: Vec<(usize, Hist)>,
}

impl Counts {
    pub(super) fn new() -> Counts {
        Counts {
            index: vec![u16::MAX; SLOTS],
            hists: Vec::new(),
        }
    }

    #[inline(always)]
    pub(super) fn add(&mut self, slot: usize, s: u32, n: u32) {
        let mut k = self.index[slot];
        if k == u16::MAX {
            k = self.hists.len() as u16;
            self.index[slot] = k;
            self.hists.push((slot, [0; ALPHABET]));
        }
        self.hists[k as usize].1[s as usize] += n;
    }

    /// Adds `other`'s counts to these.
    pub(super) fn absorb(&mut self, other: &Counts) {
        for (slot, h) in &other.hists {
            for (s, &n) in h.iter().enumerate().filter(|(_, &n)| n > 0) {
                self.add(*slot, s as u32, n);
            }
        }
    }
}

fn merged(a: &Hist, b: &Hist) -> Hist {
    let mut m = *a;
    for (x, y) in m.iter_mut().zip(b) {
        *x += y;
    }
    m
}

/// The encoder's grouping of a block's contexts: each class's runs of buckets (last bucket,
/// table), and the tables' counts.
pub(super) struct Layout {
    runs: [Vec<(usize, usize)>; CLASSES],
    tables: Vec<Hist>,
}

impl Layout {
    /// Groups the contexts' counts into runs of adjacent buckets, then the runs (of any
    /// class) into shared tables, merging while that saves bits.
    pub(super) fn fit(counts: &Counts) -> Layout {
        let mut used: Vec<&(usize, Hist)> = counts.hists.iter().collect();
        used.sort_unstable_by_key(|(slot, _)| *slot);
        let mut hists = Vec::new();
        let runs = std::array::from_fn(|c| {
            let class: Vec<(usize, &Hist)> = used
                .iter()
                .filter(|(slot, _)| slot / BUCKETS == c)
                .map(|(slot, h)| (slot % BUCKETS, h))
                .collect();
            fit_class(&class)
                .into_iter()
                .map(|(last, h)| {
                    hists.push(h);
                    (last, hists.len() - 1)
                })
                .collect()
        });
        let (table_of, tables) = cluster(hists);
        let runs = runs.map(|r: Vec<(usize, usize)>| {
            r.into_iter().map(|(last, k)| (last, table_of[k])).collect()
        });
        Layout { runs, tables }
    }

    /// For each slot, the number of its table (slots of unused classes: 0).
    pub(super) fn slot_tables(&self) -> [u8; SLOTS] {
        let mut map = [0u8; SLOTS];
        for (c, runs) in self.runs.iter().enumerate() {
            let mut first = 0;
            for &(last, t) in runs {
                map[c * BUCKETS + first..=c * BUCKETS + last].fill(t as u8);
                first = last + 1;
            }
        }
        map
    }

    /// Writes the table section and returns each table's frequencies and starts.
    pub(super) fn write(&self, out: &mut Vec<u8>) -> Vec<(Hist, Hist)> {
        out.push(self.tables.len() as u8);
        for runs in &self.runs {
            out.push(runs.len() as u8);
            for &(last, t) in runs {
                out.extend_from_slice(&[last as u8, t as u8]);
            }
        }
        let mut coded = Vec::new();
        for h in &self.tables {
            let (lo, q) = quantize(h);
            out.extend_from_slice(&[lo as u8, q.len() as u8]);
            let mut bits = BitWriter::default();
            for &v in &q {
                bits.put(v as u32, 5);
            }
            out.extend_from_slice(&bits.finish());
            let mut freq = [0; ALPHABET];
            normalize(lo, &q, &mut freq).expect("the encoder's weights normalize");
            let mut start = [0; ALPHABET];
            let mut acc = 0;
            for (s, f) in start.iter_mut().zip(&freq) {
                *s = acc;
                acc += f;
            }
            coded.push((freq, start));
        }
        coded
    }

    /// The bytes [`Layout::write`] and the symbols coded with its tables take.
    pub(super) fn coded_bytes(&self) -> f64 {
        let runs: usize = self.runs.iter().map(Vec::len).sum();
        let mut bytes = (1 + CLASSES + 2 * runs) as f64;
        let mut freq = [0; ALPHABET];
        for h in &self.tables {
            let (lo, q) = quantize(h);
            normalize(lo, &q, &mut freq).expect("the encoder's weights normalize");
            let bits: f64 = h
                .iter()
                .zip(&freq)
                .filter(|(&n, _)| n > 0)
                .map(|(&n, &f)| n as f64 * (PREC as f64 - (f as f64).log2()))
                .sum();
            bytes += table_bytes(h) as f64 + bits / 8.0;
        }
        bytes
    }
}

/// Groups counts into shared tables: in order of their mean symbol, neighbours merge while
/// that saves bits (see [`merge_adjacent`]). Returns each input's table and the tables'
/// counts, numbered in that order.
fn cluster(hists: Vec<Hist>) -> (Vec<usize>, Vec<Hist>) {
    let mean = |h: &Hist| {
        let (n, sum) = h.iter().enumerate().fold((0u64, 0u64), |(n, s), (k, &c)| {
            (n + c as u64, s + k as u64 * c as u64)
        });
        sum as f64 / n.max(1) as f64
    };
    let mut order: Vec<usize> = (0..hists.len()).collect();
    order.sort_by(|&a, &b| mean(&hists[a]).total_cmp(&mean(&hists[b])));
    let sorted: Vec<Hist> = order.iter().map(|&k| hists[k]).collect();
    let spans = merge_adjacent(sorted, usize::MAX);
    let mut table_of = vec![0; hists.len()];
    for (t, (first, last, _)) in spans.iter().enumerate() {
        for &k in &order[*first..=*last] {
            table_of[k] = t;
        }
    }
    (table_of, spans.into_iter().map(|(_, _, h)| h).collect())
}

/// Merges neighbours of `hists` (in their order): repeatedly the adjacent pair whose shared
/// table saves the most bits, while one saves any or more than `max` are left. Returns the
/// spans (first, last input) and their counts.
fn merge_adjacent(hists: Vec<Hist>, max: usize) -> Vec<(usize, usize, Hist)> {
    if hists.is_empty() {
        return Vec::new();
    }
    let mut spans: Vec<(usize, usize, Hist)> = hists
        .into_iter()
        .enumerate()
        .map(|(k, h)| (k, k, h))
        .collect();
    let mut cost: Vec<f64> = spans.iter().map(|s| cost_bits(&s.2)).collect();
    let gain = |spans: &[(usize, usize, Hist)], cost: &[f64], k: usize| {
        cost[k] + cost[k + 1] - cost_bits(&merged(&spans[k].2, &spans[k + 1].2))
    };
    let mut gains: Vec<f64> = (0..spans.len() - 1)
        .map(|k| gain(&spans, &cost, k))
        .collect();
    while let Some((k, &g)) = gains.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
        if g <= 0.0 && spans.len() <= max {
            break;
        }
        let next = spans.remove(k + 1);
        spans[k] = (spans[k].0, next.1, merged(&spans[k].2, &next.2));
        cost.remove(k + 1);
        cost[k] = cost_bits(&spans[k].2);
        gains.remove(k);
        for j in [k.wrapping_sub(1), k] {
            if j < gains.len() {
                gains[j] = gain(&spans, &cost, j);
            }
        }
    }
    spans
}

/// One class's runs from its used buckets `used` (ascending, with their counts): a run per
/// used bucket to start (empty buckets join the run before, or the first run), adjacent
/// runs merged while that saves bits (and at most [`MAX_RUNS`] are left). Returns each
/// run's last bucket and counts.
fn fit_class(used: &[(usize, &Hist)]) -> Vec<(usize, Hist)> {
    let spans = merge_adjacent(used.iter().map(|&(_, h)| *h).collect(), MAX_RUNS);
    spans
        .into_iter()
        .map(|(_, last, h)| {
            let end = used
                .get(last + 1)
                .map_or(BUCKETS - 1, |&(next, _)| next - 1);
            (end, h)
        })
        .collect()
}

/// A decoder's table: each symbol's frequency and start in one word (indexed by any byte,
/// so a lookup needs no bounds check), and the symbol of every slot, both inline, so a
/// lookup is two dependent loads from the table's address (3 KB: a block of 8 segments of
/// 255 tables allocates at most about 6 MB while it decodes).
pub(super) struct Table {
    /// `freq | start << 16` per symbol.
    symbol_freq_start: [u32; 256],
    symbol: [u8; TOTAL as usize],
}

impl Table {
    fn new(freq: &Hist) -> Table {
        let mut t = Table {
            symbol_freq_start: [0; 256],
            symbol: [0; TOTAL as usize],
        };
        let mut acc = 0usize;
        for (s, &f) in freq.iter().enumerate() {
            t.symbol_freq_start[s] = f | (acc as u32) << 16;
            t.symbol[acc..acc + f as usize].fill(s as u8);
            acc += f as usize;
        }
        t
    }

    /// The symbol of `slot` (below [`TOTAL`]), its frequency and start.
    #[inline(always)]
    pub(super) fn at(&self, slot: u32) -> (u32, u32, u32) {
        let s = self.symbol[(slot & (TOTAL - 1)) as usize];
        let fs = self.symbol_freq_start[s as usize];
        (s as u32, fs & 0xFFFF, fs >> 16)
    }
}

/// The placeholder table (one symbol) that contexts a segment does not use point at; a
/// valid stream never reads it.
pub(super) fn placeholder() -> Table {
    let mut freq = [0u32; ALPHABET];
    freq[0] = TOTAL;
    Table::new(&freq)
}

/// Reads one table section, appending its tables to `tables`: each slot's index into
/// `tables` (slots of classes the section does not use: 0, the placeholder) and the
/// section's length.
pub(super) fn read(bytes: &[u8], tables: &mut Vec<Table>) -> Result<(Vec<u16>, usize)> {
    let truncated = || Error::Truncated {
        what: "rANS tables",
    };
    let m = *bytes.first().ok_or_else(truncated)? as usize;
    let base = tables.len();
    let mut pos = 1;
    let mut map = vec![0u16; SLOTS];
    for c in 0..CLASSES {
        let runs = *bytes.get(pos).ok_or_else(truncated)? as usize;
        let list = bytes
            .get(pos + 1..pos + 1 + 2 * runs)
            .ok_or_else(truncated)?;
        pos += 1 + 2 * runs;
        let mut first = 0;
        for (k, run) in list.chunks_exact(2).enumerate() {
            let (last, t) = (run[0] as usize, run[1] as usize);
            let end_ok = if k + 1 == runs {
                last == BUCKETS - 1
            } else {
                last < BUCKETS - 1
            };
            ensure!(
                last >= first && end_ok && t < m,
                Error::Corrupt(format!("rANS table runs of class {c} out of order"))
            );
            map[c * BUCKETS + first..=c * BUCKETS + last].fill((base + t) as u16);
            first = last + 1;
        }
    }
    let mut freq = [0u32; ALPHABET];
    for _ in 0..m {
        let head = bytes.get(pos..pos + 2).ok_or_else(truncated)?;
        let (lo, len) = (head[0] as usize, head[1] as usize);
        let packed = bytes
            .get(pos + 2..pos + 2 + (5 * len).div_ceil(8))
            .ok_or_else(truncated)?;
        pos += 2 + packed.len();
        let mut bits = BitReader::new(packed);
        let q: Vec<u8> = (0..len).map(|_| bits.get(5) as u8).collect();
        normalize(lo, &q, &mut freq)?;
        tables.push(Table::new(&freq));
    }
    Ok((map, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_normalize_to_the_total_with_every_symbol_present() {
        let mut freq = [0; ALPHABET];
        for q in [
            vec![31],
            vec![1; 124],
            vec![31, 0, 1, 1, 1, 0, 5],
            vec![17; 60],
        ] {
            normalize(0, &q, &mut freq).unwrap();
            assert_eq!(freq.iter().sum::<u32>(), TOTAL);
            for (s, &v) in q.iter().enumerate() {
                assert_eq!(freq[s] > 0, v > 0, "{q:?}");
            }
        }
        assert!(normalize(0, &[0, 0], &mut freq).is_err());
        assert!(normalize(120, &[1; 5], &mut freq).is_err());
    }

    #[test]
    fn similar_contexts_share_a_table_and_different_ones_do_not() {
        let mut counts = Counts::new();
        // Buckets 0-2: the same distribution; bucket 9: a very different one.
        for b in 0..3 {
            counts.add(b, 0, 5000);
            counts.add(b, 1, 3000);
            counts.add(b, 2, 1000);
        }
        counts.add(9, 40, 9000);
        counts.add(9, 41, 8000);
        let layout = Layout::fit(&counts);
        assert_eq!(layout.runs[0].len(), 2, "{:?}", layout.runs[0]);
        assert_eq!(layout.tables.len(), 2);
        let map = layout.slot_tables();
        assert_eq!(map[0], map[2]);
        assert_ne!(map[2], map[9]);
        let mut out = Vec::new();
        layout.write(&mut out);
        let mut tables = vec![placeholder()];
        let (read_map, len) = read(&out, &mut tables).unwrap();
        assert_eq!(len, out.len());
        assert_eq!(tables.len(), 3);
        // The decoder numbers tables from 1 (0 is the placeholder).
        for s in 0..BUCKETS {
            assert_eq!(read_map[s], map[s] as u16 + 1);
        }
    }
}
