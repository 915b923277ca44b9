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
use crate::step::{StepOutcome, StepSettings, StepTimings, TrainStep};

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
    /// Share of the step spent generating weights and the ring gradient (0
    /// for dense). CPU only: on a GPU the phases are queued, not run, when
    /// the host times them, and synchronising between them would slow the
    /// step being measured.
    pub generation_share: Option<f64>,
    /// Median seconds of each phase of a step, by the step's own clocks
    /// (CPU only, as `generation_share`): where RPG's cost against the
    /// dense step lies (generation and the ring gradient against the dense
    /// step's larger optimizer update).
    #[serde(default)]
    pub phase_seconds: Option<PhaseSeconds>,
    /// Peak resident memory of the process that ran this case.
    pub peak_rss_bytes: u64,
    /// On a GPU: the most device memory the case held beyond what the
    /// device held before it (sampled after every step; cuda only).
    pub peak_device_bytes: Option<u64>,
    /// On a device other than the CPU: median seconds to upload one batch
    /// of images from (pageable) host memory as the trainer does, sync to
    /// sync: whether pinned memory would pay.
    #[serde(default)]
    pub upload_seconds: Option<f64>,
    /// Timed steps.
    pub steps: usize,
    /// On the RPG row: its step time over the dense model's, both trained
    /// in one process with their steps interleaved (dense, RPG, RPG, dense,
    /// ..., [`paired_step_ratio`]): the two sides of the ratio meet the
    /// same machine, where rows measured in separate processes seconds
    /// apart also measure how the machine's speed drifted between them.
    #[serde(default)]
    pub paired_step_ratio: Option<f64>,
}

/// Median seconds of each phase of the timed steps ([`StepTimings`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Generating the shared weights from the ring.
    pub generate: f64,
    /// Forward pass, loss and backward pass.
    pub forward_backward: f64,
    /// Turning the weight gradients into the ring gradient.
    pub ring_gradient: f64,
    /// The optimizer update.
    pub update: f64,
}

impl PhaseSeconds {
    /// The per-phase medians of `steps`.
    fn median_of(steps: &[StepTimings]) -> Self {
        let phase = |f: fn(&StepTimings) -> std::time::Duration| {
            median(steps.iter().map(|t| f(t).as_secs_f64()).collect())
        };
        Self {
            generate: phase(|t| t.generate),
            forward_backward: phase(|t| t.forward_backward),
            ring_gradient: phase(|t| t.ring_gradient),
            update: phase(|t| t.update),
        }
    }
}

