//! The training configuration, the one declaration of every training
//! option: defaults here, then a TOML file (`--config`), then command-line
//! flags, which are overrides merged key by key ([`TrainConfig::merged`]).
//! Every flag has a key of the same name (dashes become underscores). The
//! resolved config is written as `config.toml` beside the checkpoints, and
//! `--resume` reads it back.

use std::path::{Path, PathBuf};

use rpg_core::{PlacementKind, ScaleRule};
use rpg_kernels::Precision;
use serde::{Deserialize, Serialize};

use crate::optim::OptimizerKind;
use crate::schedule::ScheduleKind;

/// The DoF ratio of an RPG run that gives neither `--dof` nor `--ring`.
pub const DEFAULT_DOF: f64 = 0.1;

/// Keys that decide what is trained: a resumed run keeps its own.
pub const RUN_DEFINING_KEYS: [&str; 14] = [
    "model",
    "dataset",
    "dof",
    "ring",
    "placement",
    "dense",
    "ring_scale",
    "local_rings",
    "share",
    "unshare",
    "width",
    "seed",
    "optimizer",
    "init_from",
];

/// A configuration is unreadable or invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid config (syntax, unknown key, wrong type).
    #[error("config {path}, line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
        /// See `line`.
        column: usize,
        /// What is wrong (unknown key, wrong type, ...), on one line.
        message: String,
    },
    /// Flags or a config could not be merged into one.
    #[error("invalid settings: {0}")]
    Merge(#[source] toml::de::Error),
    /// The config could not be written as TOML.
    #[error("writing the config as TOML: {0}")]
    Write(#[from] toml::ser::Error),
    /// The model is not in the zoo.
    #[error("{0}")]
    UnknownModel(candle_core::Error),
    /// The data set is not one this build reads.
    #[error("unknown dataset `{name}`: choose one of {known}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A value is out of range, or values contradict each other.
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ConfigError>;

macro_rules! invalid {
    ($($arg:tt)*) => { return Err(ConfigError::Invalid(format!($($arg)*))) };
}

/// (De)serialises a value through its `Display` / `FromStr` spelling, so
/// config files say `placement = "paper"` and `ring_scale = "4608"`.
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Everything a training run is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Zoo model name.
    pub model: String,
    /// Data set name.
    pub dataset: String,
    /// Data directory (default `datasets/<dataset>`).
    pub data_dir: Option<PathBuf>,
    /// DoF ratio (total DoF / dense parameters); default 0.1 in RPG mode.
    pub dof: Option<f64>,
    /// Ring length (instead of a ratio).
    pub ring: Option<usize>,
    /// Placement: paper, hashed, naive, sequential.
    #[serde(with = "as_text")]
    pub placement: PlacementKind,
    /// Train the dense model instead of an RPG model.
    pub dense: bool,
    /// Per-layer scale: `largest_fan_in`, `largest_fan_out`, `unit` or a reference fan-out number (4608 = the paper's).
    #[serde(with = "as_text")]
    pub ring_scale: ScaleRule,
    /// Local rings: one ring per glob pattern (e.g. `layer1.*`); empty = one global ring.
    pub local_rings: Vec<String>,
    /// Extra parameters to share (glob patterns).
    pub share: Vec<String>,
    /// Parameters never to share (glob patterns).
    pub unshare: Vec<String>,
    /// Channel multiplier of the architecture.
    pub width: f64,
    /// Input side for image folders.
    pub image_size: Option<usize>,
    /// Input normalisation `[mean, std]` for every channel, or all channels'
    /// means then all stds; default: the data set's own.
    pub normalize: Option<Vec<f32>>,
    /// Epochs.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// sgd or adamw.
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// constant, cosine, step or exp.
    pub schedule: ScheduleKind,
    /// Linear warm-up epochs.
    pub warmup_epochs: f64,
    /// Step schedule period (epochs).
    pub step_epochs: f64,
    /// Step schedule factor.
    pub step_gamma: f64,
    /// Exp schedule: epochs per factor 10 (the paper: 45).
    pub exp_decay_epochs: f64,
    /// Weight decay.
    pub wd: f64,
    /// Apply weight decay to the ring (the paper does).
    pub ring_wd: bool,
    /// Scale the ring's learning rate from the placement (see docs/training.md).
    pub ring_lr_scaling: bool,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
    /// Seed of placement, initialisation and data order.
    pub seed: u64,
    /// cpu, cuda, cuda:N or metal.
    pub device: String,
    /// GPU convolution arithmetic: `tf32` (tensor cores, PyTorch's default
    /// for convolutions) or `f32` (strict). The CPU always computes in f32.
    #[serde(with = "as_text")]
    pub precision: Precision,
    /// Output directory (default `runs/<model>-<dataset>-<mode>`).
    pub out: Option<PathBuf>,
    /// Warm start: a dense model of the same architecture (`rpg export`)
    /// whose weights the ring is fitted to by least squares before training.
    pub init_from: Option<PathBuf>,
    /// Use only the first N training images.
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
    /// Data loader threads.
    pub workers: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Write a step line to metrics.jsonl every N steps.
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: "lenet5".into(),
            dataset: "mnist".into(),
            data_dir: None,
            dof: None,
            ring: None,
            placement: PlacementKind::Paper,
            dense: false,
            ring_scale: ScaleRule::LargestFanIn,
            local_rings: Vec::new(),
            share: Vec::new(),
            unshare: Vec::new(),
            width: 1.0,
            image_size: None,
            normalize: None,
            epochs: 12,
            batch_size: 128,
            lr: 0.05,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            step_epochs: 30.0,
            step_gamma: 0.1,
            exp_decay_epochs: 45.0,
            wd: 5e-4,
            ring_wd: true,
            ring_lr_scaling: true,
            label_smoothing: 0.0,
            clip_grad: None,
            seed: 0,
            device: "cpu".into(),
            precision: Precision::Tf32,
            out: None,
            init_from: None,
            train_limit: None,
            test_limit: None,
            workers: 2,
            eval_batch_size: 1000,
            log_every: 50,
        }
    }
}

