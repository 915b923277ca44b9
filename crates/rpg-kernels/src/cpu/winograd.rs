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

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::broadcast_product::{PANEL, Panels, Strided, panel_index, product};
use super::gemm::{leaves_threads_idle, matmul, product_parallelism};
use super::geometry::ConvGeometry;
use super::storage::{ThreadBuffer, add_into_first, par_filled, with_scratch};

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

/// F(4x4, 3x3): 36 products per 16 outputs; maps of [`MIN_PIXELS_4X4`]
/// or more.
struct F4x4;

impl Minimal<4, 6> for F4x4 {
    #[inline(always)]
    fn b_t<T: Value>(d: [T; 6]) -> [T; 6] {
        [
            d[0] * 4.0 - d[2] * 5.0 + d[4],
            d[3] + d[4] - (d[1] + d[2]) * 4.0,
            d[4] - d[3] + (d[1] - d[2]) * 4.0,
            d[4] - d[2] + (d[3] - d[1]) * 2.0,
            d[4] - d[2] + (d[1] - d[3]) * 2.0,
            d[1] * 4.0 - d[3] * 5.0 + d[5],
        ]
    }

    #[inline(always)]
    fn a_t<T: Value>(m: [T; 6]) -> [T; 4] {
        let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
        let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + m[5],
        ]
    }

    #[inline(always)]
    fn g_times<T: Value>(p: T, q: T, r: T) -> [T; 6] {
        let (a, b) = (p + r, q);
        [
            p * 0.25,
            (a + b) * (-1.0 / 6.0),
            (a - b) * (-1.0 / 6.0),
            p * (1.0 / 24.0) + q * (1.0 / 12.0) + r * (1.0 / 6.0),
            p * (1.0 / 24.0) - q * (1.0 / 12.0) + r * (1.0 / 6.0),
            r,
        ]
    }

    #[inline(always)]
    fn a_times<T: Value>(d: [T; 4]) -> [T; 6] {
        let (s02, s13) = (d[0] + d[2], d[1] + d[3]);
        let (q02, q13) = (d[0] + d[2] * 4.0, d[1] * 2.0 + d[3] * 8.0);
        [d[0], s02 + s13, s02 - s13, q02 + q13, q02 - q13, d[3]]
    }

    #[inline(always)]
    fn g_t<T: Value>(u: [T; 6]) -> [T; 3] {
        let (s12, d12) = (u[1] + u[2], u[2] - u[1]);
        let (s34, d34) = (u[3] + u[4], u[3] - u[4]);
        [
            u[0] * 0.25 - s12 * (1.0 / 6.0) + s34 * (1.0 / 24.0),
            d12 * (1.0 / 6.0) + d34 * (1.0 / 12.0),
            u[5] + (s34 - s12) * (1.0 / 6.0),
        ]
    }
}

/// F(2x2, 3x3): 16 products per 4 outputs; its transformed kernel is 16/9
/// of the kernel where F(4x4)'s is 4 times, which is what decides small
/// maps.
struct F2x2;

impl Minimal<2, 4> for F2x2 {
    #[inline(always)]
    fn b_t<T: Value>(d: [T; 4]) -> [T; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }

