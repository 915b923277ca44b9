//! `BatchNorm` with a fused CPU training path.
//!
//! A drop-in for `candle_nn::BatchNorm` (same parameter names, init and
//! running-statistics update). Candle's training forward is a chain of
//! transposes, reductions and broadcast ops, each a full pass over the
//! activations with a buffer of its own, and its backward doubles that; it was
//! the largest cost of a ResNet-20 step once convolutions were fast. Here the
//! training forward is two passes (statistics, then normalise) and the
//! backward two more (parameter gradients, with the fused ReLU's or residual
//! add's gate; then the input gradient), with the textbook closed form:
//!
//! `dx = w / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat))`.
//!
//! The passes themselves are `cpu/batch_norm.rs`. f32 on the CPU takes
//! this path, f32 on CUDA the same passes as CUDA kernels
//! (`cuda/batch_norm.rs`, with the `cuda` feature), unless a
//! [`crate::KernelScope`] chose Candle's; other devices and dtypes take
//! Candle's.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, ModuleT, Result, Shape, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder};

use crate::cpu::batch_norm::{self as passes, Affine, Tail};
use crate::cpu::channels::dims;
use crate::cpu::storage::f32_slice;
use crate::route::{Op, Route, route};

const OP: &str = "batch-norm";

/// Batch normalisation over dimension 1 (channels) of an `[N, C, ...]` input.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    running_mean: Var,
    running_var: Var,
}

/// A batch-norm layer: `weight`, `bias`, `running_mean`, `running_var` under
/// `vb`, as `candle_nn::batch_norm` makes them.
pub fn batch_norm<C: Into<BatchNormConfig>>(
    num_features: usize,
    config: C,
    vb: VarBuilder<'_>,
) -> Result<BatchNorm> {
    candle_nn::batch_norm(num_features, config, vb).and_then(BatchNorm::try_from)
}

impl TryFrom<candle_nn::BatchNorm> for BatchNorm {
    type Error = candle_core::Error;
    fn try_from(inner: candle_nn::BatchNorm) -> Result<Self> {
        // The running statistics are variables: these share their storage.
        let running_mean = Var::from_tensor(inner.running_mean())?;
        let running_var = Var::from_tensor(inner.running_var())?;
        Ok(Self {
            inner,
            running_mean,
            running_var,
        })
    }
}

impl BatchNorm {
    /// The wrapped candle-nn layer (weights, statistics, eps, momentum).
    pub fn inner(&self) -> &candle_nn::BatchNorm {
        &self.inner
    }

