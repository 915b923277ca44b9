//! The forward: input tiles transformed, one product per tile position,
//! outputs transformed back.

use super::*;

/// [`forward`], its transforms compiled for AVX2 and FMA when `vector`.
pub(super) fn forward_with<M: Minimal<O, S>, const O: usize, const S: usize>(
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

/// `V = B^T d B` for every `S x S` input tile `d` (origin one pixel up and left
/// of its `O x O` outputs, zero outside the image) of one image, into `v` laid
/// out `[S*S][n][channel]`. Eight channels at a time: their planes are
/// interleaved into a zero-bordered copy whose pixels are [`Lanes`], so the
/// transform is vector arithmetic whatever the map size.
pub(super) fn input_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    x: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    v: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected,
        // `wide_applies` checks AVX-512F.
        return unsafe {
            if wide_applies(dims.0) {
                input_transform_avx512::<M, O, S>(x, dims, at, v)
            } else {
                input_transform_avx2::<M, O, S>(x, dims, at, v)
            }
        };
    }
    let _ = vector;
    input_transform_lanes::<M, PlainTranspose, Lanes, O, S>(x, dims, at, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn input_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    x: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    v: &mut [f32],
) {
    input_transform_lanes::<M, Avx2Transpose, Lanes, O, S>(x, dims, at, v)
}

/// [`input_transform`] two channel blocks per vector; the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn input_transform_avx512<M: Minimal<O, S>, const O: usize, const S: usize>(
    x: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    v: &mut [f32],
) {
    input_transform_lanes::<M, Avx2Transpose, Wide, O, S>(x, dims, at, v)
}

#[inline(always)]
pub(super) fn input_transform_lanes<
    M: Minimal<O, S>,
    X: Transpose,
    B: Block,
    const O: usize,
    const S: usize,
>(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    v: &mut [f32],
) {
    thread_local! {
        static PADDED: std::cell::Cell<Staging> = std::cell::Cell::default();
    }
    let (ph, pw) = (O * grid.0 + 2, O * grid.1 + 2);
    let blocks = c / LANES;
    // The whole image, zero-bordered, `[block][row][col]` of 8-channel
    // pixels.
    let mut staging = take_lanes(&PADDED, blocks * ph * pw);
    staging.zero_borders(blocks, ph * pw, pw, (1, 1), (h, w));
    for (planes, block_plane) in x
        .chunks_exact(LANES * h * w)
        .zip(staging.lanes.chunks_exact_mut(ph * pw))
    {
        interleave::<X>(planes, (h, w), &mut block_plane[pw + 1..], pw);
    }
    let padded = &staging.lanes;
    // Tile by tile, every channel block: each of the `S*S` rows of `v` gets
    // the tile's channels as one contiguous run.
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            for block in (0..blocks).step_by(B::BLOCKS) {
                let origin = (block * ph + O * ty) * pw + O * tx;
                // t = B^T d, column by column.
                let mut slots = [MaybeUninit::uninit(); S];
                let t_columns: &[[B; S]; S] = transformed_columns(
                    &mut slots,
                    #[inline(always)]
                    |col, r| B::gather(padded, origin + r * pw + col, ph * pw),
                    M::b_t::<B>,
                );
                // V = t B, row by row.
                for i in 0..S {
                    for (j, value) in M::b_t(column(t_columns, i)).into_iter().enumerate() {
                        value.write_run(&mut v[((S * i + j) * n + tile) * c + block * LANES..]);
                    }
                }
            }
        }
    }
    PADDED.set(staging);
}

/// `Y = A^T m A` for every product tile of one image (`m` laid out
/// `[S*S][n][out]`), written into the image `y` (`[out][h][w]`), clipping the
/// last row/column of tiles where the size is not a multiple of 4. Eight
/// output channels at a time, as in [`input_transform`].
pub(super) fn output_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    m: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    y: &mut [MaybeUninit<f32>],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected,
        // `wide_applies` checks AVX-512F.
        return unsafe {
            if wide_applies(dims.0) {
                output_transform_avx512::<M, O, S>(m, dims, at, y)
            } else {
                output_transform_avx2::<M, O, S>(m, dims, at, y)
            }
        };
    }
    let _ = vector;
    output_transform_lanes::<M, PlainTranspose, Lanes, O, S>(m, dims, at, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    m: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    y: &mut [MaybeUninit<f32>],
) {
    output_transform_lanes::<M, Avx2Transpose, Lanes, O, S>(m, dims, at, y)
}

/// [`output_transform`] two channel blocks per vector; the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn output_transform_avx512<M: Minimal<O, S>, const O: usize, const S: usize>(
    m: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    y: &mut [MaybeUninit<f32>],
) {
    output_transform_lanes::<M, Avx2Transpose, Wide, O, S>(m, dims, at, y)
}

#[inline(always)]
pub(super) fn output_transform_lanes<
    M: Minimal<O, S>,
    X: Transpose,
    B: Block,
    const O: usize,
    const S: usize,
>(
    m: &[f32],
    (k, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    y: &mut [MaybeUninit<f32>],
) {
    // The image as `[block][row][col]` of 8-channel pixels, written tile by
    // tile, then split into channel planes.
    thread_local! {
        static STAGED: std::cell::Cell<Staging> = std::cell::Cell::default();
    }
    // Every pixel is written before it is read.
    let mut staging = take_lanes(&STAGED, k * h * w / LANES);
    let staged = &mut staging.lanes;
    // Tile by tile, every channel block: the tile's `S*S` rows of `m` are read
    // as contiguous runs.
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            let rows = (h - O * ty).min(O);
            let cols = (w - O * tx).min(O);
            for block in (0..k / LANES).step_by(B::BLOCKS) {
                let at = |xi: usize| B::read_run(&m[(xi * n + tile) * k + block * LANES..]);
                // a = A^T m, column by column.
                let mut slots = [MaybeUninit::uninit(); S];
                let a_columns: &[[B; O]; S] = transformed_columns(
                    &mut slots,
                    #[inline(always)]
                    |j, i| at(S * i + j),
                    M::a_t::<B>,
                );
                // Y = a A, row by row.
                for r in 0..rows {
                    let pixel = (block * h + O * ty + r) * w + O * tx;
                    let a_row = column(a_columns, r);
                    for (col, value) in M::a_t(a_row).into_iter().take(cols).enumerate() {
                        value.scatter(staged, pixel + col, h * w);
                    }
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
    STAGED.set(staging);
}
