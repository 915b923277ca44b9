//! Degrees-of-freedom accounting, and solving ring lengths from a ratio.

use crate::registry::LayerRegistry;
use crate::spec::RingSpec;
use crate::{Error, Result};

/// The DoF figures of a model under a ring spec.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DofReport {
    /// Sum of ring lengths.
    pub ring_dof: u64,
    /// Trainable parameters not generated from a ring.
    pub unshared_params: u64,
    /// `ring_dof + unshared_params`.
    pub total_dof: u64,
    /// Elements generated from rings (`T`).
    pub shared_params: u64,
    /// Parameters of the dense model of the same architecture.
    pub dense_params: u64,
    /// `total_dof / dense_params`.
    pub dof_ratio: f64,
}

impl DofReport {
    /// The report for a registry and a spec.
    pub fn new(registry: &LayerRegistry, spec: &RingSpec) -> Self {
        let ring_dof = spec.ring_dof();
        let unshared_params = registry.unshared_params();
        let dense_params = registry.dense_params();
        let total_dof = ring_dof + unshared_params;
        Self {
            ring_dof,
            unshared_params,
            total_dof,
            shared_params: registry.shared_params(),
            dense_params,
            dof_ratio: total_dof as f64 / dense_params.max(1) as f64,
        }
    }
}

/// Ring lengths (one per group) that make the total DoF as close as possible
/// to `ratio * dense_params`. The ring budget is split between groups in
/// proportion to the elements they serve, each ring getting at least one
/// entry.
pub fn ring_lengths_for_ratio(registry: &LayerRegistry, ratio: f64) -> Result<Vec<usize>> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(Error::RatioOutOfRange(ratio));
    }
    registry.validate()?;
    let dense = registry.dense_params();
    let unshared = registry.unshared_params();
    let groups = registry.group_count() as u64;
    let budget = (ratio * dense as f64).round() as u64;
    if budget < unshared + groups {
        return Err(Error::RatioTooSmall {
            ratio,
            budget,
            unshared,
            min_ratio: (unshared + groups) as f64 / dense as f64,
        });
    }
    Ok(split_ring_budget(registry, (budget - unshared) as usize))
}

/// Splits a total ring length between the registry's groups in proportion
/// to the elements they serve (floor, at least 1 each, the remainder to the
/// largest group), so the lengths sum to `total` whenever `total >= G`.
pub fn split_ring_budget(registry: &LayerRegistry, total: usize) -> Vec<usize> {
    let per_group = registry.shared_elements_per_group();
    let shared: u64 = per_group.iter().sum::<u64>().max(1);
    let mut lengths: Vec<usize> = per_group
        .iter()
        .map(|&t| ((total as f64 * t as f64 / shared as f64).floor() as usize).max(1))
        .collect();
    let assigned: usize = lengths.iter().sum();
    if let Some(largest) = (0..lengths.len()).max_by_key(|&g| per_group[g])
        && assigned < total
    {
        lengths[largest] += total - assigned;
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerInfo;

    fn registry() -> LayerRegistry {
        let mut r = LayerRegistry::new();
        r.push_unshared("stem", &[10, 10]).unwrap();
        r.push_shared("a", &[30, 10]).unwrap();
        r.push(LayerInfo {
            name: "b".into(),
            shape: vec![60, 10],
            shared: true,
            group: 1,
        })
        .unwrap();
        r
    }

    #[test]
    fn ratio_solves_to_exact_total() {
        let r = registry();
        let lengths = ring_lengths_for_ratio(&r, 0.5).unwrap();
        assert_eq!(lengths.iter().sum::<usize>(), 500 - 100);
        assert_eq!(lengths, vec![133, 267]);
        let mut spec = RingSpec::global(1, 0);
        spec.ring_lengths = lengths;
        let report = DofReport::new(&r, &spec);
        assert_eq!(report.total_dof, 500);
        assert_eq!(report.dense_params, 1000);
        assert!((report.dof_ratio - 0.5).abs() < 1e-12);
    }

    #[test]
    fn impossible_ratios_are_errors() {
        let r = registry();
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(
                ring_lengths_for_ratio(&r, bad),
                Err(Error::RatioOutOfRange(_))
            ));
        }
        let err = ring_lengths_for_ratio(&r, 0.05).unwrap_err();
        assert!(matches!(err, Error::RatioTooSmall { .. }));
        assert!(err.to_string().contains("smallest ratio"));
    }
}
