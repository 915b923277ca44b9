//! Compressing a trained model into an artifact, and exporting the dense
//! model: the work behind `rpg compress` and `rpg export`, with the report
//! as data (the command prints it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rpg_compress::{Artifact, CompressSettings, prune_weights};
use rpg_nn::ModelFile;
use serde::Serialize;

use crate::checkpoint::{model_file, run_config_path};
use crate::compress_config::{CompressConfig, WeightPruning};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::evaluate::{TestData, check_fits, test_config};
use crate::evaluate::{evaluate, load_test_data_for};
use crate::events::Events;
use crate::export::write_dense;
use crate::metrics::median;
use crate::output::{NewOutputs, check_destination, enclosing_run, refuse_overwrite, write_json};
use crate::qat::FakeQuant;
use crate::setup::{Built, build_from_file, load_any};
use rpg_data::Dataset;

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
    a.store.regenerate()?;
    b.store.regenerate()?;
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
    Ok((median(ta), median(tb)))
}

/// Accuracy after one compression step.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepResult {
    /// What was applied (cumulative).
    pub step: String,
    /// Test accuracy (fraction).
    pub accuracy: f64,
}

/// `compress_report.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// The options, the block size resolved.
    pub settings: CompressConfig,
    /// The ONNX exports of the compressed model, with `onnx_int8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxReport>,
}

/// The compressed model as ONNX, f32 and int8 QDQ; both accuracies from
/// rpg's own ONNX interpreter (ONNX Runtime's are checked against it).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OnnxReport {
    /// The f32 graph.
    pub f32_file: PathBuf,
    /// Its size.
    pub f32_bytes: u64,
    /// Test accuracy of the f32 graph.
    pub f32_accuracy: f64,
    /// The int8 QDQ graph.
    pub int8_file: PathBuf,
    /// Its size.
    pub int8_bytes: u64,
    /// Test accuracy of the int8 graph.
    pub int8_accuracy: f64,
    /// Training images the int8 scales were calibrated on.
    pub calibration_images: usize,
}

/// Everything `rpg compress` does.
#[derive(Debug, Clone)]
pub struct CompressPlan {
    /// The trained model (file, checkpoint or run directory).
    pub checkpoint: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// The options.
    pub config: CompressConfig,
    /// The test data of the report.
    pub data: TestData,
}

/// Compresses as planned; writes the artifact, the dense export and
/// `compress_report.json` into the plan's output directory.
pub fn compress(plan: &CompressPlan, events: &mut dyn Events) -> Result<CompressReport> {
    plan.config.validate()?;
    let (settings, pruning) = (plan.config.settings(), plan.config.pruning());
    let path = model_file(&plan.checkpoint)?;
    let device = Device::Cpu;
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    if Artifact::is_artifact_bytes(&bytes) {
        return Err(Error::Invalid(format!(
            "{} is already a compressed artifact: compress the trained model file instead",
            path.display()
        )));
    }
    let file = ModelFile::from_bytes(&path, bytes)?;
    let original = build_from_file(&file, &device)?;
    let cfg = test_config(&path, &plan.data)?;
    let test = load_test_data_for(&cfg, &original.config)?;
    check_fits(&path, &original, &test)?;
    let inputs: Vec<PathBuf> = [Some(path.clone()), run_config_path(&path)]
        .into_iter()
        .flatten()
        .collect();
    check_destination("out", &plan.out, enclosing_run(&path).as_deref(), true)?;
    for name in OUTPUT_FILES {
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        refuse_overwrite("out", &plan.out.join(name), &inputs)?;
    }
    let before = evaluate(&original, &test, cfg.eval_batch_size, cfg.workers)?;
    // Removed again if anything below fails.
    let mut outputs = NewOutputs::create(&plan.out)?;
    let dense_path = outputs.file(DENSE_FILE);
    let (dense_f32_bytes, _, _) = write_dense(&original, &dense_path, false)?;
    let artifact_path = outputs.file(ARTIFACT_FILE);
    let prunes_weights = pruning.fraction > 0.0 || pruning.channels > 0.0;
    let (steps, artifact_bytes, reloaded) = if prunes_weights {
        let finetune = outputs.file(FINETUNE_DIR);
        materialized_path(
            (&settings, &pruning),
            &original,
            &cfg,
            &test,
            &artifact_path,
            &finetune,
            events,
        )?
    } else if pruning.finetune_epochs > 0 {
        // Fine-tuning the RPG model first: quantization-aware with `qat`,
        // else in full precision (QAT's control: as much more training).
        let finetune = outputs.file(FINETUNE_DIR);
        let quant = plan.config.qat.then_some(&settings);
        let (tuned, qat_step) =
            finetune_rpg((quant, &pruning), &file, &cfg, &test, &finetune, events)?;
        let (mut steps, bytes, reloaded) =
            ring_path(&settings, &tuned, &cfg, &test, &artifact_path)?;
        steps.insert(0, qat_step);
        (steps, bytes, reloaded)
    } else {
        ring_path(&settings, &original, &cfg, &test, &artifact_path)?
    };
    let after = evaluate(&reloaded, &test, cfg.eval_batch_size, cfg.workers)?;
    let onnx = if plan.config.onnx_int8 {
        let files = (outputs.file(ONNX_F32_FILE), outputs.file(ONNX_INT8_FILE));
        Some(onnx_exports(
            &reloaded,
            &cfg,
            &test,
            plan.config.calibration_images,
            files,
        )?)
    } else {
        None
    };
    let runs = plan.config.latency_runs;
    let (b1_before, b1_after) = latencies(&original, &reloaded, 1, runs)?;
    let (b64_before, b64_after) = latencies(&original, &reloaded, 64, runs)?;
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
        latency_before_ms: [b1_before, b64_before].map(|s| s * 1e3),
        latency_after_ms: [b1_after, b64_after].map(|s| s * 1e3),
        settings: plan.config.resolved(),
        onnx,
    };
    write_json(&outputs.file(REPORT_FILE), &report)?;
    outputs.finish();
    Ok(report)
}

