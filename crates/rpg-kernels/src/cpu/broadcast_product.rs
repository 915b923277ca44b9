//! Winograd's many small matrix products:
//! `dst[r][j] (+)= sum_d a(r, d) * b(d, j)`, `a` read in place with any
//! strides (one element at a time, broadcast to a vector), `b` in
//! [`Panels`] its producer writes directly, `dst` row-major.
//!
//! Why not the `gemm` crate: Winograd runs 36 products per layer and image
//! group, each 64-512 wide and 64-512 deep. `gemm` packs an operand on every
//! call (the transformed kernel, up to 1 MB per product) and its blocking is
//! tuned for larger products; here each 6x16 block of `dst` sits in twelve
//! AVX2 registers while the depth streams through, and neither operand is
//! copied. `b` comes in column panels because its rows read in place would
//! sit a power of two apart (256-512 channels), all in the same few L1 sets.
//!
//! Measured on this project's 2-core machine (2026-12-01,
//! `cargo run --release -p rpg-kernels --example conv_layers`, alternated
//! with the `gemm` build): ResNet-18's 64-channel 32x32 forward 10.7-12.0
//! ms against 10.8-13.9, its 256-channel 8x8 forward 12.0-12.8 against
//! 12.7-14.3, the 512-channel 4x4 level within the machine's spread.
//! CPUs without AVX2 and FMA, and column counts that are not whole vectors,
//! go to `gemm`. Where the CPU has AVX-512F, a 16-float vector is a whole
//! panel and a block is 12 rows of two panels (24 of 32 registers):
//! alternated with the AVX2 build on an AVX-512 EPYC (2026-12-03,
//! `conv_layers`, three pairs), ResNet-18-cifar's Winograd layers' forward
//! 74-75 -> 53-61 ms summed, all its conv passes 231-242 -> 186-214 ms.

use gemm::Parallelism;

use super::gemm::matmul;
use super::simd::Width;

/// Rows of `dst` per register block: six rows of two vectors is twelve
/// accumulators, plus two for `b` and one broadcast, of AVX2's sixteen.
const BLOCK_ROWS: usize = 6;
/// Floats per AVX2 vector.
const LANES: usize = 8;
/// Depth per pass over a column block: a 16-column strip of `b` this deep
/// is 8 KiB, which stays in L1 beside the rows of `a` it meets.
const DEPTH_BLOCK: usize = 128;

/// Columns per panel of [`Panels`]: two vectors.
pub(crate) const PANEL: usize = 2 * LANES;

/// The right operand, `depth x cols`, as column panels: columns
/// `j..j + width` (`j` a multiple of [`PANEL`], `width = min(PANEL, cols -
/// j)`) are `depth` rows of `width` floats from `j * depth`, so element
/// `(d, col)` is at `j * depth + d * width + col - j`.
#[derive(Clone, Copy)]
pub(crate) struct Panels<'a> {
    pub data: &'a [f32],
}

/// Where element `(d, col)` of a `depth x cols` [`Panels`] operand is: the
/// one statement of the layout, for the product and the kernel transform
/// that writes it.
pub(crate) fn panel_index(d: usize, col: usize, (depth, cols): (usize, usize)) -> usize {
    let j = col / PANEL * PANEL;
    j * depth + d * PANEL.min(cols - j) + col - j
}

/// The left operand: element `(r, d)` at `data[r * row_stride + d * depth_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub depth_stride: usize,
}

/// `dst[r * dst_stride + j] (+)= sum_d a(r, d) * b(d, j)` for `r < rows`,
/// `j < cols`, `d < depth`; accumulating into `dst` when `accumulate`,
/// overwriting it otherwise. `vector`: AVX2 and FMA were detected (AVX-512
/// is used where the CPU has it). Single-threaded.
pub(crate) fn product(
    shape: (usize, usize, usize),
    dst: (&mut [f32], usize),
    accumulate: bool,
    a: Strided<'_>,
    b: Panels<'_>,
    vector: bool,
) {
    let level = if vector {
        Width::detected()
    } else {
        Width::Portable
    };
    product_at(level, shape, dst, accumulate, a, b);
}

