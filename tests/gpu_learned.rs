//! The learned stages on the GPU (issue #6). NeurLZ: the fixed-point inference gives the
//! CPU's corrections bit for bit, the training kernels give the CPU's gradients (to float
//! rounding), and a chunk whose network was trained on the GPU decodes on the CPU to the same
//! values, within the bound. NGLR: the GPU's Adam phase reaches the CPU's loss, and a chunk
//! fitted on the GPU decodes on the CPU within the bound; the GPU's NGLR decode gives the CPU's
//! reconstruction bit for bit. The tests that need a device are `#[ignore]`d (a machine
//! without a GPU reports them as ignored, not as passes); `scripts/gpu-check` runs them with
//! `--include-ignored` on the GPU machine, where a missing device fails them, and
//! `gpu_learned_bench` measures throughput there. `learned_stages_fall_back_to_the_cpu` checks
//! the machines without a GPU and stays un-ignored.

use std::sync::Arc;
use std::time::Instant;

use common::{bytes32, wave_field};
use resid::backend::cuda::train::{self as cuda_train, Conv3Kernels};
use resid::backend::{self, cuda};
use resid::enhance::neurlz::{self, Inputs, Norm};
use resid::field::{self, Block};
use resid::nn::conv::{Arch, QLayer, QNet};
use resid::nn::conv_train::{self, FNet, TrainConfig, TrainSet};
use resid::nn::infer::INPUTS;
use resid::nn::train;
use resid::nn::weights::Model;
use resid::predict::{nglr, Predictor};
use resid::{Backend, ChunkInfo, DType, Enhancer, Params, PredictorChoice};

mod common;
#[path = "common/nglr_models.rs"]
mod nglr_models;

