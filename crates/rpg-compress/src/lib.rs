//! # rpg-compress: pruning and quantization
//!
//! Under construction: it exposes nothing yet.
