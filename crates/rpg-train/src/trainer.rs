//! The training loop. A run is prepared (fresh, resumed from its last
//! checkpoint, or over a model built elsewhere), then trained epoch by
//! epoch; every epoch ends with an evaluation, checkpoints and the plot.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::distributed::{Collective, Solo, check_same, mean_over_ranks};
use crate::error::{Error, Result};
use crate::evaluate::{
    EvalResult, check_fits, evaluate, evaluate_across, load_data, normalization, to_tensors,
};
use crate::events::{Event, Events, Notice, RunStarted, Running};
use crate::lock::RunLock;
use crate::loss::correct_count;
use crate::metrics::{EpochRecord, MetricsLog, StepRecord};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::output::{write_atomic, write_json};
use crate::qat::FakeQuant;
use crate::schedule::Schedule;
use crate::setup::{Built, build_for_training, build_from_file, model_config};
use crate::step::{StepOutcome, StepSettings, TrainStep};
use crate::summary::Summary;
use rpg_data::{BatchLoader, Dataset, LoaderOptions, TestSetId};
use rpg_nn::Mode;

/// Trains as configured (or resumes `resume`), writing everything into the
/// output directory and reporting to `events`, and returns the summary.
pub fn train(cfg: TrainConfig, resume: Option<&Path>, events: &mut dyn Events) -> Result<Summary> {
    train_until(cfg, resume, None, events)
}

/// [`train`], stopping (with a checkpoint, as if interrupted) once
/// `stop_after_epochs` more epochs are done: for time-sliced jobs, and to
/// test that a resumed run equals an uninterrupted one.
pub fn train_until(
    cfg: TrainConfig,
    resume: Option<&Path>,
    stop_after_epochs: Option<usize>,
    events: &mut dyn Events,
) -> Result<Summary> {
    train_across(cfg, resume, stop_after_epochs, &Solo, events)
}

/// [`train_until`] as one rank of a data-parallel run over `comm`: each rank
/// trains on its shard of every batch (`batch_size` is per process), the
/// gradients are averaged, and rank 0 alone writes the run's files. Every
/// rank checks first that all train the same configuration on the same
/// data.
pub fn train_across(
    cfg: TrainConfig,
    resume: Option<&Path>,
    stop_after_epochs: Option<usize>,
    comm: &dyn Collective,
    events: &mut dyn Events,
) -> Result<Summary> {
    Run::prepare(cfg, resume, None, comm, events)?.train(stop_after_epochs)
}

/// Trains an already built model further with `cfg`'s recipe and data,
/// e.g. after structured pruning, or under `fake_quant` (quantization-aware
/// training); the model's parameters are updated in place.
pub fn finetune(
    cfg: TrainConfig,
    built: &Built,
    fake_quant: Option<FakeQuant>,
    events: &mut dyn Events,
) -> Result<Summary> {
    let mut run = Run::prepare(cfg, None, Some(built), &Solo, events)?;
    run.fake_quant = fake_quant;
    run.train(None)
}

/// The model a run trains: built by the run, or lent to it.
enum RunModel<'a> {
    Owned(Box<Built>),
    Lent(&'a Built),
}

impl Deref for RunModel<'_> {
    type Target = Built;
    fn deref(&self) -> &Built {
        match self {
            RunModel::Owned(built) => built,
            RunModel::Lent(built) => built,
        }
    }
}

/// The error of a run whose loss stopped being finite at `step` (on a GPU:
/// by `step`, the first read after it).
fn diverged(loss: f64, epoch: usize, step: u64, lr: f64, checkpointed: bool, out: &Path) -> Error {
    Error::Diverged {
        loss,
        epoch,
        step,
        lr,
        last_good: checkpointed.then(|| checkpoint::checkpoint_dir(out, "last")),
    }
}