    /// `relu(self.forward_t(x, train))`, the ReLU fused into the training
    /// pass where the native kernels apply (the same values and gradients;
    /// one pass fewer each way and no intermediate tensor).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && self.fused_applies(x) {
            self.forward_train_fused(x, true)
        } else if !train {
            self.forward_eval(x, EvalTail::Relu)
        } else {
            crate::activation::relu(&self.forward_t(x, train)?)
        }
    }

    /// `relu(self.forward_t(x, train) + shortcut)`, a residual block's tail.
    /// In training on the native CPU kernels the normalisation, the add and
    /// the ReLU are one op: the same values and gradients as the three ops,
    /// with one pass fewer each way, and neither the normalised tensor nor
    /// its gradient ever allocated.
    pub fn forward_add_relu_t(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        let fused = route(Op::BatchNormAddRelu, &[x, shortcut]) == Route::Cpu
            && x.dims() == shortcut.dims()
            && self.fused_applies(x);
        if train && fused {
            self.forward_train_add_relu(x, shortcut)
        } else if !train && x.dims() == shortcut.dims() {
            self.forward_eval(x, EvalTail::AddRelu(shortcut))
        } else {
            crate::activation::add_relu(&self.forward_t(x, train)?, shortcut)
        }
    }

    fn fused_applies(&self, x: &Tensor) -> bool {
        route(Op::BatchNormTrain, &[x]) != Route::Candle
            && x.rank() >= 2
            && self.inner.weight_and_bias().is_some()
    }

    /// The affine parameters and the values per channel of a training
    /// input, or an error naming the shape that does not fit.
    fn training_input(&self, x: &Tensor) -> Result<(&Tensor, &Tensor, usize)> {
        let (weight, bias) = self
            .inner
            .weight_and_bias()
            .expect("checked by fused_applies");
        let channels = self.running_mean.dim(0)?;
        if x.dim(1)? != channels {
            candle_core::bail!(
                "batch-norm input {:?} does not have {channels} channels",
                x.dims()
            )
        }
        let per_channel = x.elem_count() / channels;
        if per_channel < 2 {
            candle_core::bail!(
                "batch-norm needs more than one value per channel in training, input {:?}",
                x.dims()
            )
        }
        Ok((weight, bias, per_channel))
    }

    /// The running averages from the statistics a CPU training forward left.
    fn update_from(&self, stats: &OnceLock<BnStats>, per_channel: usize, x: &Tensor) -> Result<()> {
        let stats = get_stats(stats)?;
        let channels = stats.mean.len();
        let mean = Tensor::from_slice(&stats.mean, channels, x.device())?;
        let var = Tensor::from_slice(&stats.var, channels, x.device())?;
        self.update_running_stats(&mean, &var, per_channel)
    }

    fn forward_train_add_relu(&self, x: &Tensor, shortcut: &Tensor) -> Result<Tensor> {
        let (weight, bias, per_channel) = self.training_input(x)?;
        let stats = Arc::new(OnceLock::new());
        // One parameter tensor: a custom op takes at most three inputs.
        let weight_bias = Tensor::cat(&[weight, bias], 0)?;
        let y = x.contiguous()?.apply_op3(
            &shortcut.contiguous()?,
            &weight_bias.contiguous()?,
            BnAddReluTrain {
                eps: self.inner.eps() as f32,
                stats: stats.clone(),
            },
        )?;
        self.update_from(&stats, per_channel, x)?;
        Ok(y)
    }

    fn forward_train_fused(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (weight, bias, per_channel) = self.training_input(x)?;
        let stats = Arc::new(OnceLock::new());
        let route = route(Op::BatchNormTrain, &[x]);
        let y = x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            BnTrain {
                eps: self.inner.eps() as f32,
                relu,
                route,
                stats: stats.clone(),
            },
        )?;
        if route == Route::Cuda {
            // The CUDA kernels pack `[y, mean, var]` into one tensor: the
            // statistics stay on the GPU (no read back before the update).
            let (total, c) = (x.elem_count(), x.dim(1)?);
            let mean = y.narrow(0, total, c)?.detach();
            let var = y.narrow(0, total + c, c)?.detach();
            self.update_running_stats(&mean, &var, per_channel)?;
            return y.narrow(0, 0, total)?.reshape(x.shape());
        }
        self.update_from(&stats, per_channel, x)?;
        Ok(y)
    }

    /// PyTorch's and candle-nn's update from a batch's mean and biased
    /// variance over `per_channel` values: the running variance is unbiased.
    fn update_running_stats(&self, mean: &Tensor, var: &Tensor, per_channel: usize) -> Result<()> {
        let m = self.inner.momentum();
        let unbias = per_channel as f64 / (per_channel as f64 - 1.0);
        let dtype = self.running_mean.dtype();
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.to_dtype(dtype)? * m)?)?)?;
        self.running_var.set(
            &((self.running_var.as_tensor() * (1.0 - m))?
                + (var.to_dtype(dtype)? * (m * unbias))?)?,
        )?;
        Ok(())
    }

    /// Evaluation: one scale and one shift per channel, then the `tail`;
    /// one pass on the native CPU kernels.
    fn forward_eval(&self, x: &Tensor, tail: EvalTail<'_>) -> Result<Tensor> {
        let Some((weight, bias)) = self.inner.weight_and_bias() else {
            return tail.apply(&self.inner.forward_t(x, false)?);
        };
        let rm = self.running_mean.as_detached_tensor();
        let rv = self.running_var.as_detached_tensor();
        let scale = (weight / (rv + self.inner.eps())?.sqrt()?)?;
        let shift = (bias - (rm * &scale)?)?;
        let dtype = x.dtype();
        let (scale, shift) = (scale.to_dtype(dtype)?, shift.to_dtype(dtype)?);
        let mut operands = vec![x];
        if let EvalTail::AddRelu(r) = &tail {
            operands.push(r);
        }
        if route(Op::BatchNormEval, &operands) == Route::Cpu && x.rank() >= 2 {
            let params = Tensor::cat(&[&scale, &shift], 0)?;
            let x = x.contiguous()?;
            return match tail {
                EvalTail::Plain => x.apply_op2(&params, BnEval { relu: false }),
                EvalTail::Relu => x.apply_op2(&params, BnEval { relu: true }),
                EvalTail::AddRelu(r) => x.apply_op3(&params, &r.contiguous()?, BnEvalAddRelu),
            };
        }
        let mut shape = vec![1; x.rank()];
        shape[1] = x.dim(1)?;
        let y = x
            .broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)?;
        tail.apply(&y)
    }
}

