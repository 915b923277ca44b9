//! Data errors: what is wrong and what to do.

use std::path::PathBuf;

/// A data set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Expected files are absent.
    #[error("{dataset}: missing {missing} in {dir} (expected files: {expected}; {hint})")]
    Missing {
        /// Data set name.
        dataset: String,
        /// Directory searched.
        dir: PathBuf,
        /// What is missing.
        missing: String,
        /// Every file expected.
        expected: String,
        /// Where to get them.
        hint: &'static str,
    },
    /// A file exists but its content is wrong.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A split holds no images after the limits.
    #[error("{dir}: the {split} split is empty (after `train_limit` / `test_limit`)")]
    EmptySplit {
        /// The data directory.
        dir: PathBuf,
        /// Which split.
        split: crate::Split,
    },
    /// The two splits' images differ in shape.
    #[error(
        "{dir}: the training images are {}x{}x{} but the test images are {}x{}x{}: both splits must have one image size",
        train.0, train.1, train.1, test.0, test.1, test.1
    )]
    SplitShapes {
        /// The data directory.
        dir: PathBuf,
        /// Channels and side of the training images.
        train: (usize, usize),
        /// Channels and side of the test images.
        test: (usize, usize),
    },
    /// A data setting is refused.
    #[error(transparent)]
    Setting(#[from] rpg_core::InvalidSetting),
}

impl DataError {
    pub(crate) fn corrupt(path: &std::path::Path, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
