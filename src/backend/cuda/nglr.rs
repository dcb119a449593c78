//! NGLR on the GPU.
//!
//! - The network fit (`kernels/nglr_train.cu`), encode only: the Adam phase of [`train::fit`]
//!   (same starting weights, the same sample orders, loss and schedule) in one kernel launch,
//!   a block that keeps the weights in shared memory. The samples go up once, the weights come
//!   back once. Float results may differ from the CPU's in the last bits; the quantized
//!   network is what the encoder stores and codes with.
//! - The prediction (`kernels/nglr.cu`), decoding and encoding: every NGLR block of a chunk at
//!   once, a thread block each walking its block's wavefronts. Integer arithmetic on the stored
//!   model, and the encoder's bound check in the CPU's IEEE order, so the reconstruction, codes
//!   and escapes are the CPU's ([`crate::predict::nglr`]) bit for bit.

use super::launch::Arg;
use super::{block_table, guard, Cuda};
use crate::backend::{offload, Stage};
use crate::error::{ensure, Error, Result};
use crate::field::Block;
use crate::nn::infer::{Net, INPUTS, MAX_HIDDEN};
use crate::nn::train::{self, AdamProblem, Config};
use crate::nn::weights::Model;
use crate::nn::ADAM;
use crate::params::Backend;
use crate::predict::nglr::Nglr;
use crate::predict::{BlockEncoder, Predictor};
use crate::quant::Grid;

/// How an encoder codes a chunk's points (`predict::BlockEncoder`'s settings).
#[derive(Debug, Clone, Copy)]
pub struct Coding {
    pub grid: Grid,
    /// The pointwise bound.
    pub eb: f64,
    /// f32 data: reconstructions are checked as f32 too.
    pub single: bool,
    /// Feedback step (odd, >= 1).
    pub m: i64,
}

/// What [`Cuda::nglr_encode`] computes, on the CPU: `model` codes `blocks` (laid out one after
/// another) as [`Nglr`]'s `encode` does each, `q` receiving the reconstruction and `escaped`
/// the escapes it adds; returns the residual codes. The reference the GPU encoder is held to.
pub fn encode_on_cpu(
    model: &Nglr,
    blocks: &[Block],
    coding: &Coding,
    x: &[f64],
    q: &mut [i32],
    escaped: &mut [bool],
) -> Vec<i32> {
    let mut codes = vec![0; q.len()];
    let mut at = 0;
    for b in blocks {
        let r = at..at + b.len();
        let mut blk = BlockEncoder {
            x: &x[r.clone()],
            escaped: escaped[r.clone()].to_vec(),
            grid: coding.grid,
            eb: coding.eb,
            single: coding.single,
            m: coding.m,
        };
        model.encode(&mut blk, &mut q[r.clone()], b.ext, &mut codes[r.clone()]);
        escaped[r].copy_from_slice(&blk.escaped);
        at += b.len();
    }
    codes
}

/// Largest batch the kernel takes (`NG_MAXB` in `nglr_train.cu`).
pub const MAX_BATCH: usize = 128;

/// [`train::fit`] with its Adam phase on the device chosen for `backend` ([`Stage::NglrFit`]);
/// the CPU runs it when no GPU is chosen or the GPU fails (logged).
pub fn fit(backend: Backend, f: &[[i64; INPUTS]], t: &[i64], cfg: &Config) -> Option<Net> {
    let visits = f.len() * cfg.epochs;
    train::fit_with(f, t, cfg, |p| {
        offload(
            Stage::NglrFit,
            backend,
            visits,
            |g| g.nglr_adam(p),
            || train::adam(p),
        )
    })
}

/// Words before the first layer's weights in [`model_words`] (`NG_HEAD` in `nglr.cu`).
pub const MODEL_HEAD: usize = 37;