/// What follows an evaluation batch norm.
enum EvalTail<'a> {
    Plain,
    Relu,
    /// A residual add of this shortcut, then a ReLU.
    AddRelu(&'a Tensor),
}

impl EvalTail<'_> {
    /// The tail as its own op, after an unfused batch norm's output `y`.
    fn apply(&self, y: &Tensor) -> Result<Tensor> {
        match self {
            EvalTail::Plain => Ok(y.clone()),
            EvalTail::Relu => crate::activation::relu(y),
            EvalTail::AddRelu(r) => crate::activation::add_relu(y, r),
        }
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match (train, self.fused_applies(x)) {
            (true, true) => self.forward_train_fused(x, false),
            (true, false) => self.inner.forward_t(x, true),
            (false, _) => self.forward_eval(x, EvalTail::Plain),
        }
    }
}

/// Evaluation: `(x, [scale; shift]) -> x * scale + shift` per channel, or
/// its ReLU with `relu`; one pass.
struct BnEval {
    relu: bool,
}

impl CustomOp2 for BnEval {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, OP)?;
        let affine = eval_affine(f32_slice(ps, pl, OP)?);
        let tail = if self.relu { Tail::Relu } else { Tail::Plain };
        let y = passes::normalise(x, dims(xl.dims()), &affine, tail);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams, _) = eval_backward(x, params, None, self.relu, dy)?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// Evaluation of a residual block's tail: `(x, [scale; shift], r) ->
/// max(x * scale + shift + r, 0)`; one pass.
struct BnEvalAddRelu;

impl CustomOp3 for BnEvalAddRelu {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-eval-add-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (f32_slice(xs, xl, OP)?, f32_slice(rs, rl, OP)?);
        let affine = eval_affine(f32_slice(ps, pl, OP)?);
        let y = passes::normalise(x, dims(xl.dims()), &affine, Tail::AddRelu(r));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        r: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams, dr) = eval_backward(x, params, Some(r), true, dy)?;
        Ok((Some(dx), Some(dparams), dr))
    }
}

/// `(scale, shift)` per channel from `[scale; shift]`.
fn eval_affine(params: &[f32]) -> Vec<Affine> {
    let (scale, shift) = params.split_at(params.len() / 2);
    scale.iter().copied().zip(shift.iter().copied()).collect()
}

/// The gradients of an evaluation batch norm (and its tail) with respect to
/// `x`, `[scale; shift]` and the shortcut `r`, in Candle's ops: evaluation
/// rarely trains, so this path is for correctness, not speed.
fn eval_backward(
    x: &Tensor,
    params: &Tensor,
    r: Option<&Tensor>,
    relu: bool,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let c = x.dim(1)?;
    let mut shape = vec![1; x.rank()];
    shape[1] = c;
    let scale = params.narrow(0, 0, c)?.reshape(shape.as_slice())?;
    let shift = params.narrow(0, c, c)?.reshape(shape.as_slice())?;
    let mut value = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
    if let Some(r) = r {
        value = (value + r)?;
    }
    // Candle's ReLU passes the gradient where its input is >= 0.
    let g = match relu {
        true => (dy * value.ge(0f64)?.to_dtype(dy.dtype())?)?,
        false => dy.clone(),
    };
    let others: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let d_scale = (&g * x)?.sum(others.as_slice())?;
    let d_shift = g.sum(others.as_slice())?;
    let dx = g.broadcast_mul(&scale)?;
    Ok((dx, Tensor::cat(&[d_scale, d_shift], 0)?, r.map(|_| g)))
}

