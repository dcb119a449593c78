//! The chunk store: chunks coded (or decoded) ahead of time, on all cores, that the filter
//! hands to HDF5 instead of coding them again.
//!
//! HDF5 runs a dataset's filter pipeline one chunk at a time on one thread. `resid h5 compress`
//! and `resid h5 decompress` first code every chunk of the file on a thread pool (with
//! [`filter::run_codec`](crate::filter::run_codec), the function the filter runs) and write the
//! results into a store file; then `h5repack` copies the file as usual, with the store named by
//! [`ENV`]. For each chunk it is handed, the filter looks up the chunk's key and returns the
//! stored bytes on a hit, or codes the chunk itself on a miss, so a missing, stale or damaged
//! store costs time, never data:
//!
//! - The key is BLAKE3 (cryptographic: no two inputs share a key in practice, even crafted
//!   ones) over the direction (encode or decode), every `cd_values` word the filter was handed
//!   (the user's parameters, element type, chunk shape and padding value) and the exact input
//!   bytes with their length. A hit is therefore a chunk coded from the same bytes with the
//!   same parameters, by the same code, which checked it as it always does.
//! - Each stored value carries its own BLAKE3 digest, checked when it is read; the index carries
//!   one too. A value or an index that does not match is a miss (or no store at all).
//! - The store is opened once per process, on the first chunk, and read with positioned reads
//!   (only the index is held in memory). Every miss is reported on stderr as a line starting
//!   with [`MISS`], which the CLI counts.
//!
//! Layout: a 24-byte header (magic, version), the values one after another, the index (for
//! each entry: key, offset, length, value digest; 80 bytes), and a 64-byte trailer (index
//! offset, entry count, index digest, magic).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming the store file the filter consults.
pub const ENV: &str = "RESID_CHUNK_STORE";

/// The start of the stderr line the filter writes for each chunk it had to code itself.
pub const MISS: &str = "resid: chunk store miss";

const MAGIC: &[u8; 16] = b"resid chunkstore";
const VERSION: u32 = 1;
const HEADER: u64 = 24;
const ENTRY: usize = 80;
const TRAILER: usize = 64;
const KEY_CONTEXT: &str = "resid chunk store 1: key of a chunk";

/// A chunk's key: BLAKE3 of the direction, the filter's `cd_values` and the input bytes.
pub type Key = [u8; 32];

/// Which way the filter codes: the key of an encode and a decode of the same bytes differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Encode,
    Decode,
}

/// The key of the chunk `input` coded in `dir` with the full `cd_values` `cd`.
pub fn key(dir: Direction, cd: &[u32], input: &[u8]) -> Key {
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    h.update(&[dir as u8]);
    h.update(&(cd.len() as u64).to_le_bytes());
    for w in cd {
        h.update(&w.to_le_bytes());
    }
    h.update(&(input.len() as u64).to_le_bytes());
    h.update(input);
    *h.finalize().as_bytes()
}

fn digest(value: &[u8]) -> [u8; 32] {
    *blake3::hash(value).as_bytes()
}

/// Where a value lies in the store file, and its digest.
#[derive(Clone, Copy)]
struct Slot {
    offset: u64,
    len: u64,
    digest: [u8; 32],
}

/// Writes a store: [`Writer::add`] each coded chunk under its key, then [`Writer::finish`].
pub struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    pos: u64,
    index: HashMap<Key, Slot>,
}

