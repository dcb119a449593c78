//! `resid`: the command-line face of the resid codec and HDF5 filter (id 32900).
//!
//! Raw float files are compressed into self-describing `.rsid` chunks and back; HDF5 files are
//! recompressed through the filter (registered in-process from the `h5resid` crate, so no
//! `HDF5_PLUGIN_PATH` is needed) and their chunks inspected; `resid bench` runs
//! `scripts/bench`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
mod h5;
mod prefill;
mod raw;
mod repack;
mod report;

const EXAMPLES: &str = "\
Examples:
  resid compress field_91x91x91.f32 --shape 91x91x91 --rel 1e-4 -o field.rsid
  resid decompress field.rsid -o back.f32
  resid inspect field.rsid
  resid h5 compress in.h5 out.h5 --rel 1e-3               # every float dataset
  resid h5 compress in.h5 out.h5 --abs 0.01 --dataset T --dataset grp/P --coder lz4
  resid h5 decompress out.h5 plain.h5                      # the resid datasets without the filter
  resid inspect out.h5 --dataset T
  resid bench -- --quick                                   # arguments after -- go to scripts/bench

Error bounds (exactly one):
  --abs E     every value within E of the original
  --rel R     within R * (max - min) of each chunk (of the whole array for raw files)
  --nrmse T   RMSE / value range at most T (0 < T <= 1)
  --psnr DB   PSNR at least DB decibels (0 < DB <= 400)

Exit status: 0 success, 1 a failure while working (unreadable file, corrupt chunk, HDF5 error),
2 bad usage (caught before any work).";

