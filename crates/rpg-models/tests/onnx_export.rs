//! Every zoo model's ONNX export, run by an independent evaluator
//! (candle-onnx), gives our logits.
//!
//! The ImageNet-stem ResNets are left to `cargo xtask onnx-check` (ONNX
//! Runtime): their stem max-pool pads, which candle-onnx's MaxPool refuses.
//! Every other layer they have is covered here by the `_cifar` variants.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use prost::Message;
use rpg_core::{RingSpec, ScaleRule, ring_lengths_for_ratio};
use rpg_models::{
    MODELS, ModelConfig, ONNX_INPUT, ONNX_OUTPUT, build_model, model_entry, onnx_model,
};
use rpg_nn::{ParamStore, record_parameters};

const PADDED_MAX_POOL: [&str; 3] = ["resnet18", "resnet34", "resnet50"];

/// A deterministic spread of values in [lo, hi).
fn spread(n: usize, salt: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (((i + salt) * 7919 % 1009) as f32 / 1009.0))
        .collect()
}

fn input(cfg: &ModelConfig, batch: usize, salt: usize) -> candle_core::Result<Tensor> {
    let dims = (batch, cfg.in_channels, cfg.image_size, cfg.image_size);
    let n = batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    Tensor::from_vec(spread(n, salt, -1.0, 1.0), dims, &Device::Cpu)
}

/// An RPG model (10% DoF) whose unshared vectors (biases, norm scales and
/// shifts, running statistics) are moved off their initial values, so a
/// swapped or dropped one changes the logits.
fn rpg_model(cfg: &ModelConfig) -> anyhow::Result<(ParamStore, rpg_models::DynModel)> {
    let policy = model_entry(&cfg.name)?.sharing_policy();
    let registry = policy.registry(&record_parameters(|vb| build_model(cfg, vb))?)?;
    let spec = RingSpec {
        ring_lengths: ring_lengths_for_ratio(&registry, 0.1)?,
        ..RingSpec::global(1, 3)
    }
    .with_scale(ScaleRule::LargestFanIn);
    let store = ParamStore::rpg(registry, &spec, &Device::Cpu, DType::F32)?;
    let model = build_model(cfg, store.var_builder())?;
    for (salt, (_, var)) in store.persistent().into_iter().enumerate() {
        if var.rank() == 1 {
            let n = var.dim(0)?;
            var.set(&Tensor::from_vec(
                spread(n, salt, 0.5, 1.5),
                n,
                &Device::Cpu,
            )?)?;
        }
    }
    Ok((store, model))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

#[test]
fn exported_graphs_give_our_logits_in_candle_onnx() -> anyhow::Result<()> {
    for entry in MODELS.iter().filter(|m| !PADDED_MAX_POOL.contains(&m.name)) {
        let mut cfg = entry.config(7);
        cfg.image_size = cfg.image_size.min(32);
        let (_store, model) = rpg_model(&cfg)?;
        let bytes = rpg_onnx::encode(&onnx_model(model.as_ref(), &cfg, &[])?);
        let proto = candle_onnx::onnx::ModelProto::decode(bytes.as_slice())?;
        // Two batch sizes through one graph: the batch dimension is dynamic.
        for (batch, salt) in [(3, 1), (1, 2)] {
            let x = input(&cfg, batch, salt)?;
            let ours = model.forward_t(&x, false)?;
            let inputs = HashMap::from([(ONNX_INPUT.to_string(), x)]);
            let mut outputs = candle_onnx::simple_eval(&proto, inputs)
                .map_err(|e| anyhow::anyhow!("{}: candle-onnx: {e}", entry.name))?;
            let theirs = outputs.remove(ONNX_OUTPUT).expect("logits output");
            assert_eq!(theirs.dims(), ours.dims(), "{}", entry.name);
            let scale = ours
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?
                .max(1.0);
            let diff = max_abs_diff(&ours, &theirs)?;
            assert!(
                diff <= 1e-4 * scale,
                "{} batch {batch}: ONNX logits differ by {diff} (largest logit {scale})",
                entry.name
            );
        }
    }
    Ok(())
}

#[test]
fn exports_name_weights_as_the_model_does() -> anyhow::Result<()> {
    let cfg = model_entry("resnet20")?.config(10);
    let (store, model) = rpg_model(&cfg)?;
    let proto = onnx_model(model.as_ref(), &cfg, &[("model".into(), "resnet20".into())])?;
    let graph = proto.graph.as_ref().expect("graph");
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for name in store.materialize()?.keys() {
        assert!(
            names.contains(&name.as_str()),
            "{name} missing from the ONNX initializers"
        );
    }
    assert_eq!(proto.metadata_props[0].key, "model");
    assert_eq!(proto.opset_import[0].version, rpg_onnx::OPSET);
    Ok(())
}
