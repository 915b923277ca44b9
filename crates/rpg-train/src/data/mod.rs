//! Data sets: readers for IDX, CIFAR binary batches and image folders, and
//! the background loader.

mod cifar;
mod error;
mod folder;
mod idx;
mod loader;
mod mnist;

use std::path::Path;

use mnist::IdxFamily;

pub use cifar::{CifarKind, parse_batch};
pub use error::{DataError, Result};
pub use folder::{FolderSet, decode_bytes as decode_image, is_image};
pub use idx::{IdxArray, decode_maybe_gz, parse_idx, read_idx};
pub use loader::{Batch, BatchLoader, LoaderOptions};

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
    pub fn set_normalize(&mut self, values: &[f32]) -> std::result::Result<(), String> {
        let c = self.channels;
        let (mean, std) = match values.len() {
            2 => (vec![values[0]; c], vec![values[1]; c]),
            n if n == 2 * c => (values[..c].to_vec(), values[c..].to_vec()),
            n => {
                return Err(format!(
                    "{n} values for {c}-channel images: give MEAN,STD or {c} means then {c} stds"
                ));
            }
        };
        self.mean = mean;
        self.std = std;
        Ok(())
    }

    /// The normalisation as a model records it.
    pub fn normalization(&self) -> rpg_models::Normalize {
        rpg_models::Normalize {
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
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

/// Train and test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training split.
    pub train: Dataset,
    /// Test split.
    pub test: Dataset,
}

/// The data set names this build reads.
pub const DATASETS: [&str; 6] = [
    "mnist",
    "fashion-mnist",
    "kmnist",
    "cifar10",
    "cifar100",
    "folder",
];

/// Loads both splits of a data set by name from `dir`. `image_size` sets
/// the output side of image folders (in-memory sets keep their own size).
pub fn load(name: &str, dir: &Path, image_size: usize) -> Result<Splits> {
    Ok(Splits {
        train: load_split(name, dir, image_size, Split::Train)?,
        test: load_split(name, dir, image_size, Split::Test)?,
    })
}

/// Loads one split; the other split's files are not read.
pub fn load_split(name: &str, dir: &Path, image_size: usize, split: Split) -> Result<Dataset> {
    let idx = |classes, mean, std, verify_mnist| IdxFamily {
        classes,
        mean,
        std,
        verify_mnist,
    };
    match name {
        "mnist" => {
            let pinned = mnist::is_bundled(dir);
            mnist::load(name, dir, idx(10, 0.1307, 0.3081, pinned), split)
        }
        "fashion-mnist" => mnist::load(name, dir, idx(10, 0.2860, 0.3530, false), split),
        "kmnist" => mnist::load(name, dir, idx(10, 0.1918, 0.3483, false), split),
        "cifar10" => cifar::load(name, dir, CifarKind::Ten, split),
        "cifar100" => cifar::load(name, dir, CifarKind::Hundred, split),
        "folder" => folder::load(dir, image_size, split),
        other => Err(DataError::Unknown(other.to_string())),
    }
}

/// Where to get a data set's files.
pub(super) fn hint(name: &str) -> &'static str {
    match name {
        "mnist" => "the bundled copy lives in datasets/mnist; see datasets/README.md",
        "fashion-mnist" => {
            "get them from https://github.com/zalandoresearch/fashion-mnist (data/fashion); see datasets/README.md"
        }
        "kmnist" => {
            "get them from https://github.com/rois-codh/kmnist (MNIST format); see datasets/README.md"
        }
        "cifar10" => {
            "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack it into --data-dir; see datasets/README.md"
        }
        "cifar100" => {
            "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and unpack it into --data-dir; see datasets/README.md"
        }
        _ => "see datasets/README.md",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_idx_set(dir: &Path, n: u32, label: u8) {
        let files = [
            (
                "train-images-idx3-ubyte",
                idx::encode_idx(&[n, 4, 4], &vec![7; 16 * n as usize]),
            ),
            (
                "train-labels-idx1-ubyte",
                idx::encode_idx(&[n], &vec![label; n as usize]),
            ),
            (
                "t10k-images-idx3-ubyte",
                idx::encode_idx(&[2, 4, 4], &[1; 32]),
            ),
            ("t10k-labels-idx1-ubyte", idx::encode_idx(&[2], &[0, 1])),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn idx_sets_load_and_validate_labels_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 3, 9);
        let s = load("fashion-mnist", dir.path(), 0).unwrap();
        assert_eq!(s.train.len(), 3);
        assert_eq!(s.test.labels(), &[0, 1]);

        write_idx_set(dir.path(), 3, 10);
        let err = load("kmnist", dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("outside 0..10"), "{err}");

        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx::encode_idx(&[2], &[0, 0]),
        )
        .unwrap();
        let err = load("kmnist", dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("expected [3]"), "{err}");
    }

    #[test]
    fn missing_files_are_listed_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = load("cifar10", dir.path(), 0).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("cifar-10-binary.tar.gz"),
            "{err}"
        );
        let err = load("mnist", dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte[.gz]"), "{err}");
        assert!(
            load("imagenet21k", dir.path(), 0)
                .unwrap_err()
                .to_string()
                .contains("unknown dataset")
        );
    }

    /// The bundled copy is pinned to MNIST's checksums; an MNIST-format
    /// variant elsewhere is read as it is.
    #[test]
    fn only_the_bundled_mnist_is_pinned_to_its_checksums() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 3, 1);
        let pinned = mnist::IdxFamily {
            classes: 10,
            mean: 0.1307,
            std: 0.3081,
            verify_mnist: true,
        };
        let err = mnist::load("mnist", dir.path(), pinned, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
        assert!(!mnist::is_bundled(dir.path()));
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
        assert!(mnist::is_bundled(&bundled));
        let variant = load("mnist", dir.path(), 0).unwrap();
        assert_eq!(variant.train.len(), 3);
    }

    #[test]
    fn normalisation_can_be_set_per_set_or_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 3, 1);
        let mut set = load_split("kmnist", dir.path(), 0, Split::Test).unwrap();
        set.set_normalize(&[0.5, 0.25]).unwrap();
        assert_eq!((set.mean.clone(), set.std.clone()), (vec![0.5], vec![0.25]));
        assert!(set.set_normalize(&[0.1, 0.2, 0.3, 0.4]).is_err());
    }

    #[test]
    fn bundled_mnist_is_canonical() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
        let s = load("mnist", &dir, 0).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
        assert_eq!((s.train.labels()[0], s.test.labels()[0]), (5, 7));
        assert_eq!(s.train.labels().iter().filter(|&&l| l == 1).count(), 6742);
    }
}
