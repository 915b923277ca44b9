//! Helpers shared by this crate's unit tests.

use candle_core::Tensor;

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
