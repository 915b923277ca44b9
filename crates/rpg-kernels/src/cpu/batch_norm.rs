//! The native batch norm's passes over contiguous `[N, C, S]` f32 data: the
//! batch statistics, the normalisation (with a fused ReLU or residual add
//! and ReLU), the parameter gradients and the input gradient.
//!
//! Why these shapes: batch norm is memory-bound, so its cost is the number
//! of passes over activations. The statistics read the input once (each
//! image's run of a channel is summed, then its squared deviations while
//! the run is still in L1, and the runs are combined exactly in f64); the
//! residual tail's backward gates the gradient and takes the parameter
//! sums in the same pass. Every loop runs at the CPU's widest vectors
//! ([`widest`]) with the ReLU gate as a bit mask: as a branch per lane it
//! mispredicted on real activations and made the ReLU backward five times
//! slower than the forward. Reductions go per (image, channel) run in f32
//! over 16 fixed lanes, then over the images in order in f64, so results do
//! not depend on the thread count or the vector width.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::channels::{channel_totals, lane_sums, run_partials};
use super::simd::{kept, widest};
use super::storage::par_filled;

/// `(batch, channels, values per channel and image)`.
pub(crate) type Dims = (usize, usize, usize);

/// What follows the normalisation in a fused training forward.
#[derive(Clone, Copy)]
pub(crate) enum Tail<'a> {
    Plain,
    Relu,
    /// `max(y + r, 0)`: a residual add and its ReLU, `r` shaped as `x`.
    AddRelu(&'a [f32]),
}

/// A channel's forward map `y = x * scale + shift`.
pub(crate) type Affine = (f32, f32);

/// Per channel, the mean and the biased variance of `x`.
pub(crate) fn moments(x: &[f32], (n, c, s): Dims) -> (Vec<f64>, Vec<f64>) {
    // Per run: its rounded mean `a`, and the sums of `(x - a)^2` and of
    // `x - a` (small and accurate where the plain sum of values is not):
    // two sweeps of a run that is in L1 after the first.
    let runs = run_partials(
        (n, c),
        #[inline(always)]
        |img, ch| {
            let run = &x[(img * c + ch) * s..][..s];
            let [sum] = lane_sums(
                run,
                run,
                #[inline(always)]
                |v, _| [v],
            );
            let a = sum / s as f32;
            let [squares, deviations] = lane_sums(
                run,
                run,
                #[inline(always)]
                |v, _| [(v - a) * (v - a), v - a],
            );
            [a, squares, deviations]
        },
    );
    let (count, s) = ((n * s) as f64, s as f64);
    (0..c)
        .map(|ch| {
            let channel = || (0..n).map(|img| runs[img * c + ch]);
            let total: f64 = channel().map(|[a, _, dev]| s * a as f64 + dev as f64).sum();
            let mean = total / count;
            // sum (x - m)^2 = sum (x - a)^2 + 2 (a - m) sum (x - a) + s (a - m)^2
            let squares: f64 = channel()
                .map(|[a, squares, dev]| {
                    let d = a as f64 - mean;
                    squares as f64 + 2.0 * d * dev as f64 + s * d * d
                })
                .sum();
            (mean, squares / count)
        })
        .unzip()
}

/// `x * scale + shift` per channel, then the `tail`, one image per task.
pub(crate) fn normalise(x: &[f32], (_, c, s): Dims, affine: &[Affine], tail: Tail<'_>) -> Vec<f32> {
    // SAFETY: each image's chunk is c * s long and every channel's s values
    // are written.
    unsafe {
        par_filled(x.len(), c * s, |img, y| {
            widest(
                #[inline(always)]
                || {
                    let at = img * c * s;
                    let x = &x[at..][..c * s];
                    for (ch, &(k, d)) in affine.iter().enumerate() {
                        let run = ch * s..(ch + 1) * s;
                        let pairs = y[run.clone()].iter_mut().zip(&x[run.clone()]);
                        // Each arm its own loop, so each compiles to straight
                        // vector code. `(x * k + d) + r` rounds as the unfused
                        // batch norm followed by an add does.
                        match tail {
                            Tail::Plain => pairs.for_each(|(y, x)| _ = y.write(x * k + d)),
                            Tail::Relu => {
                                pairs.for_each(|(y, x)| _ = y.write((x * k + d).max(0.0)))
                            }
                            Tail::AddRelu(r) => pairs
                                .zip(&r[at..][..c * s][run])
                                .for_each(|((y, x), r)| _ = y.write((x * k + d + r).max(0.0))),
                        }
                    }
                },
            )
        })
    }
}

