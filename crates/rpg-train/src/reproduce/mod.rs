//! `rpg reproduce`: the paper's claims tested on real data with seeds. On
//! each data set and architecture: a DoF sweep of RPG; at equal DoF, RPG
//! against a narrower dense model, the dense model magnitude-pruned and
//! fine-tuned, hashed and naive placement; the learning curves of RPG,
//! dense and narrow; their accuracy on rotated and noisy test sets; and
//! the RPG models compressed. Writes `results.json` beside the runs, and a
//! report with a verdict per claim plus its plots.
//!
//! Every task's result stays in its own directory (a run's
//! `summary.json`, a compression's report, `shifted.json`), so a stopped
//! job goes on where it stopped and finished tasks are not redone.

mod plots;
mod report;
pub mod stats;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rpg_core::PlacementKind;
use rpg_data::{DatasetKind, Samples, Shift};

use crate::compress::{CompressPlan, compress};
use crate::compress_config::{CompressConfig, RingQuant};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::evaluate::{TestData, evaluate, load_test_data_for};
use crate::events::{Event, Events};
use crate::output::write_json;

/// One architecture's part of the grid.
#[derive(Debug, Clone)]
pub struct Arch {
    /// Zoo model.
    pub model: String,
    /// Width multiplier.
    pub width: f64,
    /// Epochs per run.
    pub epochs: usize,
    /// Training images per epoch (`None`: all).
    pub train_limit: Option<usize>,
    /// DoF ratios of the sweep (below 1; the dense model is the 1).
    pub ratios: Vec<f64>,
    /// Ratios of the equal-DoF comparisons (each also in `ratios`).
    pub baseline_ratios: Vec<f64>,
    /// The ratio whose RPG models are compared for convergence and
    /// robustness, and compressed (in `baseline_ratios`).
    pub focus_ratio: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ReproducePlan {
    /// Data sets, each with its directory (`None`: the usual place).
    pub datasets: Vec<(DatasetKind, Option<PathBuf>)>,
    /// Architectures.
    pub archs: Vec<Arch>,
    /// Seeds per cell.
    pub seeds: Vec<u64>,
    /// Test images (`None`: all).
    pub test_limit: Option<usize>,
    /// The out-of-distribution test sets.
    pub shifts: Vec<Shift>,
    /// Where the runs go.
    pub out: PathBuf,
    /// The report (markdown).
    pub report: PathBuf,
    /// The report's plots.
    pub plots: PathBuf,
    /// The command that regenerates the report, quoted in it.
    pub command: String,
}

impl ReproducePlan {
    /// The full grid: about two hours on two cores (docs/results.md says
    /// why each size was chosen).
    pub fn full(out: PathBuf, report: PathBuf, plots: PathBuf) -> Self {
        Self {
            datasets: vec![
                (DatasetKind::Mnist, None),
                (DatasetKind::FashionMnist, None),
            ],
            archs: vec![
                Arch {
                    model: "lenet5".into(),
                    width: 1.0,
                    epochs: 6,
                    train_limit: None,
                    ratios: vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.25],
                    baseline_ratios: vec![0.02, 0.1],
                    focus_ratio: 0.1,
                },
                Arch {
                    model: "resnet20".into(),
                    width: 0.5,
                    epochs: 3,
                    train_limit: Some(15_000),
                    ratios: vec![0.03, 0.05, 0.1, 0.2, 0.4],
                    baseline_ratios: vec![0.1],
                    focus_ratio: 0.1,
                },
            ],
            seeds: vec![0, 1, 2],
            test_limit: None,
            shifts: vec![
                Shift::Rotate(15.0),
                Shift::Rotate(30.0),
                Shift::Rotate(45.0),
                Shift::Noise {
                    sigma: 0.3,
                    seed: 1,
                },
            ],
            out,
            report,
            plots,
            command: "cargo xtask reproduce".into(),
        }
    }