/// Sums over one epoch's training steps. The loss and correct counts are
/// summed on the device and read (a synchronisation) only when the
/// progress display or the metrics need them.
#[derive(Debug, Default)]
struct EpochTotals {
    /// Sum of batch loss x batch size, as of the last [`Self::read`].
    loss_sum: f64,
    /// Correct top-1 predictions, as of the last read.
    correct: usize,
    /// The running (loss x size, correct) sums on the device.
    on_device: Option<(Tensor, Tensor)>,
    seen: usize,
    seconds: f64,
    /// Seconds spent exchanging gradients with the other ranks.
    exchange_seconds: f64,
    lr: f64,
}

impl EpochTotals {
    /// Adds a step's loss and correct count without reading them.
    fn add(&mut self, loss: &Tensor, correct: &Tensor, size: usize) -> Result<()> {
        let dtype = crate::optim::accumulation_dtype(loss.device());
        let weighted = (loss.to_dtype(dtype)? * size as f64)?;
        let correct = correct.to_dtype(dtype)?;
        self.on_device = Some(match self.on_device.take() {
            None => (weighted, correct),
            Some((l, c)) => ((l + weighted)?, (c + correct)?),
        });
        self.seen += size;
        Ok(())
    }

    /// Brings the device sums to `loss_sum` and `correct`.
    fn read(&mut self) -> Result<()> {
        if let Some((loss, correct)) = &self.on_device {
            self.loss_sum = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            self.correct = correct.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize;
        }
        Ok(())
    }
}

/// A training run: its config, data, model, optimizer and progress.
struct Run<'a> {
    cfg: TrainConfig,
    out: PathBuf,
    device: Device,
    train_data: Arc<Dataset>,
    test_data: Arc<Dataset>,
    built: RunModel<'a>,
    optimizer: Optimizer,
    schedule: Schedule,
    settings: StepSettings,
    state: TrainerState,
    /// The metrics file (rank 0 only).
    log: Option<MetricsLog>,
    last_eval: EvalResult,
    images_total: usize,
    /// A checkpoint of this run exists (a divergence can point to it).
    checkpointed: bool,
    /// A resumed run's config.toml, written with its first checkpoint: a
    /// resume that fails before one (diverging with the settings it was
    /// given) leaves the run's config as it was.
    pending_config: Option<String>,
    /// The images this run tests on.
    test_set: TestSetId,
    /// What `--init-from` did (the file is the config's).
    warm_start: Option<WarmStart>,
    /// Held for the run's whole life.
    _lock: Option<RunLock>,
    /// Quantization-aware training's quantization, if any.
    fake_quant: Option<FakeQuant>,
    /// The processes of the run (one, or the ranks of a data-parallel run).
    comm: &'a dyn Collective,
    /// Where the run reports.
    events: &'a mut dyn Events,
}

/// The outcome of a warm start (`--init-from`).
#[derive(Debug, Clone, Copy)]
struct WarmStart {
    /// Relative error of the ring's least-squares fit.
    projection_error: f64,
    /// Test accuracy before any training.
    projected_accuracy: f64,
}

/// Sets batch norm's running statistics (every `running_mean` and
/// `running_var`) to their mean over the ranks.
fn average_buffers(comm: &dyn Collective, built: &Built) -> Result<()> {
    if comm.world() <= 1 {
        return Ok(());
    }
    let stats: Vec<(String, candle_core::Var)> = built
        .store
        .persistent()
        .into_iter()
        .filter(|(name, _)| name.ends_with("running_mean") || name.ends_with("running_var"))
        .collect();
    let tensors: Vec<&Tensor> = stats.iter().map(|(_, var)| var.as_tensor()).collect();
    for ((_, var), mean) in stats
        .iter()
        .zip(mean_over_ranks::<Error>(comm, &tensors, &mut [])?)
    {
        var.set(&mean)?;
    }
    Ok(())
}

