//! The layer registry: every parameter tensor of a model, in a fixed order,
//! with whether it is generated from a ring and from which one.

use std::collections::HashSet;

use crate::{Error, Result};

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerInfo {
    /// Unique name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Shape, outermost first: `(out, in, kh, kw)` for a conv, `(out, in)`
    /// for a linear layer.
    pub shape: Vec<usize>,
    /// Generated from a ring (`true`) or held as its own parameter.
    pub shared: bool,
    /// Which ring serves it (0 for the default single global ring).
    pub group: usize,
}

impl LayerInfo {
    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Kaiming fan-in: `in * kh * kw` (1 for a vector).
    pub fn fan_in(&self) -> usize {
        match self.shape.as_slice() {
            [] | [_] => 1,
            [_, rest @ ..] => rest.iter().product(),
        }
    }

    /// Kaiming fan-out: `out * kh * kw` (`out` for a matrix or vector).
    pub fn fan_out(&self) -> usize {
        match self.shape.as_slice() {
            [] => 1,
            [out] | [out, _] => *out,
            [out, _, rest @ ..] => out * rest.iter().product::<usize>(),
        }
    }
}

/// The ordered list of a model's parameter tensors. Order matters: the
/// placement cuts its index stream across shared layers in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerRegistry {
    layers: Vec<LayerInfo>,
}

impl LayerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a registry from layers, checking names and shapes.
    pub fn from_layers(layers: impl IntoIterator<Item = LayerInfo>) -> Result<Self> {
        let mut registry = Self::new();
        for layer in layers {
            registry.push(layer)?;
        }
        Ok(registry)
    }

    /// Appends a layer. Fails on a duplicate name or an empty shape.
    pub fn push(&mut self, layer: LayerInfo) -> Result<()> {
        if layer.shape.is_empty() || layer.shape.contains(&0) {
            return Err(Error::EmptyLayer {
                name: layer.name,
                shape: layer.shape,
            });
        }
        if self.layers.iter().any(|l| l.name == layer.name) {
            return Err(Error::DuplicateLayer(layer.name));
        }
        self.layers.push(layer);
        Ok(())
    }

    /// Appends a shared layer of group 0.
    pub fn push_shared(&mut self, name: impl Into<String>, shape: &[usize]) -> Result<()> {
        self.push(LayerInfo {
            name: name.into(),
            shape: shape.to_vec(),
            shared: true,
            group: 0,
        })
    }

    /// Appends an unshared layer.
    pub fn push_unshared(&mut self, name: impl Into<String>, shape: &[usize]) -> Result<()> {
        self.push(LayerInfo {
            name: name.into(),
            shape: shape.to_vec(),
            shared: false,
            group: 0,
        })
    }

    /// All layers in order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// The layer with this name.
    pub fn get(&self, name: &str) -> Option<&LayerInfo> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Shared layers in order.
    pub fn shared(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers.iter().filter(|l| l.shared)
    }

    /// Number of ring groups the shared layers use (max group + 1).
    pub fn group_count(&self) -> usize {
        self.shared().map(|l| l.group + 1).max().unwrap_or(0)
    }

    /// Shared element count per group (`T_g`).
    pub fn shared_elements_per_group(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.group_count()];
        for layer in self.shared() {
            totals[layer.group] += layer.numel() as u64;
        }
        totals
    }

    /// Element count of all shared layers (`T`).
    pub fn shared_params(&self) -> u64 {
        self.shared().map(|l| l.numel() as u64).sum()
    }

    /// Element count of all unshared layers.
    pub fn unshared_params(&self) -> u64 {
        self.layers
            .iter()
            .filter(|l| !l.shared)
            .map(|l| l.numel() as u64)
            .sum()
    }

    /// Element count of the dense model.
    pub fn dense_params(&self) -> u64 {
        self.layers.iter().map(|l| l.numel() as u64).sum()
    }

    /// Checks there is something to share and that groups are dense.
    pub fn validate(&self) -> Result<()> {
        if self.shared().next().is_none() {
            return Err(Error::NoSharedLayers);
        }
        let per_group = self.shared_elements_per_group();
        if let Some(empty) = per_group.iter().position(|&t| t == 0) {
            return Err(Error::EmptyGroup(empty));
        }
        for (group, &elements) in per_group.iter().enumerate() {
            if elements > u64::from(u32::MAX) {
                return Err(Error::TooManyElements { group, elements });
            }
        }
        debug_assert_eq!(
            self.layers
                .iter()
                .map(|l| &l.name)
                .collect::<HashSet<_>>()
                .len(),
            self.layers.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_follows_kaiming() {
        let conv = LayerInfo {
            name: "c".into(),
            shape: vec![64, 32, 3, 3],
            shared: true,
            group: 0,
        };
        assert_eq!(conv.fan_out(), 576);
        let linear = LayerInfo {
            shape: vec![10, 84],
            ..conv
        };
        assert_eq!(linear.fan_out(), 10);
    }

    #[test]
    fn duplicates_and_empty_shapes_are_errors() {
        let mut r = LayerRegistry::new();
        r.push_shared("a", &[2, 3]).unwrap();
        assert_eq!(
            r.push_shared("a", &[2, 3]),
            Err(Error::DuplicateLayer("a".into()))
        );
        assert!(matches!(
            r.push_shared("b", &[0, 3]),
            Err(Error::EmptyLayer { .. })
        ));
        assert!(matches!(
            r.push_shared("c", &[]),
            Err(Error::EmptyLayer { .. })
        ));
    }

    #[test]
    fn empty_and_gapped_registries_are_errors() {
        assert_eq!(LayerRegistry::new().validate(), Err(Error::NoSharedLayers));
        let mut r = LayerRegistry::new();
        r.push_unshared("bias", &[4]).unwrap();
        assert_eq!(r.validate(), Err(Error::NoSharedLayers));
        r.push(LayerInfo {
            name: "w".into(),
            shape: vec![4, 4],
            shared: true,
            group: 1,
        })
        .unwrap();
        assert_eq!(r.validate(), Err(Error::EmptyGroup(0)));
    }

    #[test]
    fn too_many_elements_is_an_error() {
        let mut r = LayerRegistry::new();
        r.push_shared("huge", &[65_536, 65_536]).unwrap();
        assert!(matches!(r.validate(), Err(Error::TooManyElements { .. })));
    }

    #[test]
    fn counts_add_up() {
        let mut r = LayerRegistry::new();
        r.push_shared("w1", &[8, 4]).unwrap();
        r.push_unshared("b1", &[8]).unwrap();
        r.push_shared("w2", &[2, 8]).unwrap();
        assert_eq!(r.shared_params(), 48);
        assert_eq!(r.unshared_params(), 8);
        assert_eq!(r.dense_params(), 56);
        assert_eq!(r.group_count(), 1);
    }
}
