//! CUDA kernels of the hot ops (built with the `cudnn` feature): what
//! `cpu/` is for the CPU. Nothing here runs without an NVIDIA GPU; the
//! `rpg selftest` command checks every op against the CPU on one.

pub(crate) mod cudnn_conv;
