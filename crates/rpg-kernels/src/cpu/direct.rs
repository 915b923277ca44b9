//! 3x3, stride-1, "same" convolutions as a direct AVX2 loop: no column
//! matrix.
//!
//! Why: im2col writes each image nine times over before the product reads
//! it, and the narrower the layer, the larger that copy is next to the
//! product (`9 * in * pixels` floats written for `2 * out * 9 * in * pixels`
//! flops). On ResNet-20's 16- and 32-channel stages im2col and its copies
//! were about 14% of a training step. Here each image is copied once into a
//! zero-bordered buffer (which stays in L2), and a register-blocked loop
//! computes 4 output channels by 8 or 16 pixels at a time: per input tap, one
//! or two unaligned loads of the shifted input row, four broadcast weights and
//! four or eight fused multiply-adds into accumulators that never leave
//! registers. The input gradient of the same layers runs through the forward
//! (flipped kernel), so it gains too. The weight gradient of narrow layers on
//! larger maps is a direct loop too: 4 channels by 3 kernel columns of
//! vector partial sums along the pixels (16 channels at 32x32: 87-127
//! against im2col's 78-91 GFLOP/s, alternated).
//!
//! Where the CPU has AVX-512F and rows are whole 16-float vectors, the
//! forward runs 4 channels by 4 such vectors per tile (16 accumulators):
//! ResNet-20's 16- and 32-channel layers at batch 128 went 2.5 -> 1.2 ms per
//! forward and input gradient (alternated, 2026-12-03, AVX-512 EPYC), with
//! the same bits, as each output sums in the same order. The weight
//! gradient's AVX-512 loop sums 16 pixels per vector (16 channels at 32x32:
//! 2.6 -> 1.8 ms, alternated; other last bits than the AVX2 loop).
//!
//! The sum runs over channels, then kernel rows, then columns, one rounding
//! per multiply-add: not the product's order, so values differ from im2col's
//! in the last bits.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::geometry::ConvGeometry;
use super::simd::Width;
use super::storage::{par_filled, sum_in_order, with_scratch};

/// Output channels per register block.
const CHANNEL_BLOCK: usize = 4;

/// Whether `g` is a conv this module computes, on this CPU: 3x3, stride 1,
/// padding 1, no dilation, one group, output channels in blocks of 4, rows a
/// whole number of 8-float vectors, and AVX2 with FMA.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.is_same_3x3()
        && g.out_channels.is_multiple_of(CHANNEL_BLOCK)
        && g.width.is_multiple_of(8)
        && super::has_avx2_fma()
}

/// Whether [`weight_grad`] takes `g`: as [`applies`], on maps of 256 or more
/// pixels and up to 32 input channels. Its sums run along each map's
/// pixels, and on smaller maps the runs are too short (64 channels at 8x8:
/// 51-61 against im2col's 93-111 GFLOP/s); at 64 channels on 32x32 the two
/// measured level.
pub(crate) fn weight_grad_applies(g: &ConvGeometry) -> bool {
    applies(g) && g.height * g.width >= 256 && g.in_channels <= 32
}

/// `y = conv(x, w)` for a geometry [`applies`] accepts (NCHW, OIHW, no bias).
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    forward_at(g, x, w, wide_applies(g))
}

/// Whether [`forward`] takes the AVX-512 loop for `g`: the CPU has
/// AVX-512F and rows are whole 16-float vectors.
fn wide_applies(g: &ConvGeometry) -> bool {
    g.width.is_multiple_of(16) && Width::detected() == Width::Avx512
}

/// [`forward`] with the AVX-512 loop (`wide`, which [`wide_applies`] must
/// allow) or the AVX2 one. Each output sums its products in the same order
/// either way, so the two agree bit for bit.
fn forward_at(g: &ConvGeometry, x: &[f32], w: &[f32], wide: bool) -> Vec<f32> {
    let padded = Padded::of(g);
    let fill = |img: usize, y: &mut [MaybeUninit<f32>]| {
        let image = &x[img * g.image_len()..][..g.image_len()];
        padded.with_copy(image, |xp| {
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: `applies` checked AVX2 and FMA (`wide`: AVX-512F
                // and whole 16-float rows); the padded buffer, kernel and
                // output have the lengths both loops index.
                unsafe {
                    if wide {
                        image_avx512(g, &padded, xp, w, y)
                    } else {
                        image_avx2(g, &padded, xp, w, y)
                    }
                };
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (xp, w, y);
                unreachable!("the direct conv needs AVX2 and FMA, which `applies` checks");
            }
        })
    };
    // SAFETY: `image_avx2` writes every output of the image.
    unsafe { par_filled(g.batch * g.out_image_len(), g.out_image_len(), fill) }
}

