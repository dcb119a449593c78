//! What the context-modelled coders (the bit-plane range coder and the rANS coder) share:
//! how a block's points split into classes, and the plane counts of a point's causal
//! neighbours that select its statistics.

/// How a block's points are split into classes; the predictor that coded the block declares
/// it (`predict::registry`), the coder only follows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Classes {
    /// One class (Lorenzo, NGLR).
    Single,
    /// Interpolation one dimension at a time: the finest level's x, y and z passes, and the
    /// coarse levels.
    Passes,
    /// Multi-dimensional interpolation: finest-level points odd in one, two or three
    /// coordinates, and the coarse levels.
    OddCoordinates,
}

/// The class of point (z, y, x) in a block.
#[inline(always)]
pub(super) fn class_of(scheme: Classes, z: usize, y: usize, x: usize) -> usize {
    if scheme == Classes::Single {
        0
    } else if scheme == Classes::OddCoordinates {
        let odd = (z & 1) + (y & 1) + (x & 1);
        if odd == 0 {
            3
        } else {
            odd - 1
        }
    } else if x & 1 == 1 {
        2
    } else if y & 1 == 1 {
        1
    } else if z & 1 == 1 {
        0
    } else {
        3
    }
}

/// Which neighbours form the context of a plane count (the block directory's coder id tells).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contexts {
    /// The adjacent west, north and previous-slice neighbours (coder id 0).
    Near,
    /// Those and six at distance two or four that share the point's parities (coder id 2):
    /// `w2, n2, u2` at `x-2, y-2, z-2`, `nw2, ne2` at `(y-2, x-+2)`, `w4` at `x-4`.
    Far,
}

/// Padding of the plane-count buffer before and after the block along z, y and x, so every
/// neighbour lookup is in bounds and reads 0 outside the block.
const PAD_BEFORE: [usize; 3] = [2, 2, 4];
const PAD_AFTER: usize = 2;

/// What a coder keeps of each point of a block (plane counts, or codes), with a zero border
/// so every neighbour lookup is in bounds.
pub(super) struct Neighbours<T = u8> {
    pub(super) k: Vec<T>,
    pub(super) row: usize,
    pub(super) plane: usize,
}

impl<T: Copy + Default> Neighbours<T> {
    pub(super) fn new(ext: [usize; 3]) -> Neighbours<T> {
        let row = PAD_BEFORE[2] + ext[2] + PAD_AFTER;
        let plane = (PAD_BEFORE[1] + ext[1]) * row;
        Neighbours {
            k: vec![T::default(); (PAD_BEFORE[0] + ext[0]) * plane],
            row,
            plane,
        }
    }
    /// Index of grid point (z, y, x) in the padded buffer.
    #[inline(always)]
    pub(super) fn at(&self, z: usize, y: usize, x: usize) -> usize {
        (z + PAD_BEFORE[0]) * self.plane + (y + PAD_BEFORE[1]) * self.row + x + PAD_BEFORE[2]
    }
}

impl Neighbours<u8> {
    /// The context of the plane count at `i`, from its neighbours' plane counts (0..=124).
    #[inline(always)]
    pub(super) fn context(&self, i: usize, contexts: Contexts) -> usize {
        let k = |j: usize| self.k[j] as usize;
        let (w, n, u) = (k(i - 1), k(i - self.row), k(i - self.plane));
        let near = w + n + u + w.max(n).max(u);
        if contexts == Contexts::Near {
            return near;
        }
        let (w2, n2, u2) = (k(i - 2), k(i - 2 * self.row), k(i - 2 * self.plane));
        let (nw2, ne2) = (k(i - 2 * self.row - 2), k(i - 2 * self.row + 2));
        let w4 = k(i - 4);
        // Both terms are about 4 k for neighbours of k planes; each is at most 124.
        let far = (w2 + n2 + u2 + nw2 + ne2 + w4).div_ceil(2) + w2.max(n2).max(u2);
        (2 * far + near + 1) / 3
    }
}

/// The number of significant bits of `z` (0 for 0).
#[inline]
pub(super) fn planes_of(z: u32) -> u32 {
    32 - z.leading_zeros()
}
