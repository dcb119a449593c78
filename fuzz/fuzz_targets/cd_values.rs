//! Property: parsing `cd_values` never panics, and what it accepts is valid and round-trips
//! (user words and the full `set_local` form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resid::params::{local_cd_values, parse_local_cd_values, Params};

fuzz_target!(|data: &[u8]| {
    // Little-endian words, as a seed file spells them.
    let words: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if let Ok(p) = Params::from_cd_values(&words) {
        assert!(p.validate().is_ok());
        assert!(p.bound.is_finite() && p.bound > 0.0);
        let back = Params::from_cd_values(&p.to_cd_values()).expect("own words parse");
        assert_eq!(back, p);
    }
    if let Ok((p, chunk)) = parse_local_cd_values(&words) {
        assert!(chunk.byte_len().is_ok());
        let full = local_cd_values(&p, &chunk).expect("own chunk fits the words");
        assert_eq!(parse_local_cd_values(&full).unwrap(), (p, chunk));
    }
});
