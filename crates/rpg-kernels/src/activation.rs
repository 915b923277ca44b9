//! ReLU, ReLU of a sum (a residual block's last step) and ReLU6, as single
//! CPU passes with backward passes of their own.
//!
//! Why: Candle's ReLU backward is `grad * (x >= 0).to_dtype()` with a
//! zeros tensor to compare against: four passes and three activation-sized
//! buffers, and `relu(a + b)` adds a fifth pass and the sum's buffer. After
//! the native conv and batch norm these elementwise ops were the next item
//! of a ResNet-20 step. The gradients equal Candle's exactly, including its
//! choice of 1 at exactly zero.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::cpu::simd::{kept, widest};
use crate::cpu::storage::{f32_slice, par_filled};
use crate::route::{Op, Route, route};

/// Elements per parallel chunk: large enough to amortise a task, small
/// enough to spread a ResNet activation over every thread.
const CHUNK: usize = 1 << 15;

/// `max(x, 0)`, differentiable; the native pass for f32 on the CPU,
/// Candle's `relu` elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    match route(Op::Relu, &[x]) {
        Route::Cpu | Route::Cuda => x.contiguous()?.apply_op1(Unary::Relu),
        Route::Candle => x.relu(),
    }
}

/// `max(a + b, 0)`, differentiable in both; one native pass for f32 on the
/// CPU, one kernel each way for f32 on CUDA (`cuda` feature), Candle's
/// `(a + b).relu()` elsewhere. Shapes must match.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match route(Op::AddRelu, &[a, b]) {
        Route::Cpu | Route::Cuda => {
            if a.dims() != b.dims() {
                candle_core::bail!("add_relu of shapes {:?} and {:?}", a.dims(), b.dims())
            }
            a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
        }
        Route::Candle => (a + b)?.relu(),
    }
}

/// `min(max(x, 0), 6)` (MobileNetV2's activation), differentiable; one
/// native pass for f32 on the CPU, Candle's `clamp` elsewhere. Candle's
/// clamp is a maximum then a minimum, whose backward compares, casts and
/// divides: about twenty passes. The gradient is Candle's: 1 inside, 0
/// outside and 1/2 at exactly 0 or 6 (where its maximum/minimum split a tie).
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    match route(Op::Relu6, &[x]) {
        Route::Cpu | Route::Cuda => x.contiguous()?.apply_op1(Unary::Relu6),
        Route::Candle => x.clamp(0f32, 6f32),
    }
}

/// `out[i] = f(a[i], b[i], c[i])` on the rayon pool, at the CPU's widest
/// vectors (`f` must be `#[inline(always)]` to be compiled at that width),
/// into a buffer that is not zeroed first (zeroing was a pass of its own).
fn zip3_map(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    // SAFETY: every element of each chunk is written.
    unsafe {
        par_filled(a.len(), CHUNK, |i, out| {
            widest(
                #[inline(always)]
                || {
                    let at = i * CHUNK;
                    let (a, b, c) = (&a[at..], &b[at..], &c[at..]);
                    for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
                        o.write(f(a, b, c));
                    }
                },
            )
        })
    }
}

/// [`zip3_map`] of two inputs.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    zip3_map(
        a,
        b,
        b,
        #[inline(always)]
        |a, b, _| f(a, b),
    )
}

/// The one-input activations, as a forward op and (with `dy`) its gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unary {
    Relu,
    Relu6,
}

impl Unary {
    fn label(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Relu6 => "relu6",
        }
    }

    /// Each arm is its own closure, so each loop compiles to straight code.
    fn forward(self, x: &[f32]) -> Vec<f32> {
        match self {
            Self::Relu => zip_map(
                x,
                x,
                #[inline(always)]
                |x, _| x.max(0.0),
            ),
            Self::Relu6 => zip_map(
                x,
                x,
                #[inline(always)]
                |x, _| x.clamp(0.0, 6.0),
            ),
        }
    }

    /// `dL/dx` from the input and `dL/dy`, as Candle's backward gives it:
    /// ReLU passes `dy` where `x >= 0`; ReLU6 inside (0, 6), half of it at
    /// exactly 0 or 6 (its maximum/minimum split a tie).
    fn backward(self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        match self {
            Self::Relu => zip_map(
                x,
                dy,
                #[inline(always)]
                |x, d| kept(x >= 0.0, d),
            ),
            // At most one of the two is nonzero bits, so or-ing them is exact.
            Self::Relu6 => zip_map(
                x,
                dy,
                #[inline(always)]
                |x, d| {
                    let inside = kept(x > 0.0 && x < 6.0, d).to_bits();
                    let tie = kept(x == 0.0 || x == 6.0, d * 0.5).to_bits();
                    f32::from_bits(inside | tie)
                },
            ),
        }
    }
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        match self {
            Self::Relu => "rpg-relu",
            Self::Relu6 => "rpg-relu6",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.label())?;
        Ok((CpuStorage::F32(self.forward(x)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = x.apply_op2_no_bwd(&dy.contiguous()?, &UnaryGrad(*self))?;
        Ok(Some(dx))
    }
}

/// `(x, dy) -> dx` of a [`Unary`].
struct UnaryGrad(Unary);

impl CustomOp2 for UnaryGrad {
    fn name(&self) -> &'static str {
        match self.0 {
            Unary::Relu => "rpg-relu-grad",
            Unary::Relu6 => "rpg-relu6-grad",
        }
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let label = self.0.label();
        let (x, dy) = (f32_slice(sx, lx, label)?, f32_slice(sd, ld, label)?);
        Ok((CpuStorage::F32(self.0.backward(x, dy)), lx.shape().clone()))
    }
}

