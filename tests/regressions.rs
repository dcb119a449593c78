//! Regression tests for bugs found by fuzzing and the hardening audit (issue #8).
//!
//! Each fuzz find becomes `bug_fuzz_N` (as lz4_flex names them), with the minimized input
//! inline. A bug not fixed yet is `#[ignore = "known bug: ..."]` so `scripts/test` stays green;
//! `cargo test --release --test regressions -- --ignored` shows which still fail.
//! docs/RELIABILITY.md lists them with the fix each needs.
//!
//! Tests that would abort the process (an allocation failure is an abort, not a panic) run
//! their body in a child process: this test binary, re-run on one ignored `child_*` test.

use std::process::Command;

use resid::format::{self, section, Header, Layout};
use resid::{Coder, DType, ErrorMode};

/// Runs the ignored test `name` of this binary in a child process with `RESID_CHILD=1`;
/// returns (exited normally with success, stderr).
fn in_child(name: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RESID_CHILD", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
    )
}

fn is_child() -> bool {
    std::env::var_os("RESID_CHILD").is_some()
}

/// A coded chunk of a few hundred bytes whose header declares `shape` (f32) in one block.
fn one_block_chunk(shape: Vec<usize>) -> Vec<u8> {
    // One block, range coded, whose stream is empty: the range decoder reads zeros forever.
    chunk_with_block(shape, &[0u8; 4])
}

/// A coded f32 chunk of `shape` in one Lorenzo, range-coded block holding `block`.
fn chunk_with_block(shape: Vec<usize>, block: &[u8]) -> Vec<u8> {
    let dims = resid::field::grid_dims(&shape);
    let mut c = Vec::new();
    Header {
        version: resid::format::BASE_VERSION,
        layout: Layout::Coded,
        dtype: DType::F32,
        shape,
        mode: ErrorMode::Abs,
        coder: Coder::Range,
        requested: 1e-3,
        eb: 1e-3,
        mid: 0.0,
        step: 2e-3,
        feedback: 1,
        block: dims,
        sections: 2,
    }
    .write(&mut c);
    let mut dir = 1u32.to_le_bytes().to_vec();
    dir.extend_from_slice(&[resid::predict::lorenzo::ID, 0, 0, 0]);
    dir.extend_from_slice(&(block.len() as u32).to_le_bytes());
    dir.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
    dir.extend_from_slice(block);
    format::write_section(&mut c, section::BLOCKS, &dir);
    format::write_section(&mut c, section::ESCAPES, &0u64.to_le_bytes());
    c
}

#[test]
#[ignore]
fn child_decompress_unlimited_huge_shape() {
    if !is_child() {
        return;
    }
    // 2^50 f32 values (4 PiB) declared by a ~130-byte chunk.
    let c = one_block_chunk(vec![1 << 20, 1 << 20, 1 << 10]);
    assert!(resid::decompress(&c).is_err());
}

/// Regression: `resid::decompress` (no limit) once believed the declared shape and allocated it:
/// a ~130-byte chunk declaring 2^50 values aborts the process (allocation failure is an
/// abort, not a panic, so the plugin's catch_unwind cannot help; the plugin itself is safe
/// because it calls `decompress_limited` with the dataset's chunk size). A smaller absurd
/// shape (a few GiB) is worse: the allocation succeeds under overcommit and the range decoder
/// then "decodes" zeros past the end of its input for minutes (ARCHITECTURE.md invariant 3: no
/// unbounded allocation, no hang).
/// The decoder now allocates with `try_reserve_exact` (`Error::TooLarge` on failure), the range
/// decoder fails once it reads past its stream's flush, and block extents other than those
/// the encoder writes are refused.
#[test]
fn bug_decompress_unlimited_huge_shape_aborts() {
    let (ok, err) = in_child("child_decompress_unlimited_huge_shape");
    assert!(ok, "decompress aborted or panicked: {err}");
}

#[test]
fn decompress_limited_refuses_the_huge_shape() {
    let c = one_block_chunk(vec![1 << 20, 1 << 20, 1 << 10]);
    assert!(matches!(
        resid::decompress_limited(&c, 64 << 20),
        Err(resid::Error::TooLarge { .. })
    ));
}

#[test]
fn range_decoder_past_the_end_is_bounded_by_the_limit() {
    // An empty range-coded stream for 1 Mi values: whatever the decoder makes of it, it
    // stays within the declared size and does not panic.
    let c = one_block_chunk(vec![1 << 20]);
    let n = 4 << 20;
    if let Ok(out) = resid::decompress_limited(&c, n) {
        assert_eq!(out.len(), n);
    }
}

/// Found by `tests/hardening.rs` `bit_flips_give_errors_or_the_declared_size` (one flipped bit
/// in a range-coded block, checksums rewritten), minimized by hand to a 9-byte block: a
/// one-value block whose range-coded stream says "plane count not equal to the expected 0,
/// and below it". `decode_k` (src/code/bitplane.rs) computes `e - 1` with e = 0, which wraps
/// to u32::MAX (an overflow panic in debug builds) and then indexes `m.planes[class][k]` out
/// of bounds: a panic inside the decoder (ARCHITECTURE.md invariant 3). Likewise `e + 1` with
/// e = expected(127) = 32 indexes `planes[..][32]` (length 32).
/// Fix: in `decode_k`, return `Err(Error::Corrupt)` (or clamp) when the stream asks to go
/// below 0 (e == 0 on the "below" branch) or above 31, e.g. make it return `Result<u32>`
/// with `ensure!(e > 0, ...)` before `e - 1` and `ensure!(k <= 31, ...)` at the end.
#[test]
fn bug_fuzz_1() {
    // u32 stream length 5; the range decoder skips the first byte, then code = 0x90000000:
    // first bit ("not equal") 1, second bit ("above") 0.
    let block = [5, 0, 0, 0, 0x00, 0x90, 0x00, 0x00, 0x00];
    let c = chunk_with_block(vec![1], &block);
    let r = std::panic::catch_unwind(|| resid::decompress_limited(&c, 4));
    assert!(r.is_ok(), "decoder panicked on a 9-byte block");
    // The coder no longer sends "above or below" where only one is possible (e = 0 or 31),
    // so every stream decodes to some plane count in 0..=31: a damaged block whose checksum
    // was forged decodes to wrong values of the declared size, never out of bounds.
    if let Ok(out) = r.unwrap() {
        assert_eq!(out.len(), 4);
    }
}
