//! `Linear`, a fully connected layer with a native CPU forward and backward.
//!
//! Why: through Candle a linear layer is a matmul of the transposed weight
//! and a broadcast bias add, five graph nodes whose backward zero-fills and
//! adds a gradient buffer for each, copies the transposed weight gradient
//! through a strided add, sums the bias gradient with the generic strided
//! reduction, and computes the input's gradient even for the input batch,
//! which needs none. That was about half of the MLP's training step besides
//! the products themselves. Here it is one node: the same products (see
//! `cpu::linear`), so values match Candle's bit for bit, and nothing else.
//!
//! A drop-in for `candle_nn::Linear`: same parameter names and init; inputs
//! of any rank `[.., inputs]`. Other devices and dtypes take Candle's path.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;

use crate::cpu::linear::{self as kernels, LinearDims};
use crate::cpu::storage::f32_slice;
use crate::route::{Op, Route, route};

const OP: &str = "linear";

/// A fully connected layer: `y = x w^T + b`, `w` of shape `[outputs, inputs]`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer over existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }
    /// The `[outputs, inputs]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The `[outputs]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(layer: candle_nn::Linear) -> Self {
        Self::new(layer.weight().clone(), layer.bias().cloned())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_op(x, &self.weight, self.bias.as_ref())
    }
}

/// A linear layer with bias, parameters `weight` and `bias` under `vb`, with
/// candle-nn's initialisation.
pub fn linear(inputs: usize, outputs: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    candle_nn::linear(inputs, outputs, vb).map(Linear::from)
}

/// `x w^T (+ bias)` over the last dimension of `x`, differentiable in all
/// three; native for f32 on the CPU, Candle's `Linear` elsewhere.
pub fn linear_op(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let operands: Vec<&Tensor> = [x, weight].into_iter().chain(bias).collect();
    if route(Op::Linear, &operands) == Route::Candle || x.rank() == 0 {
        return Module::forward(&candle_nn::Linear::new(weight.clone(), bias.cloned()), x);
    }
    let (outputs, inputs) = weight.dims2()?;
    let mut out_dims = x.dims().to_vec();
    let last = out_dims.len() - 1;
    if out_dims[last] != inputs {
        candle_core::bail!(
            "linear: input of shape {:?} for a weight of shape [{outputs}, {inputs}]: the last dimension must be {inputs}",
            x.dims()
        )
    }
    if let Some(b) = bias
        && b.dims() != [outputs]
    {
        candle_core::bail!("linear: bias of shape {:?} for {outputs} outputs", b.dims())
    }
    let rows = out_dims[..last].iter().product();
    out_dims[last] = outputs;
    let x = x.contiguous()?.reshape((rows, inputs))?;
    let weight = weight.contiguous()?;
    let op = LinearForward(LinearDims {
        rows,
        inputs,
        outputs,
    });
    let y = match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, op)?,
        None => x.apply_op2(&weight, op)?,
    };
    y.reshape(out_dims)
}

/// `(x [rows, inputs], w [outputs, inputs], b?) -> y [rows, outputs]`.
#[derive(Clone, Copy)]
struct LinearForward(LinearDims);

impl LinearForward {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(x.0, x.1, OP)?;
        let w = f32_slice(w.0, w.1, OP)?;
        let b = b.map(|(s, l)| f32_slice(s, l, OP)).transpose()?;
        let y = kernels::forward(self.0, x, w, b);
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.0.rows, self.0.outputs)),
        ))
    }

    /// The gradients of `x` (when it is tracked: the input batch is not) and
    /// of `w`.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = self.0;
        let dx = x
            .track_op()
            .then(|| dy.apply_op2_no_bwd(w, &LinearInputGrad(dims)))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| x.apply_op2_no_bwd(dy, &LinearWeightGrad(dims)))
            .transpose()?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for LinearForward {
    fn name(&self) -> &'static str {
        "rpg-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((xs, xl), (ws, wl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, &dy.contiguous()?)
    }
}

impl CustomOp3 for LinearForward {
    fn name(&self) -> &'static str {
        "rpg-linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (dx, dw) = self.grads(x, w, &dy)?;
        let db = b
            .track_op()
            .then(|| dy.apply_op1_no_bwd(&LinearBiasGrad(self.0)))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

/// `(dy, w) -> dx`.
struct LinearInputGrad(LinearDims);

impl CustomOp2 for LinearInputGrad {
    fn name(&self) -> &'static str {
        "rpg-linear-input-grad"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dx = kernels::input_grad(self.0, f32_slice(ds, dl, OP)?, f32_slice(ws, wl, OP)?);
        Ok((
            CpuStorage::F32(dx),
            Shape::from((self.0.rows, self.0.inputs)),
        ))
    }
}

