//! The arithmetic GPU convolutions may use: TF32 tensor cores (PyTorch's
//! default for convolutions) or strict f32. One setting per process, set by
//! the trainer from `--precision` before the first step; CPU kernels always
//! compute in f32 and ignore it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// How f32 convolutions may be computed on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// TF32 tensor cores allowed (10-bit mantissa products, f32
    /// accumulation), as PyTorch allows for convolutions by default.
    #[default]
    Tf32,
    /// Strict f32 products.
    F32,
}

static STRICT_F32: AtomicBool = AtomicBool::new(false);

impl Precision {
    /// The flag spelling: `tf32` or `f32`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Tf32 => "tf32",
            Precision::F32 => "f32",
        }
    }
}

/// Sets the precision of every GPU convolution from now on, process-wide.
pub fn set_precision(precision: Precision) {
    STRICT_F32.store(precision == Precision::F32, Ordering::Relaxed);
}

/// The precision GPU convolutions use now.
pub fn precision() -> Precision {
    if STRICT_F32.load(Ordering::Relaxed) {
        Precision::F32
    } else {
        Precision::Tf32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown precision name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}`: expected tf32 or f32")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tf32" => Ok(Precision::Tf32),
            "f32" => Ok(Precision::F32),
            other => Err(UnknownPrecision(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for p in [Precision::Tf32, Precision::F32] {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        assert_eq!(
            "fp16".parse::<Precision>().unwrap_err().to_string(),
            "unknown precision `fp16`: expected tf32 or f32"
        );
    }
}
