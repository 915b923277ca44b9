//! # rpg-train: trainer and data
//!
//! Under construction: it exposes nothing yet.
