//! The placement: for each shared layer, its ring indices, signs and scale.
//!
//! Computed once from (spec, registry, seed) and never stored: a saved model
//! keeps the seed and spec and regenerates this exactly (see
//! `docs/format.md`). Each position is one `u32` *entry*: bits 0..31 hold the
//! ring index and bit 31 the sign (set = negative).

use std::fmt;

use crate::entry::{INDEX_MASK, SIGN_BIT};
use crate::fork_join::{ForkJoin, ScopedThreads};
use crate::kernels;
use crate::registry::{LayerInfo, LayerRegistry};
use crate::rng::{Pcg32, StreamPurpose};
use crate::spec::{PlacementKind, RingSpec, ScaleRule};
use crate::{Error, Result};

/// Where one shared layer reads the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlacement {
    /// Layer name.
    pub name: String,
    /// Layer shape.
    pub shape: Vec<usize>,
    /// Ring group.
    pub group: usize,
    /// Offset of the layer's first entry in [`Placement::entries`] (shared
    /// layers are concatenated in registry order).
    pub offset: usize,
    /// Element count.
    pub len: usize,
    /// The constant `c_i` the generated weights are multiplied by.
    pub scale: f32,
}

impl LayerPlacement {
    /// The range of this layer in the concatenated shared weights.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }

    /// The layer as a kernel segment over `range` (its place in the
    /// concatenated weights, or `0..len` for a buffer of its own).
    fn segment(&self, range: std::ops::Range<usize>) -> kernels::Segment {
        kernels::Segment {
            range,
            group: self.group,
            scale: self.scale,
        }
    }

    /// The layer as a segment of a buffer of its own.
    fn local_segment(&self) -> kernels::Segment {
        self.segment(0..self.len)
    }
}

/// Something worth telling the user that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A ring longer than the number of positions it serves: some entries
    /// are never used (allowed, but wasted DoF).
    RingLargerThanServed {
        /// Group index.
        group: usize,
        /// Ring length.
        ring: usize,
        /// Shared elements of the group.
        served: u64,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::RingLargerThanServed {
                group,
                ring,
                served,
            } => write!(
                f,
                "ring {group} has {ring} entries but serves only {served} weights: {} entries are never used",
                *ring as u64 - served
            ),
        }
    }
}

/// The placement implied by a spec and a registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    spec: RingSpec,
    layers: Vec<LayerPlacement>,
    entries: Vec<u32>,
    reference_fan_out: Option<u64>,
    notices: Vec<Notice>,
}

impl Placement {
    /// Computes the placement. Pure: same inputs, same output, on every
    /// platform, thread count and build.
    pub fn new(spec: &RingSpec, registry: &LayerRegistry) -> Result<Self> {
        spec.validate()?;
        registry.validate()?;
        let groups = registry.group_count();
        if spec.ring_lengths.len() != groups {
            return Err(Error::GroupCountMismatch {
                rings: spec.ring_lengths.len(),
                groups,
            });
        }
        let shared: Vec<&LayerInfo> = registry.shared().collect();
        let fan = |l: &LayerInfo| match spec.scale {
            ScaleRule::LargestFanIn => l.fan_in() as u64,
            _ => l.fan_out() as u64,
        };
        let reference_fan_out = match spec.scale {
            ScaleRule::LargestFanOut | ScaleRule::LargestFanIn => {
                shared.iter().map(|l| fan(l)).max()
            }
            ScaleRule::FixedFanOut(f) => Some(f.max(1)),
            ScaleRule::Unit => None,
        };
        let mut layers = Vec::with_capacity(shared.len());
        let mut offset = 0;
        for layer in &shared {
            let scale = match reference_fan_out {
                Some(f) => (f as f64 / fan(layer) as f64).sqrt() as f32,
                None => 1.0,
            };
            layers.push(LayerPlacement {
                name: layer.name.clone(),
                shape: layer.shape.clone(),
                group: layer.group,
                offset,
                len: layer.numel(),
                scale,
            });
            offset += layer.numel();
        }

        let mut entries = vec![0u32; offset];
        let mut notices = Vec::new();
        for (group, &ring_len) in spec.ring_lengths.iter().enumerate() {
            let group_layers: Vec<&LayerPlacement> =
                layers.iter().filter(|l| l.group == group).collect();
            let served: u64 = group_layers.iter().map(|l| l.len as u64).sum();
            if ring_len as u64 > served {
                notices.push(Notice::RingLargerThanServed {
                    group,
                    ring: ring_len,
                    served,
                });
            }
            let lens: Vec<usize> = group_layers.iter().map(|l| l.len).collect();
            let stream = group_stream(spec, group, ring_len as u32, &lens);
            // Cut the group's stream across its layers in registry order.
            let mut cursor = 0;
            for layer in group_layers {
                entries[layer.range()].copy_from_slice(&stream[cursor..cursor + layer.len]);
                cursor += layer.len;
            }
        }
        Ok(Self {
            spec: spec.clone(),
            layers,
            entries,
            reference_fan_out,
            notices,
        })
    }