/// Refuses, before the run directory exists, a model that cannot take the
/// data's images (too small for its downsampling, say): one image of zeros
/// through the model in evaluation mode, which changes no state.
fn check_takes_input(built: &Built, data: &Dataset) -> Result<()> {
    let side = data.image_size;
    let x = candle_core::Tensor::zeros(
        (1, data.channels, side, side),
        DType::F32,
        built.store.device(),
    )?;
    match built.model.forward_t(&x, false) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::invalid_setting(
            "image_size",
            side,
            format!(
                "{} cannot take {side}x{side} images ({e}); give a larger size",
                built.config.name
            ),
        )),
    }
}

/// Refuses a resumed checkpoint whose model is not the one the run's
/// config.toml trains (a checkpoint copied from another run).
fn check_belongs(cfg: &TrainConfig, path: &Path, built: &Built) -> Result<()> {
    let store = &built.store;
    let mode = if cfg.dense { Mode::Dense } else { Mode::Rpg };
    let what = if built.config.name != cfg.model {
        format!(
            "it holds a `{}` model, the run trains `{}`",
            built.config.name, cfg.model
        )
    } else if store.mode() != mode {
        format!(
            "it holds a {} model, the run trains a {} one",
            store.mode().name(),
            mode.name()
        )
    } else if store.seed() != cfg.seed {
        format!("its seed is {}, the run's {}", store.seed(), cfg.seed)
    } else if let Some(p) = store
        .placement()
        .filter(|p| p.spec().placement != cfg.placement)
    {
        format!(
            "its placement is {}, the run's {}",
            p.spec().placement,
            cfg.placement
        )
    } else {
        return Ok(());
    };
    Err(Error::ForeignCheckpoint {
        out: cfg.out_dir(),
        checkpoint: path.to_path_buf(),
        what,
    })
}

/// Fits `built`'s ring (and copies its unshared tensors) to the dense model
/// in `file`, and tests the result before any training.
fn warm_start_from(
    file: &Path,
    built: &Built,
    test_data: &Arc<Dataset>,
    cfg: &TrainConfig,
    events: &mut dyn Events,
) -> Result<WarmStart> {
    // Read only by a fresh run: a resumed one never needs the file again.
    let refused = |why: String| Error::invalid_setting("init_from", file.display(), why);
    let bytes = std::fs::read(file)
        .map_err(|e| refused(format!("{e} (give a dense model written by `rpg export`)")))?;
    let meta = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| {
            refused(format!(
                "not a safetensors file ({e}): give a dense model written by `rpg export` \
                 in its default format (an ONNX export cannot be read back)"
            ))
        })?
        .1
        .metadata()
        .clone()
        .unwrap_or_default();
    if meta.contains_key("rpg.format") {
        return Err(refused(format!(
            "an rpg model file (a checkpoint), not a dense export: write one with \
             `rpg export --checkpoint {} --out dense.safetensors` and give that",
            file.display()
        )));
    }
    if meta.get(crate::setup::EXPORT_KEY).map(String::as_str)
        == Some(crate::setup::EXPORT_FOLDED_BN)
    {
        return Err(refused(
            "an export with BatchNorms folded into the convs: export again without folding".into(),
        ));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| refused(e.to_string()))?;
    let error = built
        .store
        .project_dense(&tensors.into_iter().collect())
        .map_err(|e| refused(e.to_string()))?;
    let accuracy = evaluate(built, test_data, cfg.eval_batch_size, cfg.workers)?.accuracy;
    events.event(Event::WarmStarted {
        file,
        projection_error: error,
        accuracy,
    });
    Ok(WarmStart {
        projection_error: error,
        projected_accuracy: accuracy,
    })
}

