//! The rANS coder's contexts: which of a block's context slots (`class * BUCKETS + bucket`)
//! a point's symbol is coded in, from the point's position and its causal neighbours' codes
//! (docs/FORMAT.md, "rANS coder").

use super::super::context::{Classes, Contexts, Neighbours};
use super::tables::BUCKETS;

/// Codes above this add nothing more to a quiet point's wide window (whose buckets end at 4).
const WIDE_CAP: u32 = 4;

/// The codes of a block seen so far, and per row the running sums of the codes capped at
/// [`WIDE_CAP`] (so a window of a row sums in two reads).
pub(super) struct Context {
    codes: Neighbours<u32>,
    prefix: Neighbours<u32>,
    ext: [usize; 3],
    classes: Classes,
    contexts: Contexts,
}

impl Context {
    pub(super) fn new(ext: [usize; 3], classes: Classes, contexts: Contexts) -> Context {
        Context {
            codes: Neighbours::new(ext),
            prefix: Neighbours::new(ext),
            ext,
            classes,
            contexts,
        }
    }

    /// The buffer index of point (z, y, x).
    #[inline(always)]
    pub(super) fn at(&self, z: usize, y: usize, x: usize) -> usize {
        self.codes.at(z, y, x)
    }

    /// Records the code of point `i`; points of a row are set in order.
    #[inline(always)]
    pub(super) fn set(&mut self, i: usize, code: u32) {
        self.codes.k[i] = code;
        self.prefix.k[i] = self.prefix.k[i - 1] + code.min(WIDE_CAP);
    }

    /// The context slot of point (z, y, x) at index `i`.
    #[inline(always)]
    pub(super) fn slot(&self, z: usize, y: usize, x: usize, i: usize) -> usize {
        let a = self.activity(i);
        let b = if a == 0 {
            match self.wide(z, y, x) {
                0 => 0,
                1 => 1,
                2 | 3 => 2,
                _ => 3,
            }
        } else {
            (3 + bucket(a)).min(BUCKETS - 1)
        };
        class(self.classes, z, y, x) * BUCKETS + b
    }

    /// The activity around point `i` from its neighbours' codes: adjacent ones (west,
    /// north, previous slice, north-west, north-east) for [`Contexts::Near`]; for
    /// [`Contexts::Far`] those at distance two and four, which share the point's parities.
    #[inline(always)]
    fn activity(&self, i: usize) -> u64 {
        let z = |j: usize| self.codes.k[j] as u64;
        let (row, plane) = (self.codes.row, self.codes.plane);
        if self.contexts == Contexts::Near {
            let (w, n, u) = (z(i - 1), z(i - row), z(i - plane));
            2 * (w + n + u) + z(i - row - 1) + z(i - row + 1) + 2 * w.max(n).max(u)
        } else {
            2 * (z(i - 2) + z(i - 2 * row) + z(i - 2 * plane))
                + z(i - 2 * row - 2)
                + z(i - 2 * row + 2)
                + z(i - 4)
        }
    }

    /// Capped codes summed over a wider causal window: row y-1 from x-6 to x+6, row y-2
    /// from x-3 to x+3, the row itself from x-6 to x-1, and the previous slice's row y from
    /// x-3 to x+3 (each clipped to the block). It tells a quiet point in a sparse region
    /// from one near activity.
    #[inline(always)]
    fn wide(&self, z: usize, y: usize, x: usize) -> u32 {
        let last = self.ext[2] - 1;
        // Sum of row (zz, yy) over [x - before, min(x + after, last)].
        let row = |zz: usize, yy: usize, before: usize, after: usize| {
            let lo = self.at(zz, yy, x.saturating_sub(before));
            let hi = self.at(zz, yy, (x + after).min(last));
            self.prefix.k[hi] - self.prefix.k[lo - 1]
        };
        let mut sum = 0;
        if y >= 1 {
            sum += row(z, y - 1, 6, 6);
        }
        if y >= 2 {
            sum += row(z, y - 2, 3, 3);
        }
        if x >= 1 {
            let i = self.at(z, y, x);
            sum += self.prefix.k[i - 1] - self.prefix.k[self.at(z, y, x.saturating_sub(6)) - 1];
        }
        if z >= 1 {
            sum += row(z - 1, y, 3, 3);
        }
        sum
    }
}

/// The bucket of an activity: itself below 8, then quarter octaves.
#[inline(always)]
fn bucket(a: u64) -> usize {
    if a < 8 {
        a as usize
    } else {
        let o = 63 - a.leading_zeros() as usize;
        (8 + 4 * (o - 3) + ((a >> (o - 2)) & 3) as usize).min(BUCKETS - 1)
    }
}

/// The point's class. An interpolated block's points are told apart by their parity
/// pattern (which of z, y, x are odd: the pass that predicts them and what it predicts from)
/// and its coarse points (all even) by level (1, 2, and 3 or coarser): residual scales differ
/// between all of these. A Lorenzo block's points share one class.
#[inline(always)]
fn class(classes: Classes, z: usize, y: usize, x: usize) -> usize {
    if classes == Classes::Single {
        return 0;
    }
    let parity = (z & 1) << 2 | (y & 1) << 1 | (x & 1);
    if parity != 0 {
        return parity;
    }
    let level = (z | 8)
        .trailing_zeros()
        .min((y | 8).trailing_zeros())
        .min((x | 8).trailing_zeros());
    [0, 0, 8, 9][level as usize]
}
