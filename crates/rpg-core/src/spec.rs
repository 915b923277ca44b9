//! The ring spec: how many rings, how long, which seed, which placement.

use std::fmt;
use std::str::FromStr;

use crate::names::{Named, UnknownName};
use crate::{Error, Result};

/// Longest ring a group may have: indices carry the sign in bit 31.
pub const MAX_RING_LENGTH: usize = (1 << 31) - 1;

/// How ring entries are assigned to weight positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PlacementKind {
    /// The paper's: even sampling over the whole network, one global
    /// shuffle, per-element sign flips.
    #[default]
    Paper,
    /// HashedNets-style ablation: each position draws a ring index uniformly
    /// with replacement and a random sign.
    Hashed,
    /// Ablation: every layer reads the ring prefix (wrapping), no
    /// permutation, no sign.
    Naive,
    /// The stream `0, 1, 2, ...` (mod N) cut across layers in order, no
    /// shuffle, no sign. With `N >= T` and unit scale this is the dense twin.
    Sequential,
}

impl Named for PlacementKind {
    const WHAT: &'static str = "placement";
    /// Every kind, in documentation order.
    const ALL: &'static [Self] = &[
        PlacementKind::Paper,
        PlacementKind::Hashed,
        PlacementKind::Naive,
        PlacementKind::Sequential,
    ];

    /// Lower-case name used on the command line and in files.
    fn name(self) -> &'static str {
        match self {
            PlacementKind::Paper => "paper",
            PlacementKind::Hashed => "hashed",
            PlacementKind::Naive => "naive",
            PlacementKind::Sequential => "sequential",
        }
    }
}

crate::named_text_impls!(PlacementKind);

/// Version of the placement algorithm. A saved model records it; a version
/// is never changed once released, only added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PlacementVersion {
    /// SplitMix64-seeded PCG32, rejection-sampled bounds, Fisher-Yates;
    /// specified in `docs/format.md`.
    #[default]
    V1,
}

impl PlacementVersion {
    /// The number written into files.
    pub fn number(self) -> u32 {
        match self {
            PlacementVersion::V1 => 1,
        }
    }

    /// Parses a stored version number.
    pub fn from_number(n: u32) -> Result<Self> {
        match n {
            1 => Ok(PlacementVersion::V1),
            other => Err(UnknownName {
                what: "placement version",
                value: other.to_string(),
                expected: "1 (this build knows placement version 1 only)".into(),
            }
            .into()),
        }
    }
}

/// The constant `c_i` each generated layer is multiplied by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ScaleRule {
    /// `c_i = sqrt(F / fan_out_i)` with `F` the largest fan-out among the
    /// shared layers, and the ring initialised with std `sqrt(2 / F)`: every
    /// layer starts at its own Kaiming fan-out std and `c_i >= 1`.
    LargestFanOut,
    /// `c_i = sqrt(F / fan_in_i)` with `F` the largest fan-in among the
    /// shared layers: every layer starts at the Kaiming fan-in std that
    /// Candle's and PyTorch's own layers use, so a shared classifier is not
    /// initialised (and stepped) like a wide conv. The default, the
    /// trainer's as well.
    #[default]
    LargestFanIn,
    /// `c_i = sqrt(F / fan_out_i)` with a fixed `F` (the reference code uses
    /// 4608, the fan-out of a 512-channel 3x3 conv).
    FixedFanOut(u64),
    /// `c_i = 1` (ring init std 1); for the dense-twin identity.
    Unit,
}

impl fmt::Display for ScaleRule {
    /// The spelling of flags and configs: `largest_fan_out`,
    /// `largest_fan_in`, `unit`, or the reference fan-out as a number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleRule::LargestFanOut => f.write_str("largest_fan_out"),
            ScaleRule::LargestFanIn => f.write_str("largest_fan_in"),
            ScaleRule::Unit => f.write_str("unit"),
            ScaleRule::FixedFanOut(fan_out) => write!(f, "{fan_out}"),
        }
    }
}

