//! # rpg-models: the model zoo
//!
//! Each model is written once against `candle_nn::VarBuilder`, so it runs
//! dense or RPG unchanged (see `rpg_nn::ParamStore`). Parameter names follow
//! torchvision's state dicts.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use rpg_models::{build_model, model_entry};
//! use rpg_nn::ParamStore;
//!
//! let cfg = model_entry("lenet5")?.config(10);
//! let store = ParamStore::dense(&Device::Cpu, DType::F32, 0);
//! let model = build_model(&cfg, store.var_builder())?;
//! let logits = model.forward_t(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod config;
pub mod lenet;
pub mod mlp;
pub mod mobilenet;
pub mod onnx;
mod registry;
pub mod resnet;
pub mod vit;

pub use config::{ModelConfig, Normalize};
pub use onnx::{ExportOnnx, ONNX_INPUT, ONNX_OUTPUT, onnx_model};
pub use registry::{DynModel, MODELS, ModelEntry, ZooModel, build_model, model_entry};