/// The model as `nglr_decode` reads it (`kernels/nglr.cu`), one i64 a word: kind (1 network,
/// 2 linear), hidden units, `e1` (linear: the shift), the output shift `e2 + 8 - out_shift`,
/// `b2` (linear: the intercept), the 16 input shifts, the 16 direct weights `v` (linear: `w`),
/// then the network's `w1` (a row per hidden unit), `b1` and `w2`.
pub fn model_words(model: &Model) -> Vec<i64> {
    let mut w = vec![0i64; MODEL_HEAD];
    match model {
        Model::Network(net) => {
            w[0] = 1;
            w[1] = net.hidden as i64;
            w[2] = net.e1 as i64;
            w[3] = net.e2 as i64 + crate::nn::infer::FRAC as i64 - net.out_shift as i64;
            w[4] = net.b2 as i64;
            for i in 0..INPUTS {
                w[5 + i] = net.in_shift[i] as i64;
                w[21 + i] = net.v[i] as i64;
            }
            w.extend(net.w1.iter().map(|&v| v as i64));
            w.extend(net.b1.iter().map(|&v| v as i64));
            w.extend(net.w2.iter().map(|&v| v as i64));
        }
        Model::Linear(lin) => {
            w[0] = 2;
            w[2] = lin.shift as i64;
            w[4] = lin.b;
            for i in 0..INPUTS {
                w[21 + i] = lin.w[i] as i64;
            }
        }
    }
    w
}

/// `nglr_decode`'s arguments (`kernels/nglr.cu`): the device addresses of the codes (then
/// indices) and the scratch, the block table, the model words; the feedback step.
fn decode_args([q, e]: [u64; 2], table: u64, words: u64, m: i32) -> [Arg; 5] {
    [
        Arg::Ptr(q),
        Arg::Ptr(e),
        Arg::Ptr(table),
        Arg::Ptr(words),
        Arg::I32(m),
    ]
}

/// `nglr_encode`'s arguments: the device addresses of the indices, codes, scratch and escape
/// flags, the values, the block table and the model words; then `coding`.
fn encode_args(
    [q, codes, e, esc]: [u64; 4],
    x: u64,
    table: u64,
    words: u64,
    coding: &Coding,
) -> [Arg; 12] {
    [
        Arg::Ptr(q),
        Arg::Ptr(codes),
        Arg::Ptr(e),
        Arg::Ptr(esc),
        Arg::Ptr(x),
        Arg::Ptr(table),
        Arg::Ptr(words),
        Arg::I64(coding.m),
        Arg::F64(coding.grid.mid),
        Arg::F64(coding.grid.step),
        Arg::F64(coding.eb),
        Arg::I32(coding.single as i32),
    ]
}

/// The values in `blocks` (one after another), checked to be `len` and each block within the
/// kernels' limits.
fn check_blocks(blocks: &[Block], len: usize) -> Result<usize> {
    let total: usize = blocks.iter().map(Block::len).sum();
    ensure!(
        total == len,
        Error::SizeMismatch {
            expected: total,
            actual: len
        }
    );
    ensure!(
        blocks
            .iter()
            .all(|b| b.ext.iter().all(|e| (1..1 << 20).contains(e))),
        Error::Unsupported("cuda: NGLR block outside the kernel's limits".into())
    );
    Ok(total)
}

impl Cuda {
    /// Decodes NGLR blocks in place, as [`crate::predict::nglr::Nglr`]'s `decode` does each:
    /// `codes` holds the blocks' residual codes one block after another (each in C order) and
    /// receives their reconstructed grid indices. `model` must be valid (as read from a chunk);
    /// `m` is the chunk's feedback step.
    pub fn nglr_decode(
        &self,
        model: &Model,
        blocks: &[Block],
        codes: &mut [i32],
        m: i32,
    ) -> Result<()> {
        guard("nglr decode", || {
            check_blocks(blocks, codes.len())?;
            if blocks.is_empty() {
                return Ok(());
            }
            let (table, _) = block_table(blocks);
            let table = self.upload(&table)?;
            let words = self.upload(&model_words(model))?;
            let q = self.upload_staged(codes)?;
            let e = self.zeros::<i32>(codes.len())?;
            // SAFETY: `q` and `e` hold every block at the table's offsets (their sum is the
            // length, checked), the table one entry per block of the grid, `words` the model
            // laid out as the kernel reads it; all live until the download.
            unsafe {
                let bufs = [&q, &e].map(|b| self.ptr(b));
                let args = decode_args(bufs, self.ptr(&table), self.ptr(&words), m);
                self.launch("nglr_decode", (blocks.len(), 1, 1), &args)?;
            }
            self.download_staged_into(&q, codes)?;
            Ok(())
        })
    }

