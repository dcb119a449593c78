//! Zigzag mapping: small signed residuals to small unsigned codes (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).

#[inline]
pub fn encode(r: i32) -> u32 {
    ((r << 1) ^ (r >> 31)) as u32
}

#[inline]
pub fn decode(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        for r in [0, -1, 1, -2, 2, i32::MAX, i32::MIN, 12345, -98765] {
            assert_eq!(super::decode(super::encode(r)), r);
        }
        assert_eq!(super::encode(-1), 1);
        assert_eq!(super::encode(1), 2);
    }
}
