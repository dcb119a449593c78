//! Decorrelating transforms applied to a whole grid before quantization.
//!
//! [`cdf97`] is the CDF 9/7 wavelet: near-orthonormal, so one uniform quantization step serves
//! every subband, and computed in a fixed order so every machine decodes the same bits.

pub mod cdf97;