/// `dL/dw` for a geometry [`applies`] accepts (taken where
/// [`weight_grad_applies`]): per image, for each block of
/// 4 output channels, input channel and kernel row, 12 vector accumulators
/// (4 channels x 3 kernel columns) run along the pixels, then are summed
/// into the gradient. The images are split into one run per thread, each
/// summing into a private gradient; the runs' gradients are then added in
/// order, so the result depends on the thread count only.
pub(crate) fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    weight_grad_at(g, x, dy, wide_applies(g))
}

/// [`weight_grad`] with the AVX-512 loop (`wide`, which [`wide_applies`]
/// must allow) or the AVX2 one (their lane sums differ in the last bits).
fn weight_grad_at(g: &ConvGeometry, x: &[f32], dy: &[f32], wide: bool) -> Vec<f32> {
    let padded = Padded::of(g);
    let w_len = g.out_channels * g.in_channels * 9;
    let per_task = g.batch.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(per_task * g.image_len())
        .zip(dy.par_chunks(per_task * g.out_image_len()))
        .map(|(xs, dys)| {
            let mut dw = vec![0f32; w_len];
            let images = xs.chunks_exact(g.image_len());
            for (image, dy) in images.zip(dys.chunks_exact(g.out_image_len())) {
                padded.with_copy(image, |xp| {
                    #[cfg(target_arch = "x86_64")]
                    {
                        // SAFETY: `applies` checked AVX2 and FMA (`wide`:
                        // AVX-512F, whole 16-float rows); the lengths are as
                        // both loops index them.
                        unsafe {
                            if wide {
                                weight_grad_avx512(g, &padded, xp, dy, &mut dw)
                            } else {
                                weight_grad_avx2(g, &padded, xp, dy, &mut dw)
                            }
                        };
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        let _ = (xp, dy, &mut dw);
                        unreachable!("the direct conv needs AVX2 and FMA, which `applies` checks");
                    }
                })
            }
            dw
        })
        .collect();
    sum_in_order(partials, w_len)
}

/// [`weight_grad_avx2`] with 16-float vectors along the pixels.
///
/// # Safety
/// As [`weight_grad_avx2`], with AVX-512F available and the width a
/// multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512(
    g: &ConvGeometry,
    padded: &Padded,
    xp: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    // SAFETY: forwarded contract; AVX-512F is enabled here.
    unsafe { weight_grad_with::<vector::Avx512>(g, padded, xp, dy, dw) }
}

/// Adds one image's weight gradient into `dw`.
///
/// # Safety
/// AVX2 and FMA are available; `xp` is `in_channels` padded planes, `dy` is
/// `out_channels * height * width` and `dw` is `out_channels * in_channels *
/// 9`, with the width a multiple of 8 and the output channels a multiple
/// of 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_avx2(
    g: &ConvGeometry,
    padded: &Padded,
    xp: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    // SAFETY: forwarded contract; AVX2 and FMA are enabled here.
    unsafe { weight_grad_with::<vector::Avx2>(g, padded, xp, dy, dw) }
}

/// The weight gradient's loop at the width of `V`, inlined into the
/// function compiled for its features.
///
/// # Safety
/// As [`weight_grad_avx2`], with `V`'s features available and the width a
/// multiple of `V::LANES`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weight_grad_with<V: vector::Vector>(
    g: &ConvGeometry,
    padded: &Padded,
    xp: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let (h, wd, cin) = (g.height, g.width, g.in_channels);
    let (row, plane, pixels) = (padded.row(), padded.plane(), h * wd);
    for block in (0..g.out_channels).step_by(CHANNEL_BLOCK) {
        let dy = &dy[block * pixels..][..CHANNEL_BLOCK * pixels];
        for c in 0..cin {
            for i in 0..3 {
                // SAFETY (all vector calls): `V`'s features are enabled.
                let mut acc = [[unsafe { V::zero() }; 3]; CHANNEL_BLOCK];
                for oh in 0..h {
                    // Padded row `oh + i` is input row `oh + i - 1`.
                    let src = xp[c * plane + (oh + i) * row..][..row].as_ptr();
                    let grads = dy[oh * wd..].as_ptr();
                    for col in (0..wd).step_by(V::LANES) {
                        // SAFETY: `col + j + LANES <= width + 2`, inside the row.
                        let xv = [0, 1, 2].map(|j| unsafe { V::load(src.add(col + j)) });
                        for (o, acc) in acc.iter_mut().enumerate() {
                            // SAFETY: row `oh` of channel `o`'s gradient plane.
                            let d = unsafe { V::load(grads.add(o * pixels + col)) };
                            for (a, x) in acc.iter_mut().zip(&xv) {
                                *a = unsafe { V::fmadd(d, *x, *a) };
                            }
                        }
                    }
                }
                for (o, acc) in acc.iter().enumerate() {
                    let taps = &mut dw[((block + o) * cin + c) * 9 + i * 3..][..3];
                    for (t, a) in taps.iter_mut().zip(acc) {
                        *t += unsafe { V::sum(*a) };
                    }
                }
            }
        }
    }
}

