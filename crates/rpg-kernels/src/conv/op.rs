//! The conv op: Candle's conv, or the native CPU kernels as a custom op with
//! a backward of its own.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use candle_nn::Conv2dConfig;

use crate::cpu::geometry::ConvGeometry;
use crate::cpu::storage::f32_slice;
use crate::route::{Op, Route, route};

const OP: &str = "conv2d";

/// `conv(x, weight)` (NCHW, OIHW, no bias), differentiable in both. f32 on
/// the CPU runs this crate's gemm kernels, f32 on CUDA runs cuDNN for the
/// forward and both gradients when built with the `cudnn` feature (unless a
/// [`crate::KernelScope`] chose Candle's); other devices and dtypes run
/// Candle's conv.
pub fn conv2d(x: &Tensor, weight: &Tensor, config: &Conv2dConfig) -> Result<Tensor> {
    match route(Op::Conv, &[x, weight]) {
        Route::Cpu | Route::Cuda => conv2d_kernels(x, weight, config),
        Route::Candle => x.conv2d(
            weight,
            config.padding,
            config.stride,
            config.dilation,
            config.groups,
        ),
    }
}

/// The conv as a differentiable custom op with CPU and cuDNN kernels;
/// [`conv2d`] decides when it applies.
fn conv2d_kernels(x: &Tensor, weight: &Tensor, config: &Conv2dConfig) -> Result<Tensor> {
    let geometry = geometry(x.dims(), weight.dims(), config)?;
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, ConvForward { geometry })
}

/// The input gradient of the native conv on its own: `dL/dx` for an input
/// `x` and kernel `weight` given `dL/dy` (f32, CPU). What the backward runs;
/// public so that benchmarks can time each path.
pub fn conv2d_input_grad(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    config: &Conv2dConfig,
) -> Result<Tensor> {
    input_grad(geometry(x.dims(), weight.dims(), config)?, weight, dy)
}

/// The weight gradient of the native conv on its own: `dL/dw` (f32, CPU).
pub fn conv2d_weight_grad(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    config: &Conv2dConfig,
) -> Result<Tensor> {
    weight_grad(geometry(x.dims(), weight.dims(), config)?, x, dy)
}

fn input_grad(geometry: ConvGeometry, weight: &Tensor, dy: &Tensor) -> Result<Tensor> {
    dy.contiguous()?
        .apply_op2_no_bwd(&weight.contiguous()?, &ConvInputGrad { geometry })
}

fn weight_grad(geometry: ConvGeometry, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &ConvWeightGrad { geometry })
}

/// Checks the shapes and returns the geometry, with errors that say which
/// dimension disagrees.
fn geometry(x: &[usize], w: &[usize], config: &Conv2dConfig) -> Result<ConvGeometry> {
    let (&[batch, in_channels, height, width], &[out_channels, in_per_group, kh, kw]) = (x, w)
    else {
        candle_core::bail!("conv2d: input {x:?} and kernel {w:?} must both be 4-D (NCHW, OIHW)")
    };
    let groups = config.groups;
    if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
        candle_core::bail!(
            "conv2d: {groups} groups do not divide {in_channels} input / {out_channels} output channels"
        )
    }
    if in_per_group != in_channels / groups {
        candle_core::bail!(
            "conv2d: kernel {w:?} expects {} input channels, input {x:?} has {in_channels} in {groups} groups",
            in_per_group * groups
        )
    }
    if config.stride == 0 || config.dilation == 0 || kh == 0 || kw == 0 {
        candle_core::bail!("conv2d: stride, dilation and kernel size must be positive")
    }
    let span = |k: usize| config.dilation * (k - 1) + 1;
    if height + 2 * config.padding < span(kh) || width + 2 * config.padding < span(kw) {
        candle_core::bail!(
            "conv2d: kernel {kh}x{kw} (dilation {}) is larger than the padded {height}x{width} input",
            config.dilation
        )
    }
    Ok(ConvGeometry {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel_h: kh,
        kernel_w: kw,
        stride: config.stride,
        padding: config.padding,
        dilation: config.dilation,
        groups,
    })
}

fn out_shape(g: &ConvGeometry) -> Shape {
    Shape::from((g.batch, g.out_channels, g.out_h(), g.out_w()))
}

fn input_shape(g: &ConvGeometry) -> Shape {
    Shape::from((g.batch, g.in_channels, g.height, g.width))
}