    #[inline(always)]
    fn a_t<T: Value>(m: [T; 4]) -> [T; 2] {
        [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
    }

    #[inline(always)]
    fn g_times<T: Value>(p: T, q: T, r: T) -> [T; 4] {
        [p, (p + q + r) * 0.5, (p - q + r) * 0.5, r]
    }

    #[inline(always)]
    fn a_times<T: Value>(d: [T; 2]) -> [T; 4] {
        [d[0], d[0] + d[1], d[0] - d[1], d[1] * -1.0]
    }

    #[inline(always)]
    fn g_t<T: Value>(u: [T; 4]) -> [T; 3] {
        let s12 = (u[1] + u[2]) * 0.5;
        [u[0] + s12, (u[1] - u[2]) * 0.5, s12 + u[3]]
    }
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

/// [`forward`], its transforms compiled for AVX2 and FMA when `vector`.
fn forward_with<M: Minimal<O, S>, const O: usize, const S: usize>(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    vector: bool,
) -> Vec<f32> {
    let (c, k, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
    let grid = (h.div_ceil(O), wd.div_ceil(O));
    let tiles = grid.0 * grid.1;
    let per_task = MIN_PRODUCT_ROWS.div_ceil(tiles).clamp(1, g.batch.max(1));
    // Few tasks leave threads idle: then each task's products run in
    // parallel, one position each.
    let spread_positions = leaves_threads_idle(g.batch.div_ceil(per_task));
    let (in_len, out_len) = (c * h * wd, k * h * wd);
    with_transformed_kernel::<M, _, O, S>(w, (k, c), vector, |u| {
        let fill = |task: usize, y_imgs: &mut [MaybeUninit<f32>]| {
            let images = y_imgs.len() / out_len;
            let x_imgs = &x[task * per_task * in_len..][..images * in_len];
            let n = images * tiles;
            let tiles_of = |img: usize| Tiles {
                n,
                first: img * tiles,
                grid,
            };
            // The transforms write every tile of every position of `v`, and
            // the products every element of `m`.
            with_scratch((S * S) * n * (c + k), |buf| {
                let (v, m) = buf.split_at_mut((S * S) * n * c);
                for (img, x_img) in x_imgs.chunks_exact(in_len).enumerate() {
                    input_transform::<M, O, S>(x_img, (c, h, wd), tiles_of(img), v, vector);
                }
                let position = |(xi, m_xi): (usize, &mut [f32])| {
                    let a = Strided {
                        data: &v[xi * n * c..][..n * c],
                        row_stride: c,
                        depth_stride: 1,
                    };
                    let u_xi = Panels {
                        data: &u[xi * k * c..][..k * c],
                    };
                    product((n, k, c), (m_xi, k), false, a, u_xi, vector);
                };
                if spread_positions {
                    m.par_chunks_exact_mut(n * k).enumerate().for_each(position);
                } else {
                    m.chunks_exact_mut(n * k).enumerate().for_each(position);
                }
                for (img, y_img) in y_imgs.chunks_exact_mut(out_len).enumerate() {
                    output_transform::<M, O, S>(m, (k, h, wd), tiles_of(img), y_img, vector);
                }
            })
        };
        // SAFETY: `output_transform` writes every output of each image.
        unsafe { par_filled(g.batch * out_len, per_task * out_len, fill) }
    })
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

/// [`weight_grad`], its transforms compiled for AVX2 and FMA when `vector`.
fn weight_grad_with<M: Minimal<O, S>, const O: usize, const S: usize>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    vector: bool,
) -> Vec<f32> {
    let (c, k, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
    let grid = (h.div_ceil(O), wd.div_ceil(O));
    let tiles = grid.0 * grid.1;
    let batch = g.batch.max(1);
    let per_product = MIN_GRADIENT_DEPTH.div_ceil(tiles).clamp(1, batch);
    let per_task = batch
        .div_ceil(rayon::current_num_threads().max(1))
        .next_multiple_of(per_product);
    let par = product_parallelism(batch.div_ceil(per_task));
    let (in_len, out_len, u_len) = (c * h * wd, k * h * wd, (S * S) * k * c);
    let mut partials: Vec<Vec<f32>> = x
        .par_chunks(per_task * in_len)
        .zip(dy.par_chunks(per_task * out_len))
        .map(|(xs, dys)| {
            let mut du = GRADIENT_BUFFERS.take(u_len);
            let products = xs
                .chunks(per_product * in_len)
                .zip(dys.chunks(per_product * out_len));
            for (first_product, (x_imgs, dy_imgs)) in products.enumerate() {
                let n = x_imgs.len() / in_len * tiles;
                let tiles_of = |img: usize| Tiles {
                    n,
                    first: img * tiles,
                    grid,
                };
                with_scratch((S * S) * n * (c + k), |buf| {
                    let (v, t) = buf.split_at_mut((S * S) * n * c);
                    for (img, x_img) in x_imgs.chunks_exact(in_len).enumerate() {
                        input_transform::<M, O, S>(x_img, (c, h, wd), tiles_of(img), v, vector);
                    }
                    for (img, dy_img) in dy_imgs.chunks_exact(out_len).enumerate() {
                        gradient_transform::<M, O, S>(dy_img, (k, h, wd), tiles_of(img), t, vector);
                    }
                    // The first product of a task overwrites, so the
                    // reused buffer needs no clearing.
                    for (xi, du_xi) in du.chunks_exact_mut(k * c).enumerate() {
                        matmul(
                            (k, c, n),
                            du_xi,
                            (1, c as isize),
                            first_product > 0,
                            &t[xi * n * k..][..n * k],
                            (k as isize, 1),
                            &v[xi * n * c..][..n * c],
                            (1, c as isize),
                            par,
                        );
                    }
                })
            }
            du
        })
        .collect();
    add_into_first(&mut partials);
    let total = partials.first().expect("a batch has an image");
    let dw = kernel_gradient::<M, O, S>(total, k, c, vector);
    for buffer in partials {
        GRADIENT_BUFFERS.give_back(buffer);
    }
    dw
}

/// Buffers for the per-task `dL/dU` sums (four times the kernel: 9.4 MB at
/// 256 channels), kept between calls: a fresh one costs a page fault per
/// 4 KiB every step.
static GRADIENT_BUFFERS: BufferPool = BufferPool::new();

/// A few f32 buffers lent out and given back, reused across calls.
struct BufferPool(std::sync::Mutex<Vec<Vec<f32>>>);

impl BufferPool {
    /// How many buffers the pool keeps: one per task of a two-thread pool
    /// and a spare.
    const KEEP: usize = 4;

    const fn new() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }

    /// A buffer of `len` floats, contents unspecified.
    fn take(&self, len: usize) -> Vec<f32> {
        let reused = self.0.lock().ok().and_then(|mut pool| pool.pop());
        let mut buffer = reused.unwrap_or_default();
        buffer.resize(len, 0.0);
        buffer
    }

    fn give_back(&self, buffer: Vec<f32>) {
        if let Ok(mut pool) = self.0.lock()
            && pool.len() < Self::KEEP
        {
            pool.push(buffer);
        }
    }
}

/// `dL/dw = G^T (dL/dU) G` for every (out, in) pair: `du` laid out
/// `[S*S][out][in]`, the result OIHW. Eight pairs per vector,
/// in parallel over blocks of pairs.
fn kernel_gradient<M: Minimal<O, S>, const O: usize, const S: usize>(
    du: &[f32],
    k: usize,
    c: usize,
    vector: bool,
) -> Vec<f32> {
    let pairs = k * c;
    let mut dw = vec![0f32; pairs * 9];
    dw.par_chunks_mut(9 * PAIR_BLOCK * 64)
        .enumerate()
        .for_each(|(chunk, out)| {
            let first = chunk * PAIR_BLOCK * 64;
            for (block, out) in out.chunks_mut(9 * PAIR_BLOCK).enumerate() {
                let at = first + block * PAIR_BLOCK;
                pairs_gradient::<M, O, S>(du, pairs, at, out, vector);
            }
        });
    dw
}

/// [`kernel_gradient`] of pairs `at..at + out.len() / 9` into `out`.
fn pairs_gradient<M: Minimal<O, S>, const O: usize, const S: usize>(
    du: &[f32],
    pairs: usize,
    at: usize,
    out: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        return unsafe { pairs_gradient_avx2::<M, O, S>(du, pairs, at, out) };
    }
    let _ = vector;
    pairs_gradient_lanes::<M, O, S>(du, pairs, at, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pairs_gradient_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    du: &[f32],
    pairs: usize,
    at: usize,
    out: &mut [f32],
) {
    pairs_gradient_lanes::<M, O, S>(du, pairs, at, out)
}

#[inline(always)]
fn pairs_gradient_lanes<M: Minimal<O, S>, const O: usize, const S: usize>(
    du: &[f32],
    pairs: usize,
    at: usize,
    out: &mut [f32],
) {
    let count = out.len() / 9;
    let whole = count / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        let mut tile = [[Lanes::default(); S]; S];
        for (i, row) in tile.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = Lanes::load(&du[(S * i + j) * pairs + at + p..]);
            }
        }
        for (e, value) in kernel_tile_gradient::<M, _, O, S>(tile)
            .into_iter()
            .enumerate()
        {
            for (l, v) in value.0.into_iter().enumerate() {
                out[(p + l) * 9 + e] = v;
            }
        }
    }
    for p in whole..count {
        let mut tile = [[0f32; S]; S];
        for (i, row) in tile.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = du[(S * i + j) * pairs + at + p];
            }
        }
        out[p * 9..][..9].copy_from_slice(&kernel_tile_gradient::<M, _, O, S>(tile));
    }
}

