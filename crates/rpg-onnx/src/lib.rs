//! # rpg-onnx: a small ONNX writer
//!
//! Builds an inference graph from named f32 weights and standard operators
//! and serialises it as an ONNX model (opset [`OPSET`]). It knows nothing of
//! Candle or of RPG: `rpg-models` walks each model and emits its layers.
//! The protobuf messages are declared with prost's derives, so building
//! needs no protoc.
//!
//! ```
//! use rpg_onnx::{Attr, Dim, Graph, encode};
//!
//! let mut g = Graph::new("linear");
//! let x = g.input("input", &[Dim::Dynamic("batch"), Dim::Fixed(2)])?;
//! let w = g.initializer("fc.weight", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0])?;
//! let y = g.node("Gemm", &[&x, &w], vec![Attr::Int("transB", 1)]);
//! g.output(&y, "logits", &[Dim::Dynamic("batch"), Dim::Fixed(3)])?;
//! let bytes = encode(&g.into_model(("example", "0.1"), "", &[]));
//! assert!(!bytes.is_empty());
//! # Ok::<(), rpg_onnx::OnnxError>(())
//! ```
#![warn(missing_docs)]

mod error;
mod graph;
pub mod proto;

pub use error::OnnxError;
pub use graph::{Attr, Dim, Graph, IR_VERSION, OPSET, encode};
