//! What can be wrong with a model file, as cases a caller can tell apart
//! (a checksum mismatch is not a wrong model, nor a truncated file).

use std::path::PathBuf;

use crate::mode::Mode;

/// A model file that cannot be written, read or loaded into a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read or written.
    #[error("model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a safetensors file with the keys of a model file.
    #[error(
        "{path} is not a valid rpg model file ({what}): it may be truncated or corrupt; use a checkpoint written by `rpg train`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        what: String,
    },
    /// The stored checksum does not match the file's contents.
    #[error(
        "{path}: checksum mismatch: the file was changed after it was written (edited by hand or damaged); use an unmodified checkpoint"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
    /// A file of a format that always carries a checksum has none.
    #[error(
        "{path} has no checksum (`rpg.checksum`), which every model file of format {format} carries: its header was edited; use an unmodified checkpoint"
    )]
    MissingChecksum {
        /// The file.
        path: PathBuf,
        /// Its declared format.
        format: u32,
    },
    /// The optimizer state beside a model file, given in its place.
    #[error(
        "{path} is optimizer state, not a model file: give the model.safetensors beside it, or its checkpoint directory"
    )]
    OptimizerState {
        /// The file.
        path: PathBuf,
    },
    /// A format this build does not read.
    #[error("{path} has model-file format {found}, but this build reads formats 1 to {newest}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
        /// The newest format this build reads.
        newest: u32,
    },
    /// The file is for another architecture.
    #[error("{path} holds a `{found}` model, not `{expected}`")]
    WrongModel {
        /// The file.
        path: PathBuf,
        /// The model it holds.
        found: String,
        /// The model built.
        expected: String,
    },
    /// The file is for another configuration of the architecture.
    #[error("{path} holds a `{model}` with configuration {found}, but this one has {expected}")]
    WrongConfig {
        /// The file.
        path: PathBuf,
        /// The architecture.
        model: String,
        /// The file's configuration (JSON).
        found: String,
        /// The built model's configuration (JSON).
        expected: String,
    },
    /// Dense against RPG.
    #[error("{path} holds a {} model, but a {} model was built", found.name(), expected.name())]
    WrongMode {
        /// The file.
        path: PathBuf,
        /// The file's mode.
        found: Mode,
        /// The built store's mode.
        expected: Mode,
    },
    /// Another seed, placement, ring lengths or scale rule.
    #[error("{path} was trained with another ring spec ({difference}, file vs model)")]
    WrongSpec {
        /// The file.
        path: PathBuf,
        /// The first field that differs, both values.
        difference: String,
    },
    /// Another layer registry.
    #[error(
        "{path} was trained with another layer registry (layer names, shapes or sharing differ)"
    )]
    WrongRegistry {
        /// The file.
        path: PathBuf,
    },
    /// The tensors do not fit the model (missing, another shape, not
    /// finite: a [`crate::TensorMismatch`] inside) or cannot be decoded.
    #[error("{path}: {source}")]
    Tensors {
        /// The file.
        path: PathBuf,
        /// Why.
        source: candle_core::Error,
    },
    /// A tensor operation failed while saving.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A loaded tensor that does not fit the model it is loaded into.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorMismatch {
    /// The model needs a tensor the file lacks.
    #[error("the file has no tensor `{name}`, which this model needs")]
    Missing {
        /// The tensor.
        name: String,
    },
    /// Another shape.
    #[error(
        "tensor `{name}` has shape {found:?} in the file but the model needs {expected:?}: the file is from another model or spec"
    )]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A NaN or an infinity.
    #[error(
        "tensor `{name}` holds a non-finite value ({value} at index {index}): the file is corrupt or comes from a diverged run; use an earlier checkpoint"
    )]
    NonFinite {
        /// The tensor.
        name: String,
        /// The value.
        value: f32,
        /// Its flat index.
        index: usize,
    },
}

impl From<TensorMismatch> for candle_core::Error {
    fn from(e: TensorMismatch) -> Self {
        candle_core::Error::wrap(e)
    }
}