impl<'a> Run<'a> {
    /// Validates the config, creates (or reopens) the output directory,
    /// loads the data and builds (or restores) the model and optimizer.
    fn prepare(
        mut cfg: TrainConfig,
        resume: Option<&Path>,
        prebuilt: Option<&'a Built>,
        comm: &'a dyn Collective,
        events: &'a mut dyn Events,
    ) -> Result<Self> {
        // Rank 0 writes the run; the other ranks of a data-parallel run only
        // read it (a resume reads the shared checkpoint).
        let writes = comm.rank() == 0;
        let resume_state = match resume {
            Some(dir) => {
                let last = checkpoint::find_last(dir).ok_or_else(|| Error::NothingToResume {
                    out: dir.to_path_buf(),
                })?;
                let state = checkpoint::read_state(&last)?;
                Some((last, state))
            }
            None => None,
        };
        let ring_size = cfg.validate()?;
        // Before anything is written: a bad --device leaves no run directory.
        let device = rpg_nn::parse_device(&cfg.device)?;
        rpg_kernels::set_precision(cfg.precision);
        let out = cfg.out_dir();
        if resume.is_none() && checkpoint::find_last(&out).is_some() {
            return Err(Error::RunExists { out });
        }
        if prebuilt.is_none() {
            // A run is not started inside another run's directory.
            crate::output::check_destination("out", &out, Some(&out), false)?;
        }
        cfg.out = Some(out.clone());
        let config_toml = cfg.to_toml()?;
        // Everything that can be checked is checked before the run
        // directory is touched: a refused run leaves nothing behind.
        let (train_data, test_data) = load_data(&cfg)?;
        let mut warm_start = None;
        let built = match (prebuilt, &resume_state) {
            (Some(built), _) => RunModel::Lent(built),
            (None, None) => {
                let mut mc = model_config(
                    &cfg,
                    train_data.num_classes,
                    train_data.channels,
                    train_data.image_size,
                )?;
                // Recorded in the model file: evaluation normalises alike.
                mc.normalize = Some(normalization(&train_data));
                mc.class_names.clone_from(&train_data.class_names);
                let built = build_for_training(&cfg, ring_size, mc, &device)?;
                if let Some(file) = &cfg.init_from {
                    warm_start = Some(warm_start_from(file, &built, &test_data, &cfg, events)?);
                }
                RunModel::Owned(Box::new(built))
            }
            (None, Some((dir, _))) => {
                let path = dir.join(checkpoint::MODEL_FILE);
                let built = build_from_file(&rpg_nn::ModelFile::read(&path)?, &device)?;
                // A checkpoint of another model copied into the run.
                check_belongs(&cfg, &path, &built)?;
                check_fits(&path, &built, &train_data)?;
                RunModel::Owned(Box::new(built))
            }
        };
        check_takes_input(&built, &train_data)?;
        if let Some(p) = built.store.placement() {
            for notice in p.notices() {
                events.event(Event::Notice(Notice::Placement(notice)));
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
            test_set: None,
            best_test_set: None,
        };
        if let Some((dir, saved)) = &resume_state {
            let path = dir.join(checkpoint::OPTIMIZER_FILE);
            optimizer.load(&path, &device)?;
            let params: Vec<(String, Vec<usize>)> = built
                .store
                .trainable()
                .into_iter()
                .map(|(name, var)| (name, var.dims().to_vec()))
                .collect();
            optimizer.check_fits(&path, &params)?;
            state = saved.clone();
            if state.epoch >= cfg.epochs {
                return Err(Error::Finished {
                    out,
                    done: state.epoch,
                    epochs: cfg.epochs,
                });
            }
        }
        // Every rank trains the same thing: the configuration (seed, spec,
        // recipe, data) and the data's size, checked before anything is
        // written.
        let identity = format!(
            "{config_toml}\ntrain images {}, test images {}, model {:?}",
            train_data.len(),
            test_data.len(),
            built.config.to_json()
        );
        check_same(comm, "configuration or data", identity.as_bytes())?;
        let lock = if writes {
            std::fs::create_dir_all(&out).map_err(Error::io(&out))?;
            Some(RunLock::acquire(&out)?)
        } else {
            None
        };
        // Checked again under the lock: another run may have finished here.
        if writes && resume.is_none() && checkpoint::find_last(&out).is_some() {
            return Err(Error::RunExists { out });
        }
        if resume.is_some() {
            events.event(Event::Resumed {
                out: &out,
                epoch: state.epoch,
            });
        }
        let test_set = test_data.id();
        if let Some(best) = state.best_test_set.as_ref().filter(|b| **b != test_set) {
            events.event(Event::Notice(Notice::BestOnOtherTestSet {
                best,
                this: &test_set,
            }));
        }
        let pending_config = if resume.is_some() || !writes {
            Some(config_toml).filter(|_| writes)
        } else {
            write_atomic(&out.join("config.toml"), config_toml)?;
            None
        };
        let log = if writes {
            Some(MetricsLog::open(
                &out,
                resume_state.as_ref().map(|(_, s)| s.epoch),
            )?)
        } else {
            None
        };
        let last_eval = EvalResult {
            loss: state.test_loss,
            accuracy: state.test_accuracy,
            top5: 0.0,
            samples: 0,
        };
        let settings = StepSettings {
            label_smoothing: cfg.label_smoothing,
            clip_grad: cfg.clip_grad,
            ring_lr_scale,
            guard_each_step: device.is_cpu(),
        };
        Ok(Self {
            checkpointed: resume_state.is_some(),
            pending_config,
            cfg,
            out,
            device,
            train_data,
            test_data,
            built,
            optimizer,
            schedule,
            settings,
            state,
            log,
            last_eval,
            images_total: 0,
            test_set,
            warm_start,
            _lock: lock,
            fake_quant: None,
            comm,
            events,
        })
    }

    /// Trains the remaining epochs (at most `stop_after_epochs` of them)
    /// and writes the summary.
    fn train(mut self, stop_after_epochs: Option<usize>) -> Result<Summary> {
        self.announce();
        let epochs = self.cfg.epochs;
        let last_epoch = stop_after_epochs.map_or(epochs, |n| (self.state.epoch + n).min(epochs));
        for epoch in self.state.epoch + 1..=last_epoch {
            let totals = self.train_epoch(epoch)?;
            self.end_epoch(epoch, &totals)?;
        }
        self.finish()
    }

    fn announce(&mut self) {
        let started = RunStarted {
            mode: self.built.store.mode().name(),
            model: self.cfg.model.clone(),
            dataset: self.cfg.data.dataset.to_string(),
            device: rpg_nn::device_name(&self.device),
            dense_params: self.built.dense_params,
            dof: self.built.store.dof(),
            ring_lr_scale: self.settings.ring_lr_scale,
        };
        self.events.event(Event::Started(&started));
    }

    /// One pass over the training data.
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochTotals> {
        let cfg = &self.cfg;
        let loader = BatchLoader::new(
            self.train_data.clone(),
            LoaderOptions {
                batch_size: cfg.batch_size,
                shuffle_seed: Some(self.state.data_seed),
                epoch: self.state.data_epoch,
                augment: true,
                drop_last: false,
                workers: cfg.workers,
                prefetch: 4,
                shard: rpg_data::Shard::even(self.comm.rank(), self.comm.world()),
            },
        );
        // This rank's batches: in a data-parallel run each rank takes a share.
        let steps_per_epoch = loader.len().max(1);
        let events = &mut *self.events;
        events.event(Event::EpochStarted {
            epoch,
            epochs: cfg.epochs,
            steps: loader.len(),
        });
        let mut totals = EpochTotals {
            lr: self.schedule.lr((epoch - 1) as f64),
            ..EpochTotals::default()
        };
        // Reading the sums synchronises the device: where each step is
        // guarded (the CPU, which has nothing to wait for) every step,
        // elsewhere only as often as the log needs.
        let read_every = if self.settings.guard_each_step {
            1
        } else {
            cfg.log_every as u64
        };
        let (checkpointed, out) = (self.checkpointed, self.out.clone());
        let stop = |loss, step| diverged(loss, epoch, step, cfg.lr, checkpointed, &out);
        let mut step = TrainStep::new(&self.built, &mut self.optimizer, self.settings)
            .across(self.comm)
            .quantized(self.fake_quant.as_ref());
        // Images/s count wall time: on a GPU the step's own timings are
        // host time, which excludes the waits at the deferred reads.
        let started = Instant::now();
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            let fractional = (epoch - 1) as f64 + i as f64 / steps_per_epoch as f64;
            let lr = self.schedule.lr(fractional);
            totals.lr = lr;
            let (x, y) = to_tensors(&batch, &self.device)?;
            let logs = (self.state.step + 1).is_multiple_of(cfg.log_every as u64);
            let output = match step.run(&x, &y, lr, logs)? {
                StepOutcome::Taken(output) => output,
                StepOutcome::Diverged { loss } => {
                    events.event(Event::EpochAbandoned);
                    return Err(stop(loss, self.state.step + 1));
                }
            };
            self.state.step += 1;
            totals.exchange_seconds += output.timings.exchange.as_secs_f64();
            let correct = correct_count(&output.logits, &y)?;
            totals.add(&output.loss, &correct, batch.size)?;
            let mut running = None;
            if logs || self.state.step.is_multiple_of(read_every) {
                totals.read()?;
                totals.seconds = started.elapsed().as_secs_f64();
                if !totals.loss_sum.is_finite() {
                    events.event(Event::EpochAbandoned);
                    return Err(stop(totals.loss_sum, self.state.step));
                }
                running = Some(Running {
                    epoch,
                    epochs: cfg.epochs,
                    step: self.state.step,
                    loss: totals.loss_sum / totals.seen as f64,
                    accuracy: totals.correct as f64 / totals.seen as f64,
                    lr,
                    images_per_second: totals.seen as f64 / totals.seconds.max(1e-9),
                });
            }
            events.event(Event::Step {
                running: running.as_ref(),
            });
            if let (true, Some(running)) = (logs, &running) {
                let loss = f64::from(output.loss.to_scalar::<f32>()?);
                let top1 = correct.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(log) = &mut self.log {
                    log.write(&StepRecord {
                        kind: "step".into(),
                        epoch,
                        step: self.state.step,
                        loss,
                        accuracy: top1 / batch.size as f64,
                        lr,
                        grad_norm: output.grad_norm.unwrap_or(f64::NAN),
                    })?;
                }
                events.event(Event::StepLogged { running, loss });
            }
        }
        totals.read()?;
        totals.seconds = started.elapsed().as_secs_f64();
        if self.comm.world() > 1 {
            // The epoch's figures over every rank's share.
            let mut sums = [totals.loss_sum, totals.correct as f64, totals.seen as f64];
            self.comm.sum_f64(&mut sums)?;
            totals.loss_sum = sums[0];
            (totals.correct, totals.seen) = (sums[1] as usize, sums[2] as usize);
        }
        if !totals.loss_sum.is_finite() {
            events.event(Event::EpochAbandoned);
            return Err(stop(totals.loss_sum, self.state.step));
        }
        Ok(totals)
    }

