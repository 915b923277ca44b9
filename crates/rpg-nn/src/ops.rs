//! Differentiable forms of ops whose Candle fast paths drop gradients or
//! refuse a backward pass.

use candle_core::{D, Result, Tensor};
use candle_nn::Conv2dConfig;

pub use crate::activation::{add_relu, relu, relu6};
use crate::backend::native_applies;
pub use crate::channel_bias::add_channel_bias;
use crate::conv::native_conv2d;

/// `conv(x, weight)` (NCHW, OIHW, no bias), differentiable in both. f32 on
/// the CPU runs this crate's gemm kernels (unless [`crate::set_kernel_backend`]
/// chose Candle's); other devices and dtypes run Candle's conv, which on CUDA
/// means cuDNN when built with it.
pub fn conv2d(x: &Tensor, weight: &Tensor, config: &Conv2dConfig) -> Result<Tensor> {
    if native_applies(x) && native_applies(weight) {
        native_conv2d(x, weight, config)
    } else {
        x.conv2d(
            weight,
            config.padding,
            config.stride,
            config.dilation,
            config.groups,
        )
    }
}

/// Max pooling with any kernel, stride and padding, differentiable, the
/// gradient going to each window's maximum (split between ties). Use this
/// rather than Candle's `max_pool2d`: its backward scales the gradient by
/// the share of the window holding the maximum (a quarter for a unique
/// maximum of a 2x2 window), and has none when kernel != stride (the
/// ImageNet ResNet stem uses 3x3, stride 2, padding 1).
///
/// f32 on the CPU runs a native op (padding never wins, PyTorch's -inf
/// padding). Elsewhere the result is the maximum over `kernel^2` strided
/// views of the input padded with zeros, which equals -inf padding whenever
/// the input is non-negative (as after the ReLU before a stem pool).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if native_applies(x) {
        let window = crate::pool::Window {
            kernel,
            stride,
            padding,
        };
        return crate::pool::max_pool2d(x, window);
    }
    let (_, _, h, w) = x.dims4()?;
    let out_h = (h + 2 * padding - kernel) / stride + 1;
    let out_w = (w + 2 * padding - kernel) / stride + 1;
    // Pad so that every strided view below has exactly `out * stride` rows.
    let need_h = (kernel - 1) + out_h * stride;
    let need_w = (kernel - 1) + out_w * stride;
    let x = x
        .pad_with_zeros(2, padding, need_h.saturating_sub(h + padding))?
        .pad_with_zeros(3, padding, need_w.saturating_sub(w + padding))?;
    let mut out: Option<Tensor> = None;
    for di in 0..kernel {
        let rows = strided(&x, 2, di, out_h, stride)?;
        for dj in 0..kernel {
            let view = strided(&rows, 3, dj, out_w, stride)?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max_pool2d with kernel 0".into()))
}

/// Elements `start, start + stride, ...` (`count` of them) along `dim`.
fn strided(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    let x = x.narrow(dim, start, count * stride)?;
    if stride == 1 {
        return Ok(x);
    }
    let mut dims = x.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, stride);
    x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Layer norm over the last dimension from differentiable primitives
/// (Candle's fused `layer_norm` returns no gradient).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;

    #[test]
    fn max_pool_matches_candle_forward_and_has_gradients() -> Result<()> {
        let values: Vec<f32> = (0..2 * 3 * 9 * 9)
            .map(|i| ((i * 53 % 97) as f32) / 97.0)
            .collect();
        let x = Var::from_vec(values, (2, 3, 9, 9), &Device::Cpu)?;
        let ours = max_pool2d(x.as_tensor(), 3, 2, 0)?;
        let candle = x.as_tensor().max_pool2d_with_stride(3, 2)?;
        assert_eq!(ours.dims(), candle.dims());
        let diff = (ours.clone() - candle)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let grads = ours.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient");
        // Each output routes one unit of gradient to its window's maximum.
        let total = g.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(total, ours.elem_count() as f32);
        Ok(())
    }

    /// The native op against the strided-view form (Candle's path), on
    /// distinct values where both route each gradient to one maximum.
    #[test]
    fn native_max_pool_matches_the_strided_views() -> Result<()> {
        let n = 2 * 3 * 9 * 11;
        // A permutation of 0..n: distinct values, both signs.
        let values: Vec<f32> = (0..n).map(|i| ((i * 53) % n) as f32 - 100.0).collect();
        for (kernel, stride, padding) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0)] {
            let x = Var::from_vec(values.clone(), (2, 3, 9, 11), &Device::Cpu)?;
            let native = max_pool2d(&x, kernel, stride, padding)?;
            crate::set_kernel_backend(crate::KernelBackend::Candle);
            let views = max_pool2d(&x, kernel, stride, padding);
            crate::set_kernel_backend(crate::KernelBackend::Native);
            // Zero padding differs from -inf padding on negative inputs:
            // compare where both see the same window (shift to positive).
            let shifted = Var::from_tensor(&(x.as_tensor() + 1000.0)?)?;
            let native_pos = max_pool2d(&shifted, kernel, stride, padding)?;
            crate::set_kernel_backend(crate::KernelBackend::Candle);
            let views_pos = max_pool2d(&shifted, kernel, stride, padding)?;
            crate::set_kernel_backend(crate::KernelBackend::Native);
            assert_eq!(native.dims(), views?.dims());
            let probe = Tensor::arange(0f32, native_pos.elem_count() as f32, &Device::Cpu)?
                .reshape(native_pos.dims())?;
            assert_eq!(
                native_pos.flatten_all()?.to_vec1::<f32>()?,
                views_pos.flatten_all()?.to_vec1::<f32>()?
            );
            let g_native = (&native_pos * &probe)?.sum_all()?.backward()?;
            let g_views = (&views_pos * &probe)?.sum_all()?.backward()?;
            assert_eq!(
                g_native
                    .get(&shifted)
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                g_views
                    .get(&shifted)
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                "{kernel} {stride} {padding}"
            );
        }
        Ok(())
    }

    /// A unique maximum takes the whole gradient (Candle 0.11.1's own
    /// backward gives it 0.25 here); tied maxima share it.
    #[test]
    fn max_pool_gradient_goes_to_the_maximum() -> Result<()> {
        let x = Var::from_vec(
            vec![1f32, 2., 3., 4., 5., 5., 0., 1.],
            (1, 2, 2, 2),
            &Device::Cpu,
        )?;
        let grads = max_pool2d(&x, 2, 2, 0)?.sum_all()?.backward()?;
        let g = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(g, vec![0., 0., 0., 1., 0.5, 0.5, 0., 0.]);
        Ok(())
    }

    #[test]
    fn padded_pool_has_torch_output_size() -> Result<()> {
        let x = Tensor::ones((1, 1, 112, 112), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool2d(&x, 3, 2, 1)?.dims(), &[1, 1, 56, 56]);
        let x = Tensor::ones((1, 1, 7, 7), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool2d(&x, 3, 2, 1)?.dims(), &[1, 1, 4, 4]);
        Ok(())
    }

    #[test]
    fn layer_norm_matches_candle_and_keeps_gradients() -> Result<()> {
        let x = Var::from_vec(
            (0..24).map(|i| (i as f32 * 0.7).sin()).collect(),
            (2, 3, 4),
            &Device::Cpu,
        )?;
        let w = Var::from_vec(vec![1.0f32, 2.0, 0.5, 1.5], 4, &Device::Cpu)?;
        let b = Var::from_vec(vec![0.1f32, 0.0, -0.1, 0.2], 4, &Device::Cpu)?;
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
        let fused = candle_nn::ops::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
        let diff = (ours.clone() - fused)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let grads = (ours * Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((2, 3, 4))?)?
            .sum_all()?
            .backward()?;
        for v in [&x, &w, &b] {
            assert!(grads.get(v.as_tensor()).is_some());
        }
        Ok(())
    }
}