    /// The spec this placement was computed from.
    pub fn spec(&self) -> &RingSpec {
        &self.spec
    }

    /// Shared layers in registry order.
    pub fn layers(&self) -> &[LayerPlacement] {
        &self.layers
    }

    /// The shared layer with this name.
    pub fn layer(&self, name: &str) -> Option<&LayerPlacement> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// All entries (index | sign bit), concatenated in layer order.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// One layer's entries.
    pub fn layer_entries(&self, layer: &LayerPlacement) -> &[u32] {
        &self.entries[layer.range()]
    }

    /// Total shared element count `T`.
    pub fn shared_len(&self) -> usize {
        self.entries.len()
    }

    /// Ring length per group.
    pub fn ring_lengths(&self) -> &[usize] {
        &self.spec.ring_lengths
    }

    /// The std a ring should be initialised with so that every generated
    /// layer starts at its Kaiming fan-out std `sqrt(2 / fan_out)`.
    pub fn ring_init_std(&self) -> f32 {
        match self.reference_fan_out {
            Some(f) => (2.0 / f as f64).sqrt() as f32,
            None => 1.0,
        }
    }

    /// The reference fan `F` of the scale rule (`None` for unit scale).
    pub fn reference_fan_out(&self) -> Option<u64> {
        self.reference_fan_out
    }

    /// Things worth reporting that are not errors.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// How many positions read each ring entry, per group.
    pub fn uses_per_entry(&self, group: usize) -> Vec<u32> {
        let mut counts = vec![0u32; self.spec.ring_lengths[group]];
        for layer in self.layers.iter().filter(|l| l.group == group) {
            for &e in self.layer_entries(layer) {
                counts[(e & INDEX_MASK) as usize] += 1;
            }
        }
        counts
    }

    /// Learning-rate multiplier for the ring under SGD, so that one step
    /// moves generated weights about as much as the same step moves dense
    /// ones, at any DoF. Weight `k` reads entry `j`; an SGD step on the ring
    /// moves it by `lr * c_k * sum over uses u of j (c_u s_u g_u)`; with
    /// random signs its variance relative to a dense step is
    /// `c_k^2 * S_j`, `S_j = sum over uses u of c_u^2`. The multiplier is
    /// `1 / sqrt(mean over all positions k of c_k^2 S_{j_k})`.
    pub fn sgd_ring_lr_scale(&self) -> f64 {
        let mut uses_weight: Vec<Vec<f64>> = self
            .spec
            .ring_lengths
            .iter()
            .map(|&n| vec![0.0; n])
            .collect();
        for layer in &self.layers {
            let c2 = f64::from(layer.scale).powi(2);
            for &e in self.layer_entries(layer) {
                uses_weight[layer.group][(e & INDEX_MASK) as usize] += c2;
            }
        }
        let mut total = 0.0;
        for layer in &self.layers {
            let c2 = f64::from(layer.scale).powi(2);
            let s = &uses_weight[layer.group];
            total += c2
                * self
                    .layer_entries(layer)
                    .iter()
                    .map(|&e| s[(e & INDEX_MASK) as usize])
                    .sum::<f64>();
        }
        (self.entries.len() as f64 / total).sqrt()
    }

    /// Learning-rate multiplier for the ring under Adam-type optimizers,
    /// whose per-entry step is about `lr` whatever the gradient: generated
    /// weights then move by `c_k * lr`, so the multiplier is
    /// `1 / sqrt(mean over positions of c_k^2)`.
    pub fn adam_ring_lr_scale(&self) -> f64 {
        let total: f64 = self
            .layers
            .iter()
            .map(|l| l.len as f64 * f64::from(l.scale).powi(2))
            .sum();
        (self.entries.len() as f64 / total).sqrt()
    }