/// The device. The tests that need one are ignored (`cargo test` on a machine without a GPU
/// reports them as ignored, not as passes); `scripts/gpu-check` runs them with
/// `--include-ignored` on the GPU machine, where a missing device is a failure.
fn gpu() -> Arc<cuda::Cuda> {
    backend::device().unwrap_or_else(|| {
        panic!(
            "no usable CUDA device, and this test needs one (it is #[ignore]d for that; \
             scripts/gpu-check runs it on the GPU machine). RESID_LOG=info says why none is usable"
        )
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A stored network with weights, scales and biases at and near their extremes.
fn random_net(arch: Arch, rng: &mut Rng) -> QNet {
    let layers = arch
        .layers()
        .iter()
        .map(|&shape| QLayer {
            shape,
            w: (0..shape.weights())
                .map(|_| match rng.below(4) {
                    0 => 127,
                    1 => -127,
                    _ => rng.below(255) as i32 as i8,
                })
                .collect(),
            mult: (0..shape.cout)
                .map(|_| 1 + rng.below(65535) as u16)
                .collect(),
            shift: (0..shape.cout).map(|_| 10 + rng.below(20) as u8).collect(),
            bias: (0..shape.cout)
                .map(|_| rng.below(1 << 24) as i32 - (1 << 23))
                .collect(),
        })
        .collect();
    QNet { arch, layers }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn neurlz_inference_matches_cpu() {
    let g = gpu();
    let mut rng = Rng(0x5151_7777_1234_abcd);
    let mut compared = 0;
    // (slices, h, w, fields, inputs, width, index spread): odd and even sizes, one-point
    // slices, cross-field chunks, both input kinds, the widest network.
    for (d0, h, w, fields, inputs, width, spread) in [
        (4, 33, 47, 1, Inputs::Slice, 6, 1000i64),
        (6, 64, 64, 1, Inputs::Volume, 6, 1 << 20),
        (1, 1, 1, 1, Inputs::Slice, 4, 10),
        (3, 1, 9, 1, Inputs::Volume, 4, 100),
        (6, 17, 16, 3, Inputs::Volume, 6, 1 << 27),
        (8, 20, 31, 4, Inputs::Slice, 16, 1 << 27),
        (2, 130, 257, 2, Inputs::Slice, 6, 50_000),
    ] {
        let dims = [d0, h, w];
        let n = d0 * h * w;
        let q: Vec<i32> = (0..n)
            .map(|i| {
                let smooth = ((i % w) as f64 * 0.3).sin() * spread as f64 * 0.5;
                (smooth as i64 + rng.below(spread as u64 / 8 + 1) as i64 - spread / 16) as i32
            })
            .collect();
        let norm: Vec<Norm> = (0..fields)
            .map(|_| Norm {
                center: rng.below(spread as u64) as i32 - (spread / 2) as i32,
                half: 1 + rng.below(spread as u64) as u32,
            })
            .collect();
        let arch = Arch {
            cin: inputs.planes() * fields,
            width,
            cout: fields,
        };
        let net = random_net(arch, &mut rng);
        for m in [1i64, 3] {
            let cpu = neurlz::corrections(inputs, &net, &norm, &q, dims, m);
            let gpu = g
                .neurlz_corrections(inputs, &net, &norm, &q, dims, m)
                .unwrap();
            assert!(
                cpu == gpu,
                "corrections differ: {dims:?} {fields} {inputs:?} m={m}"
            );
            // Batches of one and of two slices (a ragged last batch for odd counts), as
            // large chunks run.
            let two = 2 * 4 * (h * w) * (arch.cin + 5 * width + fields);
            for batch_bytes in [1, two] {
                let small = g
                    .neurlz_corrections_in(inputs, &net, &norm, &q, dims, m, batch_bytes)
                    .unwrap();
                assert!(
                    cpu == small,
                    "batched corrections differ: {dims:?} {batch_bytes}"
                );
            }
            assert!(cpu.iter().any(|&c| c != 0));
            compared += n;
        }
    }
    eprintln!("NeurLZ inference: CPU == GPU on {compared} corrections");
}

/// One field's training set (2 inputs, 1 target) over `slices` slices of `side x side`, as
/// [`train_set`] makes its arrays.
fn one_field_set(
    slices: usize,
    side: usize,
    [input, target, mask]: &[Vec<f32>; 3],
) -> TrainSet<'_> {
    TrainSet {
        k: 2,
        o: 1,
        h: side,
        w: side,
        slices,
        input,
        target,
        mask,
    }
}

/// The patch size and the patches of one training step of `batch` patches of `patch^2`, as
/// training picks them.
fn one_batch(set: &TrainSet<'_>, batch: usize, patch: usize) -> PatchBatch {
    let cfg = TrainConfig {
        steps: 1,
        batch,
        patch,
        ..TrainConfig::default()
    };
    (
        conv_train::patch_size(set, &cfg),
        conv_train::schedule(set, &cfg),
    )
}

type PatchBatch = ((usize, usize), Vec<(usize, usize, usize)>);

/// A training set of `slices` slices of `h x w` with `k` inputs and `o` targets per slice.
fn train_set(
    slices: usize,
    h: usize,
    w: usize,
    k: usize,
    o: usize,
    rng: &mut Rng,
) -> [Vec<f32>; 3] {
    let n = slices * h * w;
    let input: Vec<f32> = (0..k * n)
        .map(|i| ((i % w) as f32 * 0.2).sin() + 0.3 * rng.unit())
        .collect();
    let target: Vec<f32> = (0..o * n).map(|_| 0.6 * rng.unit()).collect();
    let mask: Vec<f32> = (0..o * n)
        .map(|_| if rng.below(10) == 0 { 0.0 } else { 1.0 })
        .collect();
    [input, target, mask]
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn neurlz_gradients_match_cpu() {
    let g = gpu();
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    for (slices, h, w, k, o, width, patch, batch) in [
        (3, 80, 70, 2, 1, 6, 48, 8),
        (2, 7, 5, 4, 2, 4, 48, 3),
        (5, 33, 40, 6, 3, 6, 17, 5),
    ] {
        let [input, target, mask] = train_set(slices, h, w, k, o, &mut rng);
        let set = TrainSet {
            k,
            o,
            h,
            w,
            slices,
            input: &input,
            target: &target,
            mask: &mask,
        };
        let arch = Arch {
            cin: k,
            width,
            cout: o,
        };
        let mut net = FNet::new(arch, 7);
        // Larger weights so every path carries signal.
        net.params.iter_mut().for_each(|v| *v *= 1.5);
        let (ps, picks) = one_batch(&set, batch, patch);
        let (gc, tc) = conv_train::batch_grad(&net, &set, &picks, ps);
        let scale = gc.iter().fold(0f32, |a, &b| a.max(b.abs()));
        assert!(scale > 0.0);
        for kernels in conv3_kernels(&g) {
            let (gg, tg) = g.conv_batch_grad(&net, &set, &picks, ps, kernels).unwrap();
            assert_eq!(tc, tg, "points counted");
            for (i, (a, b)) in gc.iter().zip(&gg).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * scale + 1e-3 * a.abs(),
                    "param {i}: CPU {a} GPU {b} (largest {scale}) {slices}x{h}x{w} k={k} o={o} {kernels:?}"
                );
            }
            eprintln!(
                "NeurLZ gradients: CPU == GPU ({kernels:?}) to float rounding on {} parameters ({h}x{w}, batch {batch})",
                gc.len()
            );
        }
    }
}

/// The 3x3 kernel sets this device runs: the FMA kernels, and from sm_80 the tensor cores
/// for the weight gradients alone and for every stride-1 pass.
fn conv3_kernels(g: &cuda::Cuda) -> Vec<Conv3Kernels> {
    let mut k = vec![Conv3Kernels::Fma];
    if g.arch_number() >= 80 {
        k.extend([Conv3Kernels::TcWeightGrads, Conv3Kernels::TensorCores]);
    }
    k
}

/// On sm_80 and later the tensor-core convolution agrees with the FMA kernels (the check
/// training runs once a process before it uses them), so training takes the tensor cores.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn tensor_core_convolution_agrees_with_fma() {
    let g = gpu();
    if conv3_kernels(&g).len() < 2 {
        eprintln!("{}: no tensor-core kernels below sm_80", g.describe());
        return;
    }
    assert!(cuda_train::tensor_cores_agree(&g).unwrap());
    assert!(cuda_train::tensor_cores_usable(&g));
}

/// [`wave_field`] of `[n0, n1, n2]`, its bytes and the f32 chunk of that shape.
fn field_chunk(n0: usize, n1: usize, n2: usize) -> (Vec<f32>, Vec<u8>, ChunkInfo) {
    let x = wave_field(n0, n1, n2, 0.0);
    let data = bytes32(&x);
    let chunk = ChunkInfo::new(DType::F32, &[n0, n1, n2]).unwrap();
    (x, data, chunk)
}

/// `resid::decompress` with `RESID_BACKEND` set to `env` (cleared again after).
fn decompress_with(env: &str, bytes: &[u8]) -> Vec<u8> {
    std::env::set_var(backend::ENV, env);
    let d = resid::decompress(bytes).unwrap();
    std::env::remove_var(backend::ENV);
    d
}

/// A chunk trained and enhanced on the GPU: the CPU decodes it to the same bytes as the GPU,
/// every value within the bound's limit, and the trained network lowers the error as the
/// CPU-trained one does.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn gpu_trained_chunk_decodes_the_same_on_the_cpu() {
    let _g = gpu();
    let (x, data, chunk) = field_chunk(8, 96, 96);
    for e in [Enhancer::Strict, Enhancer::Relaxed] {
        let base = Params::rel(1e-2)
            .with_enhancer(e)
            .with_enhancer_budget(4)
            .with_enhancer_force(true);
        let on = |backend| Params { backend, ..base };
        let t = Instant::now();
        let cg = resid::compress(&data, &chunk, &on(Backend::Cuda)).unwrap();
        let tg = t.elapsed();
        let t = Instant::now();
        let cc = resid::compress(&data, &chunk, &on(Backend::Cpu)).unwrap();
        let tc = t.elapsed();
        // Decoded under auto (the GPU for this size) and on the CPU.
        let dg = resid::decompress(&cg).unwrap();
        let (dc, dcc) = (decompress_with("cpu", &cg), decompress_with("cpu", &cc));
        assert!(dg == dc, "{e:?}: GPU and CPU decode differ");
        let eb = resid::inspect(&cg).unwrap().header.eb;
        let limit = if e == Enhancer::Strict { eb } else { 2.0 * eb };
        let err = |d: &[u8]| {
            d.chunks_exact(4)
                .zip(&x)
                .map(|(b, &v)| {
                    let y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    (y as f64 - v as f64).abs()
                })
                .fold((0f64, 0f64), |(mx, s), e| (mx.max(e), s + e * e))
        };
        let (max_g, sse_g) = err(&dc);
        let (_, sse_c) = err(&dcc);
        assert!(max_g <= limit, "{e:?}: max error {max_g} over {limit}");
        // GPU and CPU training differ in float rounding only: their networks should gain
        // about equally (within 25% of the squared error).
        assert!(
            sse_g <= 1.25 * sse_c,
            "{e:?}: GPU-trained SSE {sse_g} vs CPU-trained {sse_c}"
        );
        eprintln!(
            "NeurLZ {e:?} chunk: GPU-trained ({:.2} s, {} B) decodes the same on CPU and GPU; SSE {sse_g:.4e} vs CPU-trained {sse_c:.4e} ({:.2} s, {} B)",
            tg.as_secs_f64(),
            cg.len(),
            tc.as_secs_f64(),
            cc.len()
        );
    }
}