/// The zero-bordered copy of one image: each plane `(h + 2) x (w + 2)`.
struct Padded {
    channels: usize,
    height: usize,
    width: usize,
}

impl Padded {
    fn of(g: &ConvGeometry) -> Self {
        Self {
            channels: g.in_channels,
            height: g.height,
            width: g.width,
        }
    }

    /// Floats per padded row.
    fn row(&self) -> usize {
        self.width + 2
    }

    /// Floats per padded plane.
    fn plane(&self) -> usize {
        (self.height + 2) * self.row()
    }

    /// Runs `f` on a padded copy of `image` in this thread's scratch buffer
    /// (the border is rewritten each time, so earlier contents do not
    /// matter).
    fn with_copy<R>(&self, image: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        let (h, w, row) = (self.height, self.width, self.row());
        with_scratch(self.channels * self.plane(), |buf| {
            for (plane, src) in buf
                .chunks_exact_mut(self.plane())
                .zip(image.chunks_exact(h * w))
            {
                plane[..row].fill(0.0);
                plane[(h + 1) * row..].fill(0.0);
                for (dst, src) in plane[row..(h + 1) * row]
                    .chunks_exact_mut(row)
                    .zip(src.chunks_exact(w))
                {
                    dst[0] = 0.0;
                    // In whole 8-float pieces (the width is a multiple of
                    // 8): a `copy_from_slice` of the row's run-time length
                    // is a `memcpy` call per row, which cost more than
                    // its 32-128 bytes.
                    for (d, s) in dst[1..=w].chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                        d.copy_from_slice(&s[..8]);
                    }
                    dst[w + 1] = 0.0;
                }
            }
            f(buf)
        })
    }
}

/// One image: every block of 4 output channels, every output row, 16
/// pixels at a time (8 where the row is an odd number of vectors).
///
/// # Safety
/// AVX2 and FMA are available; `xp` is `in_channels` padded planes,
/// `w` is `out_channels * in_channels * 9` and `y` is `out_channels *
/// height * width`, with the width a multiple of 8 and the output channels
/// a multiple of 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn image_avx2(
    g: &ConvGeometry,
    padded: &Padded,
    xp: &[f32],
    w: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let (h, wd, cin, pad) = (g.height, g.width, g.in_channels, padded);
    for block in (0..g.out_channels).step_by(CHANNEL_BLOCK) {
        let kernels = &w[block * cin * 9..][..CHANNEL_BLOCK * cin * 9];
        let out = &mut y[block * h * wd..][..CHANNEL_BLOCK * h * wd];
        let mut oh = 0;
        while oh < h {
            // SAFETY (each call): forwarded contract; every vector's 8
            // outputs lie inside row `oh` (or `oh + 1` for a row pair).
            if wd == 8 && oh + 1 < h {
                // Rows of one vector: two rows per tile, so each broadcast
                // weight still feeds two multiply-adds.
                unsafe { tile(cin, pad, xp, kernels, out, [(oh, 0), (oh + 1, 0)]) };
                oh += 2;
                continue;
            }
            let mut col = 0;
            while col < wd {
                if col + 16 <= wd {
                    let at = [(oh, col), (oh, col + 8)];
                    unsafe { tile(cin, pad, xp, kernels, out, at) };
                    col += 16;
                } else {
                    unsafe { tile(cin, pad, xp, kernels, out, [(oh, col)]) };
                    col += 8;
                }
            }
            oh += 1;
        }
    }
}

/// For each of `VECTORS` vectors `(row, col)`, the 8 outputs at that row
/// and columns `col..col + 8` of 4 channels: accumulated over every input
/// channel and tap, then stored.
///
/// # Safety
/// As [`image_avx2`]; each `col + 8 <= width` and each `row < height`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const VECTORS: usize>(
    in_channels: usize,
    padded: &Padded,
    xp: &[f32],
    kernels: &[f32],
    out: &mut [MaybeUninit<f32>],
    at: [(usize, usize); VECTORS],
) {
    // SAFETY: forwarded contract; AVX2 and FMA are enabled here.
    unsafe { tile_with::<vector::Avx2, VECTORS>(in_channels, padded, xp, kernels, out, at) }
}