/// What a compression path produced: step accuracies, the artifact's size
/// and the artifact as loaded back from disk.
type PathResult = (Vec<StepResult>, u64, Built);

/// The files `rpg compress` writes into its output directory.
const DENSE_FILE: &str = "dense_f32.safetensors";
/// See [`DENSE_FILE`].
const ARTIFACT_FILE: &str = "model.compressed.safetensors";
/// See [`DENSE_FILE`].
const REPORT_FILE: &str = "compress_report.json";
/// See [`DENSE_FILE`]; the fine-tuning run's directory.
const FINETUNE_DIR: &str = "finetune";
/// See [`DENSE_FILE`]; with `onnx_int8`.
const ONNX_F32_FILE: &str = "model.f32.onnx";
/// See [`DENSE_FILE`]; with `onnx_int8`.
const ONNX_INT8_FILE: &str = "model.int8.onnx";
const OUTPUT_FILES: [&str; 6] = [
    DENSE_FILE,
    ARTIFACT_FILE,
    REPORT_FILE,
    FINETUNE_DIR,
    ONNX_F32_FILE,
    ONNX_INT8_FILE,
];

/// Writes `model` as f32 ONNX and as int8 QDQ ONNX calibrated on the first
/// `calibration` training images, and tests both graphs.
fn onnx_exports(
    model: &Built,
    run: &TrainConfig,
    test: &Arc<Dataset>,
    calibration: usize,
    (f32_file, int8_file): (PathBuf, PathBuf),
) -> Result<OnnxReport> {
    model.store.regenerate()?;
    let f32_model = crate::export::onnx_export(model)?;
    let first_images = TrainConfig {
        data: rpg_data::DataConfig {
            train_limit: Some(calibration),
            ..run.data.clone()
        },
        ..run.clone()
    };
    let train =
        crate::evaluate::load_split_for(&first_images, rpg_data::Split::Train, &model.config)?;
    let loader =
        crate::evaluate::in_order(&train, (64, run.workers), rpg_data::Shard::covering(0, 1));
    let batches = loader
        .map(|batch| Ok(crate::evaluate::to_tensors(&batch?, &Device::Cpu)?.0))
        .collect::<Result<Vec<Tensor>>>()?;
    let int8_model = rpg_compress::quantize_qdq(&f32_model, &batches)?;
    let accuracy = |m: &rpg_onnx::proto::ModelProto| -> Result<f64> {
        let graph = m.graph.clone().unwrap_or_default();
        let runner = rpg_compress::OnnxRunner::new(&graph)?;
        let (_, top1, _, n) = crate::evaluate::test_sums(
            test,
            &Device::Cpu,
            (run.eval_batch_size, run.workers),
            rpg_data::Shard::covering(0, 1),
            |x| Ok(runner.run(x, |_, _| {})?),
        )?;
        Ok(top1 as f64 / n.max(1) as f64)
    };
    let write = |path: &Path, m: &rpg_onnx::proto::ModelProto| -> Result<u64> {
        let bytes = rpg_onnx::encode(m);
        let size = bytes.len() as u64;
        crate::output::write_atomic(path, bytes)?;
        Ok(size)
    };
    Ok(OnnxReport {
        f32_bytes: write(&f32_file, &f32_model)?,
        f32_accuracy: accuracy(&f32_model)?,
        int8_bytes: write(&int8_file, &int8_model)?,
        int8_accuracy: accuracy(&int8_model)?,
        f32_file,
        int8_file,
        calibration_images: batches.iter().map(|b| b.dim(0).unwrap_or(0)).sum(),
    })
}

