//! `Conv2d` with a fast CPU path: forward, input gradient and weight gradient
//! of its own (see `cpu::conv_gemm`), as a Candle custom op with a backward.
//!
//! A drop-in for `candle_nn::Conv2d`: same config, same parameter names and
//! init hints. f32 tensors on the CPU take the native kernels; every other
//! device or dtype (CUDA/cuDNN, Metal, f16) takes Candle's own conv.
//! A [`crate::KernelScope`] forces Candle's path on its thread, which is how
//! the benchmarks measure both in one run.

mod op;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

pub use op::{conv2d as conv2d_op, conv2d_input_grad, conv2d_weight_grad};

/// A 2-D convolution layer (NCHW input, OIHW weight).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// A layer over existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }
    /// The `[out, in / groups, kh, kw]` kernel.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The `[out]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// Stride, padding, dilation and groups.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(conv: candle_nn::Conv2d) -> Self {
        Self::new(conv.weight().clone(), conv.bias().cloned(), *conv.config())
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = op::conv2d(x, &self.weight, &self.config)?;
        match &self.bias {
            None => Ok(y),
            Some(bias) => crate::channel_bias::add_channel_bias(&y, bias),
        }
    }
}

/// A conv layer with bias, parameters `weight` and `bias` under `vb`, with
/// candle-nn's initialisation.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    candle_nn::conv2d(in_channels, out_channels, kernel_size, config, vb).map(Conv2d::from)
}

/// A conv layer without bias (parameter `weight` under `vb`).
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, config, vb).map(Conv2d::from)
}
