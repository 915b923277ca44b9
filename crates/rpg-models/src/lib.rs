//! # rpg-models: the model zoo
//!
//! Under construction: it exposes nothing yet.
