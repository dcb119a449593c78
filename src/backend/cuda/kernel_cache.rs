//! An on-disk cache of compiled kernel modules, so that only a machine's first process pays
//! for NVRTC (about 5 s for the eight modules on two cores) and every later `h5repack` run or
//! h5py session starts in milliseconds. CuPy and Triton keep such caches for the same reason.
//!
//! An entry holds the exact compile input beside the CUBIN (module name, full source,
//! options, architecture, NVRTC version) and a CRC-32 of the image: a lookup compares all of
//! it, so a stale, truncated, corrupt or colliding file is a miss, never a wrong kernel. A
//! file is written under a unique temporary name and renamed into place, so processes
//! sharing the cache (MPI ranks on one node, one home directory on NFS) never read a
//! partial file. Every failure to read or write is a miss, logged at debug level: the cache
//! can only save time. It holds about 0.75 MB per architecture and NVRTC version and may be
//! deleted at any time.
//!
//! Location: `RESID_KERNEL_CACHE` names the directory (`off` or `0` turns the cache off);
//! unset, `$XDG_CACHE_HOME/resid/kernels`, else `$HOME/.cache/resid/kernels`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that places or turns off the cache.
pub const ENV: &str = "RESID_KERNEL_CACHE";

/// The first bytes of an entry (format 1).
const MAGIC: &[u8; 8] = b"RESIDKC1";

/// Everything a compiled module depends on: an entry is used only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The module's file name (`lorenzo.cu`).
    pub module: String,
    /// The full text NVRTC compiles.
    pub source: String,
    pub options: Vec<String>,
    /// The target (`sm_90`).
    pub arch: String,
    /// NVRTC's `(major, minor)`.
    pub nvrtc: (i32, i32),
}

impl Key {
    /// The key as bytes: a header line per field, then the source.
    fn bytes(&self) -> Vec<u8> {
        format!(
            "module {}\narch {}\nnvrtc {}.{}\noptions {}\n\n{}",
            self.module,
            self.arch,
            self.nvrtc.0,
            self.nvrtc.1,
            self.options.join(" "),
            self.source
        )
        .into_bytes()
    }

    /// The entry's file name: module, target and a hash of the key's `bytes`, so that the
    /// entries of several resid versions or NVRTC releases sit side by side.
    fn file_name(&self, bytes: &[u8]) -> String {
        let stem = self.module.trim_end_matches(".cu");
        let name: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{name}-{}-{:08x}.cubin", self.arch, crc32fast::hash(bytes))
    }
}

/// The cache directory from `RESID_KERNEL_CACHE`, `XDG_CACHE_HOME` and `HOME` (see the
/// module's docs); `None` when the cache is off or no place is known.
pub fn dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    dir_from(var(ENV), var("XDG_CACHE_HOME"), var("HOME"))
}

fn dir_from(
    setting: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match setting {
        Some(s) if s == "off" || s == "0" => None,
        Some(s) => Some(PathBuf::from(s)),
        None => xdg
            .map(PathBuf::from)
            .or_else(|| home.map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("resid").join("kernels")),
    }
}

/// The CUBIN stored for `key` in `dir`, when an intact entry with exactly this key is there.
pub fn load(dir: &Path, key: &Key) -> Option<Vec<u8>> {
    let k = key.bytes();
    let path = dir.join(key.file_name(&k));
    let file = std::fs::read(&path).ok()?;
    let image = parse(&file, &k);
    if image.is_none() {
        log::debug!(
            "resid: kernel cache: {} is stale or damaged",
            path.display()
        );
    }
    image
}

/// Splits an entry into its key and image and returns the image when the key is `want` and
/// the image's length and CRC-32 check.
fn parse(file: &[u8], want: &[u8]) -> Option<Vec<u8>> {
    let rest = file.strip_prefix(MAGIC)?;
    let (len, rest) = split_u64(rest)?;
    let (key, rest) = split(rest, usize::try_from(len).ok()?)?;
    if key != want {
        return None;
    }
    let (crc, rest) = split_u64(rest)?;
    let (len, image) = split_u64(rest)?;
    (image.len() as u64 == len && u64::from(crc32fast::hash(image)) == crc).then(|| image.to_vec())
}

fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = split(b, 8)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), rest))
}