/// `G^T du G` of one pair's `S*S` positions: its 3x3 kernel gradient,
/// row-major.
#[inline(always)]
fn kernel_tile_gradient<M: Minimal<O, S>, T: Value, const O: usize, const S: usize>(
    du: [[T; S]; S],
) -> [T; 9] {
    // s = G^T du: 3 rows of 6, column by column.
    let mut columns = [[du[0][0]; 3]; S];
    for (j, c) in columns.iter_mut().enumerate() {
        *c = M::g_t(column(&du, j));
    }
    // Row a of the result = row a of s, times G.
    let mut gradient = [du[0][0]; 9];
    for (a, row) in gradient.chunks_exact_mut(3).enumerate() {
        row.copy_from_slice(&M::g_t(column(&columns, a)));
    }
    gradient
}

/// `A dY A^T` for every `O x O` output-gradient tile of one image (zero beyond
/// the map's edge), into `t` laid out `[S*S][n][channel]` as the input
/// transform lays out `V`; eight channels at a time.
fn gradient_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    dy: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    t: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        return unsafe { gradient_transform_avx2::<M, O, S>(dy, dims, at, t) };
    }
    let _ = vector;
    gradient_transform_lanes::<M, PlainTranspose, O, S>(dy, dims, at, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gradient_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    dy: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    t: &mut [f32],
) {
    gradient_transform_lanes::<M, Avx2Transpose, O, S>(dy, dims, at, t)
}