    /// Evaluation, the epoch's metrics line, checkpoints and the plot.
    fn end_epoch(&mut self, epoch: usize, totals: &EpochTotals) -> Result<()> {
        self.state.train_seconds += totals.seconds;
        self.images_total += totals.seen;
        self.state.data_epoch += 1;
        // Each rank's batch norm saw its own shard: evaluate and save their
        // mean statistics.
        average_buffers(self.comm, &self.built)?;
        let eval = evaluate_across(
            &self.built,
            &self.test_data,
            self.cfg.eval_batch_size,
            self.cfg.workers,
            self.comm,
        )?;
        self.last_eval = eval;
        let state = &mut self.state;
        state.epoch = epoch;
        state.test_accuracy = eval.accuracy;
        state.test_loss = eval.loss;
        state.test_set = Some(self.test_set.clone());
        // A best measured on other images is not compared with (a subset
        // can score 100%); checkpoints from before test sets were recorded
        // have none, and compare as they always did.
        let comparable = state
            .best_test_set
            .as_ref()
            .is_none_or(|best| *best == self.test_set);
        let improved = state.best_epoch == 0 || (comparable && eval.accuracy > state.best_accuracy);
        if improved {
            state.best_accuracy = eval.accuracy;
            state.best_epoch = epoch;
            state.best_test_set = Some(self.test_set.clone());
        }
        let record = EpochRecord {
            kind: "epoch".into(),
            epoch,
            step: state.step,
            train_loss: totals.loss_sum / totals.seen.max(1) as f64,
            train_accuracy: totals.correct as f64 / totals.seen.max(1) as f64,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            test_top5: (self.train_data.num_classes > 10).then_some(eval.top5),
            lr: totals.lr,
            images_per_second: totals.seen as f64 / totals.seconds.max(1e-9),
            seconds: totals.seconds,
            exchange_seconds: (self.comm.world() > 1).then_some(totals.exchange_seconds),
        };
        if let Some(log) = &mut self.log {
            log.write(&record)?;
            log.sync()?;
        }
        self.events.event(Event::EpochEnded {
            record: &record,
            epochs: self.cfg.epochs,
        });
        if self.log.is_none() {
            // Not rank 0: nothing to write.
            return Ok(());
        }
        checkpoint::save(&self.out, "last", &self.built, &self.optimizer, &self.state)?;
        if improved {
            checkpoint::save(&self.out, "best", &self.built, &self.optimizer, &self.state)?;
        }
        self.checkpointed = true;
        if let Some(config) = self.pending_config.take() {
            write_atomic(&self.out.join("config.toml"), config)?;
        }
        let title = format!(
            "{} {} on {}",
            self.built.store.mode().name(),
            self.cfg.model,
            self.cfg.data.dataset
        );
        // Drawn beside, then renamed: a failed plot never truncates the last
        // good one.
        let curves = self.out.join("curves.png");
        let plotted = rpg_nn::durable::PendingFile::beside(&curves)
            .map_err(Error::io(&curves))
            .and_then(|drawn| {
                let epochs = self.log.as_ref().map(MetricsLog::epochs).transpose()?;
                crate::plot::training_curves(drawn.path(), &title, &epochs.unwrap_or_default())?;
                drawn.install().map_err(Error::io(&curves))
            });
        if let Err(e) = plotted {
            self.events.event(Event::Notice(Notice::PlotFailed(&e)));
        }
        Ok(())
    }