/// Per-channel batch statistics of one forward pass.
#[derive(Debug)]
struct BnStats {
    mean: Vec<f32>,
    /// Biased variance (the one used to normalise).
    var: Vec<f32>,
    inv_std: Vec<f32>,
    /// The forward's `y = x * scale + shift` per channel (before any ReLU).
    affine: Vec<Affine>,
}

impl BnStats {
    /// The batch statistics of `x` (`(n, c, s)` as [`dims`] gives them) and
    /// the affine map they make with `weight` and `bias`.
    fn of(x: &[f32], shape: (usize, usize, usize), w: &[f32], b: &[f32], eps: f32) -> Self {
        let (mean, var) = passes::moments(x, shape);
        let mean: Vec<f32> = mean.into_iter().map(|m| m as f32).collect();
        let var: Vec<f32> = var.into_iter().map(|v| v as f32).collect();
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let affine = (0..mean.len())
            .map(|ch| {
                let scale = w[ch] * inv_std[ch];
                (scale, b[ch] - mean[ch] * scale)
            })
            .collect();
        Self {
            mean,
            var,
            inv_std,
            affine,
        }
    }

    /// `(mean, 1 / sigma)` per channel, as the backward passes take them.
    fn centre(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.inv_std)
    }
}

/// Training forward: `(x, weight, bias) -> y`. On the CPU it leaves its
/// statistics in `stats` for the running averages and the backward; on CUDA
/// (`cuda::batch_norm`) it returns `[y, mean, var]` packed in one tensor,
/// since a custom op has one output and the statistics should not leave the
/// GPU.
struct BnTrain {
    eps: f32,
    /// `max(y, 0)` instead of `y`: the ReLU that follows most batch norms,
    /// fused (one pass fewer each way, no intermediate tensor).
    relu: bool,
    /// Where the forward ran, and so which backward applies.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    route: Route,
    stats: Arc<OnceLock<BnStats>>,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "rpg-batch-norm"
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
        let x = f32_slice(xs, xl, OP)?;
        let (w, b) = (f32_slice(ws, wl, OP)?, f32_slice(bs, bl, OP)?);
        let tail = if self.relu { Tail::Relu } else { Tail::Plain };
        let y = train_forward(&self.stats, x, xl, (w, b), self.eps, tail);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::batch_norm::train_forward((xs, xl), (ws, wl), (bs, bl), self.eps, self.relu)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if self.route == Route::Cuda {
            let (dx, dgamma, dbeta) = crate::cuda::batch_norm::train_backward(
                x,
                (weight, bias),
                y,
                dy,
                self.eps,
                self.relu,
            )?;
            return Ok((Some(dx), Some(dgamma), Some(dbeta)));
        }
        let _ = (weight, bias, y);
        get_stats(&self.stats)?;
        let (dx, params) = backward_passes(x, &dy.contiguous()?, &self.stats, self.relu)?;
        Ok((Some(dx), Some(params.get(0)?), Some(params.get(1)?)))
    }
}

/// A training forward on the CPU: the batch statistics of `x`, left in
/// `stats` for the running averages and the backward, and the normalised
/// output with its `tail`.
fn train_forward(
    stats: &OnceLock<BnStats>,
    x: &[f32],
    layout: &Layout,
    (weight, bias): (&[f32], &[f32]),
    eps: f32,
    tail: Tail<'_>,
) -> Vec<f32> {
    let shape = dims(layout.dims());
    let batch = BnStats::of(x, shape, weight, bias, eps);
    let y = passes::normalise(x, shape, &batch.affine, tail);
    // A forward runs once per op value; a second set would be a bug.
    let _ = stats.set(batch);
    y
}

/// Training forward of a residual block's tail:
/// `(x, shortcut, [weight; bias]) -> max(bn(x) + shortcut, 0)`; leaves its
/// statistics in `stats` as [`BnTrain`] does.
struct BnAddReluTrain {
    eps: f32,
    stats: Arc<OnceLock<BnStats>>,
}

