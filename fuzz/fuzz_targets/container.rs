//! Property: the container parser (`resid::inspect`: header and section framing) never panics
//! on any bytes, and what it accepts is self-consistent: the header it read writes back to the
//! same bytes, the sections it lists fit in the input, and `decompress` agrees on what is
//! malformed framing. Inputs are tried as they are and with their checksums rewritten.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resid::format::{self, SECTION_HEADER};
use resid_fuzz::fix_checksums;

fn check(data: &[u8]) {
    let Ok(s) = resid::inspect(data) else {
        // A chunk inspect refuses must not decode either.
        assert!(resid::decompress_limited(data, 1 << 20).is_err());
        return;
    };
    assert_eq!(s.compressed_len, data.len());
    assert_eq!(s.sections.len(), s.header.sections as usize);
    let mut header = Vec::new();
    s.header.write(&mut header);
    assert_eq!(
        &data[..header.len()],
        &header[..],
        "header does not re-serialize"
    );
    let framed: usize = header.len()
        + s.sections
            .iter()
            .map(|&(_, len)| SECTION_HEADER + len)
            .sum::<usize>();
    assert!(framed <= data.len());
    assert!(!s.header.is_empty());
    let _ = format::stored_len(s.header.shape.len(), 0);
    // Decoding goes further than inspect but must never contradict it on the framing.
    let _ = resid::decompress_limited(data, 1 << 20);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fix_checksums(&mut fixed);
    if fixed != data {
        check(&fixed);
    }
});
