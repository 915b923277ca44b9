//! Enums spelled by name in flags and config files, parsed in one way.

/// An enum whose values have one spelling each (the serde spelling).
pub trait Named: Copy + PartialEq + 'static {
    /// What the values are, for messages (`optimizer`).
    const WHAT: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// The spelling of a value.
    fn name(self) -> &'static str;
}

/// A name no value has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`: expected one of {expected}")]
pub struct UnknownName {
    /// What was being parsed.
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// The valid names, comma-separated.
    pub expected: String,
}

/// The value spelled `s`.
pub fn parse_named<T: Named>(s: &str) -> Result<T, UnknownName> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == s)
        .ok_or_else(|| UnknownName {
            what: T::WHAT,
            value: s.to_string(),
            expected: T::ALL
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `FromStr` and `Display` of a [`Named`] enum, by its names.
macro_rules! text_impls {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                $crate::names::parse_named(s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::names::Named::name(*self))
            }
        }
    };
}
pub(crate) use text_impls;