impl CustomOp3 for BnAddReluTrain {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (f32_slice(xs, xl, OP)?, f32_slice(rs, rl, OP)?);
        let params = f32_slice(ps, pl, OP)?;
        let params = params.split_at(params.len() / 2);
        let y = train_forward(&self.stats, x, xl, params, self.eps, Tail::AddRelu(r));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        shortcut: &Tensor,
        _params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = get_stats(&self.stats)?;
        // The gradient behind the ReLU is the shortcut's, and the batch
        // norm's output gradient: the plain (ungated) backward takes it,
        // with the parameter sums taken in the gating pass.
        let sums = Arc::new(OnceLock::new());
        let gated = x.apply_op3_no_bwd(
            shortcut,
            &dy.contiguous()?,
            &ResidualGate {
                stats: self.stats.clone(),
                sums: sums.clone(),
            },
        )?;
        let (d_weight, d_bias) = sums
            .get()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm gate left no sums".into()))?;
        let dx = input_grad(x, &gated, &self.stats, false, (&d_weight, &d_bias))?;
        let c = stats.mean.len();
        let params = Tensor::from_vec([d_weight, d_bias].concat(), 2 * c, x.device())?;
        Ok((Some(dx), Some(gated), Some(params)))
    }
}

/// `(x, shortcut, dy) -> dy` where `bn(x) + shortcut >= 0`, else 0: the
/// gradient through the fused ReLU, as Candle's (1 at exactly 0). Leaves
/// the parameter sums of that gradient in `sums`.
struct ResidualGate {
    stats: Arc<OnceLock<BnStats>>,
    sums: Arc<OnceLock<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp3 for ResidualGate {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-add-relu-gate"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = get_stats(&self.stats)?;
        let (x, r, dy) = (
            f32_slice(xs, xl, OP)?,
            f32_slice(rs, rl, OP)?,
            f32_slice(ds, dl, OP)?,
        );
        let shape = dims(xl.dims());
        let (g, sums) = passes::gated_param_sums((x, r, dy), shape, stats.centre(), &stats.affine);
        // One run per op value; a second set would be a bug.
        let _ = self.sums.set(sums);
        Ok((CpuStorage::F32(g), xl.shape().clone()))
    }
}

/// The input gradient and `[[d weight], [d bias]]` of a batch norm from
/// its output gradient `dy` (gated by the fused ReLU with `relu`): the
/// parameter sums, then the input gradient that needs them.
fn backward_passes(
    x: &Tensor,
    dy: &Tensor,
    stats: &Arc<OnceLock<BnStats>>,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    // [2, C]: d weight = sum(dy * x_hat), d bias = sum(dy).
    let params = x.apply_op2_no_bwd(
        dy,
        &BnParamGrads {
            stats: stats.clone(),
            relu,
        },
    )?;
    let sums = params.to_vec2::<f32>()?;
    let dx = input_grad(x, dy, stats, relu, (&sums[0], &sums[1]))?;
    Ok((dx, params))
}

/// The input gradient from `dy` and the parameter gradients.
fn input_grad(
    x: &Tensor,
    dy: &Tensor,
    stats: &Arc<OnceLock<BnStats>>,
    relu: bool,
    (d_weight, d_bias): (&[f32], &[f32]),
) -> Result<Tensor> {
    x.apply_op2_no_bwd(
        dy,
        &BnInputGrad {
            stats: stats.clone(),
            relu,
            d_weight: d_weight.to_vec(),
            d_bias: d_bias.to_vec(),
        },
    )
}

fn get_stats(stats: &OnceLock<BnStats>) -> Result<&BnStats> {
    stats
        .get()
        .ok_or_else(|| candle_core::Error::Msg("batch-norm backward before its forward".into()))
}

/// `(x, dy) -> [[d weight], [d bias]]`.
struct BnParamGrads {
    stats: Arc<OnceLock<BnStats>>,
    relu: bool,
}