impl BenchResult {
    /// One case measured in several processes, as one result: the mean of
    /// their medians (step, inference and each phase), the largest peak
    /// memory, and every timed step counted. `rpg bench` measures each
    /// mode twice, dense, RPG, RPG, dense, and merges the two: a process
    /// started right after another ran 2-4% slower on the machine that
    /// found it, which made RPG, always second, look that much dearer than
    /// dense. `None` for no results, or results of different cases.
    pub fn merged(results: &[BenchResult]) -> Option<BenchResult> {
        let first = results.first()?;
        let same_case = |r: &BenchResult| {
            (&r.model, &r.mode, r.batch_size, &r.kernels)
                == (&first.model, &first.mode, first.batch_size, &first.kernels)
        };
        if !results.iter().all(same_case) {
            return None;
        }
        let mean = |f: &dyn Fn(&BenchResult) -> f64| {
            results.iter().map(f).sum::<f64>() / results.len() as f64
        };
        let mean_of = |f: &dyn Fn(&BenchResult) -> Option<f64>| {
            let values: Option<Vec<f64>> = results.iter().map(f).collect();
            values.map(|v| v.iter().sum::<f64>() / v.len() as f64)
        };
        let step_seconds = mean(&|r| r.step_seconds);
        let infer_seconds = mean(&|r| r.batch_size as f64 / r.infer_images_per_second);
        let phase = |p: fn(&PhaseSeconds) -> f64| mean_of(&|r| r.phase_seconds.as_ref().map(p));
        let phase_seconds = match (
            phase(|p| p.generate),
            phase(|p| p.forward_backward),
            phase(|p| p.ring_gradient),
            phase(|p| p.update),
        ) {
            (Some(generate), Some(forward_backward), Some(ring_gradient), Some(update)) => {
                Some(PhaseSeconds {
                    generate,
                    forward_backward,
                    ring_gradient,
                    update,
                })
            }
            _ => None,
        };
        Some(BenchResult {
            step_seconds,
            train_images_per_second: first.batch_size as f64 / step_seconds,
            infer_images_per_second: first.batch_size as f64 / infer_seconds,
            generation_share: mean_of(&|r| r.generation_share),
            phase_seconds,
            peak_rss_bytes: results.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
            peak_device_bytes: results.iter().filter_map(|r| r.peak_device_bytes).max(),
            upload_seconds: mean_of(&|r| r.upload_seconds),
            steps: results.iter().map(|r| r.steps).sum(),
            ..first.clone()
        })
    }
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

/// A case ready to train: the model, one synthetic batch, its optimizer.
struct Prepared {
    built: crate::setup::Built,
    x: Tensor,
    y: Tensor,
    optimizer: Optimizer,
}

/// The step settings of every case: no smoothing or clipping, and the
/// loss read at the end of each step (which ends it on a device too).
const SETTINGS: StepSettings = StepSettings {
    label_smoothing: 0.0,
    clip_grad: None,
    ring_lr_scale: 1.0,
    guard_each_step: true,
};

/// Builds `model` dense or RPG (10% DoF) with a synthetic batch of `batch`
/// images and SGD.
fn prepare(model: &str, mode: &str, batch: usize, device: &Device) -> Result<Prepared> {
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
    Ok(Prepared {
        built,
        x,
        y,
        optimizer: Optimizer::new(OptimizerConfig::sgd(0.9, 5e-4)),
    })
}

/// One training step of `step` on its batch, timed from sync to sync: the
/// seconds and the step's own phase clocks.
fn timed_step(
    step: &mut TrainStep<'_>,
    (x, y): (&Tensor, &Tensor),
    case: &str,
    device: &Device,
) -> Result<(f64, StepTimings)> {
    let sync = || device.synchronize().map_err(Error::from);
    let (outcome, seconds) = timed(sync, || Ok(step.run(x, y, 0.01, false)?))?;
    match outcome {
        StepOutcome::Taken(output) => Ok((seconds, output.timings)),
        StepOutcome::Diverged { loss } => Err(Error::BenchCase {
            case: case.to_string(),
            message: format!("the loss became {loss}"),
        }),
    }
}

/// RPG's step time over dense's for `model`, both trained in this process
/// with their `steps` timed steps interleaved (after one warm-up step
/// each): dense, RPG, then RPG, dense, and so on, so that neither side
/// always goes first. The ratio of the two medians.
pub fn paired_step_ratio(model: &str, batch: usize, steps: usize, device: &Device) -> Result<f64> {
    let mut dense = prepare(model, "dense", batch, device)?;
    let mut rpg = prepare(model, "rpg", batch, device)?;
    // Per side: its step, batch, name and timed steps.
    let mut sides = [
        (
            TrainStep::new(&dense.built, &mut dense.optimizer, SETTINGS),
            (&dense.x, &dense.y),
            format!("{model} dense"),
            Vec::new(),
        ),
        (
            TrainStep::new(&rpg.built, &mut rpg.optimizer, SETTINGS),
            (&rpg.x, &rpg.y),
            format!("{model} rpg"),
            Vec::new(),
        ),
    ];
    for i in 0..steps + 1 {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (step, batch, case, times) = &mut sides[side];
            let (seconds, _) = timed_step(step, *batch, case, device)?;
            if i > 0 {
                times.push(seconds);
            }
        }
    }
    let [(.., dense_times), (.., rpg_times)] = sides;
    Ok(median(rpg_times) / median(dense_times))
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
    let device_before = rpg_nn::device_memory_used(device);
    let Prepared {
        built,
        x,
        y,
        mut optimizer,
    } = prepare(model, mode, batch, device)?;
    let mut step = TrainStep::new(&built, &mut optimizer, SETTINGS);
    let sync = || device.synchronize().map_err(Error::from);
    let (mut step_times, mut gen_times, mut phases) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak_device = 0u64;
    let case = format!("{model} {mode}");
    for i in 0..steps + 1 {
        let (seconds, timings) = timed_step(&mut step, (&x, &y), &case, device)?;
        peak_device = peak_device.max(rpg_nn::device_memory_used(device).unwrap_or(0));
        if i > 0 {
            step_times.push(seconds);
            let generation = if built.store.ring().is_some() {
                timings.rpg()
            } else {
                Default::default()
            };
            gen_times.push(generation.as_secs_f64());
            phases.push(timings);
        }
    }
    built.store.regenerate()?;
    built.model.forward_t(&x, false)?;
    let infer: Vec<f64> = (0..steps.max(3))
        .map(|_| {
            let forward = || Ok(built.model.forward_t(&x, false)?.to_dtype(DType::F32)?);
            Ok(timed(sync, forward)?.1)
        })
        .collect::<Result<_>>()?;
    let step = median(step_times);
    let on_cpu = device.is_cpu();
    let upload_seconds = if on_cpu {
        None
    } else {
        let host: Vec<f32> = vec![0.5; x.elem_count()];
        let uploads: Vec<f64> = (0..steps.max(3))
            .map(|_| Ok(timed(sync, || Ok(Tensor::from_slice(&host, x.shape(), device)?))?.1))
            .collect::<Result<_>>()?;
        Some(median(uploads))
    };
    Ok(BenchResult {
        model: model.to_string(),
        mode: mode.to_string(),
        batch_size: batch,
        kernels: kernel_backend().name().into(),
        step_seconds: step,
        train_images_per_second: batch as f64 / step,
        infer_images_per_second: batch as f64 / median(infer),
        generation_share: on_cpu.then(|| median(gen_times) / step),
        phase_seconds: on_cpu.then(|| PhaseSeconds::median_of(&phases)),
        peak_rss_bytes: peak_rss(),
        peak_device_bytes: device_before.map(|before| peak_device.saturating_sub(before)),
        upload_seconds,
        steps,
        paired_step_ratio: None,
    })
}