    /// A reduced grid that runs in minutes, to check the pipeline: every
    /// experiment, two seeds, small data.
    pub fn quick(out: PathBuf, report: PathBuf, plots: PathBuf) -> Self {
        let full = Self::full(out, report, plots);
        Self {
            archs: vec![
                Arch {
                    epochs: 2,
                    train_limit: Some(4_000),
                    ratios: vec![0.01, 0.05, 0.1],
                    baseline_ratios: vec![0.1],
                    ..full.archs[0].clone()
                },
                Arch {
                    width: 0.25,
                    epochs: 2,
                    train_limit: Some(1_000),
                    ratios: vec![0.05, 0.1, 0.3],
                    baseline_ratios: vec![0.1],
                    ..full.archs[1].clone()
                },
            ],
            seeds: vec![0, 1],
            test_limit: Some(1_000),
            shifts: vec![Shift::Rotate(30.0), full.shifts[3]],
            ..full
        }
    }
}

/// One trained (or pruned) model's results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    /// Data set.
    pub dataset: String,
    /// Model.
    pub model: String,
    /// `paper`, `hashed`, `naive`, `dense`, `narrow` or `pruned`.
    pub arm: String,
    /// DoF ratio asked for (1 for dense).
    pub ratio: f64,
    /// Seed.
    pub seed: u64,
    /// Degrees of freedom trained (non-zeros for `pruned`).
    pub dof: u64,
    /// Final test accuracy.
    pub accuracy: f64,
    /// Test accuracy after each epoch (empty for `pruned`).
    pub curve: Vec<f64>,
    /// Accuracy on each shifted test set, in the plan's order (empty
    /// where not measured).
    pub shifted: Vec<f64>,
    /// Seconds of training (0 for `pruned`).
    pub seconds: f64,
}

/// One compressed model's results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompressRow {
    /// Data set.
    pub dataset: String,
    /// Model.
    pub model: String,
    /// Seed.
    pub seed: u64,
    /// What was done.
    pub setting: String,
    /// Artifact bytes.
    pub bytes: u64,
    /// The dense f32 model's bytes.
    pub dense_bytes: u64,
    /// Accuracy before.
    pub accuracy_before: f64,
    /// Accuracy after.
    pub accuracy_after: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Trained models.
    pub runs: Vec<RunRow>,
    /// Compressed models.
    pub compressed: Vec<CompressRow>,
    /// The shifts' names, in `RunRow::shifted`'s order.
    pub shifts: Vec<String>,
}

/// The compressions of each focus model: label and settings.
fn compressions() -> Vec<(&'static str, CompressConfig)> {
    let base = CompressConfig {
        latency_runs: 1,
        ..CompressConfig::default()
    };
    vec![
        (
            "int8 ring",
            CompressConfig {
                quant: RingQuant::Int8,
                ..base.clone()
            },
        ),
        (
            "int4 ring",
            CompressConfig {
                quant: RingQuant::Int4,
                ..base.clone()
            },
        ),
        (
            "50% of the ring pruned, f32",
            CompressConfig {
                quant: RingQuant::None,
                prune_ring: 0.5,
                ..base.clone()
            },
        ),
        (
            "50% of the ring pruned + int8",
            CompressConfig {
                quant: RingQuant::Int8,
                prune_ring: 0.5,
                ..base
            },
        ),
    ]
}

/// Tasks of one (data set, architecture): runs, prunings, shifted
/// evaluations and compressions.
fn tasks_per_arch(plan: &ReproducePlan, arch: &Arch) -> usize {
    let per_seed = 1
        + arch.ratios.len()
        + 4 * arch.baseline_ratios.len()
        + 3 * usize::from(!plan.shifts.is_empty())
        + compressions().len();
    per_seed * plan.seeds.len()
}

/// Counts tasks as they start.
struct Progress<'e> {
    index: usize,
    total: usize,
    events: &'e mut dyn Events,
}

