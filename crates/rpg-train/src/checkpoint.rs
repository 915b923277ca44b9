//! Training checkpoints: the model file of `rpg-nn`, the optimizer state and
//! the trainer state (epoch, step, data position, best accuracy), written
//! into a fresh directory that then replaces the old one, so an interrupted
//! write never leaves a half checkpoint behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::optim::Optimizer;
use crate::setup::Built;

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
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{which}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let extra = BTreeMap::from([
        ("epoch".to_string(), state.epoch.to_string()),
        ("test_accuracy".to_string(), state.test_accuracy.to_string()),
    ]);
    rpg_nn::save_model_file(
        &tmp.join(MODEL_FILE),
        &built.store,
        &built.config.name,
        &built.config.to_json(),
        &extra,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
    std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
    let old = parent.join(format!(".{which}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("installing checkpoint {}", target.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(target)
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
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt trainer state", path.display()))
}