#[derive(Parser)]
#[command(
    name = "resid",
    version,
    about = "Error-bounded lossy compression of float32/float64 data (resid, HDF5 filter 32900)",
    long_about = "Error-bounded lossy compression of float32/float64 data.\n\n\
        resid quantizes values onto a grid fine enough for the bound you ask for, predicts each \
        block with integer 3D Lorenzo (plain or with fitted weights) or multilevel cubic \
        interpolation, whichever codes smaller, and entropy codes the residuals. Every decoded \
        value meets \
        the bound; NaN and infinities are kept exactly. The same codec is HDF5 filter 32900 \
        (libh5resid.so): files written here open in h5py, h5dump or C programs that have the \
        plugin on HDF5_PLUGIN_PATH.",
    after_long_help = EXAMPLES,
    after_help = "Run `resid help <command>` or `resid <command> --help` for examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a raw little-endian float file (.f32/.f64) into one .rsid chunk
    #[command(after_long_help = "Examples:\n  \
        resid compress wind_128x256.f32 --shape 128x256 --abs 0.01\n  \
        resid compress t.bin --dtype f64 --shape 10x20x30 --psnr 80 -o t.rsid\n\n\
        The input is C-ordered (last dimension fastest), little-endian, with no header. The\n\
        .rsid output is a single resid chunk: it records the type, shape and bound, so\n\
        `resid decompress` needs no options. With --rel the range is the whole array's.")]
    Compress(CompressArgs),
    /// Decompress a .rsid file back into raw little-endian floats
    #[command(after_long_help = "Examples:\n  \
        resid decompress t.rsid                  # writes t.f32 or t.f64, after the stored type\n  \
        resid decompress t.rsid -o back.f32\n  \
        resid decompress t.rsid --check t.f32    # also reports the max error against the original")]
    Decompress(DecompressArgs),
    /// Show what a .rsid chunk or the resid chunks of an HDF5 file hold
    #[command(after_long_help = "Examples:\n  \
        resid inspect t.rsid\n  \
        resid inspect out.h5                     # every dataset that uses filter 32900\n  \
        resid inspect out.h5 --dataset grp/T --chunks 10\n\n\
        For HDF5 files the stored chunks are read raw (H5Dread_chunk) and their headers parsed\n\
        without decoding: per chunk its offset, stored bytes, ratio, mode, bound, the pointwise\n\
        bound it guarantees (eb), coder and sections.")]
    Inspect(InspectArgs),
    /// HDF5 files: compress datasets through the resid filter, or remove it
    #[command(subcommand)]
    H5(H5Command),
    /// Run the benchmark (scripts/bench: resid vs SZ3/ZFP/SPERR, RD plots as PNG)
    #[command(after_long_help = "Examples:\n  \
        resid bench -- --quick\n  \
        resid bench --out results.md --plots plots -- --rels 1e-3,1e-4 --no-peers\n\n\
        Needs python3 with h5py, hdf5plugin, numpy and matplotlib (scripts/setup installs them)\n\
        and the plugin built (cargo build --release -p h5resid). Arguments after `--` are passed\n\
        to scripts/bench unchanged; `resid bench -- --help` lists them.")]
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum H5Command {
    /// Copy an HDF5 file, storing its float datasets with the resid filter
    #[command(after_long_help = "Examples:\n  \
        resid h5 compress in.h5 out.h5 --rel 1e-3\n  \
        resid h5 compress in.nc out.nc --abs 0.05 --dataset tas --dataset pr\n  \
        resid h5 compress in.h5 out.h5 --psnr 90 --chunks 64x64x64\n\n\
        Groups, attributes, links and non-float datasets are copied as they are. Selected\n\
        float32/float64 datasets (all of them without --dataset) keep their chunk shape when\n\
        chunked; others get --chunks, or the whole dataset as one chunk when it is at most\n\
        64 MiB, else about 4 MiB chunks. With --rel each chunk gets its own range: use larger\n\
        chunks (or --abs) for one bound over the whole array. Existing filters of a recompressed\n\
        dataset (gzip, shuffle...) are replaced. Same as h5repack with\n\
        `-f UD=32900,...` (scripts/h5repack-args), without needing HDF5_PLUGIN_PATH.\n\n\
        HDF5 codes one chunk at a time on one thread, so the chunks are first coded on\n\
        --threads threads (all cores by default) into a temporary chunk store (in /dev/shm\n\
        when it fits, else beside the output), which the filter reads while h5repack copies the\n\
        file: the output is byte for byte the one-thread output, and a chunk not found there\n\
        is coded by h5repack. --threads 1 runs h5repack alone.")]
    Compress(H5CompressArgs),
    /// Copy an HDF5 file, storing its resid datasets without the filter
    #[command(after_long_help = "Examples:\n  \
        resid h5 decompress out.h5 plain.h5\n  \
        resid h5 decompress out.nc plain.nc --dataset tas --threads 4\n\n\
        Groups, attributes, links and every other dataset are copied as they are. Selected\n\
        datasets (every dataset stored with filter 32900 without --dataset) keep their chunk\n\
        shape and lose their filters (resid and any after it). Same as h5repack with\n\
        `-f NAME:NONE`, without needing HDF5_PLUGIN_PATH. The chunks are first decoded on\n\
        --threads threads (all cores by default) into a temporary chunk store as large as the\n\
        decoded data (in /dev/shm when it fits, else beside the output), which the filter\n\
        reads while h5repack copies the file; --threads 1 runs h5repack alone.")]
    Decompress(H5DecompressArgs),
}

#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct Bound {
    /// Absolute error bound: |x - x'| <= E for every value
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub abs: Option<f64>,
    /// Bound relative to the value range: |x - x'| <= R * (max - min)
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rel: Option<f64>,
    /// Target NRMSE (RMSE / value range), 0 < T <= 1
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub nrmse: Option<f64>,
    /// Target PSNR in dB, 0 < DB <= 400
    #[arg(long, value_name = "DB", allow_negative_numbers = true)]
    pub psnr: Option<f64>,
}

