//! The CPU kernels behind the ops: plain functions over contiguous f32
//! slices (NCHW activations, OIHW weights), threaded on the rayon pool. A
//! `cuda` module with the same entry points is meant to sit beside this one.

pub(crate) mod channels;
pub(crate) mod conv;
mod conv_gemm;
mod depthwise;
mod direct;
pub(crate) mod gemm;
pub(crate) mod geometry;
pub(crate) mod linear;
pub(crate) mod storage;
mod winograd;
