//! Errors that name a setting by its key, so that whoever shows them can
//! name it the way the user gave it: a config file's key, or the flag of a
//! command line (`image_size` is `--image-size`). Libraries never name
//! flags.

use std::fmt::Display;

/// A setting whose value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` = {value}: {reason}")]
pub struct InvalidSetting {
    /// The key, as config files spell it (`batch_size`).
    pub key: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What is wrong and what would do.
    pub reason: String,
}

impl InvalidSetting {
    /// `key` = `value` is refused because of `reason`.
    pub fn new(key: &'static str, value: impl Display, reason: impl Into<String>) -> Self {
        Self {
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Two settings that cannot go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{first}` and `{second}` cannot go together: {reason}")]
pub struct ConflictingSettings {
    /// One key.
    pub first: &'static str,
    /// The other key.
    pub second: &'static str,
    /// Why, and which to keep.
    pub reason: String,
}
