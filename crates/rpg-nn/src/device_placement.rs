//! The placement as tensors on the model's device, so that RPG never goes
//! through the host on a GPU: generation is a gather, and the ring gradient
//! a gather and a row sum.
//!
//! Generation: layer `i`'s weights are `ring[index] * coef`, with `index`
//! the entry's position in the concatenated rings and `coef = c_i * s_k`
//! (the layer's scale with the entry's sign). A sign flip and a product are
//! exact, so this equals rpg-core's `c_i * s_k * ring[j]` bit for bit.
//!
//! Ring gradient: the adjoint of the gather is a scatter-add, which Candle's
//! CUDA kernels run serially over the indices of a one-dimensional target.
//! Instead the placement is inverted once: row `j` of an `[N, width]` table
//! lists the positions of the shared weights that read ring entry `j`
//! (in position order), padded with a position that holds zero. The ring
//! gradient is then `sum_k coef[j, k] * grad[pos[j, k]]`: a gather and a row
//! sum, with no atomics and the same result on every run. With even sampling
//! every entry is read `q` or `q + 1` times, so `width = q + 1` and the
//! padding is at most one slot a row; other placements pad to their most
//! used entry.

use candle_core::{DType, Device, Result, Tensor};
use rpg_core::{INDEX_MASK, Placement, SIGN_BIT};

/// One shared layer's gather.
#[derive(Debug, Clone)]
struct LayerGather {
    /// Positions in the concatenated rings, u32, `[len]`.
    index: Tensor,
    /// `c_i * s_k`, f32, `[len]`.
    coef: Tensor,
}

/// A placement uploaded to a device.
#[derive(Debug, Clone)]
pub struct DevicePlacement {
    layers: Vec<LayerGather>,
    /// `[N * width]` positions into the concatenated flat weight gradients
    /// (position `T`, one past the last, is a zero).
    inverse_index: Tensor,
    /// `[N, width]` coefficients, 0 on padding.
    inverse_coef: Tensor,
    ring_len: usize,
    width: usize,
    shared_len: usize,
    table_bytes: usize,
}

impl DevicePlacement {
    /// Uploads `placement`'s gathers and its inverse to `device`.
    pub fn new(placement: &Placement, device: &Device) -> Result<Self> {
        let mut group_offset = Vec::with_capacity(placement.ring_lengths().len());
        let mut ring_len = 0usize;
        for &len in placement.ring_lengths() {
            group_offset.push(ring_len);
            ring_len += len;
        }
        let shared_len = placement.shared_len();
        // Global ring position and coefficient of every shared weight.
        let mut global = Vec::with_capacity(shared_len);
        let mut coefs = Vec::with_capacity(shared_len);
        let mut layers = Vec::with_capacity(placement.layers().len());
        for layer in placement.layers() {
            let entries = placement.layer_entries(layer);
            let offset = group_offset[layer.group];
            let start = global.len();
            for &e in entries {
                global.push((offset + (e & INDEX_MASK) as usize) as u32);
                let sign = if e & SIGN_BIT != 0 { -1.0 } else { 1.0 };
                coefs.push(sign * layer.scale);
            }
            layers.push(LayerGather {
                index: Tensor::from_slice(&global[start..], layer.len, device)?,
                coef: Tensor::from_slice(&coefs[start..], layer.len, device)?,
            });
        }
        // The inverse, rows in ring order, positions ascending in a row.
        let mut counts = vec![0usize; ring_len];
        for &j in &global {
            counts[j as usize] += 1;
        }
        let width = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut inverse_index = vec![shared_len as u32; ring_len * width];
        let mut inverse_coef = vec![0f32; ring_len * width];
        let mut filled = vec![0usize; ring_len];
        for (pos, (&j, &c)) in global.iter().zip(&coefs).enumerate() {
            let j = j as usize;
            let slot = j * width + filled[j];
            inverse_index[slot] = pos as u32;
            inverse_coef[slot] = c;
            filled[j] += 1;
        }
        let table_bytes = 4 * (2 * shared_len + 2 * ring_len * width);
        Ok(Self {
            layers,
            inverse_index: Tensor::from_vec(inverse_index, ring_len * width, device)?,
            inverse_coef: Tensor::from_vec(inverse_coef, (ring_len, width), device)?,
            ring_len,
            width,
            shared_len,
            table_bytes,
        })
    }

    /// Layer `index`'s weights, flat (`[len]`, f32), from the concatenated
    /// rings.
    pub fn generate(&self, ring: &Tensor, index: usize) -> Result<Tensor> {
        let layer = &self.layers[index];
        ring.index_select(&layer.index, 0)?.mul(&layer.coef)
    }

