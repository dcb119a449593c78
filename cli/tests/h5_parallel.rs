//! The chunk store the filter consults under h5repack (`RESID_CHUNK_STORE`, written by the
//! parallel pass of `resid h5 compress` / `decompress`): a good store is used (no chunk coded
//! again, the same bytes as without it); a damaged store, a stale one (other data) and a file
//! that is no store at all cost only time: every chunk they cannot give is coded by the filter
//! and the output is byte for byte the one without a store. Needs h5repack and the built
//! plugin; skipped (with a message) otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use h5resid::filter::run_codec;
use h5resid::store::{self, Direction, Writer};

const N: usize = 1000;
const CHUNK: usize = 256;

fn plugin_dir() -> Option<PathBuf> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_resid"));
    let dir = exe.parent()?.parent()?.join("release");
    dir.join("libh5resid.so").is_file().then_some(dir)
}

fn values(shift: f32) -> Vec<f32> {
    (0..N)
        .map(|i| (i as f32 * 0.02).sin() * 40.0 + 250.0 + shift)
        .collect()
}

/// The chunks of `v` as HDF5 hands them to the filter: 256 values, the last one padded with
/// zeros (the default fill value).
fn chunk_inputs(v: &[f32]) -> Vec<Vec<u8>> {
    v.chunks(CHUNK)
        .map(|c| {
            let mut b: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
            b.resize(CHUNK * 4, 0);
            b
        })
        .collect()
}

/// Runs h5repack with the plugin and, when given, the store; returns its stderr.
fn repack(plugin: &Path, args: &[&str], from: &Path, to: &Path, store: Option<&Path>) -> String {
    let _ = std::fs::remove_file(to);
    let mut cmd = Command::new("h5repack");
    cmd.args(args)
        .arg(from)
        .arg(to)
        .env("HDF5_PLUGIN_PATH", plugin)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env_remove(store::ENV);
    if let Some(s) = store {
        cmd.env(store::ENV, s);
    }
    let o = cmd.output().expect("run h5repack");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "h5repack failed: {err}");
    err
}

/// (filter mask, bytes) of every stored chunk of /v.
fn raw_chunks(path: &Path) -> Vec<(u32, Vec<u8>)> {
    let f = hdf5::File::open(path).unwrap();
    let ds = f.dataset("v").unwrap();
    (0..ds.num_chunks().unwrap())
        .map(|i| common::raw_chunk(&ds, i))
        .collect()
}

/// The full cd_values of /v's resid filter.
fn cd_of(path: &Path) -> Vec<u32> {
    let f = hdf5::File::open(path).unwrap();
    let ds = f.dataset("v").unwrap();
    ds.filters()
        .into_iter()
        .find_map(|flt| match flt {
            hdf5::filters::Filter::User(32900, cd) => Some(cd),
            _ => None,
        })
        .expect("resid filter on /v")
}

/// Writes a store of `inputs` coded in `dir` with `cd`; returns each value's offset in the file.
fn write_store(path: &Path, dir: Direction, cd: &[u32], inputs: &[Vec<u8>]) -> Vec<usize> {
    let mut w = Writer::create(path).unwrap();
    let mut offsets = Vec::new();
    for input in inputs {
        let value = run_codec(dir == Direction::Decode, cd, input).unwrap();
        offsets.push(w.bytes() as usize);
        w.add(store::key(dir, cd, input), &value).unwrap();
    }
    w.finish().unwrap();
    offsets
}

fn damage(path: &Path, offsets: &[usize]) {
    let mut bytes = std::fs::read(path).unwrap();
    for &o in offsets {
        bytes[o + 3] ^= 0x40;
    }
    std::fs::write(path, bytes).unwrap();
}

fn misses(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with(store::MISS))
        .count()
}

#[test]
fn damaged_or_stale_stores_cost_time_not_data() {
    let have_h5repack = Command::new("h5repack").arg("--version").output().is_ok();
    let (Some(plugin), true) = (plugin_dir(), have_h5repack) else {
        eprintln!("skipped: needs h5repack (hdf5-tools) and target/release/libh5resid.so");
        return;
    };
    let d = std::env::temp_dir().join(format!("resid-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let src = d.join("src.h5");
    let v = values(0.0);
    {
        let f = hdf5::File::create(&src).unwrap();
        let ds = f.new_dataset::<f32>().shape([N]).create("v").unwrap();
        ds.write_raw(&v).unwrap();
    }
    let words: Vec<String> = resid::Params::abs(0.01)
        .to_cd_values()
        .iter()
        .map(|w| w.to_string())
        .collect();
    let ud = format!("/v:UD=32900,0,{},{}", words.len(), words.join(","));
    let layout = format!("/v:CHUNK={CHUNK}");
    let encode = ["-l", &layout, "-f", &ud];
    let (reference, out, st) = (d.join("ref.h5"), d.join("out.h5"), d.join("store"));
    let err = repack(&plugin, &encode, &src, &reference, None);
    assert_eq!(misses(&err), 0, "no store, no miss lines: {err}");
    let want = raw_chunks(&reference);
    assert_eq!(want.len(), 4);
    let cd = cd_of(&reference);
    let inputs = chunk_inputs(&v);

    // A good store: every chunk comes from it, the same bytes.
    let offsets = write_store(&st, Direction::Encode, &cd, &inputs);
    let err = repack(&plugin, &encode, &src, &out, Some(&st));
    assert_eq!(misses(&err), 0, "{err}");
    assert_eq!(raw_chunks(&out), want);

    // A damaged store (every value changed on disk): every chunk coded again, same bytes.
    damage(&st, &offsets);
    let err = repack(&plugin, &encode, &src, &out, Some(&st));
    assert_eq!(misses(&err), 4, "{err}");
    assert_eq!(raw_chunks(&out), want);

    // A stale store (coded from other values): the same.
    write_store(&st, Direction::Encode, &cd, &chunk_inputs(&values(1.0)));
    let err = repack(&plugin, &encode, &src, &out, Some(&st));
    assert_eq!(misses(&err), 4, "{err}");
    assert_eq!(raw_chunks(&out), want);

    // Not a store at all: said once, every chunk coded.
    std::fs::write(&st, vec![7u8; 4096]).unwrap();
    let err = repack(&plugin, &encode, &src, &out, Some(&st));
    assert!(err.contains("not a chunk store"), "{err}");
    assert_eq!(raw_chunks(&out), want);

    // Decoding: a damaged store of decoded chunks gives the values decoding gives.
    let plain = d.join("plain.h5");
    repack(&plugin, &["-f", "/v:NONE"], &reference, &plain, None);
    let stored: Vec<Vec<u8>> = want.iter().map(|(_, b)| b.clone()).collect();
    let offsets = write_store(&st, Direction::Decode, &cd, &stored);
    let read = |p: &Path| {
        hdf5::File::open(p)
            .unwrap()
            .dataset("v")
            .unwrap()
            .read_raw::<f32>()
            .unwrap()
    };
    let err = repack(&plugin, &["-f", "/v:NONE"], &reference, &out, Some(&st));
    assert_eq!(misses(&err), 0, "{err}");
    assert_eq!(read(&out), read(&plain));
    damage(&st, &offsets);
    let err = repack(&plugin, &["-f", "/v:NONE"], &reference, &out, Some(&st));
    assert_eq!(misses(&err), 4, "{err}");
    assert_eq!(read(&out), read(&plain));
    assert!(read(&plain)
        .iter()
        .zip(&v)
        .all(|(a, b)| (a - b).abs() <= 0.01));
    let _ = std::fs::remove_dir_all(&d);
}
