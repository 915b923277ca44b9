//! # rpg-nn: Candle-backed RPG layers
//!
//! Under construction: this crate will turn any model written against
//! `candle_nn::VarBuilder` into an RPG model. It exposes nothing yet.
