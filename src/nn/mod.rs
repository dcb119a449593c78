//! Tiny networks for the learned stages, split the way zstd splits its library: [`infer`]
//! (fixed-point evaluation, used by encoder and decoder alike) and [`weights`] (their stored
//! form) are all the decoder needs; [`train`] (floating-point fitting) is encode-only and no
//! decode code imports it.

pub mod conv;
pub mod conv_train;
pub mod corrections;
pub mod infer;
pub mod linear;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod tile;
pub mod train;
pub mod weights;
mod wide;

pub use infer::Net;

/// Adam's constants (beta1, beta2, epsilon), the same for both trainers (`train`,
/// `conv_train`) and their GPU versions.
pub const ADAM: (f32, f32, f32) = (0.9, 0.999, 1e-8);