/// NGLR training samples from a smooth field on a grid of `ext` (no escapes).
fn nglr_samples(ext: [usize; 3]) -> (Vec<[i64; INPUTS]>, Vec<i64>) {
    let x = wave_field(ext[0], ext[1], ext[2], 0.0);
    let q: Vec<i32> = x.iter().map(|v| (v * 500.0).round() as i32).collect();
    let esc = vec![false; q.len()];
    let (mut f, mut t) = (Vec::new(), Vec::new());
    nglr::training_pairs(&q, &q, &esc, ext, &mut f, &mut t);
    (f, t)
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn nglr_adam_reaches_the_cpu_loss() {
    let g = gpu();
    for (ext, hidden, batch, epochs) in [([12, 40, 40], 4, 128, 8), ([6, 20, 30], 32, 37, 3)] {
        let (f, t) = nglr_samples(ext);
        let cfg = train::Config {
            hidden,
            batch,
            epochs,
            ..train::Config::default()
        };
        let (_, p) = train::adam_problem(&f, &t, &cfg).unwrap();
        let cpu = train::adam(&p);
        let gpu = g.nglr_adam(&p).unwrap();
        let (l0, lc, lg) = (p.loss(&p.params), p.loss(&cpu), p.loss(&gpu));
        assert!(lc < l0, "the CPU fit lowers the loss ({l0} -> {lc})");
        assert!(
            (lg - lc).abs() <= 0.01 * lc,
            "GPU loss {lg} vs CPU {lc} (start {l0}), {} samples, hidden {hidden}",
            f.len()
        );
        eprintln!(
            "NGLR fit: GPU loss {lg:.5} vs CPU {lc:.5} (start {l0:.5}), {} samples, hidden {hidden}, batch {batch}",
            f.len()
        );
    }
}

/// A chunk whose NGLR network was fitted on the GPU, and whose NGLR blocks were coded there,
/// decodes on the CPU within the bound, in about the CPU's chunk's size: NGLR on every block,
/// and NGLR among auto's candidates.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn gpu_fitted_nglr_chunk_decodes_on_the_cpu() {
    let _g = gpu();
    let (x, data, chunk) = field_chunk(24, 80, 80);
    for predictor in [PredictorChoice::Nglr, PredictorChoice::AutoNglr] {
        let base = Params::rel(1e-4).with_predictor(predictor);
        let on = |backend| resid::compress(&data, &chunk, &Params { backend, ..base }).unwrap();
        let (cg, cc) = (on(Backend::Cuda), on(Backend::Cpu));
        let d = decompress_with("cpu", &cg);
        let eb = resid::inspect(&cg).unwrap().header.eb;
        let max = d
            .chunks_exact(4)
            .zip(&x)
            .map(|(b, &v)| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 - v as f64).abs())
            .fold(0f64, f64::max);
        assert!(max <= eb, "{predictor:?}: max error {max} over {eb}");
        assert!(
            (cg.len() as f64) <= 1.02 * cc.len() as f64,
            "{predictor:?}: GPU {} B vs CPU {} B",
            cg.len(),
            cc.len()
        );
        eprintln!(
            "NGLR chunk ({predictor:?}): GPU-fitted and coded {} B, CPU {} B, decodes within the bound on the CPU",
            cg.len(),
            cc.len()
        );
    }
}