#[inline(always)]
fn gradient_transform_lanes<M: Minimal<O, S>, X: Transpose, const O: usize, const S: usize>(
    dy: &[f32],
    (k, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    t: &mut [f32],
) {
    let (ph, pw) = (O * grid.0, O * grid.1);
    let blocks = k / LANES;
    // The whole gradient as `[block][row][col]` of 8-channel pixels, zero
    // beyond the map where the last tiles overhang it.
    let mut planes = vec![Lanes::default(); blocks * ph * pw];
    for (channels, block_plane) in dy
        .chunks_exact(LANES * h * w)
        .zip(planes.chunks_exact_mut(ph * pw))
    {
        interleave::<X>(channels, (h, w), block_plane, pw);
    }
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            for block in 0..blocks {
                let origin = (block * ph + O * ty) * pw + O * tx;
                // A d, column by column: six rows of four.
                let mut columns = [[Lanes::default(); S]; O];
                for (col, c) in columns.iter_mut().enumerate() {
                    let mut d = [Lanes::default(); O];
                    for (r, value) in d.iter_mut().enumerate() {
                        *value = planes[origin + r * pw + col];
                    }
                    *c = M::a_times(d);
                }
                // Then times A^T, row by row.
                for i in 0..S {
                    let row = M::a_times(column(&columns, i));
                    for (j, value) in row.into_iter().enumerate() {
                        t[((S * i + j) * n + tile) * k + block * LANES..][..LANES]
                            .copy_from_slice(&value.0);
                    }
                }
            }
        }
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

/// Eight channels' values at one position, one per lane: the transforms
/// are the same adds and scalings on every lane, which LLVM turns into
/// vector instructions.
#[derive(Clone, Copy, Default)]
struct Lanes([f32; LANES]);

impl std::ops::Add for Lanes {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        let mut sum = self;
        for (a, b) in sum.0.iter_mut().zip(o.0) {
            *a += b;
        }
        sum
    }
}

impl std::ops::Sub for Lanes {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        let mut difference = self;
        for (a, b) in difference.0.iter_mut().zip(o.0) {
            *a -= b;
        }
        difference
    }
}

