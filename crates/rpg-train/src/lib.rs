//! # rpg-train: trainer, data and the work behind the `rpg` command line
//!
//! [`trainer::train`] runs a [`config::TrainConfig`] end to end: data
//! ([`data`]), model and parameters ([`setup`]), the training step
//! ([`step`]), optimizer ([`optim`]), schedule ([`schedule`]), evaluation
//! ([`evaluate`]), checkpoints ([`checkpoint`]), metrics and plots.
//! [`compress`], [`sweep`] and [`bench`] are the other commands' work. The
//! `rpg` binary (crate `rpg-cli`) sits above this library: nothing here
//! knows the command line or prints. A run reports through [`events`], and
//! errors are typed ([`Error`]).
#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod compress;
pub mod compress_config;
pub mod config;
pub mod distributed;
mod error;
pub mod evaluate;
pub mod events;
pub mod export;
pub mod lock;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod output;
pub mod plot;
pub mod predict;
pub mod qat;
pub mod reproduce;
pub mod schedule;
pub mod selftest;
pub mod setup;
pub mod step;
pub mod summary;
pub mod sweep;
pub mod trainer;

pub use compress_config::CompressConfig;
pub use config::TrainConfig;
pub use error::{Error, Result, SettingError};
pub use evaluate::{EvalResult, evaluate};
pub use events::{Event, Events, Silent};
pub use summary::Summary;
pub use trainer::{finetune, train, train_across, train_until};
