//! The CPU convolution entry points: depthwise layers take the direct loops
//! of `depthwise`, every other conv the gemm kernels of `conv_gemm`.

use super::geometry::ConvGeometry;
use super::{conv_gemm, depthwise};

/// `y = conv(x, w)`, no bias.
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    if depthwise::applies(g) {
        depthwise::forward(g, x, w)
    } else {
        conv_gemm::forward(g, x, w)
    }
}

/// `dL/dx` from `dL/dy`.
pub(crate) fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    if depthwise::applies(g) {
        depthwise::input_grad(g, dy, w)
    } else {
        conv_gemm::input_grad(g, dy, w)
    }
}

/// `dL/dw` from `x` and `dL/dy`.
pub(crate) fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if depthwise::applies(g) {
        depthwise::weight_grad(g, x, dy)
    } else {
        conv_gemm::weight_grad(g, x, dy)
    }
}
