//! The `rpg` command line's arguments. Training options are declared once,
//! in [`TrainOverrides`]: each flag is a key of `TrainConfig` (dashes
//! become underscores), merged into the config by `TrainConfig::merged`, and
//! its default in `--help` is read from `TrainConfig::default()`.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rpg_compress::PruneScope;
use rpg_core::names::{Named, parse_named};
use rpg_core::{PlacementKind, ScaleRule};
use rpg_data::DatasetKind;
use rpg_kernels::{KernelBackend, Precision};
use rpg_train::compress_config::{RingQuant, ScaleDtype, UnsharedQuant};
use rpg_train::config::{DEFAULT_DOF, RUN_DEFINING_KEYS};
use rpg_train::optim::OptimizerKind;
use rpg_train::schedule::ScheduleKind;
use rpg_train::{CompressConfig, TrainConfig};
use serde::Serialize;

/// Recurrent Parameter Generators: train compact networks whose weights are
/// generated from one small learnable ring.
#[derive(Debug, Parser)]
#[command(name = "rpg", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// CPU kernels for convolution and batch norm: native (this project's,
    /// several times faster) or candle (Candle's stock ops, for comparison).
    #[arg(long, global = true, default_value_t = KernelBackend::Native, value_parser = names_parser(KernelBackend::ALL.map(KernelBackend::name), str::parse::<KernelBackend>))]
    pub kernels: KernelBackend,
}

impl Cli {
    /// Parses the process's arguments, with the training defaults shown in
    /// `--help`.
    pub fn try_parse_with_defaults() -> Result<Self, clap::Error> {
        Self::from_arg_matches(&Self::command_with_defaults().try_get_matches()?)
    }

    /// The command, with `TrainConfig::default()`'s values in the help of
    /// `train` and `sweep`.
    pub fn command_with_defaults() -> clap::Command {
        Self::command()
            .mut_subcommand("train", with_config_defaults)
            .mut_subcommand("sweep", with_config_defaults)
    }
}

/// A parser that accepts `names` (listed in `--help`) and turns them into
/// values with `parse`.
fn names_parser<T, E>(
    names: impl IntoIterator<Item = &'static str>,
    parse: fn(&str) -> Result<T, E>,
) -> impl TypedValueParser<Value = T>
where
    T: Clone + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(move |name| parse(&name))
}

/// The parser of a [`Named`] enum's flag.
fn named<T: Named + Send + Sync>() -> impl TypedValueParser<Value = T> {
    names_parser(T::ALL.iter().map(|v| v.name()), parse_named::<T>)
}

/// Appends `[default: V]` to the help of every flag that is a key of
/// `TrainConfig`, `V` being `TrainConfig::default()`'s value: the defaults
/// are written once, in the code.
fn with_config_defaults(command: clap::Command) -> clap::Command {
    let defaults = toml::Table::try_from(TrainConfig::default()).unwrap_or_default();
    let ids: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .map(|a| a.get_id().to_string())
        .collect();
    ids.into_iter().fold(command, |command, id| {
        let default = match (id.as_str(), defaults.get(&id)) {
            ("dof", _) => DEFAULT_DOF.to_string(),
            (_, Some(toml::Value::String(s))) => s.clone(),
            (_, Some(toml::Value::Array(a))) if a.is_empty() => return command,
            (_, Some(v)) => v.to_string(),
            (_, None) => return command,
        };
        command.mut_arg(&id, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {default}]"))
        })
    })
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an RPG (or dense) model. With no flags: LeNet-5 at 10% DoF on the bundled MNIST.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on the test split of a data set.
    Eval(EvalArgs),
    /// List the model zoo: parameters, default shared fraction, input size.
    Models(ModelsArgs),
    /// Prune and quantize a trained model into a small artifact that `eval` loads; writes a report.
    Compress(CompressArgs),
    /// Write the dense model (all weights materialised) as safetensors with torchvision/timm names.
    Export(ExportArgs),
    /// Training and inference speed, dense vs RPG (10% DoF), on synthetic input; peak memory per case.
    Bench(BenchArgs),
    /// Train one architecture at a list of DoF ratios (and its dense twin): sweep.csv, fit.json, sweep.png.
    Sweep(Box<SweepArgs>),
    /// Check a device: one training step of every zoo model, dense and RPG, against the CPU reference.
    Selftest(SelftestArgs),
    /// Test the paper's claims on MNIST and Fashion-MNIST with seeds: DoF sweep, equal-DoF baselines, convergence, shifted test sets, compression; writes a report with verdicts.
    Reproduce(ReproduceArgs),
    /// Classify images (PNG/JPEG files, folders, IDX files) with a trained model: top classes and probabilities.
    Predict(PredictArgs),
}

