//! CIFAR-10 / CIFAR-100 binary batches (the "binary version" archives).

use std::path::Path;

use super::ImageSet;
use super::error::{DataError, Result};

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

/// Reads the given batch files (already checked to exist).
pub fn read_batches(paths: &[std::path::PathBuf], kind: CifarKind) -> Result<ImageSet> {
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
