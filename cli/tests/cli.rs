//! End-to-end tests of the `resid` binary: raw round trips within the bound, `inspect` output,
//! HDF5 recompression (when h5repack and the built plugin are present) and the error messages
//! users see for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn resid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resid"))
        .args(args)
        .env_remove("RESID_PLUGIN")
        .output()
        .expect("run resid")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resid-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn field(n: [usize; 3]) -> Vec<f64> {
    let mut v = Vec::new();
    for i in 0..n[0] {
        for j in 0..n[1] {
            for k in 0..n[2] {
                let (x, y, z) = (i as f64 / 5.0, j as f64 / 7.0, k as f64 / 3.0);
                v.push(
                    100.0 * x.sin() * y.cos() + 3.0 * z + 0.01 * ((i * 31 + j * 7 + k) % 13) as f64,
                );
            }
        }
    }
    v
}

fn write_f32(p: &Path, v: &[f64]) {
    std::fs::write(
        p,
        v.iter()
            .flat_map(|x| (*x as f32).to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn write_f64(p: &Path, v: &[f64]) {
    std::fs::write(
        p,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn read_f32(p: &Path) -> Vec<f64> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn raw_f32_round_trip_abs_and_rel() {
    let d = tmpdir("f32");
    let orig = field([12, 17, 9]);
    let input = d.join("t_12x17x9.f32");
    write_f32(&input, &orig);
    let as_f32: Vec<f64> = orig.iter().map(|x| *x as f32 as f64).collect();

    let o = resid(&[
        "compress",
        input.to_str().unwrap(),
        "--shape",
        "12x17x9",
        "--abs",
        "0.05",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("ratio") && out.contains("abs bound 0.05"),
        "{out}"
    );
    let rsid = d.join("t_12x17x9.f32.rsid");
    assert!(rsid.is_file());
    let back = d.join("back.f32");
    let o = resid(&[
        "decompress",
        rsid.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
        "--check",
        input.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("within"), "{out}");
    assert!(max_err(&as_f32, &read_f32(&back)) <= 0.05);

    // rel: the bound is relative to the whole array's range; lz4 coder.
    let o = resid(&[
        "compress",
        input.to_str().unwrap(),
        "--shape",
        "12,17,9",
        "--rel",
        "1e-3",
        "--coder",
        "lz4",
        "-o",
        d.join("r.rsid").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = resid(&["decompress", d.join("r.rsid").to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (lo, hi) = as_f32
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    // default output: r.rsid -> r.f32
    assert!(max_err(&as_f32, &read_f32(&d.join("r.f32"))) <= 1e-3 * (hi - lo));
}

#[test]
fn raw_f64_round_trip_psnr_and_inspect() {
    let d = tmpdir("f64");
    let orig = field([20, 10, 10]);
    let input = d.join("x.bin");
    write_f64(&input, &orig);
    let o = resid(&[
        "compress",
        input.to_str().unwrap(),
        "--dtype",
        "f64",
        "--shape",
        "20x10x10",
        "--abs",
        "1e-6",
        "--predictor",
        "wavelet",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rsid = d.join("x.bin.rsid");
    let o = resid(&["inspect", rsid.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    // The wavelet word (the auto words leave a chunk of 2,000 values to the blocks).
    for want in [
        "type:        f64",
        "shape:       20x10x10",
        "mode:        abs (requested bound 0.000001)",
        "coder:       range",
        "layout:      wavelet",
        "transform:   CDF 9/7 wavelet",
        "section:     wavelet",
        "section:     escapes",
    ] {
        assert!(out.contains(want), "missing `{want}` in\n{out}");
    }
    let o = resid(&["decompress", rsid.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let back: Vec<f64> = std::fs::read(d.join("x.bin.f64"))
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(max_err(&orig, &back) <= 1e-6);
}

#[test]
fn bad_input_is_explained() {
    let d = tmpdir("bad");
    let input = d.join("a.f32");
    write_f32(&input, &field([4, 4, 4]));
    let p = input.to_str().unwrap();
    let missing = d.join("missing.f32");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["compress", p, "--shape", "4x4x5", "--abs", "1"],
            2,
            "needs 320 bytes",
        ),
        (
            &["compress", p, "--shape", "4x4x4", "--abs", "-1"],
            2,
            "must be > 0",
        ),
        (
            &["compress", p, "--shape", "4x4x4", "--nrmse", "2"],
            2,
            "NRMSE",
        ),
        (
            &["compress", p, "--shape", "4x0x4", "--abs", "1"],
            2,
            "is not a shape",
        ),
        (
            &["compress", p, "--shape", "64", "--abs", "1", "--rel", "1"],
            2,
            "cannot be used with",
        ),
        (&["compress", p, "--shape", "64"], 2, "--abs"),
        (
            &["compress", missing, "--shape", "4", "--abs", "1"],
            1,
            "cannot read",
        ),
        (&["decompress", p], 1, "not a readable resid chunk"),
        (&["inspect", p], 1, "neither an HDF5 file nor a resid chunk"),
    ];
    for (args, code, msg) in cases {
        let o = resid(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {out}{err}");
        assert!(
            err.contains(msg),
            "{args:?}: expected `{msg}` in stderr:\n{err}"
        );
    }
    // No type from the name: asks for --dtype.
    let noext = d.join("a.raw");
    std::fs::copy(&input, &noext).unwrap();
    let o = resid(&[
        "compress",
        noext.to_str().unwrap(),
        "--shape",
        "64",
        "--abs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--dtype"), "{:?}", text(&o));
    // Does not overwrite without --force.
    let o = resid(&["compress", p, "--shape", "64", "--abs", "1", "-o", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("is the input file"), "{:?}", text(&o));
    std::fs::write(d.join("o.rsid"), b"x").unwrap();
    let o = resid(&[
        "compress",
        p,
        "--shape",
        "64",
        "--abs",
        "1",
        "-o",
        d.join("o.rsid").to_str().unwrap(),
    ]);
    assert!(text(&o).1.contains("--force"), "{:?}", text(&o));
    // Truncated chunk.
    let o = resid(&[
        "compress",
        p,
        "--shape",
        "64",
        "--abs",
        "0.001",
        "-o",
        d.join("t.rsid").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let full = std::fs::read(d.join("t.rsid")).unwrap();
    std::fs::write(d.join("cut.rsid"), &full[..full.len() / 2]).unwrap();
    let o = resid(&[
        "decompress",
        d.join("cut.rsid").to_str().unwrap(),
        "-o",
        d.join("cut.f32").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("cannot decompress") || text(&o).1.contains("not a readable"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn help_teaches() {
    let o = resid(&["--help"]);
    let out = text(&o).0;
    assert!(o.status.success());
    for want in [
        "compress",
        "decompress",
        "inspect",
        "h5",
        "bench",
        "Examples:",
        "--rel",
    ] {
        assert!(out.contains(want), "`{want}` not in --help:\n{out}");
    }
    let out = text(&resid(&["h5", "compress", "--help"])).0;
    assert!(
        out.contains("resid h5 compress in.h5 out.h5 --rel 1e-3"),
        "{out}"
    );
}

/// The built plugin, for h5repack: target/<profile>/../release/libh5resid.so.
fn plugin_dir() -> Option<PathBuf> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_resid"));
    let dir = exe.parent()?.parent()?.join("release");
    dir.join("libh5resid.so").is_file().then_some(dir)
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn h5_compress_and_inspect() {
    let (Some(plugin), true) = (plugin_dir(), have("h5repack")) else {
        eprintln!("skipped: needs h5repack (hdf5-tools) and target/release/libh5resid.so (cargo build --release -p h5resid)");
        return;
    };
    let d = tmpdir("h5");
    let src = d.join("in.h5");
    let orig = field([10, 20, 30]);
    {
        let f = hdf5::File::create(&src).unwrap();
        let a: Vec<f32> = orig.iter().map(|x| *x as f32).collect();
        f.new_dataset::<f32>()
            .shape([10, 20, 30])
            .create("T")
            .unwrap()
            .write_raw(&a)
            .unwrap();
        f.new_dataset::<i32>()
            .shape([5])
            .create("I")
            .unwrap()
            .write_raw(&[1, 2, 3, 4, 5])
            .unwrap();
        let g = f.create_group("grp").unwrap();
        g.new_dataset::<f64>()
            .shape([10, 20, 30])
            .chunk([5, 10, 30])
            .create("D")
            .unwrap()
            .write_raw(&orig)
            .unwrap();
    }
    let out = d.join("out.h5");
    // No file locking in the child: `in.h5` was written by this process, and a child that a
    // test running beside this one spawned meanwhile may have inherited its descriptor (HDF5
    // opens without O_CLOEXEC) and with it the lock ("unable to lock file, errno = 11",
    // seen once in CI).
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_resid"))
            .args(args)
            .env("RESID_PLUGIN", &plugin)
            .env("HDF5_USE_FILE_LOCKING", "FALSE")
            .output()
            .unwrap()
    };
    let o = run(&[
        "h5",
        "compress",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--abs",
        "0.01",
        "--quiet",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    assert!(
        so.contains("/T:") && so.contains("/grp/D:") && so.contains("2 float datasets"),
        "{so}"
    );

    let o = run(&["inspect", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    assert!(
        so.contains("/grp/D: 10x20x30 float64, chunks 5x10x30, 4 chunks stored"),
        "{so}"
    );
    assert!(
        so.contains("mode=abs bound=0.01") && so.contains("coder=range"),
        "{so}"
    );
    assert!(!so.contains("/I:"), "{so}");

    // The data read back (through the plugin, by h5py-free means: decode the raw chunk).
    let o = run(&[
        "inspect",
        out.to_str().unwrap(),
        "--dataset",
        "T",
        "--chunks",
        "0",
    ]);
    assert!(
        text(&o).0.contains("1 chunks: mode=abs bound=0.01"),
        "{:?}",
        text(&o)
    );
    let f = hdf5::File::open(&out).unwrap();
    let ds = f.dataset("T").unwrap();
    let (_, buf) = common::raw_chunk(&ds, 0);
    let dec = resid::decompress(&buf).unwrap();
    let back: Vec<f64> = dec
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let want: Vec<f64> = orig.iter().map(|x| *x as f32 as f64).collect();
    assert!(max_err(&want, &back) <= 0.01);

    // Bad requests are refused before any work.
    for (args, msg) in [
        (vec!["--dataset", "I"], "not a non-empty float32/float64"),
        (vec!["--dataset", "nope"], "no dataset `nope`"),
    ] {
        let mut a = vec![
            "h5",
            "compress",
            src.to_str().unwrap(),
            d.join("x.h5").to_str().unwrap().to_owned().leak(),
            "--abs",
            "1",
        ];
        a.extend(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
        assert!(text(&o).1.contains(msg), "{:?}", text(&o));
    }
}

#[test]
fn nglr_from_the_command_line_shows_its_weights() {
    let d = tmpdir("nglr");
    let orig = field([24, 32, 32]);
    let input = d.join("x.bin");
    write_f64(&input, &orig);
    let o = resid(&[
        "compress",
        input.to_str().unwrap(),
        "--dtype",
        "f64",
        "--shape",
        "24x32x32",
        "--rel",
        "1e-3",
        "--predictor",
        "nglr",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = resid(&["inspect", d.join("x.bin.rsid").to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("predictors:  nglr "), "{out}");
    assert!(
        out.contains("section:     weights (NGLR) (212 bytes)"),
        "{out}"
    );
}

/// The codec's messages reach stderr as the plugin shows them: a bad `RESID_BACKEND` and CUDA
/// asked for without a GPU are warnings (once), `RESID_LOG=info` says which backend ran,
/// `RESID_LOG=off` silences them.
#[test]
fn codec_messages_follow_resid_log() {
    let d = tmpdir("log");
    let input = d.join("t_8x9x10.f32");
    write_f32(&input, &field([8, 9, 10]));
    let run = |level: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_resid"))
            .args(["compress", input.to_str().unwrap(), "--shape", "8x9x10"])
            .args([
                "--abs",
                "0.01",
                "--predictor",
                "lorenzo",
                "--backend",
                "cuda",
            ])
            .arg("--force")
            .env("RESID_BACKEND", "bogus")
            .env("RESID_LOG", level)
            .output()
            .expect("run resid");
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        err
    };
    let warn = "[WARN] resid: RESID_BACKEND=\"bogus\" is not cpu, cuda or auto: using cd_values";
    let refused = "[WARN] resid: the CUDA backend was asked for, but no GPU is usable";
    let err = run("");
    assert_eq!(err.matches(warn).count(), 1, "{err}");
    assert!(err.matches(refused).count() <= 1, "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("[WARN] resid: ")),
        "{err}"
    );
    let err = run("info");
    assert!(err.contains(warn), "{err}");
    let up = err.contains("[INFO] resid: GPU backend on");
    let down = err.contains("[INFO] resid: no usable GPU");
    assert!(up != down, "{err}");
    assert_eq!(err.contains(refused), down, "{err}");
    assert_eq!(run("off"), "");
}
