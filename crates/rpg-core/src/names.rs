//! Enums spelled by name in flags and config files, parsed one way: a
//! [`Named`] enum lists its values and their spellings once, and
//! [`named_text_impls!`](crate::named_text_impls) derives `FromStr` and
//! `Display` from that list.

/// An enum whose values have one spelling each.
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

impl UnknownName {
    /// `value` is not one of `T`'s names.
    pub fn of<T: Named>(value: &str) -> Self {
        Self {
            what: T::WHAT,
            value: value.to_string(),
            expected: T::ALL
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The value spelled `s`.
pub fn parse_named<T: Named>(s: &str) -> Result<T, UnknownName> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == s)
        .ok_or_else(|| UnknownName::of::<T>(s))
}

/// `FromStr` (error [`UnknownName`]) and `Display` of a [`Named`] enum, by
/// its names.
#[macro_export]
macro_rules! named_text_impls {
    ($t:ty) => {
        impl ::std::str::FromStr for $t {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::names::parse_named(s)
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::names::Named::name(*self))
            }
        }
    };
}

/// Serde by name: `#[serde(with = "rpg_core::names::by_name")]` on a field
/// of a [`Named`] type reads and writes its spelling, and an unknown name
/// is an error that lists the valid ones.
#[cfg(feature = "serde")]
pub mod by_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Named, parse_named};

    /// Writes the name.
    pub fn serialize<T: Named, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.name())
    }

    /// Reads a name.
    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let name = String::deserialize(d)?;
        parse_named(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fruit {
        Apple,
        Blood,
    }

    impl Named for Fruit {
        const WHAT: &'static str = "fruit";
        const ALL: &'static [Self] = &[Fruit::Apple, Fruit::Blood];
        fn name(self) -> &'static str {
            match self {
                Fruit::Apple => "apple",
                Fruit::Blood => "blood-orange",
            }
        }
    }

    crate::named_text_impls!(Fruit);

    #[test]
    fn names_round_trip_and_an_unknown_name_lists_the_known_ones() {
        for &f in Fruit::ALL {
            assert_eq!(f.to_string().parse::<Fruit>(), Ok(f));
        }
        assert_eq!(
            "pear".parse::<Fruit>(),
            Err(UnknownName {
                what: "fruit",
                value: "pear".into(),
                expected: "apple, blood-orange".into(),
            })
        );
    }
}