/// A chunk with NGLR on every block, large enough that auto takes the GPU for NGLR's prediction
/// both ways (`backend::Stage::NglrEncode`, `NglrDecode` with
/// `RESID_BACKEND=auto`): at the default training budget the fit stays on the CPU, so auto
/// writes the CPU backend's chunk byte for byte, and reads it back to the CPU's values.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn nglr_chunk_under_auto_matches_the_cpu() {
    let _g = gpu();
    let (_, data, chunk) = field_chunk(64, 256, 256);
    assert!(data.len() >= backend::Stage::NglrEncode.auto_min());
    assert!(data.len() >= backend::Stage::NglrDecode.auto_min());
    let base = Params::rel(1e-4).with_predictor(PredictorChoice::Nglr);
    let on = |backend| resid::compress(&data, &chunk, &Params { backend, ..base }).unwrap();
    let (auto, cpu) = (on(Backend::Auto), on(Backend::Cpu));
    assert!(
        auto == cpu,
        "auto ({} B) and CPU ({} B) chunks differ",
        auto.len(),
        cpu.len()
    );
    let (da, dc) = (
        decompress_with("auto", &auto),
        decompress_with("cpu", &auto),
    );
    assert!(da == dc, "auto and CPU decodes differ");
    eprintln!(
        "NGLR chunk under auto: {} MiB -> {} KiB, CPU == GPU (auto's NGLR prediction on the GPU both ways)",
        data.len() >> 20,
        auto.len() >> 10
    );
}

/// NGLR blocks' codes, small with a few huge ones (wrapping indices), one block after another.
fn nglr_codes(rng: &mut nglr_models::Rng, n: usize) -> Vec<i32> {
    (0..n)
        .map(|i| {
            let c = rng.range(-6, 6) as i32;
            if i % 997 == 5 {
                c.wrapping_mul(300_000_007)
            } else {
                c
            }
        })
        .collect()
}

