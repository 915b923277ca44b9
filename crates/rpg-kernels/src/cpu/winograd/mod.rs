//! 3x3, stride-1, "same" convolutions by Winograd's minimal filtering
//! (Lavin and Gray, 2016): F(4x4, 3x3) computes each 4x4 block of outputs
//! from a 6x6 block of inputs with 36 multiplications per channel pair
//! instead of 144; F(2x2, 3x3), for maps under 8x8, each 2x2 block from a
//! 4x4 block with 16 instead of 36.
//!
//! Why: on wide layers the conv is its matrix products, and im2col's product
//! is `out x 9*in x pixels`; here it is 36 (16) products `tiles x in x out`,
//! four (2.25) times fewer multiply-adds, and the transformed input is 2.25
//! (4) times the image where im2col's column matrix is 9 times. The input
//! gradient runs through the forward (flipped kernel); the weight gradient
//! is the same products summed over tiles ([`weight_grad`]). Narrow layers
//! keep the other paths ([`MIN_CHANNELS`]).
//!
//! The transforms work on eight channels at once (one per vector lane), so
//! they vectorise on any map size; the transformed data is laid out
//! `[position][tile][channel]` for that. Both filterings share that code
//! through [`Minimal`], which holds their transform matrices.
//!
//! Rounding differs from the direct sum (the transforms add, subtract and
//! scale before multiplying): errors stay within 3e-5 of the largest output
//! in the tests, F(4x4)'s a few times F(2x2)'s, as its coefficients reach 8
//! and 1/24. Until 2026-12-01 this module computed F(2x2, 3x3) forwards on
//! maps of 256 or more pixels only, with scalar transforms.
//!
//! Files: `minimal.rs` (the two filterings' matrices), `kernel.rs` (the
//! kernel transform), `forward.rs` (input and output transforms around the
//! products), `gradient.rs` (the weight gradient), `lanes.rs` (eight
//! channels per vector and the transposes into and out of that layout).
//! This file decides where the module applies and which filtering runs.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::broadcast_product::{PANEL, Panels, Strided, panel_index, product};
use super::gemm::{leaves_threads_idle, matmul, product_parallelism};
use super::geometry::ConvGeometry;
use super::simd::Width;
use super::storage::{ThreadBuffer, add_into_first, par_filled, with_scratch};

mod forward;
mod gradient;
mod kernel;
mod lanes;
mod minimal;

use forward::*;
use gradient::*;
use kernel::*;
use lanes::*;
use minimal::*;

/// The fewest input and output channels for which the transform pays: on
/// narrower layers the products are too shallow for gemm (ResNet-20's
/// 32-channel stage measured level with im2col).
pub(crate) const MIN_CHANNELS: usize = 64;

/// The fewest pixels per map for F(4x4, 3x3). Its transformed kernel is
/// four times the kernel and is rebuilt every call, so it has to be spread
/// over enough tiles: on 4x4 maps (ResNet-18's 512-channel stage, batch 32:
/// 38 MB of it for 32 tiles) writing and reading it took as long as
/// im2col's whole product; from 8x8 up it pays (ResNet-18's 256-channel
/// 8x8 stage: 11.3-12.5 ms against the direct loop's 14.5-19 ms). Smaller
/// maps take F(2x2, 3x3).
pub(crate) const MIN_PIXELS_4X4: usize = 64;

/// Whether `g` takes F(4x4, 3x3) rather than F(2x2, 3x3).
fn large_tiles(g: &ConvGeometry) -> bool {
    g.height * g.width >= MIN_PIXELS_4X4
}

/// The fewest pixels per map for either filtering.
pub(crate) const MIN_PIXELS: usize = 16;

/// One of Winograd's minimal filterings F(O x O, 3x3): `O` outputs per
/// tile side from `S = O + 2` inputs, and its three transform matrices
/// applied to one column or row of a tile.
trait Minimal<const O: usize, const S: usize> {
    /// `B^T d`: input values to transformed ones.
    fn b_t<T: Value>(d: [T; S]) -> [T; S];
    /// `A^T m`: transformed products to outputs.
    fn a_t<T: Value>(m: [T; S]) -> [T; O];
    /// `G g`: three kernel values to transformed ones.
    fn g_times<T: Value>(p: T, q: T, r: T) -> [T; S];
    /// `A d`: output gradients to transformed ones (the adjoint of `a_t`).
    fn a_times<T: Value>(d: [T; O]) -> [T; S];
    /// `G^T u`: transformed kernel gradients to kernel ones (the adjoint of
    /// `g_times`).
    fn g_t<T: Value>(u: [T; S]) -> [T; 3];
}

