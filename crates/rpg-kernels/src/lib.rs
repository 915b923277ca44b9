//! # rpg-kernels: fast Candle ops for training on the CPU
//!
//! Layers and ops that are drop-ins for Candle's (same parameter names,
//! init and values), with kernels of their own for f32 on the CPU:
//! fully connected layers, convolution (gemm around im2col, direct
//! depthwise loops), batch norm with a fused training pass, max pooling with
//! the correct gradient, single-pass activations and the conv bias add. Other devices and dtypes take Candle's
//! ops. Nothing here knows about RPG.
//!
//! The choice between these kernels and Candle's stock ones is a value
//! scoped to a thread ([`KernelBackend::scope`]), so a comparison can never
//! leak into code running elsewhere.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Conv2dConfig, VarBuilder};
//!
//! let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
//! let conv = rpg_kernels::conv2d(3, 8, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb)?;
//! let x = Tensor::ones((2, 3, 16, 16), DType::F32, &Device::Cpu)?;
//! let native = conv.forward(&x)?;
//! let stock = {
//!     let _candle = rpg_kernels::KernelBackend::Candle.scope();
//!     conv.forward(&x)?
//! };
//! assert_eq!(native.dims(), stock.dims());
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod activation;
mod backend;
mod batch_norm;
mod channel_bias;
mod conv;
mod conv_algorithm;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod layer_norm;
mod linear;
pub mod ops;
mod pool;
mod precision;
mod route;
#[cfg(test)]
mod test_util;

pub use backend::{KernelBackend, KernelScope, UnknownKernelBackend, kernel_backend};
pub use batch_norm::{BatchNorm, batch_norm};
pub use conv::{Conv2d, conv2d, conv2d_input_grad, conv2d_no_bias, conv2d_weight_grad};
pub use cpu::storage::f32_slice;
pub use linear::{Linear, linear};
pub use precision::{Precision, UnknownPrecision, precision, set_precision};
