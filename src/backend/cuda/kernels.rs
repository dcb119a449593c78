//! The CUDA C sources (`kernels/*.cu`), embedded in the binary and compiled at run time by
//! NVRTC (candle's layout: one module per `.cu`, `common.cuh` shared). Pure data: no CUDA here.

/// Shared helpers, prepended to every module in place of its `#include "common.cuh"`.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

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
    source: include_str!("../../../kernels/quant.cu"),
    kernels: &["stats_f32", "stats_f64"],
    exact: true,
};

pub const LORENZO: Module = Module {
    name: "lorenzo.cu",
    source: include_str!("../../../kernels/lorenzo.cu"),
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
    source: include_str!("../../../kernels/bitplane.cu"),
    kernels: &["bitplane_transpose", "bitplane_untranspose"],
    exact: true,
};

pub const PACKED: Module = Module {
    name: "packed.cu",
    source: include_str!("../../../kernels/packed.cu"),
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
    source: include_str!("../../../kernels/neurlz.cu"),
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
    source: include_str!("../../../kernels/conv_train.cu"),
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
        "tr_deconv2_bw_tc",
        "tr_conv1_bw",
        "tr_out",
        "tr_reduce",
        "tr_adam",
    ],
    exact: false,
};

pub const NGLR_TRAIN: Module = Module {
    name: "nglr_train.cu",
    source: include_str!("../../../kernels/nglr_train.cu"),
    kernels: &["nglr_adam"],
    exact: false,
};

/// NGLR's prediction (decode and encode): the CPU's values and codes bit for bit.
pub const NGLR: Module = Module {
    name: "nglr.cu",
    source: include_str!("../../../kernels/nglr.cu"),
    kernels: &["nglr_decode", "nglr_encode"],
    exact: true,
};

pub const MODULES: [Module; 8] = [
    QUANT, LORENZO, BITPLANE, PACKED, NEURLZ, CONV_TRAIN, NGLR_TRAIN, NGLR,
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

/// A kernel parameter's kind, as a launch passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Ptr,
    I32,
    I64,
    F32,
    F64,
}

const KERNEL_MARK: &str = "extern \"C\" __global__";

/// The kernels `source` defines (`extern "C" __global__`), each with its parameters in order
/// (`None`: a type this reading does not know). Read from the text, so the launches can be
/// checked against the kernels without compiling them.
pub fn kernels_in(source: &'static str) -> Vec<(&'static str, Vec<Option<Param>>)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(KERNEL_MARK) {
        rest = &rest[at + KERNEL_MARK.len()..];
        let head = &rest[..rest.find('{').unwrap_or(rest.len())];
        // Past `__launch_bounds__(...)`, the name is the word before the parameter list.
        let head = match head.find("__launch_bounds__(") {
            Some(lb) => &head[lb + head[lb..].find(')').map_or(0, |c| c + 1)..],
            None => head,
        };
        let (Some(open), Some(close)) = (head.find('('), head.rfind(')')) else {
            continue;
        };
        let Some(name) = head[..open].split_whitespace().last() else {
            continue;
        };
        let params = head[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(param_kind)
            .collect();
        out.push((name, params));
    }
    out
}

/// The kind of the parameter declared as `decl` (`const float* x`, `long long n`).
fn param_kind(decl: &str) -> Option<Param> {
    if decl.contains('*') {
        return Some(Param::Ptr);
    }
    let words: Vec<&str> = decl.split_whitespace().filter(|&w| w != "const").collect();
    let ty = words[..words.len().saturating_sub(1)].join(" ");
    match ty.as_str() {
        "int" | "unsigned" | "u32" => Some(Param::I32),
        "long long" | "u64" => Some(Param::I64),
        "float" => Some(Param::F32),
        "double" => Some(Param::F64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels each module lists are exactly those its source defines, every parameter's
    /// type is known (so launches can be checked against them), and the text NVRTC compiles
    /// has its include resolved.
    #[test]
    fn each_module_lists_exactly_the_kernels_it_defines() {
        for m in MODULES {
            assert!(!source(&m).contains("#include"), "{}", m.name);
            let found = kernels_in(m.source);
            let mut defined: Vec<&str> = found.iter().map(|k| k.0).collect();
            let mut listed = m.kernels.to_vec();
            defined.sort_unstable();
            listed.sort_unstable();
            assert_eq!(defined, listed, "{}", m.name);
            for (k, params) in found {
                assert!(!params.is_empty(), "{k}: no parameters read");
                assert!(params.iter().all(Option::is_some), "{k}: {params:?}");
            }
        }
    }

    #[test]
    fn reads_kernel_signatures() {
        let src = "extern \"C\" __global__ void __launch_bounds__(256, 2)\n    k1(const float* x, int n,\n long long m, u64 w, double d, float f, u32 u) { }\n\
                   __device__ int helper(int a) { return a; }\n\
                   extern \"C\" __global__ void k2(unsigned char c) {}";
        use Param::*;
        assert_eq!(
            kernels_in(src),
            vec![
                (
                    "k1",
                    vec![
                        Some(Ptr),
                        Some(I32),
                        Some(I64),
                        Some(I64),
                        Some(F64),
                        Some(F32),
                        Some(I32)
                    ]
                ),
                ("k2", vec![None]),
            ]
        );
        let tc = kernels_in(CONV_TRAIN.source);
        let (_, p) = tc.iter().find(|k| k.0 == "tr_conv3_tc").unwrap();
        assert_eq!(p.len(), 13);
        assert_eq!(p[..3], [Some(Ptr), Some(I32), Some(I32)]);
    }
}
