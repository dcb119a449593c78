//! The user's parameters and their `cd_values` form (the table in README is the reference).
//!
//! Word layout (32-bit words):
//!
//! | word | meaning |
//! |------|---------|
//! | 0 | cd_values layout version, 1 |
//! | 1 | error mode: 0 abs, 1 rel (of the chunk's value range), 2 NRMSE target, 3 PSNR target (dB) |
//! | 2, 3 | the bound as an IEEE f64: high 32 bits, then low 32 bits |
//! | 4 | entropy stage: 0 range coder (default), 1 lz4 fast path, 2 packed (the GPU's coder), 3 rANS (optional word) |
//! | 5 | bits 0-7 predictor: 0 auto (per block: Lorenzo, plain or with fitted weights, or an interpolation), 1 Lorenzo, 2 interpolation, 3 NGLR, 4 auto with NGLR, 5 auto with a linear bias, 6 wavelet; bits 8-15 NGLR training budget (units of 1024 sample points, 0 = default 32); bits 16-31 zero (optional word) |
//! | 6 | bits 0-7 enhancer (NeurLZ): 0 off, 1 strict, 2 relaxed (bound 2x), 3 strict cross-field, 4 relaxed cross-field; bits 8-15 enhancer training budget (units of 20 steps, 0 = default); bit 16 keep the enhancer whenever it lowers the error (skip the rate check); bits 17-31 zero (optional word) |
//! | 7 | backend: 0 auto, 1 CPU, 2 CUDA (optional word) |
//! | 8.. | appended by `set_local`: element type (1 f32, 2 f64), rank, chunk dims, then optionally `1` and the dataset's fill value's bits (high word, low word): the value HDF5 pads edge chunks with |

use crate::error::{ensure, Error, Result};

/// Version of the `cd_values` layout written in word 0.
pub const CD_VERSION: u32 = 1;
/// Number of words a user may give (4 are required, the rest have defaults).
pub const USER_WORDS: usize = 8;
/// Words the user must give: version, mode, bound high, bound low.
pub const REQUIRED_WORDS: usize = 4;
/// Largest rank a chunk may have (HDF5's own limit).
pub const MAX_RANK: usize = 32;

/// How the error bound is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// `|x - x'| <= bound` for every value.
    Abs = 0,
    /// `|x - x'| <= bound * (max - min)` of the chunk's finite values.
    Rel = 1,
    /// Root-mean-square error over the chunk's finite values divided by their range at most
    /// `bound`.
    Nrmse = 2,
    /// Peak signal-to-noise ratio `20 log10(range / RMSE)` at least `bound` dB.
    Psnr = 3,
}

/// The stage that turns residuals into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coder {
    /// Context-adaptive binary range coding of the residuals' bit-planes (best ratio).
    Range = 0,
    /// Bit-plane transposition followed by LZ4 (fast on the CPU).
    Lz4 = 1,
    /// A fixed bit width per group of 32 residuals (the GPU's coder: every group coded at
    /// once; a larger file than the range coder gives).
    Packed = 2,
    /// The range coder's model coded by table-driven rANS: within a percent of its size at
    /// several times its speed.
    Rans = 3,
    /// Groups of 8 residuals at their own bit width, the widths coded as their changes: the
    /// fast mode's coder (with plain Lorenzo), about a fifth smaller than packed at 60-90% of
    /// its speed through h5py.
    Grouped = 4,
}

