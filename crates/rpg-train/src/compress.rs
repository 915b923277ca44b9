//! `rpg compress` and `rpg export`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor};
use rpg_compress::{Artifact, Bits, CompressSettings};
use serde::Serialize;

use crate::cli::{CompressArgs, ExportArgs, QuantChoice, TestDataArgs};
use crate::config::TrainConfig;
use crate::setup::{Built, load_any};
use crate::trainer::{evaluate, load_test_data};

/// Accepts a model file, an artifact, a checkpoint directory or a run directory.
pub fn model_file(path: &Path) -> Result<PathBuf> {
    [
        path.to_path_buf(),
        path.join("model.safetensors"),
        path.join("checkpoints/best/model.safetensors"),
        path.join("checkpoints/last/model.safetensors"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| {
        format!(
            "no model file at {} (give a model.safetensors, a checkpoint or a run directory)",
            path.display()
        )
    })
}

/// The run's config (two levels above `run/checkpoints/<which>/model.safetensors`), if any.
pub fn run_config(model: &Path) -> Result<Option<TrainConfig>> {
    model
        .ancestors()
        .nth(3)
        .map(|run| run.join("config.toml"))
        .filter(|p| p.is_file())
        .map(|p| TrainConfig::from_toml_file(&p))
        .transpose()
}

/// The data configuration for testing the model at `model`: the run's
/// config.toml (when the model sits in a run directory), then the flags.
pub fn test_config(model: &Path, data: &TestDataArgs) -> Result<TrainConfig> {
    let mut cfg = run_config(model)?.unwrap_or_default();
    if let Some(d) = &data.dataset {
        if *d != cfg.dataset {
            cfg.data_dir = None;
        }
        cfg.dataset = d.clone();
    }
    if data.data_dir.is_some() {
        cfg.data_dir = data.data_dir.clone();
    }
    if data.test_limit.is_some() {
        cfg.test_limit = data.test_limit;
    }
    Ok(cfg)
}

/// Fails when a model cannot read a data set (classes or channels differ).
pub fn check_fits(path: &Path, built: &Built, test: &crate::data::Dataset) -> Result<()> {
    if test.num_classes != built.config.num_classes || test.channels != built.config.in_channels {
        bail!(
            "{} is a {}-class, {}-channel model but {} has {} classes and {} channels",
            path.display(),
            built.config.num_classes,
            built.config.in_channels,
            test.name,
            test.num_classes,
            test.channels
        );
    }
    Ok(())
}

/// Median seconds of eval-mode forward passes at `batch` for two models,
/// timed alternately (so machine noise hits both alike) after a warm-up.
fn latencies(a: &Built, b: &Built, batch: usize, runs: usize) -> Result<(f64, f64)> {
    let input = |m: &Built| {
        let c = &m.config;
        Tensor::zeros(
            (batch, c.in_channels, c.image_size, c.image_size),
            DType::F32,
            m.store.device(),
        )
    };
    let (xa, xb) = (input(a)?, input(b)?);
    a.store.regenerate().map_err(|e| anyhow!("{e}"))?;
    b.store.regenerate().map_err(|e| anyhow!("{e}"))?;
    for _ in 0..3 {
        a.model.forward_t(&xa, false)?;
        b.model.forward_t(&xb, false)?;
    }
    let time = |m: &Built, x: &Tensor| -> Result<f64> {
        let t = Instant::now();
        m.model.forward_t(x, false)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        ta.push(time(a, &xa)?);
        tb.push(time(b, &xb)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(ta), median(tb)))
}

/// Accuracy after one compression step.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// What was applied (cumulative).
    pub step: String,
    /// Test accuracy (fraction).
    pub accuracy: f64,
}

/// `compress_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct CompressReport {
    /// Source model file.
    pub checkpoint: PathBuf,
    /// The artifact.
    pub artifact: PathBuf,
    /// Its size on disk.
    pub artifact_bytes: u64,
    /// Size of the dense f32 model of the same architecture (the export).
    pub dense_f32_bytes: u64,
    /// `dense_f32_bytes / artifact_bytes`.
    pub size_ratio: f64,
    /// Test accuracy before compression.
    pub accuracy_before: f64,
    /// Test accuracy of the artifact, loaded from disk.
    pub accuracy_after: f64,
    /// Accuracy after each cumulative step.
    pub steps: Vec<StepResult>,
    /// Test images used.
    pub test_samples: usize,
    /// Median eval latency before, batch 1 and 64 (ms).
    pub latency_before_ms: [f64; 2],
    /// Median eval latency after, batch 1 and 64 (ms).
    pub latency_after_ms: [f64; 2],
    /// Settings.
    pub settings: serde_json::Value,
}