/// `rpg predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model file, checkpoint or run directory, compressed artifact, or dense export
    /// (`--model` is the old name of this flag).
    #[arg(long, alias = "model", value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Images: PNG/JPEG files, folders of them (searched recursively), or IDX image files.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON instead of one line per image.
    #[arg(long)]
    pub json: bool,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `rpg selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The device to check: cuda, cuda:N, metal, or cpu (which checks RPG on the device tables).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Only these models, comma-separated. [default: every zoo model]
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// Largest difference allowed, relative to the reference's largest value (GPU convolutions and reductions sum in other orders). [default: 1e-3 with --precision f32, 2e-2 with tf32, whose products keep 10 mantissa bits]
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// GPU convolution arithmetic under test: tf32 (the training default) or f32.
    #[arg(long, default_value = "tf32", value_parser = str::parse::<Precision>)]
    pub precision: Precision,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The training options as flags: each one a key of `TrainConfig`, set only
/// when given (what is not given is not serialised, so it overrides
/// nothing). Shared by `train` and `sweep`.
#[derive(Debug, Args, Serialize)]
pub struct TrainOverrides {
    /// Model from the zoo (see `rpg models`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// mnist, fashion-mnist, kmnist, cifar10, cifar100 or folder.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Where the data set's files are. [default: datasets/<dataset>]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Degrees of freedom as a fraction of the dense parameter count, in (0, 1].
    #[arg(long, value_name = "RATIO", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dof: Option<f64>,
    /// Ring length, instead of --dof.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<usize>,
    /// Placement: paper (even sampling, shuffle, signs), hashed (HashedNets), naive (ring prefix), sequential.
    #[arg(long, value_parser = named::<PlacementKind>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementKind>,
    /// Train the ordinary dense model instead (no ring).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub dense: bool,
    /// Per-layer scale: largest_fan_in (each layer starts at the Kaiming fan-in std of its dense twin), largest_fan_out (the paper), unit, or a reference fan-out (4608 = the reference code).
    #[arg(long, value_name = "RULE", value_parser = str::parse::<ScaleRule>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_text"
    )]
    pub ring_scale: Option<ScaleRule>,
    /// One ring per glob pattern (repeatable), e.g. --local-rings 'layer1.*' --local-rings 'layer2.*'.
    #[arg(long, value_name = "GLOB")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_rings: Vec<String>,
    /// Also share parameters matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub share: Vec<String>,
    /// Never share parameters matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unshare: Vec<String>,
    /// Channel multiplier of the architecture.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<f64>,
    /// Input side for --dataset folder.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Input normalisation MEAN,STD for every channel (or all means, then all stds), e.g. for an MNIST variant; recorded in the model file. [default: the data set's own]
    #[arg(
        long,
        value_name = "MEAN,STD",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Vec<f32>>,
    /// Epochs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Optimizer.
    #[arg(long, value_parser = named::<OptimizerKind>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerKind>,
    /// SGD momentum.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub nesterov: bool,
    /// Learning-rate schedule (exp = the paper's lr0 * 0.1^(epoch/45)).
    #[arg(long, value_parser = named::<ScheduleKind>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleKind>,
    /// Linear warm-up epochs (without it, training at lr 0.05 from He init can collapse: one RPG LeNet-5 seed of three did; dense lost about 2 points; docs/training.md).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wd: Option<f64>,
    /// Do not apply weight decay to the ring (the paper does).
    #[arg(long = "no-ring-wd", action = ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    pub ring_wd: bool,
    /// Use the base learning rate for the ring as is, without the placement-derived scale (for ablations).
    #[arg(long = "no-ring-lr-scaling", action = ArgAction::SetFalse)]
    #[serde(skip_serializing_if = "is_true")]
    pub ring_lr_scaling: bool,
    /// Label smoothing in [0, 1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long, value_name = "NORM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
    /// Seed of placement, initialisation and data order.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// cpu, cuda, cuda:N or metal (cuda/metal need a build with --features cuda/metal).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// GPU convolution arithmetic: tf32 (tensor cores, as PyTorch allows for convolutions) or f32 (strict); recorded in config.toml. The CPU always computes in f32.
    #[arg(long, value_name = "P", value_parser = str::parse::<Precision>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_text"
    )]
    pub precision: Option<Precision>,
    /// Warm start from a dense model of the same architecture (an `rpg export` file): the ring is fitted to its weights by least squares, its other tensors copied.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Data loader threads.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Write a step line to metrics.jsonl every N steps.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
}

fn serialize_text<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

impl TrainOverrides {
    /// The config keys these flags set.
    pub fn given_keys(&self) -> Vec<String> {
        toml::Table::try_from(self)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The given keys among `keys`, spelled as flags (`--ring-scale`).
    pub fn given_flags(&self, keys: &[&str]) -> Vec<String> {
        let given = self.given_keys();
        keys.iter()
            .filter(|k| given.iter().any(|g| g == *k))
            .map(|k| flag(k))
            .collect()
    }

    /// The flags that decide what is trained (not allowed with --resume).
    pub fn run_defining_flags(&self) -> Vec<String> {
        self.given_flags(&RUN_DEFINING_KEYS)
    }
}

/// A config key as its flag: `ring_wd` -> `--no-ring-wd`, `lr` -> `--lr`.
fn flag(key: &str) -> String {
    match key {
        "ring_wd" | "ring_lr_scaling" => format!("--no-{}", key.replace('_', "-")),
        _ => format!("--{}", key.replace('_', "-")),
    }
}

/// `rpg train`: every flag also exists as a key (dashes -> underscores) of `--config`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Stop (with a checkpoint) after N epochs of this invocation; continue later with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after_epochs: Option<usize>,
    /// TOML file with any of the keys below; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (its config.toml is used; --epochs may extend it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Output directory. [default: runs/<model>-<dataset>-<mode>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The training options.
    #[command(flatten)]
    pub options: TrainOverrides,
}

/// `rpg sweep`: the training flags set the recipe every run shares.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// TOML training config shared by every run (model, data, epochs, recipe).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// DoF ratios, comma-separated. [default: 1,0.5,0.25,0.1,0.05,0.02,0.01,0.005,0.002]
    #[arg(long, value_delimiter = ',')]
    pub ratios: Vec<f64>,
    /// Placements, comma-separated: paper, hashed, naive, sequential. [default: paper]
    #[arg(long, value_delimiter = ',', value_parser = named::<PlacementKind>())]
    pub placements: Vec<PlacementKind>,
    /// Seeds, comma-separated. [default: 0]
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Also train narrower dense models with the same DoF (the paper's comparison).
    #[arg(long)]
    pub dense_same_dof: bool,
    /// Output directory. [default: runs/sweep-<model>-<dataset>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The recipe of every run.
    #[command(flatten)]
    pub options: TrainOverrides,
}

/// `rpg reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// The reduced grid (minutes, not hours): checks the pipeline; its report is not docs/results.md.
    #[arg(long)]
    pub quick: bool,
    /// Where the runs go (finished ones are reused). [default: runs/reproduce, or runs/reproduce-quick]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The report. [default: docs/results.md, or OUT/results.md with --quick]
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The report's plots. [default: docs/results, or OUT/plots with --quick]
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// MNIST's directory. [default: datasets/mnist]
    #[arg(long, value_name = "DIR")]
    pub mnist_dir: Option<PathBuf>,
    /// Fashion-MNIST's directory. [default: datasets/fashion-mnist, else Debian's install]
    #[arg(long, value_name = "DIR")]
    pub fashion_mnist_dir: Option<PathBuf>,
}

