//! # rpg-nn: any Candle model becomes an RPG model
//!
//! A model written once against `candle_nn::VarBuilder` runs dense or RPG
//! unchanged: [`ParamStore`] is the `VarBuilder` backend. In RPG mode the
//! shared weights (chosen by a [`SharingPolicy`], the paper's by default) are
//! generated from a ring by `rpg_core`'s fused kernels; everything else is an
//! ordinary persistent `Var`.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use rpg_core::RingSpec;
//! use rpg_nn::{ParamStore, SharingPolicy, record_parameters};
//!
//! // Any candle-nn model: three linear layers.
//! let build = |vb: candle_nn::VarBuilder| -> candle_core::Result<_> {
//!     let a = candle_nn::linear(4, 8, vb.pp("fc1"))?;
//!     let b = candle_nn::linear(8, 8, vb.pp("fc2"))?;
//!     let c = candle_nn::linear(8, 3, vb.pp("fc3"))?;
//!     Ok(move |x: &Tensor| c.forward(&b.forward(&a.forward(x)?.relu()?)?.relu()?))
//! };
//! // 1. Record the parameters; the paper's policy shares fc2 only here.
//! let registry = SharingPolicy::paper().registry(&record_parameters(build)?)?;
//! // 2. An RPG store with a 10-entry ring, and the model built on it once.
//! let store = ParamStore::rpg(registry, &RingSpec::global(10, 7), &Device::Cpu, DType::F32)?;
//! let model = build(store.var_builder())?;
//! // 3. A training step: regenerate, forward, backward, ring gradient.
//! store.regenerate()?;
//! let loss = model(&Tensor::ones((2, 4), DType::F32, &Device::Cpu)?)?.sqr()?.sum_all()?;
//! let grads = store.gradients(&loss.backward()?)?;
//! assert_eq!(grads[0].group, rpg_nn::ParamGroup::Ring);
//! assert_eq!(grads[0].grad.dims(), &[10]);
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod checkpoint;
mod device;
mod device_placement;
pub mod durable;
mod grad;
mod init;
mod mode;
mod model_file_error;
mod policy;
mod record;
mod store;

pub use checkpoint::{
    CHECKSUM_KEY, FORMAT_VERSION, FORMAT_WITHOUT_CHECKSUM, ModelFile, ModelFileHeader,
    load_model_file, read_header, save_model_file,
};
pub use device::{device_memory_used, device_name, parse_device};
pub use device_placement::DevicePlacement;
pub use grad::{ParamGrad, ParamGroup};
pub use init::{fnv1a, init_values};
pub use mode::Mode;
pub use model_file_error::{ModelFileError, TensorMismatch};
pub use policy::{SharingPolicy, glob_match, is_buffer};
pub use record::record_parameters;
pub use store::{GenerationPath, ParamStore, RING_NAME};

/// `docs/guide/own-model.md`, compiled and run as a doctest so that the
/// guide's code keeps working.
#[doc = include_str!("../../../docs/guide/own-model.md")]
#[cfg(doctest)]
pub struct OwnModelGuide;
