//! Data sets: readers for IDX, CIFAR binary batches and image folders, and
//! the background loader.

mod cifar;
mod error;
mod folder;
mod idx;
mod loader;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use cifar::CifarKind;
pub use error::{DataError, Result};
pub use folder::FolderSet;
pub use idx::{IdxArray, parse_idx, read_idx};
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

/// SHA-256 of the uncompressed canonical MNIST files.
const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Loads a data set by name from `dir`. `image_size` sets the output side
/// of image folders (in-memory sets keep their own size).
pub fn load(name: &str, dir: &Path, image_size: usize) -> Result<Splits> {
    match name {
        "mnist" => load_idx(name, dir, 10, [0.1307], [0.3081], true),
        "fashion-mnist" => load_idx(name, dir, 10, [0.2860], [0.3530], false),
        "kmnist" => load_idx(name, dir, 10, [0.1918], [0.3483], false),
        "cifar10" => load_cifar(name, dir, CifarKind::Ten),
        "cifar100" => load_cifar(name, dir, CifarKind::Hundred),
        "folder" => load_folder(dir, image_size),
        other => Err(DataError::Unknown(other.to_string())),
    }
}

fn hint(name: &str) -> &'static str {
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

/// Finds `stem` or `stem.gz` in `dir`.
fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn load_idx(
    name: &str,
    dir: &Path,
    classes: u32,
    mean: [f32; 1],
    std: [f32; 1],
    verify_mnist: bool,
) -> Result<Splits> {
    let stems = MNIST_SHA256.map(|(s, _)| s);
    let found: Vec<Option<PathBuf>> = stems.iter().map(|s| find_idx(dir, s)).collect();
    let missing: Vec<&str> = stems
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(s, _)| *s)
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dataset: name.into(),
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
            expected: stems.map(|s| format!("{s}[.gz]")).join(", "),
            hint: hint(name).into(),
        });
    }
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    let mut arrays = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let bytes = idx::read_maybe_gz(path)?;
        if verify_mnist {
            let digest = format!("{:x}", Sha256::digest(&bytes));
            if digest != MNIST_SHA256[i].1 {
                return Err(DataError::corrupt(
                    path,
                    format!(
                        "SHA-256 {digest} differs from MNIST's {}: the file is corrupt or not MNIST",
                        MNIST_SHA256[i].1
                    ),
                ));
            }
        }
        arrays.push((path, idx::parse_idx(path, &bytes)?));
    }
    let split =
        |images: &(&PathBuf, IdxArray), labels: &(&PathBuf, IdxArray)| -> Result<ImageSet> {
            let (ip, img) = images;
            let (lp, lab) = labels;
            let [n, h, w] = img.dims[..] else {
                return Err(DataError::corrupt(
                    ip,
                    format!(
                        "image file has dimensions {:?}, expected [N, H, W]",
                        img.dims
                    ),
                ));
            };
            if lab.dims != [n] {
                return Err(DataError::corrupt(
                    lp,
                    format!(
                        "label file has dimensions {:?}, expected [{n}] to match its images",
                        lab.dims
                    ),
                ));
            }
            if let Some((i, &l)) = lab
                .data
                .iter()
                .enumerate()
                .find(|(_, l)| u32::from(**l) >= classes)
            {
                return Err(DataError::corrupt(
                    lp,
                    format!("label {i} is {l}, outside 0..{classes}"),
                ));
            }
            Ok(ImageSet {
                images: img.data.clone(),
                labels: lab.data.iter().map(|&l| u32::from(l)).collect(),
                channels: 1,
                height: h,
                width: w,
            })
        };
    let make = |set: ImageSet| Dataset {
        name: name.into(),
        image_size: set.height,
        channels: 1,
        samples: Samples::Memory(set),
        num_classes: classes as usize,
        mean: mean.to_vec(),
        std: std.to_vec(),
        augment: Augment::None,
    };
    Ok(Splits {
        train: make(split(&arrays[0], &arrays[1])?),
        test: make(split(&arrays[2], &arrays[3])?),
    })
}

fn load_cifar(name: &str, dir: &Path, kind: CifarKind) -> Result<Splits> {
    let (train, test): (Vec<String>, Vec<String>) = match kind {
        CifarKind::Ten => (
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            vec!["test_batch.bin".into()],
        ),
        CifarKind::Hundred => (vec!["train.bin".into()], vec!["test.bin".into()]),
    };
    // Accept the files directly in `dir` or in the archive's own folder.
    let sub = match kind {
        CifarKind::Ten => "cifar-10-batches-bin",
        CifarKind::Hundred => "cifar-100-binary",
    };
    let base = if dir.join(sub).is_dir() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    };
    let all: Vec<&String> = train.iter().chain(&test).collect();
    let missing: Vec<&str> = all
        .iter()
        .filter(|f| !base.join(f).is_file())
        .map(|f| f.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dataset: name.into(),
            dir: base,
            missing: missing.join(", "),
            expected: all
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            hint: hint(name).into(),
        });
    }
    let paths = |files: &[String]| files.iter().map(|f| base.join(f)).collect::<Vec<_>>();
    let (mean, std) = match kind {
        CifarKind::Ten => ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
        CifarKind::Hundred => ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    };
    let make = |set: ImageSet, augment| Dataset {
        name: name.into(),
        samples: Samples::Memory(set),
        num_classes: kind.classes() as usize,
        channels: 3,
        image_size: 32,
        mean: mean.to_vec(),
        std: std.to_vec(),
        augment,
    };
    Ok(Splits {
        train: make(
            cifar::read_batches(&paths(&train), kind)?,
            Augment::CropFlip { pad: 4 },
        ),
        test: make(cifar::read_batches(&paths(&test), kind)?, Augment::None),
    })
}

fn load_folder(dir: &Path, image_size: usize) -> Result<Splits> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("val"));
    if !train_dir.is_dir() || !test_dir.is_dir() {
        return Err(DataError::Missing {
            dataset: "folder".into(),
            dir: dir.to_path_buf(),
            missing: "train/ or val/".into(),
            expected: "train/<class>/*.{png,jpg} and val/<class>/*.{png,jpg}".into(),
            hint: "arrange images as ImageNet is (one folder per class); see datasets/README.md"
                .into(),
        });
    }
    let train = folder::scan(&train_dir)?;
    let test = folder::scan(&test_dir)?;
    if train.classes != test.classes {
        return Err(DataError::corrupt(
            &test_dir,
            "val/ has other class folders than train/",
        ));
    }
    let make = |set: FolderSet, augment| Dataset {
        name: "folder".into(),
        num_classes: set.classes.len(),
        samples: Samples::Folder(set),
        channels: 3,
        image_size,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        augment,
    };
    Ok(Splits {
        train: make(train, Augment::ResizedCropFlip),
        test: make(test, Augment::None),
    })
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

    #[test]
    fn a_fake_mnist_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 3, 1);
        let err = load("mnist", dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("SHA-256"), "{err}");
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