/// The gradient reaching the normalised value `x * k + d` from `dy`: all of
/// it, or behind a fused ReLU only where that value is not below 0
/// (Candle's ReLU gradient, 1 at zero).
#[inline(always)]
fn gate<const RELU: bool>(x: f32, (k, d): Affine, dy: f32) -> f32 {
    if RELU {
        // Not `>= 0`: a NaN passes the gradient, as the gate always did.
        kept(
            (x * k + d).partial_cmp(&0.0) != Some(std::cmp::Ordering::Less),
            dy,
        )
    } else {
        dy
    }
}

/// `(sum((x - mean) * g), sum(g))` over one run, `g` gated.
#[inline(always)]
fn dot_and_sum<const RELU: bool>(x: &[f32], dy: &[f32], mean: f32, affine: Affine) -> [f32; 2] {
    lane_sums(
        x,
        dy,
        #[inline(always)]
        |x, d| {
            let g = gate::<RELU>(x, affine, d);
            [(x - mean) * g, g]
        },
    )
}

/// Per channel, `(d weight, d bias) = (sum(dy * x_hat), sum(dy))`, `dy`
/// gated by the fused ReLU when `relu`.
pub(crate) fn param_sums(
    x: &[f32],
    dy: &[f32],
    (n, c, s): Dims,
    (mean, inv_std): (&[f32], &[f32]),
    affine: &[Affine],
    relu: bool,
) -> (Vec<f32>, Vec<f32>) {
    let runs = run_partials(
        (n, c),
        #[inline(always)]
        |img, ch| {
            let at = (img * c + ch) * s;
            let (x, dy) = (&x[at..][..s], &dy[at..][..s]);
            let [dot, sum] = if relu {
                dot_and_sum::<true>(x, dy, mean[ch], affine[ch])
            } else {
                dot_and_sum::<false>(x, dy, mean[ch], affine[ch])
            };
            [dot * inv_std[ch], sum]
        },
    );
    channel_totals(&runs, (n, c))
}

/// The residual tail's backward first pass: `g = dy` where
/// `x * k + d + r >= 0`, else 0 (the gradient of both the shortcut and the
/// batch norm's output), and [`param_sums`] of `g`, in one pass.
pub(crate) fn gated_param_sums(
    (x, r, dy): (&[f32], &[f32], &[f32]),
    (n, c, s): Dims,
    (mean, inv_std): (&[f32], &[f32]),
    affine: &[Affine],
) -> (Vec<f32>, (Vec<f32>, Vec<f32>)) {
    let mut g = Vec::with_capacity(x.len());
    let mut runs = vec![[0f32; 2]; n * c];
    g.spare_capacity_mut()[..x.len()]
        .par_chunks_mut((c * s).max(1))
        .zip(runs.par_chunks_mut(c.max(1)))
        .enumerate()
        .for_each(|(img, (g, runs))| {
            widest(
                #[inline(always)]
                || {
                    for (ch, run_sums) in runs.iter_mut().enumerate() {
                        let (k, d) = affine[ch];
                        let at = (img * c + ch) * s;
                        let (x, r, dy) = (&x[at..][..s], &r[at..][..s], &dy[at..][..s]);
                        let g = &mut g[ch * s..][..s];
                        for (g, ((&x, &r), &dy)) in g.iter_mut().zip(x.iter().zip(r).zip(dy)) {
                            g.write(kept(x * k + d + r >= 0.0, dy));
                        }
                        // SAFETY: written just above.
                        let g = unsafe { &*(g as *const [MaybeUninit<f32>] as *const [f32]) };
                        let [dot, sum] = dot_and_sum::<false>(x, g, mean[ch], (k, d));
                        *run_sums = [dot * inv_std[ch], sum];
                    }
                },
            )
        });
    // SAFETY: every image's chunk had each of its channels' runs written.
    unsafe { g.set_len(x.len()) };
    (g, channel_totals(&runs, (n, c)))
}

/// `dx = a * g + b * x + e` per channel with `(a, b, e)` from `coeffs`,
/// `g` being `dy` gated by the fused ReLU when `relu`.
pub(crate) fn input_grad(
    x: &[f32],
    dy: &[f32],
    (_, c, s): Dims,
    coeffs: &[(f32, f32, f32)],
    affine: &[Affine],
    relu: bool,
) -> Vec<f32> {
    // SAFETY: each image's chunk is c * s long and every channel's s values
    // are written.
    unsafe {
        par_filled(x.len(), c * s, |img, dx| {
            widest(
                #[inline(always)]
                || {
                    let (x, dy) = (&x[img * c * s..][..c * s], &dy[img * c * s..][..c * s]);
                    for (ch, &coeffs) in coeffs.iter().enumerate() {
                        let run = ch * s..(ch + 1) * s;
                        let (dx, x, dy) = (&mut dx[run.clone()], &x[run.clone()], &dy[run]);
                        if relu {
                            input_grad_run::<true>(dx, x, dy, coeffs, affine[ch]);
                        } else {
                            input_grad_run::<false>(dx, x, dy, coeffs, affine[ch]);
                        }
                    }
                },
            )
        })
    }
}

