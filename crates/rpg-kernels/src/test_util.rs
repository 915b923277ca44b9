//! Helpers shared by this crate's unit tests.

use candle_core::Tensor;

use crate::cpu::geometry::ConvGeometry;

/// The largest absolute elementwise difference of two same-shaped tensors.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// `n` values in [-2, 2), spread and repeating every 101: inputs whose sums
/// are exact enough to compare, different for each `salt`.
pub(crate) fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37 + salt) % 101) as f32 - 50.0) / 25.0)
        .collect()
}

/// The geometry of a 3x3 stride-1 "same" conv with one group.
pub(crate) fn same_3x3(
    batch: usize,
    in_channels: usize,
    (height, width): (usize, usize),
    out_channels: usize,
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
    }
}

/// A 3x3 stride-1 "same" conv (one group) as a direct sum in f64: the
/// reference for the fast kernels.
pub(crate) fn same_3x3_reference(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f64> {
    let (c, k, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
    let mut y = vec![0f64; g.batch * k * h * wd];
    for b in 0..g.batch {
        for o in 0..k {
            for r in 0..h {
                for col in 0..wd {
                    let mut sum = 0f64;
                    for ch in 0..c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (ir, ic) = (r + i, col + j);
                                if ir < 1 || ic < 1 || ir > h || ic > wd {
                                    continue;
                                }
                                let xv = x[((b * c + ch) * h + ir - 1) * wd + ic - 1];
                                sum += xv as f64 * w[((o * c + ch) * 3 + i) * 3 + j] as f64;
                            }
                        }
                    }
                    y[((b * k + o) * h + r) * wd + col] = sum;
                }
            }
        }
    }
    y
}

/// The weight gradient of a 3x3 stride-1 "same" conv (one group) as a
/// direct sum over pixels in f64, OIHW: the reference for the fast kernels.
pub(crate) fn same_3x3_weight_grad_reference(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f64> {
    let (cin, cout, h, w) = (g.in_channels, g.out_channels, g.height, g.width);
    let mut dw = vec![0f64; cout * cin * 9];
    for o in 0..cout {
        for c in 0..cin {
            for (tap, sum) in dw[(o * cin + c) * 9..][..9].iter_mut().enumerate() {
                let (i, j) = (tap / 3, tap % 3);
                for b in 0..g.batch {
                    for r in 0..h {
                        for s in 0..w {
                            let (ir, is) = (r + i, s + j);
                            if ir < 1 || is < 1 || ir > h || is > w {
                                continue;
                            }
                            let xv = x[((b * cin + c) * h + ir - 1) * w + is - 1] as f64;
                            *sum += xv * dy[((b * cout + o) * h + r) * w + s] as f64;
                        }
                    }
                }
            }
        }
    }
    dw
}
