//! `rpg selftest`: one training step of every zoo model, dense and RPG, on
//! a device against the same step on the CPU's reference path (rpg-core's
//! host kernels, this project's CPU ops). Logits, loss and every gradient
//! (the ring's included) must agree within a tolerance. On a GPU this checks
//! every CUDA op the models use; with `--device cpu` the candidate runs RPG
//! on the device tables, so the check means something here too.

use candle_core::{DType, Device, Tensor};
use rpg_nn::GenerationPath;
use serde::Serialize;

use crate::config::{DEFAULT_DOF, RingSize, TrainConfig};
use crate::error::Result;
use crate::loss::cross_entropy;
use crate::setup::{Built, build_for_training_on, model_config};

/// One (model, mode) comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTestRow {
    /// Model.
    pub model: String,
    /// `dense` or `rpg`.
    pub mode: String,
    /// The largest difference, relative to the reference's largest value,
    /// over logits, loss and gradients.
    pub worst: f64,
    /// What `worst` was measured on (`logits`, `loss` or a parameter name).
    pub worst_at: String,
    /// Whether `worst` is within the tolerance.
    pub passed: bool,
}

/// Everything a step produces that is compared: (what, values).
fn step(built: &Built, x: &Tensor, y: &Tensor) -> Result<Vec<(String, Tensor)>> {
    built.store.regenerate()?;
    let logits = built.model.forward_t(x, true)?;
    let loss = cross_entropy(&logits, y, 0.0)?;
    let mut out = vec![
        ("logits".to_string(), logits.detach()),
        ("loss".to_string(), loss.detach()),
    ];
    for g in built.store.gradients(&loss.backward()?)? {
        out.push((format!("grad {}", g.name), g.grad));
    }
    Ok(out)
}

/// `max |a - b| / max(|b|, 1e-6)` over two same-shaped tensors.
fn relative(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-6);
    Ok(f64::from(diff / scale))
}

/// Compares one training step of each of `models` (dense and RPG at 10%
/// DoF) on `device` with the CPU reference.
pub fn selftest(device: &Device, models: &[&str], tolerance: f64) -> Result<Vec<SelfTestRow>> {
    let mut rows = Vec::new();
    for &name in models {
        let entry = rpg_models::model_entry(name)?;
        // Small inputs keep it quick; every zoo model takes 32x32 or less.
        let side = entry.image_size.min(32);
        let classes = 10;
        let batch = 2;
        let n = batch * entry.in_channels * side * side;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
        for mode in ["dense", "rpg"] {
            let cfg = TrainConfig {
                model: name.to_string(),
                dense: mode == "dense",
                ..TrainConfig::default()
            };
            let ring = (mode == "rpg").then_some(RingSize::Ratio(DEFAULT_DOF));
            let mc = model_config(&cfg, classes, entry.in_channels, side)?;
            let run = |device: &Device, path| -> Result<Vec<(String, Tensor)>> {
                let built = build_for_training_on(&cfg, ring, mc.clone(), device, path)?;
                let x =
                    Tensor::from_slice(&values, (batch, entry.in_channels, side, side), device)?;
                let y = Tensor::from_slice(&labels, batch, device)?;
                step(&built, &x, &y)
            };
            let reference = run(&Device::Cpu, GenerationPath::HostKernels)?;
            let candidate = run(device, GenerationPath::DeviceTables)?;
            let (mut worst, mut worst_at) = (0f64, String::new());
            for ((what, want), (_, got)) in reference.iter().zip(&candidate) {
                let r = relative(got, want)?;
                if r > worst || worst_at.is_empty() {
                    (worst, worst_at) = (r, what.clone());
                }
            }
            rows.push(SelfTestRow {
                model: name.to_string(),
                mode: mode.to_string(),
                worst,
                worst_at,
                passed: worst <= tolerance && reference.len() == candidate.len(),
            });
        }
    }
    Ok(rows)
}
