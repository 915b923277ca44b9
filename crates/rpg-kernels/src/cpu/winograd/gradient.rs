//! The weight gradient: `dL/dU` summed over tiles per task, then `G^T dL/dU G`.

use super::*;

/// [`weight_grad`], its transforms compiled for AVX2 and FMA when `vector`.
pub(super) fn weight_grad_with<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) static GRADIENT_BUFFERS: BufferPool = BufferPool::new();

/// A few f32 buffers lent out and given back, reused across calls.
pub(super) struct BufferPool(std::sync::Mutex<Vec<Vec<f32>>>);

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
pub(super) fn kernel_gradient<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) fn pairs_gradient<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) unsafe fn pairs_gradient_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    du: &[f32],
    pairs: usize,
    at: usize,
    out: &mut [f32],
) {
    pairs_gradient_lanes::<M, O, S>(du, pairs, at, out)
}

#[inline(always)]
pub(super) fn pairs_gradient_lanes<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) fn kernel_tile_gradient<M: Minimal<O, S>, T: Value, const O: usize, const S: usize>(
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
pub(super) fn gradient_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
    dy: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    t: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: `vector` is set only where AVX2 and FMA were detected,
        // `wide_applies` checks AVX-512F.
        return unsafe {
            if wide_applies(dims.0) {
                gradient_transform_avx512::<M, O, S>(dy, dims, at, t)
            } else {
                gradient_transform_avx2::<M, O, S>(dy, dims, at, t)
            }
        };
    }
    let _ = vector;
    gradient_transform_lanes::<M, PlainTranspose, Lanes, O, S>(dy, dims, at, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gradient_transform_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    dy: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    t: &mut [f32],
) {
    gradient_transform_lanes::<M, Avx2Transpose, Lanes, O, S>(dy, dims, at, t)
}

/// [`gradient_transform`] two channel blocks per vector; the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn gradient_transform_avx512<M: Minimal<O, S>, const O: usize, const S: usize>(
    dy: &[f32],
    dims: (usize, usize, usize),
    at: Tiles,
    t: &mut [f32],
) {
    gradient_transform_lanes::<M, Avx2Transpose, Wide, O, S>(dy, dims, at, t)
}

#[inline(always)]
pub(super) fn gradient_transform_lanes<
    M: Minimal<O, S>,
    X: Transpose,
    B: Block,
    const O: usize,
    const S: usize,
>(
    dy: &[f32],
    (k, h, w): (usize, usize, usize),
    Tiles { n, first, grid }: Tiles,
    t: &mut [f32],
) {
    thread_local! {
        static PLANES: std::cell::Cell<Staging> = std::cell::Cell::default();
    }
    let (ph, pw) = (O * grid.0, O * grid.1);
    let blocks = k / LANES;
    // The whole gradient as `[block][row][col]` of 8-channel pixels, zero
    // beyond the map where the last tiles overhang it.
    let mut staging = take_lanes(&PLANES, blocks * ph * pw);
    staging.zero_borders(blocks, ph * pw, pw, (0, 0), (h, w));
    for (channels, block_plane) in dy
        .chunks_exact(LANES * h * w)
        .zip(staging.lanes.chunks_exact_mut(ph * pw))
    {
        interleave::<X>(channels, (h, w), block_plane, pw);
    }
    let planes = &staging.lanes;
    for ty in 0..grid.0 {
        for tx in 0..grid.1 {
            let tile = first + ty * grid.1 + tx;
            for block in (0..blocks).step_by(B::BLOCKS) {
                let origin = (block * ph + O * ty) * pw + O * tx;
                // A d, column by column: six rows of four.
                let mut slots = [MaybeUninit::uninit(); O];
                let columns: &[[B; S]; O] = transformed_columns(
                    &mut slots,
                    #[inline(always)]
                    |col, r| B::gather(planes, origin + r * pw + col, ph * pw),
                    M::a_times::<B>,
                );
                // Then times A^T, row by row.
                for i in 0..S {
                    let row = M::a_times(column(columns, i));
                    for (j, value) in row.into_iter().enumerate() {
                        value.write_run(&mut t[((S * i + j) * n + tile) * k + block * LANES..]);
                    }
                }
            }
        }
    }
    PLANES.set(staging);
}
