//! One training step, the same for the trainer and the bench: regenerate
//! the shared weights, forward, loss, backward, ring gradient, optional
//! clipping, optimizer update. Each phase is timed, so the bench can report
//! what RPG's generation costs without a second copy of the step.

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use rpg_nn::{ParamGrad, ParamGroup};

use crate::distributed::{Collective, CollectiveError, mean_over_ranks};
use crate::loss::cross_entropy;
use crate::optim::{Optimizer, OptimizerError, clip_grad_norm, grad_norm, updates};
use crate::qat::FakeQuant;
use crate::setup::Built;

/// What a step does besides the update itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
    /// The ring's learning rate is the step's rate times this.
    pub ring_lr_scale: f64,
    /// Read the loss after every forward pass and take no step on a
    /// non-finite one. Reading is a device synchronisation, so on a GPU the
    /// trainer leaves this off and checks the accumulated loss whenever it
    /// reads its metrics instead.
    pub guard_each_step: bool,
}

/// Where a step's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Generating the shared weights from the ring.
    pub generate: Duration,
    /// Forward pass, loss and backward pass.
    pub forward_backward: Duration,
    /// Turning the weight gradients into the ring gradient.
    pub ring_gradient: Duration,
    /// Averaging gradients with the other ranks (zero for one process).
    pub exchange: Duration,
    /// Clipping and the optimizer update.
    pub update: Duration,
}

impl StepTimings {
    /// The whole step.
    pub fn total(&self) -> Duration {
        self.generate + self.forward_backward + self.ring_gradient + self.exchange + self.update
    }

    /// The part that RPG adds to a dense step.
    pub fn rpg(&self) -> Duration {
        self.generate + self.ring_gradient
    }
}

/// A step that was taken.
#[derive(Debug)]
pub struct StepOutput {
    /// The batch's logits, detached.
    pub logits: Tensor,
    /// The batch's mean loss (an f32 scalar on the model's device; read
    /// it only when needed, as reading synchronises).
    pub loss: Tensor,
    /// The global gradient norm before clipping, when it was asked for or
    /// clipping needed it.
    pub grad_norm: Option<f64>,
    /// Where the time went.
    pub timings: StepTimings,
}

/// What came of a step.
#[derive(Debug)]
pub enum StepOutcome {
    /// The parameters were updated.
    Taken(StepOutput),
    /// The loss was not finite; nothing was updated (only with
    /// [`StepSettings::guard_each_step`]).
    Diverged {
        /// The loss.
        loss: f64,
    },
}

/// A step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The optimizer failed.
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// Exchanging gradients with the other ranks failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// Quantizing the parameters of a QAT step failed.
    #[error(transparent)]
    Quantize(#[from] rpg_compress::artifact::CompressError),
}

/// The training step of one model with one optimizer.
pub struct TrainStep<'a> {
    built: &'a Built,
    optimizer: &'a mut Optimizer,
    settings: StepSettings,
    /// The other processes of a data-parallel run, if any.
    comm: Option<&'a dyn Collective>,
    /// Quantization-aware training's quantization, if any.
    fake_quant: Option<&'a FakeQuant>,
}

impl std::fmt::Debug for TrainStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainStep")
            .field("settings", &self.settings)
            .field("ranks", &self.comm.map_or(1, |c| c.world()))
            .finish()
    }
}

impl<'a> TrainStep<'a> {
    /// A step over `built`'s parameters, updated by `optimizer`.
    pub fn new(built: &'a Built, optimizer: &'a mut Optimizer, settings: StepSettings) -> Self {
        Self {
            built,
            optimizer,
            settings,
            comm: None,
            fake_quant: None,
        }
    }

    /// The same step under quantization-aware training: forward and
    /// backward see the parameters quantized as `fake_quant` says, the
    /// update goes to the full-precision ones.
    pub fn quantized(mut self, fake_quant: Option<&'a FakeQuant>) -> Self {
        self.fake_quant = fake_quant;
        self
    }

    /// The same step in a data-parallel run: the gradients (and the loss)
    /// are averaged over `comm`'s ranks before clipping and the update, so
    /// every rank takes the same update, and the gradient norm is the
    /// global one.
    pub fn across(mut self, comm: &'a dyn Collective) -> Self {
        self.comm = Some(comm).filter(|c| c.world() > 1 || c.exchanges_alone());
        self
    }

    /// The optimizer (for checkpoints).
    pub fn optimizer(&self) -> &Optimizer {
        self.optimizer
    }

    /// One step on the batch `(x, y)` at learning rate `lr`. The gradient
    /// norm is computed only when `want_grad_norm` is set or clipping needs
    /// it: it is a pass over every gradient and a device synchronisation.
    pub fn run(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        lr: f64,
        want_grad_norm: bool,
    ) -> Result<StepOutcome, StepError> {
        let store = &self.built.store;
        let started = Instant::now();
        let latent = self.fake_quant.map(|q| q.quantize(store)).transpose()?;
        store.regenerate()?;
        let generated = Instant::now();
        let logits = self.built.model.forward_t(x, true)?;
        let loss = cross_entropy(&logits, y, self.settings.label_smoothing)?;
        // In a data-parallel run the global loss decides, after the
        // exchange: every rank must take part in it.
        if self.settings.guard_each_step && self.comm.is_none() {
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                if let Some(latent) = latent {
                    latent.restore()?;
                }
                return Ok(StepOutcome::Diverged { loss: value });
            }
        }
        let backward = loss.backward()?;
        let backward_done = Instant::now();
        let mut grads = store.gradients(&backward)?;
        if let Some(latent) = latent {
            // Straight through: the gradient at the quantized point updates
            // the full-precision values.
            latent.restore()?;
        }
        let ring_done = Instant::now();
        if let Some(comm) = self.comm {
            let global = average(comm, &mut grads, &loss)?;
            if !global.is_finite() {
                return Ok(StepOutcome::Diverged { loss: global });
            }
        }
        let exchanged = Instant::now();
        let grad_norm = match self.settings.clip_grad {
            Some(max) => Some(clip_grad_norm(&mut grads, max)?),
            None if want_grad_norm => Some(grad_norm(&grads)?),
            None => None,
        };
        let ring_lr = lr * self.settings.ring_lr_scale;
        self.optimizer.step(&updates(&grads, |group| match group {
            ParamGroup::Ring => ring_lr,
            ParamGroup::Ordinary => lr,
        }))?;
        let updated = Instant::now();
        Ok(StepOutcome::Taken(StepOutput {
            logits: logits.detach(),
            loss: loss.detach(),
            grad_norm,
            timings: StepTimings {
                generate: generated - started,
                forward_backward: backward_done - generated,
                ring_gradient: ring_done - backward_done,
                exchange: exchanged - ring_done,
                update: updated - exchanged,
            },
        }))
    }
}

/// Averages `grads` and the batch's `loss` over the ranks, in one
/// exchange of one buffer; returns the global loss.
fn average(
    comm: &dyn Collective,
    grads: &mut [ParamGrad],
    loss: &Tensor,
) -> Result<f64, StepError> {
    let mut loss = [loss.to_dtype(DType::F32)?.to_scalar::<f32>()?];
    let tensors: Vec<&Tensor> = grads.iter().map(|g| &g.grad).collect();
    let means = mean_over_ranks::<StepError>(comm, &tensors, &mut loss)?;
    for (g, mean) in grads.iter_mut().zip(means) {
        g.grad = mean;
    }
    Ok(f64::from(loss[0]))
}
