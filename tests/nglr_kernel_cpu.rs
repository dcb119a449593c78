//! NGLR's GPU decode kernel (`kernels/nglr.cu`) checked on the CPU: `tests/kernels/nglr_check.cpp`
//! runs it through the CUDA stand-in (`tests/kernels/emu.h`: a fiber per thread, real
//! barriers) on cases this test writes, with the model words and block tables exactly as
//! `backend::cuda::nglr` passes them, and compares with the Rust decoder's reconstruction bit
//! for bit. The kernel is also broken on purpose, and the check must then fail. A GPU run
//! (`tests/gpu_learned.rs`) only has to confirm it on the device.
//!
//! Needs g++ (C++20) on x86-64 (the fibers switch stacks in x86-64 assembly); skips, saying
//! so, without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use resid::backend::cuda::block_table;
use resid::backend::cuda::nglr::{model_words, Coding};
use resid::field::{self, Block};
use resid::nn::weights::Model;
use resid::predict::nglr::Nglr;
use resid::predict::Predictor;

#[path = "common/nglr_models.rs"]
mod nglr_models;
use nglr_models::{linear, net, Rng};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What a case runs: the decoder on codes, or the encoder on values.
enum Work {
    Decode {
        codes: Vec<i32>,
    },
    Encode {
        coding: Coding,
        x: Vec<f64>,
        q: Vec<i32>,
        escaped: Vec<bool>,
    },
}

struct Case {
    name: String,
    model: Model,
    m: i32,
    blocks: Vec<Block>,
    work: Work,
}

fn put_i64s(out: &mut Vec<u8>, v: &[i64]) {
    v.iter().for_each(|x| out.extend(x.to_le_bytes()));
}

fn put_i32s(out: &mut Vec<u8>, v: &[i32]) {
    v.iter().for_each(|x| out.extend(x.to_le_bytes()));
}

impl Case {
    /// Each block's range in the case's arrays.
    fn ranges(&self) -> Vec<(std::ops::Range<usize>, [usize; 3])> {
        let mut at = 0;
        self.blocks
            .iter()
            .map(|b| {
                at += b.len();
                (at - b.len()..at, b.ext)
            })
            .collect()
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_i64s(out, &[self.name.len() as i64]);
        out.extend(self.name.as_bytes());
        put_i64s(out, &[matches!(self.work, Work::Encode { .. }) as i64]);
        let words = model_words(&self.model);
        put_i64s(out, &[words.len() as i64]);
        put_i64s(out, &words);
        put_i64s(out, &[self.m as i64, self.blocks.len() as i64]);
        let (table, _) = block_table(&self.blocks);
        table.iter().for_each(|x| out.extend(x.to_le_bytes()));
        match &self.work {
            // The Rust decoder's reconstruction of every block.
            Work::Decode { codes } => {
                let p = Nglr::from_model(self.model.clone());
                put_i64s(out, &[codes.len() as i64]);
                put_i32s(out, codes);
                let mut q = codes.clone();
                for (r, ext) in self.ranges() {
                    p.decode(&mut q[r], ext, self.m);
                }
                put_i32s(out, &q);
            }
            // The Rust encoder's codes, reconstruction and escapes of every block.
            Work::Encode {
                coding,
                x,
                q,
                escaped,
            } => {
                put_i64s(out, &[x.len() as i64]);
                for v in [coding.grid.mid, coding.grid.step, coding.eb] {
                    out.extend(v.to_le_bytes());
                }
                put_i64s(out, &[coding.single as i64]);
                x.iter().for_each(|v| out.extend(v.to_le_bytes()));
                put_i32s(out, q);
                out.extend(escaped.iter().map(|&e| e as u8));
                let (codes, recon, esc) =
                    nglr_models::cpu_encode(&self.model, &self.blocks, coding, x, q, escaped);
                put_i32s(out, &codes);
                put_i32s(out, &recon);
                out.extend(esc.iter().map(|&e| e as u8));
            }
        }
    }
}

