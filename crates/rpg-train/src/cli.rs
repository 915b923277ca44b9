//! Command-line arguments of `rpg`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rpg_kernels::KernelBackend;

use crate::config::TrainConfig;
use crate::optim::OptimizerKind;
use crate::schedule::ScheduleKind;

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
    #[arg(long, global = true, default_value_t = KernelBackend::Native, value_parser = kernel_backend_parser())]
    pub kernels: KernelBackend,
}

/// `--kernels`: the names `KernelBackend` parses, listed in `--help`.
fn kernel_backend_parser() -> impl clap::builder::TypedValueParser<Value = KernelBackend> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(KernelBackend::ALL.map(KernelBackend::name))
        .try_map(|name| name.parse::<KernelBackend>())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an RPG (or dense) model. With no flags: LeNet-5 at 10% DoF on the bundled MNIST.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on the test split of a data set.
    Eval(EvalArgs),
    /// List the model zoo: parameters, default shared fraction, input size.
    Models,
    /// Prune and quantize a trained model into a small artifact that `eval` loads; writes a report.
    Compress(CompressArgs),
    /// Write the dense model (all weights materialised) as safetensors with torchvision/timm names.
    Export(ExportArgs),
    /// Training and inference speed, dense vs RPG (10% DoF), on synthetic input; peak memory per case.
    Bench(BenchArgs),
    /// Train one architecture at a list of DoF ratios (and its dense twin): sweep.csv, fit.json, sweep.png.
    Sweep(SweepArgs),
}

/// `rpg sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// TOML training config shared by every run (model, data, epochs, recipe).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model. [default: lenet5]
    #[arg(long)]
    pub model: Option<String>,
    /// Data set. [default: mnist]
    #[arg(long)]
    pub dataset: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Epochs per run. [default: the config's]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// DoF ratios, comma-separated. [default: 1,0.5,0.25,0.1,0.05,0.02,0.01,0.005,0.002]
    #[arg(long, value_delimiter = ',')]
    pub ratios: Vec<f64>,
    /// Placements, comma-separated: paper, hashed, naive. [default: paper]
    #[arg(long, value_delimiter = ',')]
    pub placements: Vec<String>,
    /// Seeds, comma-separated. [default: 0]
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Also train narrower dense models with the same DoF (the paper's comparison).
    #[arg(long)]
    pub dense_same_dof: bool,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Output directory. [default: runs/sweep-<model>-<dataset>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
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
    /// Timed training steps per case (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run every case twice: with the native kernels and with Candle's stock conv and batch norm.
    #[arg(long)]
    pub compare_kernels: bool,
    /// Internal: run one case (dense or rpg) in this process and print it as JSON.
    #[arg(long, hide = true, value_parser = ["dense", "rpg"])]
    pub one: Option<String>,
}

/// Ring quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantChoice {
    /// 8-bit codes.
    Int8,
    /// 4-bit codes, two per byte.
    Int4,
    /// Keep f32.
    None,
}

/// `rpg compress`.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// A trained model (model.safetensors, a checkpoint or a run directory).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Output directory for the artifact, the dense export and the report.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Quantize the ring: every shared weight is a signed, scaled copy of a ring entry, so this quantizes all shared layers at once.
    #[arg(long, value_enum, default_value = "int8")]
    pub quant: QuantChoice,
    /// Values per quantization block (one scale each). [default: 256 for int8, 64 for int4]
    #[arg(long)]
    pub block: Option<usize>,
    /// Store scales as f16 (smaller) or f32.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    pub scale_dtype: String,
    /// Prune this fraction of ring entries by magnitude (stored sparse: bitmap + kept values).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub prune_ring: f64,
    /// Prune this fraction of the materialised conv/linear weights by magnitude (as the authors did); the result is a dense model.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub prune: f64,
    /// Threshold for --prune: one over all layers, or per layer.
    #[arg(long, default_value = "global", value_parser = ["global", "layer"])]
    pub prune_scope: String,
    /// Remove this fraction of output channels (smallest L1 norm) of every prunable layer: a physically smaller dense model (lenet5, mlp).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub prune_channels: f64,
    /// Fine-tune the pruned dense model for N epochs on the run's training data.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub finetune_epochs: usize,
    /// Learning rate of the fine-tuning (cosine schedule).
    #[arg(long, default_value_t = 0.01)]
    pub finetune_lr: f64,
    /// Quantize unshared tensors (stem, classifier, norms, biases) to 8 bits, one scale per tensor.
    #[arg(long, default_value = "int8", value_parser = ["int8", "none"])]
    pub quant_unshared: String,
    /// Which test data the report uses.
    #[command(flatten)]
    pub data: TestDataArgs,
    /// Timed runs per latency figure, before and after alternating (the median is reported).
    #[arg(long, default_value_t = 21)]
    pub latency_runs: usize,
}

/// `rpg export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model file, checkpoint, run directory or compressed artifact.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Output safetensors file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Fold every BatchNorm into the conv before it (convs gain a bias; ResNet naming).
    #[arg(long)]
    pub fold_bn: bool,
}