/// `rpg bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Only this model (default: mlp, lenet5, resnet20, resnet18_cifar).
    #[arg(long)]
    pub model: Option<String>,
    /// Batch size (default: 128, or 32 for resnet18_cifar).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Timed training steps per process (after one warm-up step). Each mode runs in two processes, in the order dense, RPG, RPG, dense; the mean of their medians is reported.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// GPU convolution arithmetic: tf32 (PyTorch's default for convolutions) or f32.
    #[arg(long, default_value = "tf32", value_parser = str::parse::<Precision>)]
    pub precision: Precision,
    /// Print one JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run every case twice: with the native kernels and with Candle's stock conv and batch norm.
    #[arg(long)]
    pub compare_kernels: bool,
    /// Internal: run one case (dense or rpg) in this process and print it as JSON.
    #[arg(long, hide = true, value_parser = ["dense", "rpg"])]
    pub one: Option<String>,
    /// Internal: train dense and RPG in this process, steps interleaved, and print RPG's step time over dense's.
    #[arg(long, hide = true, conflicts_with = "one")]
    pub pair: bool,
}

/// `rpg compress`: every option's default is `CompressConfig::default()`'s.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// A trained model (model.safetensors, a checkpoint or a run directory).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Output directory for the artifact, the dense export and the report.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Quantize the ring: every shared weight is a signed, scaled copy of a ring entry, so this quantizes all shared layers at once.
    #[arg(long, default_value_t = CompressConfig::default().quant, value_parser = named::<RingQuant>())]
    pub quant: RingQuant,
    /// Values per quantization block (one scale each). [default: 256 for int8, 64 for int4]
    #[arg(long)]
    pub block: Option<usize>,
    /// Store scales as f16 (smaller) or f32.
    #[arg(long, default_value_t = CompressConfig::default().scale_dtype, value_parser = named::<ScaleDtype>())]
    pub scale_dtype: ScaleDtype,
    /// Prune this fraction of ring entries by magnitude (stored sparse: bitmap + kept values).
    #[arg(long, value_name = "F", default_value_t = CompressConfig::default().prune_ring)]
    pub prune_ring: f64,
    /// Prune this fraction of the materialised conv/linear weights by magnitude (as the authors did); the result is a dense model.
    #[arg(long, value_name = "F", default_value_t = CompressConfig::default().prune)]
    pub prune: f64,
    /// Threshold for --prune: one over all layers, or per layer.
    #[arg(long, default_value_t = CompressConfig::default().prune_scope, value_parser = named::<PruneScope>())]
    pub prune_scope: PruneScope,
    /// Remove this fraction of channels (smallest L1 norm): channels tied by a residual add or a depthwise conv go together, found from the model's graph. The result is a physically smaller dense model.
    #[arg(long, value_name = "F", default_value_t = CompressConfig::default().prune_channels)]
    pub prune_channels: f64,
    /// For --prune-channels: every channel group loses the fraction (layer), or the weakest channels relative to their group go wherever they are (global).
    #[arg(long, default_value_t = CompressConfig::default().channel_scope, value_parser = named::<PruneScope>())]
    pub channel_scope: PruneScope,
    /// For --prune-channels: round the channels each group keeps up to a multiple of N (8 suits the CPU kernels).
    #[arg(long, value_name = "N", default_value_t = CompressConfig::default().channel_round_to)]
    pub channel_round_to: usize,
    /// Fine-tune for N epochs on the run's training data: the pruned dense model after --prune/--prune-channels, else the RPG model before its ring is compressed (quantization-aware with --qat).
    #[arg(long, value_name = "N", default_value_t = CompressConfig::default().finetune_epochs)]
    pub finetune_epochs: usize,
    /// Learning rate of the fine-tuning (cosine schedule).
    #[arg(long, default_value_t = CompressConfig::default().finetune_lr)]
    pub finetune_lr: f64,
    /// Quantization-aware fine-tuning: train the RPG model for --finetune-epochs with its ring and unshared tensors quantized as the artifact stores them (straight-through gradient), then compress.
    #[arg(long)]
    pub qat: bool,
    /// Quantize unshared tensors (stem, classifier, norms, biases) to 8 bits, one scale per tensor.
    #[arg(long, default_value_t = CompressConfig::default().quant_unshared, value_parser = named::<UnsharedQuant>())]
    pub quant_unshared: UnsharedQuant,
    /// Which test data the report uses.
    #[command(flatten)]
    pub data: TestDataArgs,
    /// Timed runs per latency figure, before and after alternating (the median is reported).
    #[arg(long, default_value_t = CompressConfig::default().latency_runs)]
    pub latency_runs: usize,
    /// Also write the compressed model as ONNX: model.f32.onnx and model.int8.onnx (QDQ: ONNX Runtime runs it with its int8 kernels), with the accuracy of each (convolutional models).
    #[arg(long)]
    pub onnx_int8: bool,
    /// For --onnx-int8: training images whose activation ranges set the int8 scales.
    #[arg(long, value_name = "N", default_value_t = CompressConfig::default().calibration_images)]
    pub calibration_images: usize,
}

