//! `rpg bench`'s work: training and inference speed, dense vs RPG, on
//! synthetic input of each model's shape, one case at a time. (The binary
//! runs every case in a child process of its own, so that its peak memory
//! is its own.)

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rpg_kernels::kernel_backend;
use serde::{Deserialize, Serialize};

use crate::config::{DEFAULT_DOF, RingSize, TrainConfig};
use crate::error::{Error, Result};
use crate::metrics::median;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::setup::{build_for_training, model_config};
use crate::step::{StepOutcome, StepSettings, TrainStep};

/// One measured case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Model.
    pub model: String,
    /// `dense` or `rpg`.
    pub mode: String,
    /// Batch size.
    pub batch_size: usize,
    /// CPU conv/batch-norm kernels: `native` or `candle` (stock).
    pub kernels: String,
    /// Median seconds per training step (regenerate, forward, backward, ring gradient, optimizer).
    pub step_seconds: f64,
    /// Training images per second.
    pub train_images_per_second: f64,
    /// Inference images per second of the materialised model (eval mode).
    pub infer_images_per_second: f64,
    /// Share of the step spent generating weights and the ring gradient (0 for dense).
    pub generation_share: f64,
    /// Peak resident memory of the process that ran this case.
    pub peak_rss_bytes: u64,
    /// Timed steps.
    pub steps: usize,
}

/// The default cases: (model, batch size).
pub const DEFAULT_CASES: [(&str, usize); 4] = [
    ("mlp", 128),
    ("lenet5", 128),
    ("resnet20", 128),
    ("resnet18_cifar", 32),
];

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Runs one case in this process: the trainer's own step, on synthetic
/// input, SGD at a constant rate.
pub fn run_case(
    model: &str,
    mode: &str,
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<BenchResult> {
    let cfg = TrainConfig {
        model: model.to_string(),
        dense: mode == "dense",
        ..TrainConfig::default()
    };
    let ring = (mode == "rpg").then_some(RingSize::Ratio(DEFAULT_DOF));
    let entry = rpg_models::model_entry(model)?;
    let mc = model_config(&cfg, 10, entry.in_channels, entry.image_size)?;
    let built = build_for_training(&cfg, ring, mc.clone(), device)?;
    let x = Tensor::randn(
        0f32,
        1.0,
        (batch, mc.in_channels, mc.image_size, mc.image_size),
        device,
    )?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, batch, device)?;
    let mut optimizer = Optimizer::new(OptimizerConfig::sgd(0.9, 5e-4));
    let settings = StepSettings {
        label_smoothing: 0.0,
        clip_grad: None,
        ring_lr_scale: 1.0,
        // The loss read ends each timed step on the device too.
        guard_each_step: true,
    };
    let mut step = TrainStep::new(&built, &mut optimizer, settings);
    let (mut step_times, mut gen_times) = (Vec::new(), Vec::new());
    for i in 0..steps + 1 {
        let timings = match step.run(&x, &y, 0.01, false)? {
            StepOutcome::Taken(output) => output.timings,
            StepOutcome::Diverged { loss } => {
                return Err(Error::BenchCase {
                    case: format!("{model} {mode}"),
                    message: format!("the loss became {loss}"),
                });
            }
        };
        // Let the update finish (matters on asynchronous devices).
        device.synchronize()?;
        if i > 0 {
            step_times.push(timings.total().as_secs_f64());
            let generation = if built.store.ring().is_some() {
                timings.rpg()
            } else {
                Default::default()
            };
            gen_times.push(generation.as_secs_f64());
        }
    }
    built.store.regenerate()?;
    built.model.forward_t(&x, false)?;
    let infer: Vec<f64> = (0..steps.max(3))
        .map(|_| {
            let t = Instant::now();
            built
                .model
                .forward_t(&x, false)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect::<candle_core::Result<_>>()?;
    let step = median(step_times);
    Ok(BenchResult {
        model: model.to_string(),
        mode: mode.to_string(),
        batch_size: batch,
        kernels: kernel_backend().name().into(),
        step_seconds: step,
        train_images_per_second: batch as f64 / step,
        infer_images_per_second: batch as f64 / median(infer),
        generation_share: median(gen_times) / step,
        peak_rss_bytes: peak_rss(),
        steps,
    })
}

/// The table `rpg bench` prints.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = format!(
        "{:<16} {:<6} {:>6} {:<7} {:>10} {:>12} {:>12} {:>10} {:>10}\n",
        "model",
        "mode",
        "batch",
        "kernels",
        "step s",
        "train img/s",
        "infer img/s",
        "gen share",
        "peak MiB"
    );
    for r in results {
        out.push_str(&format!(
            "{:<16} {:<6} {:>6} {:<7} {:>10.3} {:>12.1} {:>12.1} {:>9.2}% {:>10.0}\n",
            r.model,
            r.mode,
            r.batch_size,
            r.kernels,
            r.step_seconds,
            r.train_images_per_second,
            r.infer_images_per_second,
            100.0 * r.generation_share,
            r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    out
}
