//! One hash over everything the codec writes and reads back, for refactors whose rule is "same
//! bytes": run it before and after, the hashes must match. Driven by `scripts/same-bytes`
//! (see its header for the options); the codec is called directly (`resid::compress` /
//! `resid::decompress`), no HDF5 is involved.
//!
//! Sets of fields, each hashed on its own and all together:
//! - `testdata`: every field shipped in `testdata/`;
//! - `shared`: the fields `scripts/bench` measures in `../shared/data` (grade A in its
//!   `MANIFEST.tsv`; `--all`: every field), when that directory exists (`--data DIR` names
//!   another, `--no-shared` leaves it out);
//! - `synthetic`: small generated fields with NaN, infinities, subnormals, huge values, a
//!   constant field and rank 1 and 4 chunks.
//!
//! As in `scripts/bench`, each field is one chunk and a field of rank > 3 is reshaped to 3-D by
//! merging its leading dimensions (the synthetic rank-4 field stays rank 4). Bounds: abs
//! 1e-2, 1e-3, 1e-5 x the chunk's finite range; rel and NRMSE 1e-2, 1e-3, 1e-5; PSNR 30, 50,
//! 80 dB.
//! - The cheap modes, the full product on every whole field: 4 error modes x 3 bounds x
//!   predictor words 0, 1, 2, 5 x coders 0, 1, 2 (144 cases a field).
//! - NGLR, predictor words 3 and 4, on a leading sub-block of each field (at most 16x48x48,
//!   192x192 or 36864 values): x coders 0-2 x 4 error modes x 3 bounds (72 cases).
//! - The enhancer (predictor 0, coder 0) at a training budget of 1 (20 steps) on a smaller
//!   sub-block (at most 8x32x32, 96x96 or 8192 values) at the loose bound, with and without the
//!   force bit: modes 1-4 under abs and rel, 1 and 3 under NRMSE, 2 and 4 under PSNR (24
//!   cases); on the `testdata` fields also modes 1-4 forced under abs at the default budget.
//!
//! Backend word 7 is 1 (CPU) and `RESID_BACKEND` must be `cpu` (it is set when unset). A case
//! whose compress or decompress fails hashes its error message instead (none does at the
//! time of writing; the run says how many did).
//!
//! Each case contributes its label, the SHA-256 of its compressed bytes and the SHA-256 of its
//! decoded bytes (both with their lengths); the cases run in parallel but are hashed in a
//! fixed order, so the result must not depend on the number of threads
//! (`RAYON_NUM_THREADS`). `--cases FILE` writes one line per case (label, compressed size,
//! both digests) so two runs that differ can be diffed to the case.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use resid::{ChunkInfo, DType, Params};

#[path = "../tests/common/names.rs"]
mod names;
use names::{as_3d, parse_name};

// ------------------------------------------------------------------ SHA-256 (FIPS 180-4)

struct Sha256 {
    h: [u32; 8],
    buf: Vec<u8>,
    len: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            h: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    fn block(h: &mut [u32; 8], b: &[u8]) {
        let mut w = [0u32; 64];
        for (i, c) in b.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.buf.is_empty() {
            let take = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == 64 {
                let b = std::mem::take(&mut self.buf);
                Self::block(&mut self.h, &b);
                self.buf = b;
                self.buf.clear();
            }
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            Self::block(&mut self.h, b);
        }
        self.buf.extend_from_slice(blocks.remainder());
    }

    /// `data` preceded by its length, so that concatenations cannot collide.
    fn field(&mut self, data: &[u8]) {
        self.update(&(data.len() as u64).to_le_bytes());
        self.update(data);
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        self.update(&[0x80]);
        while self.buf.len() != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        debug_assert!(self.buf.is_empty());
        let mut out = [0u8; 32];
        for (o, h) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&h.to_be_bytes());
        }
        out
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut s = Sha256::new();
    s.update(data);
    s.finish()
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ------------------------------------------------------------------ fields

struct Field {
    set: &'static str,
    name: String,
    dtype: DType,
    /// As compressed: rank > 3 merged to 3-D.
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The files of `dir` named like fields, sorted; with `grade_a`, only those whose
/// `MANIFEST.tsv` grade starts with "A" (every one when there is no manifest or no grade
/// column, as `scripts/bench` does).
fn field_files(dir: &Path, grade_a: bool) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| parse_name(f).is_some())
        .collect();
    files.sort();
    if !grade_a {
        return files;
    }
    let Ok(manifest) = std::fs::read_to_string(dir.join("MANIFEST.tsv")) else {
        return files;
    };
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let (Some(fc), Some(gc)) = (
        header.iter().position(|&h| h == "file"),
        header.iter().position(|&h| h == "grade"),
    ) else {
        return files;
    };
    let graded: Vec<&str> = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.get(gc).is_some_and(|g| g.starts_with('A')))
        .filter_map(|c| c.get(fc).copied())
        .collect();
    files.retain(|f| graded.contains(&f.as_str()));
    files
}

