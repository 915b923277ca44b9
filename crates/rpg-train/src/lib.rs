//! # rpg-train: trainer, data and the `rpg` command line
#![warn(missing_docs)]

pub mod data;
