//! Zoo models with seeded weights for the compression tests.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rpg_models::{ModelConfig, build_model, model_entry};
use rpg_nn::ParamStore;

pub fn config(name: &str, image_size: usize, width: f64) -> ModelConfig {
    let mut cfg = model_entry(name).unwrap().config(5).with_width(width);
    cfg.image_size = image_size;
    cfg
}

/// A dense model of `cfg` with seeded random weights and every vector
/// (biases, batch norm's scale, shift and statistics) distinct per channel,
/// so that batch norm is not the identity and survivors can be found by
/// value.
pub fn weights(cfg: &ModelConfig) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let store = ParamStore::dense(&Device::Cpu, DType::F32, 3);
    build_model(cfg, store.var_builder())?;
    let mut tensors = store.materialize()?;
    for (name, t) in tensors.iter_mut() {
        let n = t.elem_count();
        let wave = Tensor::arange(0f32, n as f32, &Device::Cpu)?
            .affine(0.37, 0.0)?
            .sin()?
            .reshape(t.shape())?;
        if name.ends_with("running_var") {
            *t = (wave.abs()? + 0.5)?;
        } else if t.rank() == 1 {
            *t = wave.affine(0.3, 0.1)?;
        }
    }
    Ok(tensors)
}

pub fn logits(cfg: &ModelConfig, tensors: &BTreeMap<String, Tensor>) -> anyhow::Result<Vec<f32>> {
    let store = ParamStore::dense(&Device::Cpu, DType::F32, 0);
    let model = build_model(cfg, store.var_builder())?;
    store.assign(tensors)?;
    Ok(model
        .forward_t(&batch(cfg)?, false)?
        .flatten_all()?
        .to_vec1()?)
}

/// A batch of two inputs for `cfg`, smooth and distinct.
pub fn batch(cfg: &ModelConfig) -> candle_core::Result<Tensor> {
    let n = 2 * cfg.in_channels * cfg.image_size * cfg.image_size;
    Tensor::arange(0f32, n as f32, &Device::Cpu)?
        .affine(0.011, 0.0)?
        .cos()?
        .reshape((2, cfg.in_channels, cfg.image_size, cfg.image_size))
}
