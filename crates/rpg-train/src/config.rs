//! The training configuration, the one declaration of every training
//! option: defaults here, then a TOML file (`--config`), then command-line
//! flags, which are overrides merged key by key ([`TrainConfig::merged`]).
//! Every flag has a key of the same name (dashes become underscores). The
//! resolved config is written as `config.toml` beside the checkpoints, and
//! `--resume` reads it back.

use std::path::{Path, PathBuf};

use rpg_core::{ConflictingSettings, InvalidSetting, PlacementKind, ScaleRule};
use rpg_data::DataConfig;
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
    #[error("config {path}{}: {message}", at.map(|(line, column)| format!(", line {line}, column {column}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line and column (1-based), where the parser could point to one
        /// (an unknown key is found only after the whole table is read).
        at: Option<(usize, usize)>,
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
    /// The data settings are invalid.
    #[error(transparent)]
    Data(#[from] rpg_data::DataError),
    /// A value is out of range.
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    /// Two values contradict each other.
    #[error(transparent)]
    Conflict(#[from] ConflictingSettings),
}

type Result<T> = std::result::Result<T, ConfigError>;

/// (De)serialises a value through its `Display` / `FromStr` spelling, so
/// config files say `placement = "paper"` and `ring_scale = "4608"`.
pub(crate) mod as_text {
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
    /// The data: `dataset`, `data_dir`, `image_size`, `normalize`,
    /// `train_limit`, `test_limit` (keys of this config, as before).
    #[serde(flatten)]
    pub data: DataConfig,
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
            data: DataConfig::default(),
            dof: None,
            ring: None,
            placement: PlacementKind::Paper,
            dense: false,
            ring_scale: ScaleRule::default(),
            local_rings: Vec::new(),
            share: Vec::new(),
            unshare: Vec::new(),
            width: 1.0,
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
            // An empty span at the start (what toml gives for a key of a
            // flattened table, or an unknown key) or one over the whole
            // document points nowhere in particular.
            let at = e
                .span()
                .filter(|s| !(s.start == 0 && (s.end == 0 || s.end >= text.trim_end().len())))
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    (
                        line,
                        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                    )
                });
            ConfigError::Parse {
                path: path.to_path_buf(),
                at,
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
        self.data.validate()?;
        // config.toml records these paths, and TOML strings are UTF-8.
        let paths = [
            ("out", &self.out),
            ("data_dir", &self.data.data_dir),
            ("init_from", &self.init_from),
        ];
        for (key, path) in paths {
            if let Some(path) = path.as_ref().filter(|p| p.to_str().is_none()) {
                return Err(InvalidSetting::new(
                    key,
                    path.display(),
                    "is not valid UTF-8, which config.toml cannot record: choose a name in UTF-8",
                )
                .into());
            }
        }
        let refuse = |key, value: &dyn std::fmt::Display, reason: &str| -> ConfigError {
            InvalidSetting::new(key, value, reason).into()
        };
        let positive = [
            ("epochs", self.epochs as f64),
            ("batch_size", self.batch_size as f64),
            ("eval_batch_size", self.eval_batch_size as f64),
            ("width", self.width),
            ("workers", self.workers as f64),
            ("log_every", self.log_every as f64),
            ("step_epochs", self.step_epochs),
            ("exp_decay_epochs", self.exp_decay_epochs),
            ("step_gamma", self.step_gamma),
        ];
        for (key, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                return Err(refuse(key, &value, "must be a positive number"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(refuse("lr", &self.lr, "must be a positive number"));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(refuse(
                "label_smoothing",
                &self.label_smoothing,
                "must be in [0, 1)",
            ));
        }
        if !(self.wd >= 0.0 && self.wd.is_finite()) {
            return Err(refuse("wd", &self.wd, "must be a non-negative number"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(refuse(
                "momentum",
                &self.momentum,
                "must be in [0, 1) (0.9 is usual)",
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(refuse(
                "warmup_epochs",
                &self.warmup_epochs,
                "must be 0 or more",
            ));
        }
        if let Some(c) = self.clip_grad
            && (c.is_nan() || c <= 0.0)
        {
            return Err(refuse("clip_grad", &c, "must be positive"));
        }
        let conflict = |first, second, reason: &str| -> ConfigError {
            ConflictingSettings {
                first,
                second,
                reason: reason.into(),
            }
            .into()
        };
        if self.dense {
            let other = match (self.dof, self.ring) {
                (Some(_), _) => "dof",
                (_, Some(_)) => "ring",
                (None, None) => return Ok(None),
            };
            return Err(conflict(
                "dense",
                other,
                "the dense model has no ring: drop one of them",
            ));
        }
        match (self.dof, self.ring) {
            (Some(_), Some(_)) => Err(conflict("dof", "ring", "give one ring size")),
            (Some(r), None) if !(r > 0.0 && r <= 1.0) => Err(refuse(
                "dof",
                &r,
                "is outside (0, 1]: it is the ratio of trainable DoF to dense parameters, e.g. 0.1",
            )),
            (Some(r), None) => Ok(Some(RingSize::Ratio(r))),
            (None, Some(0)) => Err(refuse("ring", &0, "a ring needs at least one entry")),
            (None, Some(n)) => Ok(Some(RingSize::Length(n))),
            (None, None) => Ok(Some(RingSize::Ratio(DEFAULT_DOF))),
        }
    }

    /// The output directory.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let mode = if self.dense {
                "dense".to_string()
            } else {
                format!("rpg-{}", self.placement)
            };
            PathBuf::from("runs").join(format!("{}-{}-{mode}", self.model, self.data.dataset))
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
        assert_eq!(c.data.dir(), PathBuf::from("datasets/mnist"));
    }

    /// The key a refused config names (a value or the first of a pair).
    fn refused_key(c: TrainConfig) -> &'static str {
        match c.validate() {
            Err(ConfigError::Setting(InvalidSetting { key, .. })) => key,
            Err(ConfigError::Conflict(ConflictingSettings { first, second, .. })) => {
                if first == "dense" { second } else { first }
            }
            Err(ConfigError::Data(rpg_data::DataError::Setting(InvalidSetting {
                key, ..
            }))) => key,
            other => panic!("expected a keyed error, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_and_combinations_name_their_keys() {
        let d = TrainConfig::default;
        let cases: [(TrainConfig, &str); 10] = [
            (
                TrainConfig {
                    dof: Some(0.0),
                    ..d()
                },
                "dof",
            ),
            (
                TrainConfig {
                    dof: Some(0.1),
                    dense: true,
                    ..d()
                },
                "dof",
            ),
            (
                TrainConfig {
                    ring: Some(0),
                    ..d()
                },
                "ring",
            ),
            (
                TrainConfig {
                    dof: Some(0.1),
                    ring: Some(5),
                    ..d()
                },
                "dof",
            ),
            (
                TrainConfig {
                    lr: f64::NAN,
                    ..d()
                },
                "lr",
            ),
            (
                TrainConfig {
                    momentum: 5.0,
                    ..d()
                },
                "momentum",
            ),
            (
                TrainConfig {
                    warmup_epochs: -1.0,
                    ..d()
                },
                "warmup_epochs",
            ),
            (
                TrainConfig {
                    batch_size: 0,
                    ..d()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    data: DataConfig {
                        image_size: Some(64),
                        ..DataConfig::default()
                    },
                    ..d()
                },
                "image_size",
            ),
            (
                TrainConfig {
                    data: DataConfig {
                        dataset: rpg_data::DatasetKind::Folder,
                        image_size: Some(0),
                        ..DataConfig::default()
                    },
                    ..d()
                },
                "image_size",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(refused_key(config), key);
        }
        assert!(matches!(
            TrainConfig {
                model: "resnet9000".into(),
                ..d()
            }
            .validate(),
            Err(ConfigError::UnknownModel(_))
        ));
        let svhn = toml::from_str::<TrainConfig>("dataset = \"svhn\"").unwrap_err();
        assert!(svhn.message().contains("unknown dataset `svhn`"), "{svhn}");
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
        assert!(err.contains("unknown field `epochz`"), "{err}");
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

    /// `docs/reference/config.md` is the default config, and its
    /// commented-out keys are keys.
    #[test]
    fn the_reference_is_the_default() {
        let doc = include_str!("../../../docs/reference/config.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block");
        let documented: TrainConfig = toml::from_str(block).unwrap();
        assert_eq!(documented, TrainConfig::default());
        let commented: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap_or(l)))
            .collect();
        assert_eq!(commented.matches(" = ").count(), 10, "{commented}");
        toml::from_str::<TrainConfig>(&commented).unwrap();
        // Every key the default writes is in the block.
        let keys = toml::Table::try_from(TrainConfig::default()).unwrap();
        for key in keys.keys() {
            assert!(
                block.contains(&format!("\n{key} = ")),
                "{key} is not documented"
            );
        }
    }
}
