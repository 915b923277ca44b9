//! The kernel transform `U = G g G^T`, the right operand of the forward's
//! products.

use super::*;

/// Runs `f` on `U = G g G^T` for every (out, in) pair of `w`, laid out
/// `[S*S]` planes of `in x out` [`Panels`]: the right operand of the
/// forward's products.
///
/// `U` is four times the kernel (38 MB for 512 channels) and rebuilt every
/// call, so it is built in a [`ThreadBuffer`] of its own (a fresh one is a
/// page fault per 4 KiB, every call) and in parallel over ranges of output
/// channels.
pub(super) fn with_transformed_kernel<M: Minimal<O, S>, R, const O: usize, const S: usize>(
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
pub(super) const PAIR_BLOCK: usize = PANEL;

/// Fills `u` (`[S*S]` planes of `in x out` [`Panels`]) from `w` (OIHW).
/// The kernels of one panel's outputs for one input are gathered and
/// transformed at a time into a small stage, eight per vector, then written
/// to each of the `S*S` planes as whole runs: writing the values of one
/// pair at a time sends a scattered single-float store per plane.
pub(super) fn filter_transform<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) fn transform_pairs<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) unsafe fn transform_pairs_avx2<M: Minimal<O, S>, const O: usize, const S: usize>(
    gs: &[f32],
    stage: &mut [[[f32; PAIR_BLOCK]; S]; S],
) {
    transform_pairs_lanes::<M, O, S>(gs, stage)
}

#[inline(always)]
pub(super) fn transform_pairs_lanes<M: Minimal<O, S>, const O: usize, const S: usize>(
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
pub(super) fn kernel_tile<M: Minimal<O, S>, T: Value, const O: usize, const S: usize>(
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
