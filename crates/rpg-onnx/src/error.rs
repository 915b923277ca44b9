//! Errors building a graph.

/// A graph that cannot be written as asked.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A tensor's data does not fill its shape.
    #[error("ONNX tensor `{name}`: shape needs {expected} values, got {got}")]
    DataLength {
        /// The tensor.
        name: String,
        /// Values the shape needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// Two values with one name.
    #[error("ONNX graph: the name `{0}` is used twice")]
    DuplicateName(String),
}
