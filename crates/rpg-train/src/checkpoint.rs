//! Training checkpoints: the model file of `rpg-nn`, the optimizer state and
//! the trainer state (epoch, step, data position, best accuracy), written
//! into a fresh directory, synced to the disk, that then replaces the old
//! one (and the parent directory is synced), so neither an interrupted
//! write nor a crash leaves a half checkpoint behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, TrainConfig};
use crate::optim::{Optimizer, OptimizerError};
use crate::setup::Built;
use rpg_data::TestSetId;

/// A checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or directory of the checkpoint.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model file.
    #[error(transparent)]
    ModelFile(#[from] rpg_nn::ModelFileError),
    /// The optimizer state.
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// The trainer state.
    #[error("{path}: corrupt trainer state ({source})")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Flushes a file or a directory's entries to the disk.
fn sync(path: &Path) -> Result<()> {
    rpg_nn::durable::sync_path(path).map_err(io(path))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// File names inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// See [`MODEL_FILE`].
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// See [`MODEL_FILE`].
pub const STATE_FILE: &str = "state.json";

/// Where the trainer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Data order seed; the next epoch's order is a function of (seed, epoch).
    pub data_seed: u64,
    /// Next epoch the data loader will produce.
    pub data_epoch: u64,
    /// Best test accuracy so far.
    pub best_accuracy: f64,
    /// Epoch of the best accuracy.
    pub best_epoch: usize,
    /// Test accuracy of this checkpoint.
    pub test_accuracy: f64,
    /// Test loss of this checkpoint.
    pub test_loss: f64,
    /// Seconds of training so far.
    pub train_seconds: f64,
    /// The test set `test_accuracy` was measured on (absent in checkpoints
    /// written before it was recorded).
    #[serde(default)]
    pub test_set: Option<TestSetId>,
    /// The test set `best_accuracy` was measured on.
    #[serde(default)]
    pub best_test_set: Option<TestSetId>,
}

/// `DIR/checkpoints/<which>`.
pub fn checkpoint_dir(out: &Path, which: &str) -> PathBuf {
    out.join("checkpoints").join(which)
}

/// Writes a checkpoint atomically (write a temp dir, swap it in).
pub fn save(
    out: &Path,
    which: &str,
    built: &Built,
    optimizer: &Optimizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    let target = checkpoint_dir(out, which);
    let parent = target.parent().expect("checkpoint dir has a parent");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".{which}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // A failed write (a full disk, say) leaves no half-written directory.
    if let Err(e) = write_checkpoint_files(&tmp, built, optimizer, state) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{which}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if target.exists() {
        std::fs::rename(&target, &old).map_err(io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    sync(parent)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(target)
}

/// The three files of a checkpoint, written and synced into `tmp`.
fn write_checkpoint_files(
    tmp: &Path,
    built: &Built,
    optimizer: &Optimizer,
    state: &TrainerState,
) -> Result<()> {
    let mut extra = BTreeMap::from([
        ("epoch".to_string(), state.epoch.to_string()),
        ("test_accuracy".to_string(), state.test_accuracy.to_string()),
    ]);
    if let Some(set) = &state.test_set {
        extra.insert("test_images".into(), set.images.to_string());
        extra.insert("test_set_sha256".into(), set.sha256.clone());
    }
    let model_path = tmp.join(MODEL_FILE);
    rpg_nn::save_model_file(
        &model_path,
        &built.store,
        &built.config.name,
        &built.config.to_json(),
        &extra,
    )?;
    optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).map_err(|source| CheckpointError::State {
        path: state_path.clone(),
        source,
    })?;
    std::fs::write(&state_path, json).map_err(io(&state_path))?;
    // Durable before it is installed: a crash after the rename must find
    // whole files, not a directory entry for unwritten data.
    for file in [&model_path, &tmp.join(OPTIMIZER_FILE), &state_path] {
        sync(file)?;
    }
    sync(tmp)?;
    Ok(())
}

/// The newest complete `last` checkpoint of a run (also after a crash
/// between the two renames of [`save`]).
pub fn find_last(out: &Path) -> Option<PathBuf> {
    let last = checkpoint_dir(out, "last");
    let old = out.join("checkpoints").join(".last.old");
    [last, old]
        .into_iter()
        .find(|d| d.join(STATE_FILE).is_file())
}

/// Reads a trainer state.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::State { path, source })
}

/// Accepts a model file, an artifact, a checkpoint directory or a run directory.
/// `None` when there is none.
pub fn find_model_file(path: &Path) -> Option<PathBuf> {
    [
        path.to_path_buf(),
        path.join(MODEL_FILE),
        checkpoint_dir(path, "best").join(MODEL_FILE),
        checkpoint_dir(path, "last").join(MODEL_FILE),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The run's `config.toml` (three levels above
/// `run/checkpoints/<which>/model.safetensors`), if there is one.
pub fn run_config_path(model: &Path) -> Option<PathBuf> {
    model
        .ancestors()
        .nth(3)
        .map(|run| run.join("config.toml"))
        .filter(|p| p.is_file())
}

/// The run's config (see [`run_config_path`]), if any.
pub fn run_config(model: &Path) -> std::result::Result<Option<TrainConfig>, ConfigError> {
    run_config_path(model)
        .map(|p| TrainConfig::from_toml_file(&p))
        .transpose()
}

/// The model file at `path` (a model file, artifact, checkpoint directory
/// or run directory).
pub fn model_file(path: &Path) -> crate::Result<PathBuf> {
    find_model_file(path).ok_or_else(|| crate::Error::NoModelFile {
        path: path.to_path_buf(),
    })
}