/// `(x, dy) -> dw`.
struct LinearWeightGrad(LinearDims);

impl CustomOp2 for LinearWeightGrad {
    fn name(&self) -> &'static str {
        "rpg-linear-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dw = kernels::weight_grad(self.0, f32_slice(xs, xl, OP)?, f32_slice(ds, dl, OP)?);
        Ok((
            CpuStorage::F32(dw),
            Shape::from((self.0.outputs, self.0.inputs)),
        ))
    }
}

/// `dy -> db`.
struct LinearBiasGrad(LinearDims);

impl CustomOp1 for LinearBiasGrad {
    fn name(&self) -> &'static str {
        "rpg-linear-bias-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let db = kernels::bias_grad(self.0, f32_slice(ds, dl, OP)?);
        Ok((CpuStorage::F32(db), Shape::from(self.0.outputs)))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::values;
    use candle_core::{Device, Var};

    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// Bit for bit against candle-nn's `Linear`, value and all three
    /// gradients, for 2-D and 3-D inputs, with and without bias; sizes
    /// include the MLP's first layer, whose depth spans gemm's blocks.
    #[test]
    fn matches_candle_nn_linear_bit_for_bit() -> Result<()> {
        let cases: [(&[usize], usize, bool); 4] = [
            (&[4, 7], 3, true),
            (&[2, 5, 12], 9, true),
            (&[6, 10], 4, false),
            (&[128, 784], 256, true),
        ];
        for (x_dims, outputs, with_bias) in cases {
            let inputs = *x_dims.last().unwrap();
            let n: usize = x_dims.iter().product();
            let dev = &Device::Cpu;
            let x = Var::from_vec(values(n, 1), x_dims, dev)?;
            let w = Var::from_vec(values(outputs * inputs, 2), (outputs, inputs), dev)?;
            let b = Var::from_vec(values(outputs, 3), outputs, dev)?;
            let bias = with_bias.then(|| b.as_tensor().clone());
            let ours = Linear::new(w.as_tensor().clone(), bias.clone()).forward(&x)?;
            let theirs = candle_nn::Linear::new(w.as_tensor().clone(), bias).forward(&x)?;
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(bits(&ours), bits(&theirs), "{x_dims:?}");
            let probe = Tensor::from_vec(values(ours.elem_count(), 4), ours.dims(), dev)?;
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            let mut params = vec![x.as_tensor(), w.as_tensor()];
            if with_bias {
                params.push(b.as_tensor());
            }
            for p in params {
                let (a, e) = (g_ours.get(p).unwrap(), g_theirs.get(p).unwrap());
                assert_eq!(a.dims(), e.dims());
                assert_eq!(bits(a), bits(e), "{x_dims:?}");
            }
        }
        Ok(())
    }

    /// Rows come from the leading dimensions, so a layer with no inputs
    /// still has one output row per input row: the bias.
    #[test]
    fn a_layer_without_inputs_gives_its_bias() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Tensor::zeros((2, 0), candle_core::DType::F32, dev)?;
        let w = Tensor::zeros((3, 0), candle_core::DType::F32, dev)?;
        let b = Tensor::new(&[1f32, -2.0, 0.5], dev)?;
        let y = linear_op(&x, &w, Some(&b))?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![1.0, -2.0, 0.5]; 2]);
        Ok(())
    }

    #[test]
    fn an_untracked_input_gets_no_gradient_work() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Tensor::from_vec(values(12, 1), (3, 4), dev)?;
        let w = Var::from_vec(values(8, 2), (2, 4), dev)?;
        let y = linear_op(&x, &w, None)?;
        let grads = y.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        assert!(grads.get(&w).is_some());
        Ok(())
    }

    #[test]
    fn shape_mismatches_are_errors_that_name_the_shapes() {
        let dev = &Device::Cpu;
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, dev).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, dev).unwrap();
        let err = linear_op(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("[2, 5]") && err.contains("must be 4"), "{err}");
        let w = Tensor::zeros((3, 5), candle_core::DType::F32, dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, dev).unwrap();
        let err = linear_op(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(err.contains("bias of shape [4]"), "{err}");
    }
}
