//! 3x3, stride-1, "same" convolutions by Winograd's minimal filtering
//! F(2x2, 3x3) (Lavin and Gray, 2016): each 2x2 block of outputs from a 4x4
//! block of inputs with 16 multiplications per channel pair instead of 36.
//!
//! Why: on wide layers the conv is its matrix products, and im2col's product
//! is `out x 9*in x pixels`; here it is 16 products `out x in x pixels/4`,
//! 2.25 times fewer multiply-adds, and the transformed input is 4 times the
//! image where im2col's column matrix is 9 times. The input gradient of the
//! same layers runs through the forward (flipped kernel), so it gains too.
//! Narrow layers and small maps keep im2col ([`MIN_CHANNELS`],
//! [`MIN_PIXELS`]), and so does the weight gradient.
//!
//! Rounding differs from the direct sum (the transforms add and subtract
//! before multiplying): relative errors stay around 1e-6 for these
//! transforms, whose coefficients are 0, +-1 and +-1/2.

use std::mem::MaybeUninit;

use super::gemm::{matmul_overwrite, product_parallelism};
use super::geometry::ConvGeometry;
use super::storage::{overwritten, par_filled};

/// The fewest input and output channels for which the transform pays: on
/// narrower layers the 16 products are too shallow for gemm (ResNet-20's
/// 32-channel stage measured level with im2col).
pub(crate) const MIN_CHANNELS: usize = 64;

/// The fewest pixels per map for which the transform pays: on small maps
/// tiles overlap more, each image has few of them, and with few images per
/// task the transforms run on fewer threads than the products (ResNet-18's
/// 8x8 and 4x4 stages measured at 0.7x and 0.4x im2col's input gradient).
pub(crate) const MIN_PIXELS: usize = 256;

/// Positions of the 4x4 transformed tile.
const TILE: usize = 16;

/// Whether `g` is a conv this module computes: 3x3, stride 1, padding 1,
/// no dilation, one group, wide enough and on a large enough map.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.is_same_3x3()
        && g.in_channels >= MIN_CHANNELS
        && g.out_channels >= MIN_CHANNELS
        && g.height * g.width >= MIN_PIXELS
}

/// Columns (tiles) each product should have at least: small maps put
/// several images into one product, so the transformed kernel is read once
/// for all of them rather than streamed per image.
const MIN_PRODUCT_COLUMNS: usize = 256;

/// `y = conv(x, w)` for a geometry [`applies`] accepts (NCHW, OIHW, no bias).
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (c, k, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
    let grid = (h.div_ceil(2), wd.div_ceil(2));
    let tiles = grid.0 * grid.1;
    let u = filter_transform(w, k, c);
    let per_task = MIN_PRODUCT_COLUMNS.div_ceil(tiles).clamp(1, g.batch.max(1));
    let par = product_parallelism(g.batch.div_ceil(per_task));
    let (in_len, out_len) = (c * h * wd, k * h * wd);
    let fill = |task: usize, y_imgs: &mut [MaybeUninit<f32>]| {
        let images = y_imgs.len() / out_len;
        let x_imgs = &x[task * per_task * in_len..][..images * in_len];
        let n = images * tiles;
        // SAFETY: the images' transforms write every column of every row.
        let v = unsafe {
            overwritten(TILE * c * n, |v| {
                for (img, x_img) in x_imgs.chunks_exact(in_len).enumerate() {
                    input_transform(x_img, (c, h, wd), grid, (n, img * tiles), v);
                }
            })
        };
        // SAFETY: the 16 products overwrite their blocks, which tile `m`.
        let m = unsafe {
            overwritten(TILE * k * n, |m| {
                for (xi, m_xi) in m.chunks_exact_mut(k * n).enumerate() {
                    matmul_overwrite(
                        (k, n, c),
                        m_xi,
                        (1, n as isize),
                        &u[xi * k * c..][..k * c],
                        (1, c as isize),
                        &v[xi * c * n..][..c * n],
                        (1, n as isize),
                        par,
                    );
                }
            })
        };
        for (img, y_img) in y_imgs.chunks_exact_mut(out_len).enumerate() {
            output_transform(&m, (k, h, wd), grid, (n, img * tiles), y_img);
        }
    };
    // SAFETY: `output_transform` writes every output of each image.
    unsafe { par_filled(g.batch * out_len, per_task * out_len, fill) }
}

/// `U = G g G^T` for every (out, in) pair, laid out `[16][out][in]`.
fn filter_transform(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    // G applied to three values: a kernel column, then a row of the result.
    let g_times = |p: f32, q: f32, r: f32| [p, 0.5 * (p + q + r), 0.5 * (p - q + r), r];
    let mut u = vec![0f32; TILE * k * c];
    for (pair, g) in w.chunks_exact(9).enumerate() {
        // s = G g, kept as its 3 columns of 4.
        let s: [[f32; 4]; 3] = std::array::from_fn(|j| g_times(g[j], g[3 + j], g[6 + j]));
        for i in 0..4 {
            // Row i of U = row i of s, times G^T.
            for (j, t) in g_times(s[0][i], s[1][i], s[2][i]).into_iter().enumerate() {
                u[(4 * i + j) * k * c + pair] = t;
            }
        }
    }
    u
}