impl std::ops::Mul<f32> for Lanes {
    type Output = Self;
    #[inline(always)]
    fn mul(self, s: f32) -> Self {
        let mut product = self;
        for v in product.0.iter_mut() {
            *v *= s;
        }
        product
    }
}

impl Lanes {
    /// The first [`LANES`] values of `run`.
    #[inline(always)]
    fn load(run: &[f32]) -> Self {
        let mut lanes = Self::default();
        lanes.0.copy_from_slice(&run[..LANES]);
        lanes
    }
}

/// Column `j` of a small row-major matrix. A loop rather than
/// `std::array::from_fn`, whose closures are not always inlined into the
/// AVX2 callers and then run without AVX2.
#[inline(always)]
fn column<T: Copy, const R: usize, const C: usize>(rows: &[[T; C]; R], j: usize) -> [T; R] {
    let mut out = [rows[0][j]; R];
    for (o, row) in out.iter_mut().zip(rows) {
        *o = row[j];
    }
    out
}

/// What the transforms need of a value: `f32` for the kernel, [`Lanes`]
/// for the data.
trait Value:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<f32, Output = Self>
{
}
impl Value for f32 {}
impl Value for Lanes {}

/// Runs `f` on `U = G g G^T` for every (out, in) pair of `w`, laid out
/// `[S*S]` planes of `in x out` [`Panels`]: the right operand of the
/// forward's products.
///
/// `U` is four times the kernel (38 MB for 512 channels) and rebuilt every
/// call, so it is built in a [`ThreadBuffer`] of its own (a fresh one is a
/// page fault per 4 KiB, every call) and in parallel over ranges of output
/// channels.
fn with_transformed_kernel<M: Minimal<O, S>, R, const O: usize, const S: usize>(
    w: &[f32],
    (k, c): (usize, usize),
    vector: bool,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    thread_local! {
        static KERNEL: ThreadBuffer = const { ThreadBuffer::new() };
    }
    KERNEL.with(|buffer| {
        buffer.lend((S * S) * k * c, |u| {
            filter_transform::<M, O, S>(w, k, c, u, vector);
            f(u)
        })
    })
}

/// Kernel pairs transformed per stage in [`filter_transform`]: one panel's
/// outputs.
const PAIR_BLOCK: usize = PANEL;

/// Fills `u` (`[S*S]` planes of `in x out` [`Panels`]) from `w` (OIHW).
/// The kernels of one panel's outputs for one input are gathered and
/// transformed at a time into a small stage, eight per vector, then written
/// to each of the `S*S` planes as whole runs: writing the values of one
/// pair at a time sends a scattered single-float store per plane.
fn filter_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    w: &[f32],
    k: usize,
    c: usize,
    u: &mut [f32],
    vector: bool,
) {
    let panels = k.div_ceil(PANEL);
    let panels_per_task = panels
        .div_ceil(2 * rayon::current_num_threads().max(1))
        .max(1);
    let span = panels_per_task * PANEL * c;
    // Task t gets panels `t*panels_per_task..` of every plane.
    let mut planes: Vec<_> = u
        .chunks_mut(k * c)
        .map(|plane| plane.chunks_mut(span))
        .collect();
    let tasks: Vec<Vec<&mut [f32]>> = (0..panels.div_ceil(panels_per_task))
        .map(|_| planes.iter_mut().filter_map(Iterator::next).collect())
        .collect();
    tasks
        .into_par_iter()
        .enumerate()
        .for_each(|(task, mut runs)| {
            let mut gathered = [0f32; 9 * PAIR_BLOCK];
            let mut stage = [[[0f32; PAIR_BLOCK]; S]; S];
            let first_out = task * panels_per_task * PANEL;
            let outs = runs[0].len() / c;
            for panel in (0..outs).step_by(PANEL) {
                let width = PANEL.min(outs - panel);
                for input in 0..c {
                    for (o, g) in gathered.chunks_exact_mut(9).take(width).enumerate() {
                        let out = first_out + panel + o;
                        g.copy_from_slice(&w[(out * c + input) * 9..][..9]);
                    }
                    transform_pairs::<M, O, S>(&gathered[..9 * width], &mut stage, vector);
                    let at = panel_index(input, panel, (c, outs));
                    for (run, staged) in runs.iter_mut().zip(stage.iter().flatten()) {
                        run[at..at + width].copy_from_slice(&staged[..width]);
                    }
                }
            }
        });
}

