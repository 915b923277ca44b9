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
        hint: String,
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
    /// An unknown data set name.
    #[error(
        "unknown dataset `{0}`: choose one of mnist, fashion-mnist, kmnist, cifar10, cifar100, folder"
    )]
    Unknown(String),
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
