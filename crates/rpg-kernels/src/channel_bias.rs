//! `x + bias` per channel of an `[N, C, ...]` tensor (a conv layer's bias),
//! with a backward of its own.
//!
//! Why: through Candle the bias is a broadcast add, whose backward sums the
//! gradient over every axis but the channel one with Candle's generic
//! strided reduction: a third of a LeNet-5 training step. Here the sum runs
//! over each channel's contiguous runs.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu::channels::{channel_totals, dims, run_partials};
use crate::cpu::storage::{f32_slice, par_filled};
use crate::route::{Op, Route, route};

/// `x + bias` broadcast over dimension 1 of `x` (`bias` has `x.dim(1)`
/// elements), differentiable in both; native for f32 on the CPU.
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let channels = bias.elem_count();
    if x.rank() < 2 || x.dim(1)? != channels {
        candle_core::bail!(
            "channel bias of {channels} values for an input of shape {:?}",
            x.dims()
        )
    }
    match route(Op::ChannelBias, &[x, bias]) {
        Route::Cpu | Route::Cuda => x
            .contiguous()?
            .apply_op2(&bias.flatten_all()?.contiguous()?, AddChannelBias),
        Route::Candle => {
            let mut shape = vec![1; x.rank()];
            shape[1] = channels;
            x.broadcast_add(&bias.reshape(shape)?)
        }
    }
}

struct AddChannelBias;

impl CustomOp2 for AddChannelBias {
    fn name(&self) -> &'static str {
        "rpg-add-channel-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (f32_slice(xs, xl, "bias")?, f32_slice(bs, bl, "bias")?);
        let (_, c, s) = dims(xl.dims());
        let image = (c * s).max(1);
        // SAFETY: every image's chunk of c * s values is written.
        let y = unsafe {
            par_filled(x.len(), image, |img, y| {
                let x = &x[img * image..][..y.len()];
                for ((y, x), b) in y.chunks_mut(s.max(1)).zip(x.chunks(s.max(1))).zip(b) {
                    for (y, x) in y.iter_mut().zip(x) {
                        y.write(x + b);
                    }
                }
            })
        };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_bias = dy.contiguous()?.apply_op1_no_bwd(&ChannelSums)?;
        Ok((Some(dy.clone()), Some(d_bias.reshape(bias.shape())?)))
    }
}

/// `[N, C, ...] -> [C]`: the sum of each channel, accumulated in f64 in a
/// fixed order.
struct ChannelSums;

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "rpg-channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = f32_slice(s, l, "bias")?;
        let (n, c, s) = dims(l.dims());
        let runs = run_partials(
            (n, c),
            #[inline(always)]
            |img, ch| [dy[(img * c + ch) * s..][..s].iter().sum(), 0.0],
        );
        let (sums, _) = channel_totals(&runs, (n, c));
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::values;
    use candle_core::{Device, Var};

    use super::*;
    use crate::test_util::max_abs_diff;

    #[test]
    fn matches_candles_broadcast_add_in_value_and_gradients() -> Result<()> {
        for shape in [vec![3, 4, 5, 6], vec![2, 3, 7], vec![5, 2]] {
            let n: usize = shape.iter().product();
            let c = shape[1];
            let x = Var::from_vec(values(n, 1), shape.as_slice(), &Device::Cpu)?;
            let b = Var::from_vec(values(c, 2), c, &Device::Cpu)?;
            let probe = Tensor::from_vec(values(n, 3), shape.as_slice(), &Device::Cpu)?;
            let ours = add_channel_bias(&x, &b)?;
            let mut bshape = vec![1; shape.len()];
            bshape[1] = c;
            let theirs = x.broadcast_add(&b.reshape(bshape)?)?;
            assert_eq!(max_abs_diff(&ours, &theirs), 0.0);
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            assert_eq!(
                max_abs_diff(g_ours.get(&x).unwrap(), g_theirs.get(&x).unwrap()),
                0.0
            );
            let (gb, tb) = (g_ours.get(&b).unwrap(), g_theirs.get(&b).unwrap());
            assert_eq!(gb.dims(), tb.dims());
            assert!(max_abs_diff(gb, tb) < 1e-5, "{shape:?}");
        }
        Ok(())
    }

    #[test]
    fn a_bias_of_the_wrong_length_is_an_error() {
        let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = add_channel_bias(&x, &b).unwrap_err().to_string();
        assert!(err.contains("channel bias"), "{err}");
    }
}