impl CustomOp2 for BnParamGrads {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-param-grads"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = get_stats(&self.stats)?;
        let (x, dy) = (f32_slice(xs, xl, OP)?, f32_slice(dys, dyl, OP)?);
        let shape = dims(xl.dims());
        let (d_weight, d_bias) =
            passes::param_sums(x, dy, shape, stats.centre(), &stats.affine, self.relu);
        let c = d_weight.len();
        Ok((
            CpuStorage::F32([d_weight, d_bias].concat()),
            Shape::from((2, c)),
        ))
    }
}

/// `(x, dy) -> dx`, given the parameter gradients.
struct BnInputGrad {
    stats: Arc<OnceLock<BnStats>>,
    relu: bool,
    d_weight: Vec<f32>,
    d_bias: Vec<f32>,
}

impl CustomOp2 for BnInputGrad {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stats = get_stats(&self.stats)?;
        let (x, dy) = (f32_slice(xs, xl, OP)?, f32_slice(dys, dyl, OP)?);
        let (n, c, s) = dims(xl.dims());
        let count = (n * s) as f32;
        // dx = a * dy + b * x + e per channel, folding mean and x_hat in.
        let coeffs: Vec<(f32, f32, f32)> = (0..c)
            .map(|ch| {
                // The forward's scale, `weight * inv_std`.
                let (k, a) = (stats.inv_std[ch], stats.affine[ch].0);
                let gw = self.d_weight[ch] / count;
                let gb = self.d_bias[ch] / count;
                // x_hat = (x - m) k, so a * (dy - gb - x_hat gw) = a dy - a k gw x + a (k gw m - gb).
                (a, -a * k * gw, a * (k * gw * stats.mean[ch] - gb))
            })
            .collect();
        let dx = passes::input_grad(x, dy, (n, c, s), &coeffs, &stats.affine, self.relu);
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Ours and candle-nn's over the same variables: outputs, all three
    /// gradients and the running statistics after two training steps.
    /// With `relu`, ours is `forward_relu_t` against candle-nn's batch norm
    /// followed by Candle's ReLU.
    fn check(shape: &[usize], relu: bool) {
        let dev = Device::Cpu;
        let c = shape[1];
        let make = || {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
            let bn = candle_nn::batch_norm(c, 1e-5, vb).unwrap();
            // Non-trivial affine parameters.
            let (w, b) = bn.weight_and_bias().unwrap();
            let w = Var::from_tensor(w).unwrap();
            w.set(&Tensor::arange(1f32, 1.0 + c as f32, &dev).unwrap())
                .unwrap();
            let b = Var::from_tensor(b).unwrap();
            b.set(&(Tensor::arange(0f32, c as f32, &dev).unwrap() * 0.1).unwrap())
                .unwrap();
            (bn, w, b)
        };
        let (theirs, tw, tb) = make();
        let (inner, ow, ob) = make();
        let ours = BatchNorm::try_from(inner).unwrap();
        for step in 0..2 {
            let x = Var::from_tensor(
                &(Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * (step as f64 + 2.0))
                    .unwrap()
                    .affine(1.0, 0.5)
                    .unwrap(),
            )
            .unwrap();
            let probe = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let (y_ours, y_theirs) = if relu {
                let y = ours.forward_relu_t(&x, true).unwrap();
                (y, theirs.forward_t(&x, true).unwrap().relu().unwrap())
            } else {
                let y = ours.forward_t(&x, true).unwrap();
                (y, theirs.forward_t(&x, true).unwrap())
            };
            assert!(max_abs_diff(&y_ours, &y_theirs) < 1e-4, "{shape:?} value");
            let g_ours = grads_of(&y_ours, &probe);
            let g_theirs = grads_of(&y_theirs, &probe);
            for (name, a, b) in [("x", &x, &x), ("weight", &ow, &tw), ("bias", &ob, &tb)] {
                let (ga, gb) = (g_ours.get(a).unwrap(), g_theirs.get(b).unwrap());
                let scale = gb.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let tol = 1e-4 * scale.to_scalar::<f32>().unwrap().max(1.0);
                assert!(max_abs_diff(ga, gb) < tol, "{shape:?} d{name}");
            }
        }
        let (rm, rv) = (ours.inner().running_mean(), ours.inner().running_var());
        assert!(
            max_abs_diff(rm, theirs.running_mean()) < 1e-5,
            "{shape:?} mean"
        );
        assert!(
            max_abs_diff(rv, theirs.running_var()) < 1e-4,
            "{shape:?} var"
        );
        // Evaluation uses the running statistics in both.
        let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let (a, b) = (
            ours.forward_t(&x, false).unwrap(),
            theirs.forward_t(&x, false).unwrap(),
        );
        assert!(max_abs_diff(&a, &b) < 1e-4, "{shape:?} eval");
    }