/// Which predictor the encoder may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictorChoice {
    /// The encoder picks per block (Lorenzo, plain or with fitted weights, or an
    /// interpolation, whichever codes smaller).
    Auto = 0,
    /// Integer 3D Lorenzo prediction.
    Lorenzo = 1,
    /// Multilevel cubic interpolation, one dimension at a time or from all dimensions at
    /// once, per block.
    Interp = 2,
    /// Lorenzo plus the learned NGLR bias on every block (weights trained on the chunk).
    Nglr = 3,
    /// Like `Auto`, with NGLR as one more candidate per block: the smallest output, at several
    /// times the encode and decode time (docs/NGLR.md). The weights are kept only when the
    /// blocks that use them save more than they cost, so it never codes larger than `Auto`.
    AutoNglr = 4,
    /// Like `Auto`, with one more candidate per block: Lorenzo plus a linear bias (an NGLR
    /// network with only its direct path) fitted in closed form. Smaller than `Auto` at
    /// about half its encode speed; the weights are kept only when they pay.
    AutoLinear = 5,
    /// The wavelet path (`docs/FORMAT.md`, "Wavelet layout") for every chunk it can code:
    /// finite values under an absolute or relative bound, not an HDF5 edge chunk; `Auto`
    /// for the others.
    Wavelet = 6,
}

impl PredictorChoice {
    /// The choice a `cd_values` predictor word (bits 0-7) names, if any.
    pub fn from_word(word: u32) -> Option<PredictorChoice> {
        Some(match word {
            0 => PredictorChoice::Auto,
            1 => PredictorChoice::Lorenzo,
            2 => PredictorChoice::Interp,
            3 => PredictorChoice::Nglr,
            4 => PredictorChoice::AutoNglr,
            5 => PredictorChoice::AutoLinear,
            6 => PredictorChoice::Wavelet,
            _ => return None,
        })
    }
}

/// Default NGLR training budget, in units of 1024 sample points.
pub const NGLR_DEFAULT_BUDGET: u8 = 32;

/// The NeurLZ enhancer (`docs/NEURLZ.md`): a small CNN trained on the chunk that predicts
/// and adds back the reconstruction error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enhancer {
    /// No enhancer.
    Off = 0,
    /// Every value within the bound: points the network would push out are listed and left
    /// uncorrected.
    Strict = 1,
    /// Every value within twice the bound; the correction is regulated and nothing is listed.
    Relaxed = 2,
    /// Strict, and the leading dimension holds fields of one grid: each field's correction
    /// sees every field.
    StrictCross = 3,
    /// Relaxed with cross-field inputs.
    RelaxedCross = 4,
}

impl Enhancer {
    /// The pointwise bound holds as given (not doubled).
    pub fn is_strict(self) -> bool {
        matches!(
            self,
            Enhancer::Off | Enhancer::Strict | Enhancer::StrictCross
        )
    }
    /// The leading dimension is read as fields.
    pub fn is_cross(self) -> bool {
        matches!(self, Enhancer::StrictCross | Enhancer::RelaxedCross)
    }
}

/// Default enhancer training budget, in units of 20 optimizer steps.
pub const ENHANCER_DEFAULT_BUDGET: u8 = 16;

/// Where the work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The GPU when one is present and worth it, else the CPU.
    Auto = 0,
    /// Always the CPU.
    Cpu = 1,
    /// The GPU; falls back to the CPU (with a log message) when none is usable.
    Cuda = 2,
}

/// Floating-point element type of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32 = 1,
    F64 = 2,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
    pub fn from_code(code: u32) -> Result<DType> {
        match code {
            1 => Ok(DType::F32),
            2 => Ok(DType::F64),
            _ => Err(Error::Unsupported(format!(
                "element type code {code} (1 = f32, 2 = f64)"
            ))),
        }
    }
}

/// Element type and shape of a chunk: what `set_local` appends to `cd_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub dtype: DType,
    /// Chunk dimensions, C order (first slowest).
    pub shape: Vec<usize>,
    /// The bits of the value HDF5 pads edge chunks with (the dataset's fill value), when the
    /// chunk comes from an HDF5 dataset: trailing slabs holding only it (or zeros) are then
    /// left out of the range and error a bound is taken over (`crate::region`).
    pub padding: Option<u64>,
}

impl ChunkInfo {
    pub fn new(dtype: DType, shape: &[usize]) -> Result<ChunkInfo> {
        ensure!(
            !shape.is_empty() && shape.len() <= MAX_RANK,
            Error::Unsupported(format!("rank {} (1..={MAX_RANK})", shape.len()))
        );
        ensure!(
            shape.iter().all(|&d| d > 0),
            Error::Unsupported(format!("chunk shape {shape:?} has a zero dimension"))
        );
        let info = ChunkInfo {
            dtype,
            shape: shape.to_vec(),
            padding: None,
        };
        info.byte_len()?;
        Ok(info)
    }