fn load_dir(set: &'static str, dir: &Path, grade_a: bool) -> Vec<Field> {
    field_files(dir, grade_a)
        .into_iter()
        .map(|f| {
            let (dtype, shape) = parse_name(&f).unwrap();
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            let n: usize = shape.iter().product();
            assert_eq!(
                bytes.len(),
                n * dtype.size(),
                "{f}: size does not match its name"
            );
            Field {
                set,
                name: f.rsplit_once('.').unwrap().0.to_string(),
                dtype,
                shape: as_3d(&shape),
                bytes,
            }
        })
        .collect()
}

fn to_bytes(x: &[f64], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        DType::F64 => x.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// A smooth field with noise (fixed LCG), and when `specials`, NaN / +-Inf / subnormals / huge
/// values sprinkled in.
fn synth(shape: &[usize], dtype: DType, specials: bool, seed: u64) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let last = *shape.last().unwrap();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let x: Vec<f64> = (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e-2;
            let (a, b) = ((i / last) as f64, (i % last) as f64);
            let v = (a * 0.13).sin() * (b * 0.07).cos() * 10.0 + 0.01 * a + noise;
            if !specials {
                return v;
            }
            match (s >> 40) % 97 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => match dtype {
                    DType::F32 => f32::MIN_POSITIVE as f64 / 8.0,
                    DType::F64 => f64::MIN_POSITIVE / 8.0,
                },
                4 => 3e37,
                _ => v,
            }
        })
        .collect();
    to_bytes(&x, dtype)
}

fn synthetic() -> Vec<Field> {
    let f = |name: &str, dtype, shape: &[usize], bytes| Field {
        set: "synthetic",
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    };
    let constant = to_bytes(&vec![1.5; 20 * 30], DType::F32);
    vec![
        f(
            "smooth_f32_12x20x24",
            DType::F32,
            &[12, 20, 24],
            synth(&[12, 20, 24], DType::F32, false, 1),
        ),
        f(
            "specials_f32_12x20x24",
            DType::F32,
            &[12, 20, 24],
            synth(&[12, 20, 24], DType::F32, true, 2),
        ),
        // Rank 4 kept as is (no merging), f64.
        f(
            "specials_f64_3x5x16x20",
            DType::F64,
            &[3, 5, 16, 20],
            synth(&[3, 5, 16, 20], DType::F64, true, 3),
        ),
        f(
            "smooth_f64_1000",
            DType::F64,
            &[1000],
            synth(&[1000], DType::F64, false, 4),
        ),
        f("constant_f32_20x30", DType::F32, &[20, 30], constant),
    ]
}

/// Sub-block caps, by rank (1, 2, 3): NGLR's predictor words 3 and 4, and the enhancer.
const NGLR_BLOCK: [&[usize]; 3] = [&[36864], &[192, 192], &[16, 48, 48]];
const ENH_BLOCK: [&[usize]; 3] = [&[8192], &[96, 96], &[8, 32, 32]];

/// The leading corner of `f`, each dimension cut to `caps` (by rank; rank > 3 is whole).
fn sub_block(f: &Field, caps: [&[usize]; 3]) -> (Vec<usize>, Vec<u8>) {
    let Some(caps) = caps.get(f.shape.len() - 1) else {
        return (f.shape.clone(), f.bytes.clone());
    };
    let sub: Vec<usize> = f
        .shape
        .iter()
        .zip(caps.iter())
        .map(|(&d, &c)| d.min(c))
        .collect();
    if sub == f.shape {
        return (sub, f.bytes.clone());
    }
    let es = f.dtype.size();
    let mut out = Vec::with_capacity(sub.iter().product::<usize>() * es);
    let rank = sub.len();
    // Row-major walk over the sub-block's rows (all dims but the last).
    let rows: usize = sub[..rank - 1].iter().product();
    for r in 0..rows {
        let (mut rem, mut off, mut stride) = (r, 0usize, 1usize);
        let mut idx = vec![0; rank - 1];
        for d in (0..rank - 1).rev() {
            idx[d] = rem % sub[d];
            rem /= sub[d];
        }
        for d in (0..rank - 1).rev() {
            stride *= f.shape[d + 1];
            off += idx[d] * stride;
        }
        let start = off * es;
        out.extend_from_slice(&f.bytes[start..start + sub[rank - 1] * es]);
    }
    (sub, out)
}

