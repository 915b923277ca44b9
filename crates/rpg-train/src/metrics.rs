//! `metrics.jsonl` (one JSON object per logged step and per epoch) and the
//! per-epoch history behind `curves.png`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Always `"epoch"`.
    pub kind: String,
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training top-1 accuracy (fraction).
    pub train_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test top-1 accuracy (fraction).
    pub test_accuracy: f64,
    /// Test top-5 accuracy (more than 10 classes only).
    pub test_top5: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// Seconds of training in this epoch.
    pub seconds: f64,
    /// Of those, seconds rank 0 spent averaging gradients with the other
    /// ranks (data-parallel runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_seconds: Option<f64>,
}

/// One logged training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Always `"step"`.
    pub kind: String,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Optimizer step.
    pub step: u64,
    /// Batch loss.
    pub loss: f64,
    /// Batch top-1 accuracy.
    pub accuracy: f64,
    /// Learning rate.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
}

/// Appends records to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log; when resuming after `epochs_done`, drops lines of
    /// later epochs (written before the interruption, after the checkpoint).
    pub fn open(out: &Path, epochs_done: Option<usize>) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        if let Some(done) = epochs_done {
            let kept: Vec<String> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["epoch"].as_u64())
                        .is_some_and(|e| e as usize <= done)
                })
                .map(str::to_string)
                .collect();
            std::fs::write(
                &path,
                kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .map_err(Error::io(&path))?;
        } else {
            std::fs::write(&path, "").map_err(Error::io(&path))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(Self { path, file })
    }

    /// Writes one record.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|source| Error::Json {
            path: self.path.clone(),
            source,
        })?;
        writeln!(self.file, "{line}").map_err(Error::io(&self.path))
    }

    /// Makes the records written so far durable (after each epoch's: a
    /// crash loses at most the steps of the epoch it interrupts).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(Error::io(&self.path))
    }

    /// Epoch records written so far (for plots after a resume).
    pub fn epochs(&self) -> Result<Vec<EpochRecord>> {
        Ok(std::fs::read_to_string(&self.path)
            .map_err(Error::io(&self.path))?
            .lines()
            .filter_map(|l| serde_json::from_str::<EpochRecord>(l).ok())
            .filter(|r| r.kind == "epoch")
            .collect())
    }
}
/// The median of a non-empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
