//! # rpg-train: trainer, data and the work behind the `rpg` command line
//!
//! [`trainer::train`] runs a [`config::TrainConfig`] end to end: data
//! ([`data`]), model and parameters ([`setup`]), the training step
//! ([`step`]), optimizer ([`optim`]), schedule ([`schedule`]), evaluation
//! ([`evaluate`]), checkpoints ([`checkpoint`]), metrics and plots.
//! [`compress`], [`sweep`] and [`bench`] are the other commands' work. The
//! `rpg` binary's flags and printing live above this library (`src/cli.rs`,
//! `src/commands/`): nothing here knows the command line. Errors are typed
//! ([`Error`]).
#![warn(missing_docs)]

pub mod allocator;
pub mod bench;
pub mod checkpoint;
pub mod compress;
pub mod config;
pub mod data;
mod error;
pub mod evaluate;
pub mod export;
pub mod lock;
pub mod loss;
pub mod metrics;
pub mod names;
pub mod optim;
pub mod output;
pub mod plot;
pub mod predict;
pub mod schedule;
pub mod selftest;
pub mod setup;
pub mod step;
pub mod sweep;
pub mod threads;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Error, Result};
pub use evaluate::{EvalResult, evaluate};
pub use trainer::{Summary, finetune, train, train_until};
