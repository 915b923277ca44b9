//! CUDA kernels of the hot ops: what `cpu/` is for the CPU. Nothing here
//! runs without an NVIDIA GPU; `rpg selftest` checks every op against the
//! CPU on one.

pub(crate) mod batch_norm;
#[cfg(feature = "cudnn")]
pub(crate) mod cudnn_conv;