fn settings_from(args: &CompressArgs) -> Result<CompressSettings> {
    if !(0.0..1.0).contains(&args.prune_ring) {
        bail!("--prune-ring must be in [0, 1), got {}", args.prune_ring);
    }
    // int4's coarser steps want smaller blocks; measured on LeNet-5 (docs/compression.md).
    let block = args.block.unwrap_or(if args.quant == QuantChoice::Int4 {
        64
    } else {
        256
    });
    if block == 0 {
        bail!("--block must be positive");
    }
    Ok(CompressSettings {
        ring_bits: match args.quant {
            QuantChoice::Int8 => Some(Bits::Eight),
            QuantChoice::Int4 => Some(Bits::Four),
            QuantChoice::None => None,
        },
        block,
        f16_scales: args.scale_dtype == "f16",
        ring_prune: args.prune_ring,
        unshared_int8: args.quant_unshared == "int8",
    })
}

/// Writes the dense model with its torchvision/timm names (BatchNorms
/// folded into their convs when asked); returns its size and tensor count.
fn write_dense(built: &Built, path: &Path, fold_bn: bool) -> Result<(u64, usize)> {
    let mut tensors = built.store.materialize().map_err(|e| anyhow!("{e}"))?;
    if fold_bn {
        let folded =
            rpg_compress::fold_batch_norms(&mut tensors, 1e-5).map_err(|e| anyhow!("{e}"))?;
        println!("folded {folded} BatchNorm layers into their convs");
    }
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok((std::fs::metadata(path)?.len(), tensors.len()))
}

/// `rpg export`.
pub fn export(args: &ExportArgs) -> Result<()> {
    let path = model_file(&args.checkpoint)?;
    let built = load_any(&path, &Device::Cpu)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let (bytes, count) = write_dense(&built, &args.out, args.fold_bn)?;
    println!(
        "wrote {} ({} tensors of {}, {bytes} bytes, f32, torchvision/timm names)",
        args.out.display(),
        count,
        built.config.name
    );
    Ok(())
}

