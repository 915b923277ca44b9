//! Layer norm from differentiable primitives.

use candle_core::{D, Result, Tensor};

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
    use candle_core::{Device, Tensor, Var};

    use super::*;

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