/// Ring quantization / pruning of `source` (the trained model, or the same
/// after quantization-aware fine-tuning): the artifact stays an RPG model.
fn ring_path(
    settings: &CompressSettings,
    source: &Built,
    run: &TrainConfig,
    test: &Arc<Dataset>,
    artifact_path: &Path,
) -> Result<PathResult> {
    // Accuracy after each cumulative step: the source quantized in place,
    // evaluated, and its values put back.
    let mut steps = Vec::new();
    let mut partial = CompressSettings {
        ring_bits: None,
        unshared_int8: false,
        ..settings.clone()
    };
    let mut stages: Vec<(String, CompressSettings)> = Vec::new();
    if settings.ring_prune > 0.0 && source.store.ring().is_some() {
        stages.push((
            format!("prune ring {:.0}%", 100.0 * settings.ring_prune),
            partial.clone(),
        ));
    }
    if let Some(bits) = settings.ring_bits.filter(|_| source.store.ring().is_some()) {
        partial.ring_bits = Some(bits);
        stages.push((format!("+ ring int{}", bits.count()), partial.clone()));
    }
    if settings.unshared_int8 {
        partial.unshared_int8 = true;
        stages.push(("+ unshared int8".into(), partial.clone()));
    }
    for (label, stage) in stages {
        let latent = FakeQuant::new(stage).quantize_all(&source.store)?;
        let accuracy = evaluate(source, test, run.eval_batch_size, run.workers);
        latent.restore()?;
        steps.push(StepResult {
            step: label,
            accuracy: accuracy?.accuracy,
        });
    }
    let artifact = Artifact::compress(&source.store, settings)?;
    let bytes = artifact.save(artifact_path, &source.config.name, &source.config.to_json())?;
    // The artifact as `eval` will see it: loaded from disk.
    let reloaded = load_any(artifact_path, &Device::Cpu)?;
    Ok((steps, bytes, reloaded))
}

/// Fine-tuning of a copy of the trained RPG model (built from `file`) with
/// the run's recipe and data: quantization-aware under `quant` (the
/// artifact's quantization), else in full precision. Returns the copy and
/// its accuracy step.
fn finetune_rpg(
    (quant, pruning): (Option<&CompressSettings>, &WeightPruning),
    file: &ModelFile,
    run: &TrainConfig,
    test: &Arc<Dataset>,
    finetune_dir: &Path,
    events: &mut dyn Events,
) -> Result<(Built, StepResult)> {
    let tuned = build_from_file(file, &Device::Cpu)?;
    let ft = finetune_config(run, &tuned, pruning, finetune_dir);
    let fake_quant = quant.map(|q| FakeQuant::new(q.clone()));
    crate::trainer::finetune(ft, &tuned, fake_quant, events)?;
    let what = if quant.is_some() {
        "quantization-aware fine-tuning"
    } else {
        "fine-tuning"
    };
    let step = StepResult {
        step: format!(
            "{what}, {} epoch(s) (full-precision values)",
            pruning.finetune_epochs
        ),
        accuracy: evaluate(&tuned, test, run.eval_batch_size, run.workers)?.accuracy,
    };
    Ok((tuned, step))
}

