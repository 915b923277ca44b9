//! # rpg-compress: prune, quantize, ship
//!
//! Every shared weight of an RPG model is a signed, scaled copy of a ring
//! entry, so quantizing or pruning the ring compresses all shared layers at
//! once. This crate holds the kernels ([`quantize`], [`prune`]) and the
//! compressed artifact ([`artifact`]): one safetensors file that a model can
//! be rebuilt from.
#![warn(missing_docs)]

pub mod artifact;
pub mod prune;
pub mod quantize;
pub mod structured;
mod weights;

pub use artifact::{Artifact, CompressSettings, RingStorage, TensorStorage};
pub use prune::{Sparse, global_magnitude_prune, magnitude_prune, sparsity};
pub use quantize::{Bits, Quantized, quantize, quantize_f16_scales};
pub use structured::{channels_to_keep, fold_batch_norms, prune_channels};
pub use weights::{PruneScope, prune_weights};
