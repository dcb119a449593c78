//! Compares the base codec with the NeurLZ enhancer on raw fields (`NAME_<d0>x<d1>...<.f32>`):
//! bits per value, PSNR, max error / bound, enhancer section size and outliers, times.
//!
//! `cargo run --release --example neurlz_eval -- FILE... [rel=R,R..] [modes=off,strict,relaxed]
//!  [budget=N] [stack]`
//!
//! `stack`: the files are fields of one grid; each is scaled to [0, 1] (so one relative bound
//! means the same for every field) and they are stacked along a new leading dimension into one
//! chunk; modes `xstrict` / `xrelaxed` then use cross-field inputs.

use std::time::Instant;

use resid::enhance::neurlz::Model;
use resid::format::section;
use resid::{ChunkInfo, DType, Enhancer, Params};

fn load(path: &str) -> (String, Vec<usize>, Vec<f32>) {
    let name = path.rsplit('/').next().unwrap();
    let stem = name.rsplit_once('.').unwrap().0;
    let shape: Vec<usize> = stem
        .rsplit('_')
        .next()
        .unwrap()
        .split('x')
        .map(|d| d.parse().unwrap())
        .collect();
    let bytes = std::fs::read(path).unwrap();
    let v = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (stem.to_string(), shape, v)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |k: &str| args.iter().find_map(|a| a.strip_prefix(k));
    let rels: Vec<f64> = opt("rel=").map_or(vec![1e-2, 1e-3], |r| {
        r.split(',').map(|v| v.parse().unwrap()).collect()
    });
    let modes: Vec<String> = opt("modes=")
        .map_or(vec!["off".into(), "strict".into(), "relaxed".into()], |m| {
            m.split(',').map(String::from).collect()
        });
    let budget: u8 = opt("budget=").map_or(0, |b| b.parse().unwrap());
    let files: Vec<&String> = args
        .iter()
        .filter(|a| !a.contains('=') && *a != "stack")
        .collect();
    let mut inputs: Vec<(String, Vec<usize>, Vec<f32>)> = files.iter().map(|f| load(f)).collect();
    if args.iter().any(|a| a == "stack") {
        let shape = inputs[0].1.clone();
        let mut all = Vec::new();
        let mut names = Vec::new();
        for (n, s, v) in &inputs {
            assert_eq!(s, &shape);
            let (lo, hi) = v
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            all.extend(v.iter().map(|&x| (x - lo) / (hi - lo)));
            names.push(n.split('_').nth(2).unwrap_or(n).to_string());
        }
        let mut s = vec![inputs.len()];
        s.extend(&shape);
        inputs = vec![(format!("stack[{}]", names.join(",")), s, all)];
    }
    println!("field\trel\tmode\tbits/value\tPSNR\tmax_err/eb\tenh_bytes\toutliers\tenc_s\tdec_s");
    for (name, shape, x) in &inputs {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunk = ChunkInfo::new(DType::F32, shape).unwrap();
        let (lo, hi) = x.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| {
            (a.min(v as f64), b.max(v as f64))
        });
        let range = hi - lo;
        for &rel in &rels {
            for mode in &modes {
                let enhancer = match mode.as_str() {
                    "off" => Enhancer::Off,
                    "strict" => Enhancer::Strict,
                    "relaxed" => Enhancer::Relaxed,
                    "xstrict" => Enhancer::StrictCross,
                    "xrelaxed" => Enhancer::RelaxedCross,
                    m => panic!("mode {m}"),
                };
                let p = Params::rel(rel)
                    .with_enhancer(enhancer)
                    .with_enhancer_budget(budget);
                let t = Instant::now();
                let c = resid::compress(&bytes, &chunk, &p).unwrap();
                let enc = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let d = resid::decompress(&c).unwrap();
                let dec = t.elapsed().as_secs_f64();
                let (mut sse, mut maxe) = (0f64, 0f64);
                for (a, b) in x.iter().zip(d.chunks_exact(4)) {
                    let b = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let e = (*a as f64 - b as f64).abs();
                    sse += e * e;
                    maxe = maxe.max(e);
                }
                let psnr = 20.0 * (range / (sse / x.len() as f64).sqrt()).log10();
                let s = resid::inspect(&c).unwrap();
                let (mut eb_bytes, mut outl) = (0, 0);
                if s.sections.iter().any(|&(id, _)| id == section::ENHANCE) {
                    eb_bytes = s.sections.last().unwrap().1;
                    // Re-read the section to count the outliers.
                    let payload = &c[c.len() - eb_bytes..];
                    let dims = resid::field::grid_dims(shape);
                    outl = Model::read(payload, dims).unwrap().outliers.len();
                }
                println!(
                    "{name}\t{rel:e}\t{mode}\t{:.4}\t{psnr:.2}\t{:.4}\t{eb_bytes}\t{outl}\t{enc:.2}\t{dec:.3}",
                    c.len() as f64 * 8.0 / x.len() as f64,
                    maxe / s.header.eb,
                );
            }
        }
    }
}