/// The range (max - min) of the finite values.
fn finite_range(bytes: &[u8], dtype: DType) -> f64 {
    let vals: Box<dyn Iterator<Item = f64>> = match dtype {
        DType::F32 => Box::new(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
        ),
        DType::F64 => Box::new(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap())),
        ),
    };
    let (mn, mx) = vals
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |a, v| (a.0.min(v), a.1.max(v)));
    if mx >= mn {
        mx - mn
    } else {
        0.0
    }
}

// ------------------------------------------------------------------ cases

struct Case {
    set: &'static str,
    label: String,
    field: usize,
    /// `Some`: a sub-block (shape, bytes) instead of the whole field.
    block: Option<usize>,
    cd: [u32; 8],
}

/// Enhancer training budget of the sampled enhancer cases (units of 20 steps; the default,
/// 16, trains 16 times longer).
const ENH_BUDGET: u32 = 1;

const MODES: [&str; 4] = ["abs", "rel", "nrmse", "psnr"];

/// The bound of error mode `mode` at "level" `lvl` (0 loose, 1 middle, 2 tight): abs is a
/// fraction of the chunk's finite range (1 when the range is 0), like `scripts/bench`.
fn bound(mode: u32, lvl: usize, range: f64) -> f64 {
    let rel = [1e-2, 1e-3, 1e-5][lvl];
    match mode {
        0 => rel * if range > 0.0 { range } else { 1.0 },
        1 | 2 => rel,
        _ => [30.0, 50.0, 80.0][lvl],
    }
}

fn cd(mode: u32, b: f64, coder: u32, predictor: u32, enhancer: u32) -> [u32; 8] {
    let w = b.to_bits();
    [
        1,
        mode,
        (w >> 32) as u32,
        w as u32,
        coder,
        predictor,
        enhancer,
        1,
    ]
}

/// A case's index, the SHA-256 of its compressed and of its decoded bytes, its compressed size
/// and its error, if any.
type Digests = (usize, [u8; 32], [u8; 32], usize, Option<String>);

struct Outcome {
    compressed: Vec<u8>,
    decoded: Vec<u8>,
    error: Option<String>,
}

