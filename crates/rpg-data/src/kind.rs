//! The data sets this build reads: the one list of their names.

use std::path::Path;

use rpg_core::names::Named;

use crate::cifar::{self, CifarKind};
use crate::dataset::{Dataset, Split};
use crate::error::Result;
use crate::folder;
use crate::mnist::{self, IdxFamily};

/// A data set this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatasetKind {
    /// MNIST (bundled in `datasets/mnist`).
    #[default]
    Mnist,
    /// Fashion-MNIST (MNIST's format).
    FashionMnist,
    /// Kuzushiji-MNIST (MNIST's format).
    Kmnist,
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version.
    Cifar100,
    /// An image folder: `train/` and `val/`, one folder per class.
    Folder,
}

impl Named for DatasetKind {
    const WHAT: &'static str = "dataset";
    const ALL: &'static [Self] = &[
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }
}

rpg_core::named_text_impls!(DatasetKind);

impl DatasetKind {
    /// Where to get the data set's files.
    pub fn hint(self) -> &'static str {
        match self {
            DatasetKind::Mnist => {
                "the bundled copy lives in datasets/mnist; see datasets/README.md"
            }
            DatasetKind::FashionMnist => {
                "get them from https://github.com/zalandoresearch/fashion-mnist (data/fashion); see datasets/README.md"
            }
            DatasetKind::Kmnist => {
                "get them from https://github.com/rois-codh/kmnist (MNIST format); see datasets/README.md"
            }
            DatasetKind::Cifar10 => {
                "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack it into the data directory (`data_dir`); see datasets/README.md"
            }
            DatasetKind::Cifar100 => {
                "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and unpack it into the data directory (`data_dir`); see datasets/README.md"
            }
            DatasetKind::Folder => {
                "arrange images as ImageNet is (one folder per class); see datasets/README.md"
            }
        }
    }

    /// Whether images are decoded from files and resized (the only kind
    /// whose image size is chosen).
    pub fn is_folder(self) -> bool {
        self == DatasetKind::Folder
    }

    /// Reads one split from `dir`; the other split's files are not read.
    /// `image_size` is the output side of image folders (in-memory sets
    /// keep their own size).
    pub fn load_split(self, dir: &Path, image_size: usize, split: Split) -> Result<Dataset> {
        let idx = |classes, mean, std, verify_mnist| IdxFamily {
            classes,
            mean,
            std,
            verify_mnist,
        };
        match self {
            DatasetKind::Mnist => {
                let pinned = mnist::is_bundled(dir);
                mnist::load(self, dir, idx(10, 0.1307, 0.3081, pinned), split)
            }
            DatasetKind::FashionMnist => {
                mnist::load(self, dir, idx(10, 0.2860, 0.3530, false), split)
            }
            DatasetKind::Kmnist => mnist::load(self, dir, idx(10, 0.1918, 0.3483, false), split),
            DatasetKind::Cifar10 => cifar::load(self, dir, CifarKind::Ten, split),
            DatasetKind::Cifar100 => cifar::load(self, dir, CifarKind::Hundred, split),
            DatasetKind::Folder => folder::load(dir, image_size, split),
        }
    }
}