    #[test]
    fn matches_candle_nn_in_value_gradients_and_running_statistics() {
        for relu in [false, true] {
            check(&[4, 3, 5, 5], relu);
            check(&[2, 8, 3, 7], relu);
            check(&[16, 5], relu);
            check(&[3, 4, 2, 2, 3], relu);
        }
    }

    /// At a normalised value of exactly 0 the fused ReLU passes the
    /// gradient, as Candle's ReLU does (and the CUDA kernels, which
    /// recompute the value rather than read the clamped output).
    #[test]
    fn the_fused_relu_passes_the_gradient_at_exactly_zero() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let bn = batch_norm(1, 1e-5, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
        // Mean 0 and a zero shift: the middle value normalises to 0 exactly.
        let x = Var::from_vec(vec![-1f32, 0.0, 1.0], (3, 1), &dev).unwrap();
        let y = bn.forward_relu_t(&x, true).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap()[1], [0.0]);
        let probe = Tensor::new(&[[1f32], [10.0], [100.0]], &dev).unwrap();
        let grads = grads_of(&y, &probe);
        // The same through candle-nn's batch norm and Candle's ReLU.
        let y2 = bn.inner().forward_t(&x, true).unwrap().relu().unwrap();
        let grads2 = grads_of(&y2, &probe);
        let (dx, dx2) = (grads.get(&x).unwrap(), grads2.get(&x).unwrap());
        assert!(max_abs_diff(dx, dx2) < 1e-5, "{dx} vs {dx2}");
        // The tie's share is visible: without it the gradient would differ.
        let blocked = {
            let y3 = bn.inner().forward_t(&x, true).unwrap();
            let mask = y3.gt(0.0).unwrap().to_dtype(DType::F32).unwrap();
            let g = ((&y3 * &mask).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            g.get(&x).unwrap().clone()
        };
        assert!(max_abs_diff(dx, &blocked) > 1e-3);
    }

    /// The fused residual tail against the batch norm, then `add_relu`:
    /// the same bits in the output, all four gradients and the running
    /// statistics, with a shortcut that puts some sums below, at and above 0.
    #[test]
    fn the_fused_residual_tail_matches_its_three_ops_bit_for_bit() {
        let dev = Device::Cpu;
        for shape in [[4, 3, 5, 5], [2, 8, 3, 7], [3, 2, 1, 2]] {
            let c = shape[1];
            let make = || {
                let map = VarMap::new();
                let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
                let bn = batch_norm(c, 1e-5, vb).unwrap();
                let (w, b) = bn.inner().weight_and_bias().unwrap();
                let (w, b) = (Var::from_tensor(w).unwrap(), Var::from_tensor(b).unwrap());
                w.set(&Tensor::arange(1f32, 1.0 + c as f32, &dev).unwrap())
                    .unwrap();
                b.set(&(Tensor::arange(0f32, c as f32, &dev).unwrap() * -0.1).unwrap())
                    .unwrap();
                (bn, w, b)
            };
            let (fused, fw, fb) = make();
            let (split, sw, sb) = make();
            // Its training output is the batch norm's, bit for bit: a
            // shortcut of minus it gives sums of exactly 0.
            let (oracle, _, _) = make();
            for _ in 0..2 {
                let x = Var::randn(0.5f32, 2.0, &shape, &dev).unwrap();
                let y = oracle.forward_t(&x, true).unwrap().detach();
                let noise = Tensor::randn(0f32, 1.0, &shape, &dev).unwrap();
                let at_zero = noise.ge(0.8).unwrap();
                let r = Var::from_tensor(&at_zero.where_cond(&y.neg().unwrap(), &noise).unwrap())
                    .unwrap();
                let probe = Tensor::randn(0f32, 1.0, &shape, &dev).unwrap();
                let a = fused.forward_add_relu_t(&x, &r, true).unwrap();
                let b = split.forward_t(&x, true).unwrap();
                let b = crate::activation::add_relu(&b, &r).unwrap();
                assert_eq!(bits(&a), bits(&b), "{shape:?} value");
                let ga = grads_of(&a, &probe);
                let gb = grads_of(&b, &probe);
                for (name, p, q) in [
                    ("x", &x, &x),
                    ("shortcut", &r, &r),
                    ("weight", &fw, &sw),
                    ("bias", &fb, &sb),
                ] {
                    let (p, q) = (ga.get(p).unwrap(), gb.get(q).unwrap());
                    assert_eq!(bits(p), bits(q), "{shape:?} d{name}");
                }
            }
            for (p, q) in [
                (fused.inner().running_mean(), split.inner().running_mean()),
                (fused.inner().running_var(), split.inner().running_var()),
            ] {
                assert_eq!(bits(p), bits(q), "{shape:?} running statistics");
            }
        }
    }