/// `U` of up to [`PAIR_BLOCK`] kernels `gs` (9 values each) into
/// `stage[position][pair]`.
fn transform_pairs<M: Minimal<O, S>, const O: usize, const S: usize>(
    gs: &[f32],
    stage: &mut [[[f32; PAIR_BLOCK]; S]; S],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        return unsafe { transform_pairs_avx2::<M, O, S>(gs, stage) };
    }
    let _ = vector;
    transform_pairs_lanes::<M, O, S>(gs, stage)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_pairs_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    gs: &[f32],
    stage: &mut [[[f32; PAIR_BLOCK]; S]; S],
) {
    transform_pairs_lanes::<M, O, S>(gs, stage)
}

#[inline(always)]
fn transform_pairs_lanes<M: Minimal<O, S>, const O: usize, const S: usize>(
    gs: &[f32],
    stage: &mut [[[f32; PAIR_BLOCK]; S]; S],
) {
    let pairs = gs.len() / 9;
    let whole = pairs / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        // Eight kernels' values side by side: a transpose of 8 x 9.
        let mut g = [Lanes::default(); 9];
        for (l, kernel) in gs[p * 9..][..LANES * 9].chunks_exact(9).enumerate() {
            for (value, lanes) in kernel.iter().zip(g.iter_mut()) {
                lanes.0[l] = *value;
            }
        }
        let tile = kernel_tile::<M, _, O, S>(g);
        for (staged, value) in stage.iter_mut().flatten().zip(tile.iter().flatten()) {
            staged[p..p + LANES].copy_from_slice(&value.0);
        }
    }
    for p in whole..pairs {
        let mut g = [0f32; 9];
        g.copy_from_slice(&gs[p * 9..][..9]);
        let tile = kernel_tile::<M, _, O, S>(g);
        for (staged, value) in stage.iter_mut().flatten().zip(tile.iter().flatten()) {
            staged[p] = *value;
        }
    }
}

/// `G g G^T` of one 3x3 kernel `g` (row-major): its `S x S` positions.
#[inline(always)]
fn kernel_tile<M: Minimal<O, S>, T: Value, const O: usize, const S: usize>(
    g: [T; 9],
) -> [[T; S]; S] {
    // s = G g, kept as its 3 columns of S.
    let s = [
        M::g_times(g[0], g[3], g[6]),
        M::g_times(g[1], g[4], g[7]),
        M::g_times(g[2], g[5], g[8]),
    ];
    // Row i of U = row i of s, times G^T.
    let mut rows = [[g[0]; S]; S];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = M::g_times(s[0][i], s[1][i], s[2][i]);
    }
    rows
}

/// `V = B^T d B` for every `S x S` input tile `d` (origin one pixel up and left
/// of its `O x O` outputs, zero outside the image) of one image, into `v` laid
/// out `[S*S][n][channel]`. Eight channels at a time: their planes are
/// interleaved into a zero-bordered copy whose pixels are [`Lanes`], so the
/// transform is vector arithmetic whatever the map size.
fn input_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    x: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    v: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        return unsafe { input_transform_avx2::<M, O, S>(x, dims, at, v) };
    }
    let _ = vector;
    input_transform_lanes::<M, PlainTranspose, O, S>(x, dims, at, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    x: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    v: &mut [f32],
) {
    input_transform_lanes::<M, Avx2Transpose, O, S>(x, dims, at, v)
}