/// `rpg compress`.
pub fn compress(args: &CompressArgs) -> Result<()> {
    let settings = settings_from(args)?;
    let path = model_file(&args.checkpoint)?;
    if Artifact::is_artifact(&path) {
        bail!(
            "{} is already a compressed artifact: compress the trained model file instead",
            path.display()
        );
    }
    let cfg = test_config(&path, &args.data)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let device = Device::Cpu;
    let test = load_test_data(&cfg)?;

    let original = load_any(&path, &device)?;
    check_fits(&path, &original, &test)?;
    let before = evaluate(&original, &test, 1000, 2)?;
    let dense_path = args.out.join("dense_f32.safetensors");
    let (dense_f32_bytes, _) = write_dense(&original, &dense_path, false)?;

    let (steps, artifact_path, artifact_bytes, reloaded) =
        if args.prune > 0.0 || args.prune_channels > 0.0 {
            materialized_path(args, &settings, &original, &cfg, &test)?
        } else {
            ring_path(args, &settings, &path, &original, &test)?
        };
    let after = evaluate(&reloaded, &test, 1000, 2)?;
    let (b1_before, b1_after) = latencies(&original, &reloaded, 1, args.latency_runs)?;
    let (b64_before, b64_after) = latencies(&original, &reloaded, 64, args.latency_runs)?;
    let latency_before = [b1_before, b64_before];
    let latency_after = [b1_after, b64_after];

    let report = CompressReport {
        checkpoint: path.clone(),
        artifact: artifact_path.clone(),
        artifact_bytes,
        dense_f32_bytes,
        size_ratio: dense_f32_bytes as f64 / artifact_bytes as f64,
        accuracy_before: before.accuracy,
        accuracy_after: after.accuracy,
        steps,
        test_samples: after.samples,
        latency_before_ms: latency_before.map(|s| s * 1e3),
        latency_after_ms: latency_after.map(|s| s * 1e3),
        settings: serde_json::json!({
            "prune": args.prune,
            "prune_scope": args.prune_scope,
            "prune_channels": args.prune_channels,
            "finetune_epochs": args.finetune_epochs,
            "finetune_lr": args.finetune_lr,
            "quant": format!("{:?}", args.quant).to_lowercase(),
            "block": settings.block,
            "scale_dtype": args.scale_dtype,
            "prune_ring": settings.ring_prune,
            "quant_unshared": args.quant_unshared,
        }),
    };
    std::fs::write(
        args.out.join("compress_report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{} -> {}", path.display(), artifact_path.display());
    println!(
        "  {:<28} {:>12}",
        "dense f32 file (bytes)", report.dense_f32_bytes
    );
    println!("  {:<28} {:>12}", "artifact (bytes)", report.artifact_bytes);
    println!("  {:<28} {:>11.1}x", "size ratio", report.size_ratio);
    println!(
        "  {:<28} {:>11.2}%",
        "accuracy before",
        100.0 * report.accuracy_before
    );
    for s in &report.steps {
        println!(
            "  {:<28} {:>11.2}%",
            format!("after {}", s.step),
            100.0 * s.accuracy
        );
    }
    println!(
        "  {:<28} {:>11.2}%",
        "accuracy of the artifact",
        100.0 * report.accuracy_after
    );
    println!(
        "  {:<28} {:>5.2} / {:.2} ms",
        "latency b1 / b64 before", report.latency_before_ms[0], report.latency_before_ms[1]
    );
    println!(
        "  {:<28} {:>5.2} / {:.2} ms",
        "latency b1 / b64 after", report.latency_after_ms[0], report.latency_after_ms[1]
    );
    println!(
        "  report: {}",
        args.out.join("compress_report.json").display()
    );
    Ok(())
}

type PathResult = (Vec<StepResult>, PathBuf, u64, Built);

/// Ring quantization / pruning: the artifact stays an RPG model.
fn ring_path(
    args: &CompressArgs,
    settings: &CompressSettings,
    path: &Path,
    original: &Built,
    test: &std::sync::Arc<crate::data::Dataset>,
) -> Result<PathResult> {
    let device = Device::Cpu;
    // Accuracy after each cumulative step, on an in-memory copy.
    let mut steps = Vec::new();
    let mut partial = CompressSettings {
        ring_bits: None,
        unshared_int8: false,
        ..settings.clone()
    };
    let mut stages: Vec<(String, CompressSettings)> = Vec::new();
    if settings.ring_prune > 0.0 && original.store.ring().is_some() {
        stages.push((
            format!("prune ring {:.0}%", 100.0 * settings.ring_prune),
            partial.clone(),
        ));
    }
    if let Some(bits) = settings
        .ring_bits
        .filter(|_| original.store.ring().is_some())
    {
        partial.ring_bits = Some(bits);
        stages.push((format!("+ ring int{}", bits.count()), partial.clone()));
    }
    if settings.unshared_int8 {
        partial.unshared_int8 = true;
        stages.push(("+ unshared int8".into(), partial.clone()));
    }
    for (label, stage) in &stages {
        let copy = load_any(path, &device)?;
        Artifact::compress(&copy.store, stage)
            .map_err(|e| anyhow!("{e}"))?
            .apply(&copy.store)
            .map_err(|e| anyhow!("{e}"))?;
        steps.push(StepResult {
            step: label.clone(),
            accuracy: evaluate(&copy, test, 1000, 2)?.accuracy,
        });
    }
    let artifact_path = args.out.join("model.compressed.safetensors");
    let artifact = Artifact::compress(&original.store, settings).map_err(|e| anyhow!("{e}"))?;
    let bytes = artifact
        .save(
            &artifact_path,
            &original.config.name,
            &original.config.to_json(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    // The artifact as `eval` will see it: loaded from disk.
    let reloaded = load_any(&artifact_path, &device)?;
    Ok((steps, artifact_path, bytes, reloaded))
}

/// Zeros the smallest materialised conv/linear weights (globally or per layer).
fn prune_weights(
    tensors: &mut std::collections::BTreeMap<String, Tensor>,
    fraction: f64,
    per_layer: bool,
) -> Result<()> {
    let names: Vec<String> = tensors
        .iter()
        .filter(|(n, t)| n.ends_with("weight") && t.rank() >= 2)
        .map(|(n, _)| n.clone())
        .collect();
    let mut values: Vec<Vec<f32>> = names
        .iter()
        .map(|n| tensors[n].flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<_>>()?;
    if per_layer {
        for v in values.iter_mut() {
            rpg_compress::magnitude_prune(v, fraction);
        }
    } else {
        let mut views: Vec<&mut [f32]> = values.iter_mut().map(|v| &mut v[..]).collect();
        rpg_compress::global_magnitude_prune(&mut views, fraction);
    }
    for (name, v) in names.iter().zip(values) {
        let dims = tensors[name].dims().to_vec();
        tensors.insert(name.clone(), Tensor::from_vec(v, dims, &Device::Cpu)?);
    }
    Ok(())
}

/// Pruning of the materialised model: the artifact is a dense model
/// (physically smaller after --prune-channels).
fn materialized_path(
    args: &CompressArgs,
    settings: &CompressSettings,
    original: &Built,
    run: &TrainConfig,
    test: &std::sync::Arc<crate::data::Dataset>,
) -> Result<PathResult> {
    if !(0.0..1.0).contains(&args.prune) || !(0.0..1.0).contains(&args.prune_channels) {
        bail!("--prune and --prune-channels must be in [0, 1)");
    }
    let device = Device::Cpu;
    let mut tensors = original.store.materialize().map_err(|e| anyhow!("{e}"))?;
    let mut config = original.config.clone();
    let mut steps = Vec::new();
    let mut labels = Vec::new();
    if args.prune_channels > 0.0 {
        let layers = rpg_models::prunable_layers(&config).with_context(|| {
            format!(
                "--prune-channels supports lenet5 and mlp so far, not {}",
                config.name
            )
        })?;
        let widths = rpg_compress::prune_channels(&mut tensors, &layers, args.prune_channels)
            .map_err(|e| anyhow!("{e}"))?;
        labels.push(format!(
            "prune {:.0}% of channels -> widths {widths:?}",
            100.0 * args.prune_channels
        ));
        config.widths = Some(widths);
    }
    if args.prune > 0.0 {
        prune_weights(&mut tensors, args.prune, args.prune_scope == "layer")?;
        labels.push(format!(
            "+ prune {:.0}% of weights ({})",
            100.0 * args.prune,
            args.prune_scope
        ));
    }
    let store = rpg_nn::ParamStore::dense(&device, DType::F32, original.store.seed());
    let model =
        rpg_models::build_model(&config, store.var_builder()).map_err(|e| anyhow!("{e}"))?;
    store.assign(&tensors).map_err(|e| anyhow!("{e}"))?;
    let dense_params = tensors.values().map(|t| t.elem_count() as u64).sum();
    let pruned = Built {
        config: config.clone(),
        store,
        model,
        dense_params,
    };
    steps.push(StepResult {
        step: labels.join(" "),
        accuracy: evaluate(&pruned, test, 1000, 2)?.accuracy,
    });
    if args.finetune_epochs > 0 {
        let ft = TrainConfig {
            dense: true,
            dof: None,
            ring: None,
            epochs: args.finetune_epochs,
            lr: args.finetune_lr,
            out: Some(args.out.join("finetune")),
            ..run.clone()
        };
        crate::trainer::finetune(ft, &pruned)?;
        if args.prune > 0.0 {
            // Fine-tuning refills pruned weights: prune again to keep the sparsity.
            let mut t = pruned.store.materialize().map_err(|e| anyhow!("{e}"))?;
            prune_weights(&mut t, args.prune, args.prune_scope == "layer")?;
            pruned.store.assign(&t).map_err(|e| anyhow!("{e}"))?;
        }
        steps.push(StepResult {
            step: format!("+ fine-tune {} epochs", args.finetune_epochs),
            accuracy: evaluate(&pruned, test, 1000, 2)?.accuracy,
        });
    }
    let dense_settings = CompressSettings {
        ring_bits: None,
        ..settings.clone()
    };
    let artifact_path = args.out.join("model.compressed.safetensors");
    let bytes = Artifact::compress(&pruned.store, &dense_settings)
        .map_err(|e| anyhow!("{e}"))?
        .save(&artifact_path, &config.name, &config.to_json())
        .map_err(|e| anyhow!("{e}"))?;
    let reloaded = load_any(&artifact_path, &device)?;
    Ok((steps, artifact_path, bytes, reloaded))
}
