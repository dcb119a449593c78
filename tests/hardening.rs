//! Hardening (issue #8): hostile chunks give errors, never panics; a declared size that does not
//! match is refused; decoding from many threads at once gives the single-threaded bytes.
//!
//! Also home of the fuzz seed-corpus writer:
//! `RESID_WRITE_CORPUS=1 cargo test --release --test hardening -- --ignored write_fuzz_corpus`
//! rewrites `fuzz/corpus/<target>/seed_*` from `testdata/` and `tests/golden/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resid::format::{self, section, Header, Layout};
use resid::{ChunkInfo, Coder, DType, Error, ErrorMode, Params};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A smooth 3D f32 field with a few special values, `n0 x n1 x n2`.
fn field(n: [usize; 3], seed: u32) -> Vec<f32> {
    let mut x = Vec::with_capacity(n[0] * n[1] * n[2]);
    for i in 0..n[0] {
        for j in 0..n[1] {
            for k in 0..n[2] {
                let (a, b, c) = (i as f32 * 0.11, j as f32 * 0.07, k as f32 * 0.05);
                x.push(
                    10.0 * (a + b).sin() * (c + seed as f32).cos()
                        + ((i * 31 + j * 17 + k * 7) as u32 ^ seed) as f32 % 13.0 * 1e-3,
                );
            }
        }
    }
    if x.len() > 10 {
        x[3] = f32::NAN;
        x[7] = f32::INFINITY;
        x[9] = 1e-41;
    }
    x
}