#[inline(always)]
fn input_grad_run<const RELU: bool>(
    dx: &mut [MaybeUninit<f32>],
    x: &[f32],
    dy: &[f32],
    (a, b, e): (f32, f32, f32),
    affine: Affine,
) {
    for ((o, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
        o.write(a * gate::<RELU>(x, affine, d) + b * x + e);
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::{Width, at_width};
    use super::*;
    use crate::test_util::values;

    #[test]
    fn moments_match_a_two_pass_f64_reference() {
        for dims in [(3, 2, 5), (4, 3, 17), (2, 5, 64), (1, 2, 3)] {
            let (n, c, s) = dims;
            // A large offset: the single-pass sum of squares would cancel.
            let x: Vec<f32> = values(n * c * s, 7).iter().map(|v| v + 1000.0).collect();
            let (mean, var) = moments(&x, dims);
            for ch in 0..c {
                let channel: Vec<f64> = (0..n)
                    .flat_map(|img| &x[(img * c + ch) * s..][..s])
                    .map(|&v| v as f64)
                    .collect();
                let m = channel.iter().sum::<f64>() / channel.len() as f64;
                let v =
                    channel.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / channel.len() as f64;
                assert!((mean[ch] - m).abs() < 1e-9 * m.abs(), "{dims:?} mean");
                assert!(
                    (var[ch] - v).abs() < 1e-6 * v,
                    "{dims:?} var {} vs {v}",
                    var[ch]
                );
            }
        }
    }

    /// Every pass gives the same bits at every vector width this CPU has.
    #[test]
    fn every_width_gives_the_same_bits() {
        let dims = (3, 4, 37);
        let len = 3 * 4 * 37;
        let (x, r, dy) = (values(len, 1), values(len, 2), values(len, 3));
        let mean = [0.1f32, -0.2, 0.3, 0.0];
        let inv_std = [1.5f32, 0.5, 2.0, 1.0];
        let affine = [(1.5f32, -0.1), (0.5, 0.2), (2.0, 0.0), (-1.0, 0.05)];
        let coeffs = [
            (1.0f32, -0.5, 0.1),
            (0.3, 0.2, -0.1),
            (2.0, 0.0, 0.0),
            (-1.0, 1.0, 0.5),
        ];
        let run = |width| {
            at_width(width, || {
                let mut out = vec![];
                for tail in [Tail::Plain, Tail::Relu, Tail::AddRelu(&r)] {
                    out.extend(normalise(&x, dims, &affine, tail));
                }
                for relu in [false, true] {
                    let (a, b) = param_sums(&x, &dy, dims, (&mean, &inv_std), &affine, relu);
                    out.extend(a.into_iter().chain(b));
                    out.extend(input_grad(&x, &dy, dims, &coeffs, &affine, relu));
                }
                let (g, (a, b)) = gated_param_sums((&x, &r, &dy), dims, (&mean, &inv_std), &affine);
                out.extend(g.into_iter().chain(a).chain(b));
                let (m, v) = moments(&x, dims);
                out.extend(m.into_iter().chain(v).map(|v| v as f32));
                out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            })
        };
        let portable = run(Width::Portable);
        for width in Width::available() {
            assert_eq!(run(width), portable, "{width:?}");
        }
    }

    /// The fused gate-and-sums pass against the gate, then the plain sums.
    #[test]
    fn gated_sums_equal_the_gate_then_the_plain_sums() {
        let dims = (2, 3, 20);
        let len = 2 * 3 * 20;
        let (x, r, dy) = (values(len, 4), values(len, 5), values(len, 6));
        let (mean, inv_std) = ([0.2f32, -0.1, 0.0], [1.1f32, 0.9, 1.3]);
        let affine = [(1.1f32, 0.3), (-0.9, 0.1), (1.3, -0.2)];
        let (g, sums) = gated_param_sums((&x, &r, &dy), dims, (&mean, &inv_std), &affine);
        let want: Vec<f32> = (0..len)
            .map(|i| {
                let (k, d) = affine[i / 20 % 3];
                if x[i] * k + d + r[i] >= 0.0 {
                    dy[i]
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(g, want);
        assert!(g.contains(&0.0) && g.iter().any(|&v| v != 0.0));
        assert_eq!(
            sums,
            param_sums(&x, &g, dims, (&mean, &inv_std), &affine, false)
        );
    }
}