impl Progress<'_> {
    fn next(&mut self, what: &str) {
        self.index += 1;
        self.events.event(Event::Task {
            index: self.index,
            total: self.total,
            what,
        });
    }
}

/// Runs the plan (skipping what is done), then writes `results.json`, the
/// report and its plots.
pub fn reproduce(plan: &ReproducePlan, events: &mut dyn Events) -> Result<Results> {
    // Every data set is there before hours of work start (Fashion-MNIST's
    // error says how to install it).
    for (dataset, dir) in &plan.datasets {
        if let Some(arch) = plan.archs.first() {
            let mut one = base_config(plan, *dataset, dir.as_deref(), arch);
            one.data.test_limit = Some(1);
            crate::evaluate::load_test_data(&one)?;
        }
    }
    std::fs::create_dir_all(&plan.out).map_err(Error::io(&plan.out))?;
    let total = plan.datasets.len()
        * plan
            .archs
            .iter()
            .map(|a| tasks_per_arch(plan, a))
            .sum::<usize>();
    let mut progress = Progress {
        index: 0,
        total,
        events,
    };
    let mut results = Results {
        shifts: plan.shifts.iter().map(|s| s.to_string()).collect(),
        ..Results::default()
    };
    for (dataset, dir) in &plan.datasets {
        for arch in &plan.archs {
            run_arch(
                plan,
                *dataset,
                dir.as_deref(),
                arch,
                &mut results,
                &mut progress,
            )?;
        }
    }
    write_json(&plan.out.join("results.json"), &results)?;
    report::write(plan, &results)?;
    // The raw figures beside the report's plots, so every number in the
    // report can be checked against them.
    write_json(&plan.plots.join("results.json"), &results)?;
    Ok(results)
}

/// The recipe every run of `arch` on `dataset` shares.
fn base_config(
    plan: &ReproducePlan,
    dataset: DatasetKind,
    dir: Option<&Path>,
    arch: &Arch,
) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: arch.model.clone(),
        width: arch.width,
        epochs: arch.epochs,
        // A dense LeNet-5 diverges at the default rate from a cold start
        // (docs/training.md); every arm shares the warm-up.
        warmup_epochs: 1.0,
        ..TrainConfig::default()
    };
    cfg.data.dataset = dataset;
    cfg.data.data_dir = dir.map(Path::to_path_buf);
    cfg.data.train_limit = arch.train_limit;
    cfg.data.test_limit = plan.test_limit;
    cfg
}

