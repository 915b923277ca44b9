//! The training loop.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{BatchLoader, Dataset, LoaderOptions};
use crate::loss::{correct_counts, cross_entropy};
use crate::metrics::{EpochRecord, MetricsLog, StepRecord};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind, clip_grad_norm, updates};
use crate::schedule::Schedule;
use crate::setup::{Built, build_for_training, build_from_file, model_config};

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Data set name.
    pub dataset: String,
    /// `rpg` or `dense`.
    pub mode: String,
    /// Placement (`none` for dense).
    pub placement: String,
    /// Seed.
    pub seed: u64,
    /// Ring length(s), summed (0 for dense).
    pub ring_dof: u64,
    /// Ring DoF + unshared parameters (the dense count for dense).
    pub total_dof: u64,
    /// Parameters of the dense model.
    pub dense_params: u64,
    /// `total_dof / dense_params`.
    pub dof_ratio: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Final test accuracy (fraction).
    pub test_accuracy: f64,
    /// Final test loss.
    pub test_loss: f64,
    /// Best test accuracy over epochs.
    pub best_test_accuracy: f64,
    /// Epoch of the best accuracy.
    pub best_epoch: usize,
    /// Final test top-5 (more than 10 classes).
    pub test_top5: Option<f64>,
    /// Seconds spent in training steps (evaluation excluded).
    pub train_seconds: f64,
    /// Training images per second over the run.
    pub images_per_second: f64,
    /// Device.
    pub device: String,
    /// Learning-rate multiplier applied to the ring.
    pub ring_lr_scale: f64,
    /// Output directory.
    pub out_dir: PathBuf,
}

/// Test-set figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy (fraction).
    pub accuracy: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
}

fn candle(e: candle_core::Error) -> anyhow::Error {
    anyhow!("{e}")
}

fn to_tensors(batch: &crate::data::Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(
        &batch.images,
        (batch.size, batch.channels, batch.side, batch.side),
        device,
    )?;
    let y = Tensor::from_slice(&batch.labels, batch.size, device)?;
    Ok((x, y))
}