impl Writer {
    /// Creates (or truncates) the store file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Writer> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(Writer {
            out,
            path: path.to_path_buf(),
            pos: HEADER,
            index: HashMap::new(),
        })
    }

    /// Stores `value` under `key` (a key already stored keeps its first value: the same input
    /// coded with the same parameters gives the same bytes).
    pub fn add(&mut self, key: Key, value: &[u8]) -> std::io::Result<()> {
        if self.index.contains_key(&key) {
            return Ok(());
        }
        self.out.write_all(value)?;
        let slot = Slot {
            offset: self.pos,
            len: value.len() as u64,
            digest: digest(value),
        };
        self.pos += value.len() as u64;
        self.index.insert(key, slot);
        Ok(())
    }

    /// How many distinct chunks are stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The bytes written so far (values and header).
    pub fn bytes(&self) -> u64 {
        self.pos
    }

    /// Writes the index and the trailer, and syncs nothing (the store lives only as long as
    /// the run that reads it). Returns the file's path.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        let mut index = Vec::with_capacity(self.index.len() * ENTRY);
        for (k, s) in &self.index {
            index.extend_from_slice(k);
            index.extend_from_slice(&s.offset.to_le_bytes());
            index.extend_from_slice(&s.len.to_le_bytes());
            index.extend_from_slice(&s.digest);
        }
        self.out.write_all(&index)?;
        self.out.write_all(&self.pos.to_le_bytes())?;
        self.out
            .write_all(&(self.index.len() as u64).to_le_bytes())?;
        self.out.write_all(&digest(&index))?;
        self.out.write_all(MAGIC)?;
        self.out.flush()?;
        Ok(self.path)
    }
}

/// A store opened for reading.
pub struct Store {
    file: File,
    index: HashMap<Key, Slot>,
}

impl Store {
    /// Opens the store at `path`, checking its header, trailer and index digest.
    pub fn open(path: &Path) -> Result<Store, String> {
        let mut file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read it: {e}"))?
            .len();
        if len < HEADER + TRAILER as u64 {
            return Err("not a chunk store (too short)".into());
        }
        let mut head = [0u8; HEADER as usize];
        let mut tail = [0u8; TRAILER];
        file.read_exact(&mut head)
            .and_then(|_| file.seek(SeekFrom::End(-(TRAILER as i64))).map(|_| ()))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(|e| format!("cannot read it: {e}"))?;
        let word = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap());
        if &head[..16] != MAGIC || &tail[48..] != MAGIC {
            return Err("not a chunk store".into());
        }
        let version = u32::from_le_bytes(head[16..20].try_into().unwrap());
        if version != VERSION {
            return Err(format!(
                "chunk store version {version}, this plugin reads {VERSION}"
            ));
        }
        let (at, count) = (word(&tail[..8]), word(&tail[8..16]));
        let size = count
            .checked_mul(ENTRY as u64)
            .filter(|&n| at >= HEADER && at.checked_add(n) == Some(len - TRAILER as u64))
            .ok_or("the index does not fit the file")?;
        let mut index = vec![0u8; size as usize];
        file.read_exact_at(&mut index, at)
            .map_err(|e| format!("cannot read the index: {e}"))?;
        if digest(&index)[..] != tail[16..48] {
            return Err("the index is damaged (digest mismatch)".into());
        }
        let index = index
            .chunks_exact(ENTRY)
            .map(|e| {
                let slot = Slot {
                    offset: word(&e[32..40]),
                    len: word(&e[40..48]),
                    digest: e[48..80].try_into().unwrap(),
                };
                (e[..32].try_into().unwrap(), slot)
            })
            .collect();
        Ok(Store { file, index })
    }

    /// How many chunks the store holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The value stored under `key`, when there is one and it matches its digest.
    pub fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let slot = self.index.get(key)?;
        let mut value = vec![0u8; usize::try_from(slot.len).ok()?];
        self.read_checked(slot, &mut value).then_some(value)
    }

    /// Reads the value stored under `key` into `out`, which must be its exact size; false (and
    /// `out` in any state) when there is none, its size differs, or it fails its digest.
    pub fn get_into(&self, key: &Key, out: &mut [u8]) -> bool {
        match self.index.get(key) {
            Some(slot) if slot.len == out.len() as u64 => self.read_checked(slot, out),
            _ => false,
        }
    }

    fn read_checked(&self, slot: &Slot, out: &mut [u8]) -> bool {
        self.file.read_exact_at(out, slot.offset).is_ok() && digest(out) == slot.digest
    }
}

