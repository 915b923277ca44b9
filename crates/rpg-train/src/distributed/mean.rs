//! Averaging tensors over the ranks: what a step does with its gradients
//! and an evaluation with batch norm's running statistics.

use candle_core::{DType, Tensor};

use super::collective::{Collective, CollectiveError};

/// The element-wise mean over `comm`'s ranks of `tensors` (each returned
/// with its shape, dtype and device) and of `scalars` (in place), in one
/// exchange of one f32 buffer.
pub fn mean_over_ranks<E>(
    comm: &dyn Collective,
    tensors: &[&Tensor],
    scalars: &mut [f32],
) -> Result<Vec<Tensor>, E>
where
    E: From<candle_core::Error> + From<CollectiveError>,
{
    let total: usize = tensors.iter().map(|t| t.elem_count()).sum();
    let mut flat = Vec::with_capacity(total + scalars.len());
    for t in tensors {
        flat.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    flat.extend_from_slice(scalars);
    comm.sum_f32(&mut flat)?;
    let scale = 1.0 / comm.world() as f32;
    let mut at = 0;
    let mut means = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n = t.elem_count();
        let mean: Vec<f32> = flat[at..at + n].iter().map(|v| v * scale).collect();
        means.push(Tensor::from_vec(mean, t.shape(), t.device())?.to_dtype(t.dtype())?);
        at += n;
    }
    for (s, v) in scalars.iter_mut().zip(&flat[at..]) {
        *s = v * scale;
    }
    Ok(means)
}