/// [`image_avx2`] with 16-float vectors: each tile is 4 channels by 4
/// vectors (two rows of two on 32-wide maps, four rows on 16-wide ones):
/// 16 accumulators, four loads and four broadcasts per tap.
///
/// # Safety
/// As [`image_avx2`], with AVX-512F available and the width a multiple of
/// 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn image_avx512(
    g: &ConvGeometry,
    padded: &Padded,
    xp: &[f32],
    w: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let (h, wd, cin) = (g.height, g.width, g.in_channels);
    // The vectors of the map in row order, four to a tile.
    let vectors: Vec<(usize, usize)> = (0..h)
        .flat_map(|r| (0..wd).step_by(16).map(move |c| (r, c)))
        .collect();
    for block in (0..g.out_channels).step_by(CHANNEL_BLOCK) {
        let kernels = &w[block * cin * 9..][..CHANNEL_BLOCK * cin * 9];
        let out = &mut y[block * h * wd..][..CHANNEL_BLOCK * h * wd];
        for at in vectors.chunks(4) {
            // SAFETY (each call): forwarded contract; every vector's 16
            // outputs lie inside its row.
            unsafe {
                match *at {
                    [a, b, c, d] => wide_tile(cin, padded, xp, kernels, out, [a, b, c, d]),
                    [a, b, c] => wide_tile(cin, padded, xp, kernels, out, [a, b, c]),
                    [a, b] => wide_tile(cin, padded, xp, kernels, out, [a, b]),
                    [a] => wide_tile(cin, padded, xp, kernels, out, [a]),
                    _ => unreachable!("chunks of one to four"),
                }
            }
        }
    }
}

/// [`tile`] with 16-float vectors.
///
/// # Safety
/// As [`image_avx512`]; each `col + 16 <= width` and each `row < height`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn wide_tile<const VECTORS: usize>(
    in_channels: usize,
    padded: &Padded,
    xp: &[f32],
    kernels: &[f32],
    out: &mut [MaybeUninit<f32>],
    at: [(usize, usize); VECTORS],
) {
    // SAFETY: forwarded contract; AVX-512F is enabled here.
    unsafe { tile_with::<vector::Avx512, VECTORS>(in_channels, padded, xp, kernels, out, at) }
}

/// The tile's loop at the width of `V` (the same order of sums at every
/// width), inlined into the function compiled for its features.
///
/// # Safety
/// As [`tile`], with `V`'s features available and `V::LANES` in place of 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_with<V: vector::Vector, const VECTORS: usize>(
    in_channels: usize,
    padded: &Padded,
    xp: &[f32],
    kernels: &[f32],
    out: &mut [MaybeUninit<f32>],
    at: [(usize, usize); VECTORS],
) {
    let (row, plane) = (padded.row(), padded.plane());
    // Padded row `r + i` is input row `r + i - 1`; column `c + j` is input
    // column `c + j - 1`.
    let starts = at.map(|(r, c)| r * row + c);
    // SAFETY (all vector calls): `V`'s features are enabled.
    let mut acc = [[unsafe { V::zero() }; VECTORS]; CHANNEL_BLOCK];
    let channel_stride = in_channels * 9;
    for c in 0..in_channels {
        for i in 0..3 {
            let src = xp[c * plane + i * row..].as_ptr();
            let taps = kernels[c * 9 + i * 3..].as_ptr();
            for j in 0..3 {
                // SAFETY: `col + j + LANES <= width + 2`, inside the padded row.
                let xv = starts.map(|start| unsafe { V::load(src.add(start + j)) });
                for (o, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: channel `o` of the block, tap (i, j) of channel c.
                    let wv = unsafe { V::splat(*taps.add(o * channel_stride + j)) };
                    for (a, x) in acc.iter_mut().zip(&xv) {
                        *a = unsafe { V::fmadd(wv, *x, *a) };
                    }
                }
            }
        }
    }
    let (plane_out, width) = (padded.height * padded.width, padded.width);
    for (o, acc) in acc.iter().enumerate() {
        for (a, &(r, c)) in acc.iter().zip(&at) {
            let at = o * plane_out + r * width + c;
            // SAFETY: `at + LANES <= out.len()`; MaybeUninit<f32> is f32-sized.
            unsafe { V::store(out[at..][..V::LANES].as_mut_ptr().cast(), *a) };
        }
    }
}

