//! Helpers shared by this crate's unit tests.

use candle_core::Tensor;

/// The largest absolute elementwise difference of two same-shaped tensors.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}