impl FromStr for ScaleRule {
    type Err = UnknownName;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownName> {
        Ok(match s {
            "largest_fan_out" => ScaleRule::LargestFanOut,
            "largest_fan_in" => ScaleRule::LargestFanIn,
            "unit" => ScaleRule::Unit,
            n => match n.parse::<u64>() {
                Ok(fan_out) if fan_out > 0 => ScaleRule::FixedFanOut(fan_out),
                _ => {
                    return Err(UnknownName {
                        what: "scale rule",
                        value: s.to_string(),
                        expected: "largest_fan_out, largest_fan_in, unit or a positive fan-out such as 4608"
                            .into(),
                    });
                }
            },
        })
    }
}

/// Everything that, with the registry, determines the placement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RingSpec {
    /// Ring length per group (one entry for the default global ring).
    pub ring_lengths: Vec<usize>,
    /// Seed of the placement (and of the default ring initialisation).
    pub seed: u64,
    /// Placement algorithm.
    pub placement: PlacementKind,
    /// Placement algorithm version.
    pub version: PlacementVersion,
    /// Per-layer scale.
    pub scale: ScaleRule,
}

impl RingSpec {
    /// A single global ring with the paper's placement.
    pub fn global(ring_length: usize, seed: u64) -> Self {
        Self {
            ring_lengths: vec![ring_length],
            seed,
            placement: PlacementKind::Paper,
            version: PlacementVersion::V1,
            scale: ScaleRule::default(),
        }
    }

    /// Same spec with another placement.
    pub fn with_placement(mut self, placement: PlacementKind) -> Self {
        self.placement = placement;
        self
    }

    /// Same spec with another scale rule.
    pub fn with_scale(mut self, scale: ScaleRule) -> Self {
        self.scale = scale;
        self
    }

    /// Ring DoF: the sum of ring lengths.
    pub fn ring_dof(&self) -> u64 {
        self.ring_lengths.iter().map(|&n| n as u64).sum()
    }

    /// Checks lengths are in range.
    pub fn validate(&self) -> Result<()> {
        for (group, &len) in self.ring_lengths.iter().enumerate() {
            if len == 0 {
                return Err(Error::ZeroRingLength { group });
            }
            if len > MAX_RING_LENGTH {
                return Err(Error::RingTooLong {
                    group,
                    len: len as u64,
                    max: MAX_RING_LENGTH as u64,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_rule_names_round_trip() {
        for rule in [
            ScaleRule::LargestFanOut,
            ScaleRule::LargestFanIn,
            ScaleRule::Unit,
            ScaleRule::FixedFanOut(4608),
        ] {
            assert_eq!(rule.to_string().parse::<ScaleRule>().unwrap(), rule);
        }
        for bad in ["big", "0", "-3", ""] {
            assert!(matches!(bad.parse::<ScaleRule>(), Err(UnknownName { .. })));
        }
    }

    #[test]
    fn placement_names_round_trip() {
        for &kind in PlacementKind::ALL {
            assert_eq!(kind.name().parse::<PlacementKind>().unwrap(), kind);
        }
        let err = "shuffled".parse::<PlacementKind>().unwrap_err();
        assert_eq!(err.expected, "paper, hashed, naive, sequential");
    }

    #[test]
    fn zero_and_huge_rings_are_errors() {
        assert_eq!(
            RingSpec::global(0, 1).validate(),
            Err(Error::ZeroRingLength { group: 0 })
        );
        assert!(matches!(
            RingSpec::global(MAX_RING_LENGTH + 1, 1).validate(),
            Err(Error::RingTooLong { .. })
        ));
    }

    #[test]
    fn unknown_version_is_an_error() {
        assert!(PlacementVersion::from_number(2).is_err());
        assert_eq!(PlacementVersion::from_number(1), Ok(PlacementVersion::V1));
    }
}