/// `b` split after `n` bytes, `None` when shorter.
fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    Some((b.get(..n)?, b.get(n..)?))
}

/// Stores `image` for `key` in `dir` (created if need be), replacing any entry of that name
/// at once; a failure is logged and otherwise ignored.
pub fn store(dir: &Path, key: &Key, image: &[u8]) {
    if let Err(e) = try_store(dir, key, image) {
        log::debug!(
            "resid: kernel cache: cannot write to {}: {e}",
            dir.display()
        );
    }
}

fn try_store(dir: &Path, key: &Key, image: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let k = key.bytes();
    let mut entry = Vec::with_capacity(MAGIC.len() + 24 + k.len() + image.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&(k.len() as u64).to_le_bytes());
    entry.extend_from_slice(&k);
    entry.extend_from_slice(&u64::from(crc32fast::hash(image)).to_le_bytes());
    entry.extend_from_slice(&(image.len() as u64).to_le_bytes());
    entry.extend_from_slice(image);
    let name = key.file_name(&k);
    let path = dir.join(&name);
    let tmp = dir.join(format!(
        ".{name}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&entry))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            module: "lorenzo.cu".into(),
            source: "extern \"C\" __global__ void k() {}\n".into(),
            options: vec!["--std=c++17".into(), "--fmad=false".into()],
            arch: "sm_90".into(),
            nvrtc: (13, 0),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("resid-kc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn stores_and_finds_an_image_by_its_exact_key() {
        let d = scratch("hit");
        let image: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(load(&d, &key()), None);
        store(&d, &key(), &image);
        assert_eq!(load(&d, &key()), Some(image.clone()));
        // Anything the image depends on changes the key, and the entry is not used.
        let changed = [
            Key {
                source: key().source + " ",
                ..key()
            },
            Key {
                options: vec!["--std=c++17".into(), "--fmad=true".into()],
                ..key()
            },
            Key {
                arch: "sm_80".into(),
                ..key()
            },
            Key {
                nvrtc: (13, 1),
                ..key()
            },
            Key {
                module: "quant.cu".into(),
                ..key()
            },
        ];
        for k in &changed {
            assert_eq!(load(&d, k), None, "{k:?}");
            // Even under the same file name (a hash collision), the stored key decides.
            let path = d.join(k.file_name(&k.bytes()));
            std::fs::copy(d.join(key().file_name(&key().bytes())), &path).unwrap();
            assert_eq!(load(&d, k), None, "{k:?} in a colliding file");
            std::fs::remove_file(path).unwrap();
        }
        // Replacing an entry works, and leaves no temporary file behind.
        store(&d, &key(), b"other image");
        assert_eq!(load(&d, &key()).as_deref(), Some(&b"other image"[..]));
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let d = scratch("damaged");
        let image = vec![0xabu8; 3000];
        store(&d, &key(), &image);
        let path = d.join(key().file_name(&key().bytes()));
        let good = std::fs::read(&path).unwrap();
        let mut cases: Vec<Vec<u8>> = (0..good.len())
            .step_by(97)
            .map(|n| good[..n].to_vec())
            .collect();
        for at in [0, 9, 20, good.len() - 3000, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            cases.push(bad);
        }
        let mut longer = good.clone();
        longer.push(0);
        cases.push(longer);
        for bad in cases {
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(load(&d, &key()), None, "{} bytes", bad.len());
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(load(&d, &key()), Some(image));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unwritable_place_is_only_a_miss() {
        let d = scratch("blocked");
        std::fs::write(&d, b"a file where the directory should be").unwrap();
        store(&d, &key(), b"image");
        assert_eq!(load(&d, &key()), None);
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn the_directory_follows_the_environment() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(dir_from(s("off"), s("/x"), s("/h")), None);
        assert_eq!(dir_from(s("0"), None, s("/h")), None);
        assert_eq!(
            dir_from(s("/scratch/k"), s("/x"), s("/h")),
            Some(PathBuf::from("/scratch/k"))
        );
        assert_eq!(
            dir_from(None, s("/x"), s("/h")),
            Some(PathBuf::from("/x/resid/kernels"))
        );
        assert_eq!(
            dir_from(None, None, s("/h")),
            Some(PathBuf::from("/h/.cache/resid/kernels"))
        );
        assert_eq!(dir_from(None, None, None), None);
    }
}
