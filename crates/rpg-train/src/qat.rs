//! Quantization-aware training: each step runs forward and backward on the
//! parameters as the artifact will store them (the ring and the unshared
//! tensors quantized and dequantized by `rpg-compress`, the same function
//! `rpg compress` applies), then puts the full-precision ("latent") values
//! back and lets the optimizer update those with the gradient taken at the
//! quantized point: the straight-through estimator. Batch norm's running
//! statistics are not parameters: they stay in full precision and keep the
//! forward pass's updates (the artifact quantizes them at the end).

use candle_core::{Tensor, Var};
use rpg_compress::artifact::CompressError;
use rpg_compress::{Artifact, CompressSettings};
use rpg_nn::ParamStore;

/// The quantization a QAT step trains under.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    settings: CompressSettings,
}

/// The full-precision values a step set aside; [`Latent::restore`] puts them
/// back.
#[derive(Debug)]
#[must_use = "the latent values must be restored before the update"]
pub struct Latent {
    values: Vec<(Var, Tensor)>,
}

impl FakeQuant {
    /// Trains under `settings`' ring and unshared-tensor quantization.
    pub fn new(settings: CompressSettings) -> Self {
        Self { settings }
    }

    /// Sets `store`'s ring and unshared parameters to their quantized
    /// values and returns the full-precision ones. Buffers (batch norm's
    /// running statistics) keep their values: a training-mode forward
    /// updates them from the batch, and that update must stay (restoring
    /// them would freeze them at their values before fine-tuning).
    pub fn quantize(&self, store: &ParamStore) -> Result<Latent, CompressError> {
        self.set(store, false)
    }

    /// Sets every stored tensor of `store`, buffers too, to its value in the
    /// artifact (to evaluate the compressed model in place) and returns the
    /// full-precision values.
    pub fn quantize_all(&self, store: &ParamStore) -> Result<Latent, CompressError> {
        self.set(store, true)
    }

