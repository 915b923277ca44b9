//! A split of a data set in memory (or as a list of files), ready for the
//! loader, and the identity of a test set.

use std::path::PathBuf;

use rpg_core::InvalidSetting;

use crate::error::Result;

/// Images held in memory as bytes, channel-first (`N x C x H x W`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, `len() * channels * height * width` bytes.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl ImageSet {
    /// An empty set of the given image shape.
    pub fn empty(channels: usize, height: usize, width: usize) -> Self {
        Self {
            images: Vec::new(),
            labels: Vec::new(),
            channels,
            height,
            width,
        }
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Where the samples come from.
#[derive(Debug, Clone)]
pub enum Samples {
    /// Decoded bytes in memory (MNIST-likes, CIFAR).
    Memory(ImageSet),
    /// Files decoded on the loader threads (image folders).
    Folder(FolderSet),
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    /// None.
    None,
    /// Random crop after zero padding by `pad`, then horizontal flip (CIFAR).
    CropFlip {
        /// Padding on each side.
        pad: usize,
    },
    /// Random-resized crop (scale 0.08-1, ratio 3/4-4/3) and flip (folders).
    ResizedCropFlip,
}

/// One split of a data set, ready for the loader.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name, e.g. `mnist`.
    pub name: String,
    /// The samples.
    pub samples: Samples,
    /// Classes.
    pub num_classes: usize,
    /// Output channels.
    pub channels: usize,
    /// Output side (images are square after loading).
    pub image_size: usize,
    /// Per-channel mean and std for normalisation (of pixels in [0, 1]).
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// Augmentation applied when the loader is asked to augment.
    pub augment: Augment,
    /// Class names by label, where the data set has them.
    pub class_names: Option<Vec<String>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match &self.samples {
            Samples::Memory(s) => s.labels.len(),
            Samples::Folder(f) => f.labels.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Labels, in order.
    pub fn labels(&self) -> &[u32] {
        match &self.samples {
            Samples::Memory(s) => &s.labels,
            Samples::Folder(f) => &f.labels,
        }
    }

    /// Sets the normalisation from `[mean, std]` (every channel) or every
    /// channel's means then their stds.
    pub fn set_normalize(&mut self, values: &[f32]) -> Result<()> {
        let c = self.channels;
        let (mean, std) = match values.len() {
            2 => (vec![values[0]; c], vec![values[1]; c]),
            n if n == 2 * c => (values[..c].to_vec(), values[c..].to_vec()),
            n => {
                return Err(InvalidSetting::new(
                    "normalize",
                    format!("{values:?}"),
                    format!(
                        "{n} values for {c}-channel images: give MEAN,STD or {c} means then {c} stds"
                    ),
                )
                .into());
            }
        };
        self.mean = mean;
        self.std = std;
        Ok(())
    }

    /// Which images these are (see [`TestSetId`]).
    pub fn id(&self) -> TestSetId {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.name.as_bytes());
        for label in self.labels() {
            hash.update(label.to_le_bytes());
        }
        match &self.samples {
            Samples::Memory(s) => hash.update(&s.images),
            Samples::Folder(f) => {
                for path in &f.paths {
                    hash.update(path.to_string_lossy().as_bytes());
                    hash.update([0]);
                }
            }
        }
        TestSetId {
            images: self.len(),
            sha256: format!("{:x}", hash.finalize()),
        }
    }

    /// Keeps the first `n` samples (for quick runs and tests).
    pub fn truncate(&mut self, n: usize) {
        match &mut self.samples {
            Samples::Memory(s) => {
                let n = n.min(s.labels.len());
                s.images.truncate(n * s.image_len());
                s.labels.truncate(n);
            }
            Samples::Folder(f) => {
                // Keep a class-balanced prefix would need shuffling; folders
                // are sorted by class, so take every k-th sample instead.
                let total = f.labels.len();
                if n < total {
                    let keep: Vec<usize> = (0..n).map(|i| i * total / n).collect();
                    f.paths = keep.iter().map(|&i| f.paths[i].clone()).collect();
                    f.labels = keep.iter().map(|&i| f.labels[i]).collect();
                }
            }
        }
    }
}

/// Which images an accuracy was measured on: their count and a SHA-256 of
/// their content (pixels and labels; for image folders, file paths and
/// labels). Accuracies on different test sets are never compared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestSetId {
    /// Number of images.
    pub images: usize,
    /// SHA-256 of their content, hex.
    pub sha256: String,
}

impl std::fmt::Display for TestSetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} images, SHA-256 {:.12}", self.images, self.sha256)
    }
}

/// Which split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test (validation) split.
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "training",
            Split::Test => "test",
        })
    }
}

/// File paths and labels of one split.
#[derive(Debug, Clone)]
pub struct FolderSet {
    /// Class names, sorted (label = position).
    pub classes: Vec<String>,
    /// Image files.
    pub paths: Vec<PathBuf>,
    /// Labels, parallel to `paths`.
    pub labels: Vec<u32>,
}