    /// Evaluation's one-pass op against the batch norm's own broadcast ops
    /// and the tail's separate op: the same bits forward, and the same
    /// gradients for the input, the affine parameters and the shortcut.
    #[test]
    fn the_fused_evaluation_matches_the_separate_ops() {
        let dev = Device::Cpu;
        let shape = [3, 4, 5, 6];
        let map = VarMap::new();
        let bn = batch_norm(4, 1e-5, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
        let (w, b) = bn.inner().weight_and_bias().unwrap();
        let (w, bias) = (Var::from_tensor(w).unwrap(), Var::from_tensor(b).unwrap());
        w.set(&Tensor::new(&[1.5f32, -0.5, 2.0, 0.7], &dev).unwrap())
            .unwrap();
        bias.set(&Tensor::new(&[0.1f32, -0.2, 0.0, 0.3], &dev).unwrap())
            .unwrap();
        // Running statistics away from (0, 1), from two training steps.
        for _ in 0..2 {
            bn.forward_t(&Tensor::randn(0.5f32, 2.0, &shape, &dev).unwrap(), true)
                .unwrap();
        }
        let x = Var::randn(0f32, 1.0, &shape, &dev).unwrap();
        let r = Var::randn(0f32, 1.0, &shape, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, &shape, &dev).unwrap();
        let separate = |tail: u8| {
            let y = {
                let _candle = crate::KernelBackend::Candle.scope();
                bn.forward_t(&x, false).unwrap()
            };
            match tail {
                0 => y,
                1 => crate::activation::relu(&y).unwrap(),
                _ => crate::activation::add_relu(&y, &r).unwrap(),
            }
        };
        let fused = |tail: u8| match tail {
            0 => bn.forward_t(&x, false).unwrap(),
            1 => bn.forward_relu_t(&x, false).unwrap(),
            _ => bn.forward_add_relu_t(&x, &r, false).unwrap(),
        };
        for tail in 0..3 {
            let (a, b) = (fused(tail), separate(tail));
            assert_eq!(bits(&a), bits(&b), "tail {tail} value");
            let ga = grads_of(&a, &probe);
            let gb = grads_of(&b, &probe);
            for (name, v) in [("x", &x), ("weight", &w), ("bias", &bias), ("shortcut", &r)] {
                match (ga.get(v), gb.get(v)) {
                    (Some(p), Some(q)) => assert!(max_abs_diff(p, q) < 1e-5, "tail {tail} d{name}"),
                    (p, q) => assert_eq!(p.is_some(), q.is_some(), "tail {tail} d{name}"),
                }
            }
        }
    }

    /// The gradients of `sum(y * probe)`.
    fn grads_of(y: &Tensor, probe: &Tensor) -> candle_core::backprop::GradStore {
        (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_single_value_per_channel_is_an_error() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let bn = batch_norm(3, 1e-5, vb).unwrap();
        let x = Tensor::zeros((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let err = bn.forward_t(&x, true).unwrap_err().to_string();
        assert!(err.contains("more than one value"), "{err}");
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(
            bn.forward_t(&x, true)
                .unwrap_err()
                .to_string()
                .contains("channels")
        );
    }
}
