//! The stored form of a [`Net`]: the WEIGHTS section payload (`docs/FORMAT.md`). Reads are
//! bounded and every limit of the fixed-point rules is checked before the network is used.

use super::infer::{Net, INPUTS};
use crate::error::{ensure, Error, Result};
use crate::format::Reader;

/// Network kind byte of the NGLR bias network, feature set version 1.
pub const KIND_NGLR1: u8 = 1;

/// Length of the payload for a network with `hidden` units.
pub fn payload_len(hidden: usize) -> usize {
    8 + INPUTS + 2 * INPUTS * hidden + 4 * hidden + 2 * hidden + 2 * INPUTS + 4
}

pub fn write(net: &Net, out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        KIND_NGLR1,
        INPUTS as u8,
        net.hidden as u8,
        net.out_shift,
        net.e1,
        net.e2,
        0,
        0,
    ]);
    out.extend_from_slice(&net.in_shift);
    for w in &net.w1 {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for b in &net.b1 {
        out.extend_from_slice(&b.to_le_bytes());
    }
    for w in net.w2.iter().chain(&net.v) {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&net.b2.to_le_bytes());
}

pub fn read(payload: &[u8]) -> Result<Net> {
    let mut r = Reader::new(payload);
    let head = r.take(8, "weights")?;
    ensure!(
        head[0] == KIND_NGLR1,
        Error::Corrupt(format!("unknown network kind {}", head[0]))
    );
    ensure!(
        head[1] as usize == INPUTS,
        Error::Corrupt(format!("NGLR network with {} inputs", head[1]))
    );
    ensure!(head[6] == 0 && head[7] == 0, Error::ReservedBitsSet);
    let hidden = head[2] as usize;
    ensure!(
        payload.len() == payload_len(hidden),
        Error::Corrupt(format!(
            "weights section of {} bytes for {hidden} hidden units",
            payload.len()
        ))
    );
    let mut in_shift = [0u8; INPUTS];
    in_shift.copy_from_slice(r.take(INPUTS, "weights")?);
    let i16s = |n: usize, r: &mut Reader<'_>| -> Result<Vec<i16>> {
        Ok(r.take(2 * n, "weights")?
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect())
    };
    let w1 = i16s(INPUTS * hidden, &mut r)?;
    let b1 = r
        .take(4 * hidden, "weights")?
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let w2 = i16s(hidden, &mut r)?;
    let v: [i16; INPUTS] = i16s(INPUTS, &mut r)?.try_into().unwrap();
    let b2 = r.u32("weights")? as i32;
    let net = Net {
        hidden,
        in_shift,
        out_shift: head[3],
        e1: head[4],
        e2: head[5],
        w1,
        b1,
        w2,
        v,
        b2,
    };
    net.validate()?;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let net = Net {
            hidden: 3,
            in_shift: [4; INPUTS],
            out_shift: 5,
            e1: 10,
            e2: 11,
            w1: (0..3 * INPUTS as i16).map(|i| i * 37 - 500).collect(),
            b1: vec![-7, 8, 1 << 20],
            w2: vec![1, -2, 3],
            v: [-9; INPUTS],
            b2: -123456,
        };
        let mut buf = Vec::new();
        write(&net, &mut buf);
        assert_eq!(buf.len(), payload_len(3));
        assert_eq!(read(&buf).unwrap(), net);
        for cut in 0..buf.len() {
            assert!(read(&buf[..cut]).is_err());
        }
        for (at, v) in [(0, 2), (1, 15), (2, 0), (2, 33), (4, 31), (6, 1)] {
            let mut bad = buf.clone();
            bad[at] = v;
            assert!(read(&bad).is_err(), "byte {at} = {v}");
        }
    }
}