    /// Generates every shared weight from the rings into `out` (length
    /// [`Placement::shared_len`], layers concatenated). One fused pass,
    /// multi-threaded for large outputs.
    pub fn generate(&self, rings: &[&[f32]], out: &mut [f32]) -> Result<()> {
        self.check_rings(rings)?;
        check_len("generated weights", self.entries.len(), out.len())?;
        kernels::generate_segments(&self.segments(), rings, &self.entries, out);
        Ok(())
    }

    /// Generates one layer's weights (layer `index` of [`Placement::layers`])
    /// into `out`, for callers that keep each layer in a buffer of its own;
    /// equal to that layer's part of [`Placement::generate`]'s output.
    pub fn generate_layer(&self, index: usize, rings: &[&[f32]], out: &mut [f32]) -> Result<()> {
        self.check_rings(rings)?;
        let layer = self.layer_at(index)?;
        check_len("generated weights", layer.len, out.len())?;
        let segment = layer.local_segment();
        kernels::generate_segments(&[segment], rings, self.layer_entries(layer), out);
        Ok(())
    }

    /// Generates positions `offset..offset + out.len()` of layer `index`
    /// into `out`, on the calling thread: for callers that spread a layer
    /// over a thread pool of their own (nested OS threads per layer cost
    /// more than the gather). Equal to that part of
    /// [`Placement::generate_layer`]'s output.
    pub fn generate_layer_part(
        &self,
        index: usize,
        rings: &[&[f32]],
        offset: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_rings(rings)?;
        let layer = self.layer_at(index)?;
        let end = offset
            .checked_add(out.len())
            .filter(|&end| end <= layer.len);
        let Some(end) = end else {
            return Err(Error::LengthMismatch {
                what: "generated weights (part past the layer's end)",
                expected: layer.len.saturating_sub(offset),
                got: out.len(),
            });
        };
        let entries = &self.layer_entries(layer)[..end];
        kernels::generate_range(&[layer.local_segment()], rings, entries, out, offset);
        Ok(())
    }

    /// The least-squares rings for given shared weights (laid out as
    /// [`Placement::generate`]'s output): every weight is `c_k s_k ring[j_k]`,
    /// so `ring[j] = sum_k c_k s_k w_k / sum_k c_k^2` over the positions `k`
    /// that read entry `j` (an entry read by none is 0). Projecting
    /// generated weights gives back their rings (to rounding): a dense
    /// model's weights become the ring closest to them.
    pub fn project(&self, weights: &[f32], rings: &mut [&mut [f32]]) -> Result<()> {
        for ring in rings.iter_mut() {
            ring.fill(0.0);
        }
        // The numerator is the adjoint of generation applied to the weights.
        self.accumulate(weights, rings)?;
        for (group, ring) in rings.iter_mut().enumerate() {
            let mut squares = vec![0f64; ring.len()];
            for layer in self.layers.iter().filter(|l| l.group == group) {
                let c2 = f64::from(layer.scale) * f64::from(layer.scale);
                for &e in self.layer_entries(layer) {
                    squares[(e & INDEX_MASK) as usize] += c2;
                }
            }
            for (r, s) in ring.iter_mut().zip(&squares) {
                *r = if *s > 0.0 {
                    (f64::from(*r) / s) as f32
                } else {
                    0.0
                };
            }
        }
        Ok(())
    }

    /// Accumulates the gradient of every shared weight (`grad`, laid out as
    /// [`Placement::generate`]'s output) into the ring gradients:
    /// `ring_grad[g][j] += c_i * s_k * grad[k]` over all positions `k` that
    /// read entry `j`. The adjoint of [`Placement::generate`]; the result is
    /// bit-identical whatever the thread count.
    pub fn accumulate(&self, grad: &[f32], ring_grads: &mut [&mut [f32]]) -> Result<()> {
        check_len("weight gradient", self.entries.len(), grad.len())?;
        let grads: Vec<Option<&[f32]>> =
            self.layers.iter().map(|l| Some(&grad[l.range()])).collect();
        self.accumulate_layers(&grads, ring_grads)
    }

    /// [`Placement::accumulate`] with each layer's gradient in a slice of its
    /// own (`None`: no gradient reached the layer, counted as zero), so that
    /// callers holding per-layer buffers need not concatenate them. The
    /// result is bit-identical to `accumulate` on the concatenation.
    pub fn accumulate_layers(
        &self,
        grads: &[Option<&[f32]>],
        ring_grads: &mut [&mut [f32]],
    ) -> Result<()> {
        self.accumulate_layers_on(grads, ring_grads, &ScopedThreads)
    }

