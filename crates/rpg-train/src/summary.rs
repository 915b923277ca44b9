//! `summary.json`: what a finished run reports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Test images behind `test_accuracy` and `test_loss` (0 in summaries
    /// written before it was recorded).
    #[serde(default)]
    pub test_images: usize,
    /// Best test accuracy over epochs.
    pub best_test_accuracy: f64,
    /// Test images behind `best_test_accuracy` (unknown for checkpoints
    /// from before test sets were recorded).
    #[serde(default)]
    pub best_test_images: Option<usize>,
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
    /// The dense model the run was warm-started from (`--init-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Relative error of the ring's least-squares fit to its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_error: Option<f64>,
    /// Test accuracy of the warm-started model before any training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_accuracy: Option<f64>,
}
