//! # rpg-data: the data sets of RPG training
//!
//! Readers for IDX (the MNIST family), CIFAR binary batches and image
//! folders ([`DatasetKind`], the one list of data sets), the split in
//! memory ([`Dataset`]), what a run reads ([`DataConfig`]) and the
//! deterministic background loader ([`BatchLoader`]). No tensor framework:
//! batches are bytes and labels, and the trainer makes tensors of them.
#![warn(missing_docs)]

mod cifar;
mod config;
mod dataset;
mod error;
mod folder;
mod idx;
mod kind;
mod load;
mod loader;
mod mnist;
mod shift;

pub use cifar::{CifarKind, parse_batch};
pub use config::{DEFAULT_IMAGE_SIZE, DataConfig, MAX_IMAGE_SIZE};
pub use dataset::FolderSet;
pub use dataset::{Augment, Dataset, ImageSet, Samples, Split, TestSetId};
pub use error::{DataError, Result};
pub use folder::{decode_bytes as decode_image, is_image};
pub use idx::{IdxArray, decode_maybe_gz, parse_idx, read_idx};
pub use kind::DatasetKind;
pub use loader::{Batch, BatchLoader, LoaderOptions, Shard};
pub use shift::Shift;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Both splits of `name` in `dir`, as a run reads them.
    fn load(name: &str, dir: &Path) -> Result<(Dataset, Dataset)> {
        DataConfig {
            dataset: name.parse().expect("a dataset name"),
            data_dir: Some(dir.to_path_buf()),
            ..DataConfig::default()
        }
        .load()
    }

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
        let (train, test) = load("fashion-mnist", dir.path()).unwrap();
        assert_eq!(train.len(), 3);
        assert_eq!(test.labels(), &[0, 1]);

        write_idx_set(dir.path(), 3, 10);
        let err = load("kmnist", dir.path()).unwrap_err().to_string();
        assert!(err.contains("outside 0..10"), "{err}");

        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx::encode_idx(&[2], &[0, 0]),
        )
        .unwrap();
        let err = load("kmnist", dir.path()).unwrap_err().to_string();
        assert!(err.contains("expected [3]"), "{err}");
    }

    #[test]
    fn missing_files_are_listed_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = load("cifar10", dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("cifar-10-binary.tar.gz"),
            "{err}"
        );
        let err = load("mnist", dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte[.gz]"), "{err}");
        assert!("imagenet21k".parse::<DatasetKind>().is_err());
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
            verify: Some(&mnist::MNIST_CONTENT),
        };
        let err = mnist::load(DatasetKind::Mnist, dir.path(), pinned, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
        assert!(!mnist::is_bundled(dir.path()));
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
        assert!(mnist::is_bundled(&bundled));
        let (variant, _) = load("mnist", dir.path()).unwrap();
        assert_eq!(variant.len(), 3);
    }

    #[test]
    fn normalisation_can_be_set_per_set_or_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 3, 1);
        let mut set = DatasetKind::Kmnist
            .load_split(dir.path(), 0, Split::Test)
            .unwrap();
        set.set_normalize(&[0.5, 0.25]).unwrap();
        assert_eq!((set.mean.clone(), set.std.clone()), (vec![0.5], vec![0.25]));
        assert!(set.set_normalize(&[0.1, 0.2, 0.3, 0.4]).is_err());
    }

    #[test]
    fn bundled_mnist_is_canonical() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
        let (train, test) = load("mnist", &dir).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!((train.labels()[0], test.labels()[0]), (5, 7));
        assert_eq!(train.labels().iter().filter(|&&l| l == 1).count(), 6742);
    }
}
