//! The errors of training, evaluation, compression, sweeps and benchmarks.
//! Each subsystem has its own enum ([`ConfigError`], [`DataError`],
//! [`CheckpointError`], [`OptimizerError`], [`StepError`]); this one wraps
//! them and adds what only the commands' work can go wrong with. Nothing is
//! recognised by its text: a caller matches on the variant.

use std::path::PathBuf;

use rpg_core::{ConflictingSettings, InvalidSetting};

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::optim::OptimizerError;
use crate::plot::PlotError;
use crate::step::StepError;
use rpg_data::DataError;

/// Something went wrong in `rpg-train`'s library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A data set could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Optimizer state could not be read or written.
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// A tensor operation (or a model of `rpg-nn`) failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A model file could not be read or does not fit the model.
    #[error(transparent)]
    ModelFile(#[from] rpg_nn::ModelFileError),
    /// Placement or ring arithmetic refused its input.
    #[error(transparent)]
    Core(#[from] rpg_core::Error),
    /// A compressed artifact could not be made, read or applied.
    #[error(transparent)]
    Compress(#[from] rpg_compress::artifact::CompressError),
    /// An artifact does not fit the model it describes.
    #[error("{path}: {source}")]
    Artifact {
        /// The artifact.
        path: PathBuf,
        /// Why.
        source: rpg_compress::artifact::CompressError,
    },
    /// A DoF ratio cannot be met by this model.
    #[error("`dof` = {ratio}: {source}")]
    DofRatio {
        /// The ratio asked for.
        ratio: f64,
        /// Why it cannot be met.
        source: rpg_core::Error,
    },
    /// Exchanging with the other processes of a data-parallel run failed.
    #[error(transparent)]
    Collective(#[from] crate::distributed::CollectiveError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A model file or artifact holds a model configuration this build
    /// cannot read.
    #[error("{path}: unreadable model configuration ({source})")]
    ModelConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// No model file where one was expected.
    #[error("no model file at {path} (give a model.safetensors, a checkpoint or a run directory)")]
    NoModelFile {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An output would replace one of the command's own inputs.
    #[error("`{key}` {output} is {input}, which this command reads: choose another `{key}`")]
    OverwritesInput {
        /// The setting naming the output (`out`).
        key: &'static str,
        /// The output.
        output: PathBuf,
        /// The input it would replace.
        input: PathBuf,
    },
    /// An output inside a run directory that is not the command's to write.
    #[error("`{key}` {output} is in {why} ({run}): choose a place outside it")]
    InsideRun {
        /// The setting naming the output (`out`).
        key: &'static str,
        /// The output.
        output: PathBuf,
        /// The run directory.
        run: PathBuf,
        /// Which part of the run.
        why: &'static str,
    },
    /// Another process is running in this output directory.
    #[error(
        "{dir} is in use by another run ({holder}): wait for it to finish, or choose another `out`"
    )]
    RunLocked {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
    },
    /// A fresh run would overwrite a run in its output directory.
    #[error("{out} already holds a run: continue it with `resume` {out} or choose another `out`")]
    RunExists {
        /// The output directory.
        out: PathBuf,
    },
    /// `--resume` of a directory without a checkpoint.
    #[error("{out} has no checkpoint to resume from (expected checkpoints/last/)")]
    NothingToResume {
        /// The directory.
        out: PathBuf,
    },
    /// A run's checkpoint is not the run's (copied from another run).
    #[error(
        "{checkpoint} does not belong to the run in {out}: {what}; restore the run's own checkpoints/, or start a new run with another `out`"
    )]
    ForeignCheckpoint {
        /// The run.
        out: PathBuf,
        /// The checkpoint's model file.
        checkpoint: PathBuf,
        /// What differs, checkpoint against config.toml.
        what: String,
    },
    /// A resumed run has no epochs left.
    #[error(
        "{out} already finished {done} of {epochs} epochs: give a larger `epochs` to train further"
    )]
    Finished {
        /// The run.
        out: PathBuf,
        /// Epochs done.
        done: usize,
        /// Epochs configured.
        epochs: usize,
    },
    /// The loss stopped being finite.
    #[error(
        "training diverged: the loss became {loss} at epoch {epoch}, step {step}; lower `lr` (now {lr}) or set `clip_grad`{}",
        last_good.as_ref().map(|p| format!(". The last good checkpoint is kept in {}", p.display())).unwrap_or_default()
    )]
    Diverged {
        /// The loss.
        loss: f64,
        /// The epoch it happened in.
        epoch: usize,
        /// The step.
        step: u64,
        /// The base learning rate.
        lr: f64,
        /// The last checkpoint written, if any.
        last_good: Option<PathBuf>,
    },
    /// A model's outputs are NaN or infinite.
    #[error(
        "the model's outputs are not finite (NaN or infinity) on the test batch from image {first_image}: its parameters are corrupt or it diverged"
    )]
    NonFiniteOutput {
        /// The first image of the batch.
        first_image: usize,
    },
    /// Nothing to evaluate.
    #[error("the test set is empty")]
    EmptyTestSet,
    /// A model cannot read a data set.
    #[error(
        "{path} is a model for {model}, but {dataset} has {data}: evaluate it on the data it was trained for"
    )]
    ModelDoesNotFitData {
        /// The model file.
        path: PathBuf,
        /// The model's classes and input.
        model: String,
        /// The data set.
        dataset: String,
        /// Its classes and images.
        data: String,
    },
    /// A dense export whose BatchNorms were folded into the convs.
    #[error(
        "{path}: an export with BatchNorms folded into the convs is for other tools; rpg reads exports made without folding: export it again without `fold_bn`"
    )]
    FoldedExport {
        /// The export.
        path: PathBuf,
    },
    /// A setting of a command is out of range or unsupported.
    #[error("{0}")]
    Invalid(String),
    /// A benchmark case (a child process) failed.
    #[error("benchmark case {case}: {message}")]
    BenchCase {
        /// Model and mode.
        case: String,
        /// What went wrong.
        message: String,
    },
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Candle(e) => Error::Candle(e),
            StepError::Optimizer(e) => Error::Optimizer(e),
            StepError::Collective(e) => Error::Collective(e),
            StepError::Quantize(e) => Error::Compress(e),
        }
    }
}