/// [`nglr_models::encode_input`] as a case's work.
fn encode_work(rng: &mut Rng, blocks: &[Block], m: i64, single: bool, coarse: f64) -> Work {
    let (coding, x, q, escaped) = nglr_models::encode_input(rng, blocks, m, single, coarse);
    Work::Encode {
        coding,
        x,
        q,
        escaped,
    }
}

/// Block shapes covering every class of dimensions of extent 1, thin and wide.
const SHAPES: [[usize; 3]; 12] = [
    [1, 1, 1],
    [1, 1, 3],
    [1, 1, 17],
    [1, 9, 13],
    [5, 6, 7],
    [40, 1, 3],
    [6, 7, 1],
    [3, 1, 1],
    [4, 5, 2],
    [3, 3, 4],
    [7, 9, 11],
    [12, 16, 33],
];

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x5eed_61a5);
    let mut models: Vec<(String, Model)> = Vec::new();
    for hidden in [1, 7, 16, 32] {
        models.push((
            format!("net h{hidden}"),
            Model::Network(net(&mut rng, hidden, false)),
        ));
    }
    models.push((
        "net linear-only".into(),
        Model::Network(net(&mut rng, 8, true)),
    ));
    models.push(("linear".into(), Model::Linear(linear(&mut rng))));
    let mut cases = Vec::new();
    for (k, ext) in SHAPES.iter().enumerate() {
        let (label, model) = &models[k % models.len()];
        let m = [1, 3, 15][k % 3];
        let block = Block {
            origin: [0; 3],
            ext: *ext,
        };
        let n = block.len();
        // Small codes: a smooth reconstruction; every fifth case also has huge ones, which
        // wrap the indices and saturate the Lorenzo errors.
        let big = k % 5 == 4;
        let codes = (0..n)
            .map(|i| {
                let c = rng.range(-6, 6) as i32;
                if big && i % 7 == 3 {
                    c.wrapping_mul(300_000_007)
                } else {
                    c
                }
            })
            .collect();
        cases.push(Case {
            name: format!(
                "{ext:?} {label} m {m}{}",
                if big { " wrapping" } else { "" }
            ),
            model: model.clone(),
            m,
            blocks: vec![block],
            work: Work::Decode { codes },
        });
        let single = k % 2 == 0;
        let coarse = [1.0, 1.03][k % 2];
        cases.push(Case {
            name: format!("{ext:?} {label} m {m} single {single} step x{coarse}"),
            model: model.clone(),
            m,
            blocks: vec![block],
            work: encode_work(&mut rng, &[block], m as i64, single, coarse),
        });
    }
    // Every model on a chunk of several blocks of different extents (edge blocks), as the
    // decoder launches them: one table, the blocks one after another.
    let blocks = field::blocks([20, 21, 23], [8, 16, 9]).unwrap();
    let n: usize = blocks.iter().map(Block::len).sum();
    for (label, model) in &models {
        for m in [1, 15] {
            let name = format!(
                "chunk [20, 21, 23] of {} blocks, {label} m {m}",
                blocks.len()
            );
            cases.push(Case {
                name: name.clone(),
                model: model.clone(),
                m,
                blocks: blocks.clone(),
                work: Work::Decode {
                    codes: (0..n).map(|_| rng.range(-3, 3) as i32).collect(),
                },
            });
            cases.push(Case {
                name,
                model: model.clone(),
                m,
                blocks: blocks.clone(),
                work: encode_work(&mut rng, &blocks, m as i64, m == 1, 1.02),
            });
        }
    }
    cases
}

/// g++, or `None` (with the reason printed) where the check cannot be built.
fn compiler() -> Option<PathBuf> {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the CUDA stand-in switches stacks in x86-64 assembly");
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("g++"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: no C++ compiler (apt-get install g++)");
    }
    found
}