#[inline(always)]
fn input_transform_lanes<M: Minimal<O, S>, X: Transpose, const O: usize, const S: usize>(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    v: &mut [f32],
) {
    let (ph, pw) = (O * grid.0 + 2, O * grid.1 + 2);
    let blocks = c / LANES;
    // The whole image, zero-bordered, `[block][row][col]` of 8-channel
    // pixels; the border is never written, so stays zero.
    let mut padded = vec![Lanes::default(); blocks * ph * pw];
    for (planes, block_plane) in x
        .chunks_exact(LANES * h * w)
        .zip(padded.chunks_exact_mut(ph * pw))
    {
        interleave::<X>(planes, (h, w), &mut block_plane[pw + 1..], pw);
    }
    // Tile by tile, every channel block: each of the `S*S` rows of `v` gets
    // the tile's channels as one contiguous run.
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            for block in 0..blocks {
                let origin = (block * ph + O * ty) * pw + O * tx;
                // t = B^T d, column by column.
                let mut t = [[Lanes::default(); S]; S];
                for col in 0..S {
                    let mut d = [Lanes::default(); S];
                    for (r, value) in d.iter_mut().enumerate() {
                        *value = padded[origin + r * pw + col];
                    }
                    for (i, value) in M::b_t(d).into_iter().enumerate() {
                        t[i][col] = value;
                    }
                }
                // V = t B, row by row.
                for (i, t_row) in t.into_iter().enumerate() {
                    for (j, value) in M::b_t(t_row).into_iter().enumerate() {
                        v[((S * i + j) * n + tile) * c + block * LANES..][..LANES]
                            .copy_from_slice(&value.0);
                    }
                }
            }
        }
    }
}

/// `Y = A^T m A` for every product tile of one image (`m` laid out
/// `[S*S][n][out]`), written into the image `y` (`[out][h][w]`), clipping the
/// last row/column of tiles where the size is not a multiple of 4. Eight
/// output channels at a time, as in [`input_transform`].
fn output_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    m: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    y: &mut [MaybeUninit<f32>],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        return unsafe { output_transform_avx2::<M, O, S>(m, dims, at, y) };
    }
    let _ = vector;
    output_transform_lanes::<M, PlainTranspose, O, S>(m, dims, at, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    m: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    y: &mut [MaybeUninit<f32>],
) {
    output_transform_lanes::<M, Avx2Transpose, O, S>(m, dims, at, y)
}

#[inline(always)]
fn output_transform_lanes<M: Minimal<O, S>, X: Transpose, const O: usize, const S: usize>(
    m: &[f32],
    (k, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    y: &mut [MaybeUninit<f32>],
) {
    // The image as `[block][row][col]` of 8-channel pixels, written tile by
    // tile, then split into channel planes.
    let mut staged = vec![Lanes::default(); k * h * w / LANES];
    // Tile by tile, every channel block: the tile's `S*S` rows of `m` are read
    // as contiguous runs.
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            let rows = (h - O * ty).min(O);
            let cols = (w - O * tx).min(O);
            for block in 0..k / LANES {
                let at = |xi: usize| Lanes::load(&m[(xi * n + tile) * k + block * LANES..]);
                // a = A^T m, column by column.
                let mut columns = [[Lanes::default(); O]; S];
                for (j, c) in columns.iter_mut().enumerate() {
                    let mut m_col = [Lanes::default(); S];
                    for (i, value) in m_col.iter_mut().enumerate() {
                        *value = at(S * i + j);
                    }
                    *c = M::a_t(m_col);
                }
                let mut a = [[Lanes::default(); S]; O];
                for (r, a_row) in a.iter_mut().enumerate() {
                    *a_row = column(&columns, r);
                }
                // Y = a A, row by row.
                for (r, a_row) in a.into_iter().take(rows).enumerate() {
                    let pixel = (block * h + O * ty + r) * w + O * tx;
                    let out = M::a_t(a_row);
                    staged[pixel..pixel + cols].copy_from_slice(&out[..cols]);
                }
            }
        }
    }
    for (block_plane, planes) in staged
        .chunks_exact(h * w)
        .zip(y.chunks_exact_mut(LANES * h * w))
    {
        deinterleave::<X>(block_plane, (h, w), planes);
    }
}