/// The ring size a run asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RingSize {
    /// A DoF ratio.
    Ratio(f64),
    /// A ring length.
    Length(usize),
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..at];
            ConfigError::Parse {
                path: path.to_path_buf(),
                line: before.matches('\n').count() + 1,
                column: before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                message: e.message().replace('\n', " "),
            }
        })
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// This config with the keys of `overrides` (any serialisable value
    /// whose fields are config keys, e.g. the command line's flags) set:
    /// the one way flags and files combine.
    pub fn merged(&self, overrides: &impl Serialize) -> Result<Self> {
        let mut table = toml::Table::try_from(self)?;
        table.extend(toml::Table::try_from(overrides)?);
        table.try_into().map_err(ConfigError::Merge)
    }

    /// Checks values and combinations; returns the ring size (None = dense).
    pub fn validate(&self) -> Result<Option<RingSize>> {
        rpg_models::model_entry(&self.model).map_err(ConfigError::UnknownModel)?;
        if !crate::data::DATASETS.contains(&self.dataset.as_str()) {
            return Err(ConfigError::UnknownDataset {
                name: self.dataset.clone(),
                known: crate::data::DATASETS.join(", "),
            });
        }
        let positive = [
            ("epochs", self.epochs as f64),
            ("batch-size", self.batch_size as f64),
            ("eval-batch-size", self.eval_batch_size as f64),
            ("width", self.width),
            ("workers", self.workers as f64),
            ("log-every", self.log_every as f64),
        ];
        for (name, value) in positive {
            if value.is_nan() || value <= 0.0 {
                invalid!("--{name} must be positive, got {value}");
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            invalid!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            invalid!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            );
        }
        if !(self.wd >= 0.0 && self.wd.is_finite()) {
            invalid!("--wd must be a non-negative number, got {}", self.wd);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            invalid!(
                "--momentum must be in [0, 1), got {} (0.9 is usual)",
                self.momentum
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            invalid!(
                "--warmup-epochs must be 0 or more, got {}",
                self.warmup_epochs
            );
        }
        for (key, value) in [
            ("step_epochs", self.step_epochs),
            ("exp_decay_epochs", self.exp_decay_epochs),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                invalid!("`{key}` must be positive, got {value}");
            }
        }
        if !(self.step_gamma > 0.0 && self.step_gamma.is_finite()) {
            invalid!("`step_gamma` must be positive, got {}", self.step_gamma);
        }
        if let Some(values) = &self.normalize {
            if values.is_empty() || values.len() % 2 != 0 {
                invalid!(
                    "--normalize takes MEAN,STD (or every channel's means, then their stds), got {} values",
                    values.len()
                );
            }
            let stds = &values[values.len() / 2..];
            if values.iter().any(|v| !v.is_finite()) || stds.iter().any(|s| *s <= 0.0) {
                invalid!("--normalize {values:?}: values must be finite and every std positive");
            }
        }
        match (self.image_size, self.dataset.as_str()) {
            (Some(0), _) => invalid!("--image-size must be positive, got 0"),
            (Some(size), dataset) if dataset != "folder" => invalid!(
                "--image-size {size} applies to --dataset folder only; {dataset} images keep their own size"
            ),
            _ => {}
        }
        if let Some(c) = self.clip_grad
            && (c.is_nan() || c <= 0.0)
        {
            invalid!("--clip-grad must be positive, got {c}");
        }
        if self.dense {
            if self.dof.is_some() || self.ring.is_some() {
                invalid!("--dense trains the dense model: it takes no --dof or --ring");
            }
            return Ok(None);
        }
        match (self.dof, self.ring) {
            (Some(_), Some(_)) => invalid!("give either --dof or --ring, not both"),
            (Some(r), None) if !(r > 0.0 && r <= 1.0) => {
                invalid!(
                    "--dof {r} is outside (0, 1]: it is the ratio of trainable DoF to dense parameters, e.g. 0.1"
                )
            }
            (Some(r), None) => Ok(Some(RingSize::Ratio(r))),
            (None, Some(0)) => invalid!("--ring 0: a ring needs at least one entry"),
            (None, Some(n)) => Ok(Some(RingSize::Length(n))),
            (None, None) => Ok(Some(RingSize::Ratio(DEFAULT_DOF))),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("datasets").join(&self.dataset))
    }

    /// The output directory.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let mode = if self.dense {
                "dense".to_string()
            } else {
                format!("rpg-{}", self.placement)
            };
            PathBuf::from("runs").join(format!("{}-{}-{mode}", self.model, self.dataset))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_main_job() {
        let c = TrainConfig::default();
        assert_eq!(c.validate().unwrap(), Some(RingSize::Ratio(0.1)));
        assert_eq!(c.data_dir(), PathBuf::from("datasets/mnist"));
    }

    #[test]
    fn bad_values_and_combinations_are_errors() {
        let err = |c: TrainConfig| c.validate().unwrap_err().to_string();
        let d = TrainConfig::default;
        assert!(
            err(TrainConfig {
                dof: Some(0.0),
                ..d()
            })
            .contains("outside (0, 1]")
        );
        assert!(
            err(TrainConfig {
                dof: Some(0.1),
                dense: true,
                ..d()
            })
            .contains("takes no --dof")
        );
        assert!(
            err(TrainConfig {
                model: "resnet9000".into(),
                ..d()
            })
            .contains("choose one of mlp, lenet5")
        );
        assert!(
            err(TrainConfig {
                dataset: "svhn".into(),
                ..d()
            })
            .contains("unknown dataset")
        );
        assert!(
            err(TrainConfig {
                ring: Some(0),
                ..d()
            })
            .contains("at least one entry")
        );
        assert!(
            err(TrainConfig {
                dof: Some(0.1),
                ring: Some(5),
                ..d()
            })
            .contains("not both")
        );
        assert!(
            err(TrainConfig {
                lr: f64::NAN,
                ..d()
            })
            .contains("--lr")
        );
        assert!(
            err(TrainConfig {
                momentum: 5.0,
                ..d()
            })
            .contains("--momentum must be in [0, 1), got 5")
        );
        assert!(
            err(TrainConfig {
                warmup_epochs: -1.0,
                ..d()
            })
            .contains("--warmup-epochs")
        );
        assert!(
            err(TrainConfig {
                image_size: Some(64),
                ..d()
            })
            .contains("--dataset folder only")
        );
        assert!(
            err(TrainConfig {
                dataset: "folder".into(),
                image_size: Some(0),
                ..d()
            })
            .contains("--image-size must be positive")
        );
    }

    /// Names are checked where they are read: a config file (or a flag)
    /// with an unknown placement or scale rule does not parse.
    #[test]
    fn unknown_placements_and_scale_rules_do_not_parse() {
        let err = |text: &str| toml::from_str::<TrainConfig>(text).unwrap_err().to_string();
        assert!(err("placement = \"random\"").contains("unknown placement `random`"));
        assert!(err("ring_scale = \"big\"").contains("unknown scale rule `big`"));
        let c: TrainConfig = toml::from_str("ring_scale = \"4608\"").unwrap();
        assert_eq!(c.ring_scale, ScaleRule::FixedFanOut(4608));
        assert!(err("precision = \"fp16\"").contains("unknown precision `fp16`"));
    }

    /// `--precision` is recorded in config.toml and read back; a config
    /// written before it existed means TF32, the default.
    #[test]
    fn precision_round_trips_and_defaults_to_tf32() {
        let strict = TrainConfig {
            precision: Precision::F32,
            ..TrainConfig::default()
        };
        let text = strict.to_toml().unwrap();
        assert!(text.contains("precision = \"f32\""), "{text}");
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.precision, Precision::F32);
        let old: TrainConfig = toml::from_str("epochs = 3").unwrap();
        assert_eq!(old.precision, Precision::Tf32);
    }

    #[test]
    fn a_bad_config_file_says_where_and_why_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "epochs = 3\nepochz = 3\n").unwrap();
        let err = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2, column 1: unknown field `epochz`"),
            "{err}"
        );
        std::fs::write(&path, "lr = \"fast\"\n").unwrap();
        let err = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1, column 6: invalid type: string \"fast\", expected f64"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn overrides_replace_only_their_keys() {
        #[derive(Serialize)]
        struct Flags {
            lr: f64,
            placement: &'static str,
        }
        let base = TrainConfig {
            epochs: 3,
            ..TrainConfig::default()
        };
        let merged = base
            .merged(&Flags {
                lr: 0.2,
                placement: "hashed",
            })
            .unwrap();
        assert_eq!(
            merged,
            TrainConfig {
                lr: 0.2,
                placement: PlacementKind::Hashed,
                ..base
            }
        );
    }

    #[test]
    fn toml_round_trips_and_rejects_unknown_keys() {
        let c = TrainConfig {
            dof: Some(0.05),
            ..TrainConfig::default()
        };
        let back: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<TrainConfig>("epochz = 3").is_err());
    }
}
