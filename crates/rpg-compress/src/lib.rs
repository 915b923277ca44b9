//! # rpg-compress: prune, quantize, ship
//!
//! Every shared weight of an RPG model is a signed, scaled copy of a ring
//! entry, so quantizing or pruning the ring compresses all shared layers at
//! once. This crate holds the kernels ([`quantize`], [`prune`]) and the
//! compressed artifact ([`artifact`]): one safetensors file that a model can
//! be rebuilt from.
#![warn(missing_docs)]

pub mod artifact;
pub mod channel_groups;
pub mod onnx_run;
pub mod prune;
pub mod qdq;
pub mod quantize;
pub mod structured;
mod weights;

pub use artifact::{Artifact, CompressSettings, RingStorage, TensorStorage};
pub use channel_groups::{ChannelGroup, GroupMember, channel_groups};
pub use onnx_run::OnnxRunner;
pub use prune::{Sparse, global_magnitude_prune, magnitude_prune, sparsity};
pub use qdq::{fold_batch_norm_nodes, quantize_qdq};
pub use quantize::{Bits, Quantized, quantize, quantize_f16_scales};
pub use structured::{ChannelPruning, channel_importance, fold_batch_norms, prune_channel_groups};
pub use weights::{PruneScope, prune_weights};