/// Copies eight channel planes (`planes`, `8 x h x w`) into `dst` as
/// 8-channel pixels, row `r` at `dst[r * pitch..][..w]`: eight pixels at a
/// time through an 8x8 transpose, taken along the planes as one run so
/// that maps narrower than eight (4x4) transpose too.
#[inline(always)]
fn interleave<X: Transpose>(
    planes: &[f32],
    (h, w): (usize, usize),
    dst: &mut [Lanes],
    pitch: usize,
) {
    let total = h * w;
    let whole = total / LANES * LANES;
    // The next pixel's place in `dst`, row by row.
    let (mut r, mut x) = (0, 0);
    let mut place = || {
        let at = r * pitch + x;
        x += 1;
        if x == w {
            (r, x) = (r + 1, 0);
        }
        at
    };
    for p in (0..whole).step_by(LANES) {
        let mut block = [[0f32; LANES]; LANES];
        for (l, lane_run) in block.iter_mut().enumerate() {
            lane_run.copy_from_slice(&planes[l * total + p..][..LANES]);
        }
        for values in X::transpose(block) {
            dst[place()].0 = values;
        }
    }
    for p in whole..total {
        let pixel = &mut dst[place()];
        for (l, value) in pixel.0.iter_mut().enumerate() {
            *value = planes[l * total + p];
        }
    }
}

/// The inverse of [`interleave`] without a pitch: 8-channel pixels `src`
/// (`h * w` of them) into eight channel planes.
#[inline(always)]
fn deinterleave<X: Transpose>(
    src: &[Lanes],
    (h, w): (usize, usize),
    planes: &mut [MaybeUninit<f32>],
) {
    let total = h * w;
    let whole = total / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        let mut block = [[0f32; LANES]; LANES];
        for (values, pixel) in block.iter_mut().zip(&src[p..p + LANES]) {
            *values = pixel.0;
        }
        for (l, values) in X::transpose(block).into_iter().enumerate() {
            for (o, v) in planes[l * total + p..][..LANES].iter_mut().zip(values) {
                o.write(v);
            }
        }
    }
    for (p, pixel) in src[..total].iter().enumerate().skip(whole) {
        for (l, v) in pixel.0.into_iter().enumerate() {
            planes[l * total + p].write(v);
        }
    }
}

/// An 8x8 transpose, `out[i][j] = m[j][i]`: how eight channels' runs of
/// eight pixels become eight pixels of eight channels and back.
trait Transpose {
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES];
}

/// [`Transpose`] element by element.
struct PlainTranspose;

impl Transpose for PlainTranspose {
    #[inline(always)]
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
        let mut out = m;
        for (i, row) in out.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = m[j][i];
            }
        }
        out
    }
}

/// [`Transpose`] in AVX registers: 24 shuffles for 64 values. Only used
/// inside the AVX2-compiled transforms, which run where AVX2 was detected.
#[cfg(target_arch = "x86_64")]
struct Avx2Transpose;

#[cfg(target_arch = "x86_64")]
impl Transpose for Avx2Transpose {
    #[inline(always)]
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
        // SAFETY: this impl is only instantiated by the `*_avx2` transforms,
        // which are called only where AVX2 was detected.
        unsafe { transpose_avx2(m) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose_avx2(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
    use std::arch::x86_64::*;
    // SAFETY: each row is 8 floats, the width of one unaligned load/store.
    unsafe {
        let r: [__m256; LANES] = std::array::from_fn(|i| _mm256_loadu_ps(m[i].as_ptr()));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let rows = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        let mut out = [[0f32; LANES]; LANES];
        for (o, row) in out.iter_mut().zip(rows) {
            _mm256_storeu_ps(o.as_mut_ptr(), row);
        }
        out
    }
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
            let want = same_3x3_reference(&g, &x, &wt);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for ours in forwards(&g, &x, &wt) {
                let err = error(&ours, &want);
                // F(4x4, 3x3)'s transforms scale by up to 8 and 1/24, so
                // its rounding is a few times F(2x2)'s.
                assert!(err <= 3e-5 * scale, "{g:?}: error {err} at scale {scale}");
            }
        }
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
            let want = same_3x3_weight_grad_reference(&g, &x, &dy);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for vector in [false, crate::cpu::has_avx2_fma()] {
                for ours in [
                    weight_grad_with::<F4x4, 4, 6>(&g, &x, &dy, vector),
                    weight_grad_with::<F2x2, 2, 4>(&g, &x, &dy, vector),
                ] {
                    let err = error(&ours, &want);
                    assert!(err <= 3e-5 * scale, "{g:?}: error {err} at scale {scale}");
                }
            }
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
