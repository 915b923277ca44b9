//! Depthwise convolution (one filter per channel: groups = input channels =
//! output channels) as direct loops over each channel's plane.
//!
//! Why not the grouped gemm path: there every channel is its own product
//! with a reduction of `kh * kw` terms (forward), one term (input gradient)
//! or one plane (weight gradient), around an im2col/col2im nine times the
//! plane. A depthwise layer is memory-bound; here each tap is one
//! multiply-add pass over a row, with no column matrix at all.
//!
//! Same geometry and layouts as `conv_gemm`: NCHW activations,
//! `[channels, 1, kh, kw]` weights.

use rayon::prelude::*;

use super::geometry::{ConvGeometry, valid_range};

/// Whether `g` is depthwise with a channel multiplier of 1.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.groups > 1 && g.groups == g.in_channels && g.out_channels == g.in_channels
}

/// Planes per rayon task: small maps (7x7) would make tasks too fine.
fn planes_per_task(plane: usize) -> usize {
    (4096 / plane.max(1)).max(1)
}

/// Calls `f(oh, ih, ow_lo, ow_hi, iw0)` for every output row `oh` that tap
/// `(i, j)` reads from an input row `ih`, with the valid output columns
/// `ow_lo..ow_hi` and the input column `iw0` of the first of them.
fn for_tap_rows(
    g: &ConvGeometry,
    i: usize,
    j: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (oh_lo, oh_hi) = valid_range(g.height, g.out_h(), g.stride, g.padding, i * g.dilation);
    let (ow_lo, ow_hi) = valid_range(g.width, g.out_w(), g.stride, g.padding, j * g.dilation);
    if ow_lo == ow_hi {
        return;
    }
    let iw0 = ow_lo * g.stride + j * g.dilation - g.padding;
    for oh in oh_lo..oh_hi {
        let ih = oh * g.stride + i * g.dilation - g.padding;
        f(oh, ih, ow_lo, ow_hi, iw0);
    }
}

/// `y = conv(x, w)`.
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (plane_in, ow_n) = (g.height * g.width, g.out_w());
    let plane_out = g.out_h() * ow_n;
    let taps = g.kernel_h * g.kernel_w;
    let mut y = vec![0f32; g.batch * g.out_channels * plane_out];
    y.par_chunks_mut(plane_out)
        .with_min_len(planes_per_task(plane_out))
        .enumerate()
        .for_each(|(p, y)| {
            let x = &x[p * plane_in..][..plane_in];
            let w = &w[(p % g.in_channels) * taps..][..taps];
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let wv = w[i * g.kernel_w + j];
                    for_tap_rows(g, i, j, |oh, ih, lo, hi, iw0| {
                        let out = &mut y[oh * ow_n + lo..oh * ow_n + hi];
                        let src = &x[ih * g.width + iw0..];
                        if g.stride == 1 {
                            for (o, v) in out.iter_mut().zip(src) {
                                *o += wv * v;
                            }
                        } else {
                            for (o, v) in out.iter_mut().zip(src.iter().step_by(g.stride)) {
                                *o += wv * v;
                            }
                        }
                    });
                }
            }
        });
    y
}

/// `dL/dx` from `dL/dy`: every tap adds `w * dy` back onto the input pixels
/// it read.
pub(crate) fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (plane_in, ow_n) = (g.height * g.width, g.out_w());
    let plane_out = g.out_h() * ow_n;
    let taps = g.kernel_h * g.kernel_w;
    let mut dx = vec![0f32; g.batch * g.in_channels * plane_in];
    dx.par_chunks_mut(plane_in)
        .with_min_len(planes_per_task(plane_in))
        .enumerate()
        .for_each(|(p, dx)| {
            let dy = &dy[p * plane_out..][..plane_out];
            let w = &w[(p % g.in_channels) * taps..][..taps];
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let wv = w[i * g.kernel_w + j];
                    for_tap_rows(g, i, j, |oh, ih, lo, hi, iw0| {
                        let src = &dy[oh * ow_n + lo..oh * ow_n + hi];
                        let out = &mut dx[ih * g.width + iw0..];
                        if g.stride == 1 {
                            for (o, d) in out.iter_mut().zip(src) {
                                *o += wv * d;
                            }
                        } else {
                            for (o, d) in out.iter_mut().step_by(g.stride).zip(src) {
                                *o += wv * d;
                            }
                        }
                    });
                }
            }
        });
    dx
}

/// `dL/dw` from `x` and `dL/dy`: per channel and tap, the dot product of
/// `dy` with the input pixels the tap read, over every image. Channels run
/// in parallel and each sums its images in order (bit-reproducible).
pub(crate) fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (plane_in, ow_n) = (g.height * g.width, g.out_w());
    let plane_out = g.out_h() * ow_n;
    let taps = g.kernel_h * g.kernel_w;
    let channels = g.in_channels;
    let mut dw = vec![0f32; channels * taps];
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, dw)| {
        for n in 0..g.batch {
            let p = n * channels + c;
            let x = &x[p * plane_in..][..plane_in];
            let dy = &dy[p * plane_out..][..plane_out];
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let mut sum = 0f32;
                    for_tap_rows(g, i, j, |oh, ih, lo, hi, iw0| {
                        let d = &dy[oh * ow_n + lo..oh * ow_n + hi];
                        let src = &x[ih * g.width + iw0..];
                        sum += if g.stride == 1 {
                            d.iter().zip(src).map(|(d, v)| d * v).sum::<f32>()
                        } else {
                            let src = src.iter().step_by(g.stride);
                            d.iter().zip(src).map(|(d, v)| d * v).sum::<f32>()
                        };
                    });
                    dw[i * g.kernel_w + j] += sum;
                }
            }
        }
    });
    dw
}