    /// [`Placement::accumulate_layers`] with its parallel parts run on
    /// `pool` (a caller's thread pool) instead of OS threads started for the
    /// call; the same bits for the same thread count.
    pub fn accumulate_layers_on(
        &self,
        grads: &[Option<&[f32]>],
        ring_grads: &mut [&mut [f32]],
        pool: &dyn ForkJoin,
    ) -> Result<()> {
        check_len(
            "ring gradients",
            self.spec.ring_lengths.len(),
            ring_grads.len(),
        )?;
        for (g, rg) in ring_grads.iter().enumerate() {
            check_len("ring gradient", self.spec.ring_lengths[g], rg.len())?;
        }
        check_len("layer gradients", self.layers.len(), grads.len())?;
        for (layer, grad) in self.layers.iter().zip(grads) {
            if let Some(grad) = grad {
                check_len("weight gradient", layer.len, grad.len())?;
            }
        }
        kernels::accumulate_segments(&self.segments(), &self.entries, grads, ring_grads, pool);
        Ok(())
    }

    fn layer_at(&self, index: usize) -> Result<&LayerPlacement> {
        self.layers.get(index).ok_or(Error::LengthMismatch {
            what: "layers (index past the last)",
            expected: index + 1,
            got: self.layers.len(),
        })
    }

    fn segments(&self) -> Vec<kernels::Segment> {
        self.layers.iter().map(|l| l.segment(l.range())).collect()
    }

