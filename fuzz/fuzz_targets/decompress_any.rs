//! Property: any bytes given to the decoder give `Ok` or `Err`, never a panic, an abort or a
//! hang; and with a limit derived from the size the chunk declares, decoding allocates at most
//! a small multiple of that limit. Each input is tried as it is and with its checksums
//! rewritten to match (so the fuzzer reaches the block decoders behind the CRCs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resid_fuzz::{fix_checksums, peak_alloc, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Largest output a fuzz input may decode to (bigger declared sizes must be refused).
const CAP: usize = 16 << 20;
/// Allowed peak allocation while decoding, per byte of the limit.
/// The decoder holds the output values, the decoded blocks and the output bytes at once (3x);
/// see docs/RELIABILITY.md for what bounds it today.
const FACTOR: usize = resid_fuzz::DECODE_ALLOC_FACTOR;
const SLACK: usize = 1 << 20;

fn check(data: &[u8]) {
    let declared = resid::inspect(data)
        .ok()
        .map(|s| s.header.len().saturating_mul(s.header.dtype.size()));
    let limit = declared.unwrap_or(CAP).min(CAP);
    let (r, peak) = peak_alloc(|| resid::decompress_limited(data, limit));
    assert!(
        peak <= FACTOR * limit + SLACK + 4 * data.len(),
        "decode of {} bytes with limit {limit} allocated {peak} bytes",
        data.len()
    );
    if let Ok(out) = &r {
        assert!(out.len() <= limit);
        assert_eq!(
            Some(out.len()),
            declared,
            "output size differs from the header"
        );
    }
    if let Some(d) = declared {
        if d > CAP {
            assert!(
                matches!(r, Err(resid::Error::TooLarge { .. })),
                "declared {d} > limit {limit} but got {r:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fix_checksums(&mut fixed);
    if fixed != data {
        check(&fixed);
    }
});