/// Evaluates a model (weights regenerated first) on a data set.
pub fn evaluate(
    built: &Built,
    data: &Arc<Dataset>,
    batch_size: usize,
    workers: usize,
) -> Result<EvalResult> {
    built.store.regenerate().map_err(candle)?;
    let device = built.store.device().clone();
    let loader = BatchLoader::new(
        data.clone(),
        LoaderOptions {
            batch_size,
            shuffle_seed: None,
            epoch: 0,
            augment: false,
            drop_last: false,
            workers,
            prefetch: 2,
        },
    );
    let (mut loss_sum, mut top1, mut top5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader {
        let batch = batch?;
        let (x, y) = to_tensors(&batch, &device)?;
        let logits = built.model.forward_t(&x, false)?.detach();
        loss_sum +=
            f64::from(cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()?) * batch.size as f64;
        let (a, b) = correct_counts(&logits, &batch.labels)?;
        top1 += a;
        top5 += b;
        n += batch.size;
    }
    if n == 0 {
        bail!("the test set is empty");
    }
    Ok(EvalResult {
        loss: loss_sum / n as f64,
        accuracy: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        samples: n,
    })
}

/// The test split of `cfg`'s data set, without reading the training split
/// (one image of it). `cfg` itself keeps the run's training data, which is
/// what fine-tuning trains on.
pub fn load_test_data(cfg: &TrainConfig) -> Result<Arc<Dataset>> {
    let test_only = TrainConfig {
        train_limit: Some(1),
        ..cfg.clone()
    };
    Ok(load_data(&test_only)?.1)
}

/// Loads a data set with the config's limits.
pub fn load_data(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>)> {
    let dir = cfg.data_dir();
    let mut splits = crate::data::load(&cfg.dataset, &dir, cfg.image_size.unwrap_or(224))?;
    if let Some(n) = cfg.train_limit {
        splits.train.truncate(n);
    }
    if let Some(n) = cfg.test_limit {
        splits.test.truncate(n);
    }
    if splits.train.is_empty() || splits.test.is_empty() {
        bail!("{}: empty train or test split", dir.display());
    }
    Ok((Arc::new(splits.train), Arc::new(splits.test)))
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:28}] {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// Trains as configured (or resumes `resume`), writing everything into the
/// output directory, and returns the summary.
pub fn train(cfg: TrainConfig, resume: Option<&Path>) -> Result<Summary> {
    train_until(cfg, resume, None)
}

/// [`train`], stopping (with a checkpoint, as if interrupted) once
/// `stop_after_epochs` more epochs are done: for time-sliced jobs, and to
/// test that a resumed run equals an uninterrupted one.
pub fn train_until(
    cfg: TrainConfig,
    resume: Option<&Path>,
    stop_after_epochs: Option<usize>,
) -> Result<Summary> {
    train_impl(cfg, resume, stop_after_epochs, None)
}

/// Trains an already built (dense) model further with `cfg`'s recipe and
/// data, e.g. after structured pruning; the model's parameters are updated
/// in place.
pub fn finetune(cfg: TrainConfig, built: &Built) -> Result<Summary> {
    train_impl(cfg, None, None, Some(built))
}

fn train_impl(
    mut cfg: TrainConfig,
    resume: Option<&Path>,
    stop_after_epochs: Option<usize>,
    prebuilt: Option<&Built>,
) -> Result<Summary> {
    let resume_state = match resume {
        Some(dir) => {
            let last = checkpoint::find_last(dir).with_context(|| {
                format!(
                    "{} has no checkpoint to resume from (expected checkpoints/last/)",
                    dir.display()
                )
            })?;
            Some((last.clone(), checkpoint::read_state(&last)?))
        }
        None => None,
    };
    let ring_size = cfg.validate()?;
    // Before anything is written: a bad --device leaves no run directory.
    let device = rpg_nn::parse_device(&cfg.device).map_err(candle)?;
    let out = cfg.out_dir();
    if resume.is_none() && checkpoint::find_last(&out).is_some() {
        bail!(
            "{} already holds a run: continue it with --resume {0} or choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    cfg.out = Some(out.clone());
    std::fs::write(out.join("config.toml"), cfg.to_toml()?)?;

    let (train_data, test_data) = load_data(&cfg)?;
    let owned;
    let built: &Built = match (prebuilt, &resume_state) {
        (Some(built), _) => built,
        (None, None) => {
            let mc = model_config(
                &cfg,
                train_data.num_classes,
                train_data.channels,
                train_data.image_size,
            )?;
            owned = build_for_training(&cfg, ring_size, mc, &device)?;
            &owned
        }
        (None, Some((dir, _))) => {
            let path = dir.join(checkpoint::MODEL_FILE);
            let header = rpg_nn::read_header(&path).map_err(candle)?;
            owned = build_from_file(&path, &header, &device)?;
            &owned
        }
    };
    if let Some(p) = built.store.placement() {
        for notice in p.notices() {
            eprintln!("note: {notice}");
        }
    }
    let ring_lr_scale = match (built.store.placement(), cfg.ring_lr_scaling, cfg.optimizer) {
        (Some(p), true, OptimizerKind::Sgd) => p.sgd_ring_lr_scale(),
        (Some(p), true, OptimizerKind::Adamw) => p.adam_ring_lr_scale(),
        _ => 1.0,
    };
    let mut optimizer = Optimizer::new(OptimizerConfig {
        kind: cfg.optimizer,
        momentum: cfg.momentum,
        nesterov: cfg.nesterov,
        weight_decay: cfg.wd,
        ring_weight_decay: cfg.ring_wd,
        betas: (0.9, 0.999),
        eps: 1e-8,
    });
    let schedule = Schedule {
        kind: cfg.schedule,
        base_lr: cfg.lr,
        epochs: cfg.epochs as f64,
        warmup_epochs: cfg.warmup_epochs,
        step_epochs: cfg.step_epochs,
        step_gamma: cfg.step_gamma,
        exp_decay_epochs: cfg.exp_decay_epochs,
    };
    let mut state = TrainerState {
        epoch: 0,
        step: 0,
        data_seed: cfg.seed,
        data_epoch: 0,
        best_accuracy: 0.0,
        best_epoch: 0,
        test_accuracy: 0.0,
        test_loss: f64::NAN,
        train_seconds: 0.0,
    };
    if let Some((dir, saved)) = &resume_state {
        optimizer.load(&dir.join(checkpoint::OPTIMIZER_FILE), &device)?;
        state = saved.clone();
        if state.epoch >= cfg.epochs {
            bail!(
                "{} already finished {} of {} epochs: pass a larger --epochs to train further",
                out.display(),
                state.epoch,
                cfg.epochs
            );
        }
        println!("resuming {} after epoch {}", out.display(), state.epoch);
    }
    let mut log = MetricsLog::open(&out, resume_state.as_ref().map(|(_, s)| s.epoch))?;
    let mode = built.store.mode();
    let dof = built.store.dof();
    println!(
        "{} {} on {} ({}), {} params dense{}",
        mode.name(),
        cfg.model,
        cfg.dataset,
        rpg_nn::device_name(&device),
        built.dense_params,
        dof.map(|d| format!(
            ", ring {} + unshared {} = {} DoF ({:.2}% of dense), ring lr x{ring_lr_scale:.4}",
            d.ring_dof,
            d.unshared_params,
            d.total_dof,
            100.0 * d.dof_ratio
        ))
        .unwrap_or_default()
    );

    let steps_per_epoch = train_data.len().div_ceil(cfg.batch_size);
    let mut last_eval = EvalResult {
        loss: state.test_loss,
        accuracy: state.test_accuracy,
        top5: 0.0,
        samples: 0,
    };
    let mut images_total = 0usize;
    let last_epoch = stop_after_epochs.map_or(cfg.epochs, |n| (state.epoch + n).min(cfg.epochs));
    for epoch in state.epoch + 1..=last_epoch {
        let loader = BatchLoader::new(
            train_data.clone(),
            LoaderOptions {
                batch_size: cfg.batch_size,
                shuffle_seed: Some(state.data_seed),
                epoch: state.data_epoch,
                augment: true,
                drop_last: false,
                workers: cfg.workers,
                prefetch: 4,
            },
        );
        let bar = progress_bar(loader.len(), epoch, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut step_seconds = 0f64;
        let mut lr = schedule.lr((epoch - 1) as f64);
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            let started = Instant::now();
            let fractional = (epoch - 1) as f64 + i as f64 / steps_per_epoch as f64;
            lr = schedule.lr(fractional);
            built.store.regenerate().map_err(candle)?;
            let (x, y) = to_tensors(&batch, &device)?;
            let logits = built.model.forward_t(&x, true)?;
            let loss = cross_entropy(&logits, &y, cfg.label_smoothing)?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                bar.abandon();
                bail!(
                    "training diverged: the loss became {loss_value} at epoch {epoch}, step {}; lower --lr (now {}) or set --clip-grad. The last good checkpoint is kept in {}",
                    state.step + 1,
                    cfg.lr,
                    checkpoint::checkpoint_dir(&out, "last").display()
                );
            }
            let mut grads = built.store.gradients(&loss.backward()?).map_err(candle)?;
            let grad_norm = clip_grad_norm(&mut grads, cfg.clip_grad)?;
            optimizer.step(&updates(&grads, |name| {
                if name == rpg_nn::RING_NAME {
                    lr * ring_lr_scale
                } else {
                    lr
                }
            }))?;
            step_seconds += started.elapsed().as_secs_f64();
            state.step += 1;
            let (top1, _) = correct_counts(&logits.detach(), &batch.labels)?;
            loss_sum += loss_value * batch.size as f64;
            correct += top1;
            seen += batch.size;
            let ips = seen as f64 / step_seconds.max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.3} lr {lr:.4} {ips:.0} img/s",
                loss_sum / seen as f64,
                correct as f64 / seen as f64
            ));
            bar.inc(1);
            if state.step.is_multiple_of(cfg.log_every as u64) {
                log.write(&StepRecord {
                    kind: "step".into(),
                    epoch,
                    step: state.step,
                    loss: loss_value,
                    accuracy: top1 as f64 / batch.size as f64,
                    lr,
                    grad_norm,
                })?;
                if bar.is_hidden() {
                    println!(
                        "epoch {epoch}/{} step {} loss {loss_value:.4} lr {lr:.4} {ips:.0} img/s",
                        cfg.epochs, state.step
                    );
                }
            }
        }
        bar.finish_and_clear();
        state.train_seconds += step_seconds;
        images_total += seen;
        state.data_epoch += 1;
        last_eval = evaluate(built, &test_data, cfg.eval_batch_size, cfg.workers)?;
        state.epoch = epoch;
        state.test_accuracy = last_eval.accuracy;
        state.test_loss = last_eval.loss;
        let improved = last_eval.accuracy > state.best_accuracy || state.best_epoch == 0;
        if improved {
            state.best_accuracy = last_eval.accuracy;
            state.best_epoch = epoch;
        }
        let record = EpochRecord {
            kind: "epoch".into(),
            epoch,
            step: state.step,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_loss: last_eval.loss,
            test_accuracy: last_eval.accuracy,
            test_top5: (train_data.num_classes > 10).then_some(last_eval.top5),
            lr,
            images_per_second: seen as f64 / step_seconds.max(1e-9),
            seconds: step_seconds,
        };
        log.write(&record)?;
        println!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4}{} | {:.0} img/s, {:.1}s",
            cfg.epochs,
            record.train_loss,
            record.train_accuracy,
            record.test_loss,
            record.test_accuracy,
            record
                .test_top5
                .map(|t| format!(" top5 {t:.4}"))
                .unwrap_or_default(),
            record.images_per_second,
            record.seconds
        );
        checkpoint::save(&out, "last", built, &optimizer, &state)?;
        if improved {
            checkpoint::save(&out, "best", built, &optimizer, &state)?;
        }
        let title = format!("{} {} on {}", mode.name(), cfg.model, cfg.dataset);
        if let Err(e) =
            crate::plot::training_curves(&out.join("curves.png"), &title, &log.epochs()?)
        {
            eprintln!("warning: {e}");
        }
    }

    let summary = Summary {
        model: cfg.model.clone(),
        dataset: cfg.dataset.clone(),
        mode: mode.name().into(),
        placement: if dof.is_some() {
            cfg.placement.clone()
        } else {
            "none".into()
        },
        seed: cfg.seed,
        ring_dof: dof.map_or(0, |d| d.ring_dof),
        total_dof: dof.map_or(built.dense_params, |d| d.total_dof),
        dense_params: built.dense_params,
        dof_ratio: dof.map_or(1.0, |d| d.dof_ratio),
        epochs: state.epoch,
        test_accuracy: last_eval.accuracy,
        test_loss: last_eval.loss,
        best_test_accuracy: state.best_accuracy,
        best_epoch: state.best_epoch,
        test_top5: (train_data.num_classes > 10).then_some(last_eval.top5),
        train_seconds: state.train_seconds,
        images_per_second: images_total as f64 / state.train_seconds.max(1e-9),
        device: rpg_nn::device_name(&device),
        ring_lr_scale,
        out_dir: out.clone(),
    };
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "done: test accuracy {:.2}% (best {:.2}% at epoch {}), {:.0}s of training; results in {}",
        100.0 * summary.test_accuracy,
        100.0 * summary.best_test_accuracy,
        summary.best_epoch,
        summary.train_seconds,
        out.display()
    );
    Ok(summary)
}