/// The vector operations the direct loops need, at AVX2's and AVX-512's
/// widths. Each is `#[inline(always)]` and only called from functions
/// compiled with its features, into which it inlines.
#[cfg(target_arch = "x86_64")]
mod vector {
    use std::arch::x86_64::*;

    /// A vector of `LANES` floats.
    pub(super) trait Vector: Copy {
        const LANES: usize;
        /// # Safety
        /// The CPU has the vector's features (as every method).
        unsafe fn zero() -> Self;
        /// # Safety
        /// `LANES` floats from `at` are readable.
        unsafe fn load(at: *const f32) -> Self;
        /// # Safety
        /// As [`Vector::zero`].
        unsafe fn splat(value: f32) -> Self;
        /// `a * b + c`, fused.
        /// # Safety
        /// As [`Vector::zero`].
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
        /// # Safety
        /// `LANES` floats from `at` are writable.
        unsafe fn store(at: *mut f32, v: Self);
        /// The sum of the lanes.
        /// # Safety
        /// As [`Vector::zero`].
        unsafe fn sum(v: Self) -> f32;
    }

    /// 8 floats (AVX2 and FMA).
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

    /// 16 floats (AVX-512F).
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Vector for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller's contract (AVX2 available).
            Self(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(at: *const f32) -> Self {
            // SAFETY: the caller's contract.
            Self(unsafe { _mm256_loadu_ps(at) })
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            // SAFETY: as `zero`.
            Self(unsafe { _mm256_broadcast_ss(&value) })
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: as `zero` (FMA available).
            Self(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn store(at: *mut f32, v: Self) {
            // SAFETY: the caller's contract.
            unsafe { _mm256_storeu_ps(at, v.0) }
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            let v = v.0;
            // SAFETY: as `zero`.
            unsafe {
                let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
                _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
            }
        }
    }

    impl Vector for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller's contract (AVX-512F available).
            Self(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(at: *const f32) -> Self {
            // SAFETY: the caller's contract.
            Self(unsafe { _mm512_loadu_ps(at) })
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            // SAFETY: as `zero`.
            Self(unsafe { _mm512_set1_ps(value) })
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: as `zero`.
            Self(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn store(at: *mut f32, v: Self) {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_ps(at, v.0) }
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            // SAFETY: as `zero`.
            unsafe { _mm512_reduce_add_ps(v.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{same_3x3, same_3x3_reference, same_3x3_weight_grad_reference, values};

    /// [`weight_grad`] against an f64 direct sum, with `dy` the forward's
    /// output (any values do).
    fn check_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) {
        for wide in [false, wide_applies(g)] {
            check_weight_grad_at(g, x, dy, wide);
        }
    }

    fn check_weight_grad_at(g: &ConvGeometry, x: &[f32], dy: &[f32], wide: bool) {
        let dw = weight_grad_at(g, x, dy, wide);
        let want = same_3x3_weight_grad_reference(g, x, dy);
        let largest = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = dw
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        assert!(
            worst <= 1e-5 * largest.max(1.0),
            "{g:?} wide {wide} dw: {worst} of {largest}"
        );
    }

    /// Against an f64 direct sum, on every border.
    #[test]
    fn matches_a_direct_sum() {
        for (batch, cin, cout, h, w) in [
            (2, 3, 4, 5, 8),
            (1, 16, 8, 8, 16),
            (3, 5, 12, 3, 24),
            (2, 7, 4, 4, 8),
            (2, 6, 8, 5, 32),
            (1, 3, 4, 3, 48),
        ] {
            let g = same_3x3(batch, cin, (h, w), cout);
            if !applies(&g) {
                eprintln!("no AVX2/FMA here: the direct conv is not taken");
                return;
            }
            let x = values(g.batch * g.image_len(), 1);
            let k = values(cout * cin * 9, 2);
            let y = forward_at(&g, &x, &k, false);
            if wide_applies(&g) {
                // The AVX-512 loop sums in the AVX2 loop's order.
                assert_eq!(forward_at(&g, &x, &k, true), y, "{g:?}");
            }
            let want = same_3x3_reference(&g, &x, &k);
            let (mut largest, mut worst) = (0f64, 0f64);
            for (&got, &want) in y.iter().zip(&want) {
                largest = largest.max(want.abs());
                worst = worst.max((got as f64 - want).abs());
            }
            assert!(
                worst <= 1e-5 * largest.max(1.0),
                "{g:?}: {worst} of {largest}"
            );
            check_weight_grad(&g, &x, &y);
        }
    }
}
