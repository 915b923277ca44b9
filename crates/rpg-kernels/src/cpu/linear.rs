//! CPU kernels of a fully connected layer, `y = x w^T + b` over row-major
//! `x [rows, inputs]`, `w [outputs, inputs]`, `y [rows, outputs]`, f32.
//!
//! Each product is the one Candle's matmul runs for the same graph (same
//! operands, strides and parallelism), so results match its bit for bit;
//! what goes is the work around them: the transposed weight gradient's copy,
//! the broadcast bias add and its strided reduction, and zero-filled outputs.

use rayon::prelude::*;

use super::gemm::{matmul_overwrite, product_parallelism};
use super::storage::overwritten;

/// Each product runs alone, on the whole pool.
const ALONE: usize = 1;

/// Outputs at which the bias pass is spread over the pool: below it, handing
/// the work to another thread costs more than the adds.
const PARALLEL_BIAS: usize = 1 << 16;

/// Row-major sizes of one layer application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinearDims {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// `x w^T (+ b)`: the product as Candle's `x.matmul(w.t())`, then the bias
/// added to each row.
pub(crate) fn forward(d: LinearDims, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (d.rows, d.inputs, d.outputs);
    // SAFETY: the product overwrites all of `y` (gemm's read_dst is off).
    let mut y = unsafe {
        overwritten(m * n, |y| {
            matmul_overwrite(
                (m, n, k),
                y,
                (1, n as isize),
                x,
                (1, k as isize),
                w,
                (k as isize, 1),
                product_parallelism(ALONE),
            )
        })
    };
    if let (Some(b), true) = (bias, n > 0) {
        let add = |rows: &mut [f32]| {
            for row in rows.chunks_mut(n) {
                for (y, b) in row.iter_mut().zip(b) {
                    *y += b;
                }
            }
        };
        if y.len() < PARALLEL_BIAS {
            add(&mut y);
        } else {
            let rows_per_task = PARALLEL_BIAS.div_ceil(4 * n);
            y.par_chunks_mut(rows_per_task * n).for_each(add);
        }
    }
    y
}

/// `dL/dx = dy w`.
pub(crate) fn input_grad(d: LinearDims, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (m, k, n) = (d.rows, d.inputs, d.outputs);
    // SAFETY: the product overwrites all of `dx`.
    unsafe {
        overwritten(m * k, |dx| {
            matmul_overwrite(
                (m, k, n),
                dx,
                (1, k as isize),
                dy,
                (1, n as isize),
                w,
                (1, k as isize),
                product_parallelism(ALONE),
            )
        })
    }
}

/// `dL/dw = dy^T x`, computed as Candle computes `x^T dy` and written
/// transposed (straight into the `[outputs, inputs]` layout) by the product
/// itself.
pub(crate) fn weight_grad(d: LinearDims, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (m, k, n) = (d.rows, d.inputs, d.outputs);
    // SAFETY: the product overwrites all of `dw`.
    unsafe {
        overwritten(n * k, |dw| {
            matmul_overwrite(
                (k, n, m),
                dw,
                (k as isize, 1),
                x,
                (k as isize, 1),
                dy,
                (1, n as isize),
                product_parallelism(ALONE),
            )
        })
    }
}

/// `dL/db`: each output's gradient summed over the rows, in row order in
/// f32 (Candle's sum over the broadcast dimension, in its order).
pub(crate) fn bias_grad(d: LinearDims, dy: &[f32]) -> Vec<f32> {
    let mut sums = vec![0f32; d.outputs];
    if d.outputs > 0 {
        for row in dy.chunks(d.outputs) {
            for (s, g) in sums.iter_mut().zip(row) {
                *s += g;
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    /// Plain triple loops in f64: the reference for every kernel.
    #[test]
    fn kernels_match_plain_loops() {
        let d = LinearDims {
            rows: 5,
            inputs: 7,
            outputs: 3,
        };
        let (x, w, b, dy) = (values(35, 1), values(21, 2), values(3, 3), values(15, 4));
        let y = forward(d, &x, &w, Some(&b));
        let dx = input_grad(d, &dy, &w);
        let dw = weight_grad(d, &x, &dy);
        let db = bias_grad(d, &dy);
        for r in 0..5 {
            for o in 0..3 {
                let want: f64 = (0..7)
                    .map(|i| (x[r * 7 + i] * w[o * 7 + i]) as f64)
                    .sum::<f64>()
                    + b[o] as f64;
                assert!((y[r * 3 + o] as f64 - want).abs() < 1e-4);
            }
            for i in 0..7 {
                let want: f64 = (0..3).map(|o| (dy[r * 3 + o] * w[o * 7 + i]) as f64).sum();
                assert!((dx[r * 7 + i] as f64 - want).abs() < 1e-4);
            }
        }
        for o in 0..3 {
            for i in 0..7 {
                let want: f64 = (0..5).map(|r| (dy[r * 3 + o] * x[r * 7 + i]) as f64).sum();
                assert!((dw[o * 7 + i] as f64 - want).abs() < 1e-4);
            }
            let want: f64 = (0..5).map(|r| dy[r * 3 + o] as f64).sum();
            assert!((db[o] as f64 - want).abs() < 1e-4);
        }
    }
}