    /// Writes and returns the summary.
    fn finish(self) -> Result<Summary> {
        let (cfg, built, state, eval) = (&self.cfg, &self.built, &self.state, &self.last_eval);
        let dof = built.store.dof();
        let summary = Summary {
            model: cfg.model.clone(),
            dataset: cfg.data.dataset.to_string(),
            mode: built.store.mode().name().into(),
            placement: if dof.is_some() {
                cfg.placement.to_string()
            } else {
                "none".into()
            },
            seed: cfg.seed,
            ring_dof: dof.map_or(0, |d| d.ring_dof),
            total_dof: dof.map_or(built.dense_params, |d| d.total_dof),
            dense_params: built.dense_params,
            dof_ratio: dof.map_or(1.0, |d| d.dof_ratio),
            epochs: state.epoch,
            test_accuracy: eval.accuracy,
            test_loss: eval.loss,
            test_images: eval.samples,
            best_test_accuracy: state.best_accuracy,
            best_test_images: state.best_test_set.as_ref().map(|s| s.images),
            best_epoch: state.best_epoch,
            test_top5: (self.train_data.num_classes > 10).then_some(eval.top5),
            train_seconds: state.train_seconds,
            images_per_second: self.images_total as f64 / state.train_seconds.max(1e-9),
            device: rpg_nn::device_name(&self.device),
            ring_lr_scale: self.settings.ring_lr_scale,
            out_dir: self.out.clone(),
            init_from: self.warm_start.and(cfg.init_from.clone()),
            projection_error: self.warm_start.map(|w| w.projection_error),
            projected_accuracy: self.warm_start.map(|w| w.projected_accuracy),
        };
        if self.log.is_some() {
            write_json(&self.out.join("summary.json"), &summary)?;
        }
        self.events.event(Event::Finished(&summary));
        Ok(summary)
    }
}
