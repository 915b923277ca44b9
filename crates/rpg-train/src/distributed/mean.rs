//! Averaging tensors over the ranks: what a step does with its gradients
//! and an evaluation with batch norm's running statistics.

use candle_core::{DType, Tensor};

use super::collective::{Collective, CollectiveError};

/// The element-wise mean over `comm`'s ranks of `tensors` (each returned
/// with its shape, dtype and device) and of `scalars` (in place), in one
/// exchange of one f32 buffer: on the GPU when the tensors are there and
/// the engine exchanges device memory, else through the host.
pub fn mean_over_ranks<E>(
    comm: &dyn Collective,
    tensors: &[&Tensor],
    scalars: &mut [f32],
) -> Result<Vec<Tensor>, E>
where
    E: From<candle_core::Error> + From<CollectiveError>,
{
    let scale = 1.0 / comm.world() as f32;
    if let Some(device) = tensors
        .first()
        .map(|t| t.device())
        .filter(|d| comm.sums_on(d))
    {
        let mut parts = Vec::with_capacity(tensors.len() + 1);
        for t in tensors {
            parts.push(t.flatten_all()?.to_dtype(DType::F32)?);
        }
        parts.push(Tensor::from_slice(scalars, scalars.len(), device)?);
        let flat = Tensor::cat(&parts, 0)?;
        let mean = comm.sum_on_device(&flat)?.affine(f64::from(scale), 0.0)?;
        return split(&mean, tensors, scalars);
    }
    let total: usize = tensors.iter().map(|t| t.elem_count()).sum();
    let mut flat = Vec::with_capacity(total + scalars.len());
    for t in tensors {
        flat.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    flat.extend_from_slice(scalars);
    comm.sum_f32(&mut flat)?;
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

/// `tensors`' means cut from the device buffer `mean` (laid out as
/// [`mean_over_ranks`] packed it), and `scalars` read back from its end.
fn split<E>(mean: &Tensor, tensors: &[&Tensor], scalars: &mut [f32]) -> Result<Vec<Tensor>, E>
where
    E: From<candle_core::Error>,
{
    let mut at = 0;
    let mut means = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n = t.elem_count();
        means.push(
            mean.narrow(0, at, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?,
        );
        at += n;
    }
    if !scalars.is_empty() {
        let read = mean.narrow(0, at, scalars.len())?.to_vec1::<f32>()?;
        scalars.copy_from_slice(&read);
    }
    Ok(means)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// `world` ranks that all hold this rank's values, summing them on the
    /// device path or through the host as told.
    struct Copies {
        world: usize,
        on_device: bool,
    }

    impl Collective for Copies {
        fn rank(&self) -> usize {
            0
        }
        fn world(&self) -> usize {
            self.world
        }
        fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            values.iter_mut().for_each(|v| *v *= self.world as f32);
            Ok(())
        }
        fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
            values.iter_mut().for_each(|v| *v *= self.world as f64);
            Ok(())
        }
        fn broadcast(&self, _: &mut Vec<u8>) -> Result<(), CollectiveError> {
            Ok(())
        }
        fn sums_on(&self, _: &Device) -> bool {
            self.on_device
        }
        fn sum_on_device(&self, flat: &Tensor) -> Result<Tensor, CollectiveError> {
            assert_eq!(flat.rank(), 1, "the device buffer is flat");
            Ok((flat * self.world as f64).expect("scaling"))
        }
    }

    #[test]
    fn device_and_host_paths_pack_and_unpack_alike() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = Tensor::new(&[[0.25f64], [-1.5]], &dev).unwrap();
        for on_device in [false, true] {
            let comm = Copies {
                world: 4,
                on_device,
            };
            let mut scalars = [3.0f32, -0.5];
            let means = mean_over_ranks::<crate::Error>(&comm, &[&a, &b], &mut scalars).unwrap();
            assert_eq!(means[0].dims(), [2, 3]);
            assert_eq!(
                means[0].to_vec2::<f32>().unwrap(),
                a.to_vec2::<f32>().unwrap()
            );
            assert_eq!(means[1].dtype(), candle_core::DType::F64);
            assert_eq!(means[1].to_vec2::<f64>().unwrap(), [[0.25], [-1.5]]);
            assert_eq!(scalars, [3.0, -0.5], "on_device {on_device}");
        }
    }

    #[test]
    fn no_scalars_is_fine_on_the_device_path() {
        let a = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let comm = Copies {
            world: 2,
            on_device: true,
        };
        let means = mean_over_ranks::<crate::Error>(&comm, &[&a], &mut []).unwrap();
        assert_eq!(means[0].to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }
}