fn kernel_shape(g: &ConvGeometry) -> Shape {
    Shape::from((g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w))
}

/// The forward op; its geometry was checked against the tensors it is
/// applied to.
struct ConvForward {
    geometry: ConvGeometry,
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "rpg-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let y = crate::cpu::conv::forward(g, f32_slice(xs, xl, OP)?, f32_slice(ws, wl, OP)?);
        Ok((CpuStorage::F32(y), out_shape(g)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geometry;
        let y = crate::cuda::cudnn_conv::forward(g, xs, xl, ws, wl)?;
        Ok((y, out_shape(g)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The input batch of the first layer needs no gradient.
        let dx = x
            .track_op()
            .then(|| input_grad(self.geometry, w, dy))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| weight_grad(self.geometry, x, dy))
            .transpose()?;
        Ok((dx, dw))
    }
}

/// `(dy, w) -> dx`.
struct ConvInputGrad {
    geometry: ConvGeometry,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "rpg-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let dx = crate::cpu::conv::input_grad(g, f32_slice(dys, dyl, OP)?, f32_slice(ws, wl, OP)?);
        Ok((CpuStorage::F32(dx), input_shape(g)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        dys: &candle_core::CudaStorage,
        dyl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geometry;
        let dx = crate::cuda::cudnn_conv::input_grad(g, dys, dyl, ws, wl)?;
        Ok((dx, input_shape(g)))
    }
}

/// `(x, dy) -> dw`.
struct ConvWeightGrad {
    geometry: ConvGeometry,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "rpg-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let dw = crate::cpu::conv::weight_grad(g, f32_slice(xs, xl, OP)?, f32_slice(dys, dyl, OP)?);
        Ok((CpuStorage::F32(dw), kernel_shape(g)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        dys: &candle_core::CudaStorage,
        dyl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geometry;
        let dw = crate::cuda::cudnn_conv::weight_grad(g, xs, xl, dys, dyl)?;
        Ok((dw, kernel_shape(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{DType, Device, Var};

    /// Deterministic values in [-1, 1).
    fn filled(shape: &[usize], salt: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n as u64)
            .map(|i| {
                let h =
                    (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xBF58_476D);
                ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// f32 rounding of sums of up to a few thousand terms: 1e-5 of the
    /// largest reference value.
    fn tolerance(reference: &Tensor) -> f32 {
        let largest = reference
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        1e-5 * largest.to_scalar::<f32>().unwrap().max(1.0)
    }

    /// Value, input gradient and weight gradient against Candle's conv.
    fn check(x_shape: [usize; 4], out: usize, k: (usize, usize), config: Conv2dConfig) {
        let groups = config.groups;
        let w_shape = [out, x_shape[1] / groups, k.0, k.1];
        let x = Var::from_tensor(&filled(&x_shape, 1)).unwrap();
        let w = Var::from_tensor(&filled(&w_shape, 2)).unwrap();
        let ours = conv2d(&x, &w, &config).unwrap();
        let theirs = x
            .conv2d(&w, config.padding, config.stride, config.dilation, groups)
            .unwrap();
        assert_eq!(ours.dims(), theirs.dims(), "{x_shape:?} {config:?}");
        let what = format!("x {x_shape:?} w {w_shape:?} {config:?}");
        assert!(
            max_abs_diff(&ours, &theirs) < tolerance(&theirs),
            "value {what}"
        );
        // Candle 0.11.1's conv backward derives the transposed conv's output
        // padding from the height alone, so it fails on non-square inputs
        // with stride > 1; there only the values can be compared.
        if x_shape[2] != x_shape[3] && config.stride > 1 {
            return;
        }
        // A fixed, non-uniform upstream gradient.
        let probe = filled(ours.dims(), 3);
        let g_ours = (&ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_theirs = (&theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("dx", &x), ("dw", &w)] {
            let a = g_ours.get(v).unwrap();
            let b = g_theirs.get(v).unwrap();
            assert!(max_abs_diff(a, b) < tolerance(b), "{name} {what}");
        }
    }

    fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dConfig {
        Conv2dConfig {
            stride,
            padding,
            dilation,
            groups,
            cudnn_fwd_algo: None,
        }
    }

    #[test]
    fn matches_candle_over_a_grid_of_shapes() {
        for (x, out, k) in [
            ([2, 3, 8, 8], 4, (3, 3)),
            ([1, 2, 7, 5], 3, (3, 3)),
            ([3, 4, 9, 11], 6, (5, 5)),
            ([2, 6, 6, 6], 6, (1, 1)),
            ([5, 4, 4, 4], 2, (2, 2)),
        ] {
            for stride in [1, 2, 3] {
                for padding in [0, 1, 2] {
                    for dilation in [1, 2] {
                        let span = dilation * (k.0 - 1) + 1;
                        if x[2] + 2 * padding < span || x[3] + 2 * padding < span {
                            continue;
                        }
                        check(x, out, k, cfg(stride, padding, dilation, 1));
                    }
                }
            }
        }
    }

    /// The conv is bilinear, so `<conv(x, w), p> = <x, dx> = <w, dw>` for
    /// the gradients of that inner product: checks the backward paths where
    /// Candle cannot serve as the reference (non-square, strided).
    #[test]
    fn gradients_are_the_adjoints_on_non_square_strided_inputs() {
        for (x_shape, w_shape, config) in [
            ([2, 3, 9, 13], [4, 3, 3, 3], cfg(2, 1, 1, 1)),
            ([1, 4, 7, 5], [6, 2, 3, 3], cfg(3, 2, 2, 2)),
            ([3, 2, 11, 6], [2, 2, 5, 5], cfg(2, 0, 1, 1)),
            // Depthwise, strided, on a non-square map.
            ([2, 4, 9, 13], [4, 1, 3, 3], cfg(2, 1, 1, 4)),
        ] {
            let x = Var::from_tensor(&filled(&x_shape, 4)).unwrap();
            let w = Var::from_tensor(&filled(&w_shape, 5)).unwrap();
            let y = conv2d(&x, &w, &config).unwrap();
            let probe = filled(y.dims(), 6);
            let inner = (&y * &probe).unwrap().sum_all().unwrap();
            let grads = inner.backward().unwrap();
            let dot = |a: &Tensor, b: &Tensor| {
                (a * b)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let expected = inner.to_scalar::<f32>().unwrap();
            for (name, v) in [("dx", &x), ("dw", &w)] {
                let got = dot(v, grads.get(v).unwrap());
                assert!(
                    (got - expected).abs() < 1e-3 * expected.abs().max(1.0),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn matches_candle_with_groups_and_depthwise() {
        check([2, 4, 6, 6], 6, (3, 3), cfg(1, 1, 1, 2));
        check([2, 6, 7, 7], 6, (3, 3), cfg(2, 1, 1, 3));
        // Depthwise, as in MobileNetV2, with a channel multiplier of 1 and 2.
        check([3, 8, 9, 9], 8, (3, 3), cfg(1, 1, 1, 8));
        check([2, 4, 8, 8], 8, (3, 3), cfg(2, 1, 1, 4));
        // Grouped pointwise.
        check([2, 6, 5, 5], 4, (1, 1), cfg(1, 0, 1, 2));
        // The direct depthwise path: strides, no or wide padding, dilation,
        // a non-square map, several planes per task.
        check([2, 5, 11, 11], 5, (3, 3), cfg(2, 1, 1, 5));
        check([3, 4, 9, 7], 4, (3, 3), cfg(1, 0, 1, 4));
        check([2, 3, 10, 10], 3, (3, 3), cfg(1, 2, 2, 3));
        check([1, 6, 12, 12], 6, (5, 5), cfg(2, 2, 1, 6));
        check([40, 16, 7, 7], 16, (3, 3), cfg(1, 1, 1, 16));
    }

    #[test]
    fn a_lone_image_and_a_large_batch_agree_with_candle() {
        check([1, 16, 12, 12], 16, (3, 3), cfg(1, 1, 1, 1));
        check([9, 3, 10, 10], 5, (3, 3), cfg(2, 1, 1, 1));
    }

    /// Layers wide enough for the input gradient's other paths: the
    /// flipped-kernel forward (stride 1, >= 16 channels per group, >= 256
    /// pixels) and col2im in several blocks of rows (strided).
    #[test]
    fn input_gradient_paths_for_wide_layers_match_candle() {
        check([2, 64, 40, 40], 8, (3, 3), cfg(1, 1, 1, 1));
        check([2, 16, 32, 32], 16, (3, 3), cfg(1, 1, 1, 1));
        check([1, 64, 16, 16], 64, (3, 3), cfg(1, 1, 1, 2));
        check([1, 32, 20, 20], 16, (5, 5), cfg(1, 2, 1, 1));
        check([1, 64, 41, 41], 4, (3, 3), cfg(2, 1, 1, 1));
    }

    /// Wide 3x3 layers, where all three passes take Winograd's F(4x4, 3x3)
    /// (a map that is not a multiple of the tile, and one that is).
    #[test]
    fn winograd_layers_match_candle() {
        check([2, 64, 8, 8], 64, (3, 3), cfg(1, 1, 1, 1));
        check([3, 64, 10, 9], 72, (3, 3), cfg(1, 1, 1, 1));
    }

    /// Small maps under kernels large enough that several images share one
    /// forward product (`conv_gemm::forward_images_per_product`): the last
    /// product shorter than the others, stride 2, and the stride-1 input
    /// gradient through that same batched forward.
    #[test]
    fn small_maps_under_large_kernels_match_candle() {
        // Channels off the multiples of 8 that Winograd takes.
        check([11, 124, 4, 4], 60, (3, 3), cfg(1, 1, 1, 1));
        check([5, 64, 8, 8], 128, (3, 3), cfg(2, 1, 1, 1));
    }

    /// The direct 3x3 loop (AVX2 CPUs): both vector layouts (a row of 16,
    /// rows of 8 in pairs, an odd last row), the input gradient through it
    /// on a map too small for gemm's transposed forward, and its weight
    /// gradient (256 pixels or more).
    #[test]
    fn direct_three_by_three_paths_match_candle() {
        check([2, 8, 16, 16], 8, (3, 3), cfg(1, 1, 1, 1));
        check([2, 8, 8, 8], 12, (3, 3), cfg(1, 1, 1, 1));
        check([3, 4, 5, 8], 8, (3, 3), cfg(1, 1, 1, 1));
        check([2, 16, 6, 24], 16, (3, 3), cfg(1, 1, 1, 1));
    }

    /// The weight gradient's product shapes: several images per product with
    /// a shorter last one (9 images, 6 per product), the `[out][rows]`
    /// accumulator beyond 128 output channels per group, with and without
    /// groups, and the whole batch in one threaded product.
    #[test]
    fn weight_gradient_products_match_candle() {
        check([9, 3, 10, 10], 5, (3, 3), cfg(1, 1, 1, 1));
        check([3, 4, 6, 6], 130, (3, 3), cfg(1, 1, 1, 1));
        check([2, 4, 5, 5], 260, (3, 3), cfg(2, 1, 1, 2));
        check([4, 16, 4, 4], 16, (3, 3), cfg(1, 1, 1, 1));
    }

    #[test]
    fn zero_channels_give_empty_or_zero_results() {
        let dev = Device::Cpu;
        for (x, w) in [([2, 0, 8, 8], [4, 0, 3, 3]), ([2, 4, 8, 8], [0, 4, 3, 3])] {
            let x = Var::zeros(&x, DType::F32, &dev).unwrap();
            let w = Var::zeros(&w, DType::F32, &dev).unwrap();
            let y = conv2d(&x, &w, &cfg(1, 1, 1, 1)).unwrap();
            assert_eq!(y.dims(), [2, w.dim(0).unwrap(), 8, 8]);
            let grads = y.sum_all().unwrap().backward().unwrap();
            assert_eq!(grads.get(&w).unwrap().dims(), w.dims());
            assert_eq!(grads.get(&x).unwrap().dims(), x.dims());
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, &cfg(1, 0, 1, 1)).unwrap_err().to_string();
        assert!(err.contains("input channels"), "{err}");
        let big = Tensor::zeros((4, 3, 11, 11), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &big, &cfg(1, 0, 1, 1)).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let err = conv2d(&x, &w, &cfg(1, 0, 1, 2)).unwrap_err().to_string();
        assert!(err.contains("groups"), "{err}");
    }

    #[test]
    fn the_candle_backend_switch_routes_to_candle() {
        let x = filled(&[1, 2, 5, 5], 1);
        let w = filled(&[3, 2, 3, 3], 2);
        let native = conv2d(&x, &w, &cfg(1, 1, 1, 1)).unwrap();
        let stock = {
            let _candle = crate::KernelBackend::Candle.scope();
            conv2d(&x, &w, &cfg(1, 1, 1, 1)).unwrap()
        };
        assert!(max_abs_diff(&native, &stock) < 1e-5);
    }
}