/// `work`'s seconds from a synchronised device to a synchronised device:
/// on a GPU the host returns once the work is queued, so a timer read
/// without the second `sync` measures the queueing, and without the first
/// it counts work queued before.
fn timed<T, E>(
    sync: impl Fn() -> std::result::Result<(), E>,
    work: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<(T, f64), E> {
    sync()?;
    let start = Instant::now();
    let out = work()?;
    sync()?;
    Ok((out, start.elapsed().as_secs_f64()))
}

/// The table `rpg bench` prints (peak MiB: device memory on a GPU, the
/// resident set on the CPU).
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
            "{:<16} {:<6} {:>6} {:<7} {:>10.3} {:>12.1} {:>12.1} {:>10} {:>10.0}\n",
            r.model,
            r.mode,
            r.batch_size,
            r.kernels,
            r.step_seconds,
            r.train_images_per_second,
            r.infer_images_per_second,
            r.generation_share
                .map_or("-".into(), |g| format!("{:.2}%", 100.0 * g)),
            r.peak_device_bytes.unwrap_or(r.peak_rss_bytes) as f64 / (1024.0 * 1024.0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    /// Work a device still has queued when the host returns (here: the
    /// second sync's wait) is part of the measured time.
    #[test]
    fn a_step_is_timed_from_sync_to_sync() {
        let calls = Cell::new(0);
        let sync = || -> std::result::Result<(), ()> {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                std::thread::sleep(Duration::from_millis(30));
            }
            Ok(())
        };
        let (value, seconds) = timed(sync, || Ok(7)).unwrap();
        assert_eq!((value, calls.get()), (7, 2));
        assert!(seconds >= 0.03, "{seconds}");
    }

    #[test]
    fn merged_results_average_the_processes_and_keep_the_largest_peak() {
        let one = |step: f64, infer: f64, rss: u64| BenchResult {
            model: "mlp".into(),
            mode: "rpg".into(),
            batch_size: 10,
            kernels: "native".into(),
            step_seconds: step,
            train_images_per_second: 10.0 / step,
            infer_images_per_second: infer,
            generation_share: Some(0.1),
            phase_seconds: Some(PhaseSeconds {
                generate: step / 10.0,
                forward_backward: step / 2.0,
                ring_gradient: step / 10.0,
                update: step / 5.0,
            }),
            peak_rss_bytes: rss,
            peak_device_bytes: None,
            upload_seconds: None,
            steps: 3,
            paired_step_ratio: None,
        };
        let m = BenchResult::merged(&[one(1.0, 100.0, 7), one(3.0, 25.0, 9)]).unwrap();
        assert_eq!(m.step_seconds, 2.0);
        assert_eq!(m.train_images_per_second, 5.0);
        // Inference: the mean of 0.1 s and 0.4 s per batch.
        assert!((m.infer_images_per_second - 10.0 / 0.25).abs() < 1e-9);
        assert_eq!((m.peak_rss_bytes, m.steps), (9, 6));
        assert_eq!(m.phase_seconds.unwrap().forward_backward, 1.0);
        assert_eq!((m.peak_device_bytes, m.upload_seconds), (None, None));
        // Different cases are not merged.
        let dense = BenchResult {
            mode: "dense".into(),
            ..one(1.0, 1.0, 1)
        };
        assert_eq!(BenchResult::merged(&[one(1.0, 1.0, 1), dense]), None);
        assert_eq!(BenchResult::merged(&[]), None);
    }

    #[test]
    fn the_paired_ratio_is_a_positive_ratio_of_step_times() {
        let ratio = paired_step_ratio("mlp", 8, 2, &Device::Cpu).unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{ratio}");
    }

    #[test]
    fn a_cpu_case_reports_its_generation_share_and_no_device_memory() {
        let r = run_case("mlp", "rpg", 8, 1, &Device::Cpu).unwrap();
        assert!(r.generation_share.is_some_and(|g| (0.0..=1.0).contains(&g)));
        assert_eq!(r.peak_device_bytes, None);
        assert!(r.step_seconds > 0.0);
        // The phases are the step's own clocks: all measured, none longer
        // than the whole step's timer.
        let p = r.phase_seconds.expect("phases on the CPU");
        let phases = [p.generate, p.forward_backward, p.ring_gradient, p.update];
        assert!(
            phases.iter().all(|&s| s > 0.0 && s <= r.step_seconds),
            "{p:?}"
        );
    }
}
