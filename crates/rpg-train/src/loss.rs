//! Cross-entropy with label smoothing, and accuracy counts.

use candle_core::{D, DType, Result, Tensor};

/// Mean cross-entropy of `logits` (`B x K`) against `labels` (`B`, u32),
/// with targets smoothed to `(1 - s)` on the label and `s / K` everywhere.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_probs
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    if smoothing == 0.0 {
        return nll.mean_all();
    }
    let uniform = log_probs.mean(D::Minus1)?.neg()?;
    ((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?.mean_all()
}

/// How many rows have the label as their top-1, as a scalar on the logits'
/// device (in [`crate::optim::accumulation_dtype`]), so a training step
/// need not synchronise to count: the same rule as [`correct_counts`] (ties
/// go to the label; a row with a NaN is never correct).
pub fn correct_count(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let target = logits.gather(&labels.unsqueeze(1)?, 1)?;
    let larger = logits.broadcast_gt(&target)?.to_dtype(DType::F32)?.sum(1)?;
    let nan = logits.ne(&logits)?.to_dtype(DType::F32)?.sum(1)?;
    let dtype = crate::optim::accumulation_dtype(logits.device());
    (larger + nan)?.eq(0f32)?.to_dtype(dtype)?.sum_all()
}

/// How many rows have the label as their top-1 and within their top-5.
pub fn correct_counts(logits: &Tensor, labels: &[u32]) -> Result<(usize, usize)> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut top1 = 0;
    let mut top5 = 0;
    for (row, &label) in rows.iter().zip(labels) {
        let target = row[label as usize];
        // A NaN compares false with everything, so it would rank first:
        // a row with one is never correct.
        if row.iter().any(|v| v.is_nan()) {
            continue;
        }
        // Rank = entries strictly larger (ties resolved in the label's favour).
        let rank = row.iter().filter(|&&v| v > target).count();
        top1 += usize::from(rank == 0);
        top5 += usize::from(rank < 5);
    }
    Ok((top1, top5))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn the_device_count_follows_the_host_rule() -> Result<()> {
        let rows = [
            [1f32, 3.0, 2.0],          // label 1 on top
            [1.0, 3.0, 3.0],           // tie: the label's favour
            [f32::NAN, 5.0, 0.0],      // a NaN: never correct
            [0.0, -1.0, 2.0],          // label 0 second
            [2.0, f32::INFINITY, 1.0], // infinite top
        ];
        let labels = [1u32, 2, 1, 0, 1];
        let logits = Tensor::new(&rows, &Device::Cpu)?;
        let (host, _) = correct_counts(&logits, &labels)?;
        let device = correct_count(&logits, &Tensor::new(&labels, &Device::Cpu)?)?;
        assert_eq!(device.to_scalar::<f64>()?, host as f64);
        assert_eq!(host, 3);
        Ok(())
    }

    #[test]
    fn smoothing_zero_is_candle_cross_entropy() -> Result<()> {
        let logits = Tensor::new(&[[1f32, 2.0, 0.5], [0.1, -1.0, 3.0]], &Device::Cpu)?;
        let labels = Tensor::new(&[1u32, 2], &Device::Cpu)?;
        let ours = cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()?;
        let theirs = candle_nn::loss::cross_entropy(&logits, &labels)?.to_scalar::<f32>()?;
        assert!((ours - theirs).abs() < 1e-6);
        // With smoothing the loss of a confident correct prediction rises.
        let smoothed = cross_entropy(&logits, &labels, 0.1)?.to_scalar::<f32>()?;
        assert!(smoothed > ours);
        Ok(())
    }

    #[test]
    fn counts_top1_and_top5() -> Result<()> {
        let logits = Tensor::new(
            &[[0f32, 1., 2., 3., 4., 5., 6.], [6., 5., 4., 3., 2., 1., 0.]],
            &Device::Cpu,
        )?;
        assert_eq!(correct_counts(&logits, &[6, 6])?, (1, 1));
        assert_eq!(correct_counts(&logits, &[2, 4])?, (0, 2));
        let nan = Tensor::new(&[[f32::NAN, f32::NAN], [1., f32::NAN]], &Device::Cpu)?;
        assert_eq!(correct_counts(&nan, &[0, 0])?, (0, 0));
        Ok(())
    }
}
