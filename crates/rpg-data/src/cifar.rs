//! CIFAR-10 / CIFAR-100 binary batches (the "binary version" archives).

use std::path::{Path, PathBuf};

use crate::dataset::{Augment, Dataset, ImageSet, Samples, Split};
use crate::error::{DataError, Result};
use rpg_core::names::Named;

use crate::kind::DatasetKind;

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes; records are `label, 3072 pixels`.
    Ten,
    /// 100 classes; records are `coarse, fine, 3072 pixels` (fine is used).
    Hundred,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Ten => 1,
            CifarKind::Hundred => 2,
        }
    }

    /// Classes.
    pub fn classes(self) -> u32 {
        match self {
            CifarKind::Ten => 10,
            CifarKind::Hundred => 100,
        }
    }
}

const PIXELS: usize = 3 * 32 * 32;

/// Parses one binary batch file's bytes, appending to `set`.
pub fn parse_batch(path: &Path, bytes: &[u8], kind: CifarKind, set: &mut ImageSet) -> Result<()> {
    let record = kind.label_bytes() + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::corrupt(
            path,
            format!(
                "size {} is not a whole number of {record}-byte CIFAR records: the file is truncated or not a {} binary batch",
                bytes.len(),
                if kind == CifarKind::Ten {
                    "CIFAR-10"
                } else {
                    "CIFAR-100"
                }
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = u32::from(rec[kind.label_bytes() - 1]);
        if label >= kind.classes() {
            return Err(DataError::corrupt(
                path,
                format!(
                    "record {i} has label {label}, outside 0..{}",
                    kind.classes()
                ),
            ));
        }
        set.labels.push(label);
        set.images.extend_from_slice(&rec[kind.label_bytes()..]);
    }
    Ok(())
}

/// CIFAR-10's class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Loads one split: only its batch files are read.
pub(super) fn load(
    dataset: DatasetKind,
    dir: &Path,
    kind: CifarKind,
    split: Split,
) -> Result<Dataset> {
    let name = dataset.name();
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
    let (files, augment) = match split {
        Split::Train => (&train, Augment::CropFlip { pad: 4 }),
        Split::Test => (&test, Augment::None),
    };
    let missing: Vec<&str> = files
        .iter()
        .filter(|f| !base.join(f).is_file())
        .map(|f| f.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dataset: name.into(),
            dir: base,
            missing: missing.join(", "),
            expected: train
                .iter()
                .chain(&test)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            hint: dataset.hint(),
        });
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| base.join(f)).collect();
    let (mean, std) = match kind {
        CifarKind::Ten => ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
        CifarKind::Hundred => ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    };
    Ok(Dataset {
        name: name.into(),
        samples: Samples::Memory(read_batches(&paths, kind)?),
        num_classes: kind.classes() as usize,
        channels: 3,
        image_size: 32,
        mean: mean.to_vec(),
        std: std.to_vec(),
        augment,
        class_names: match kind {
            CifarKind::Ten => Some(CIFAR10_CLASSES.map(String::from).to_vec()),
            CifarKind::Hundred => None,
        },
    })
}

/// Reads the given batch files (already checked to exist).
pub fn read_batches(paths: &[PathBuf], kind: CifarKind) -> Result<ImageSet> {
    let mut set = ImageSet::empty(3, 32, 32);
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        parse_batch(path, &bytes, kind, &mut set)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_broken_batches() {
        let p = Path::new("b.bin");
        let mut bytes = Vec::new();
        for label in [3u8, 7] {
            bytes.push(label);
            bytes.extend(std::iter::repeat_n(label, PIXELS));
        }
        let mut set = ImageSet::empty(3, 32, 32);
        parse_batch(p, &bytes, CifarKind::Ten, &mut set).unwrap();
        assert_eq!(set.labels, vec![3, 7]);
        assert_eq!(set.images.len(), 2 * PIXELS);

        let err = parse_batch(p, &bytes[..bytes.len() - 5], CifarKind::Ten, &mut set).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
        let mut bad = bytes.clone();
        bad[0] = 12;
        let err = parse_batch(p, &bad, CifarKind::Ten, &mut set).unwrap_err();
        assert!(err.to_string().contains("label 12"), "{err}");
        // CIFAR-100 records are 3074 bytes: a CIFAR-10 file is not a whole number of them.
        let err = parse_batch(p, &bytes, CifarKind::Hundred, &mut set).unwrap_err();
        assert!(err.to_string().contains("CIFAR-100"), "{err}");
    }
}