/// Rewrites every checksum of a chunk (header, sections, block directory) so a damaged chunk
/// reaches the decoders behind the CRCs. Same logic as `fuzz/src/lib.rs`.
fn fix_checksums(d: &mut [u8]) {
    fn u32_at(d: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
    }
    fn put_crc(d: &mut [u8], at: usize, from: usize, to: usize) {
        if to <= d.len() && from <= to && at + 4 <= d.len() {
            let c = crc32fast::hash(&d[from..to]);
            d[at..at + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
    if d.len() < 8 {
        return;
    }
    let header_end = 8 + 8 * d[7] as usize + 52;
    put_crc(d, header_end, 0, header_end);
    let Some(sections) = u32_at(d, header_end.wrapping_sub(4)) else {
        return;
    };
    let mut pos = header_end + 4;
    for _ in 0..sections.min(16) {
        let Some(len) = d
            .get(pos + 4..pos + 12)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        else {
            return;
        };
        let start = pos + 16;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= d.len())
        else {
            return;
        };
        if d[pos] == section::BLOCKS {
            let p = &mut d[start..end];
            if let Some(count) = u32_at(p, 0) {
                let mut at = 4 + 12 * count as usize;
                for e in 0..count as usize {
                    let entry = 4 + 12 * e;
                    let Some(len) = u32_at(p, entry + 4) else {
                        break;
                    };
                    let Some(stop) = at.checked_add(len as usize).filter(|&s| s <= p.len()) else {
                        break;
                    };
                    put_crc(p, entry + 8, at, stop);
                    at = stop;
                }
            }
        }
        put_crc(d, pos + 12, start, end);
        pos = end;
    }
}

/// Valid chunks of every kind the encoder writes: both element types, both coders, every
/// mode, stored and coded, one block and several.
fn sample_chunks() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let small = field([6, 10, 12], 1);
    let modes = [
        Params::abs(1e-3),
        Params::rel(1e-4),
        Params::new(ErrorMode::Nrmse, 1e-4),
        Params::new(ErrorMode::Psnr, 60.0),
    ];
    for coder in [Coder::Range, Coder::Lz4] {
        for p in modes {
            let p = p.with_coder(coder);
            let chunk = ChunkInfo::new(DType::F32, &[6, 10, 12]).unwrap();
            let c = resid::compress(&f32_bytes(&small), &chunk, &p).unwrap();
            out.push((format!("f32_{:?}_{:?}", p.mode, coder), c));
        }
        let x64: Vec<u8> = small
            .iter()
            .flat_map(|&v| (v as f64 * 1.0001).to_le_bytes())
            .collect();
        let chunk = ChunkInfo::new(DType::F64, &[12, 60]).unwrap();
        let c = resid::compress(&x64, &chunk, &Params::abs(1e-7).with_coder(coder)).unwrap();
        out.push((format!("f64_abs_{coder:?}"), c));
    }
    // Noise at a tight bound: stored.
    let noise: Vec<f32> = (0..64u32)
        .map(|i| f32::from_bits(0x3f80_0000 ^ i.wrapping_mul(2654435761) >> 9))
        .collect();
    let chunk = ChunkInfo::new(DType::F32, &[64]).unwrap();
    out.push((
        "stored".into(),
        resid::compress(&f32_bytes(&noise), &chunk, &Params::abs(1e-9)).unwrap(),
    ));
    // More than one block (the encoder splits above 2^19 values).
    let big = field([16, 64, 1024], 3);
    let chunk = ChunkInfo::new(DType::F32, &[16, 64, 1024]).unwrap();
    out.push((
        "multiblock".into(),
        resid::compress(&f32_bytes(&big), &chunk, &Params::rel(1e-2)).unwrap(),
    ));
    out
}

fn declared_len(c: &[u8]) -> usize {
    let h = resid::inspect(c).unwrap().header;
    h.len() * h.dtype.size()
}

/// Decodes `bad` with the limit the plugin would use; must give `Err`, or `Ok` with exactly the
/// declared size (a damaged value the checksums cannot see is fine, a wrong size is not).
fn decode_hostile(bad: &[u8], limit: usize) -> Option<Error> {
    match resid::decompress_limited(bad, limit) {
        Ok(out) => {
            assert_eq!(out.len(), limit, "decoded to the wrong size");
            None
        }
        Err(e) => Some(e),
    }
}

#[test]
fn truncated_chunks_give_errors() {
    for (name, c) in sample_chunks() {
        let limit = declared_len(&c);
        let tries = if c.len() > 8192 { 40 } else { 300 };
        let step = (c.len() / tries).max(1);
        for cut in (0..c.len()).step_by(step) {
            assert!(
                decode_hostile(&c[..cut], limit).is_some(),
                "{name}: truncated to {cut} of {} bytes decoded",
                c.len()
            );
            let mut fixed = c[..cut].to_vec();
            fix_checksums(&mut fixed);
            assert!(
                decode_hostile(&fixed, limit).is_some(),
                "{name}: truncated to {cut} bytes with checksums fixed decoded"
            );
        }
    }
}

#[test]
fn bit_flips_give_errors_or_the_declared_size() {
    for (name, c) in sample_chunks() {
        let limit = declared_len(&c);
        // Big chunks take long to decode: fewer positions.
        let tries = if c.len() > 8192 { 40 } else { 400 };
        let step = (c.len() / tries).max(1);
        for pos in (0..c.len()).step_by(step) {
            for bit in [0, 3, 7] {
                let mut bad = c.clone();
                bad[pos] ^= 1 << bit;
                // Every byte is covered by a checksum: a single flip is always detected.
                assert!(
                    decode_hostile(&bad, limit).is_some(),
                    "{name}: flip of bit {bit} at byte {pos} went unnoticed"
                );
                // With the checksums rewritten the decoders see the damage: no panic.
                fix_checksums(&mut bad);
                decode_hostile(&bad, limit);
                let _ = resid::inspect(&bad);
            }
        }
    }
}

#[test]
fn wrong_magic_version_checksum_and_trailing_bytes() {
    let (_, c) = sample_chunks().swap_remove(0);
    let limit = declared_len(&c);
    let mut magic = c.clone();
    magic[0] = b'X';
    assert_eq!(resid::decompress(&magic).unwrap_err(), Error::WrongMagic);
    let mut version = c.clone();
    version[4] = format::FORMAT_VERSION + 1;
    fix_checksums(&mut version);
    assert_eq!(
        resid::decompress(&version).unwrap_err(),
        Error::UnsupportedVersion {
            found: format::FORMAT_VERSION + 1,
            newest: format::FORMAT_VERSION
        }
    );
    version[4] = 0;
    fix_checksums(&mut version);
    assert_eq!(
        resid::decompress(&version).unwrap_err(),
        Error::UnsupportedVersion {
            found: 0,
            newest: format::FORMAT_VERSION
        }
    );
    let mut crc = c.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0x10;
    assert!(matches!(
        resid::decompress(&crc).unwrap_err(),
        Error::ChecksumMismatch { .. }
    ));
    let mut trailing = c.clone();
    trailing.push(0);
    assert!(resid::decompress_limited(&trailing, limit).is_err());
    assert!(resid::decompress_limited(&[], limit).is_err());
}

/// A header that declares a huge shape (an absurd allocation if believed).
fn huge_header(layout: Layout, shape: Vec<usize>, block: [usize; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    Header {
        version: resid::format::BASE_VERSION,
        layout,
        dtype: DType::F32,
        shape,
        mode: ErrorMode::Abs,
        coder: Coder::Range,
        requested: 1e-3,
        eb: 1e-3,
        mid: 0.0,
        step: 2e-3,
        feedback: 1,
        block,
        sections: if layout == Layout::Stored { 1 } else { 2 },
    }
    .write(&mut out);
    out
}

#[test]
fn huge_declared_shape_is_refused_before_allocating() {
    let shape = vec![1 << 20, 1 << 20, 1 << 10];
    for layout in [Layout::Stored, Layout::Coded] {
        let mut c = huge_header(layout, shape.clone(), [1 << 20, 1 << 20, 1 << 10]);
        format::write_section(&mut c, section::STORED, &[0; 16]);
        let s = resid::inspect(&c);
        assert!(s.is_ok() || layout == Layout::Coded, "{s:?}");
        // What the plugin does: the dataset's chunk size is the limit.
        for limit in [0, 4096, 64 << 20] {
            assert!(matches!(
                resid::decompress_limited(&c, limit),
                Err(Error::TooLarge { .. })
            ));
        }
    }
    // A shape whose byte size overflows usize is not even a valid header.
    let c = huge_header(Layout::Stored, vec![usize::MAX / 2, 3], [1, 1, 1]);
    assert!(resid::inspect(&c).is_err());
    assert!(resid::decompress(&c).is_err());
}

#[test]
fn declared_size_must_match() {
    for (name, c) in sample_chunks() {
        let n = declared_len(&c);
        assert_eq!(resid::decompress_limited(&c, n).unwrap().len(), n, "{name}");
        assert!(
            matches!(
                resid::decompress_limited(&c, n - 1),
                Err(Error::TooLarge { needed, limit }) if needed == n && limit == n - 1
            ),
            "{name}"
        );
    }
}

#[test]
fn concurrent_decodes_match_single_threaded() {
    let chunks: Arc<Vec<Vec<u8>>> = Arc::new(sample_chunks().into_iter().map(|(_, c)| c).collect());
    // Reference: one thread, and a one-thread rayon pool inside the codec.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let reference: Arc<Vec<Vec<u8>>> = Arc::new(pool.install(|| {
        chunks
            .iter()
            .map(|c| resid::decompress(c).unwrap())
            .collect()
    }));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (chunks, reference) = (chunks.clone(), reference.clone());
            std::thread::spawn(move || {
                for round in 0..4 {
                    // Each thread walks the chunks in its own order.
                    for k in 0..chunks.len() {
                        let i = (k * (t + 1) + round) % chunks.len();
                        let out = resid::decompress(&chunks[i]).unwrap();
                        assert!(out == reference[i], "thread {t}: chunk {i} differs");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn concurrent_compression_is_deterministic() {
    let x = f32_bytes(&field([16, 32, 48], 7));
    let chunk = ChunkInfo::new(DType::F32, &[16, 32, 48]).unwrap();
    let one = resid::compress(&x, &chunk, &Params::rel(1e-4)).unwrap();
    let x = Arc::new(x);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (x, chunk) = (x.clone(), chunk.clone());
            std::thread::spawn(move || resid::compress(&x, &chunk, &Params::rel(1e-4)).unwrap())
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() == one);
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seed corpus.

fn read_field(name: &str) -> Option<Vec<u8>> {
    std::fs::read(repo().join("testdata").join(name)).ok()
}

/// The first `n` values (f32) of a testdata field.
fn head_f32(name: &str, n: usize) -> Vec<u8> {
    read_field(name).expect("testdata field")[..4 * n].to_vec()
}

fn write_seed(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
}

#[test]
#[ignore]
fn write_fuzz_corpus() {
    if std::env::var_os("RESID_WRITE_CORPUS").is_none() {
        return;
    }
    let corpus = repo().join("fuzz/corpus");
    let _ = std::fs::remove_dir_all(&corpus);

    // Real chunks: small slices of the testdata fields in every mode and coder, the golden
    // chunks, and the synthetic sample chunks (including a two-block one).
    let mut chunks: Vec<(String, Vec<u8>)> = Vec::new();
    let fields = [
        (
            "wrf_T",
            head_f32("wrf_T_4x14x48x48.f32", 8 * 48),
            [8usize, 48],
        ),
        (
            "wrf_QCLOUD",
            head_f32("wrf_QCLOUD_4x14x48x48.f32", 48 * 48),
            [48, 48],
        ),
        (
            "wmag",
            head_f32("wmag_turbulence_vorticity_magnitude_91x91x91.f32", 4 * 91),
            [4, 91],
        ),
    ];
    let modes = [
        ("abs", Params::abs(1e-2)),
        ("rel", Params::rel(1e-3)),
        ("nrmse", Params::new(ErrorMode::Nrmse, 1e-3)),
        ("psnr", Params::new(ErrorMode::Psnr, 50.0)),
    ];
    for (fname, data, shape) in &fields {
        for (mname, p) in modes {
            for coder in [Coder::Range, Coder::Lz4, Coder::Rans, Coder::Grouped] {
                let chunk = ChunkInfo::new(DType::F32, shape).unwrap();
                let c = resid::compress(data, &chunk, &p.with_coder(coder)).unwrap();
                chunks.push((format!("{fname}_{mname}_{coder:?}"), c));
            }
        }
    }
    let miranda = read_field("miranda_density_slice_128x128.f64").unwrap()[..8 * 32 * 32].to_vec();
    let chunk = ChunkInfo::new(DType::F64, &[32, 32]).unwrap();
    chunks.push((
        "miranda_f64_rel".into(),
        resid::compress(&miranda, &chunk, &Params::rel(1e-5)).unwrap(),
    ));
    for e in std::fs::read_dir(repo().join("tests/golden")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rsid") {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            chunks.push((format!("golden_{name}"), std::fs::read(&p).unwrap()));
        }
    }
    for (name, c) in sample_chunks() {
        if c.len() <= 64 << 10 {
            chunks.push((format!("sample_{name}"), c));
        }
    }
    for (name, c) in &chunks {
        write_seed(&corpus.join("decompress_any"), name, c);
        // The container target only needs the framing: keep its seeds short.
        if c.len() <= 4096 {
            write_seed(&corpus.join("container"), name, c);
        }
    }

    // roundtrip: control bytes (see fuzz/fuzz_targets/roundtrip.rs) then raw values.
    let rt = |name: &str, ctl: u8, dims: &[u8], bound: [u8; 2], values: &[u8]| {
        let mut s = vec![ctl, (dims.len() - 1) as u8];
        s.extend_from_slice(dims);
        s.extend_from_slice(&bound);
        s.extend_from_slice(values);
        write_seed(&corpus.join("roundtrip"), name, &s);
    };
    let wrf_t = head_f32("wrf_T_4x14x48x48.f32", 16 * 48);
    let qcloud = head_f32("wrf_QCLOUD_4x14x48x48.f32", 32 * 48);
    let wmag = head_f32("wmag_turbulence_vorticity_magnitude_91x91x91.f32", 8 * 91);
    // dims bytes are `d - 1` (the target maps a byte b to 1 + b % 64).
    for (mode, mname) in [(0u8, "abs"), (1, "rel"), (2, "nrmse"), (3, "psnr")] {
        for (lz4, cname) in [(0u8, "range"), (2, "lz4")] {
            let ctl = mode << 2 | lz4;
            rt(
                &format!("wrf_T_{mname}_{cname}"),
                ctl,
                &[15, 47],
                [28, 0],
                &wrf_t,
            );
            rt(
                &format!("qcloud_{mname}_{cname}"),
                ctl,
                &[31, 47],
                [30, 0],
                &qcloud,
            );
            rt(
                &format!("wmag_{mname}_{cname}"),
                ctl,
                &[7, 90 - 64],
                [3, 0],
                &wmag[..8 * 27 * 4],
            );
        }
    }
    rt("miranda_f64", 1 | 1 << 2, &[31, 31], [5, 0], &miranda);
    // Random-walk style with raw specials mixed in (style 2), 3D.
    let walk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    rt("walk_specials", 2 << 4, &[7, 15, 31], [20, 0], &walk);
    rt(
        "walk_f64_lz4",
        1 | 2 | 1 << 4,
        &[3, 9, 9, 9],
        [25, 7],
        &walk,
    );
    // Every cd predictor word (ctl bit 7, then the predictor byte) on turbulence rows, rel 1e-2.
    for word in 0..6u8 {
        let mut s = vec![0x80 | 1 << 2, word, 1, 7, 90 - 64, 2, 0];
        s.extend_from_slice(&wmag[..8 * 27 * 4]);
        write_seed(
            &corpus.join("roundtrip"),
            &format!("wmag_predictor_{word}"),
            &s,
        );
    }

    // The wavelet word on 8 x 90 turbulence values (a dimension long enough to transform).
    let mut s = vec![0x80 | 1 << 2, 6, 1, 7, 89, 2, 0];
    s.extend_from_slice(&wmag[..8 * 90 * 4]);
    write_seed(&corpus.join("roundtrip"), "wmag_wavelet", &s);

    // The packed coder (ctl bit 1, a predictor byte of 128 or more) and the grouped coder (192
    // or more), each with auto and Lorenzo.
    for (coder, bytes) in [("packed", [132u8, 133]), ("grouped", [192, 193])] {
        for (word, byte) in bytes.into_iter().enumerate() {
            let mut s = vec![0x80 | 2 | 1 << 2, byte, 1, 7, 90 - 64, 2, 0];
            s.extend_from_slice(&wmag[..8 * 27 * 4]);
            write_seed(
                &corpus.join("roundtrip"),
                &format!("wmag_{coder}_predictor_{word}"),
                &s,
            );
        }
    }

    // cd_values: little-endian words.
    let le = |w: &[u32]| -> Vec<u8> { w.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let cd = corpus.join("cd_values");
    for (name, p) in modes {
        let words = p.to_cd_values();
        write_seed(&cd, &format!("user_{name}"), &le(&words[..4]));
        write_seed(&cd, &format!("full_{name}"), &le(&words));
        let chunk = ChunkInfo::new(DType::F32, &[4, 14, 48, 48]).unwrap();
        let local = resid::params::local_cd_values(&p, &chunk).unwrap();
        write_seed(&cd, &format!("local_{name}"), &le(&local));
    }
    let local = resid::params::local_cd_values(
        &Params::abs(1e-6).with_coder(Coder::Lz4),
        &ChunkInfo::new(DType::F64, &[128, 128]).unwrap(),
    )
    .unwrap();
    write_seed(&cd, "local_f64_lz4", &le(&local));
}

/// The error from decoding a one-block chunk of predictor word `predictor` whose first block
/// directory entry has byte `byte` set to `forged`, checksums rewritten.
fn forged_directory_entry(
    predictor: resid::PredictorChoice,
    byte: usize,
    forged: u8,
) -> resid::Error {
    let x = field([12, 20, 24], 7);
    let info = ChunkInfo::new(DType::F32, &[12, 20, 24]).unwrap();
    let p = Params::rel(1e-3).with_predictor(predictor);
    let mut c = resid::compress(&f32_bytes(&x), &info, &p).unwrap();
    // 64 + 8 * rank header, 16-byte section header, u32 block count, then the entry.
    assert_eq!(c[64 + 8 * 3], section::BLOCKS);
    c[64 + 8 * 3 + 16 + 4 + byte] = forged;
    fix_checksums(&mut c);
    resid::decompress(&c).unwrap_err()
}

#[test]
fn bad_coarse_feedback_step_is_refused() {
    // Directory byte 2 (coarse feedback step) must be 0 or odd, and 0 for Lorenzo blocks.
    for (predictor, forged) in [
        (resid::PredictorChoice::Lorenzo, 11u8),
        (resid::PredictorChoice::Interp, 10u8),
    ] {
        let e = forged_directory_entry(predictor, 2, forged);
        assert!(e.to_string().contains("coarse feedback step"), "{e}");
    }
}

#[test]
fn bad_kernel_byte_is_refused() {
    // Directory byte 3 (the interpolation kernel: two 4-bit offsets) must give weights 0..=12
    // and be 0 for Lorenzo blocks.
    for (predictor, forged, says) in [
        (resid::PredictorChoice::Lorenzo, 1u8, "reserved"),
        (resid::PredictorChoice::Interp, 0x08, "kernel byte 0x08"),
        (resid::PredictorChoice::Interp, 0xa0, "kernel byte 0xa0"),
    ] {
        let e = forged_directory_entry(predictor, 3, forged);
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// Packed blocks (coder id 3) with a forged width, forged padding, the grouped coder's id or a
/// coder id past the last one: clean errors, checksums fixed so the decoder itself must notice.
#[test]
fn forged_packed_blocks_are_refused() {
    let x = field([12, 20, 26], 7);
    let info = ChunkInfo::new(DType::F32, &[12, 20, 26]).unwrap();
    let p = Params::rel(1e-3)
        .with_coder(resid::Coder::Packed)
        .with_predictor(resid::PredictorChoice::Lorenzo);
    let c = resid::compress(&f32_bytes(&x), &info, &p).unwrap();
    let dir = 64 + 8 * 3 + 16 + 4;
    assert_eq!(c[dir + 1], 3, "packed blocks carry coder id 3");
    let count = u32::from_le_bytes(c[dir - 4..dir].try_into().unwrap()) as usize;
    assert_eq!(count, 1, "one block: its payload follows the one entry");
    let first_payload = dir + 12;
    let groups = (12 * 20 * 26usize).div_ceil(32);
    assert_ne!(groups % 4, 0, "a padding byte to forge");
    for (at, forged, what) in [
        (first_payload, 33u8, "33-bit group"),
        (first_payload + groups.next_multiple_of(4) - 1, 1, "padding"),
        // A packed payload read as a grouped one (coder id 6): the grouped decoder refuses it.
        (dir + 1, 6, "grouped block"),
        (dir + 1, 7, "unknown coder id 7"),
    ] {
        let mut d = c.clone();
        d[at] = forged;
        fix_checksums(&mut d);
        let e = resid::decompress(&d).unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
}