/// Builds the check against the kernels in `kernels` and runs it on `cases`: (passed,
/// failed, output). A check that crashes (a broken kernel writing out of bounds) counts as
/// one failure.
fn run_check(cxx: &Path, kernels: &Path, dir: &Path, cases: &Path) -> (usize, usize, String) {
    let exe = dir.join("nglr_check");
    let src = Path::new(REPO).join("tests/kernels/nglr_check.cpp");
    let b = Command::new(cxx)
        .args(["-std=c++20", "-O2", "-Wall", "-Wno-unknown-pragmas", "-I"])
        .arg(kernels)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        b.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&b.stderr)
    );
    let r = Command::new(&exe).arg(cases).output().unwrap();
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let last = out.lines().last().unwrap_or("").to_string();
    let words: Vec<&str> = last.split_whitespace().collect();
    if !(words.len() == 4 && words[1] == "passed,") {
        assert!(!r.status.success(), "no summary: {out}");
        let err = String::from_utf8_lossy(&r.stderr);
        return (0, 1, format!("crashed ({}): {out}{err}", r.status));
    }
    let (passed, failed) = (words[0].parse().unwrap(), words[2].parse().unwrap());
    assert_eq!(r.status.success(), failed == 0, "{out}");
    (passed, failed, out)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resid-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn decode_kernel_matches_the_cpu_bit_for_bit() {
    let Some(cxx) = compiler() else { return };
    let dir = scratch("nglr-kernel");
    let cases = cases();
    let mut bytes = (cases.len() as i64).to_le_bytes().to_vec();
    cases.iter().for_each(|c| c.write(&mut bytes));
    let file = dir.join("cases");
    std::fs::write(&file, &bytes).unwrap();

    let kernels = Path::new(REPO).join("kernels");
    let (passed, failed, out) = run_check(&cxx, &kernels, &dir, &file);
    println!("{out}");
    assert_eq!((passed, failed), (cases.len(), 0), "{out}");

    // The check can fail: each broken kernel must disagree with the CPU somewhere.
    let source = std::fs::read_to_string(kernels.join("nglr.cu")).unwrap();
    for (what, line, wrong) in [
        // No barrier between fronts: a thread runs ahead of its neighbours' writes.
        ("barrier", "        __syncthreads();\n    }\n}", "    }\n}"),
        // Points of a front taken from the wrong diagonal (y + z = s + 1).
        (
            "fronts",
            "const int z0 = max(0, s - ny + 1), z1 = min(nz - 1, s);",
            "const int z0 = max(0, s - ny + 2), z1 = min(nz - 1, s + 1);",
        ),
        // The north-east neighbour read as the north-west one.
        (
            "feature",
            "f[10] = q[i - sy + 1] - l;",
            "f[10] = q[i - sy - 1] - l;",
        ),
        // The reconstruction kept as the Lorenzo error.
        ("error", "eb[i] = ng_error(qb[i], l);", "eb[i] = qb[i];"),
        // The fourth input of each quad read from the third.
        (
            "first layer",
            "w[k + 3] * x[k + 3]);",
            "w[k + 3] * x[k + 2]);",
        ),
        // Encoding: truncating division instead of floor division (negative residuals).
        (
            "floor division",
            "const i64 c = n / m - ((n % m != 0 && n < 0) ? 1 : 0);",
            "const i64 c = n / m;",
        ),
        // Encoding: a reconstruction that misses the bound kept instead of escaped.
        (
            "bound check",
            "if (ng_within(x[i], v, eb, single)) {",
            "if (true) {",
        ),
        // Encoding: the f32 data checked in f64 only.
        (
            "f32 check",
            "if (!single) return fabs(x - v) <= eb;",
            "return fabs(x - v) <= eb;",
        ),
        // The Lorenzo errors not saturated to 32 bits.
        (
            "saturation",
            "return (int)ng_clamp((i64)q - l, -2147483648ll, 2147483647ll);",
            "return (int)((i64)q - l);",
        ),
    ] {
        assert!(source.contains(line), "{what}: the line to break is gone");
        let broken = dir.join(format!("broken-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("nglr.cu"), source.replace(line, wrong)).unwrap();
        std::fs::copy(kernels.join("common.cuh"), broken.join("common.cuh")).unwrap();
        let (_, failed, out) = run_check(&cxx, &broken, &dir, &file);
        assert!(failed > 0, "{what}: the broken kernel passed\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
