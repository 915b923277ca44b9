//! `DataConfig`: which data, from where, at what size, normalised how,
//! limited to how many images. `rpg-train`'s `TrainConfig` embeds it, so
//! its keys are training-config keys too (`dataset = "cifar10"`).

use std::path::PathBuf;

use rpg_core::InvalidSetting;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::kind::DatasetKind;

/// The output side of image folders when none is given.
pub const DEFAULT_IMAGE_SIZE: usize = 224;

/// The largest side folder images are resized to: a batch of 128 RGB images
/// at 4096 pixels is 25 GB of f32.
pub const MAX_IMAGE_SIZE: usize = 4096;

/// The data a run reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataConfig {
    /// Data set.
    #[serde(with = "rpg_core::names::by_name")]
    pub dataset: DatasetKind,
    /// Data directory (default `datasets/<dataset>`).
    pub data_dir: Option<PathBuf>,
    /// Input side for image folders.
    pub image_size: Option<usize>,
    /// Input normalisation `[mean, std]` for every channel, or all channels'
    /// means then all stds; default: the data set's own.
    pub normalize: Option<Vec<f32>>,
    /// Use only the first N training images.
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
}

impl DataConfig {
    /// The data directory.
    pub fn dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let project = PathBuf::from("datasets").join(self.dataset.to_string());
        // A system install (Debian's Fashion-MNIST) when the project has
        // no copy of its own.
        match self.dataset.system_dir() {
            Some(system) if !project.exists() && system.is_dir() => system.to_path_buf(),
            _ => project,
        }
    }

    /// Checks the values without reading any file.
    pub fn validate(&self) -> Result<()> {
        if let Some(values) = &self.normalize {
            let refuse =
                |reason: &str| InvalidSetting::new("normalize", format!("{values:?}"), reason);
            if values.is_empty() || values.len() % 2 != 0 {
                return Err(refuse(
                    "give MEAN,STD (or every channel's means, then their stds): an even count of values",
                )
                .into());
            }
            let stds = &values[values.len() / 2..];
            if values.iter().any(|v| !v.is_finite()) || stds.iter().any(|s| *s <= 0.0) {
                return Err(refuse("values must be finite and every std positive").into());
            }
        }
        match self.image_size {
            Some(0) => Err(InvalidSetting::new("image_size", 0, "must be positive").into()),
            Some(size) if size > MAX_IMAGE_SIZE => Err(InvalidSetting::new(
                "image_size",
                size,
                format!("must be at most {MAX_IMAGE_SIZE} pixels"),
            )
            .into()),
            Some(size) if !self.dataset.is_folder() => Err(InvalidSetting::new(
                "image_size",
                size,
                format!(
                    "applies to the folder dataset only; {} images keep their own size",
                    self.dataset
                ),
            )
            .into()),
            _ => Ok(()),
        }
    }

    /// One split, normalised and limited as configured; the other split is
    /// not read.
    pub fn load_split(&self, split: Split) -> Result<Dataset> {
        let dir = self.dir();
        let size = self.image_size.unwrap_or(DEFAULT_IMAGE_SIZE);
        let mut data = self.dataset.load_split(&dir, size, split)?;
        if let Some(values) = &self.normalize {
            data.set_normalize(values)?;
        }
        let limit = match split {
            Split::Train => self.train_limit,
            Split::Test => self.test_limit,
        };
        if let Some(n) = limit {
            data.truncate(n);
        }
        if data.is_empty() {
            return Err(DataError::EmptySplit { dir, split });
        }
        Ok(data)
    }

    /// Both splits; their images must have one shape.
    pub fn load(&self) -> Result<(Dataset, Dataset)> {
        let (train, test) = (
            self.load_split(Split::Train)?,
            self.load_split(Split::Test)?,
        );
        let shape = |d: &Dataset| (d.channels, d.image_size);
        if shape(&train) != shape(&test) {
            return Err(DataError::SplitShapes {
                dir: self.dir(),
                train: shape(&train),
                test: shape(&test),
            });
        }
        Ok((train, test))
    }
}