/// The CPU decoder's reconstruction of `codes` (blocks one after another).
fn nglr_cpu(model: &Model, blocks: &[Block], codes: &[i32], m: i32) -> Vec<i32> {
    use rayon::prelude::*;
    let p = nglr::Nglr::from_model(model.clone());
    let mut out = codes.to_vec();
    let mut parts = Vec::new();
    let mut rest = out.as_mut_slice();
    for b in blocks {
        let (mine, others) = rest.split_at_mut(b.len());
        parts.push((mine, b.ext));
        rest = others;
    }
    parts
        .into_par_iter()
        .for_each(|(q, ext)| p.decode(q, ext, m));
    out
}

/// NGLR's decode kernel gives the CPU decoder's reconstruction bit for bit: networks of
/// several sizes and a linear model, one launch over blocks of the encoder's size and edge
/// blocks; and chunks coded on the CPU (NGLR on every block, and NGLR among the per-block
/// candidates) decode to the same bytes with the GPU as without.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn nglr_decode_matches_cpu() {
    let g = gpu();
    let mut rng = nglr_models::Rng(7);
    let dims = [70, 64, 100];
    let blocks = field::blocks(dims, [64, 64, 64]).unwrap();
    let n: usize = blocks.iter().map(Block::len).sum();
    for (label, model) in [
        (
            "net h4",
            Model::Network(nglr_models::net(&mut rng, 4, false)),
        ),
        (
            "net h32",
            Model::Network(nglr_models::net(&mut rng, 32, false)),
        ),
        (
            "net linear-only",
            Model::Network(nglr_models::net(&mut rng, 8, true)),
        ),
        ("linear", Model::Linear(nglr_models::linear(&mut rng))),
    ] {
        for m in [1, 15] {
            let codes = nglr_codes(&mut rng, n);
            let want = nglr_cpu(&model, &blocks, &codes, m);
            let mut got = codes;
            g.nglr_decode(&model, &blocks, &mut got, m).unwrap();
            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(bad, 0, "{label} m {m}: {bad} of {n} indices differ");
        }
    }
    let (_, data, chunk) = field_chunk(40, 100, 100);
    for predictor in [PredictorChoice::Nglr, PredictorChoice::AutoNglr] {
        let p = Params::rel(1e-4).with_predictor(predictor);
        let c = resid::compress(
            &data,
            &chunk,
            &Params {
                backend: Backend::Cpu,
                ..p
            },
        )
        .unwrap();
        let (cpu, gpu) = (decompress_with("cpu", &c), decompress_with("cuda", &c));
        assert!(cpu == gpu, "{predictor:?}: the GPU decoded other bytes");
    }
    eprintln!("NGLR decode: GPU and CPU reconstructions equal");
}

/// NGLR's encode kernel gives the CPU encoder's codes, reconstruction and escapes bit for
/// bit: networks of several sizes and a linear model, f32 and f64 bound checks, feedback steps
/// 1 and 15, grids whose reconstructions sometimes miss the bound.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn nglr_encode_matches_cpu() {
    let g = gpu();
    let mut rng = nglr_models::Rng(13);
    let blocks = field::blocks([70, 64, 100], [64, 64, 64]).unwrap();
    for (label, model) in [
        (
            "net h4",
            Model::Network(nglr_models::net(&mut rng, 4, false)),
        ),
        (
            "net h32",
            Model::Network(nglr_models::net(&mut rng, 32, false)),
        ),
        ("linear", Model::Linear(nglr_models::linear(&mut rng))),
    ] {
        for (m, single, coarse) in [(1, true, 1.0), (15, true, 1.03), (15, false, 1.03)] {
            let (coding, x, q, escaped) =
                nglr_models::encode_input(&mut rng, &blocks, m, single, coarse);
            let want = nglr_models::cpu_encode(&model, &blocks, &coding, &x, &q, &escaped);
            let before = escaped.iter().filter(|&&e| e).count();
            let (mut gq, mut gesc) = (q, escaped);
            let codes = g
                .nglr_encode(&model, &blocks, &coding, &x, &mut gq, &mut gesc)
                .unwrap();
            let what = format!("{label} m {m} single {single}");
            assert!(codes == want.0, "{what}: codes differ");
            assert!(gq == want.1, "{what}: reconstructions differ");
            assert!(gesc == want.2, "{what}: escapes differ");
            let added = want.2.iter().filter(|&&e| e).count() - before;
            eprintln!("NGLR encode {what}: equal ({added} points escaped by the encoder)");
        }
    }
}

