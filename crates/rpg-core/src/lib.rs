//! # rpg-core: the ring and placement mathematics of Recurrent Parameter Generators
//!
//! A network's shared weights are generated from one small learnable vector,
//! the *ring*: `w_i = c_i * s_i ⊙ ring[idx_i]`, where the indices `idx_i`
//! come from even sampling over the whole network and one global shuffle,
//! `s_i` are fixed random signs and `c_i` a per-layer Kaiming scale. This
//! crate computes that placement from a seed with a frozen generator (so a
//! model is saved as ring + seed + spec, never as index tables) and provides
//! the generation and gradient kernels on plain slices. It knows nothing of
//! any tensor framework.
//!
//! ```
//! use rpg_core::{kernels, LayerRegistry, Placement, RingSpec};
//!
//! // A tiny two-layer model: both weight matrices come from a 16-entry ring.
//! let mut registry = LayerRegistry::new();
//! registry.push_shared("fc1.weight", &[8, 4])?;
//! registry.push_unshared("fc1.bias", &[8])?;
//! registry.push_shared("fc2.weight", &[2, 8])?;
//! let placement = Placement::new(&RingSpec::global(16, 42), &registry)?;
//!
//! // Every ring entry serves floor(48/16) = 3 positions.
//! assert!(placement.uses_per_entry(0).iter().all(|&u| u == 3));
//!
//! // Generate all shared weights in one pass.
//! let mut ring = vec![0.1f32; 16];
//! let mut weights = vec![0.0f32; placement.shared_len()];
//! placement.generate(&[&ring[..]], &mut weights)?;
//!
//! // One gradient step on the loss sum(w^2) / 2, whose gradient is w itself.
//! let mut ring_grad = vec![0.0f32; 16];
//! placement.accumulate(&weights, &mut [&mut ring_grad[..]])?;
//! for (r, g) in ring.iter_mut().zip(&ring_grad) {
//!     *r -= 0.01 * g;
//! }
//! let mut after = vec![0.0f32; placement.shared_len()];
//! placement.generate(&[&ring[..]], &mut after)?;
//! let norm = |w: &[f32]| w.iter().map(|x| x * x).sum::<f32>();
//! assert!(norm(&after) < norm(&weights));
//!
//! // Single-layer slice kernels work the same way.
//! let fc2 = placement.layer("fc2.weight").unwrap();
//! let mut fc2_weights = vec![0.0f32; fc2.len];
//! kernels::generate(&ring, placement.layer_entries(fc2), fc2.scale, &mut fc2_weights)?;
//! assert_eq!(&fc2_weights[..], &after[fc2.range()]);
//! # Ok::<(), rpg_core::Error>(())
//! ```
#![warn(missing_docs)]

mod dof;
mod entry;
mod error;
mod fork_join;
pub mod kernels;
pub mod names;
mod placement;
mod registry;
pub mod rng;
mod setting;
mod spec;

pub use dof::{DofReport, ring_lengths_for_ratio, split_ring_budget};
pub use entry::{INDEX_MASK, SIGN_BIT};
pub use error::{Error, Result};
pub use fork_join::{ForkJoin, ScopedThreads};
pub use placement::{LayerPlacement, Notice, Placement};
pub use registry::{LayerInfo, LayerRegistry};
pub use setting::{ConflictingSettings, InvalidSetting};
pub use spec::{MAX_RING_LENGTH, PlacementKind, PlacementVersion, RingSpec, ScaleRule};
