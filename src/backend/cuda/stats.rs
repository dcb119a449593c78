//! The range statistics of a chunk's values (`kernels/quant.cu`).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::cfg;
use super::Cuda;
use crate::backend::device_error;
use crate::error::Result;
use crate::params::DType;
use crate::quant::Stats;

impl Cuda {
    /// Range statistics of the values in `x` (device bytes of `dtype`).
    pub fn stats_dev(&self, x: &CudaSlice<u8>, dtype: DType) -> Result<Stats> {
        let n = (x.len() / dtype.size()) as u64;
        let out = self.upload(&[u64::MAX, 0u64, 0u64])?;
        let f = self.f(match dtype {
            DType::F32 => "stats_f32",
            DType::F64 => "stats_f64",
        });
        let blocks = (n.div_ceil(256)).clamp(1, 132 * 16) as u32;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&out);
        unsafe { b.launch(cfg((blocks, 1, 1), (256, 1, 1))) }
            .map_err(|e| device_error("stats", e))?;
        let h = self.download(&out)?;
        let key = |k: u64| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k });
        Ok(if h[2] == 0 {
            Stats {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                finite: 0,
            }
        } else {
            Stats {
                min: key(h[0]),
                max: key(h[1]),
                finite: h[2] as usize,
            }
        })
    }
}