/// The store [`ENV`] names, opened on first use; `None` when the variable is unset or empty,
/// or the store cannot be used (said once on stderr; every chunk is then coded as usual).
pub fn global() -> Option<&'static Store> {
    static STORE: OnceLock<Option<Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let path = std::env::var_os(ENV).filter(|p| !p.is_empty())?;
            let path = PathBuf::from(path);
            match Store::open(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "resid: chunk store {}: {e}; every chunk is coded here",
                        path.display()
                    );
                    None
                }
            }
        })
        .as_ref()
}

fn report_miss(dir: Direction, len: usize) {
    let _ = writeln!(
        std::io::stderr(),
        "{MISS} ({}, {len} bytes): coded here",
        match dir {
            Direction::Encode => "encode",
            Direction::Decode => "decode",
        }
    );
}

/// The stored encoding of `input` under `cd`, when [`ENV`] names a store that has it.
pub fn encoded(cd: &[u32], input: &[u8]) -> Option<Vec<u8>> {
    let store = global()?;
    let hit = store
        .get(&key(Direction::Encode, cd, input))
        .filter(|v| !v.is_empty());
    if hit.is_none() {
        report_miss(Direction::Encode, input.len());
    }
    hit
}

/// Writes the stored decoding of `input` under `cd` into `out` (one whole chunk) and returns
/// true, when [`ENV`] names a store that has it; false leaves `out` to be decoded.
pub fn decoded_into(cd: &[u32], input: &[u8], out: &mut [u8]) -> bool {
    let Some(store) = global() else {
        return false;
    };
    let hit = store.get_into(&key(Direction::Decode, cd, input), out);
    if !hit {
        report_miss(Direction::Decode, input.len());
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("resid-store-{}-{name}", std::process::id()))
    }

    fn sample(path: &Path) -> (Key, Key) {
        let mut w = Writer::create(path).unwrap();
        let a = key(Direction::Encode, &[1, 2, 3], b"input one");
        let b = key(Direction::Decode, &[1, 2, 3], b"input one");
        w.add(a, b"coded one").unwrap();
        w.add(b, b"decoded one, longer").unwrap();
        w.add(a, b"ignored: the key is stored").unwrap();
        assert_eq!(w.len(), 2);
        w.finish().unwrap();
        (a, b)
    }

    #[test]
    fn keys_cover_direction_words_and_bytes() {
        let k = key(Direction::Encode, &[1, 2], b"abc");
        assert_ne!(k, key(Direction::Decode, &[1, 2], b"abc"));
        assert_ne!(k, key(Direction::Encode, &[1, 3], b"abc"));
        assert_ne!(k, key(Direction::Encode, &[1, 2, 0], b"abc"));
        assert_ne!(k, key(Direction::Encode, &[1, 2], b"abd"));
        assert_ne!(k, key(Direction::Encode, &[1, 2], b"abc\0"));
        assert_eq!(k, key(Direction::Encode, &[1, 2], b"abc"));
    }

    #[test]
    fn round_trip() {
        let p = tmp("ok");
        let (a, b) = sample(&p);
        let s = Store::open(&p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(&a).unwrap(), b"coded one");
        let mut out = vec![0u8; 19];
        assert!(s.get_into(&b, &mut out));
        assert_eq!(out, b"decoded one, longer");
        assert!(!s.get_into(&b, &mut [0u8; 18]), "wrong size is a miss");
        assert!(s
            .get(&key(Direction::Encode, &[1, 2, 3], b"input two"))
            .is_none());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn damage_is_a_miss_or_no_store() {
        let p = tmp("bad");
        let (a, b) = sample(&p);
        let good = std::fs::read(&p).unwrap();
        // A damaged value: that entry misses, the other still hits.
        let mut bytes = good.clone();
        bytes[HEADER as usize + 2] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let s = Store::open(&p).unwrap();
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
        // A damaged index, a truncated file, another file: no store.
        let mut bytes = good.clone();
        let n = bytes.len();
        bytes[n - TRAILER - 10] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(Store::open(&p).err().unwrap().contains("damaged"));
        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(Store::open(&p).is_err());
        std::fs::write(
            &p,
            b"not a store at all, but long enough to have a trailer and a header here",
        )
        .unwrap();
        assert!(Store::open(&p).err().unwrap().contains("not a chunk store"));
        assert!(Store::open(&tmp("none")).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
