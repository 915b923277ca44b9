//! A tiny conv net shared by rpg-nn's integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use rpg_core::{LayerRegistry, RingSpec};
use rpg_nn::{GenerationPath, ParamStore, SharingPolicy, record_parameters};

/// stem conv (unshared) -> conv (shared) -> linear (shared) -> classifier
/// (unshared), with tanh so finite differences see a smooth loss.
pub struct Tiny {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

pub fn build(vb: VarBuilder<'_>) -> Result<Tiny> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(Tiny {
        conv1: candle_nn::conv2d_no_bias(1, 4, 3, cfg, vb.pp("conv1"))?,
        conv2: candle_nn::conv2d_no_bias(4, 6, 3, cfg, vb.pp("conv2"))?,
        fc1: candle_nn::linear(6 * 4 * 4, 16, vb.pp("fc1"))?,
        fc2: candle_nn::linear(16, 3, vb.pp("fc2"))?,
    })
}

impl Module for Tiny {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(x)?.tanh()?;
        let x = self
            .conv2
            .forward(&x)?
            .tanh()?
            .avg_pool2d(2)?
            .flatten_from(1)?;
        self.fc2.forward(&self.fc1.forward(&x)?.tanh()?)
    }
}

pub fn registry(policy: &SharingPolicy) -> Result<LayerRegistry> {
    policy.registry(&record_parameters(build)?)
}

pub fn rpg_store(ring: usize, seed: u64) -> Result<(ParamStore, Tiny)> {
    rpg_store_with(ring, seed, GenerationPath::HostKernels)
}

/// [`rpg_store`] with generation on the given path.
pub fn rpg_store_with(ring: usize, seed: u64, path: GenerationPath) -> Result<(ParamStore, Tiny)> {
    let store = ParamStore::rpg_with(
        registry(&SharingPolicy::paper())?,
        &RingSpec::global(ring, seed),
        &Device::Cpu,
        DType::F32,
        path,
    )?;
    let model = build(store.var_builder())?;
    Ok((store, model))
}

/// A deterministic input batch of 5 images, 1x8x8.
pub fn batch() -> Result<Tensor> {
    let values: Vec<f32> = (0..5 * 64)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(values, (5, 1, 8, 8), &Device::Cpu)
}

pub fn labels() -> Result<Tensor> {
    Tensor::new(&[0u32, 1, 2, 1, 0], &Device::Cpu)
}