/// The fine-tuning run of `built`: the trained run's recipe and data, the
/// model's own normalisation, `pruning`'s epochs and rate.
fn finetune_config(
    run: &TrainConfig,
    built: &Built,
    pruning: &WeightPruning,
    out: &Path,
) -> TrainConfig {
    TrainConfig {
        epochs: pruning.finetune_epochs,
        lr: pruning.finetune_lr,
        data: rpg_data::DataConfig {
            normalize: built
                .config
                .normalize
                .as_ref()
                .map(|n| [n.mean.clone(), n.std.clone()].concat()),
            ..run.data.clone()
        },
        out: Some(out.to_path_buf()),
        ..run.clone()
    }
}

/// Removes `pruning.channels` of the channel groups of `original`'s graph
/// from `tensors` (its materialised weights); returns the narrowed layers'
/// output channels.
fn prune_channels(
    original: &Built,
    tensors: &mut std::collections::BTreeMap<String, Tensor>,
    pruning: &WeightPruning,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let onnx = rpg_models::onnx_model(original.model.as_ref(), &original.config, &[])?;
    let graph = onnx.graph.unwrap_or_default();
    let groups = rpg_compress::channel_groups(&graph)?;
    if groups.is_empty() {
        return Err(Error::invalid_setting(
            "prune_channels",
            pruning.channels,
            format!(
                "{} has no channels that can be pruned: every channel reaches the input, the output or an operator channel pruning does not follow",
                original.config.name
            ),
        ));
    }
    let how = rpg_compress::ChannelPruning {
        fraction: pruning.channels,
        scope: pruning.channel_scope,
        round_to: pruning.channel_round_to,
    };
    Ok(rpg_compress::prune_channel_groups(tensors, &groups, &how)?)
}

/// Pruning of the materialised model: the artifact is a dense model
/// (physically smaller after channel pruning).
fn materialized_path(
    (settings, pruning): (&CompressSettings, &WeightPruning),
    original: &Built,
    run: &TrainConfig,
    test: &Arc<Dataset>,
    artifact_path: &Path,
    finetune_dir: &Path,
    events: &mut dyn Events,
) -> Result<PathResult> {
    let device = Device::Cpu;
    let mut tensors = original.store.materialize()?;
    let mut config = original.config.clone();
    let mut steps = Vec::new();
    let mut labels = Vec::new();
    if pruning.channels > 0.0 {
        let channels = prune_channels(original, &mut tensors, pruning)?;
        labels.push(format!(
            "prune {:.0}% of channels ({} layers narrowed)",
            100.0 * pruning.channels,
            channels.len()
        ));
        config.channels = Some(channels);
    }
    if pruning.fraction > 0.0 {
        prune_weights(&mut tensors, pruning.fraction, pruning.scope)?;
        labels.push(format!(
            "+ prune {:.0}% of weights ({})",
            100.0 * pruning.fraction,
            pruning.scope
        ));
    }
    let store = rpg_nn::ParamStore::dense(&device, DType::F32, original.store.seed());
    let model = rpg_models::build_model(&config, store.var_builder())?;
    store.assign(&tensors)?;
    let dense_params = tensors.values().map(|t| t.elem_count() as u64).sum();
    let pruned = Built {
        config: config.clone(),
        store,
        model,
        dense_params,
    };
    steps.push(StepResult {
        step: labels.join(" "),
        accuracy: evaluate(&pruned, test, run.eval_batch_size, run.workers)?.accuracy,
    });
    if pruning.finetune_epochs > 0 {
        let ft = TrainConfig {
            dense: true,
            dof: None,
            ring: None,
            ..finetune_config(run, original, pruning, finetune_dir)
        };
        crate::trainer::finetune(ft, &pruned, None, events)?;
        if pruning.fraction > 0.0 {
            // Fine-tuning refills pruned weights: prune again to keep the sparsity.
            let mut t = pruned.store.materialize()?;
            prune_weights(&mut t, pruning.fraction, pruning.scope)?;
            pruned.store.assign(&t)?;
        }
        steps.push(StepResult {
            step: format!("+ fine-tune {} epochs", pruning.finetune_epochs),
            accuracy: evaluate(&pruned, test, run.eval_batch_size, run.workers)?.accuracy,
        });
    }
    let dense_settings = CompressSettings {
        ring_bits: None,
        ..settings.clone()
    };
    let bytes = Artifact::compress(&pruned.store, &dense_settings)?.save(
        artifact_path,
        &config.name,
        &config.to_json(),
    )?;
    let reloaded = load_any(artifact_path, &device)?;
    Ok((steps, bytes, reloaded))
}