    /// Codes NGLR blocks as [`crate::predict::nglr::Nglr`]'s `encode` does each, laid out as
    /// for [`Cuda::nglr_decode`]: `x` holds the values, `q` the prequantized indices (replaced
    /// by the reconstruction), `escaped` the points already escaped (the encoder adds those it
    /// escapes). Returns the residual codes.
    pub fn nglr_encode(
        &self,
        model: &Model,
        blocks: &[Block],
        coding: &Coding,
        x: &[f64],
        q: &mut [i32],
        escaped: &mut [bool],
    ) -> Result<Vec<i32>> {
        guard("nglr encode", || {
            let total = check_blocks(blocks, q.len())?;
            ensure!(
                x.len() == total && escaped.len() == total,
                Error::SizeMismatch {
                    expected: total,
                    actual: x.len().min(escaped.len())
                }
            );
            ensure!(
                coding.m >= 1 && coding.m % 2 == 1,
                Error::Unsupported(format!("cuda: NGLR feedback step {}", coding.m))
            );
            if blocks.is_empty() {
                return Ok(Vec::new());
            }
            let (table, _) = block_table(blocks);
            let table = self.upload(&table)?;
            let words = self.upload(&model_words(model))?;
            let qd = self.upload_staged(q)?;
            let xd = self.upload_staged(x)?;
            let flags: Vec<u8> = escaped.iter().map(|&e| e as u8).collect();
            let esc = self.upload_staged(&flags)?;
            let codes = self.zeros::<i32>(total)?;
            let e = self.zeros::<i32>(total)?;
            // SAFETY: `q`, `codes`, `e`, `esc` and `x` hold every block at the table's offsets
            // (checked lengths), the table one entry per block, `words` the model laid out as
            // the kernel reads it; all live until the downloads.
            unsafe {
                let bufs = [
                    self.ptr(&qd),
                    self.ptr(&codes),
                    self.ptr(&e),
                    self.ptr(&esc),
                ];
                let args = encode_args(
                    bufs,
                    self.ptr(&xd),
                    self.ptr(&table),
                    self.ptr(&words),
                    coding,
                );
                self.launch("nglr_encode", (blocks.len(), 1, 1), &args)?;
            }
            self.download_staged_into(&qd, q)?;
            for (e, f) in escaped.iter_mut().zip(self.download_staged(&esc)?) {
                *e = f != 0;
            }
            self.download_staged(&codes)
        })
    }