    /// Number of elements, or an error when it overflows.
    pub fn len(&self) -> Result<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::Unsupported(format!("chunk shape {:?} overflows", self.shape)))
    }

    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// The chunk of an HDF5 dataset whose fill value has the bits `fill` (an `f32`'s in the
    /// low 32 bits).
    pub fn with_padding(mut self, fill: u64) -> ChunkInfo {
        self.padding = Some(fill);
        self
    }

    /// Size of the chunk in bytes.
    pub fn byte_len(&self) -> Result<usize> {
        self.len()?
            .checked_mul(self.dtype.size())
            .ok_or_else(|| Error::Unsupported(format!("chunk shape {:?} overflows", self.shape)))
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub mode: ErrorMode,
    pub bound: f64,
    pub coder: Coder,
    pub predictor: PredictorChoice,
    /// NGLR training budget in units of 1024 sample points (0 = [`NGLR_DEFAULT_BUDGET`]).
    pub nglr_budget: u8,
    /// The NeurLZ enhancer.
    pub enhancer: Enhancer,
    /// Enhancer training budget in units of 20 steps (0 = [`ENHANCER_DEFAULT_BUDGET`]).
    pub enhancer_budget: u8,
    /// Keep the enhancer whenever it lowers the error, even when it costs more bits than the
    /// distortion it removes is worth.
    pub enhancer_force: bool,
    pub backend: Backend,
}

impl Params {
    /// Absolute bound with every option at its default.
    pub fn abs(bound: f64) -> Params {
        Params::new(ErrorMode::Abs, bound)
    }
    /// Bound relative to the chunk's value range, defaults otherwise.
    pub fn rel(bound: f64) -> Params {
        Params::new(ErrorMode::Rel, bound)
    }
    pub fn new(mode: ErrorMode, bound: f64) -> Params {
        Params {
            mode,
            bound,
            coder: Coder::Range,
            predictor: PredictorChoice::Auto,
            nglr_budget: 0,
            enhancer: Enhancer::Off,
            enhancer_budget: 0,
            enhancer_force: false,
            backend: Backend::Auto,
        }
    }
    pub fn with_coder(mut self, coder: Coder) -> Params {
        self.coder = coder;
        self
    }
    pub fn with_predictor(mut self, predictor: PredictorChoice) -> Params {
        self.predictor = predictor;
        self
    }
    /// Sets the NGLR training budget (units of 1024 sample points, 0 = default).
    pub fn with_nglr_budget(mut self, budget: u8) -> Params {
        self.nglr_budget = budget;
        self
    }
    /// Turns the NeurLZ enhancer on (or off).
    pub fn with_enhancer(mut self, enhancer: Enhancer) -> Params {
        self.enhancer = enhancer;
        self
    }
    /// Sets the enhancer training budget (units of 20 steps, 0 = default).
    pub fn with_enhancer_budget(mut self, budget: u8) -> Params {
        self.enhancer_budget = budget;
        self
    }
    /// Keeps the enhancer whenever it lowers the error (no rate check).
    pub fn with_enhancer_force(mut self, force: bool) -> Params {
        self.enhancer_force = force;
        self
    }
    /// Optimizer steps the enhancer's training may take.
    pub fn enhancer_steps(&self) -> usize {
        let b = if self.enhancer_budget == 0 {
            ENHANCER_DEFAULT_BUDGET
        } else {
            self.enhancer_budget
        };
        b as usize * 20
    }
    /// Training sample points NGLR may use.
    pub fn nglr_samples(&self) -> usize {
        let b = if self.nglr_budget == 0 {
            NGLR_DEFAULT_BUDGET
        } else {
            self.nglr_budget
        };
        b as usize * 1024
    }