    fn check_rings(&self, rings: &[&[f32]]) -> Result<()> {
        check_len("rings", self.spec.ring_lengths.len(), rings.len())?;
        for (g, ring) in rings.iter().enumerate() {
            check_len("ring", self.spec.ring_lengths[g], ring.len())?;
        }
        Ok(())
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

/// The entry stream of one group, before it is cut into its layers (whose
/// lengths, in registry order, are `layer_lens`). `docs/format.md`
/// specifies this function.
fn group_stream(spec: &RingSpec, group: usize, ring_len: u32, layer_lens: &[usize]) -> Vec<u32> {
    let group_id = group as u32;
    let served = layer_lens.iter().sum::<usize>() as u32;
    match spec.placement {
        PlacementKind::Paper => {
            let mut rng = Pcg32::for_stream(spec.seed, StreamPurpose::Indices, group_id);
            let full_copies = served / ring_len;
            let remainder = served % ring_len;
            let mut stream = Vec::with_capacity(served as usize);
            for _ in 0..full_copies {
                stream.extend(0..ring_len);
            }
            if remainder > 0 {
                // `remainder` distinct indices: the first `remainder` steps of
                // a forward Fisher-Yates over 0..N.
                let mut pool: Vec<u32> = (0..ring_len).collect();
                for k in 0..remainder {
                    let j = k + rng.below(ring_len - k);
                    pool.swap(k as usize, j as usize);
                }
                stream.extend_from_slice(&pool[..remainder as usize]);
            }
            rng.shuffle(&mut stream);
            apply_signs(spec.seed, group_id, &mut stream);
            stream
        }
        PlacementKind::Hashed => {
            let mut rng = Pcg32::for_stream(spec.seed, StreamPurpose::Indices, group_id);
            let mut stream: Vec<u32> = (0..served).map(|_| rng.below(ring_len)).collect();
            apply_signs(spec.seed, group_id, &mut stream);
            stream
        }
        PlacementKind::Naive => layer_lens
            .iter()
            .flat_map(|&len| (0..len as u32).map(move |k| k % ring_len))
            .collect(),
        PlacementKind::Sequential => (0..served).map(|k| k % ring_len).collect(),
    }
}

/// Sign bits: one PCG32 word per 32 positions of the group stream, least
/// significant bit first; a set bit makes the position negative.
fn apply_signs(seed: u64, group: u32, stream: &mut [u32]) {
    let mut rng = Pcg32::for_stream(seed, StreamPurpose::Signs, group);
    for chunk in stream.chunks_mut(32) {
        let word = rng.next_u32();
        for (bit, entry) in chunk.iter_mut().enumerate() {
            if (word >> bit) & 1 == 1 {
                *entry |= SIGN_BIT;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels;
    use crate::registry::LayerInfo;

    #[test]
    fn projecting_generated_weights_gives_back_the_rings() {
        let spec = RingSpec {
            ring_lengths: vec![13, 7],
            ..RingSpec::global(1, 5)
        };
        let mut registry = LayerRegistry::new();
        registry
            .push(LayerInfo {
                name: "a".into(),
                shape: vec![6, 5],
                shared: true,
                group: 0,
            })
            .unwrap();
        registry
            .push(LayerInfo {
                name: "b".into(),
                shape: vec![4, 3, 3],
                shared: true,
                group: 1,
            })
            .unwrap();
        let p = Placement::new(&spec, &registry).unwrap();
        let rings: Vec<Vec<f32>> = [13, 7]
            .iter()
            .map(|&n| (0..n).map(|i| (i as f32 * 0.37).sin()).collect())
            .collect();
        let views: Vec<&[f32]> = rings.iter().map(|r| &r[..]).collect();
        let mut weights = vec![0f32; p.shared_len()];
        p.generate(&views, &mut weights).unwrap();
        let mut back = vec![vec![9f32; 13], vec![9f32; 7]];
        let mut outs: Vec<&mut [f32]> = back.iter_mut().map(|r| &mut r[..]).collect();
        p.project(&weights, &mut outs).unwrap();
        for (want, got) in rings.iter().zip(&back) {
            for (w, g) in want.iter().zip(got) {
                assert!((w - g).abs() <= 1e-6, "{w} vs {g}");
            }
        }
    }

    fn registry_from(shapes: &[Vec<usize>], groups: &[usize]) -> LayerRegistry {
        let mut r = LayerRegistry::new();
        r.push_unshared("stem.weight", &[3, 2]).unwrap();
        for (i, shape) in shapes.iter().enumerate() {
            r.push(LayerInfo {
                name: format!("layer{i}.weight"),
                shape: shape.clone(),
                shared: true,
                group: groups.get(i).copied().unwrap_or(0),
            })
            .unwrap();
        }
        r
    }

    fn shapes() -> impl Strategy<Value = Vec<Vec<usize>>> {
        prop::collection::vec(
            prop_oneof![
                (1usize..9, 1usize..9).prop_map(|(o, i)| vec![o, i]),
                (1usize..6, 1usize..5, 1usize..4).prop_map(|(o, i, k)| vec![o, i, k, k]),
            ],
            1..6,
        )
    }

    fn kind() -> impl Strategy<Value = PlacementKind> {
        prop::sample::select(<PlacementKind as crate::names::Named>::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn paper_sampling_is_even(shapes in shapes(), ring in 1usize..200, seed: u64) {
            let r = registry_from(&shapes, &[]);
            let p = Placement::new(&RingSpec::global(ring, seed), &r).unwrap();
            let t = p.shared_len();
            let (lo, hi) = (t / ring, t.div_ceil(ring));
            for uses in p.uses_per_entry(0) {
                prop_assert!(uses as usize == lo || uses as usize == hi);
            }
        }

        #[test]
        fn shuffle_is_a_bijection_of_the_stream(shapes in shapes(), ring in 1usize..200, seed: u64) {
            // The shuffled stream, as a multiset, equals the unshuffled one:
            // q full copies of 0..N plus r distinct extras.
            let r = registry_from(&shapes, &[]);
            let p = Placement::new(&RingSpec::global(ring, seed), &r).unwrap();
            let t = p.shared_len();
            let uses = p.uses_per_entry(0);
            prop_assert_eq!(uses.iter().map(|&u| u as usize).sum::<usize>(), t);
            let extras = uses.iter().filter(|&&u| u as usize > t / ring).count();
            prop_assert_eq!(extras, t % ring);
        }

        #[test]
        fn generate_and_accumulate_are_adjoint(
            shapes in shapes(), ring_len in 1usize..100, seed: u64, kind in kind(),
        ) {
            let r = registry_from(&shapes, &[]);
            let spec = RingSpec::global(ring_len, seed).with_placement(kind);
            let p = Placement::new(&spec, &r).unwrap();
            let mut rng = Pcg32::new(seed, 7);
            let ring: Vec<f32> = (0..ring_len).map(|_| rng.next_normal()).collect();
            let w: Vec<f32> = (0..p.shared_len()).map(|_| rng.next_normal()).collect();
            let mut gr = vec![0.0f32; p.shared_len()];
            p.generate(&[&ring[..]], &mut gr).unwrap();
            let mut gtw = vec![0.0f32; ring_len];
            p.accumulate(&w, &mut [&mut gtw[..]]).unwrap();
            let lhs: f64 = gr.iter().zip(&w).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let rhs: f64 = ring.iter().zip(&gtw).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
        }

        #[test]
        fn per_layer_generation_and_gradients_equal_the_concatenated_ones(
            shapes in shapes(), ring_len in 1usize..100, seed: u64, skip in 0usize..6,
        ) {
            let groups: Vec<usize> = (0..shapes.len()).map(|i| i % 2).collect();
            let r = registry_from(&shapes, &groups);
            let count = r.group_count();
            let spec = RingSpec { ring_lengths: vec![ring_len; count], ..RingSpec::global(ring_len, seed) };
            let p = Placement::new(&spec, &r).unwrap();
            let mut rng = Pcg32::new(seed, 3);
            let rings: Vec<Vec<f32>> = (0..count)
                .map(|_| (0..ring_len).map(|_| rng.next_normal()).collect())
                .collect();
            let rings: Vec<&[f32]> = rings.iter().map(|r| &r[..]).collect();
            let mut all = vec![0.0f32; p.shared_len()];
            p.generate(&rings, &mut all).unwrap();
            for (i, layer) in p.layers().iter().enumerate() {
                let mut one = vec![0.0f32; layer.len];
                p.generate_layer(i, &rings, &mut one).unwrap();
                prop_assert_eq!(&one[..], &all[layer.range()]);
                // And in parts of 3 from any offset.
                let mut parts = vec![0.0f32; layer.len];
                for (k, part) in parts.chunks_mut(3).enumerate() {
                    p.generate_layer_part(i, &rings, 3 * k, part).unwrap();
                }
                prop_assert_eq!(&parts[..], &all[layer.range()]);
            }
            // Layer `skip` (if any) has no gradient: zeros in the concatenation.
            let mut grad: Vec<f32> = (0..p.shared_len()).map(|_| rng.next_normal()).collect();
            if let Some(layer) = p.layers().get(skip) {
                grad[layer.range()].fill(0.0);
            }
            let per_layer: Vec<Option<&[f32]>> = p
                .layers()
                .iter()
                .enumerate()
                .map(|(i, l)| (i != skip).then(|| &grad[l.range()]))
                .collect();
            let mut a = vec![vec![0.0f32; ring_len]; count];
            let mut b = a.clone();
            let mut views: Vec<&mut [f32]> = a.iter_mut().map(|g| &mut g[..]).collect();
            p.accumulate(&grad, &mut views).unwrap();
            let mut views: Vec<&mut [f32]> = b.iter_mut().map(|g| &mut g[..]).collect();
            p.accumulate_layers(&per_layer, &mut views).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn generated_values_are_signed_scaled_ring_entries(
            shapes in shapes(), ring_len in 1usize..50, seed: u64, kind in kind(),
        ) {
            let r = registry_from(&shapes, &[]);
            let p = Placement::new(&RingSpec::global(ring_len, seed).with_placement(kind), &r).unwrap();
            // A ring of distinct powers-of-two-ish magnitudes identifies entries.
            let ring: Vec<f32> = (0..ring_len).map(|j| 1.0 + j as f32).collect();
            let mut w = vec![0.0f32; p.shared_len()];
            p.generate(&[&ring[..]], &mut w).unwrap();
            for layer in p.layers() {
                prop_assert!(layer.len > 0);
                prop_assert_eq!(layer.len, layer.shape.iter().product::<usize>());
                for (k, &value) in w[layer.range()].iter().enumerate() {
                    let e = p.layer_entries(layer)[k];
                    let magnitude = ring[(e & INDEX_MASK) as usize] * layer.scale;
                    prop_assert!(value == magnitude || value == -magnitude);
                    if matches!(kind, PlacementKind::Naive | PlacementKind::Sequential) {
                        prop_assert!(value > 0.0);
                    }
                }
            }
        }

        #[test]
        fn local_rings_are_even_per_group(shapes in shapes(), seed: u64) {
            let groups: Vec<usize> = (0..shapes.len()).map(|i| i % 2).collect();
            let r = registry_from(&shapes, &groups);
            let count = r.group_count();
            let spec = RingSpec { ring_lengths: vec![7; count], ..RingSpec::global(7, seed) };
            let p = Placement::new(&spec, &r).unwrap();
            let per_group = r.shared_elements_per_group();
            for (g, &t) in per_group.iter().enumerate() {
                let t = t as usize;
                for uses in p.uses_per_entry(g) {
                    prop_assert!(uses as usize == t / 7 || uses as usize == t.div_ceil(7));
                }
            }
        }
    }

    #[test]
    fn per_layer_calls_check_their_arguments() {
        let r = registry_from(&[vec![4, 3], vec![2, 2]], &[]);
        let p = Placement::new(&RingSpec::global(5, 1), &r).unwrap();
        let ring = [1.0f32; 5];
        assert!(p.generate_layer(2, &[&ring], &mut [0.0; 4]).is_err());
        assert!(p.generate_layer(1, &[&ring], &mut [0.0; 3]).is_err());
        assert!(
            p.generate_layer_part(1, &[&ring], 3, &mut [0.0; 2])
                .is_err()
        );
        assert!(p.generate_layer_part(1, &[&ring], 2, &mut [0.0; 2]).is_ok());
        assert!(
            p.generate_layer_part(2, &[&ring], 0, &mut [0.0; 1])
                .is_err()
        );
        let mut g = [0.0f32; 5];
        assert!(p.accumulate_layers(&[None], &mut [&mut g]).is_err());
        assert!(
            p.accumulate_layers(&[None, Some(&[1.0; 3])], &mut [&mut g])
                .is_err()
        );
        assert!(
            p.accumulate_layers(&[None, Some(&[1.0; 4])], &mut [&mut g])
                .is_ok()
        );
    }

    #[test]
    fn same_inputs_same_placement() {
        let r = registry_from(&[vec![16, 8, 3, 3], vec![10, 16]], &[]);
        let a = Placement::new(&RingSpec::global(100, 5), &r).unwrap();
        let b = Placement::new(&RingSpec::global(100, 5), &r).unwrap();
        let c = Placement::new(&RingSpec::global(100, 6), &r).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.entries(), c.entries());
    }

    #[test]
    fn signs_are_balanced() {
        let r = registry_from(&[vec![64, 64, 3, 3]], &[]);
        let p = Placement::new(&RingSpec::global(1000, 1), &r).unwrap();
        let negative = p.entries().iter().filter(|&&e| e & SIGN_BIT != 0).count();
        let frac = negative as f64 / p.shared_len() as f64;
        assert!((frac - 0.5).abs() < 0.02, "negative fraction {frac}");
    }

    #[test]
    fn initial_std_matches_kaiming_fan_out() {
        let r = registry_from(&[vec![64, 32, 3, 3], vec![32, 16, 3, 3], vec![10, 64]], &[]);
        let spec = RingSpec::global(20_000, 3).with_scale(ScaleRule::LargestFanOut);
        let p = Placement::new(&spec, &r).unwrap();
        let mut rng = Pcg32::new(3, 9);
        let std = p.ring_init_std();
        let ring: Vec<f32> = (0..20_000).map(|_| std * rng.next_normal()).collect();
        let mut w = vec![0.0f32; p.shared_len()];
        p.generate(&[&ring[..]], &mut w).unwrap();
        for layer in p.layers() {
            let values = &w[layer.range()];
            let var =
                values.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / values.len() as f64;
            let fan_out = r.get(&layer.name).unwrap().fan_out() as f64;
            let ratio = var.sqrt() / (2.0 / fan_out).sqrt();
            assert!(
                (ratio - 1.0).abs() < 0.1,
                "{}: std ratio {ratio}",
                layer.name
            );
        }
    }

    #[test]
    fn fan_in_rule_starts_layers_at_their_fan_in_std() {
        let r = registry_from(&[vec![6, 1, 5, 5], vec![10, 84]], &[]);
        let spec = RingSpec::global(100, 0).with_scale(ScaleRule::LargestFanIn);
        let p = Placement::new(&spec, &r).unwrap();
        // F = 84 (the linear layer's fan-in); the conv's fan-in is 25.
        assert_eq!(p.reference_fan_out(), Some(84));
        assert_eq!(p.layers()[1].scale, 1.0);
        assert!((p.layers()[0].scale - (84f32 / 25.0).sqrt()).abs() < 1e-6);
        let conv_std = p.ring_init_std() * p.layers()[0].scale;
        assert!((conv_std - (2.0f32 / 25.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn reference_scale_is_the_papers() {
        let r = registry_from(&[vec![512, 512, 3, 3], vec![64, 64, 3, 3]], &[]);
        let spec = RingSpec::global(1000, 0).with_scale(ScaleRule::FixedFanOut(4608));
        let p = Placement::new(&spec, &r).unwrap();
        assert_eq!(p.layers()[0].scale, 1.0);
        assert!((p.layers()[1].scale - 8f32.sqrt()).abs() < 1e-6);
        assert!((p.ring_init_std() - (2.0f32 / 4608.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn sequential_unit_placement_is_the_identity() {
        let r = registry_from(&[vec![4, 3], vec![2, 4]], &[]);
        let spec = RingSpec::global(20, 0)
            .with_placement(PlacementKind::Sequential)
            .with_scale(ScaleRule::Unit);
        let p = Placement::new(&spec, &r).unwrap();
        let ring: Vec<f32> = (0..20).map(|j| j as f32).collect();
        let mut w = vec![0.0f32; 20];
        p.generate(&[&ring[..]], &mut w).unwrap();
        assert_eq!(w, ring);
        // N == T: every entry is used once, nothing to report.
        assert!(p.notices().is_empty());
    }

    #[test]
    fn oversized_ring_is_reported_not_refused() {
        let r = registry_from(&[vec![4, 3]], &[]);
        let p = Placement::new(&RingSpec::global(50, 0), &r).unwrap();
        assert_eq!(
            p.notices(),
            &[Notice::RingLargerThanServed {
                group: 0,
                ring: 50,
                served: 12
            }]
        );
        assert!(
            p.notices()[0]
                .to_string()
                .contains("38 entries are never used")
        );
    }

    #[test]
    fn spec_and_registry_mismatches_are_errors() {
        let r = registry_from(&[vec![4, 3]], &[]);
        let spec = RingSpec {
            ring_lengths: vec![5, 5],
            ..RingSpec::global(5, 0)
        };
        assert_eq!(
            Placement::new(&spec, &r),
            Err(Error::GroupCountMismatch {
                rings: 2,
                groups: 1
            })
        );
        assert_eq!(
            Placement::new(&RingSpec::global(0, 0), &r),
            Err(Error::ZeroRingLength { group: 0 })
        );
        let ring = [0.0f32; 4];
        let mut out = vec![0.0f32; 12];
        assert!(p_of(&r).generate(&[&ring[..]], &mut out).is_err());
    }

    fn p_of(r: &LayerRegistry) -> Placement {
        Placement::new(&RingSpec::global(5, 0), r).unwrap()
    }

    #[test]
    fn fused_generation_equals_per_layer_kernels() {
        let r = registry_from(&[vec![8, 4, 3, 3], vec![5, 8]], &[]);
        let p = Placement::new(&RingSpec::global(37, 11), &r).unwrap();
        let ring: Vec<f32> = (0..37).map(|j| (j as f32 * 0.3).sin()).collect();
        let mut fused = vec![0.0f32; p.shared_len()];
        p.generate(&[&ring[..]], &mut fused).unwrap();
        for layer in p.layers() {
            let mut out = vec![0.0f32; layer.len];
            kernels::generate(&ring, p.layer_entries(layer), layer.scale, &mut out).unwrap();
            assert_eq!(&fused[layer.range()], &out[..]);
        }
    }

    #[test]
    fn ring_lr_scales_follow_uses_and_scales() {
        let r = registry_from(&[vec![4, 3]], &[]);
        // Unit scale, 12 positions on 6 entries: every entry used twice.
        let spec = RingSpec::global(6, 0).with_scale(ScaleRule::Unit);
        let p = Placement::new(&spec, &r).unwrap();
        assert!((p.sgd_ring_lr_scale() - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.adam_ring_lr_scale(), 1.0);
        // One use per entry and unit scale: the dense step exactly.
        let spec = RingSpec::global(12, 0).with_scale(ScaleRule::Unit);
        assert!((Placement::new(&spec, &r).unwrap().sgd_ring_lr_scale() - 1.0).abs() < 1e-12);
        // Scale c = 2 everywhere: c^2 S = 4 * 4 * 2 -> 1 / sqrt(32).
        let spec = RingSpec::global(6, 0).with_scale(ScaleRule::FixedFanOut(16));
        let p = Placement::new(&spec, &r).unwrap();
        assert!((p.sgd_ring_lr_scale() - 32f64.sqrt().recip()).abs() < 1e-9);
        assert!((p.adam_ring_lr_scale() - 0.5).abs() < 1e-9);
    }
}
