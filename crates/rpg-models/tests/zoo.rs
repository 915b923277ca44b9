//! Parameter counts, output shapes, gradients and a training smoke test for
//! every model of the zoo, dense and RPG.

use candle_core::{DType, Device, Tensor};
use rpg_core::{RingSpec, ScaleRule, ring_lengths_for_ratio};
use rpg_models::{MODELS, ModelConfig, build_model, model_entry};
use rpg_nn::{ParamStore, record_parameters};

fn param_count(cfg: &ModelConfig) -> anyhow::Result<usize> {
    let params = record_parameters(|vb| build_model(cfg, vb))?;
    Ok(params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

#[test]
fn parameter_counts_match_the_published_models() -> anyhow::Result<()> {
    let count =
        |name: &str, classes: usize| param_count(&model_entry(name).unwrap().config(classes));
    assert_eq!(count("lenet5", 10)?, 61_706);
    assert_eq!(
        count("mlp", 10)?,
        784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    );
    assert_eq!(count("resnet18", 1000)?, 11_689_512);
    assert_eq!(count("resnet34", 1000)?, 21_797_672);
    assert_eq!(count("resnet50", 1000)?, 25_557_032);
    assert_eq!(count("mobilenet_v2", 1000)?, 3_504_872);
    assert_eq!(count("vit_tiny", 1000)?, 5_717_416);
    assert_eq!(count("vit_small", 1000)?, 22_050_664);
    // He et al. report 0.27 M for ResNet-20 (with zero-padding shortcuts);
    // ours uses 1x1 projections where the shape changes.
    assert_eq!(count("resnet20", 10)?, 272_474);
    assert!(count("resnet56", 10)? > 850_000 && count("resnet110", 10)? > 1_700_000);
    Ok(())
}

fn stores(cfg: &ModelConfig) -> anyhow::Result<Vec<ParamStore>> {
    let dense = ParamStore::dense(&Device::Cpu, DType::F32, 1);
    let policy = model_entry(&cfg.name)?.sharing_policy();
    let registry = policy.registry(&record_parameters(|vb| build_model(cfg, vb))?)?;
    // 10% DoF with each model's default sharing policy and the trainer's
    // default scale rule.
    let spec = RingSpec {
        ring_lengths: ring_lengths_for_ratio(&registry, 0.1)?,
        ..RingSpec::global(1, 1)
    }
    .with_scale(ScaleRule::LargestFanIn);
    let rpg = ParamStore::rpg(registry, &spec, &Device::Cpu, DType::F32)?;
    Ok(vec![dense, rpg])
}

/// A small batch at the model's input size, capped at 32x32 for speed
/// (the ResNets end in global pooling, so any size >= 32 works).
fn small_config(name: &str) -> ModelConfig {
    let mut cfg = model_entry(name).unwrap().config(5);
    cfg.image_size = cfg.image_size.min(32);
    cfg
}

fn input(cfg: &ModelConfig, batch: usize) -> candle_core::Result<Tensor> {
    let n = batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(
        values,
        (batch, cfg.in_channels, cfg.image_size, cfg.image_size),
        &Device::Cpu,
    )
}

#[test]
fn every_model_gives_logits_and_gradients_for_every_trainable_tensor() -> anyhow::Result<()> {
    for entry in MODELS {
        let cfg = small_config(entry.name);
        for store in stores(&cfg)? {
            let model = build_model(&cfg, store.var_builder())?;
            let x = input(&cfg, 2)?;
            let logits = model.forward_t(&x, true)?;
            assert_eq!(logits.dims(), &[2, 5], "{} {:?}", entry.name, store.mode());
            let target = Tensor::new(&[1u32, 3], &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
            let grads = store.gradients(&loss.backward()?)?;
            let trainable = store.trainable();
            assert_eq!(
                grads.len(),
                trainable.len(),
                "{}: some tensors got no gradient",
                entry.name
            );
            for rpg_nn::ParamGrad { name, grad, .. } in grads {
                let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
                assert!(
                    norm > 0.0,
                    "{} {:?}: `{name}` has a zero gradient",
                    entry.name,
                    store.mode()
                );
            }
        }
    }
    Ok(())
}

#[test]
fn one_model_per_family_trains_a_few_steps() -> anyhow::Result<()> {
    for name in [
        "mlp",
        "lenet5",
        "resnet20",
        "resnet18",
        "mobilenet_v2",
        "vit_tiny_cifar",
    ] {
        // MobileNetV2 at this size is sharply curved (its gradients differ by
        // percents between f32 and f64 at init): steps above ~1e-4 make the
        // loss oscillate instead of fall, whichever conv and batch norm run.
        let base_lr = if name == "mobilenet_v2" {
            0.00005
        } else {
            0.02
        };
        let mut cfg = small_config(name);
        if name == "mobilenet_v2" {
            // It downsamples 32x: at 32x32 its last BatchNorms would normalise
            // 1x1 maps over 4 samples, too few for stable batch statistics.
            cfg.image_size = 64;
        }
        let store = stores(&cfg)?.pop().unwrap();
        let model = build_model(&cfg, store.var_builder())?;
        // Eight images: with fewer, the last BatchNorms of the deep nets
        // normalise over so few values that single steps are noise.
        let x = input(&cfg, 8)?;
        let y = Tensor::new(&[0u32, 1, 2, 3, 4, 0, 1, 2], &Device::Cpu)?;
        let mut losses = Vec::new();
        for _ in 0..8 {
            store.regenerate()?;
            let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
            losses.push(loss.to_scalar::<f32>()?);
            // The ring steps at the placement-derived rate, as the trainer does.
            let ring_scale = store.placement().unwrap().sgd_ring_lr_scale();
            for rpg_nn::ParamGrad {
                group, var, grad, ..
            } in store.gradients(&loss.backward()?)?
            {
                let lr = if group == rpg_nn::ParamGroup::Ring {
                    base_lr * ring_scale
                } else {
                    base_lr
                };
                var.set(&(var.as_tensor() - (grad * lr)?)?)?;
            }
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(
            losses[7] < losses[0],
            "{name}: loss did not fall: {losses:?}"
        );
    }
    Ok(())
}