/// `V = B^T d B` for every 4x4 input tile `d` (origin one pixel up and left
/// of its 2x2 outputs, zero outside the image) of every channel of one
/// image, into `v` laid out `[16][channel][n]` at columns `first..`.
/// Rows of tiles at a time, so every write is a contiguous run.
fn input_transform(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (tiles_h, tiles_w): (usize, usize),
    (n, first): (usize, usize),
    v: &mut [MaybeUninit<f32>],
) {
    // The plane with a zero border: one row/column before, enough after
    // for the last tile (two more, one more when the size is odd).
    let (ph, pw) = (2 * tiles_h + 2, 2 * tiles_w + 2);
    let mut padded = vec![0f32; ph * pw];
    let mut t = [
        vec![0f32; pw],
        vec![0f32; pw],
        vec![0f32; pw],
        vec![0f32; pw],
    ];
    for ch in 0..c {
        let plane = &x[ch * h * w..][..h * w];
        for (r, src) in plane.chunks_exact(w).enumerate() {
            padded[(r + 1) * pw + 1..][..w].copy_from_slice(src);
        }
        for ty in 0..tiles_h {
            let row = |r: usize| &padded[(2 * ty + r) * pw..][..pw];
            let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
            // t = B^T d, a whole row of tiles at once.
            for x in 0..pw {
                t[0][x] = d0[x] - d2[x];
                t[1][x] = d1[x] + d2[x];
                t[2][x] = d2[x] - d1[x];
                t[3][x] = d1[x] - d3[x];
            }
            let col = first + ty * tiles_w;
            for (i, t) in t.iter().enumerate() {
                // V = t B: the four columns of each tile's quad of `t`.
                let combine: [fn(&[f32]) -> f32; 4] = [
                    |q| q[0] - q[2],
                    |q| q[1] + q[2],
                    |q| q[2] - q[1],
                    |q| q[1] - q[3],
                ];
                for (j, f) in combine.iter().enumerate() {
                    let out = &mut v[((4 * i + j) * c + ch) * n + col..][..tiles_w];
                    for (o, q) in out.iter_mut().zip(t.windows(4).step_by(2)) {
                        o.write(f(q));
                    }
                }
            }
        }
    }
}

/// `Y = A^T m A` for every transformed product tile of one image (columns
/// `first..` of `m`, laid out `[16][out][n]`), written into the image `y`
/// (`[out][h][w]`), clipping the last row/column of tiles on odd sizes.
fn output_transform(
    m: &[f32],
    (k, h, w): (usize, usize, usize),
    (tiles_h, tiles_w): (usize, usize),
    (n, first): (usize, usize),
    y: &mut [MaybeUninit<f32>],
) {
    let mut a = [[0f32; 4]; 2].map(|_| [(); 4].map(|_| vec![0f32; tiles_w]));
    for ch in 0..k {
        let plane = &mut y[ch * h * w..][..h * w];
        for ty in 0..tiles_h {
            let col = first + ty * tiles_w;
            let mrow = |i: usize, j: usize| &m[((4 * i + j) * k + ch) * n + col..][..tiles_w];
            // a = A^T m, for the whole row of tiles.
            let [a0, a1] = &mut a;
            for (j, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                let (m0, m1, m2, m3) = (mrow(0, j), mrow(1, j), mrow(2, j), mrow(3, j));
                for x in 0..tiles_w {
                    a0[x] = m0[x] + m1[x] + m2[x];
                    a1[x] = m1[x] - m2[x] - m3[x];
                }
            }
            for (dy, a) in a.iter().enumerate() {
                let r = 2 * ty + dy;
                if r >= h {
                    continue;
                }
                let out = &mut plane[r * w..][..w];
                for (x, pair) in out.chunks_mut(2).enumerate() {
                    pair[0].write(a[0][x] + a[1][x] + a[2][x]);
                    if let Some(second) = pair.get_mut(1) {
                        second.write(a[1][x] - a[2][x] - a[3][x]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{same_3x3, same_3x3_reference, values};

    #[test]
    fn matches_the_direct_sum_on_even_and_odd_maps() {
        for (batch, c, k, h, w) in [(2, 64, 65, 16, 16), (1, 65, 64, 17, 17), (2, 64, 64, 9, 29)] {
            let g = same_3x3(batch, c, (h, w), k);
            assert!(applies(&g));
            let x = values(batch * c * h * w, 1);
            let wt = values(k * c * 9, 2);
            let ours = forward(&g, &x, &wt);
            let want = same_3x3_reference(&g, &x, &wt);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = ours
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
            assert!(err <= 1e-5 * scale, "{g:?}: error {err} at scale {scale}");
        }
    }

    #[test]
    fn narrow_or_strided_convs_are_left_to_im2col() {
        let g = same_3x3(1, 16, (16, 16), 64);
        assert!(!applies(&g));
        assert!(!applies(&ConvGeometry {
            in_channels: 64,
            stride: 2,
            ..g
        }));
        assert!(!applies(&ConvGeometry {
            in_channels: 64,
            height: 8,
            width: 8,
            ..g
        }));
        assert!(applies(&ConvGeometry {
            in_channels: 64,
            ..g
        }));
    }
}