/// `rpg train`: every flag also exists as a key (dashes -> underscores) of `--config`.
#[derive(Debug, Args, Default)]
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
    /// Model from the zoo (see `rpg models`). [default: lenet5]
    #[arg(long)]
    pub model: Option<String>,
    /// mnist, fashion-mnist, kmnist, cifar10, cifar100 or folder. [default: mnist]
    #[arg(long)]
    pub dataset: Option<String>,
    /// Where the data set's files are. [default: datasets/<dataset>]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Degrees of freedom as a fraction of the dense parameter count, in (0, 1]. [default: 0.1]
    #[arg(long, value_name = "RATIO")]
    pub dof: Option<f64>,
    /// Ring length, instead of --dof.
    #[arg(long, value_name = "N")]
    pub ring: Option<usize>,
    /// Placement: paper (even sampling, shuffle, signs), hashed (HashedNets), naive (ring prefix). [default: paper]
    #[arg(long)]
    pub placement: Option<String>,
    /// Train the ordinary dense model instead (no ring).
    #[arg(long)]
    pub dense: bool,
    /// Per-layer scale: largest_fan_in (each layer starts at the Kaiming fan-in std of its dense twin), largest_fan_out (the paper), unit, or a reference fan-out (4608 = the reference code). [default: largest_fan_in]
    #[arg(long, value_name = "RULE")]
    pub ring_scale: Option<String>,
    /// One ring per glob pattern (repeatable), e.g. --local-rings 'layer1.*' --local-rings 'layer2.*'.
    #[arg(long, value_name = "GLOB")]
    pub local_rings: Vec<String>,
    /// Also share parameters matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub share: Vec<String>,
    /// Never share parameters matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub unshare: Vec<String>,
    /// Channel multiplier of the architecture. [default: 1]
    #[arg(long)]
    pub width: Option<f64>,
    /// Input side for --dataset folder. [default: 224]
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Epochs. [default: 12]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size. [default: 128]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate. [default: 0.05]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer. [default: sgd]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// SGD momentum. [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule (exp = the paper's lr0 * 0.1^(epoch/45)). [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Linear warm-up epochs (without it, training at lr 0.05 from He init can collapse: one RPG LeNet-5 seed of three did; dense lost about 2 points; docs/training.md). [default: 1]
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Weight decay. [default: 5e-4]
    #[arg(long)]
    pub wd: Option<f64>,
    /// Do not apply weight decay to the ring (the paper does).
    #[arg(long)]
    pub no_ring_wd: bool,
    /// Use the base learning rate for the ring as is, without the placement-derived scale (for ablations).
    #[arg(long)]
    pub no_ring_lr_scaling: bool,
    /// Label smoothing in [0, 1). [default: 0]
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long, value_name = "NORM")]
    pub clip_grad: Option<f64>,
    /// Seed of placement, initialisation and data order. [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda, cuda:N or metal (cuda/metal need a build with --features cuda/metal). [default: cpu]
    #[arg(long)]
    pub device: Option<String>,
    /// Output directory. [default: runs/<model>-<dataset>-<mode>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Data loader threads. [default: 2]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write a step line to metrics.jsonl every N steps. [default: 50]
    #[arg(long, value_name = "N")]
    pub log_every: Option<usize>,
}

/// Test data of `eval` and `compress`; defaults come from the run's config.toml.
#[derive(Debug, Args, Clone, Default)]
pub struct TestDataArgs {
    /// Data set. [default: the run's]
    #[arg(long)]
    pub dataset: Option<String>,
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
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Where to write the result as JSON. [default: eval.json beside the model file]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl TrainArgs {
    /// Flags that change what is trained (not allowed with --resume).
    fn model_flags_given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let checks: [(&'static str, bool); 14] = [
            ("--model", self.model.is_some()),
            ("--dataset", self.dataset.is_some()),
            ("--dof", self.dof.is_some()),
            ("--ring", self.ring.is_some()),
            ("--placement", self.placement.is_some()),
            ("--dense", self.dense),
            ("--ring-scale", self.ring_scale.is_some()),
            ("--local-rings", !self.local_rings.is_empty()),
            ("--share", !self.share.is_empty()),
            ("--unshare", !self.unshare.is_empty()),
            ("--width", self.width.is_some()),
            ("--seed", self.seed.is_some()),
            ("--optimizer", self.optimizer.is_some()),
            ("--config", self.config.is_some()),
        ];
        for (name, set) in checks {
            if set {
                given.push(name);
            }
        }
        given
    }

    /// The resolved configuration: defaults, then `--config` (or the
    /// resumed run's config.toml), then flags.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match (&self.resume, &self.config) {
            (Some(dir), _) => {
                let given = self.model_flags_given();
                if !given.is_empty() {
                    anyhow::bail!(
                        "{} cannot change when resuming: the run's own config.toml decides them",
                        given.join(", ")
                    );
                }
                TrainConfig::from_toml_file(&dir.join("config.toml"))?
            }
            (None, Some(file)) => TrainConfig::from_toml_file(file)?,
            (None, None) => TrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        set!(
            model, dataset, placement, ring_scale, width, epochs, batch_size, lr, optimizer,
            momentum, schedule
        );
        set!(
            warmup_epochs,
            wd,
            label_smoothing,
            seed,
            device,
            workers,
            log_every
        );
        macro_rules! set_opt {
            ($($field:ident),*) => { $( if self.$field.is_some() { c.$field = self.$field.clone(); } )* };
        }
        set_opt!(
            data_dir,
            dof,
            ring,
            image_size,
            clip_grad,
            out,
            train_limit,
            test_limit
        );
        if let Some(dir) = &self.resume {
            c.out = Some(dir.clone());
        }
        for (field, values) in [
            (&mut c.local_rings, &self.local_rings),
            (&mut c.share, &self.share),
            (&mut c.unshare, &self.unshare),
        ] {
            if !values.is_empty() {
                *field = values.clone();
            }
        }
        c.dense |= self.dense;
        c.nesterov |= self.nesterov;
        c.ring_wd &= !self.no_ring_wd;
        c.ring_lr_scaling &= !self.no_ring_lr_scaling;
        Ok(c)
    }
}
