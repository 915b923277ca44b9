//! 2-D max pooling on the CPU with a backward of its own.
//!
//! Why: Candle 0.11.1's `max_pool2d` backward multiplies the gradient by
//! the fraction of the window that holds the maximum: a unique maximum in a
//! 2x2 window gets a quarter of its gradient, not all of it (measured:
//! `[[1, 2], [3, 4]]` pooled and summed gives 0.25 at the 4). It is also
//! six passes (upsample, compare, cast, average-pool, upsample, multiply).
//! Here the gradient goes to the window's maximum in one pass, split evenly
//! between tied maxima, and windows may overlap and be padded (padding never
//! wins, as with PyTorch's -inf padding).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::storage::f32_slice;
use crate::route::{Op, Route, route};

/// A square pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Window {
    fn out(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The 2x2, stride-2, unpadded window (LeNet's, and the most common):
    /// disjoint windows with fixed offsets, which [`halve_plane`] and
    /// [`halve_plane_grad`] run without the general bounds arithmetic, with
    /// the same operations in the same order (the same bits).
    fn halves(&self) -> bool {
        (self.kernel, self.stride, self.padding) == (2, 2, 0)
    }

    /// Input indices `lo..hi` of output `o`'s window along one axis.
    fn span(&self, o: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.padding);
        let hi = (start + self.kernel).saturating_sub(self.padding).min(size);
        (lo, hi)
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
    if route(Op::MaxPool, &[x]) != Route::Candle {
        let window = Window {
            kernel,
            stride,
            padding,
        };
        return max_pool2d_kernel(x, window);
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

/// Native max pooling of a contiguous f32 `[N, C, H, W]` CPU tensor.
fn max_pool2d_kernel(x: &Tensor, window: Window) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool { window })
}

struct MaxPool {
    window: Window,
}

/// `(planes, h, w, out_h, out_w)` of an `[N, C, H, W]` layout.
fn plane_dims(window: Window, dims: &[usize]) -> Result<(usize, usize, usize, usize, usize)> {
    let &[n, c, h, w] = dims else {
        candle_core::bail!("max pooling takes [N, C, H, W], got {dims:?}")
    };
    if window.kernel == 0
        || window.stride == 0
        || h + 2 * window.padding < window.kernel
        || w + 2 * window.padding < window.kernel
        || window.padding * 2 > window.kernel
    {
        candle_core::bail!("max pooling window {window:?} does not fit an input of {dims:?}")
    }
    Ok((n * c, h, w, window.out(h), window.out(w)))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "rpg-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "max pool")?;
        let (planes, h, w, oh, ow) = plane_dims(self.window, l.dims())?;
        let mut y = vec![0f32; planes * oh * ow];
        let halving = self.window.halves();
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(y, x)| {
                if halving {
                    return halve_plane(x, w, y, ow);
                }
                for (i, y_row) in y.chunks_mut(ow).enumerate() {
                    let (r0, r1) = self.window.span(i, h);
                    for (j, y) in y_row.iter_mut().enumerate() {
                        let (c0, c1) = self.window.span(j, w);
                        let mut best = f32::NEG_INFINITY;
                        for r in r0..r1 {
                            for &v in &x[r * w + c0..r * w + c1] {
                                best = best.max(v);
                            }
                        }
                        *y = best;
                    }
                }
            });
        let (n, c) = (l.dims()[0], l.dims()[1]);
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let grad = MaxPoolGrad {
            window: self.window,
        };
        Ok(Some(x.apply_op3_no_bwd(y, &dy.contiguous()?, &grad)?))
    }
}

/// `(x, y, dy) -> dx`: each output's gradient to its window's maxima (the
/// inputs equal to `y`), split evenly between ties.
struct MaxPoolGrad {
    window: Window,
}