    /// Checks the bound against its mode.
    pub fn validate(&self) -> Result<()> {
        let b = self.bound;
        ensure!(
            b.is_finite(),
            Error::BadParams(format!("bound {b} is not finite"))
        );
        match self.mode {
            ErrorMode::Abs | ErrorMode::Rel => ensure!(
                b > 0.0,
                Error::BadParams(format!("{:?} bound {b} must be > 0", self.mode))
            ),
            ErrorMode::Nrmse => ensure!(
                b > 0.0 && b <= 1.0,
                Error::BadParams(format!("NRMSE target {b} must be in (0, 1]"))
            ),
            ErrorMode::Psnr => ensure!(
                b > 0.0 && b <= 400.0,
                Error::BadParams(format!("PSNR target {b} dB must be in (0, 400]"))
            ),
        }
        Ok(())
    }

    /// Parses the user's words (the first `USER_WORDS` when `set_local` already appended more).
    pub fn from_cd_values(cd: &[u32]) -> Result<Params> {
        ensure!(
            cd.len() >= REQUIRED_WORDS,
            Error::BadParams(format!(
                "{} cd_values given, at least {REQUIRED_WORDS} needed (version, mode, bound high word, bound low word)",
                cd.len()
            ))
        );
        ensure!(
            cd[0] == CD_VERSION,
            Error::BadParams(format!(
                "cd_values[0] (layout version) is {}, this build reads {CD_VERSION}",
                cd[0]
            ))
        );
        let mode = match cd[1] {
            0 => ErrorMode::Abs,
            1 => ErrorMode::Rel,
            2 => ErrorMode::Nrmse,
            3 => ErrorMode::Psnr,
            m => {
                return Err(Error::BadParams(format!(
                    "cd_values[1] (error mode) is {m}: 0 abs, 1 rel, 2 nrmse, 3 psnr"
                )))
            }
        };
        let bound = words_to_f64(cd[2], cd[3]);
        let word = |i: usize| cd.get(i).copied().unwrap_or(0);
        let coder = match word(4) {
            0 => Coder::Range,
            1 => Coder::Lz4,
            2 => Coder::Packed,
            3 => Coder::Rans,
            4 => Coder::Grouped,
            c => {
                return Err(Error::BadParams(format!(
                    "cd_values[4] (coder) is {c}: 0 range, 1 lz4, 2 packed, 3 rans, 4 grouped"
                )))
            }
        };
        let p = word(5) & 0xFF;
        let predictor = PredictorChoice::from_word(p).ok_or_else(|| {
            Error::BadParams(format!(
                "cd_values[5] (predictor) is {p}: 0 auto, 1 lorenzo, 2 interp, 3 nglr, 4 auto with nglr, 5 auto with a linear bias, 6 wavelet"
            ))
        })?;
        if word(5) >> 16 != 0 {
            return Err(Error::BadParams(format!(
                "cd_values[5] is {:#x}: bits 16-31 are reserved (zero)",
                word(5)
            )));
        }
        let nglr_budget = (word(5) >> 8) as u8;
        let enhancer = match word(6) & 0xFF {
            0 => Enhancer::Off,
            1 => Enhancer::Strict,
            2 => Enhancer::Relaxed,
            3 => Enhancer::StrictCross,
            4 => Enhancer::RelaxedCross,
            e => {
                return Err(Error::BadParams(format!(
                    "cd_values[6] (enhancer) is {e}: 0 off, 1 strict, 2 relaxed, 3 strict cross-field, 4 relaxed cross-field"
                )))
            }
        };
        if word(6) >> 17 != 0 {
            return Err(Error::BadParams(format!(
                "cd_values[6] is {:#x}: bits 17-31 are reserved (zero)",
                word(6)
            )));
        }
        let enhancer_budget = (word(6) >> 8) as u8;
        let enhancer_force = word(6) >> 16 & 1 == 1;
        let backend = match word(7) {
            0 => Backend::Auto,
            1 => Backend::Cpu,
            2 => Backend::Cuda,
            b => {
                return Err(Error::BadParams(format!(
                    "cd_values[7] (backend) is {b}: 0 auto, 1 cpu, 2 cuda"
                )))
            }
        };
        let p = Params {
            mode,
            bound,
            coder,
            predictor,
            nglr_budget,
            enhancer,
            enhancer_budget,
            enhancer_force,
            backend,
        };
        p.validate()?;
        Ok(p)
    }