fn run_arch(
    plan: &ReproducePlan,
    dataset: DatasetKind,
    dir: Option<&Path>,
    arch: &Arch,
    results: &mut Results,
    progress: &mut Progress<'_>,
) -> Result<()> {
    let base = base_config(plan, dataset, dir, arch);
    let root = plan
        .out
        .join(dataset.to_string())
        .join(format!("{}-w{}", arch.model, arch.width));
    let name = format!("{dataset} {}", arch.model);
    // The data set's shape, for the narrow models' widths.
    let shape = {
        let mut one = base.clone();
        one.data.test_limit = Some(1);
        let test = crate::evaluate::load_test_data(&one)?;
        (test.num_classes, test.channels, test.image_size)
    };
    for &seed in &plan.seeds {
        let row = |arm: &str, ratio: f64, dof: u64, accuracy: f64, curve: Vec<f64>| RunRow {
            dataset: dataset.to_string(),
            model: arch.model.clone(),
            arm: arm.into(),
            ratio,
            seed,
            dof,
            accuracy,
            curve,
            shifted: Vec::new(),
            seconds: 0.0,
        };
        let train = |arm: &str,
                     ratio: f64,
                     cfg: TrainConfig,
                     progress: &mut Progress<'_>|
         -> Result<Option<(RunRow, PathBuf)>> {
            let dir = root.join(format!("{arm}-dof{ratio}-seed{seed}"));
            progress.next(&format!("{name}: {arm} at DoF {ratio}, seed {seed}"));
            let cfg = TrainConfig { seed, ..cfg };
            let Some(summary) = crate::sweep::run_one(cfg, &dir, progress.events)? else {
                return Ok(None);
            };
            let curve = curve(&dir)?;
            let trained = RunRow {
                seconds: summary.train_seconds,
                ..row(arm, ratio, summary.total_dof, summary.test_accuracy, curve)
            };
            Ok(Some((trained, dir)))
        };
        let dense_cfg = TrainConfig {
            dense: true,
            ..base.clone()
        };
        let Some((dense, dense_dir)) = train("dense", 1.0, dense_cfg, progress)? else {
            return Err(Error::Invalid(format!(
                "{name}: the dense model could not be trained"
            )));
        };
        let mut focus: Vec<(RunRow, PathBuf)> = vec![(dense.clone(), dense_dir.clone())];
        results.runs.push(dense.clone());
        let mut paper_dof = Vec::new();
        for &ratio in &arch.ratios {
            let cfg = TrainConfig {
                dof: Some(ratio),
                placement: PlacementKind::Paper,
                ..base.clone()
            };
            if let Some((r, d)) = train("paper", ratio, cfg, progress)? {
                paper_dof.push((ratio, r.dof));
                if ratio == arch.focus_ratio {
                    focus.push((r.clone(), d));
                }
                results.runs.push(r);
            }
        }
        for &ratio in &arch.baseline_ratios {
            for placement in [PlacementKind::Hashed, PlacementKind::Naive] {
                let cfg = TrainConfig {
                    dof: Some(ratio),
                    placement,
                    ..base.clone()
                };
                if let Some((r, _)) = train(
                    rpg_core::names::Named::name(placement),
                    ratio,
                    cfg,
                    progress,
                )? {
                    results.runs.push(r);
                }
            }
            // As many parameters as RPG has DoF at this ratio.
            let target = paper_dof
                .iter()
                .find(|(r, _)| *r == ratio)
                .map(|(_, d)| *d)
                .unwrap_or((ratio * dense.dof as f64).round() as u64);
            let width = crate::sweep::width_for_params(&base, shape.0, shape.1, shape.2, target)?;
            let cfg = TrainConfig {
                dense: true,
                width: base.width * width,
                ..base.clone()
            };
            if let Some((r, d)) = train("narrow", ratio, cfg, progress)? {
                if ratio == arch.focus_ratio {
                    focus.push((r.clone(), d));
                }
                results.runs.push(r);
            }
            progress.next(&format!(
                "{name}: dense pruned to DoF {ratio} and fine-tuned, seed {seed}"
            ));
            let (dof, accuracy) = pruned(&base, &dense_dir, &root, ratio, seed, dense.dof)?;
            results
                .runs
                .push(row("pruned", ratio, dof, accuracy, Vec::new()));
        }
        if !plan.shifts.is_empty() {
            for (r, d) in &focus {
                progress.next(&format!(
                    "{name}: {} at DoF {} on shifted test sets, seed {seed}",
                    r.arm, r.ratio
                ));
                let shifted = shifted(&base, d, &plan.shifts)?;
                if let Some(row) = results.runs.iter_mut().find(|x| x == &r) {
                    row.shifted = shifted;
                }
            }
        }
        if let Some((_, d)) = focus.iter().find(|(r, _)| r.arm == "paper") {
            for (label, config) in compressions() {
                progress.next(&format!(
                    "{name}: RPG at DoF {} compressed: {label}, seed {seed}",
                    arch.focus_ratio
                ));
                let out = root.join(format!(
                    "compressed-dof{}-seed{seed}-{}",
                    arch.focus_ratio,
                    label.replace([' ', '%', ',', '+'], "_")
                ));
                results
                    .compressed
                    .push(compressed(&base, d, &out, label, config, seed)?);
            }
        }
    }
    Ok(())
}

/// Test accuracy after each epoch, from the run's `metrics.jsonl`.
fn curve(dir: &Path) -> Result<Vec<f64>> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<crate::metrics::EpochRecord>(l).ok())
        .filter(|r| r.kind == "epoch")
        .map(|r| r.test_accuracy)
        .collect())
}