/// An error about one setting (or a pair), by its config key: the binary
/// names it as the user gave it (a flag or a config key).
#[derive(Debug, Clone, Copy)]
pub enum SettingError<'a> {
    /// A value is refused.
    Invalid(&'a InvalidSetting),
    /// Two values contradict each other.
    Conflict(&'a ConflictingSettings),
}

impl ConfigError {
    /// The setting this error is about, if it is about one.
    pub fn setting(&self) -> Option<SettingError<'_>> {
        match self {
            ConfigError::Setting(s) => Some(SettingError::Invalid(s)),
            ConfigError::Conflict(c) => Some(SettingError::Conflict(c)),
            ConfigError::Data(DataError::Setting(s)) => Some(SettingError::Invalid(s)),
            _ => None,
        }
    }
}

impl Error {
    /// The setting this error is about, if it is about one.
    pub fn setting(&self) -> Option<SettingError<'_>> {
        match self {
            Error::Config(e) => e.setting(),
            Error::Data(DataError::Setting(s)) => Some(SettingError::Invalid(s)),
            _ => None,
        }
    }

    /// The settings this error's message names (in backticks, by config
    /// key), for the binary to name as the user gave them.
    pub fn named_settings(&self) -> &'static [&'static str] {
        match self {
            Error::DofRatio { .. } => &["dof"],
            Error::OverwritesInput { .. }
            | Error::InsideRun { .. }
            | Error::RunLocked { .. }
            | Error::ForeignCheckpoint { .. } => &["out"],
            Error::RunExists { .. } => &["resume", "out"],
            Error::Finished { .. } => &["epochs"],
            Error::Diverged { .. } => &["lr", "clip_grad"],
            Error::FoldedExport { .. } => &["fold_bn"],
            _ => &[],
        }
    }

    /// A refused value of the setting `key`.
    pub(crate) fn invalid_setting(
        key: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::Config(ConfigError::Setting(InvalidSetting::new(
            key, value, reason,
        )))
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
