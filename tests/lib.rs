//! Workspace end-to-end tests live in this package's test targets
//! (`golden.rs`, `end_to_end.rs`); this library holds what they share.

use std::path::{Path, PathBuf};

/// The bundled MNIST.
pub fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist")
}