/// Channels the transforms handle at once, one per vector lane.
const LANES: usize = 8;

/// Whether `g` is a conv this module computes: 3x3, stride 1, padding 1,
/// no dilation, one group, channels in whole vectors, wide enough and on a
/// large enough map.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    takes(g, MIN_CHANNELS)
}

/// A same 3x3 conv with at least `min_channels` input and output channels,
/// both in whole vectors, on a map of [`MIN_PIXELS`] or more.
fn takes(g: &ConvGeometry, min_channels: usize) -> bool {
    g.is_same_3x3()
        && g.in_channels >= min_channels
        && g.out_channels >= min_channels
        && g.in_channels.is_multiple_of(LANES)
        && g.out_channels.is_multiple_of(LANES)
        && g.height * g.width >= MIN_PIXELS
}

/// The fewest input and output channels for which the weight gradient
/// pays: its products are `out x in` deep over tiles, so they stay
/// efficient on narrower layers than the forward's. ResNet-20's 32-channel
/// 16x16 stage: 5.1-6.7 ms against the direct loop's 8.0-10.7 (its forward
/// was level with the direct loop, and 16 channels were twice as slow).
pub(crate) const MIN_GRADIENT_CHANNELS: usize = 32;

/// Whether [`weight_grad`] takes `g`: as [`applies`], down to
/// [`MIN_GRADIENT_CHANNELS`].
pub(crate) fn weight_grad_applies(g: &ConvGeometry) -> bool {
    takes(g, MIN_GRADIENT_CHANNELS)
}

/// Rows (tiles) each product should have at least: small maps put several
/// images into one product, so the transformed kernel is read once for all
/// of them rather than streamed per image.
const MIN_PRODUCT_ROWS: usize = 64;

/// `y = conv(x, w)` for a geometry [`applies`] accepts (NCHW, OIHW, no bias).
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let vector = super::has_avx2_fma();
    if large_tiles(g) {
        forward_with::<F4x4, 4, 6>(g, x, w, vector)
    } else {
        forward_with::<F2x2, 2, 4>(g, x, w, vector)
    }
}

/// Tiles each weight-gradient product sums over at least: its depth.
const MIN_GRADIENT_DEPTH: usize = 256;

/// `dL/dw` for a geometry [`weight_grad_applies`] accepts (NCHW `x` and
/// `dy`, OIHW result).
///
/// The forward is `Y = A^T (U . V) A` per tile with `U = G w G^T`, so
/// `dL/dU = sum over tiles of (A dY A^T) . V` and `dL/dw = G^T (dL/dU) G`:
/// 36 (F(2x2): 16) products `out x in` summed over tiles, four (2.25) times
/// fewer multiply-adds than im2col's product summed over pixels. Images are split over tasks
/// that each sum into a private `dL/dU`, added in task order.
pub(crate) fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let vector = super::has_avx2_fma();
    if large_tiles(g) {
        weight_grad_with::<F4x4, 4, 6>(g, x, dy, vector)
    } else {
        weight_grad_with::<F2x2, 2, 4>(g, x, dy, vector)
    }
}