    fn set(&self, store: &ParamStore, with_buffers: bool) -> Result<Latent, CompressError> {
        let snapshot = |vars: Vec<Var>| {
            vars.into_iter()
                .map(|v| {
                    let value = v.as_tensor().copy()?;
                    Ok((v, value))
                })
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let trainable: Vec<Var> = store.trainable().into_iter().map(|(_, v)| v).collect();
        let ids: std::collections::HashSet<_> =
            trainable.iter().map(|v| v.as_tensor().id()).collect();
        let buffers: Vec<Var> = store
            .persistent()
            .into_values()
            .filter(|v| !ids.contains(&v.as_tensor().id()))
            .collect();
        let (mut values, buffers) = (snapshot(trainable)?, snapshot(buffers)?);
        Artifact::compress(store, &self.settings)?.apply(store)?;
        if with_buffers {
            values.extend(buffers);
        } else {
            Latent { values: buffers }.restore()?;
        }
        Ok(Latent { values })
    }
}

impl Latent {
    /// Puts the full-precision values back.
    pub fn restore(self) -> candle_core::Result<()> {
        for (var, value) in self.values {
            var.set(&value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use rpg_compress::Bits;

    use super::*;
    use crate::config::{RingSize, TrainConfig};
    use crate::loss::cross_entropy;
    use crate::optim::{Optimizer, OptimizerConfig};
    use crate::setup::{build_for_training, model_config};
    use crate::step::{StepOutcome, StepSettings, TrainStep};

    fn int4() -> FakeQuant {
        FakeQuant::new(CompressSettings {
            ring_bits: Some(Bits::Four),
            block: 16,
            f16_scales: true,
            ring_prune: 0.0,
            unshared_int8: true,
        })
    }

    fn values(var: &Var) -> Vec<f32> {
        var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The ring's gradient of one training-mode forward at the store's
    /// current values.
    fn ring_gradient(
        built: &crate::setup::Built,
        x: &Tensor,
        y: &Tensor,
    ) -> anyhow::Result<Vec<f32>> {
        let store = &built.store;
        let ring = store.ring().expect("an RPG model");
        store.regenerate()?;
        let loss = cross_entropy(&built.model.forward_t(x, true)?, y, 0.0)?;
        let grads = store.gradients(&loss.backward()?)?;
        let grad = grads
            .iter()
            .find(|g| g.var.as_tensor().id() == ring.as_tensor().id())
            .expect("a ring gradient");
        Ok(grad.grad.to_vec1()?)
    }

    /// Plain SGD steps: no smoothing, clipping or ring rate scale.
    const PLAIN: StepSettings = StepSettings {
        label_smoothing: 0.0,
        clip_grad: None,
        ring_lr_scale: 1.0,
        guard_each_step: true,
    };

    #[test]
    fn a_step_takes_the_gradient_at_the_quantized_point_and_updates_the_latent_values()
    -> anyhow::Result<()> {
        let cfg = TrainConfig {
            model: "mlp".into(),
            ..TrainConfig::default()
        };
        let mut mc = model_config(&cfg, 10, 1, 6)?;
        mc.widths = Some(vec![12, 8]);
        let built = build_for_training(&cfg, Some(RingSize::Ratio(0.3)), mc, &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (4, 1, 6, 6), &Device::Cpu)?;
        let y = Tensor::new(&[1u32, 3, 5, 7], &Device::Cpu)?;
        let store = &built.store;
        let ring = store.ring().expect("an RPG model").clone();
        let before = values(&ring);

        // The gradient at the quantized point, by hand.
        let fake = int4();
        let latent = fake.quantize(store)?;
        let quantized = values(&ring);
        assert_ne!(quantized, before, "int4 moves the ring");
        let ring_grad = ring_gradient(&built, &x, &y)?;
        latent.restore()?;
        assert_eq!(values(&ring), before, "restored bit for bit");

        // The same at the latent point differs: the test can tell them apart.
        assert_ne!(ring_gradient(&built, &x, &y)?, ring_grad);

        // A QAT step with plain SGD: latent - lr * gradient at the quantized point.
        let mut optimizer = Optimizer::new(OptimizerConfig::sgd(0.0, 0.0));
        let lr = 0.5;
        let outcome = TrainStep::new(&built, &mut optimizer, PLAIN)
            .quantized(Some(&fake))
            .run(&x, &y, lr, false)?;
        assert!(matches!(outcome, StepOutcome::Taken(_)));
        let after = values(&ring);
        for ((a, b), g) in after.iter().zip(&before).zip(&ring_grad) {
            let want = b - lr as f32 * g;
            assert!(
                (a - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{a} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn batch_norm_statistics_keep_the_forward_update_and_stay_full_precision() -> anyhow::Result<()>
    {
        let cfg = TrainConfig {
            model: "resnet20".into(),
            width: 0.25,
            ..TrainConfig::default()
        };
        let mc = model_config(&cfg, 10, 1, 8)?;
        let built = build_for_training(&cfg, Some(RingSize::Ratio(0.5)), mc, &Device::Cpu)?;
        let store = &built.store;
        let stats = store.persistent()["bn1.running_mean"].clone();
        let before = values(&stats);
        let x = Tensor::randn(0f32, 1.0, (4, 1, 8, 8), &Device::Cpu)?;
        let y = Tensor::new(&[1u32, 3, 5, 7], &Device::Cpu)?;
        let mut optimizer = Optimizer::new(OptimizerConfig::sgd(0.0, 0.0));
        let fake = int4();
        TrainStep::new(&built, &mut optimizer, PLAIN)
            .quantized(Some(&fake))
            .run(&x, &y, 0.1, false)?;
        let after = values(&stats);
        assert_ne!(after, before, "the forward pass updated the running mean");
        // Not snapped to int8 codes: restoring it would have undone the update.
        let latent = fake.quantize(store)?;
        assert_eq!(
            values(&stats),
            after,
            "training-time quantization leaves buffers alone"
        );
        latent.restore()?;
        let all = fake.quantize_all(store)?;
        assert_ne!(values(&stats), after, "the artifact's view quantizes them");
        all.restore()?;
        assert_eq!(values(&stats), after);
        Ok(())
    }
}
