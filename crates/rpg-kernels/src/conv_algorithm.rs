//! Which of cuDNN's suggested algorithms a convolution pass takes, as plain
//! data so that the rule is tested without a GPU (`cuda/cudnn_conv.rs`
//! asks cuDNN and applies the answer).
//!
//! cuDNN's heuristics return a ranked list of (algorithm, status, math
//! type). An algorithm runs with the math type it was ranked with: the
//! convolution descriptor must carry that math type when the pass runs, or
//! cuDNN refuses the algorithm or runs a slower variant. PyTorch sets the
//! descriptor from the chosen result the same way.

use crate::precision::Precision;

/// cuDNN's math types (`cudnnMathType_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
pub(crate) enum MathType {
    /// cuDNN's choice; TF32 tensor cores for f32 on Ampere and later.
    Default,
    /// Tensor cores.
    TensorOp,
    /// Tensor cores, converting f32 data down to f16.
    TensorOpAllowConversion,
    /// Plain f32 fused multiply-adds.
    Fma,
}

impl Precision {
    /// Whether a pass may run with `math` at this precision: TF32 allows
    /// everything that keeps f32 data (never a conversion to f16); strict
    /// f32 allows plain f32 arithmetic only.
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    pub(crate) fn allows(self, math: MathType) -> bool {
        match self {
            Precision::Tf32 => math != MathType::TensorOpAllowConversion,
            Precision::F32 => math == MathType::Fma,
        }
    }
}

/// One entry of cuDNN's ranked list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
pub(crate) struct Ranked<A> {
    pub algo: A,
    /// Whether cuDNN can run it for this shape (`CUDNN_STATUS_SUCCESS`).
    pub supported: bool,
    pub math: MathType,
}

/// The algorithm a pass runs, with the math type to set before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
pub(crate) struct Choice<A> {
    pub algo: A,
    pub math: MathType,
}

/// The best-ranked supported algorithm whose math type `precision` allows;
/// `None` when there is none (or the list is empty).
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
pub(crate) fn choose<A: Copy>(
    ranked: impl IntoIterator<Item = Ranked<A>>,
    precision: Precision,
) -> Option<Choice<A>> {
    ranked
        .into_iter()
        .find(|r| r.supported && precision.allows(r.math))
        .map(|r| Choice {
            algo: r.algo,
            math: r.math,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(algo: u8, supported: bool, math: MathType) -> Ranked<u8> {
        Ranked {
            algo,
            supported,
            math,
        }
    }

    #[test]
    fn strict_f32_skips_tensor_core_results_and_keeps_the_math_type() {
        let list = [
            ranked(1, true, MathType::TensorOp),
            ranked(2, false, MathType::Fma),
            ranked(3, true, MathType::Fma),
        ];
        assert_eq!(
            choose(list, Precision::F32),
            Some(Choice {
                algo: 3,
                math: MathType::Fma
            })
        );
        assert_eq!(
            choose(list, Precision::Tf32),
            Some(Choice {
                algo: 1,
                math: MathType::TensorOp
            })
        );
    }

    #[test]
    fn no_conversion_to_f16_and_no_panic_on_an_empty_list() {
        let list = [ranked(4, true, MathType::TensorOpAllowConversion)];
        assert_eq!(choose(list, Precision::Tf32), None);
        assert_eq!(choose(Vec::<Ranked<u8>>::new(), Precision::F32), None);
    }
}
