//! The stored form of an NGLR model: the WEIGHTS section payload (`docs/FORMAT.md`), a
//! [`Net`] (kind 1) or a [`Linear`] bias (kind 2). Reads are bounded and every limit of the
//! fixed-point rules is checked before the model is used.

use super::infer::{Net, INPUTS};
use super::linear::Linear;
use crate::bytes::Reader;
use crate::error::{ensure, Error, Result};

/// Network kind byte of the NGLR bias network, feature set version 1.
pub const KIND_NGLR1: u8 = 1;
/// Kind byte of the linear NGLR bias over the same features.
pub const KIND_LINEAR: u8 = 2;
/// Length of a kind 2 payload.
pub const LINEAR_LEN: usize = 8 + 4 * INPUTS + 8;

/// A chunk's NGLR model, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    Network(Net),
    Linear(Linear),
}

impl Model {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Model::Network(net) => write(net, out),
            Model::Linear(lin) => write_linear(lin, out),
        }
    }

    /// Reads a WEIGHTS payload of either kind.
    pub fn read(payload: &[u8]) -> Result<Model> {
        match payload.first() {
            Some(&KIND_LINEAR) => read_linear(payload).map(Model::Linear),
            _ => read(payload).map(Model::Network),
        }
    }
}

fn write_linear(lin: &Linear, out: &mut Vec<u8>) {
    out.extend_from_slice(&[KIND_LINEAR, INPUTS as u8, lin.shift, 0, 0, 0, 0, 0]);
    for w in &lin.w {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&lin.b.to_le_bytes());
}

fn read_linear(payload: &[u8]) -> Result<Linear> {
    ensure!(
        payload.len() == LINEAR_LEN,
        Error::Corrupt(format!(
            "linear weights section of {} bytes, not {LINEAR_LEN}",
            payload.len()
        ))
    );
    ensure!(
        payload[1] as usize == INPUTS,
        Error::Corrupt(format!("linear NGLR bias with {} inputs", payload[1]))
    );
    ensure!(
        payload[3..8].iter().all(|&b| b == 0),
        Error::ReservedBitsSet
    );
    let word = |k: usize| i32::from_le_bytes(payload[8 + 4 * k..12 + 4 * k].try_into().unwrap());
    let lin = Linear {
        w: std::array::from_fn(word),
        b: i64::from_le_bytes(payload[LINEAR_LEN - 8..].try_into().unwrap()),
        shift: payload[2],
    };
    lin.validate()?;
    Ok(lin)
}

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
        for (at, v) in [(0, 3), (1, 15), (2, 0), (2, 33), (4, 31), (6, 1)] {
            let mut bad = buf.clone();
            bad[at] = v;
            assert!(Model::read(&bad).is_err(), "byte {at} = {v}");
        }
    }

    #[test]
    fn linear_round_trip_and_damage() {
        let lin = Linear {
            w: std::array::from_fn(|i| (i as i32 - 8) * 12345),
            b: -(1 << 33) + 5,
            shift: 17,
        };
        let model = Model::Linear(lin);
        let mut buf = Vec::new();
        model.write(&mut buf);
        assert_eq!(buf.len(), LINEAR_LEN);
        assert_eq!(Model::read(&buf).unwrap(), model);
        for cut in 0..buf.len() {
            assert!(Model::read(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let w_max = super::super::linear::W_MAX as u32 + 1;
        for (at, v) in [(1, 15), (2, 41), (3, 1), (7, 1), (11, 0x7f)] {
            let mut bad = buf.clone();
            bad[at] = v;
            let e = Model::read(&bad).expect_err("refused");
            assert!(
                e.to_string().contains("linear") || e.to_string().contains("reserved"),
                "{e}"
            );
        }
        let mut bad = buf.clone();
        bad[8..12].copy_from_slice(&w_max.to_le_bytes());
        assert!(Model::read(&bad).is_err());
    }
}