/// NGLR's prediction on a 64 x 512 x 512 chunk (64 blocks of 64^3) on the GPU machine: the
/// decode alone (host to host) on the GPU and the CPU; and a whole chunk's encode
/// (`resid::compress`) and decode (`resid::decompress`) with the CUDA backend and without.
/// Apart from `gpu_learned_bench`, so that its figures do not wait on the 100-epoch run.
#[test]
#[ignore = "a benchmark on a CUDA device: scripts/gpu-check runs it"]
fn gpu_nglr_bench() {
    let g = gpu();
    let mut out = String::new();
    let mut rng = nglr_models::Rng(11);
    let dims = [64, 512, 512];
    let blocks = field::blocks(
        dims,
        field::block_extents(dims, field::ADAPTIVE_BLOCK_TARGET),
    )
    .unwrap();
    let n: usize = blocks.iter().map(Block::len).sum();
    for (label, model) in [
        (
            "network, 4 hidden units (default)",
            Model::Network(nglr_models::net(&mut rng, 4, false)),
        ),
        ("linear", Model::Linear(nglr_models::linear(&mut rng))),
    ] {
        let codes = nglr_codes(&mut rng, n);
        let t = Instant::now();
        let want = nglr_cpu(&model, &blocks, &codes, 15);
        let tc = t.elapsed().as_secs_f64();
        let mut got = codes.clone();
        g.nglr_decode(&model, &blocks, &mut got, 15).unwrap();
        assert!(got == want, "bench: NGLR decode differs");
        let mut got = codes;
        let t = Instant::now();
        g.nglr_decode(&model, &blocks, &mut got, 15).unwrap();
        let tg = t.elapsed().as_secs_f64();
        out += &format!(
            "| NGLR prediction, decode, {} blocks of 64^3, {label}: GPU host to host | {tg:.3} s | {:.0} MB/s (CPU, {} threads: {tc:.3} s, {:.0} MB/s) |\n",
            blocks.len(),
            mbs(n * 4, tg),
            rayon::current_num_threads(),
            mbs(n * 4, tc)
        );
    }
    // Whole chunks of 4, 16 and 64 MiB (NGLR on every block), best of 2 on each side: where
    // the GPU starts to pay is where `backend::Stage::{NglrEncode,NglrDecode}` thresholds are set.
    let best = |f: &mut dyn FnMut()| {
        (0..2)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    for depth in [4, 16, 64] {
        let (_, data, chunk) = field_chunk(depth, 512, 512);
        let p = Params::rel(1e-4).with_predictor(PredictorChoice::Nglr);
        let enc: Vec<f64> = [Backend::Cpu, Backend::Cuda]
            .into_iter()
            .map(|backend| {
                best(&mut || {
                    resid::compress(&data, &chunk, &Params { backend, ..p }).unwrap();
                })
            })
            .collect();
        let c = resid::compress(&data, &chunk, &p).unwrap();
        let dec: Vec<f64> = ["cpu", "cuda"]
            .into_iter()
            .map(|env| {
                best(&mut || {
                    assert_eq!(decompress_with(env, &c).len(), data.len());
                })
            })
            .collect();
        let mib = data.len() >> 20;
        for (what, t) in [
            ("resid::compress, backend cuda (fit and prediction)", &enc),
            ("resid::decompress, RESID_BACKEND=cuda", &dec),
        ] {
            out += &format!(
                "| NGLR chunk {depth} x 512 x 512 f32 ({mib} MiB, rel 1e-4, NGLR on every block), {what}, best of 2 | {:.3} s | {:.0} MB/s (cpu: {:.3} s, {:.0} MB/s) |\n",
                t[1],
                mbs(data.len(), t[1]),
                t[0],
                mbs(data.len(), t[0])
            );
        }
    }
    eprintln!("{out}");
    if let Ok(p) = std::env::var("RESID_BENCH_OUT") {
        let mut s = std::fs::read_to_string(&p).unwrap_or_default();
        s += "\n| NGLR's prediction on the GPU | time | rate |\n|---|---|---|\n";
        s += &out;
        std::fs::write(p, s).unwrap();
    }
}

/// Without a usable GPU, asking for the CUDA backend trains and enhances on the CPU: the same
/// chunk as the CPU backend writes, byte for byte (ARCHITECTURE.md invariant 5), decoded to the
/// same values.
#[test]
fn learned_stages_fall_back_to_the_cpu() {
    if backend::device().is_some() {
        eprintln!("a GPU is present: the fallback is checked on machines without one");
        return;
    }
    let (_, data, chunk) = field_chunk(8, 64, 64);
    for base in [
        Params::rel(1e-2)
            .with_enhancer(Enhancer::Relaxed)
            .with_enhancer_budget(1)
            .with_enhancer_force(true),
        Params::rel(1e-4).with_predictor(PredictorChoice::Nglr),
    ] {
        let on = |backend| resid::compress(&data, &chunk, &Params { backend, ..base }).unwrap();
        let c = on(Backend::Cpu);
        assert!(on(Backend::Cuda) == c, "{base:?}");
        // Decoding too (NGLR's prediction, NeurLZ's inference).
        let asked = decompress_with("cuda", &c);
        assert!(asked == resid::decompress(&c).unwrap(), "{base:?}");
    }
}

fn mbs(bytes: usize, s: f64) -> f64 {
    bytes as f64 / s / 1e6
}

/// NeurLZ throughput on the GPU machine: inference (host to host) against the CPU, the
/// encoder's default training schedule, and the paper's scale (100 epochs over a 512^3 field).
#[test]
#[ignore = "a benchmark on a CUDA device: scripts/gpu-check runs it"]
fn gpu_learned_bench() {
    let g = gpu();
    let side: usize = std::env::var("RESID_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut out = String::new();
    let mut rng = Rng(99);
    let dims = [side, side, side];
    let n = side * side * side;
    let q: Vec<i32> = (0..n)
        .map(|i| {
            let (z, y, x) = (i / (side * side), (i / side) % side, i % side);
            ((x as f64 * 0.05).sin() * 3000.0 + (y as f64 * 0.03).cos() * 2000.0 + z as f64) as i32
        })
        .collect();
    let norm = [Norm {
        center: 0,
        half: 6000,
    }];
    let arch = Arch {
        cin: 2,
        width: 6,
        cout: 1,
    };
    // A trained-looking network: small random float weights, quantized as the encoder does.
    let fnet = FNet::new(arch, 5);
    let net = fnet.quantize();
    let t = Instant::now();
    let corr = g
        .neurlz_corrections(Inputs::Slice, &net, &norm, &q, dims, 1)
        .unwrap();
    let t_gpu = t.elapsed().as_secs_f64();
    let t = Instant::now();
    g.neurlz_corrections(Inputs::Slice, &net, &norm, &q, dims, 1)
        .unwrap();
    let t_gpu2 = t.elapsed().as_secs_f64();
    // The CPU on 16 slices of the same field.
    let sub = 16.min(side);
    let t = Instant::now();
    let cpu = neurlz::corrections(
        Inputs::Slice,
        &net,
        &norm,
        &q[..sub * side * side],
        [sub, side, side],
        1,
    );
    let t_cpu = t.elapsed().as_secs_f64();
    assert!(
        cpu[..] == corr[..sub * side * side],
        "bench corrections differ"
    );
    out += &format!(
        "| NeurLZ inference {side}^3 (width 6), host to host, GPU | {:.3} s (first call {:.3} s) | {:.0} MB/s |\n",
        t_gpu2,
        t_gpu,
        mbs(n * 4, t_gpu2)
    );
    out += &format!(
        "| NeurLZ inference, CPU ({} threads), {sub} slices | {:.3} s | {:.1} MB/s |\n",
        rayon::current_num_threads(),
        t_cpu,
        mbs(sub * side * side * 4, t_cpu)
    );
    drop(q);

    // Training: the encoder's default schedule on 16 slices, GPU and CPU.
    let slices = 16.min(side);
    let arrays = train_set(slices, side, side, 2, 1, &mut rng);
    let set = one_field_set(slices, side, &arrays);
    let cfg = TrainConfig {
        steps: 320,
        ..TrainConfig::default()
    };
    g.train_conv(arch, &set, &TrainConfig { steps: 2, ..cfg })
        .unwrap();
    let t = Instant::now();
    g.train_conv(arch, &set, &cfg).unwrap();
    let tg = t.elapsed().as_secs_f64();
    let t = Instant::now();
    conv_train::train(arch, &set, &cfg);
    let tc = t.elapsed().as_secs_f64();
    out += &format!(
        "| NeurLZ training, encoder default (320 steps x 8 patches of 48^2), GPU | {tg:.3} s | CPU {tc:.2} s |\n"
    );
    drop(arrays);

    // NGLR's fit at the default budget (32 Ki samples) and the largest (255 Ki).
    for ext in [[34, 34, 34], [66, 66, 66]] {
        let (f, t) = nglr_samples(ext);
        let (_, p) = train::adam_problem(&f, &t, &train::Config::default()).unwrap();
        g.nglr_adam(&p).unwrap();
        let t0 = Instant::now();
        g.nglr_adam(&p).unwrap();
        let tg = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        train::adam(&p);
        let tc = t0.elapsed().as_secs_f64();
        out += &format!(
            "| NGLR fit (Adam, 8 epochs), {} samples, GPU | {tg:.3} s | CPU {tc:.3} s |\n",
            f.len()
        );
    }

    // The paper's scale: 100 epochs over the whole field, in batches of 64^2 patches.
    let arrays = train_set(side, side, side, 2, 1, &mut rng);
    let set = one_field_set(side, side, &arrays);
    for kernels in conv3_kernels(&g) {
        let launches = g.conv_profile(arch, &set, 256, 64, kernels).unwrap();
        let total: f32 = launches.iter().map(|p| p.1).sum();
        let mut by_kernel: Vec<(&str, f32)> = Vec::new();
        for &(name, ms) in &launches {
            match by_kernel.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 += ms,
                None => by_kernel.push((name, ms)),
            }
        }
        let list = |v: &[(&str, f32)]| {
            v.iter()
                .map(|(n, ms)| format!("{n} {ms:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!(
            "| one training step, 256 patches of 64^2, by kernel ({kernels:?}) | {total:.2} ms | {} |\n",
            list(&by_kernel)
        );
        out += &format!(
            "| the same step, launch by launch ({kernels:?}) | {total:.2} ms | {} |\n",
            list(&launches)
        );
    }
    let auto = if cuda_train::tensor_cores_usable(&g) {
        Conv3Kernels::TcWeightGrads
    } else {
        Conv3Kernels::Fma
    };
    {
        let batch = 256usize;
        // Two runs of different lengths: their difference is the steps' time alone (the
        // training set's upload, 2 GiB here, is in both).
        let timed = |steps: usize, kernels: Conv3Kernels| {
            let cfg = TrainConfig {
                steps,
                batch,
                patch: 64,
                ..TrainConfig::default()
            };
            let t = Instant::now();
            g.train_conv_with(arch, &set, &cfg, kernels).unwrap();
            t.elapsed().as_secs_f64()
        };
        // The other kernel sets' steps, for comparison (not the full run): 1000 - 200 steps,
        // since 250 - 50 (0.2 s) varied by 10% from run to run on an H200.
        for kernels in conv3_kernels(&g).into_iter().filter(|&k| k != auto) {
            let (t1, t2) = (timed(200, kernels), timed(1000, kernels));
            out += &format!(
                "| NeurLZ training step ({kernels:?}), 256 patches of 64^2 | {:.2} ms | 1000 - 200 steps |\n",
                (t2 - t1) / 800.0 * 1e3
            );
        }
        let timed = |steps: usize| timed(steps, auto);
        let (t1, t2) = (timed(200), timed(1000));
        let per_step = (t2 - t1) / 800.0;
        let fixed = t1 - 200.0 * per_step;
        let steps = (100 * n).div_ceil(batch * 64 * 64);
        let projected = fixed + per_step * steps as f64;
        let what = format!(
            "| NeurLZ training, 100 epochs over {side}^3 ({steps} steps x {batch} patches of 64^2), GPU, as training runs ({auto:?})"
        );
        out += &if projected <= 60.0 {
            let full = timed(steps);
            format!(
                "{what} | {full:.2} s measured | {:.2} ms/step, {fixed:.2} s set upload |\n",
                per_step * 1e3
            )
        } else {
            format!(
                "{what} | {projected:.1} s projected (1000 - 200 steps) | {:.2} ms/step, {fixed:.2} s set upload |\n",
                per_step * 1e3
            )
        };
    }
    eprintln!("{out}");
    if let Ok(p) = std::env::var("RESID_BENCH_OUT") {
        let mut s = std::fs::read_to_string(&p).unwrap_or_default();
        s += "\n| learned stages on the GPU | time | rate |\n|---|---|---|\n";
        s += &out;
        std::fs::write(p, s).unwrap();
    }
}

/// One NeurLZ training step at the benchmark's batch (256 patches of 64^2) on the FMA kernels,
/// then on the tensor cores, and nothing else on the device: what `ncu` profiles to see where a
/// step's kernels stall (`scripts/gpu-check` does not run it).
#[test]
#[ignore = "for a profiler on a CUDA device (ncu); scripts/gpu-check does not run it"]
fn gpu_training_step_for_a_profiler() {
    let g = gpu();
    let (side, batch, patch) = (64, 256, 64);
    let arrays = train_set(side, side, side, 2, 1, &mut Rng(5));
    let set = one_field_set(side, side, &arrays);
    let arch = Arch {
        cin: 2,
        width: 6,
        cout: 1,
    };
    let net = FNet::new(arch, 5);
    let (ps, picks) = one_batch(&set, batch, patch);
    for kernels in [Conv3Kernels::Fma, Conv3Kernels::TensorCores] {
        let (grad, total) = g.conv_batch_grad(&net, &set, &picks, ps, kernels).unwrap();
        assert!(total > 0.0 && grad.iter().all(|v| v.is_finite()));
    }
}