/// [`product`] with the code chosen by `level` (which the CPU must run):
/// `gemm` at [`Width::Portable`], 6x16 blocks in AVX2 registers, or up to
/// 12x32 blocks in AVX-512 registers (two panels at once).
fn product_at(
    level: Width,
    (rows, cols, depth): (usize, usize, usize),
    (dst, dst_stride): (&mut [f32], usize),
    accumulate: bool,
    a: Strided<'_>,
    b: Panels<'_>,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        dst.len() > (rows - 1) * dst_stride + cols - 1,
        "product dst out of bounds"
    );
    assert!(
        depth == 0 || a.data.len() > (rows - 1) * a.row_stride + (depth - 1) * a.depth_stride,
        "product lhs out of bounds"
    );
    assert!(b.data.len() >= depth * cols, "product rhs out of bounds");
    #[cfg(target_arch = "x86_64")]
    if level == Width::Avx512 && cols.is_multiple_of(PANEL) && depth > 0 {
        // SAFETY: AVX-512 was detected (`level`), and the asserts keep
        // every addressed element inside its slice.
        return unsafe { product_avx512((rows, cols, depth), dst, dst_stride, accumulate, a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if level != Width::Portable && cols.is_multiple_of(LANES) && depth > 0 {
        // SAFETY: AVX2 and FMA were detected (`level`), and the asserts keep
        // every addressed element inside its slice.
        return unsafe { product_avx2((rows, cols, depth), dst, dst_stride, accumulate, a, b) };
    }
    for j in (0..cols).step_by(PANEL) {
        let width = PANEL.min(cols - j);
        matmul(
            (rows, width, depth),
            &mut dst[j..],
            (1, dst_stride as isize),
            accumulate,
            a.data,
            (a.depth_stride as isize, a.row_stride as isize),
            &b.data[j * depth..][..depth * width],
            (1, width as isize),
            Parallelism::None,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(
    (rows, cols, depth): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    a: Strided<'_>,
    b: Panels<'_>,
) {
    let (dst, a_data, b) = (dst.as_mut_ptr(), a.data.as_ptr(), b.data.as_ptr());
    let mut d0 = 0;
    while d0 < depth {
        let span = DEPTH_BLOCK.min(depth - d0);
        let add = accumulate || d0 > 0;
        for j in (0..cols).step_by(PANEL) {
            let width = PANEL.min(cols - j);
            let mut r = 0;
            while r < rows {
                let height = BLOCK_ROWS.min(rows - r);
                // SAFETY: the block lies inside the bounds `product` checked.
                unsafe {
                    let block = Block {
                        dst: dst.add(r * dst_stride + j),
                        dst_stride,
                        a: a_data.add(r * a.row_stride + d0 * a.depth_stride),
                        a_row: a.row_stride,
                        a_depth: a.depth_stride,
                        b: b.add(panel_index(d0, j, (depth, cols))),
                        b_stride: width,
                        depth: span,
                        add,
                    };
                    match (height, width == PANEL) {
                        (6, true) => block.run::<6, 2>(),
                        (5, true) => block.run::<5, 2>(),
                        (4, true) => block.run::<4, 2>(),
                        (3, true) => block.run::<3, 2>(),
                        (2, true) => block.run::<2, 2>(),
                        (1, true) => block.run::<1, 2>(),
                        (6, false) => block.run::<6, 1>(),
                        (5, false) => block.run::<5, 1>(),
                        (4, false) => block.run::<4, 1>(),
                        (3, false) => block.run::<3, 1>(),
                        (2, false) => block.run::<2, 1>(),
                        _ => block.run::<1, 1>(),
                    }
                }
                r += height;
            }
        }
        d0 += span;
    }
}

/// Rows per AVX-512 register block: twelve rows of two vectors is 24
/// accumulators, plus two for `b` and one broadcast, of AVX-512's 32.
const WIDE_ROWS: usize = 12;

/// [`product_avx2`] with 16-float vectors: a vector is a whole panel, and a
/// block spans two panels (32 columns) where there are two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(
    (rows, cols, depth): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    a: Strided<'_>,
    b: Panels<'_>,
) {
    let (dst, a_data, b) = (dst.as_mut_ptr(), a.data.as_ptr(), b.data.as_ptr());
    let mut d0 = 0;
    while d0 < depth {
        let span = DEPTH_BLOCK.min(depth - d0);
        let add = accumulate || d0 > 0;
        let mut j = 0;
        while j < cols {
            let panels = if cols - j >= 2 * PANEL { 2 } else { 1 };
            let mut r = 0;
            while r < rows {
                let height = WIDE_ROWS.min(rows - r);
                // SAFETY: the block lies inside the bounds `product` checked;
                // panel `j + PANEL` starts `PANEL * depth` after panel `j`.
                unsafe {
                    let block = WideBlock {
                        dst: dst.add(r * dst_stride + j),
                        dst_stride,
                        a: a_data.add(r * a.row_stride + d0 * a.depth_stride),
                        a_row: a.row_stride,
                        a_depth: a.depth_stride,
                        b: b.add(panel_index(d0, j, (depth, cols))),
                        panel_step: PANEL * depth,
                        depth: span,
                        add,
                    };
                    macro_rules! run {
                        ($($h:literal)*) => {
                            match (height, panels) {
                                $(($h, 2) => block.run::<$h, 2>(),)*
                                $(($h, _) => block.run::<$h, 1>(),)*
                                _ => unreachable!("a block of {height} rows"),
                            }
                        };
                    }
                    run!(12 11 10 9 8 7 6 5 4 3 2 1);
                }
                r += height;
            }
            j += panels * PANEL;
        }
        d0 += span;
    }
}

/// One AVX-512 register block of `dst`: `R` rows of `P` panels (one
/// 16-float vector each), over `depth`.
#[cfg(target_arch = "x86_64")]
struct WideBlock {
    dst: *mut f32,
    dst_stride: usize,
    a: *const f32,
    a_row: usize,
    a_depth: usize,
    b: *const f32,
    /// From a panel's element to the same element of the next panel.
    panel_step: usize,
    depth: usize,
    add: bool,
}

#[cfg(target_arch = "x86_64")]
impl WideBlock {
    /// # Safety
    /// AVX-512F is available, and every element the block addresses is
    /// inside its buffer.
    #[inline(always)]
    unsafe fn run<const R: usize, const P: usize>(&self) {
        use std::arch::x86_64::*;
        // SAFETY: the caller vouches for the CPU and the addresses.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            let (mut a, mut b) = (self.a, self.b);
            for _ in 0..self.depth {
                let mut bv = [_mm512_setzero_ps(); P];
                for (p, value) in bv.iter_mut().enumerate() {
                    *value = _mm512_loadu_ps(b.add(p * self.panel_step));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * self.a_row));
                    for (p, value) in row.iter_mut().enumerate() {
                        *value = _mm512_fmadd_ps(x, bv[p], *value);
                    }
                }
                a = a.add(self.a_depth);
                b = b.add(PANEL);
            }
            for (r, row) in acc.iter().enumerate() {
                let out = self.dst.add(r * self.dst_stride);
                for (p, value) in row.iter().enumerate() {
                    let at = out.add(p * PANEL);
                    let sum = if self.add {
                        _mm512_add_ps(*value, _mm512_loadu_ps(at))
                    } else {
                        *value
                    };
                    _mm512_storeu_ps(at, sum);
                }
            }
        }
    }
}

/// One register block of `dst`: `R` rows of `V` vectors, over `depth`.
#[cfg(target_arch = "x86_64")]
struct Block {
    dst: *mut f32,
    dst_stride: usize,
    a: *const f32,
    a_row: usize,
    a_depth: usize,
    b: *const f32,
    b_stride: usize,
    depth: usize,
    add: bool,
}

#[cfg(target_arch = "x86_64")]
impl Block {
    /// # Safety
    /// AVX2 and FMA are available, and every element the block addresses is
    /// inside its buffer.
    #[inline(always)]
    unsafe fn run<const R: usize, const V: usize>(&self) {
        use std::arch::x86_64::*;
        // SAFETY: the caller vouches for the CPU and the addresses.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let (mut a, mut b) = (self.a, self.b);
            for _ in 0..self.depth {
                let mut bv = [_mm256_setzero_ps(); V];
                for (v, value) in bv.iter_mut().enumerate() {
                    *value = _mm256_loadu_ps(b.add(v * LANES));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(r * self.a_row));
                    for (v, value) in row.iter_mut().enumerate() {
                        *value = _mm256_fmadd_ps(x, bv[v], *value);
                    }
                }
                a = a.add(self.a_depth);
                b = b.add(self.b_stride);
            }
            for (r, row) in acc.iter().enumerate() {
                let out = self.dst.add(r * self.dst_stride);
                for (v, value) in row.iter().enumerate() {
                    let at = out.add(v * LANES);
                    let sum = if self.add {
                        _mm256_add_ps(*value, _mm256_loadu_ps(at))
                    } else {
                        *value
                    };
                    _mm256_storeu_ps(at, sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    /// Against an f64 sum, AVX2 and `gemm` paths: ragged rows, a half
    /// panel, depths across blocks, transposed and plain `a`, overwrite and
    /// accumulate, strided `dst`.
    #[test]
    fn matches_a_plain_sum() {
        for (rows, cols, depth) in [
            (13, 40, 300),
            (6, 16, 1),
            (1, 8, 129),
            (64, 64, 64),
            (25, 48, 130),
            (12, 32, 7),
        ] {
            for transposed in [false, true] {
                let a_data = values(rows * depth, 1);
                let a = if transposed {
                    Strided {
                        data: &a_data,
                        row_stride: 1,
                        depth_stride: rows,
                    }
                } else {
                    Strided {
                        data: &a_data,
                        row_stride: depth,
                        depth_stride: 1,
                    }
                };
                let b = values(depth * cols, 2);
                let b_at = |d: usize, j: usize| b[panel_index(d, j, (depth, cols))] as f64;
                let dst_stride = cols + 3;
                let start = values(rows * dst_stride, 3);
                for accumulate in [false, true] {
                    let want: Vec<f64> = (0..rows * dst_stride)
                        .map(|e| {
                            let (r, j) = (e / dst_stride, e % dst_stride);
                            if j >= cols {
                                return start[e] as f64;
                            }
                            let sum: f64 = (0..depth)
                                .map(|d| {
                                    a.data[r * a.row_stride + d * a.depth_stride] as f64
                                        * b_at(d, j)
                                })
                                .sum();
                            sum + if accumulate { start[e] as f64 } else { 0.0 }
                        })
                        .collect();
                    // Every path this CPU runs, AVX2 on AVX-512 CPUs too.
                    for level in Width::available() {
                        let mut dst = start.clone();
                        let b = Panels { data: &b };
                        product_at(
                            level,
                            (rows, cols, depth),
                            (&mut dst, dst_stride),
                            accumulate,
                            a,
                            b,
                        );
                        for (e, (ours, want)) in dst.iter().zip(&want).enumerate() {
                            let tolerance = 1e-5 * (1.0 + want.abs()) * (depth as f64).sqrt();
                            assert!(
                                (*ours as f64 - want).abs() <= tolerance,
                                "{level:?} {rows}x{cols}x{depth} transposed {transposed} at {e}: {ours} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every element of a panel layout has its own place.
    #[test]
    fn panel_places_are_a_permutation() {
        for (depth, cols) in [(3, 40), (5, 16), (2, 8), (4, 20)] {
            let mut seen = vec![false; depth * cols];
            for d in 0..depth {
                for j in 0..cols {
                    let at = panel_index(d, j, (depth, cols));
                    assert!(!seen[at], "{depth}x{cols}: ({d}, {j}) at {at} twice");
                    seen[at] = true;
                }
            }
        }
    }
}
