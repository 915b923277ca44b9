//! # rpg-train: trainer, data and the `rpg` command line
//!
//! [`trainer::train`] runs a [`config::TrainConfig`] end to end: data
//! ([`data`]), model and parameters ([`setup`]), optimizer ([`optim`]),
//! schedule ([`schedule`]), checkpoints ([`checkpoint`]), metrics and plots.
#![warn(missing_docs)]

pub mod allocator;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod compress;
pub mod config;
pub mod data;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod setup;
pub mod sweep;
pub mod threads;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{EvalResult, Summary, evaluate, finetune, train, train_until};