    /// The full user words (always `USER_WORDS` long).
    pub fn to_cd_values(&self) -> Vec<u32> {
        let (hi, lo) = f64_to_words(self.bound);
        vec![
            CD_VERSION,
            self.mode as u32,
            hi,
            lo,
            self.coder as u32,
            self.predictor as u32 | (self.nglr_budget as u32) << 8,
            self.enhancer as u32
                | (self.enhancer_budget as u32) << 8
                | (self.enhancer_force as u32) << 16,
            self.backend as u32,
        ]
    }
}

/// Marks the padding words after the chunk dimensions (flag `1`, then the fill value's bits).
const PADDING_FLAG: u32 = 1;

/// The words `set_local` stores: the user's words (defaults filled in) then the chunk's
/// element type, rank and dimensions, and the padding value when there is one.
pub fn local_cd_values(params: &Params, chunk: &ChunkInfo) -> Result<Vec<u32>> {
    let mut cd = params.to_cd_values();
    cd.push(chunk.dtype as u32);
    cd.push(chunk.shape.len() as u32);
    for &d in &chunk.shape {
        let d = u32::try_from(d)
            .map_err(|_| Error::Unsupported(format!("chunk dimension {d} exceeds 2^32-1")))?;
        cd.push(d);
    }
    if let Some(fill) = chunk.padding {
        cd.extend([PADDING_FLAG, (fill >> 32) as u32, fill as u32]);
    }
    Ok(cd)
}

/// Parses the full `set_local` form back into the parameters and the chunk description.
pub fn parse_local_cd_values(cd: &[u32]) -> Result<(Params, ChunkInfo)> {
    let params = Params::from_cd_values(cd)?;
    ensure!(
        cd.len() >= USER_WORDS + 2,
        Error::BadParams(format!(
            "{} cd_values: the chunk description appended by set_local is missing",
            cd.len()
        ))
    );
    let dtype = DType::from_code(cd[USER_WORDS])?;
    let rank = cd[USER_WORDS + 1] as usize;
    let dims_end = USER_WORDS + 2 + rank;
    ensure!(
        (1..=MAX_RANK).contains(&rank) && (cd.len() == dims_end || cd.len() == dims_end + 3),
        Error::BadParams(format!(
            "cd_values declare rank {rank} but hold {} words",
            cd.len()
        ))
    );
    let shape: Vec<usize> = cd[USER_WORDS + 2..dims_end]
        .iter()
        .map(|&d| d as usize)
        .collect();
    let mut chunk = ChunkInfo::new(dtype, &shape)?;
    if let [flag, hi, lo] = cd[dims_end..] {
        ensure!(
            flag == PADDING_FLAG,
            Error::BadParams(format!(
                "cd_values[{dims_end}] (padding flag) is {flag}, expected {PADDING_FLAG}"
            ))
        );
        let fill = (hi as u64) << 32 | lo as u64;
        ensure!(
            dtype == DType::F64 || hi == 0,
            Error::BadParams("the fill value's bits are wider than an f32".into())
        );
        chunk = chunk.with_padding(fill);
    }
    Ok((params, chunk))
}

/// Splits an f64 into (high word, low word), the order used in `cd_values`.
pub fn f64_to_words(v: f64) -> (u32, u32) {
    let bits = v.to_bits();
    ((bits >> 32) as u32, bits as u32)
}