    /// The ring gradient (`[N]`, f32) from each shared layer's weight
    /// gradient (any shape with the layer's element count; `None` for a
    /// layer the loss does not reach).
    pub fn ring_gradient(&self, layer_grads: &[Option<Tensor>]) -> Result<Tensor> {
        let device = self.inverse_coef.device();
        let mut flat = Vec::with_capacity(layer_grads.len() + 1);
        for (layer, grad) in self.layers.iter().zip(layer_grads) {
            flat.push(match grad {
                Some(g) => g.flatten_all()?.to_dtype(DType::F32)?,
                None => Tensor::zeros(layer.coef.dims(), DType::F32, device)?,
            });
        }
        // The padding slot.
        flat.push(Tensor::zeros(1, DType::F32, device)?);
        let flat = Tensor::cat(&flat, 0)?;
        flat.index_select(&self.inverse_index, 0)?
            .reshape((self.ring_len, self.width))?
            .mul(&self.inverse_coef)?
            .sum(1)
    }

    /// Positions per ring entry in the inverse table (`q + 1` with even
    /// sampling).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Shared weights.
    pub fn shared_len(&self) -> usize {
        self.shared_len
    }

    /// Bytes of device memory the gathers and the inverse take.
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }
}

#[cfg(test)]
mod tests {
    use rpg_core::{LayerRegistry, PlacementKind, PlacementVersion, RingSpec, ScaleRule};

    use super::*;

    fn placement(kind: PlacementKind, rings: Vec<usize>) -> Placement {
        let mut registry = LayerRegistry::new();
        registry
            .push_unshared("stem.weight", &[4, 1, 3, 3])
            .unwrap();
        for (i, shape) in [[8usize, 4, 3, 3], [8, 8, 3, 3], [10, 8, 1, 1]]
            .iter()
            .enumerate()
        {
            let group = i.min(rings.len() - 1);
            registry
                .push(rpg_core::LayerInfo {
                    name: format!("layer{i}.weight"),
                    shape: shape.to_vec(),
                    shared: true,
                    group,
                })
                .unwrap();
        }
        let spec = RingSpec {
            ring_lengths: rings,
            seed: 7,
            placement: kind,
            version: PlacementVersion::V1,
            scale: ScaleRule::LargestFanIn,
        };
        Placement::new(&spec, &registry).unwrap()
    }

    fn values(n: usize, salt: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ salt) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Generation equals rpg-core's bit for bit; the ring gradient equals
    /// its scatter-add within 1e-6 relative (the summation order differs).
    #[test]
    fn matches_rpg_core_for_every_placement_and_local_rings() -> Result<()> {
        let cases = [
            (PlacementKind::Paper, vec![50]),
            (PlacementKind::Paper, vec![30, 20, 9]),
            (PlacementKind::Hashed, vec![41]),
            (PlacementKind::Naive, vec![60]),
        ];
        for (kind, rings) in cases {
            let p = placement(kind, rings.clone());
            let d = DevicePlacement::new(&p, &Device::Cpu)?;
            let ring_len: usize = rings.iter().sum();
            let ring = values(ring_len, 1);
            let ring_t = Tensor::from_slice(&ring, ring_len, &Device::Cpu)?;
            let mut split = Vec::new();
            let mut rest = &ring[..];
            for &len in &rings {
                let (head, tail) = rest.split_at(len);
                split.push(head);
                rest = tail;
            }
            let grads: Vec<Vec<f32>> = p
                .layers()
                .iter()
                .enumerate()
                .map(|(i, l)| values(l.len, 10 + i as u32))
                .collect();
            for (i, layer) in p.layers().iter().enumerate() {
                let mut want = vec![0f32; layer.len];
                p.generate_layer(i, &split, &mut want).unwrap();
                let got = d.generate(&ring_t, i)?.to_vec1::<f32>()?;
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kind:?} layer {i}: generation differs");
            }
            let mut want = vec![0f32; ring_len];
            {
                let mut views = Vec::new();
                let mut rest = &mut want[..];
                for &len in &rings {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
                    views.push(head);
                    rest = tail;
                }
                let slices: Vec<Option<&[f32]>> = grads.iter().map(|g| Some(&g[..])).collect();
                p.accumulate_layers(&slices, &mut views).unwrap();
            }
            let tensors: Vec<Option<Tensor>> = grads
                .iter()
                .map(|g| Tensor::from_slice(g, g.len(), &Device::Cpu).map(Some))
                .collect::<Result<_>>()?;
            let got = d.ring_gradient(&tensors)?.to_vec1::<f32>()?;
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                let tolerance = 1e-6 * (1.0 + b.abs());
                assert!((a - b).abs() <= tolerance, "{kind:?} entry {j}: {a} vs {b}");
            }
            if kind == PlacementKind::Paper && rings.len() == 1 {
                // Every entry serves q or q + 1 positions.
                assert_eq!(d.width(), p.shared_len().div_ceil(ring_len));
            }
        }
        Ok(())
    }

    #[test]
    fn a_layer_without_gradient_contributes_nothing() -> Result<()> {
        let p = placement(PlacementKind::Paper, vec![50]);
        let d = DevicePlacement::new(&p, &Device::Cpu)?;
        let none: Vec<Option<Tensor>> = vec![None; p.layers().len()];
        let g = d.ring_gradient(&none)?.to_vec1::<f32>()?;
        assert!(g.iter().all(|v| *v == 0.0));
        Ok(())
    }
}