fn run_case(chunk: &ChunkInfo, data: &[u8], cd: &[u32; 8]) -> Outcome {
    let fail = |e: String| Outcome {
        compressed: vec![],
        decoded: vec![],
        error: Some(e),
    };
    let p = match Params::from_cd_values(cd) {
        Ok(p) => p,
        Err(e) => return fail(format!("params: {e}")),
    };
    let c = match resid::compress(data, chunk, &p) {
        Ok(c) => c,
        Err(e) => return fail(format!("compress: {e}")),
    };
    match resid::decompress(&c) {
        Ok(d) => {
            let error = (d.len() != data.len())
                .then(|| format!("decoded {} bytes, wrote {}", d.len(), data.len()));
            Outcome {
                compressed: c,
                decoded: d,
                error,
            }
        }
        Err(e) => Outcome {
            compressed: c,
            decoded: vec![],
            error: Some(format!("decompress: {e}")),
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |k: &str| args.iter().any(|a| a == k);
    let value = |k: &str| {
        args.iter().position(|a| a == k).map(|i| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{k} needs a value"))
        })
    };
    for a in &args {
        if a.starts_with("--")
            && ![
                "--data",
                "--no-shared",
                "--all",
                "--quick",
                "--cases",
                "--no-learned",
                "--only",
                "--verbose",
            ]
            .contains(&a.as_str())
        {
            eprintln!("same_bytes: unknown option {a}");
            std::process::exit(2);
        }
    }
    match std::env::var("RESID_BACKEND") {
        Ok(b) if b == "cpu" => {}
        Ok(b) => {
            eprintln!("same_bytes: RESID_BACKEND={b}; this hash is defined with RESID_BACKEND=cpu");
            std::process::exit(2);
        }
        // No thread has started yet: setting the variable here is race-free.
        Err(_) => std::env::set_var("RESID_BACKEND", "cpu"),
    }
    let quick = has("--quick");
    let learned = !has("--no-learned");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared_dir = value("--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data"));

    let mut fields = load_dir("testdata", &repo.join("testdata"), false);
    let mut sets = vec![format!("testdata ({} fields)", fields.len())];
    if has("--no-shared") {
        sets.push("shared: left out (--no-shared)".into());
    } else if shared_dir.is_dir() {
        let all = has("--all");
        let shared = load_dir("shared", &shared_dir, !all);
        sets.push(format!(
            "shared = {} ({} fields, {})",
            shared_dir
                .canonicalize()
                .unwrap_or(shared_dir.clone())
                .display(),
            shared.len(),
            if all {
                "all (--all)"
            } else {
                "grade A, as scripts/bench"
            }
        ));
        fields.extend(shared);
    } else {
        sets.push(format!("shared: {} absent, left out", shared_dir.display()));
    }
    fields.extend(synthetic());
    sets.push("synthetic (5 fields)".into());
    if quick {
        // The two smallest fields of every set, for a quick run (thread-count check).
        let mut keep = Vec::new();
        for set in ["testdata", "shared", "synthetic"] {
            let mut fs: Vec<Field> = Vec::new();
            for f in std::mem::take(&mut fields) {
                if f.set == set {
                    fs.push(f);
                } else {
                    fields.push(f);
                }
            }
            fs.sort_by_key(|f| (f.bytes.len(), f.name.clone()));
            fs.truncate(2);
            keep.extend(fs);
        }
        fields = keep;
        sets.push("--quick: the two smallest fields of each set".into());
    }
    if !learned {
        sets.push("--no-learned: predictor words 3, 4 and enhancers left out".into());
    }

    // Sub-blocks for the learned modes: field i's NGLR block is 2i, its enhancer block 2i + 1.
    let blocks: Vec<(Vec<usize>, Vec<u8>)> = fields
        .iter()
        .flat_map(|f| [sub_block(f, NGLR_BLOCK), sub_block(f, ENH_BLOCK)])
        .collect();
    let ranges: Vec<f64> = fields
        .iter()
        .map(|f| finite_range(&f.bytes, f.dtype))
        .collect();
    let block_ranges: Vec<f64> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| finite_range(&b.1, fields[i / 2].dtype))
        .collect();
    let block_label = |i: usize, b: usize| {
        let dims: Vec<String> = blocks[b].0.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", fields[i].name, dims.join("x"))
    };

    let mut cases = Vec::new();
    let mut push = |f: &Field, field: usize, block: Option<usize>, name: &str, cd: [u32; 8]| {
        cases.push(Case {
            set: f.set,
            label: format!(
                "{name} {} {:e} coder {} predictor {} enhancer {:#x}",
                MODES[cd[1] as usize],
                f64::from_bits((cd[2] as u64) << 32 | cd[3] as u64),
                cd[4],
                cd[5],
                cd[6]
            ),
            field,
            block,
            cd,
        })
    };
    for (i, f) in fields.iter().enumerate() {
        // The cheap modes: the full product on the whole field.
        for mode in 0..4u32 {
            for lvl in 0..3 {
                let b = bound(mode, lvl, ranges[i]);
                for predictor in [0, 1, 2, 5] {
                    for coder in 0..3 {
                        push(f, i, None, &f.name, cd(mode, b, coder, predictor, 0));
                    }
                }
            }
        }
        if !learned {
            continue;
        }
        // NGLR (predictor words 3 and 4): every coder, mode and bound on a sub-block.
        let (nb, eb) = (2 * i, 2 * i + 1);
        let name = block_label(i, nb);
        for mode in 0..4u32 {
            for lvl in 0..3 {
                let b = bound(mode, lvl, block_ranges[nb]);
                for predictor in [3, 4] {
                    for coder in 0..3 {
                        push(f, i, Some(nb), &name, cd(mode, b, coder, predictor, 0));
                    }
                }
            }
        }
        // The enhancer, at a short training budget, on a smaller sub-block at the loose bound:
        // modes 1-4 with and without the force bit under abs and rel; under the quality
        // targets (the slowest) strict under NRMSE, relaxed under PSNR.
        let name = block_label(i, eb);
        for mode in 0..4u32 {
            let b = bound(mode, 0, block_ranges[eb]);
            let enhancers: &[u32] = match mode {
                0 | 1 => &[1, 2, 3, 4],
                2 => &[1, 3],
                _ => &[2, 4],
            };
            for force in [0, 1 << 16] {
                for &e in enhancers {
                    let e = e | ENH_BUDGET << 8 | force;
                    push(f, i, Some(eb), &name, cd(mode, b, 0, 0, e));
                }
            }
        }
        // The default training budget too, on the shipped fields: abs, modes 1-4, forced.
        if f.set == "testdata" {
            let b = bound(0, 0, block_ranges[eb]);
            for e in [1, 2, 3, 4] {
                push(f, i, Some(eb), &name, cd(0, b, 0, 0, e | 1 << 16));
            }
        }
    }

    if let Some(only) = value("--only") {
        cases.retain(|c| format!("{} {}", c.set, c.label).contains(only.as_str()));
        sets.push(format!("--only {only:?}: the cases whose label holds it"));
    }
    let verbose = has("--verbose");

    let t0 = Instant::now();
    // Longest first (learned, then larger fields) so the parallel loop ends evenly; the
    // results are put back in case order before hashing.
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let cost = |c: &Case| {
        let n = match c.block {
            Some(b) if b % 2 == 1 => blocks[b].1.len() * 200,
            Some(b) => blocks[b].1.len() * 4,
            None => fields[c.field].bytes.len(),
        };
        std::cmp::Reverse(n)
    };
    order.sort_by_key(|&i| cost(&cases[i]));
    let mut digests: Vec<Digests> = order
        .par_iter()
        .map(|&i| {
            let c = &cases[i];
            let f = &fields[c.field];
            let (chunk, data) = match c.block {
                Some(b) => (ChunkInfo::new(f.dtype, &blocks[b].0).unwrap(), &blocks[b].1),
                None => (ChunkInfo::new(f.dtype, &f.shape).unwrap(), &f.bytes),
            };
            let t = Instant::now();
            let o = run_case(&chunk, data, &c.cd);
            if verbose {
                eprintln!(
                    "{:7.2} s  {} {}  {} bytes",
                    t.elapsed().as_secs_f64(),
                    c.set,
                    c.label,
                    o.compressed.len()
                );
            }
            (
                i,
                sha256(&o.compressed),
                sha256(&o.decoded),
                o.compressed.len(),
                o.error,
            )
        })
        .collect();
    digests.sort_by_key(|d| d.0);
    let secs = t0.elapsed().as_secs_f64();

    let mut lines = String::new();
    let mut total = Sha256::new();
    let mut per_set: Vec<(&str, Sha256, usize, u64, usize)> = Vec::new();
    let (mut bytes, mut errors) = (0u64, 0usize);
    for (i, dc, dd, len, err) in &digests {
        let c = &cases[*i];
        if !per_set.iter().any(|s| s.0 == c.set) {
            per_set.push((c.set, Sha256::new(), 0, 0, 0));
        }
        let s = per_set.iter_mut().find(|s| s.0 == c.set).unwrap();
        for h in [&mut total, &mut s.1] {
            h.field(c.set.as_bytes());
            h.field(c.label.as_bytes());
            h.field(dc);
            h.field(dd);
            h.field(err.as_deref().unwrap_or("").as_bytes());
        }
        s.2 += 1;
        s.3 += *len as u64;
        bytes += *len as u64;
        if let Some(e) = err {
            s.4 += 1;
            errors += 1;
            eprintln!("same_bytes: {} {}: {e}", c.set, c.label);
        }
        let _ = writeln!(
            lines,
            "{} {}\t{}\t{}\t{}{}",
            c.set,
            c.label,
            len,
            &hex(dc)[..16],
            &hex(dd)[..16],
            err.as_deref().map_or(String::new(), |e| format!("\t{e}"))
        );
    }
    if let Some(path) = value("--cases") {
        std::fs::write(path, &lines).unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    println!("same-bytes: RESID_BACKEND=cpu, backend word 1, one chunk per field");
    for s in &sets {
        println!("  set: {s}");
    }
    for (set, h, n, b, e) in per_set {
        let names: Vec<&str> = fields
            .iter()
            .filter(|f| f.set == set)
            .map(|f| f.name.as_str())
            .collect();
        println!(
            "  {set:<9} {n:>6} cases {b:>12} bytes {e} errors  sha256 {}  [{}]",
            hex(&h.finish()),
            names.join(", ")
        );
    }
    println!(
        "cases {} compressed bytes {} errors {} time {:.0} s threads {}",
        cases.len(),
        bytes,
        errors,
        secs,
        rayon::current_num_threads()
    );
    println!("sha256 {}", hex(&total.finish()));
    if errors > 0 {
        // Hashed all the same (the message stands in for the bytes); the status says so.
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_known_answers() {
        use super::{hex, sha256};
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            hex(&sha256(long)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // 1000 bytes fed in uneven pieces (across block boundaries).
        let data: Vec<u8> = (0..1000u32).map(|i| ((i * 7 + 3) % 256) as u8).collect();
        let mut h = super::Sha256::new();
        for piece in data.chunks(37) {
            h.update(piece);
        }
        assert_eq!(
            hex(&h.finish()),
            "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"
        );
    }
}
