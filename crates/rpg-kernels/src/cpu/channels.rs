//! Per-channel helpers for contiguous `[N, C, ...]` tensors, shared by the
//! native batch norm and the conv bias.

use rayon::prelude::*;

/// `(batch, channels, values per channel and image)` of a contiguous input.
pub(crate) fn dims(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// `f(c, at) -> (a, b)` for channel c's run of each image starting at `at`,
/// summed per channel over the images in order, in f64: a channel can hold
/// hundreds of thousands of values. Channels run in parallel.
pub(crate) fn channel_sums(
    (n, c, s): (usize, usize, usize),
    f: impl Fn(usize, usize) -> (f32, f32) + Sync,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut a, mut b) = (0f64, 0f64);
            for img in 0..n {
                let (x, y) = f(ch, (img * c + ch) * s);
                a += x as f64;
                b += y as f64;
            }
            (a, b)
        })
        .collect()
}