/// Where one image's tiles sit among a product's `n` rows: rows
/// `first..first + tiles`, row-major over the `grid` of tiles.
#[derive(Clone, Copy)]
struct Tiles {
    n: usize,
    first: usize,
    grid: (usize, usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{same_3x3, same_3x3_reference, same_3x3_weight_grad_reference, values};

    /// Both filterings' forwards, plain and as compiled for AVX2.
    fn forwards(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<Vec<f32>> {
        let mut all = Vec::new();
        for vector in [false, crate::cpu::has_avx2_fma()] {
            all.push(forward_with::<F4x4, 4, 6>(g, x, w, vector));
            all.push(forward_with::<F2x2, 2, 4>(g, x, w, vector));
        }
        all
    }

    /// The largest difference from `want`.
    fn error(ours: &[f32], want: &[f64]) -> f64 {
        ours.iter()
            .zip(want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
    }

    /// Against an f64 direct sum: maps whose sides are and are not
    /// multiples of either tile, down to a lone tile, several images per
    /// product, both filterings whichever the map size would pick.
    #[test]
    fn matches_the_direct_sum_on_even_and_odd_maps() {
        for (batch, c, k, h, w) in [
            (2, 64, 72, 16, 16),
            (1, 72, 64, 17, 17),
            (2, 64, 64, 9, 29),
            (3, 64, 64, 8, 8),
            (5, 64, 128, 4, 4),
            (3, 64, 64, 5, 3),
        ] {
            let g = same_3x3(batch, c, (h, w), k);
            let x = values(batch * c * h * w, 1);
            let wt = values(k * c * 9, 2);
            check_forwards(&g, &x, &wt);
        }
    }

    /// Every forward ([`forwards`]) against the f64 reference.
    fn check_forwards(g: &ConvGeometry, x: &[f32], wt: &[f32]) {
        let want = same_3x3_reference(g, x, wt);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for ours in forwards(g, x, wt) {
            let err = error(&ours, &want);
            // F(4x4, 3x3)'s transforms scale by up to 8 and 1/24, so
            // its rounding is a few times F(2x2)'s.
            assert!(err <= 3e-5 * scale, "{g:?}: error {err} at scale {scale}");
        }
    }

    /// The weight gradient of both filterings, plain and AVX2 transforms,
    /// against the f64 reference.
    fn check_weight_grads(g: &ConvGeometry, x: &[f32], dy: &[f32]) {
        let want = same_3x3_weight_grad_reference(g, x, dy);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for vector in [false, crate::cpu::has_avx2_fma()] {
            for ours in [
                weight_grad_with::<F4x4, 4, 6>(g, x, dy, vector),
                weight_grad_with::<F2x2, 2, 4>(g, x, dy, vector),
            ] {
                let err = error(&ours, &want);
                assert!(err <= 3e-5 * scale, "{g:?}: error {err} at scale {scale}");
            }
        }
    }

    /// The staged images keep their zero borders between calls of one
    /// layout only: a thread that stages another layout over them (whose
    /// pixels land on the first one's borders) and then the first again
    /// must zero them again. One thread, so that every call reuses its
    /// buffers.
    #[test]
    fn kept_borders_survive_a_call_of_another_layout() {
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        one_thread.install(|| {
            for (batch, c, k, h, w) in [(2, 64, 64, 8, 8), (1, 64, 64, 13, 11), (2, 64, 64, 8, 8)] {
                let g = same_3x3(batch, c, (h, w), k);
                let x: Vec<f32> = values(batch * c * h * w, 7)
                    .iter()
                    .map(|v| v + 2.0)
                    .collect();
                let wt = values(k * c * 9, 8);
                let dy: Vec<f32> = values(batch * k * h * w, 9)
                    .iter()
                    .map(|v| v + 2.0)
                    .collect();
                check_forwards(&g, &x, &wt);
                check_weight_grads(&g, &x, &dy);
            }
        });
    }

    /// The weight gradient against an f64 sum over pixels: partial tiles,
    /// several products per task (the first overwriting the reused
    /// buffer), several tasks, both filterings, plain and AVX2 transforms.
    #[test]
    fn the_weight_gradient_matches_the_direct_sum() {
        // 32x32 at batch 9 with F(4x4): 4 images per product, tasks of 8
        // and 1.
        for (batch, c, k, h, w) in [
            (9, 64, 72, 8, 8),
            (3, 72, 64, 10, 13),
            (9, 64, 64, 32, 32),
            (2, 32, 40, 16, 16),
        ] {
            let g = same_3x3(batch, c, (h, w), k);
            let x = values(batch * c * h * w, 5);
            let dy = values(batch * k * h * w, 6);
            check_weight_grads(&g, &x, &dy);
        }
    }

    /// The kernel transform in stages and vectors, whole and partial,
    /// gives each pair's `G g G^T` at its place in every plane.
    fn check_kernel_transform<M: Minimal<O, S>, const O: usize, const S: usize>() {
        for (k, c) in [(3, 5), (3, 24), (7, 40)] {
            let w = values(k * c * 9, 4);
            for vector in [false, crate::cpu::has_avx2_fma()] {
                with_transformed_kernel::<M, _, O, S>(&w, (k, c), vector, |u| {
                    for (pair, g) in w.chunks_exact(9).enumerate() {
                        let want = kernel_tile::<M, f32, O, S>(std::array::from_fn(|e| g[e]));
                        let (out, input) = (pair / c, pair % c);
                        for (position, value) in want.iter().flatten().enumerate() {
                            let at = position * k * c + panel_index(input, out, (c, k));
                            assert_eq!(u[at], *value, "{k}x{c} pair {pair}");
                        }
                    }
                });
            }
        }
    }

    #[test]
    fn the_kernel_transform_places_every_pair() {
        check_kernel_transform::<F4x4, 4, 6>();
        check_kernel_transform::<F2x2, 2, 4>();
    }

    /// Every transform gives the same bits one channel block per value
    /// and two (AVX-512's [`Wide`]), portable and as compiled for AVX2 and
    /// AVX-512 where the CPU has them, on a map that is and one that is
    /// not a whole number of tiles.
    fn check_transform_widths<M: Minimal<O, S>, const O: usize, const S: usize>() {
        for (c, h, w) in [(32usize, 8usize, 8usize), (48, 6, 7)] {
            let grid = (h.div_ceil(O), w.div_ceil(O));
            let n = grid.0 * grid.1;
            let at = Tiles { n, first: 0, grid };
            let x = values(c * h * w, 3);
            let m = values((S * S) * n * c, 4);
            // Each of input, output and gradient transforms, per variant.
            let run = |variant: usize| {
                let mut v = vec![0f32; (S * S) * n * c];
                let mut t = vec![0f32; (S * S) * n * c];
                let mut y = vec![MaybeUninit::new(0f32); c * h * w];
                match variant {
                    0 => {
                        input_transform_lanes::<M, PlainTranspose, Lanes, O, S>(
                            &x,
                            (c, h, w),
                            at,
                            &mut v,
                        );
                        output_transform_lanes::<M, PlainTranspose, Lanes, O, S>(
                            &m,
                            (c, h, w),
                            at,
                            &mut y,
                        );
                        gradient_transform_lanes::<M, PlainTranspose, Lanes, O, S>(
                            &x,
                            (c, h, w),
                            at,
                            &mut t,
                        );
                    }
                    1 => {
                        input_transform_lanes::<M, PlainTranspose, Wide, O, S>(
                            &x,
                            (c, h, w),
                            at,
                            &mut v,
                        );
                        output_transform_lanes::<M, PlainTranspose, Wide, O, S>(
                            &m,
                            (c, h, w),
                            at,
                            &mut y,
                        );
                        gradient_transform_lanes::<M, PlainTranspose, Wide, O, S>(
                            &x,
                            (c, h, w),
                            at,
                            &mut t,
                        );
                    }
                    // SAFETY (both): run only where the CPU has the features.
                    #[cfg(target_arch = "x86_64")]
                    2 => unsafe {
                        input_transform_avx2::<M, O, S>(&x, (c, h, w), at, &mut v);
                        output_transform_avx2::<M, O, S>(&m, (c, h, w), at, &mut y);
                        gradient_transform_avx2::<M, O, S>(&x, (c, h, w), at, &mut t);
                    },
                    #[cfg(target_arch = "x86_64")]
                    _ => unsafe {
                        input_transform_avx512::<M, O, S>(&x, (c, h, w), at, &mut v);
                        output_transform_avx512::<M, O, S>(&m, (c, h, w), at, &mut y);
                        gradient_transform_avx512::<M, O, S>(&x, (c, h, w), at, &mut t);
                    },
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => unreachable!(),
                }
                // SAFETY: every output of the image was written.
                let y: Vec<f32> = y.into_iter().map(|v| unsafe { v.assume_init() }).collect();
                [v, y, t].map(|part| part.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
            };
            let want = run(0);
            let mut variants = vec![1];
            if crate::cpu::has_avx2_fma() {
                variants.push(2);
                if wide_applies(c) {
                    variants.push(3);
                }
            }
            for variant in variants {
                assert_eq!(run(variant), want, "c {c}, {h}x{w}, variant {variant}");
            }
        }
    }

    #[test]
    fn every_transform_gives_the_same_bits_at_every_width() {
        check_transform_widths::<F4x4, 4, 6>();
        check_transform_widths::<F2x2, 2, 4>();
    }

    #[test]
    fn both_transposes_transpose() {
        let m: [[f32; LANES]; LANES] =
            std::array::from_fn(|i| std::array::from_fn(|j| (i * LANES + j) as f32));
        let want: [[f32; LANES]; LANES] = std::array::from_fn(|i| std::array::from_fn(|j| m[j][i]));
        assert_eq!(PlainTranspose::transpose(m), want);
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            assert_eq!(Avx2Transpose::transpose(m), want);
        }
    }

    #[test]
    fn narrow_strided_or_ragged_convs_are_left_to_other_paths() {
        let g = same_3x3(1, 16, (16, 16), 64);
        assert!(!applies(&g));
        let wide = ConvGeometry {
            in_channels: 64,
            ..g
        };
        assert!(applies(&wide));
        assert!(!applies(&ConvGeometry { stride: 2, ..wide }));
        assert!(!applies(&ConvGeometry {
            in_channels: 68,
            ..wide
        }));
        assert!(!applies(&ConvGeometry {
            height: 3,
            width: 3,
            ..wide
        }));
        let narrower = ConvGeometry {
            in_channels: 32,
            out_channels: 32,
            ..g
        };
        assert!(!applies(&narrower) && weight_grad_applies(&narrower));
        assert!(!weight_grad_applies(&ConvGeometry {
            in_channels: 16,
            ..narrower
        }));
    }
}