impl CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "rpg-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, "max pool")?;
        let (y, dy) = (
            f32_slice(ys, yl, "max pool")?,
            f32_slice(ds, dl, "max pool")?,
        );
        let (_, h, w, oh, ow) = plane_dims(self.window, xl.dims())?;
        let mut dx = vec![0f32; x.len()];
        let halving = self.window.halves();
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(y.par_chunks(oh * ow).zip(dy.par_chunks(oh * ow)))
            .for_each(|((dx, x), (y, dy))| {
                if halving {
                    return halve_plane_grad(x, w, y, dy, ow, dx);
                }
                for i in 0..oh {
                    let (r0, r1) = self.window.span(i, h);
                    for j in 0..ow {
                        let (c0, c1) = self.window.span(j, w);
                        let (best, g) = (y[i * ow + j], dy[i * ow + j]);
                        let mut ties = 0usize;
                        for r in r0..r1 {
                            ties += x[r * w + c0..r * w + c1]
                                .iter()
                                .filter(|&&v| v == best)
                                .count();
                        }
                        let share = g / ties.max(1) as f32;
                        for r in r0..r1 {
                            let (row, out) =
                                (&x[r * w + c0..r * w + c1], &mut dx[r * w + c0..r * w + c1]);
                            for (d, &v) in out.iter_mut().zip(row) {
                                if v == best {
                                    *d += share;
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// One plane's 2x2, stride-2 maxima: `y` holds `out_w`-wide rows, `x` is
/// `w` wide (an odd last row or column is not read, as in the general path).
fn halve_plane(x: &[f32], w: usize, y: &mut [f32], out_w: usize) {
    for (i, y_row) in y.chunks_exact_mut(out_w).enumerate() {
        let (top, bottom) = (
            &x[2 * i * w..][..2 * out_w],
            &x[(2 * i + 1) * w..][..2 * out_w],
        );
        for ((y, t), b) in y_row
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *y = f32::NEG_INFINITY.max(t[0]).max(t[1]).max(b[0]).max(b[1]);
        }
    }
}

/// The gradient of [`halve_plane`] into a zeroed `dx`: each output's `dy`
/// to the inputs equal to its maximum, split evenly between ties.
fn halve_plane_grad(x: &[f32], w: usize, y: &[f32], dy: &[f32], out_w: usize, dx: &mut [f32]) {
    let rows = y.chunks_exact(out_w).zip(dy.chunks_exact(out_w));
    for (i, (y_row, dy_row)) in rows.enumerate() {
        let (top, bottom) = (
            &x[2 * i * w..][..2 * out_w],
            &x[(2 * i + 1) * w..][..2 * out_w],
        );
        let (dx_top, dx_bottom) = dx[2 * i * w..][..2 * w].split_at_mut(w);
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        let grads = dx_top
            .chunks_exact_mut(2)
            .zip(dx_bottom.chunks_exact_mut(2));
        for (((&best, &g), (t, b)), (dt, db)) in y_row.iter().zip(dy_row).zip(windows).zip(grads) {
            let hits = [t[0] == best, t[1] == best, b[0] == best, b[1] == best];
            let ties = hits.iter().filter(|&&h| h).count();
            // g / 1 is g: the common unique maximum skips the division.
            let share = if ties == 1 { g } else { g / ties.max(1) as f32 };
            for (d, hit) in dt.iter_mut().chain(db.iter_mut()).zip(hits) {
                if hit {
                    *d += share;
                }
            }
        }
    }
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
            let views = {
                let _candle = crate::KernelBackend::Candle.scope();
                max_pool2d(&x, kernel, stride, padding)
            };
            // Zero padding differs from -inf padding on negative inputs:
            // compare where both see the same window (shift to positive).
            let shifted = Var::from_tensor(&(x.as_tensor() + 1000.0)?)?;
            let native_pos = max_pool2d(&shifted, kernel, stride, padding)?;
            let views_pos = {
                let _candle = crate::KernelBackend::Candle.scope();
                max_pool2d(&shifted, kernel, stride, padding)?
            };
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
}