    /// [`train::adam`] on the GPU.
    pub fn nglr_adam(&self, p: &AdamProblem) -> Result<Vec<f32>> {
        guard("nglr training", || {
            let n = p.xs.len();
            ensure!(
                (1..=MAX_HIDDEN).contains(&p.hidden)
                    && (1..=MAX_BATCH).contains(&p.batch)
                    && p.ts.len() == n
                    && p.orders.len() == p.epochs * n
                    && p.params.len() == p.offsets().3 + 1
                    && n < i32::MAX as usize
                    && p.epochs < i32::MAX as usize,
                Error::Unsupported(
                    "cuda: NGLR training problem outside the kernel's limits".into()
                )
            );
            let flat: Vec<f32> = p.xs.iter().flatten().copied().collect();
            let xs = self.upload(&flat)?;
            let ts = self.upload(&p.ts)?;
            let orders = self.upload(&p.orders)?;
            let params = self.upload(&p.params)?;
            let (b1, b2, eps) = ADAM;
            // SAFETY: every buffer holds what the kernel reads (n samples of INPUTS, n targets,
            // epochs x n indices below n, the parameters) and lives until the download.
            unsafe {
                self.launch(
                    "nglr_adam",
                    (1, 1, 1),
                    &[
                        Arg::Ptr(self.ptr(&xs)),
                        Arg::Ptr(self.ptr(&ts)),
                        Arg::Ptr(self.ptr(&orders)),
                        Arg::I32(n as i32),
                        Arg::I32(p.epochs as i32),
                        Arg::I32(p.batch as i32),
                        Arg::I32(p.hidden as i32),
                        Arg::Ptr(self.ptr(&params)),
                        Arg::F32(p.c),
                        Arg::F32(p.hmax),
                        Arg::F32(p.lr),
                        Arg::F32(b1),
                        Arg::F32(b2),
                        Arg::F32(eps),
                    ],
                )?;
            }
            let out = self.download(&params)?;
            ensure!(
                out.iter().all(|v| v.is_finite()),
                Error::Unsupported("cuda: NGLR training diverged".into())
            );
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::launch::check_args;

    /// The launches' argument lists agree with the kernels' declarations (count and kinds),
    /// checked here since a disagreement would otherwise show only on a GPU.
    #[test]
    fn launch_arguments_match_the_kernels() {
        check_args("nglr_decode", &decode_args([1, 2], 3, 4, 15)).unwrap();
        let coding = Coding {
            grid: Grid {
                mid: 0.5,
                step: 0.1,
            },
            eb: 0.05,
            single: true,
            m: 1,
        };
        check_args("nglr_encode", &encode_args([1, 2, 3, 4], 5, 6, 7, &coding)).unwrap();
        // A wrong kind is refused: the feedback step as i32.
        let mut args = encode_args([1, 2, 3, 4], 5, 6, 7, &coding);
        args[7] = Arg::I32(1);
        assert!(check_args("nglr_encode", &args).is_err());
    }

    /// The model words hold each field where `nglr.cu` reads it (`NG_HEAD`, its comment).
    #[test]
    fn model_words_follow_the_kernels_layout() {
        let net = Net {
            hidden: 2,
            in_shift: std::array::from_fn(|i| i as u8),
            out_shift: 3,
            e1: 12,
            e2: 14,
            w1: (0..2 * INPUTS as i16).collect(),
            b1: vec![-7, 9],
            w2: vec![100, -200],
            v: std::array::from_fn(|i| -(i as i16)),
            b2: 77,
        };
        let w = model_words(&Model::Network(net));
        assert_eq!(w.len(), MODEL_HEAD + 2 * INPUTS + 4);
        assert_eq!(&w[..5], &[1, 2, 12, 14 + 8 - 3, 77]);
        assert_eq!(w[5 + 15], 15);
        assert_eq!(w[21 + 15], -15);
        assert_eq!(w[MODEL_HEAD + 2 * INPUTS - 1], 31);
        assert_eq!(&w[MODEL_HEAD + 2 * INPUTS..], &[-7, 9, 100, -200]);
        let src = crate::backend::cuda::kernels::NGLR.source;
        assert!(src.contains(&format!("#define NG_HEAD {MODEL_HEAD}")));
        let lin = crate::nn::linear::Linear {
            w: std::array::from_fn(|i| i as i32 * 1000),
            b: -(1 << 35),
            shift: 20,
        };
        let w = model_words(&Model::Linear(lin));
        assert_eq!(w.len(), MODEL_HEAD);
        assert_eq!(&w[..5], &[2, 0, 20, 0, -(1 << 35)]);
        assert_eq!(w[21 + 3], 3000);
    }
}
