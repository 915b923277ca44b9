//! Magnitude pruning.

/// Zeros the `floor(fraction * len)` values of smallest magnitude (ties
/// broken by position, so the result is deterministic) and returns how many
/// were zeroed. Never increases any magnitude.
pub fn magnitude_prune(values: &mut [f32], fraction: f64) -> usize {
    let count = ((fraction.clamp(0.0, 1.0)) * values.len() as f64).floor() as usize;
    if count == 0 {
        return 0;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    for &i in &order[..count] {
        values[i] = 0.0;
    }
    count
}

/// Prunes several tensors with one global threshold: the smallest
/// `fraction` of all their values together.
pub fn global_magnitude_prune(tensors: &mut [&mut [f32]], fraction: f64) -> usize {
    let total: usize = tensors.iter().map(|t| t.len()).sum();
    let count = ((fraction.clamp(0.0, 1.0)) * total as f64).floor() as usize;
    if count == 0 {
        return 0;
    }
    let mut all: Vec<(f32, usize, usize)> = Vec::with_capacity(total);
    for (t, values) in tensors.iter().enumerate() {
        all.extend(values.iter().enumerate().map(|(i, v)| (v.abs(), t, i)));
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for &(_, t, i) in &all[..count] {
        tensors[t][i] = 0.0;
    }
    count
}

/// Fraction of zeros.
pub fn sparsity(values: &[f32]) -> f64 {
    values.iter().filter(|v| **v == 0.0).count() as f64 / values.len().max(1) as f64
}

/// A sparse vector: a bitmap of non-zeros (bit `i % 8` of byte `i / 8`) and
/// the non-zero values in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    /// Bitmap, `len.div_ceil(8)` bytes.
    pub mask: Vec<u8>,
    /// Non-zero values.
    pub values: Vec<f32>,
    /// Dense length.
    pub len: usize,
}

impl Sparse {
    /// Encodes a dense vector.
    pub fn from_dense(dense: &[f32]) -> Self {
        let mut mask = vec![0u8; dense.len().div_ceil(8)];
        let mut values = Vec::new();
        for (i, &v) in dense.iter().enumerate() {
            if v != 0.0 {
                mask[i / 8] |= 1 << (i % 8);
                values.push(v);
            }
        }
        Self {
            mask,
            values,
            len: dense.len(),
        }
    }

    /// The dense vector.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.len];
        let mut next = self.values.iter();
        for (i, slot) in out.iter_mut().enumerate() {
            if self.mask[i / 8] & (1 << (i % 8)) != 0 {
                *slot = *next.next().unwrap_or(&0.0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn pruning_hits_the_sparsity_and_never_grows_a_value(
            values in prop::collection::vec(-5f32..5.0, 1..200),
            fraction in 0f64..1.0,
        ) {
            let mut pruned = values.clone();
            let zeroed = magnitude_prune(&mut pruned, fraction);
            prop_assert_eq!(zeroed, (fraction * values.len() as f64).floor() as usize);
            prop_assert!(sparsity(&pruned) >= zeroed as f64 / values.len() as f64);
            for (a, b) in values.iter().zip(&pruned) {
                prop_assert!(b.abs() <= a.abs());
                prop_assert!(*b == 0.0 || a == b);
            }
            // Every kept value is at least as large as every pruned one.
            let kept_min = values.iter().zip(&pruned).filter(|(_, b)| **b != 0.0).map(|(a, _)| a.abs()).fold(f32::MAX, f32::min);
            let cut_max = values.iter().zip(&pruned).filter(|(a, b)| **b == 0.0 && **a != 0.0).map(|(a, _)| a.abs()).fold(0.0, f32::max);
            prop_assert!(cut_max <= kept_min);
        }

        #[test]
        fn sparse_round_trips(values in prop::collection::vec(prop_oneof![Just(0f32), -5f32..5.0], 0..100)) {
            prop_assert_eq!(Sparse::from_dense(&values).to_dense(), values);
        }
    }

    #[test]
    fn global_pruning_uses_one_threshold() {
        let mut a = vec![0.1, 5.0, 0.2];
        let mut b = vec![3.0, 0.05, 4.0];
        let zeroed = global_magnitude_prune(&mut [&mut a, &mut b], 0.5);
        assert_eq!(zeroed, 3);
        assert_eq!(a, vec![0.0, 5.0, 0.0]);
        assert_eq!(b, vec![3.0, 0.0, 4.0]);
    }
}