/// The dense run magnitude-pruned to `ratio` of its weights and fine-tuned
/// for one epoch (the zeros kept: pruned again after fine-tuning): its
/// non-zeros and accuracy.
fn pruned(
    base: &TrainConfig,
    dense_dir: &Path,
    root: &Path,
    ratio: f64,
    seed: u64,
    dense_dof: u64,
) -> Result<(u64, f64)> {
    let out = root.join(format!("pruned-dof{ratio}-seed{seed}"));
    let config = CompressConfig {
        quant: RingQuant::None,
        prune: 1.0 - ratio,
        finetune_epochs: 1,
        finetune_lr: base.lr * 0.1,
        latency_runs: 1,
        ..CompressConfig::default()
    };
    let report = compress_once(base, dense_dir, &out, config)?;
    // Conv and linear weights keep `ratio` of their values; biases and
    // batch norm stay, so non-zeros are about ratio x the dense count.
    let dof = (ratio * dense_dof as f64).round() as u64;
    Ok((dof, report.accuracy_after))
}

/// Accuracy of the model in `dir` on each shifted test set (cached in
/// `shifted.json`).
fn shifted(base: &TrainConfig, dir: &Path, shifts: &[Shift]) -> Result<Vec<f64>> {
    let cache = dir.join("shifted.json");
    if let Some(values) = read_json::<Vec<f64>>(&cache)?
        && values.len() == shifts.len()
    {
        return Ok(values);
    }
    let model = crate::checkpoint::model_file(dir)?;
    let built = crate::setup::load_any(&model, &candle_core::Device::Cpu)?;
    let test = load_test_data_for(base, &built.config)?;
    let Samples::Memory(images) = &test.samples else {
        return Err(Error::Invalid(format!(
            "{}: shifted test sets need a data set held in memory",
            test.name
        )));
    };
    let mut values = Vec::with_capacity(shifts.len());
    for shift in shifts {
        let moved = rpg_data::Dataset {
            samples: Samples::Memory(shift.apply(images)),
            ..(*test).clone()
        };
        let result = evaluate(
            &built,
            &std::sync::Arc::new(moved),
            base.eval_batch_size,
            base.workers,
        )?;
        values.push(result.accuracy);
    }
    write_json(&cache, &values)?;
    Ok(values)
}

/// One compression of the RPG model in `dir` (cached by its report).
/// (The output lies beside the run: a run's directory takes no other outputs.)
fn compressed(
    base: &TrainConfig,
    dir: &Path,
    out: &Path,
    label: &str,
    config: CompressConfig,
    seed: u64,
) -> Result<CompressRow> {
    let report = compress_once(base, dir, out, config)?;
    Ok(CompressRow {
        dataset: base.data.dataset.to_string(),
        model: base.model.clone(),
        seed,
        setting: label.into(),
        bytes: report.artifact_bytes,
        dense_bytes: report.dense_f32_bytes,
        accuracy_before: report.accuracy_before,
        accuracy_after: report.accuracy_after,
    })
}

/// `rpg compress` of the model in `dir` into `out` with `config`, tested
/// on `base`'s data; its report is reused when `out` has one.
fn compress_once(
    base: &TrainConfig,
    dir: &Path,
    out: &Path,
    config: CompressConfig,
) -> Result<crate::compress::CompressReport> {
    if let Some(report) = read_json(&out.join("compress_report.json"))? {
        return Ok(report);
    }
    let plan = CompressPlan {
        checkpoint: dir.to_path_buf(),
        out: out.to_path_buf(),
        config,
        data: TestData {
            dataset: Some(base.data.dataset),
            data_dir: base.data.data_dir.clone(),
            test_limit: base.data.test_limit,
        },
    };
    compress(&plan, &mut crate::events::Silent)
}

/// A JSON file, or `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}
