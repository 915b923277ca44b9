//! Writes what `cargo xtask onnx-check` hands to ONNX Runtime: for each
//! model, an RPG model file (50% DoF, which every zoo model allows at 1000
//! classes; batch-norm statistics moved off their initial values by two
//! training-mode passes), an input batch and the logits rpg computes for it
//! after reading the file back.
//!
//! ```text
//! cargo run --release -p rpg-cli --example onnx_fixtures -- DIR lenet5,resnet20
//! ```
//! writes `DIR/<model>/{model.safetensors, input.bin, logits.bin, shapes.json}`
//! (`.bin`: little-endian f32, shapes in `shapes.json`) and, for the
//! convolutional models, `model.int8.onnx` (the int8 QDQ export) and
//! `logits_int8.bin` (rpg's interpreter running it).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use rpg_train::config::{RingSize, TrainConfig};
use rpg_train::setup::{build_for_training, load_any};

/// A deterministic input in [-1, 1).
fn input(dims: &[usize], salt: usize) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i + salt) * 7919 % 1009) as f32 / 504.5 - 1.0)
        .collect();
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}

fn write_f32(path: &Path, t: &Tensor) -> Result<()> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn fixture(dir: &Path, name: &str) -> Result<()> {
    let entry = rpg_models::model_entry(name)?;
    let cfg = TrainConfig {
        model: name.to_string(),
        ..TrainConfig::default()
    };
    let classes = if entry.image_size >= 224 { 1000 } else { 10 };
    let mc = entry.config(classes);
    let built = build_for_training(&cfg, Some(RingSize::Ratio(0.5)), mc, &Device::Cpu)?;
    let dims = [2, entry.in_channels, entry.image_size, entry.image_size];
    for salt in [3, 4] {
        built.model.forward_t(&input(&dims, salt)?, true)?;
    }
    let out = dir.join(name);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let model_path = out.join("model.safetensors");
    rpg_nn::save_model_file(
        &model_path,
        &built.store,
        name,
        &built.config.to_json(),
        &BTreeMap::new(),
    )?;
    // The logits of the model as `rpg export` will read it.
    let reloaded = load_any(&model_path, &Device::Cpu)?;
    let x = input(&dims, 1)?;
    let logits = reloaded.model.forward_t(&x, false)?;
    write_f32(&out.join("input.bin"), &x)?;
    write_f32(&out.join("logits.bin"), &logits)?;
    if !name.starts_with("vit") {
        // The int8 QDQ export as `rpg compress --onnx-int8` writes it,
        // calibrated on this input and another, and rpg's logits of it.
        let f32_graph = rpg_models::onnx_model(reloaded.model.as_ref(), &reloaded.config, &[])?;
        let int8 = rpg_compress::quantize_qdq(&f32_graph, &[x.clone(), input(&dims, 5)?])?;
        let graph = int8.graph.clone().unwrap_or_default();
        let int8_logits = rpg_compress::OnnxRunner::new(&graph)?.run(&x, |_, _| {})?;
        std::fs::write(out.join("model.int8.onnx"), rpg_onnx::encode(&int8))?;
        write_f32(&out.join("logits_int8.bin"), &int8_logits)?;
    }
    let shapes = serde_json::json!({ "input": x.dims(), "logits": logits.dims() });
    std::fs::write(out.join("shapes.json"), shapes.to_string())?;
    println!("{name}: {}", out.display());
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, models] = args.as_slice() else {
        bail!("usage: onnx_fixtures DIR MODEL[,MODEL...]");
    };
    for name in models.split(',') {
        fixture(Path::new(dir), name).with_context(|| format!("fixture for {name}"))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
