//! Reading a data set's split: the dispatch from [`DatasetKind`] to its
//! reader (kept out of `kind.rs`, which the readers use for names and
//! hints).

use std::path::Path;

use crate::cifar::{self, CifarKind};
use crate::dataset::{Dataset, Split};
use crate::error::Result;
use crate::folder;
use crate::kind::DatasetKind;
use crate::mnist::{self, IdxFamily};

impl DatasetKind {
    /// Reads one split from `dir`; the other split's files are not read.
    /// `image_size` is the output side of image folders (in-memory sets
    /// keep their own size).
    pub fn load_split(self, dir: &Path, image_size: usize, split: Split) -> Result<Dataset> {
        let idx = |classes, mean, std, verify| IdxFamily {
            classes,
            mean,
            std,
            verify,
        };
        match self {
            DatasetKind::Mnist => {
                let pinned = mnist::is_bundled(dir).then_some(&mnist::MNIST_CONTENT);
                mnist::load(self, dir, idx(10, 0.1307, 0.3081, pinned), split)
            }
            DatasetKind::FashionMnist => {
                let pinned = self
                    .is_system_dir(dir)
                    .then_some(&mnist::FASHION_MNIST_SHA256);
                mnist::load(self, dir, idx(10, 0.2860, 0.3530, pinned), split)
            }
            DatasetKind::Kmnist => mnist::load(self, dir, idx(10, 0.1918, 0.3483, None), split),
            DatasetKind::Cifar10 => cifar::load(self, dir, CifarKind::Ten, split),
            DatasetKind::Cifar100 => cifar::load(self, dir, CifarKind::Hundred, split),
            DatasetKind::Folder => folder::load(dir, image_size, split),
        }
    }
}
