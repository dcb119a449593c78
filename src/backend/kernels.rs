//! The CUDA C sources (`kernels/*.cu`), embedded in the binary and compiled at run time by
//! NVRTC (candle's layout: one module per `.cu`, `common.cuh` shared). Pure data: no CUDA here.

/// Shared helpers, prepended to every module in place of its `#include "common.cuh"`.
pub const COMMON: &str = include_str!("../../kernels/common.cuh");

/// One `.cu` file and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
    /// Compiled with exact IEEE arithmetic ([`OPTIONS`]); false only for float training,
    /// whose results may differ from the CPU's (FMA contraction allowed, twice the speed).
    pub exact: bool,
}

pub const QUANT: Module = Module {
    name: "quant.cu",
    source: include_str!("../../kernels/quant.cu"),
    kernels: &["stats_f32", "stats_f64"],
    exact: true,
};

pub const LORENZO: Module = Module {
    name: "lorenzo.cu",
    source: include_str!("../../kernels/lorenzo.cu"),
    kernels: &[
        "lorenzo_encode_f32",
        "lorenzo_encode_f64",
        "lorenzo_decode_planes_f32",
        "lorenzo_decode_planes_f64",
        "lorenzo_scan_x",
        "lorenzo_scan_y",
        "lorenzo_scan_z_f32",
        "lorenzo_scan_z_f64",
    ],
    exact: true,
};

pub const BITPLANE: Module = Module {
    name: "bitplane.cu",
    source: include_str!("../../kernels/bitplane.cu"),
    kernels: &["bitplane_transpose", "bitplane_untranspose"],
    exact: true,
};

pub const PACKED: Module = Module {
    name: "packed.cu",
    source: include_str!("../../kernels/packed.cu"),
    kernels: &[
        "packed_widths",
        "packed_scan",
        "packed_write",
        "packed_read",
    ],
    exact: true,
};

pub const NEURLZ: Module = Module {
    name: "neurlz.cu",
    source: include_str!("../../kernels/neurlz.cu"),
    kernels: &[
        "nz_inputs",
        "nz_conv3",
        "nz_deconv2",
        "nz_conv1",
        "nz_correct",
    ],
    exact: true,
};

pub const CONV_TRAIN: Module = Module {
    name: "conv_train.cu",
    source: include_str!("../../kernels/conv_train.cu"),
    kernels: &[
        "tr_gather",
        "tr_sum",
        "tr_sum_final",
        "tr_conv3",
        "tr_deconv2",
        "tr_conv1",
        "tr_loss",
        "tr_conv3_bx1",
        "tr_conv3_tc",
        "tr_conv3_bx2",
        "tr_deconv2_bx",
        "tr_conv1_bx",
        "tr_conv3_bw",
        "tr_conv3_bw_tc",
        "tr_deconv2_bw",
        "tr_conv1_bw",
        "tr_reduce",
        "tr_adam",
    ],
    exact: false,
};

pub const NGLR_TRAIN: Module = Module {
    name: "nglr_train.cu",
    source: include_str!("../../kernels/nglr_train.cu"),
    kernels: &["nglr_adam"],
    exact: false,
};

pub const MODULES: [Module; 7] = [
    QUANT, LORENZO, BITPLANE, PACKED, NEURLZ, CONV_TRAIN, NGLR_TRAIN,
];

/// The encode tile (`TX` x `TY` threads in `lorenzo.cu`).
pub const TILE_X: usize = 32;
pub const TILE_Y: usize = 8;
/// The one-pass decode handles blocks whose planes fit its shared buffer (`lorenzo.cu`).
pub const PLANE_MAX: usize = 4096;
pub const PLANE_PAD: usize = 4608;
pub const DEC_THREADS: u32 = 512;

/// Options every module is compiled with: exact IEEE arithmetic (no FMA contraction, no
/// flush-to-zero), since quantization and dequantization must match the CPU bit for bit.
pub const OPTIONS: &[&str] = &[
    "--std=c++17",
    "--fmad=false",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--extra-device-vectorization",
];

/// The options `m` is compiled with (before the architecture).
pub fn options(m: &Module) -> Vec<String> {
    OPTIONS
        .iter()
        .map(|&o| match o {
            "--fmad=false" if !m.exact => "--fmad=true".to_string(),
            o => o.to_string(),
        })
        .collect()
}

/// The full text NVRTC compiles for `m`: `common.cuh` in place of its include line.
pub fn source(m: &Module) -> String {
    m.source.replace("#include \"common.cuh\"", COMMON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_in_its_module() {
        for m in MODULES {
            let src = source(&m);
            assert!(!src.contains("#include"), "{}", m.name);
            for k in m.kernels {
                assert!(src.contains(&format!("{k}(")), "{} lacks {k}", m.name);
            }
        }
    }
}