impl CompressArgs {
    /// The options as the library's configuration.
    pub fn config(&self) -> CompressConfig {
        CompressConfig {
            quant: self.quant,
            block: self.block,
            scale_dtype: self.scale_dtype,
            prune_ring: self.prune_ring,
            prune: self.prune,
            prune_scope: self.prune_scope,
            prune_channels: self.prune_channels,
            channel_scope: self.channel_scope,
            channel_round_to: self.channel_round_to,
            finetune_epochs: self.finetune_epochs,
            finetune_lr: self.finetune_lr,
            qat: self.qat,
            quant_unshared: self.quant_unshared,
            latency_runs: self.latency_runs,
            onnx_int8: self.onnx_int8,
            calibration_images: self.calibration_images,
        }
    }
}

/// `rpg models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Instead: the bytes one data-parallel step all-reduces per model,
    /// RPG at 10% and 1% DoF (the ring(s) and the unshared tensors) against
    /// dense DDP (every parameter).
    #[arg(long)]
    pub exchange: bool,
}

/// `rpg export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model file, checkpoint, run directory or compressed artifact.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// safetensors (torchvision/timm names, with metadata) or onnx (batch dimension dynamic, for ONNX Runtime, TensorRT, the browser). [default: onnx when --out ends in .onnx, else safetensors]
    #[arg(long, value_enum)]
    pub format: Option<ExportFileFormat>,
    /// Fold every BatchNorm into the conv before it (convs gain a bias): smaller and faster for inference elsewhere, but not torchvision's layout, and `rpg eval` does not read it back (the metadata says so).
    #[arg(long)]
    pub fold_bn: bool,
}