/// Joins (high word, low word) back into an f64.
pub fn words_to_f64(hi: u32, lo: u32) -> f64 {
    f64::from_bits(((hi as u64) << 32) | lo as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for v in [1e-3, 0.1, 123.456, f64::MIN_POSITIVE] {
            let (h, l) = f64_to_words(v);
            assert_eq!(words_to_f64(h, l), v);
        }
        // 1e-3 = 0x3F50624DD2F1A9FC: high word first.
        assert_eq!(f64_to_words(1e-3), (0x3F50624D, 0xD2F1A9FC));
    }

    #[test]
    fn minimal_and_full_forms() {
        let (h, l) = f64_to_words(0.5);
        let p = Params::from_cd_values(&[1, 0, h, l]).unwrap();
        assert_eq!(p, Params::abs(0.5));
        let chunk = ChunkInfo::new(DType::F64, &[4, 5, 6]).unwrap();
        let cd = local_cd_values(&p, &chunk).unwrap();
        assert_eq!(cd.len(), 8 + 2 + 3);
        assert_eq!(parse_local_cd_values(&cd).unwrap(), (p, chunk.clone()));
        let padded = chunk.with_padding(1.5f64.to_bits());
        let cd = local_cd_values(&p, &padded).unwrap();
        assert_eq!(cd.len(), 8 + 2 + 3 + 3);
        assert_eq!(parse_local_cd_values(&cd).unwrap(), (p, padded));
        let mut bad = cd.clone();
        bad[13] = 2;
        let e = parse_local_cd_values(&bad).unwrap_err().to_string();
        assert!(e.contains("padding flag"), "{e}");
        assert!(parse_local_cd_values(&cd[..15]).is_err());
    }

    #[test]
    fn rejects_bad_words() {
        let (h, l) = f64_to_words(1e-3);
        let msg = |cd: &[u32]| Params::from_cd_values(cd).unwrap_err().to_string();
        assert!(msg(&[1, 0, h]).contains("at least 4"));
        assert!(msg(&[2, 0, h, l]).contains("layout version"));
        assert!(msg(&[1, 9, h, l]).contains("error mode"));
        assert!(msg(&[1, 0, h, l, 7]).contains("coder"));
        assert!(msg(&[1, 0, h, l, 0, 7]).contains("predictor"));
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 6]).unwrap();
        assert_eq!(p.predictor, PredictorChoice::Wavelet);
        assert_eq!(p.to_cd_values()[5], 6);
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 4]).unwrap();
        assert_eq!(p.predictor, PredictorChoice::AutoNglr);
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 5]).unwrap();
        assert_eq!(p.predictor, PredictorChoice::AutoLinear);
        assert_eq!(p.to_cd_values()[5], 5);
        assert!(msg(&[1, 0, h, l, 0, 1 << 16]).contains("reserved"));
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 3 | 40 << 8]).unwrap();
        assert_eq!(
            (p.predictor, p.nglr_samples()),
            (PredictorChoice::Nglr, 40 * 1024)
        );
        assert_eq!(p.to_cd_values()[5], 3 | 40 << 8);
        assert!(msg(&[1, 0, h, l, 0, 0, 5]).contains("enhancer"));
        assert!(msg(&[1, 0, h, l, 0, 0, 1 << 17]).contains("reserved"));
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 0, 1 | 1 << 16]).unwrap();
        assert!(p.enhancer_force);
        assert_eq!(p.to_cd_values()[6], 1 | 1 << 16);
        let p = Params::from_cd_values(&[1, 0, h, l, 0, 0, 4 | 3 << 8]).unwrap();
        assert_eq!(
            (p.enhancer, p.enhancer_steps()),
            (Enhancer::RelaxedCross, 60)
        );
        assert_eq!(p.to_cd_values()[6], 4 | 3 << 8);
        let (nh, nl) = f64_to_words(-1.0);
        assert!(msg(&[1, 0, nh, nl]).contains("must be > 0"));
        let (nh, nl) = f64_to_words(f64::NAN);
        assert!(msg(&[1, 1, nh, nl]).contains("not finite"));
        let (nh, nl) = f64_to_words(2.0);
        assert!(msg(&[1, 2, nh, nl]).contains("NRMSE"));
    }
}
