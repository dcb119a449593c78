//! Stages after reconstruction. [`neurlz`] (reading the stored enhancer and applying it, in
//! fixed point) is all the decoder needs; [`neurlz_encode`] (training, the keep-or-drop
//! decision) is encode-only and no decode code imports it.

pub mod neurlz;
pub mod neurlz_encode;