/// `(a, b) -> max(a + b, 0)`: `cpu_fwd` here, `cuda_fwd` in
/// `cuda::activation`.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "rpg-add-relu"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            f32_slice(sa, la, "add_relu")?,
            f32_slice(sb, lb, "add_relu")?,
        );
        let y = zip_map(
            a,
            b,
            #[inline(always)]
            |a, b| (a + b).max(0.0),
        );
        Ok((CpuStorage::F32(y), la.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sa: &candle_core::CudaStorage,
        la: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::activation::add_relu(sa, la, sb, lb)?;
        Ok((y, la.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // From `a + b` rather than the output: Candle passes the gradient
        // where the ReLU's input is >= 0, and the output cannot tell 0 from
        // a negative input.
        let d = a.apply_op3_no_bwd(b, &dy.contiguous()?, &AddReluGrad)?;
        Ok((Some(d.clone()), Some(d)))
    }
}

/// `(a, b, dy) -> dy where a + b >= 0, else 0`.
struct AddReluGrad;

impl CustomOp3 for AddReluGrad {
    fn name(&self) -> &'static str {
        "rpg-add-relu-grad"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "add_relu backward";
        let (a, b, dy) = (
            f32_slice(sa, la, OP)?,
            f32_slice(sb, lb, OP)?,
            f32_slice(sd, ld, OP)?,
        );
        let dx = zip3_map(
            a,
            b,
            dy,
            #[inline(always)]
            |a, b, d| kept(a + b >= 0.0, d),
        );
        Ok((CpuStorage::F32(dx), la.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sa: &candle_core::CudaStorage,
        la: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
        sd: &candle_core::CudaStorage,
        ld: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dx = crate::cuda::activation::add_relu_grad((sa, la), (sb, lb), (sd, ld))?;
        Ok((dx, la.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Values with exact zeros and both signs, larger than one chunk.
    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 + salt) % 11) as f32 - 5.0).collect()
    }

    fn assert_same(a: &Tensor, b: &Tensor) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
    }

    /// `ours(x)` and `theirs(x)` agree exactly, and so do the gradients of
    /// `sum(f(x) * probe)` for `x`.
    fn assert_matches(
        x: Vec<f32>,
        probe_salt: usize,
        ours: impl Fn(&Tensor) -> Result<Tensor>,
        theirs: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let n = x.len();
        let x = Var::from_vec(x, (n,), &Device::Cpu)?;
        let probe = Tensor::from_vec(values(n, probe_salt), (n,), &Device::Cpu)?;
        let (ours, theirs) = (ours(&x)?, theirs(&x)?);
        assert_same(&ours, &theirs);
        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
        assert_same(g_ours.get(&x).unwrap(), g_theirs.get(&x).unwrap());
        Ok(())
    }

    #[test]
    fn relu_and_its_gradient_equal_candles() -> Result<()> {
        assert_matches(values(CHUNK + 37, 0), 3, relu, Tensor::relu)
    }

    #[test]
    fn relu6_and_its_gradient_equal_candles_clamp() -> Result<()> {
        let n = 1000;
        // -5..=5 scaled to cover both kinks (0 and 6) exactly and beyond.
        let xs: Vec<f32> = values(n, 4).iter().map(|v| v * 1.5).collect();
        assert!(xs.contains(&0.0) && xs.contains(&6.0) && xs.contains(&7.5));
        assert_matches(xs, 9, relu6, |x| x.clamp(0f32, 6f32))
    }

    #[test]
    fn add_relu_and_its_gradients_equal_candles() -> Result<()> {
        let shape = (3, 4, 5, 7);
        let n = 3 * 4 * 5 * 7;
        let a = Var::from_vec(values(n, 1), shape, &Device::Cpu)?;
        let b = Var::from_vec(values(n, 5), shape, &Device::Cpu)?;
        let probe = Tensor::from_vec(values(n, 2), shape, &Device::Cpu)?;
        let ours = add_relu(&a, &b)?;
        let theirs = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert_same(&ours, &theirs);
        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            assert_same(g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = add_relu(&a, &b).unwrap_err().to_string();
        assert!(err.contains("add_relu"), "{err}");
    }
}
