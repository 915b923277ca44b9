//! Per-channel helpers for contiguous `[N, C, ...]` tensors, shared by the
//! native batch norm and the conv bias.

use rayon::prelude::*;

use super::simd::widest;

/// `(batch, channels, values per channel and image)` of a contiguous input.
pub(crate) fn dims(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// `f(image, channel)` for every (image, channel) run, images in parallel,
/// each task compiled for the CPU's widest vectors (`f` must be
/// `#[inline(always)]` to be compiled at that width). Laid out
/// `[image][channel]`.
pub(crate) fn run_partials<const K: usize>(
    (n, c): (usize, usize),
    f: impl Fn(usize, usize) -> [f32; K] + Sync,
) -> Vec<[f32; K]> {
    let mut runs = vec![[0f32; K]; n * c];
    runs.par_chunks_mut(c.max(1))
        .enumerate()
        .for_each(|(img, runs)| {
            widest(
                #[inline(always)]
                || {
                    for (ch, run) in runs.iter_mut().enumerate() {
                        *run = f(img, ch);
                    }
                },
            )
        });
    runs
}

/// Per channel, the sums of its runs' two partials ([`run_partials`]) over
/// the images in order, in f64 (a channel can hold hundreds of thousands of
/// values), so the result depends on neither the thread count nor the
/// vector width.
pub(crate) fn channel_totals(runs: &[[f32; 2]], (n, c): (usize, usize)) -> (Vec<f32>, Vec<f32>) {
    (0..c)
        .map(|ch| {
            let (mut a, mut b) = (0f64, 0f64);
            for img in 0..n {
                let [x, y] = runs[img * c + ch];
                a += x as f64;
                b += y as f64;
            }
            (a as f32, b as f32)
        })
        .unzip()
}

/// Independent partial sums per reduction: one f32 accumulator is a chain
/// of dependent adds (one per add latency, and never vectorised, as float
/// addition does not reassociate); 16 interleaved ones vectorise and
/// overlap. A channel's run is summed lane by lane, then the lanes.
const LANES: usize = 16;

/// `N` sums over `i` of `f(a[i], b[i])` (`a` and `b` of one length), each
/// in [`LANES`] interleaved partial sums, then the lanes in order, then
/// the tail that fills no whole group of lanes.
#[inline(always)]
pub(crate) fn lane_sums<const N: usize>(
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> [f32; N],
) -> [f32; N] {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [[0f32; LANES]; N];
    let (groups_a, groups_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (tail_a, tail_b) = (groups_a.remainder(), groups_b.remainder());
    for (a, b) in groups_a.zip(groups_b) {
        for lane in 0..LANES {
            let v = f(a[lane], b[lane]);
            for (acc, v) in acc.iter_mut().zip(v) {
                acc[lane] += v;
            }
        }
    }
    let mut sums = acc.map(|lanes| lanes.iter().sum::<f32>());
    for (&a, &b) in tail_a.iter().zip(tail_b) {
        for (sum, v) in sums.iter_mut().zip(f(a, b)) {
            *sum += v;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_add_every_element_once() {
        for len in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 3) as f32).collect();
            let [sum, dot] = lane_sums(&a, &b, |a, b| [a, a * b]);
            let want_sum: f32 = a.iter().sum();
            let want_dot: f32 = a.iter().zip(&b).map(|(a, b)| a * b).sum();
            assert_eq!((sum, dot), (want_sum, want_dot), "{len}");
        }
    }
}