#[derive(Args, Clone, Debug)]
pub struct Codec {
    #[command(flatten)]
    pub bound: Bound,
    /// Entropy coder: range (best ratio), rans (the range coder's model by table lookups:
    /// within about a percent of its size, several times faster), lz4 (fast on the CPU),
    /// packed (fixed width per 32 values: coded and decoded entirely on a GPU) or grouped (a
    /// width per 8 values: the fast mode with --predictor lorenzo, over twice SZ3's speed)
    #[arg(long, value_enum, default_value_t = CoderArg::Range)]
    pub coder: CoderArg,
    /// Predictor: auto (per block: Lorenzo, plain or with fitted weights, or an
    /// interpolation), lorenzo, interp, nglr (Lorenzo
    /// plus a learned bias), auto-linear (auto with a fitted linear bias too: smaller, writes
    /// at about two thirds of auto's speed), auto-nglr (auto with NGLR too: smallest, several
    /// times slower), wavelet (every chunk it can through a CDF 9/7 wavelet; the auto words
    /// try it per chunk too)
    #[arg(long, value_enum, default_value_t = PredictorArg::Auto)]
    pub predictor: PredictorArg,
    /// Where the encoder runs (cuda falls back to the CPU when no GPU is usable)
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CoderArg {
    Range,
    Lz4,
    Packed,
    Rans,
    Grouped,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PredictorArg {
    Auto,
    Lorenzo,
    Interp,
    Nglr,
    AutoNglr,
    AutoLinear,
    Wavelet,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum BackendArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F64,
}

impl DTypeArg {
    pub fn dtype(self) -> resid::DType {
        match self {
            DTypeArg::F32 => resid::DType::F32,
            DTypeArg::F64 => resid::DType::F64,
        }
    }
}

impl Codec {
    /// The codec parameters, validated (a bad bound is a usage error).
    pub fn params(&self) -> Result<resid::Params, Failure> {
        use resid::ErrorMode;
        let b = &self.bound;
        let (mode, bound, flag) = match (b.abs, b.rel, b.nrmse, b.psnr) {
            (Some(v), ..) => (ErrorMode::Abs, v, "--abs"),
            (_, Some(v), ..) => (ErrorMode::Rel, v, "--rel"),
            (_, _, Some(v), _) => (ErrorMode::Nrmse, v, "--nrmse"),
            (.., Some(v)) => (ErrorMode::Psnr, v, "--psnr"),
            _ => {
                return Err(Failure::usage(
                    "give one bound: --abs, --rel, --nrmse or --psnr",
                ))
            }
        };
        let mut p = resid::Params::new(mode, bound).with_coder(match self.coder {
            CoderArg::Range => resid::Coder::Range,
            CoderArg::Lz4 => resid::Coder::Lz4,
            CoderArg::Packed => resid::Coder::Packed,
            CoderArg::Rans => resid::Coder::Rans,
            CoderArg::Grouped => resid::Coder::Grouped,
        });
        p.predictor = match self.predictor {
            PredictorArg::Auto => resid::PredictorChoice::Auto,
            PredictorArg::Lorenzo => resid::PredictorChoice::Lorenzo,
            PredictorArg::Interp => resid::PredictorChoice::Interp,
            PredictorArg::Nglr => resid::PredictorChoice::Nglr,
            PredictorArg::AutoNglr => resid::PredictorChoice::AutoNglr,
            PredictorArg::AutoLinear => resid::PredictorChoice::AutoLinear,
            PredictorArg::Wavelet => resid::PredictorChoice::Wavelet,
        };
        p.backend = match self.backend {
            BackendArg::Auto => resid::Backend::Auto,
            BackendArg::Cpu => resid::Backend::Cpu,
            BackendArg::Cuda => resid::Backend::Cuda,
        };
        p.validate()
            .map_err(|e| Failure::usage(format!("{flag} {bound}: {e}")))?;
        Ok(p)
    }
}

#[derive(Args)]
pub struct CompressArgs {
    /// Raw input file: little-endian floats, C order, no header
    pub input: PathBuf,
    /// Array shape, slowest dimension first, e.g. 91x91x91 (or 91,91,91)
    #[arg(long, value_parser = parse_shape)]
    pub shape: Shape,
    /// Element type; default from the extension (.f32 / .f64)
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    #[command(flatten)]
    pub codec: Codec,
    /// Output file (default: INPUT with .rsid appended)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Replace the output file when it exists
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct DecompressArgs {
    /// A .rsid file written by `resid compress`
    pub input: PathBuf,
    /// Output file (default: INPUT without .rsid, with .f32/.f64 after the stored type)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Original raw file: report the max error against it (and fail when it breaks the bound)
    #[arg(long, value_name = "ORIGINAL")]
    pub check: Option<PathBuf>,
    /// Replace the output file when it exists
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A .rsid file or an HDF5 file (detected from its content)
    pub input: PathBuf,
    /// HDF5: only this dataset (path inside the file); repeatable
    #[arg(short, long = "dataset", value_name = "NAME")]
    pub datasets: Vec<String>,
    /// HDF5: print at most N chunks per dataset (the totals count all)
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
}

#[derive(Args)]
pub struct H5CompressArgs {
    /// Input HDF5 (or netCDF-4) file
    pub input: PathBuf,
    /// Output file (must differ from the input)
    pub output: PathBuf,
    #[command(flatten)]
    pub codec: Codec,
    /// Only this dataset (path inside the file); repeatable. Default: every float dataset
    #[arg(short, long = "dataset", value_name = "NAME")]
    pub datasets: Vec<String>,
    /// Chunk shape for datasets that are not chunked yet, e.g. 64x64x64
    #[arg(long, value_parser = parse_shape)]
    pub chunks: Option<Shape>,
    /// Threads coding chunks (default: every core this process may use); 1 runs h5repack
    /// alone, one chunk at a time
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,
    /// Replace the output file when it exists
    #[arg(short, long)]
    pub force: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct H5DecompressArgs {
    /// Input HDF5 (or netCDF-4) file with resid datasets
    pub input: PathBuf,
    /// Output file (must differ from the input)
    pub output: PathBuf,
    /// Only this dataset (path inside the file); repeatable. Default: every resid dataset
    #[arg(short, long = "dataset", value_name = "NAME")]
    pub datasets: Vec<String>,
    /// Threads decoding chunks (default: every core this process may use); 1 runs h5repack
    /// alone, one chunk at a time
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,
    /// Replace the output file when it exists
    #[arg(short, long)]
    pub force: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

/// Array dimensions, slowest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

/// `91x91x91` or `91,91,91` -> [91, 91, 91].
fn parse_shape(s: &str) -> Result<Shape, String> {
    let dims: Result<Vec<usize>, _> = s
        .split(['x', 'X', ',', '*'])
        .map(|d| d.trim().parse::<usize>())
        .collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&n| n > 0) => Ok(Shape(d)),
        _ => Err(format!(
            "`{s}` is not a shape: give positive integers separated by x, e.g. 91x91x91"
        )),
    }
}

/// An error the user sees: the message, and whether it was bad usage (exit 2) or a failure
/// while working (exit 1).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub usage: bool,
}

impl Failure {
    pub fn usage(m: impl Into<String>) -> Failure {
        Failure {
            message: m.into(),
            usage: true,
        }
    }
    pub fn run(m: impl Into<String>) -> Failure {
        Failure {
            message: m.into(),
            usage: false,
        }
    }
}

fn main() -> ExitCode {
    // The codec's messages, as the plugin shows them: warnings, or RESID_LOG=info|debug|off.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_env(env_logger::Env::new().filter(resid::LOG_ENV))
        .format(|buf, r| {
            use std::io::Write;
            writeln!(buf, "[{}] {}", r.level(), r.args())
        })
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compress(a) => raw::compress(&a),
        Command::Decompress(a) => raw::decompress(&a),
        Command::Inspect(a) => h5::inspect(&a),
        Command::H5(H5Command::Compress(a)) => h5::compress(&a),
        Command::H5(H5Command::Decompress(a)) => h5::decompress(&a),
        Command::Bench(a) => bench::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("resid: error: {}", f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shapes() {
        assert_eq!(parse_shape("91x91x91").unwrap().0, vec![91, 91, 91]);
        assert_eq!(parse_shape("3,4").unwrap().0, vec![3, 4]);
        assert!(parse_shape("3x0").is_err());
        assert!(parse_shape("ax3").is_err());
        assert!(parse_shape("").is_err());
    }
}
