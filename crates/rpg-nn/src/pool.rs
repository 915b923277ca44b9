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

use crate::backend::f32_slice;

/// A square pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Window {
    fn out(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Input indices `lo..hi` of output `o`'s window along one axis.
    fn span(&self, o: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.padding);
        let hi = (start + self.kernel).saturating_sub(self.padding).min(size);
        (lo, hi)
    }
}

/// Native max pooling of a contiguous f32 `[N, C, H, W]` CPU tensor.
pub(crate) fn max_pool2d(x: &Tensor, window: Window) -> Result<Tensor> {
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
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(y, x)| {
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
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(y.par_chunks(oh * ow).zip(dy.par_chunks(oh * ow)))
            .for_each(|((dx, x), (y, dy))| {
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