/// `rpg export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFileFormat {
    /// Dense safetensors.
    Safetensors,
    /// ONNX.
    Onnx,
}

/// Test data of `eval` and `compress`; defaults come from the run's config.toml.
#[derive(Debug, Args, Clone, Default)]
pub struct TestDataArgs {
    /// Data set. [default: the run's]
    #[arg(long, value_parser = named::<DatasetKind>())]
    pub dataset: Option<DatasetKind>,
    /// Data directory. [default: the run's, else datasets/<dataset>]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N test images. [default: the run's]
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
}

/// `rpg eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A model file (`.../checkpoints/best/model.safetensors`) or a checkpoint or run directory.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Which test data to use.
    #[command(flatten)]
    pub data: TestDataArgs,
    /// cpu, cuda, cuda:N or metal. [default: cpu]
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Batch size.
    #[arg(long, default_value_t = TrainConfig::default().eval_batch_size)]
    pub batch_size: usize,
    /// Where to write the result as JSON. [default: in a run, eval-best.json (or eval-last.json) in the run's directory; else eval.json beside the model file]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl TestDataArgs {
    /// The library's form.
    pub fn to_test_data(&self) -> rpg_train::evaluate::TestData {
        rpg_train::evaluate::TestData {
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            test_limit: self.test_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The long flags of a subcommand, as config keys (`--no-ring-wd` is
    /// `ring_wd`), without those in `not_keys`.
    fn flag_keys(subcommand: &str, not_keys: &[&str]) -> Vec<String> {
        let mut command = Cli::command();
        command.build();
        let sub = command.find_subcommand(subcommand).expect(subcommand);
        sub.get_arguments()
            .filter_map(|a| a.get_long())
            .map(|long| long.strip_prefix("no-").unwrap_or(long).replace('-', "_"))
            .filter(|key| !not_keys.contains(&key.as_str()))
            .collect()
    }

    /// Every key a `TrainConfig` can hold, optional ones included.
    fn train_keys() -> toml::Table {
        let mut full = TrainConfig {
            dof: Some(0.1),
            ring: Some(10),
            clip_grad: Some(1.0),
            out: Some("o".into()),
            init_from: Some("i".into()),
            ..TrainConfig::default()
        };
        full.data.data_dir = Some("d".into());
        full.data.image_size = Some(28);
        full.data.normalize = Some(vec![0.5, 0.5]);
        full.data.train_limit = Some(1);
        full.data.test_limit = Some(1);
        toml::Table::try_from(full).unwrap()
    }

    #[test]
    fn every_training_flag_is_a_config_key() {
        let keys = train_keys();
        let not_keys = [
            "help",
            "version",
            "kernels",
            "config",
            "resume",
            "stop_after_epochs",
        ];
        for command in ["train", "sweep"] {
            let sweep_only = ["ratios", "placements", "seeds", "dense_same_dof"];
            for key in flag_keys(command, &not_keys) {
                if command == "sweep" && sweep_only.contains(&key.as_str()) {
                    continue;
                }
                assert!(
                    keys.contains_key(&key),
                    "rpg {command} --{key}: no such config key"
                );
            }
        }
    }

    #[test]
    fn every_compress_option_is_a_compress_config_key() {
        let keys = serde_json::to_value(CompressConfig::default().resolved()).unwrap();
        let not_keys = [
            "help",
            "version",
            "kernels",
            "checkpoint",
            "out",
            "dataset",
            "data_dir",
            "test_limit",
        ];
        let flags = flag_keys("compress", &not_keys);
        assert_eq!(flags.len(), keys.as_object().unwrap().len());
        for key in flags {
            assert!(
                keys.get(&key).is_some(),
                "rpg compress --{key}: no such key"
            );
        }
    }
}
