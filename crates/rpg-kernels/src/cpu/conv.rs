//! The CPU convolution entry points and the one table that chooses their
//! algorithm ([`algorithm`]): depthwise loops, Winograd, the direct 3x3
//! loop, the input gradient as a transposed forward, or gemm around
//! im2col/col2im. Each algorithm's module says why and where it pays; this
//! file only decides.

use super::geometry::ConvGeometry;
use super::{conv_gemm, depthwise, direct, winograd};

/// The three computations of a conv layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

/// A way to compute a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// No values to compute (a zero-sized dimension): zeros.
    Empty,
    /// One filter per channel, direct loops per plane (`depthwise.rs`).
    Depthwise,
    /// Same 3x3 convs on wide layers (`winograd/`).
    Winograd,
    /// The AVX2 3x3 loop (`direct.rs`).
    Direct,
    /// The input gradient as the forward conv of the flipped kernel
    /// (`conv_gemm::transposed_forward`), itself chosen by this table.
    TransposedForward,
    /// gemm around im2col (forward, weight gradient) or col2im (input
    /// gradient): any geometry.
    Gemm,
}

/// The table: which algorithm computes `pass` of `g`, first match wins.
pub(crate) fn algorithm(pass: Pass, g: &ConvGeometry) -> Algorithm {
    if depthwise::applies(g) {
        return Algorithm::Depthwise;
    }
    if g.is_empty() {
        return Algorithm::Empty;
    }
    match pass {
        Pass::Forward if winograd::applies(g) => Algorithm::Winograd,
        Pass::Forward if direct::applies(g) => Algorithm::Direct,
        Pass::InputGrad if conv_gemm::transposed_forward(g).is_some() => {
            Algorithm::TransposedForward
        }
        Pass::WeightGrad if winograd::weight_grad_applies(g) => Algorithm::Winograd,
        Pass::WeightGrad if direct::weight_grad_applies(g) => Algorithm::Direct,
        _ => Algorithm::Gemm,
    }
}

/// `y = conv(x, w)`, no bias.
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    match algorithm(Pass::Forward, g) {
        Algorithm::Empty => vec![0.0; g.batch * g.out_image_len()],
        Algorithm::Depthwise => depthwise::forward(g, x, w),
        Algorithm::Winograd => winograd::forward(g, x, w),
        Algorithm::Direct => direct::forward(g, x, w),
        Algorithm::TransposedForward | Algorithm::Gemm => conv_gemm::forward_im2col(g, x, w),
    }
}

/// `dL/dx` from `dL/dy`.
pub(crate) fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    match algorithm(Pass::InputGrad, g) {
        Algorithm::Empty => vec![0.0; g.batch * g.image_len()],
        Algorithm::Depthwise => depthwise::input_grad(g, dy, w),
        Algorithm::TransposedForward => {
            let transposed = conv_gemm::transposed_forward(g).expect("chosen by the table");
            forward(&transposed, dy, &conv_gemm::flip_kernel(g, w))
        }
        Algorithm::Winograd | Algorithm::Direct | Algorithm::Gemm => {
            conv_gemm::input_grad_col2im(g, dy, w)
        }
    }
}

/// `dL/dw` from `x` and `dL/dy`.
pub(crate) fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    match algorithm(Pass::WeightGrad, g) {
        Algorithm::Empty => vec![0.0; g.out_channels * g.col_rows()],
        Algorithm::Depthwise => depthwise::weight_grad(g, x, dy),
        Algorithm::Winograd => winograd::weight_grad(g, x, dy),
        Algorithm::Direct => direct::weight_grad(g, x, dy),
        Algorithm::TransposedForward | Algorithm::Gemm => conv_gemm::weight_grad_im2col(g, x, dy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{same_3x3, values};

    fn assert_close(ours: &[f32], want: &[f32], what: &str) {
        assert_eq!(ours.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let worst = ours
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * scale, "{what}: {worst} of {scale}");
    }

    /// Where the direct kernels run, the im2col paths (those of CPUs
    /// without AVX2) give the same values: all three passes.
    #[test]
    fn the_direct_kernels_and_im2col_agree_on_their_shapes() {
        for (batch, cin, size, cout) in [
            (2, 16, (32, 32), 16),
            (2, 8, (8, 8), 12),
            (1, 5, (16, 24), 4),
        ] {
            let g = same_3x3(batch, cin, size, cout);
            if algorithm(Pass::Forward, &g) != Algorithm::Direct {
                eprintln!("no AVX2/FMA here: the direct conv is not taken");
                return;
            }
            let x = values(batch * g.image_len(), 1);
            let w = values(cout * g.col_rows(), 2);
            let dy = values(batch * g.out_image_len(), 3);
            let im2col = conv_gemm::forward_im2col(&g, &x, &w);
            assert_close(&forward(&g, &x, &w), &im2col, "forward");
            assert_close(
                &input_grad(&g, &dy, &w),
                &conv_gemm::input_grad_col2im(&g, &dy, &w),
                "input gradient",
            );
            assert_close(
                &direct::weight_grad(&g, &x, &dy),
                &conv_gemm::weight_grad_im2col(&g, &x, &dy),
                "weight gradient",
            );
        }
    }

    /// The table on the layers the models are made of (on a CPU with AVX2).
    #[test]
    fn the_table_picks_the_measured_winner_for_each_kind_of_layer() {
        let depthwise = ConvGeometry {
            groups: 32,
            ..same_3x3(2, 32, (8, 8), 32)
        };
        assert_eq!(algorithm(Pass::Forward, &depthwise), Algorithm::Depthwise);
        let empty = same_3x3(0, 64, (8, 8), 64);
        assert_eq!(algorithm(Pass::WeightGrad, &empty), Algorithm::Empty);
        // LeNet-5's 5x5 convs are gemm's in every pass.
        let lenet = ConvGeometry {
            kernel_h: 5,
            kernel_w: 5,
            padding: 0,
            ..same_3x3(32, 6, (14, 14), 16)
        };
        for pass in [Pass::Forward, Pass::InputGrad, Pass::WeightGrad] {
            assert_eq!(algorithm(pass, &lenet), Algorithm::Gemm, "{pass:?}");
        }
        if !super::super::has_avx2_fma() {
            return;
        }
        let wide = same_3x3(8, 64, (16, 16), 64);
        assert_eq!(algorithm(Pass::Forward, &wide), Algorithm::Winograd);
        assert_eq!(algorithm(Pass::WeightGrad, &wide), Algorithm::Winograd);
        assert_eq!(
            algorithm(Pass::InputGrad, &wide),
            Algorithm::TransposedForward
        );
    }
}
